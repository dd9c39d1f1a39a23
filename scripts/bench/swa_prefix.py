#!/usr/bin/env python3
"""A long shared prefix on a sliding-window model, ours next to llama-server's.

The agent / RAG pattern: a long fixed system prompt (~1,740 tokens on Gemma 3
270M, whose sliding layers keep a 512-token window), then a different
question each time, one slot, the same threads on both servers, chat
completions (greedy, 8 tokens, end-of-generation biased away). Rows:

  1-3  the system prompt with questions 1, 2, 3 (short)
  4-5  the system prompt with long questions 4 and 5 (~600 tokens each: the
       window moves past the system prompt before the next request comes)
  6    a ~2,450-token conversation, then the same request again

Printed per row and server: cached_tokens and the request's time, then the
ratios vram-llm / llama-server (cached: higher is better; time: lower).

    .venv/bin/python scripts/bench/swa_prefix.py [--peer PATH] [--threads 1]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402


def chat(url, system, question, max_tokens=8):
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "logit_bias": bench_lib.NO_EOG}
    took, msg = bench_lib.post_json(url, "/v1/chat/completions", body, timeout=900)
    usage = msg.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is None:
        cached = (msg.get("timings") or {}).get("cache_n", 0)
    return {"time": took, "cached": cached, "prompt": usage.get("prompt_tokens")}


def rows(url):
    system = "You answer questions about the document below.\n" + bench_lib.document("swa-system", 84)
    short = [f"Question {i}: which sentence mentions the number {10 + i}?" for i in (1, 2, 3)]
    long = [f"Question {i}: compare these notes with the document. " + bench_lib.document(f"swa-notes-{i}", 30) for i in (4, 5)]
    out = []
    for q in short + long:
        out.append(chat(url, system, q))
    convo = "Summarize the document. " + bench_lib.document("swa-convo", 34)
    chat(url, system, convo)
    out.append(chat(url, system, convo))
    return out


LABELS = ["1 system + question 1", "2 system + question 2", "3 system + question 3", "4 system + long question 4",
          "5 system + long question 5", "6 the same long request again"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=1)
    ap.set_defaults(threads=1)
    args = ap.parse_args()
    results = {}
    for label, argv in bench_lib.server_pair(args, parallel=1, ctx_per_slot=4096):
        server = bench_lib.start(label, argv, "swa-prefix")
        try:
            server.wait_first_token()
            results[label] = rows(server.url)
        finally:
            server.stop()
    ours, peer = results["vram-llm"], results["llama-server"]
    print(f"model {os.path.basename(args.model)}, {args.threads} thread(s), 1 slot, chat completions, 8 tokens each")
    print(f"{'request':<30} {'prompt':>6} {'ours cached':>11} {'peer cached':>11} {'ours s':>7} {'peer s':>7} {'cached ratio':>12} {'time ratio':>10}")
    for label, o, p in zip(LABELS, ours, peer):
        ratio = (o["cached"] / p["cached"]) if p["cached"] else float("nan")
        print(f"{label:<30} {o['prompt']:>6} {o['cached']:>11} {p['cached']:>11} {o['time']:>7.2f} {p['time']:>7.2f} "
              f"{ratio:>12.2f} {o['time'] / p['time']:>10.2f}")


if __name__ == "__main__":
    main()
