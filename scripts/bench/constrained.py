#!/usr/bin/env python3
"""The per-token cost of constrained decoding, ours next to llama-server's.

Both servers run the same model with the same threads and one slot. Each
decodes, greedily, (a) free text, (b) a JSON schema that forces a long
answer (40 enum words: the model's own pick is often refused, so the grammar
is applied to the whole vocabulary often), (c) a GBNF grammar of the same
shape. Decode speed is measured from the first to the last streamed chunk.
The cost of a constraint is (1/tps_constrained - 1/tps_free) in ms per token.

    .venv/bin/python scripts/bench/constrained.py [--peer PATH] [--rounds 3]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta"]
SCHEMA = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string", "enum": WORDS}, "minItems": 40, "maxItems": 40}},
    "required": ["words"],
    "additionalProperties": False,
}
GBNF = 'root ::= "[" word ("," word){39} "]"\nword ::= "\\"" ("alpha" | "beta" | "gamma" | "delta") "\\""\n'
PROMPT = "Here is a list of forty Greek letter names as JSON:"
CASES = [("free", {}), ("json_schema", {"json_schema": SCHEMA}), ("grammar", {"grammar": GBNF})]


def decode_tps(url, extra, max_tokens):
    r = bench_lib.complete(url, PROMPT, max_tokens, extra=extra)
    if extra.get("json_schema"):
        json.loads(r["text"])  # the constrained answer is complete JSON
    return (r["tokens"] - 1) / max(r["end"] - r["first"], 1e-9), r["tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=3)
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    t = str(args.threads)
    servers = [
        ("vram-llm", [args.ours, "serve", "--model", args.model, "--threads", t, "--parallel", "1", "--ctx-size", "1024"]),
        ("llama-server", [args.peer, "-m", args.model, "-t", t, "-tb", t, "-np", "1", "-c", "1024", "--no-webui"]),
    ]
    results = {}
    for label, argv in servers:
        port = bench_lib.free_port()
        argv = argv + (["--port", str(port)] if label == "vram-llm" else ["--port", str(port), "--host", "127.0.0.1"])
        server = bench_lib.Server(label, argv, port, f"/tmp/constrained-{label}.log").start()
        try:
            server.wait_first_token()
            for name, extra in CASES:
                decode_tps(server.url, extra, args.max_tokens)  # warm-up
            for name, extra in CASES:
                runs = [decode_tps(server.url, extra, args.max_tokens) for _ in range(args.rounds)]
                tps = sorted(r[0] for r in runs)[len(runs) // 2]
                results[(label, name)] = (tps, runs[0][1])
        finally:
            server.stop()
    print(f"model {os.path.basename(args.model)}, {args.threads} threads, 1 slot, greedy, median of {args.rounds}")
    print(f"{'server':<13} {'case':<12} {'tokens':>6} {'tok/s':>7} {'ms/token':>9} {'constraint ms/token':>20}")
    for label, _ in servers:
        free = results[(label, "free")][0]
        for name, _ in CASES:
            tps, n = results[(label, name)]
            cost = 1000 / tps - 1000 / free
            print(f"{label:<13} {name:<12} {n:>6} {tps:>7.1f} {1000 / tps:>9.2f} {cost if name != 'free' else 0:>20.2f}")
    for name, _ in CASES[1:]:
        ours, peer = results[("vram-llm", name)][0], results[("llama-server", name)][0]
        print(f"{name}: vram-llm / llama-server decode speed = {ours / peer:.2f}")


if __name__ == "__main__":
    main()
