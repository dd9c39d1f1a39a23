#!/usr/bin/env python3
"""Embedding latency, ours next to llama-server's: one request of 1 input
and one request of 16 inputs on /v1/embeddings, same model, same threads.
llama-server runs with `--embeddings --pooling mean` (our default for a
decoder model whose GGUF names no pooling). Also prints the cosine between
the two servers' vectors of the same input (both mean-pooled, unit norm).

    .venv/bin/python scripts/bench/embeddings.py [--peer PATH] [--rounds 5]
"""

import argparse
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402

SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on the mat.",
    "Quarterly tax filings are due in April.",
    "The train to the airport leaves every twenty minutes.",
    "She planted tomatoes and basil in the garden this spring.",
    "Interest rates rose for the third time this year.",
    "The museum opens a new exhibition of early photographs.",
    "He fixed the bicycle chain with a pair of pliers.",
    "Rain is expected across the north on Thursday.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Our team shipped the release two days early.",
    "The river froze over during the coldest week of winter.",
    "A new library branch will open near the station.",
    "The orchestra rehearsed the symphony until midnight.",
    "Solar panels now cover the roof of the school.",
    "The committee postponed its decision until next month.",
]


def embed(url, inputs, timeout=600):
    u = url.removeprefix("http://")
    conn = http.client.HTTPConnection(u.split(":")[0], int(u.split(":")[1]), timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/embeddings", body=json.dumps({"input": inputs, "encoding_format": "float"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise bench_lib.HttpError(resp.status, body)
        data = json.loads(body)["data"]
        assert len(data) == len(inputs)
        return elapsed, [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
    finally:
        conn.close()


def wait_ready(server, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive()
        try:
            return embed(server.url, ["warm up"])
        except (OSError, bench_lib.HttpError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=5)
    args = ap.parse_args()
    t = str(args.threads)
    servers = [
        ("vram-llm", [args.ours, "serve", "--model", args.model, "--threads", t, "--ctx-size", "1024"]),
        ("llama-server", [args.peer, "-m", args.model, "-t", t, "-tb", t, "-c", "4096", "-np", "4",
                          "--embeddings", "--pooling", "mean", "--no-webui"]),
    ]
    if not os.path.exists(args.peer):
        servers = servers[:1]
    cases = [("1 input", SENTENCES[:1]), ("16 inputs", SENTENCES)]
    results, vectors = {}, {}
    for label, argv in servers:
        port = bench_lib.free_port()
        argv = argv + ["--port", str(port)] + (["--host", "127.0.0.1"] if label == "llama-server" else [])
        server = bench_lib.Server(label, argv, port, f"/tmp/embeddings-{label}.log").start()
        try:
            wait_ready(server)
            for name, inputs in cases:
                embed(server.url, inputs)  # warm-up
                times = sorted(embed(server.url, inputs)[0] for _ in range(args.rounds))
                results[(label, name)] = times[len(times) // 2]
            vectors[label] = embed(server.url, SENTENCES[:3])[1]
        finally:
            server.stop()
    print(f"model {os.path.basename(args.model)}, {args.threads} threads, median of {args.rounds} requests")
    print(f"{'server':<13} {'case':<10} {'ms':>8} {'ms/input':>9}")
    for label, _ in servers:
        for name, inputs in cases:
            ms = results[(label, name)] * 1000
            print(f"{label:<13} {name:<10} {ms:>8.1f} {ms / len(inputs):>9.1f}")
    for label, _ in servers:
        one, many = results[(label, cases[0][0])], results[(label, cases[1][0])]
        print(f"{label}: 16 inputs batched take {many / one:.1f}x one input ({16 * one / many:.1f}x the throughput of 16 single requests)")
    if len(servers) == 2:
        for name, _ in cases:
            ratio = results[("vram-llm", name)] / results[("llama-server", name)]
            print(f"{name}: vram-llm / llama-server time = {ratio:.2f}")
        for i, (a, b) in enumerate(zip(vectors["vram-llm"], vectors["llama-server"])):
            cos = sum(x * y for x, y in zip(a, b))
            print(f"cosine(vram-llm, llama-server) of sentence {i}: {cos:.5f}")


if __name__ == "__main__":
    main()
