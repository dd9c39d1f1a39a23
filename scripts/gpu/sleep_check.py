#!/usr/bin/env python3
"""Sleeping models, end to end (issue 23; run by scripts/gpu/check).

    python3 scripts/gpu/sleep_check.py --bin vram-llm --models A.gguf B.gguf [C.gguf] --out sleep.json

Serves the models with room for one (--max-loaded-models 1) and asks them in
turn, greedy, the same prompt each time: A B A B A (and, with three models,
A B C A B C). Every answer of a model must be the text it gave the first time
(a woken model answers exactly as before its sleep). After each answer it
records what /admin/status says: who is loaded, who sleeps and what it pins,
and the swap's breakdown (wait, unload, weights, context). From the server's
log it takes each wake's copy (MiB, ms, GB/s) and each sleep.

On a GPU with the shim, an evicted model sleeps with its weights pinned
(sleeping_bytes > 0) and wakes with one copy; on the CPU, it sleeps with
nothing pinned (its weights are the mapped file). --expect gpu|cpu says which
to require. Standard library only (the GPU machine has no network).
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

ADMIN = "sleep-check"
PROMPT = "The quick brown fox jumps over the lazy dog. Then"


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def http(url, body=None, timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", "X-Admin-Token": ADMIN})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(args, models, log_path):
    port = free_port()
    argv = [args.bin, "serve", "--port", str(port), "--admin-token", ADMIN, "--max-loaded-models", "1",
            "--ctx-size", str(args.ctx_size), "--parallel", "1"] + args.extra
    for i, m in enumerate(models):
        argv += ["--model", f"{chr(ord('a') + i)}={m}"]
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info,llama-cpp-2=warn"))
    out = open(log_path, "w")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return p, url
        except Exception:
            if p.poll() is not None:
                raise RuntimeError(f"server exited {p.returncode}; see {log_path}")
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("server not ready in 120 s")


ASLEEP = re.compile(r"GPU weights asleep in pinned host memory")


def wakes(text):
    out = []
    for line in text.splitlines():
        if "woke the GPU weights" not in line:
            continue
        f = dict(re.findall(r"(\w+)=\"?([\w.]+)\"?", line))
        out.append({"mib": int(f.get("mib", 0)), "ms": int(f.get("ms", 0)), "gb_per_s": float(f.get("gb_per_s", 0))})
    return out


def run(args, models, order, name):
    log_path = os.path.join(args.work, f"sleep-{name}.log")
    p, url = serve(args, models, log_path)
    steps = []
    texts = {}
    try:
        for label in order:
            t0 = time.monotonic()
            r = http(url + "/v1/completions", {"model": label, "prompt": PROMPT, "max_tokens": args.tokens,
                                               "temperature": 0, "seed": 1})
            took = time.monotonic() - t0
            text = r["choices"][0]["text"]
            st = http(url + "/admin/status")
            states = {m["name"]: (m["state"], m.get("sleeping_bytes")) for m in st["models"]}
            swap = st["recent_swaps"][-1] if st["recent_swaps"] else None
            first = texts.setdefault(label, text)
            steps.append({"model": label, "seconds": round(took, 3), "same_as_first": text == first,
                          "states": states, "swap": swap, "sleeping_bytes": st.get("sleeping_bytes")})
            log(f"{name}: {label} in {took:.3f} s, same text {text == first}, states {states}")
    finally:
        p.terminate()
        p.wait(timeout=60)
    text = open(log_path).read()
    return {"models": models, "order": order, "steps": steps, "wakes": wakes(text),
            "sleeps": len(ASLEEP.findall(text)),
            "cannot_sleep": sorted(set(re.findall(r"cannot sleep \((.*)\)\s*$", text, re.M)))}


def check(result, expect):
    problems = []
    for s in result["steps"]:
        if not s["same_as_first"]:
            problems.append(f"model {s['model']} answered differently after a sleep")
    slept = [v for s in result["steps"] for v in s["states"].values() if v[0] == "sleeping"]
    if not slept:
        problems.append(f"no model ever slept (cannot sleep: {result['cannot_sleep']})")
    if expect == "gpu":
        if not any(b and b > 0 for _, b in slept):
            problems.append("no sleeper pinned anything (expected GPU weights in pinned memory)")
        if not result["wakes"]:
            problems.append("no 'woke the GPU weights' line in the log")
    elif expect == "cpu" and any(b for _, b in slept):
        problems.append("a CPU sleeper pinned memory")
    return problems


def report(results):
    lines = ["| run | step | model | s | same text | swap wait/unload/weights/context ms | asleep (MiB pinned) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for i, s in enumerate(r["steps"]):
            sw = s["swap"]
            phases = f"{sw['wait_ms']}/{sw['unload_ms']}/{sw['weights_ms']}/{sw['context_ms']}" if sw else "–"
            asleep = ", ".join(f"{m} ({(b or 0) >> 20})" for m, (st, b) in s["states"].items() if st == "sleeping") or "–"
            lines.append(f"| {name} | {i + 1} | {s['model']} | {s['seconds']} | {s['same_as_first']} | {phases} | {asleep} |")
        for w in r["wakes"]:
            lines.append(f"| {name} | wake | | {w['ms'] / 1000:.3f} | | {w['mib']} MiB at {w['gb_per_s']} GB/s | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="two or three GGUF files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--ctx-size", type=int, default=1024)
    ap.add_argument("--expect", choices=["gpu", "cpu", "any"], default="any")
    ap.add_argument("extra", nargs="*", help="more serve flags (after --)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    ms = args.models
    results = {"two": run(args, ms[:2], ["a", "b", "a", "b", "a"], "two")}
    if len(ms) >= 3:
        results["three"] = run(args, ms[:3], ["a", "b", "c", "a", "b", "c"], "three")
    problems = {name: check(r, args.expect) for name, r in results.items()}
    with open(args.out, "w") as f:
        json.dump({"results": results, "problems": problems}, f, indent=2)
    print(report(results))
    bad = [f"{n}: {p}" for n, ps in problems.items() for p in ps]
    for b in bad:
        log(f"problem: {b}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
