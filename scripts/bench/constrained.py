#!/usr/bin/env python3
"""The per-token cost of constrained decoding: vram-llm with llama.cpp's
grammar sampler, vram-llm with llguidance, and llama-server, side by side.

Each server runs the same model with the same threads and one slot, and
decodes, greedily: (a) free text; (b) `words`, a JSON schema that forces 40
enum words (the model's own pick is often refused, so the constraint is
applied to the whole vocabulary often); (c) `records`, a harder JSON schema:
8 records, each a nested object with a bounded string, an integer range, an
enum and an array of enums; (d) `grammar`, a grammar of the same shape as
(b): GBNF, except for the llguidance server, which gets the same grammar as
`%llguidance` Lark text. Every constrained answer is checked against its
schema (or parsed). Decode speed is measured from the first to the last
streamed chunk, so grammar compilation is not in it: it shows in the time to
the first chunk (`first ms`). The cost of a constraint is
(1/tps_constrained - 1/tps_free) in ms per token. On a busy machine that
difference is noisy; vram-llm also reports, per request, the time its
sampler spent in the grammar itself (checking the chain's pick, whole-
vocabulary passes after a refusal, accepting the token: the `grammar cost`
debug line), printed as a second table.

The llguidance server is a vram-llm built with `--features llguidance`,
started with `--json-schema-engine llguidance` (`--ours-llguidance`,
default: the `--ours` binary, which then needs the feature).

    cargo build --release --features llguidance
    .venv/bin/python scripts/bench/constrained.py [--peer PATH] [--rounds 3]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402

try:
    import jsonschema
except ImportError:  # the test requirements do not include it
    jsonschema = None

WORDS = ["alpha", "beta", "gamma", "delta"]
WORDS_SCHEMA = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string", "enum": WORDS}, "minItems": 40, "maxItems": 40}},
    "required": ["words"],
    "additionalProperties": False,
}
RECORDS_SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 8,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 12},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                    "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "maxItems": 3},
                },
                "required": ["name", "age", "role", "tags"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}
GBNF = 'root ::= "[" word ("," word){39} "]"\nword ::= "\\"" ("alpha" | "beta" | "gamma" | "delta") "\\""\n'
LARK = '%llguidance {}\nstart: "[" word ("," word){39} "]"\nword: "\\"" ("alpha" | "beta" | "gamma" | "delta") "\\""\n'
PROMPTS = {
    "words": "Here is a list of forty Greek letter names as JSON:",
    "records": "Here are the eight members of our team as JSON:",
}
# name -> (prompt, request fields, schema to check, max_tokens or None for --max-tokens)
CASES = [
    ("free", PROMPTS["words"], {}, None, None),
    ("words", PROMPTS["words"], {"json_schema": WORDS_SCHEMA}, WORDS_SCHEMA, None),
    ("records", PROMPTS["records"], {"json_schema": RECORDS_SCHEMA}, RECORDS_SCHEMA, 600),
    ("grammar", PROMPTS["words"], {"grammar": GBNF}, None, 300),
]


def check(name, text, schema):
    """Every constrained answer must be what was asked for."""
    if name == "grammar":
        value = json.loads(text)
        assert isinstance(value, list) and len(value) == 40 and set(value) <= set(WORDS), text
        return
    if schema is None:
        return
    value = json.loads(text)  # complete JSON, not cut by max_tokens
    if jsonschema is not None:
        jsonschema.validate(value, schema)


def decode(url, name, prompt, extra, schema, max_tokens):
    r = bench_lib.complete(url, prompt, max_tokens, extra=extra)
    check(name, r["text"], schema)
    tps = (r["tokens"] - 1) / max(r["end"] - r["first"], 1e-9)
    return tps, r["tokens"], (r["first"] - r["start"]) * 1000


COST = re.compile(r'grammar cost kind="?(\w+)"? tokens=(\d+) refused=(\d+) check_ms=([\d.e-]+) '
                  r'restrict_ms=([\d.e-]+) accept_ms=([\d.e-]+)')


def grammar_costs(server):
    """vram-llm's per-request `grammar cost` lines, in request order."""
    out = []
    for line in server.grep_log("grammar cost"):
        m = COST.search(line)
        if m:
            kind, tokens, refused, *ms = m.groups()
            out.append((kind, int(tokens), int(refused), *map(float, ms)))
    return out


def features(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("features:")), "")
    return line.split(":", 1)[1].strip().split(",") if line else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=3)
    ap.add_argument("--ours-llguidance", help="a vram-llm built with --features llguidance [default: --ours]")
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    llg = args.ours_llguidance or args.ours
    if "llguidance" not in features(llg):
        sys.exit(f"{llg} was built without llguidance: cargo build --release --features llguidance "
                 "(or pass --ours-llguidance PATH)")
    t = str(args.threads)
    ours = ["serve", "--model", args.model, "--threads", t, "--parallel", "1", "--ctx-size", "1024"]
    servers = [
        ("vram-llm", [args.ours] + ours + ["--json-schema-engine", "llama"]),
        ("vram-llm+llg", [llg] + ours + ["--json-schema-engine", "llguidance"]),
        ("llama-server", [args.peer, "-m", args.model, "-t", t, "-tb", t, "-np", "1", "-c", "1024", "--no-webui"]),
    ]
    results = {}
    costs = {}
    # vram-llm logs each request's grammar cost at debug level.
    os.environ["RUST_LOG"] = "info,llama-cpp-2=warn,vram_llm::engine::llama::sampler=debug"
    for label, argv in servers:
        cases = [(n, p, ({"grammar": LARK} if n == "grammar" and label == "vram-llm+llg" else x), s, m)
                 for n, p, x, s, m in CASES]
        port = bench_lib.free_port()
        argv = argv + (["--port", str(port)] if label.startswith("vram-llm") else ["--port", str(port), "--host", "127.0.0.1"])
        server = bench_lib.Server(label, argv, port, f"/tmp/constrained-{label}.log").start()
        try:
            server.wait_first_token()
            for name, prompt, extra, schema, m in cases:  # warm-up (llguidance builds its token trie here)
                decode(server.url, name, prompt, extra, schema, m or args.max_tokens)
            for name, prompt, extra, schema, m in cases:
                runs = sorted(decode(server.url, name, prompt, extra, schema, m or args.max_tokens) for _ in range(args.rounds))
                tps, tokens, _ = runs[len(runs) // 2]
                first = sorted(r[2] for r in runs)[len(runs) // 2]
                results[(label, name)] = (tps, tokens, first)
            if label.startswith("vram-llm"):
                # Warm-up lines first (one per constrained case), then the rounds, case by case.
                want = (len(cases) - 1) * (1 + args.rounds)
                for _ in range(100):  # a line is written when its slot frees, maybe after the response
                    if len(grammar_costs(server)) >= want:
                        break
                    time.sleep(0.05)
                lines = grammar_costs(server)[len(cases) - 1:]
                for i, (name, *_) in enumerate(cases[1:]):
                    costs[(label, name)] = lines[i * args.rounds:(i + 1) * args.rounds]
        except Exception:
            print(server.tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"model {os.path.basename(args.model)}, {args.threads} threads, 1 slot, greedy, median of {args.rounds}")
    print(f"{'server':<13} {'case':<8} {'tokens':>6} {'first ms':>8} {'tok/s':>7} {'ms/token':>9} {'constraint ms/token':>20}")
    for label, _ in servers:
        free = results[(label, "free")][0]
        for name, *_ in CASES:
            tps, n, first = results[(label, name)]
            cost = 1000 / tps - 1000 / free if name != "free" else 0
            print(f"{label:<13} {name:<8} {n:>6} {first:>8.0f} {tps:>7.1f} {1000 / tps:>9.2f} {cost:>20.2f}")
    print("in-process grammar cost (vram-llm's sampler; median request of the rounds):")
    print(f"{'server':<13} {'case':<8} {'engine':<10} {'tokens':>6} {'refused':>7} {'check ms':>8} "
          f"{'passes ms':>9} {'accept ms':>9} {'ms/token':>8} {'ms/pass':>7}")
    per_token = {}
    for label in ("vram-llm", "vram-llm+llg"):
        for name, *_ in CASES[1:]:
            rows = sorted(costs[(label, name)], key=lambda r: sum(r[3:]) / r[1])
            kind, tokens, refused, check_ms, restrict_ms, accept_ms = rows[len(rows) // 2]
            per_token[(label, name)] = (check_ms + restrict_ms + accept_ms) / tokens
            print(f"{label:<13} {name:<8} {kind:<10} {tokens:>6} {refused:>7} {check_ms:>8.1f} {restrict_ms:>9.1f} "
                  f"{accept_ms:>9.1f} {per_token[(label, name)]:>8.3f} {restrict_ms / max(refused, 1):>7.2f}")
    print("constrained decode speed ratios:")
    for name, *_ in CASES[1:]:
        gbnf, llg_tps, peer = (results[(s, name)][0] for s in ("vram-llm", "vram-llm+llg", "llama-server"))
        print(f"  {name:<8} llg/grammar-sampler {llg_tps / gbnf:.2f}  llg/llama-server {llg_tps / peer:.2f}  "
              f"grammar-sampler/llama-server {gbnf / peer:.2f}  "
              f"in-process grammar ms/token grammar-sampler/llg {per_token[('vram-llm', name)] / per_token[('vram-llm+llg', name)]:.0f}x")


if __name__ == "__main__":
    main()
