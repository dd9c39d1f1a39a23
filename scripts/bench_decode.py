#!/usr/bin/env python3
"""Decode throughput through HTTP: single stream vs N concurrent streams.

Usage (against a running server):
    .venv/bin/python scripts/bench_decode.py --url http://127.0.0.1:8080 --concurrency 1 4 --max-tokens 128

Each stream is a streamed /v1/completions request with EOG tokens biased away,
so every request generates exactly --max-tokens tokens. Prints, per
concurrency level, the per-stream decode rate (tokens after the first / time
after the first), the aggregate rate (all tokens / wall time) and the time to
first token, plus the aggregate ratio against the single-stream run.
Standard library only.
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def one_stream(url: str, prompt: str, max_tokens: int, api_key: str | None, out: list, idx: int):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = json.dumps({
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}, "logit_bias": {"1": -100, "106": -100},
    })
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first = None
    tokens = 0
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = event.removeprefix(b"data: ")
            if data == b"[DONE]":
                continue
            msg = json.loads(data)
            if msg.get("usage"):
                tokens = msg["usage"]["completion_tokens"]
            elif msg["choices"] and msg["choices"][0]["text"] and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    out[idx] = {"start": start, "first": first or end, "end": end, "tokens": tokens}


def run(url, n, max_tokens, api_key):
    out = [None] * n
    threads = [threading.Thread(target=one_stream,
                                args=(url, f"Story {i}: Once upon a time", max_tokens, api_key, out, i))
               for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(r["tokens"] for r in out)
    per_stream = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in out if r["end"] > r["first"]]
    ttft = [r["first"] - r["start"] for r in out]
    return {"streams": n, "tokens": total, "wall_s": wall, "aggregate_tps": total / wall,
            "per_stream_tps": statistics.mean(per_stream), "ttft_ms": 1000 * statistics.mean(ttft)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--api-key")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up requests before measuring")
    args = ap.parse_args()
    for _ in range(args.warmup):
        run(args.url, 1, 8, args.api_key)
    results = [run(args.url, n, args.max_tokens, args.api_key) for n in args.concurrency]
    base = results[0]["aggregate_tps"]
    print(f"{'streams':>7} {'tokens':>6} {'wall s':>7} {'aggregate tok/s':>15} {'per-stream tok/s':>16} {'TTFT ms':>8} {'x vs first':>10}")
    for r in results:
        print(f"{r['streams']:>7} {r['tokens']:>6} {r['wall_s']:>7.2f} {r['aggregate_tps']:>15.1f} "
              f"{r['per_stream_tps']:>16.1f} {r['ttft_ms']:>8.0f} {r['aggregate_tps'] / base:>10.2f}")


if __name__ == "__main__":
    main()
