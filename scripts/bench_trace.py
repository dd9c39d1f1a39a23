#!/usr/bin/env python3
"""Replay a seeded, interleaved multi-model trace against vram-llm, once per
scheduling policy, and compare: swaps, makespan, p50/p99 latency, worst wait.

Default: starts the server itself for each policy with the test model
registered under three names and a memory budget that fits one model:

    .venv/bin/python scripts/bench_trace.py --bin target/release/vram-llm \\
        --model models/gemma-3-270m-q4_k_m.gguf

Against servers you started (each with --admin-token, any policy):

    .venv/bin/python scripts/bench_trace.py --url http://127.0.0.1:8080 --admin-token TOKEN

Each request is a streamed /v1/completions with end-of-generation biased away,
so it generates exactly --max-tokens tokens. Latency = send to last byte;
wait = send to first token (includes queueing and any model load). The
trace (arrival times and models) depends only on --seed.
Standard library only.
"""

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import threading
import time
import urllib.parse
import urllib.request

NO_EOG = {"1": -100, "106": -100}


def make_trace(seed, n, rate, models):
    rng = random.Random(seed)
    t = 0.0
    trace = []
    for i in range(n):
        t += rng.expovariate(rate)
        trace.append((t, rng.choice(models), f"Request {i}: tell me about the number {rng.randint(1, 999)}."))
    return trace


def admin_status(url, token):
    req = urllib.request.Request(f"{url}/admin/status", headers={"X-Admin-Token": token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def one_request(url, model, prompt, max_tokens, out, idx):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "logit_bias": NO_EOG})
    start = time.perf_counter()
    first = None
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        status = resp.status
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            if first is None and b'"text":"' in chunk and b'"text":""' not in chunk:
                first = time.perf_counter()
    except OSError:
        status = 0  # no answer: counted as not ok
    end = time.perf_counter()
    out[idx] = {"status": status, "start": start, "first": first or end, "end": end, "model": model}


def run_trace(trace, url_for, max_tokens):
    """Sends each request of `trace` at its arrival time to `url_for(model)`
    (asked at that moment) and returns one record per request."""
    out = [None] * len(trace)
    threads = []
    t0 = time.perf_counter()
    for i, (at, model, prompt) in enumerate(trace):
        delay = at - (time.perf_counter() - t0)
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=one_request, args=(url_for(model), model, prompt, max_tokens, out, i))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    return out


def summarize(out):
    """Requests, answered, makespan, p50/p99 latency, worst wait, median service."""
    ok = [r for r in out if r["status"] == 200]
    lat = sorted(r["end"] - r["start"] for r in ok)
    return {
        "requests": len(out),
        "ok": len(ok),
        "makespan_s": max(r["end"] for r in out) - min(r["start"] for r in out),
        "p50_s": lat[len(lat) // 2],
        "p99_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "worst_wait_s": max(r["first"] - r["start"] for r in ok),
        "service_s": statistics.median(r["end"] - r["first"] for r in ok),
    }


def replay(url, token, trace, max_tokens):
    before = admin_status(url, token)
    out = run_trace(trace, lambda model: url, max_tokens)
    after = admin_status(url, token)
    return {
        "policy": after["policy"],
        **summarize(out),
        "swaps": after["swaps"] - before["swaps"],
        "max_wait_s": after["max_wait_ms"] / 1000,
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(binary, model, policy, max_wait, budget_mib, parallel, ctx_size):
    port = free_port()
    args = [binary, "serve", "--port", str(port), "--policy", policy, "--max-wait", max_wait,
            "--memory-budget-mib", str(budget_mib), "--parallel", str(parallel), "--ctx-size", str(ctx_size * parallel),
            "--admin-token", "bench"]
    for name in ("a", "b", "c"):
        args += ["--model", f"{name}={model}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not start")
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/vram-llm")
    ap.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--url", action="append", help="a running server (repeat); skips spawning")
    ap.add_argument("--admin-token", default="bench")
    ap.add_argument("--policies", nargs="+", default=["cache-aware", "fifo"])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rate", type=float, default=4.0, help="mean arrivals per second")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-wait", default="3s")
    ap.add_argument("--budget-mib", type=int, default=400, help="fits one copy of the test model")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx-size", type=int, default=512, help="context tokens per slot (the server gets ctx x parallel)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    trace = make_trace(args.seed, args.requests, args.rate, ["a", "b", "c"])
    results = []
    if args.url:
        for url in args.url:
            results.append(replay(url, args.admin_token, trace, args.max_tokens))
    else:
        for policy in args.policies:
            proc, url = spawn(args.bin, args.model, policy, args.max_wait, args.budget_mib, args.parallel, args.ctx_size)
            try:
                results.append(replay(url, "bench", trace, args.max_tokens))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"trace: {args.requests} requests over 3 models, {args.rate}/s, seed {args.seed}, "
          f"{args.max_tokens} tokens each, max_wait {results[0]['max_wait_s']}s, budget fits one model")
    print(f"{'policy':<12} {'ok':>4} {'swaps':>6} {'makespan s':>11} {'p50 s':>7} {'p99 s':>7} {'worst wait s':>13} {'service s':>10}")
    for r in results:
        print(f"{r['policy']:<12} {r['ok']:>4} {r['swaps']:>6} {r['makespan_s']:>11.2f} {r['p50_s']:>7.2f} "
              f"{r['p99_s']:>7.2f} {r['worst_wait_s']:>13.2f} {r['service_s']:>10.2f}")
    if len(results) >= 2:
        a, b = results[0], results[1]
        print(f"{a['policy']} / {b['policy']}: swaps {a['swaps']}/{b['swaps']}, "
              f"makespan {a['makespan_s'] / b['makespan_s']:.2f}x, p99 {a['p99_s'] / b['p99_s']:.2f}x")


if __name__ == "__main__":
    main()
