#!/usr/bin/env python3
"""Where an overload soak's long waits come from, read from the server's log.

Run the soak with the scheduler's debug lines on, then read the server's log
(scripts/soak.py writes it to /tmp/soak-PORT.log):

    RUST_LOG=info,vram_llm::scheduler=debug .venv/bin/python scripts/soak.py ...
    .venv/bin/python scripts/soak_waits.py /tmp/soak-PORT.log --bound 20

Each `admitted` line carries the request's wait for its slot (`waited_ms`)
and the wait the scheduler expected when it came (`expected_ms`, before the
calibration). Prints the waits grouped by what was expected, then every
admitted request that waited past --bound seconds, with when it was admitted
(seconds after the first admission) and its model.
"""
import argparse
import re
import statistics
from datetime import datetime

LINE = re.compile(r"^(\S+)\s.*\badmitted\b")
FIELD = re.compile(r"\b(model|waited_ms|expected_ms)=(\S+)")
BUCKETS = [(0, 0), (0.001, 5), (5, 10), (10, 15), (15, 20), (20, 1e9)]


def parse(path):
    rows = []
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        fields = dict(FIELD.findall(line))
        if "waited_ms" not in fields:
            continue
        at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        rows.append((at, fields.get("model", "?"), int(fields["waited_ms"]) / 1000, int(fields["expected_ms"]) / 1000))
    return rows


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--bound", type=float, default=20, help="seconds; list the admitted requests that waited longer")
    args = ap.parse_args()
    rows = parse(args.log)
    if not rows:
        raise SystemExit("no `admitted` lines: run the server with RUST_LOG=info,vram_llm::scheduler=debug")
    t0 = rows[0][0]
    print(f"{len(rows)} admitted; waited p50 {pct([r[2] for r in rows], 0.5):.1f} s, p99 {pct([r[2] for r in rows], 0.99):.1f} s")
    print("| expected s | admitted | waited p50 s | waited p90 s | over bound |")
    print("|---|---|---|---|---|")
    for lo, hi in BUCKETS:
        waits = [r[2] for r in rows if lo <= r[3] <= hi] if lo == hi else [r[2] for r in rows if lo <= r[3] < hi and r[3] > 0]
        if waits:
            label = "0 (nothing measured)" if lo == hi else (f"{lo:g}-{hi:g}" if hi < 1e9 else f"{lo:g}+")
            over = sum(w > args.bound for w in waits)
            print(f"| {label} | {len(waits)} | {statistics.median(waits):.1f} | {pct(waits, 0.9):.1f} | {over} |")
    over = [r for r in rows if r[2] > args.bound]
    print(f"\n{len(over)} waited over {args.bound:g} s (admitted at, model, waited, expected):")
    for at, model, waited, expected in over:
        print(f"  {(at - t0).total_seconds():7.1f} s  {model:10} {waited:6.1f} s  {expected:6.1f} s")


if __name__ == "__main__":
    main()
