#!/usr/bin/env python3
"""Overload soak: many closed-loop clients over several models with memory
for one, as an operator's load test would run it. Not part of CI.

Each client loops until --duration is over: pick a model at random, send a
streamed /v1/completions (--max-tokens tokens, end of text biased away), read
it to the end, repeat at once (--mix: chat or completions, streamed or not, at
random). A request that gets 429 or 503 waits for its
Retry-After (capped at 5 s) before the client's next request. A separate
thread polls /health every 100 ms. Nothing is lost if every request ends with
a status and a complete body: `lost` counts connection errors, client
timeouts (--client-timeout, 180 s) and 200 streams that ended without [DONE].

    .venv/bin/python scripts/soak.py                       # one run of target/release/vram-llm
    .venv/bin/python scripts/soak.py --bin A --bin B       # the same load on two builds
    .venv/bin/python scripts/soak.py --serve-args "--max-queue-wait 30s"

Prints one row per run: requests sent, 200, 429, 503, other, lost, requests
per load, latency p50/p99 of the 200s, the worst wait for a first token, and
/health latency p50/p99/max. Standard library only. Each server's log goes
to /tmp/soak-PORT.log; run with RUST_LOG=info,vram_llm::scheduler=debug and
scripts/soak_waits.py reads each admitted request's wait and expectation
from it.
"""

import argparse
import http.client
import json
import random
import os
import shlex
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
from bench_lib import Server, free_port  # noqa: E402

NO_EOG = {"1": -100, "106": -100}


def spawn(binary, model, names, args):
    port = free_port()
    argv = [binary, "serve", "--port", str(port), "--admin-token", "soak", "--memory-budget-mib", str(args.budget_mib),
            "--parallel", str(args.parallel), "--ctx-size", str(args.ctx_size * args.parallel)]
    for name in names:
        argv += ["--model", f"{name}={model}"]
    argv += shlex.split(args.serve_args)
    server = Server("vram-llm", argv, port, f"/tmp/soak-{port}.log").start()
    try:
        server.wait_http("/health", timeout=60)
    except RuntimeError:
        server.stop()
        raise SystemExit(f"server did not start; see /tmp/soak-{port}.log")
    return server


def status(url):
    req = urllib.request.Request(f"{url}/admin/status", headers={"X-Admin-Token": "soak"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def one_request(host, port, model, prompt, max_tokens, timeout, chat=False, stream=True):
    """Returns (outcome, status, latency, first-token wait, retry_after).
    A non-streamed answer's first token is its whole latency; a refusal's
    retry_after is None when it carried no Retry-After header."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream, "logit_bias": NO_EOG}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    try:
        conn.request("POST", "/v1/chat/completions" if chat else "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            retry = resp.getheader("Retry-After")
            return ("status", resp.status, time.perf_counter() - start, None, float(retry) if retry else None)
        first = None
        data = b""
        mark = b'"content":"' if chat else b'"text":"'
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            if first is None and stream and mark in chunk:
                first = time.perf_counter() - start
            data += chunk
        end = time.perf_counter() - start
        if stream:
            done = data.rstrip().endswith(b"data: [DONE]") and b'"error"' not in data
        else:
            done = b'"choices"' in data and b'"error"' not in data
            first = end
        return ("ok" if done else "lost", 200, end, first, None)
    except (OSError, http.client.HTTPException):
        return ("lost", None, time.perf_counter() - start, None, None)
    finally:
        conn.close()


def run(binary, args):
    names = [f"m{i}" for i in range(args.models)]
    server = spawn(binary, args.model, names, args)
    url, host, port = server.url, "127.0.0.1", server.port
    results, lock = [], threading.Lock()
    health = []
    stop_at = time.monotonic() + args.duration
    done = threading.Event()

    def client(seed):
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            model = rng.choice(names)
            prompt = f"Client {seed} asks about the number {rng.randint(1, 999)}."
            chat, stream = (rng.random() < 0.5, rng.random() < 0.5) if args.mix else (False, True)
            r = one_request(host, port, model, prompt, args.max_tokens, args.client_timeout, chat, stream)
            with lock:
                results.append(r)
            if r[0] == "status" and r[1] in (429, 503):
                time.sleep(min(r[4] or 1.0, 5.0))

    def poll_health():
        while not done.is_set():
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
                    r.read()
                health.append(time.perf_counter() - t)
            except OSError:
                health.append(float("inf"))
            time.sleep(0.1)

    before = status(url)
    hp = threading.Thread(target=poll_health)
    hp.start()
    threads = [threading.Thread(target=client, args=(args.seed * 1000 + i,)) for i in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    done.set()
    hp.join()
    after = status(url)
    server.stop()

    loads = sum(m["load_count"] for m in after["models"]) - sum(m["load_count"] for m in before["models"])
    ok = [r for r in results if r[0] == "ok"]
    lat = sorted(r[2] for r in ok)
    waits = [r[3] for r in ok if r[3] is not None]
    hs = sorted(health)
    pick = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")
    count = lambda code: sum(1 for r in results if r[0] == "status" and r[1] == code)
    return {
        "bin": binary,
        "serve_args": args.serve_args,
        "elapsed_s": round(elapsed, 1),
        "sent": len(results),
        "ok": len(ok),
        "429": count(429),
        "503": count(503),
        "other": sum(1 for r in results if r[0] == "status" and r[1] not in (429, 503)),
        "lost": sum(1 for r in results if r[0] == "lost"),
        "loads": loads,
        "requests_per_load": round(len(ok) / loads, 1) if loads else float("inf"),
        "ok_per_s": round(len(ok) / elapsed, 2),
        "p50_s": round(pick(lat, 0.5), 2),
        "p90_s": round(pick(lat, 0.9), 2),
        "p99_s": round(pick(lat, 0.99), 2),
        "first_p99_s": round(pick(sorted(waits), 0.99), 2),
        "worst_wait_s": round(max(waits), 2) if waits else None,
        "429_no_retry_after": sum(1 for r in results if r[0] == "status" and r[1] == 429 and r[4] is None),
        "health_p50_ms": round(pick(hs, 0.5) * 1000, 1),
        "health_p99_ms": round(pick(hs, 0.99) * 1000, 1),
        "health_max_ms": round(hs[-1] * 1000, 1) if hs else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", help="server binary (repeat to compare; default target/release/vram-llm)")
    ap.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--models", type=int, default=3, help="names the model is registered under")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=120, help="seconds clients keep sending")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--client-timeout", type=float, default=180)
    ap.add_argument("--budget-mib", type=int, default=400, help="fits one copy of the test model")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx-size", type=int, default=512, help="context tokens per slot (the server gets ctx x parallel)")
    ap.add_argument("--serve-args", default="", help="more serve flags, one string")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mix", action="store_true", help="chat and completions, streamed and not, half each at random")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = [run(b, args) for b in (args.bin or ["target/release/vram-llm"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"soak: {args.clients} closed-loop clients over {args.models} models ({args.budget_mib} MiB budget; "
          f"serve args: {args.serve_args or 'none'}), {args.duration:.0f} s, {args.max_tokens} tokens per request, --parallel {args.parallel}")
    cols = ["sent", "ok", "429", "503", "other", "lost", "loads", "requests_per_load", "ok_per_s", "p50_s", "p90_s", "p99_s",
            "first_p99_s", "worst_wait_s", "429_no_retry_after", "health_p50_ms", "health_p99_ms", "health_max_ms"]
    print("bin".ljust(28) + "".join(c.rjust(max(len(c), 6) + 1) for c in cols))
    for r in rows:
        label = r["bin"][-28:]
        print(label.ljust(28) + "".join(str(r[c]).rjust(max(len(c), 6) + 1) for c in cols))


if __name__ == "__main__":
    main()
