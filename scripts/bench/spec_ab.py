#!/usr/bin/env python3
"""Speculative decoding, two or more vram-llm builds (and llama-server) side
by side, in turns: every server starts first, then each round sends each
server one request per prompt of scripts/bench/speculative.py (copy, story),
so the machine's drift falls on all alike. Prints each server's median decode
speed per prompt and the ratio to the last server given.

    .venv/bin/python scripts/bench/spec_ab.py --bin NEW --bin OLD --bin peer --rounds 20
    .venv/bin/python scripts/bench/spec_ab.py --bin NEW --bin OLD --spec-type draft-simple \\
        --serve-args "--model-draft models/gemma-3-270m-q4_k_m.gguf" --rounds 10

`peer` stands for llama-server (`--peer-spec-type`, ngram-simple by default).
"""

import argparse
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402
import speculative  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="a vram-llm binary, or `peer` (llama-server); twice or more")
    ap.add_argument("--peer", default=bench_lib.PEER)
    ap.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--spec-type", default="ngram-simple", help="vram-llm's --spec-type")
    ap.add_argument("--peer-spec-type", default="ngram-simple", help="llama-server's --spec-type")
    ap.add_argument("--serve-args", default="", help="more vram-llm flags")
    args = ap.parse_args()
    runs = []
    for i, b in enumerate(args.bin):
        if b == "peer":
            argv = speculative.peer_argv(args.peer, args.model, args.threads) + ["--spec-type", args.peer_spec_type]
            runs.append((b, "llama-server", argv, f"spec-ab{i}"))
        else:
            argv = speculative.ours_argv(b, args.model, args.threads) + ["--spec-type", args.spec_type] + shlex.split(args.serve_args)
            runs.append((b, "vram-llm", argv, f"spec-ab{i}"))
    speeds, _, _ = speculative.in_turns(runs, args.rounds)
    last = args.bin[-1]
    for name in speculative.prompts():
        base = statistics.median(speeds[(last, name)])
        cells = [f"{b} {statistics.median(speeds[(b, name)]):.1f} tok/s ({statistics.median(speeds[(b, name)]) / base:.3f}x)" for b in args.bin]
        print(f"{name}: " + "; ".join(cells) + f"  (ratios to {last}, median of {args.rounds})")


if __name__ == "__main__":
    main()
