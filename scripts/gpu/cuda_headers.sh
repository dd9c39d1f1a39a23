#!/usr/bin/env bash
# scripts/gpu/cuda_headers.sh - print a directory holding CUDA's driver API headers (cuda.h,
# cudaTypedefs.h), installing them first when no toolkit has them. The GPU sleep shim
# (src/shim/vram_sleep.c) compiles against them; it never links libcuda.
#
# Looked for, in order: $CUDA_INCLUDE_DIR, /usr/local/cuda/include, the CUDA 13.0 wheel prefix
# of scripts/cuda-build.sh ($VRAM_LLM_CUDA_ROOT/13.0/nvidia/cu13/include, default
# ~/.cache/vram-llm/cuda/13.0/...). When none has cuda.h, the one wheel that ships it,
# nvidia-cuda-runtime==13.0.96 (2.2 MB download, 7 MB unpacked: the cudart headers and
# libcudart.so.13), is pip-installed into that prefix, so cuda-build.sh later finds it there
# (it reinstalls its full wheel set over it). Idempotent; --check installs nothing (exit 1
# when no headers are found). pip runs under $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

ROOT_DIR=${VRAM_LLM_CUDA_ROOT:-$HOME/.cache/vram-llm/cuda}
SITE=$ROOT_DIR/13.0
PREFIX=$SITE/nvidia/cu13
WHEEL=nvidia-cuda-runtime==13.0.96   # the same version scripts/cuda-build.sh installs
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-}
[ -n "$PY" ] || { [ -x "$REPO/.venv/bin/python" ] && PY=$REPO/.venv/bin/python; } || PY=python3

for d in ${CUDA_INCLUDE_DIR:-} /usr/local/cuda/include "$PREFIX/include"; do
    if [ -n "$d" ] && [ -f "$d/cuda.h" ] && [ -f "$d/cudaTypedefs.h" ]; then
        echo "$d"
        exit 0
    fi
done
if [ "${1:-}" = "--check" ]; then
    echo "cuda_headers.sh: no cuda.h found (scripts/gpu/cuda_headers.sh or scripts/dev setup installs $WHEEL)" >&2
    exit 1
fi

echo "cuda_headers.sh: installing $WHEEL (2.2 MB) into $SITE for cuda.h" >&2
mkdir -p "$ROOT_DIR/wheels" "$SITE"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$ROOT_DIR/wheels" "$WHEEL" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-index --target "$tmp" \
    --find-links "$ROOT_DIR/wheels" "$WHEEL" >&2
# Merged, not `--target $SITE --upgrade`: that would replace a whole nvidia/ already there.
cp -a "$tmp"/. "$SITE"/
[ -f "$PREFIX/include/cuda.h" ] || { echo "cuda_headers.sh: $WHEEL has no include/cuda.h" >&2; exit 1; }
echo "$PREFIX/include"
