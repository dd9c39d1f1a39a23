#!/usr/bin/env python3
"""Many nodes, one trace, three routers: HAProxy with model affinity
(config/haproxy/vram-llm.cfg as it is), the same HAProxy with `balance
roundrobin`, and the residency-aware picker (reads the nodes' /metrics, as
the Kubernetes inference gateway's endpoint picker does). Optionally the
file's bounded-load variant (hash-balance-factor) too.

Each router gets fresh nodes (the same as tests/python/test_haproxy.py: the
test model under several names, --max-loaded-models 1, 256 tokens of
context, one slot, one thread; --max-wait 10s) and the same seeded trace of streamed
completions with Poisson arrivals (scripts/bench_trace.py's). Prints swaps
(from the nodes' /metrics) and latency (send to last byte) per router.

    .venv/bin/python scripts/bench/scale_out.py --bin target/release/vram-llm

Needs haproxy (`scripts/dev setup` installs it). Not run in CI.
"""

import argparse
import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests/python")]

import bench_trace  # noqa: E402
import cluster  # noqa: E402

ROUTERS = ["haproxy-affinity", "haproxy-roundrobin", "picker"]


def run(router, args, trace, workdir):
    nodes = cluster.Nodes(args.nodes, args.models, args.max_loaded, args.max_wait, binary=args.bin, model=args.model)
    haproxy = None
    try:
        if router == "picker":
            url_for = lambda model: nodes.bases[cluster.pick(nodes.bases, model)]  # noqa: E731
        else:
            haproxy = cluster.HAProxy(workdir, nodes.ports, router.removeprefix("haproxy-"))
            url_for = lambda model: haproxy.base  # noqa: E731
        before = nodes.swaps()
        out = bench_trace.run_trace(trace, url_for, args.max_tokens)
        refused = collections.Counter(r["status"] for r in out if r["status"] != 200)
        return {"router": router, **bench_trace.summarize(out), "swaps": nodes.swaps() - before, "refused": refused}
    finally:
        if haproxy:
            haproxy.stop()
        nodes.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target/release/vram-llm"))
    ap.add_argument("--model", default=str(ROOT / "models/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--routers", nargs="+", default=ROUTERS, choices=ROUTERS + ["haproxy-bounded"])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["alpha", "beta", "gamma"],
                    help="names of the test model (alpha, beta, gamma hash to three different nodes)")
    ap.add_argument("--max-loaded", type=int, default=1, help="models each node keeps loaded")
    ap.add_argument("--max-wait", default="10s", help="each node's --max-wait (vram-llm's default)")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rate", type=float, default=2.0, help="mean arrivals per second")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    trace = bench_trace.make_trace(args.seed, args.requests, args.rate, args.models)
    with tempfile.TemporaryDirectory() as workdir:
        results = [run(router, args, trace, workdir) for router in args.routers]
    print(f"trace: {args.requests} streamed completions of {args.max_tokens} tokens, {args.rate}/s, seed {args.seed}, "
          f"models {' '.join(args.models)}; {args.nodes} nodes keeping {args.max_loaded} loaded each")
    print("| router | ok | swaps | makespan s | p50 s | p99 s | not ok (status: count) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        refused = ", ".join(f"{s}: {n}" for s, n in sorted(r["refused"].items())) or "-"
        print(f"| {r['router']} | {r['ok']}/{r['requests']} | {r['swaps']:.0f} | {r['makespan_s']:.2f} | "
              f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {refused} |")


if __name__ == "__main__":
    main()
