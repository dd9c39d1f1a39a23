#!/usr/bin/env bash
# The static build against the dynamic-link build on CPU: time to /health and
# decode tok/s (scripts/bench_decode.py), alternating, two rounds.
#
#   scripts/bench/static_vs_dynamic.sh DYNAMIC_BIN LIB_DIR [STATIC_BIN]
#
# DYNAMIC_BIN: built with `CARGO_TARGET_DIR=target-dl cargo build --release --features dynamic-link`;
# LIB_DIR: the libllama/libggml*.so it runs on (its build's out/build/bin).
set -euo pipefail
cd "$(dirname "$0")/../.."
DYN=$1 LIBS=$2 STATIC=${3:-target/release/vram-llm}
MODEL=${MODEL:-models/gemma-3-270m-q4_k_m.gguf}
PORT=${PORT:-18601}
for round in 1 2; do
    for which in static dynamic; do
        if [ $which = static ]; then cmd=("$STATIC"); else cmd=(env LD_LIBRARY_PATH="$LIBS" "$DYN"); fi
        t0=$(date +%s.%N)
        "${cmd[@]}" serve --model "$MODEL" --port "$PORT" --threads 2 > "/tmp/vram-llm-$which.log" 2>&1 &
        pid=$!
        until curl -sf "localhost:$PORT/health" >/dev/null; do
            kill -0 $pid 2>/dev/null || { cat "/tmp/vram-llm-$which.log"; exit 1; }
            sleep 0.05
        done
        echo "$which round $round: ready in $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s"
        .venv/bin/python scripts/bench_decode.py --url "http://127.0.0.1:$PORT" --concurrency 1 4 --max-tokens 128 2>&1 | tail -3
        kill $pid; wait $pid 2>/dev/null || true
    done
done
