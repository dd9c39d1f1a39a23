#!/usr/bin/env python3
"""`n` choices of one long prompt, ours next to llama-server's.

Both servers run the same model with the same threads and 4 slots. Each
round sends a new document (~800 tokens, never seen before, so no slot
holds it) as one /v1/completions request with `n` = 1, then another with
`n` = 4 (32 tokens each, temperature 1, a seed). A server that reads the
prompt once and copies its KV to the other choices pays for one prefill
either way; one that reads it per choice pays for four. Printed: the median
time of each, the n=4 / n=1 cost, and vram-llm / llama-server ratios.

    .venv/bin/python scripts/bench/choices.py [--peer PATH] [--rounds 3]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402


def request(url, prompt, n, max_tokens):
    body = {"prompt": prompt, "n": n, "max_tokens": max_tokens, "temperature": 1.0, "seed": 11,
            "logit_bias": bench_lib.NO_EOG}
    took, msg = bench_lib.post_json(url, "/v1/completions", body)
    assert len(msg["choices"]) == n, msg
    return took, msg["usage"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=3)
    ap.add_argument("--sentences", type=int, default=40, help="document length (~20 tokens each)")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    servers = bench_lib.server_pair(args, parallel=4, ctx_per_slot=2048)
    results = {}
    prompt_tokens = None
    for s, (label, argv) in enumerate(servers):
        server = bench_lib.start(label, argv, "choices")
        try:
            server.wait_first_token()
            request(server.url, bench_lib.document(10_000 + s, args.sentences), 4, args.max_tokens)  # warm-up
            times = {1: [], 4: []}
            for r in range(args.rounds):
                for n in (1, 4):
                    doc = bench_lib.document(f"{label}-{r}-{n}", args.sentences)
                    took, usage = request(server.url, doc, n, args.max_tokens)
                    times[n].append(took)
                    prompt_tokens = usage["prompt_tokens"]
            for n in (1, 4):
                results[(label, n)] = sorted(times[n])[len(times[n]) // 2]
        finally:
            server.stop()
    print(f"model {os.path.basename(args.model)}, {args.threads} threads, 4 slots, prompt ~{prompt_tokens} tokens, "
          f"{args.max_tokens} tokens per choice, median of {args.rounds}")
    print(f"{'server':<13} {'n=1 (s)':>8} {'n=4 (s)':>8} {'n=4 / n=1':>10}")
    for label, _ in servers:
        one, four = results[(label, 1)], results[(label, 4)]
        print(f"{label:<13} {one:>8.2f} {four:>8.2f} {four / one:>10.2f}")
    for n in (1, 4):
        print(f"n={n}: vram-llm / llama-server time = {results[('vram-llm', n)] / results[('llama-server', n)]:.2f}")


if __name__ == "__main__":
    main()
