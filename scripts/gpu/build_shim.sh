#!/usr/bin/env bash
# scripts/gpu/build_shim.sh - build the GPU sleep shim (src/shim/vram_sleep*.c) as libvram-llm-sleep.so, and
# scripts/gpu/vmm_bench.c linked to it, with a plain C compiler (no nvcc, no Rust, no libcuda).
#
#   scripts/gpu/build_shim.sh OUT_DIR [CUDA_INCLUDE_DIR] [LLAMA_CPP_DIR]
#
# CUDA_INCLUDE_DIR: where cuda.h and cudaTypedefs.h are (default: /usr/local/cuda/include, else the CUDA 13.0
#   wheel prefix that scripts/gpu/cuda_headers.sh installs; only types and function-pointer types are used).
# LLAMA_CPP_DIR: the llama.cpp source the binary runs with, for ggml/include and ggml/src/ggml-backend-impl.h
#   (default: llama-cpp-sys-2 0.1.161's copy in the cargo registry).
# CC (default cc) and CFLAGS (default -O2) are honoured; SHIM_WERROR=1 adds -Werror (the dry run sets it; the
# GPU machine's compiler, another version, should not fail the route over a new warning).
#
# The library must not depend on libcuda (it dlopens libcuda.so.1 at run time, so it loads on machines without
# a driver): checked with readelf/ldd/nm, as is the set of exported symbols (exactly the vs_* functions of
# src/shim/vram_sleep.h).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:?usage: build_shim.sh OUT_DIR [CUDA_INCLUDE_DIR] [LLAMA_CPP_DIR]}
CUDA_INC=${2:-}
LLAMA=${3:-}
CC=${CC:-cc}
CFLAGS="${CFLAGS:--O2} -Wall -Wextra${SHIM_WERROR:+ -Werror}"
die() { printf 'build_shim.sh: %s\n' "$*" >&2; exit 1; }

if [ -z "$CUDA_INC" ]; then
    CUDA_INC=$("$REPO/scripts/gpu/cuda_headers.sh" --check) \
        || die "no CUDA headers: run scripts/gpu/cuda_headers.sh (or scripts/dev setup), or pass CUDA_INCLUDE_DIR"
fi
[ -f "$CUDA_INC/cuda.h" ] && [ -f "$CUDA_INC/cudaTypedefs.h" ] || die "no cuda.h / cudaTypedefs.h in $CUDA_INC"
if [ -z "$LLAMA" ]; then
    LLAMA=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp 2>/dev/null | head -1)
fi
[ -n "$LLAMA" ] && [ -f "$LLAMA/ggml/src/ggml-backend-impl.h" ] \
    || die "no llama.cpp source with ggml/src/ggml-backend-impl.h (got '${LLAMA}'; cargo fetch, or pass LLAMA_CPP_DIR)"

mkdir -p "$OUT"
SRC=$REPO/src/shim
LIB=$OUT/libvram-llm-sleep.so
# -fvisibility=hidden: only what vram_sleep.h declares (VS_API) is exported.
# shellcheck disable=SC2086
"$CC" -std=c11 -D_GNU_SOURCE $CFLAGS -fPIC -shared -fvisibility=hidden \
    -I"$CUDA_INC" -I"$LLAMA/ggml/include" -I"$LLAMA/ggml/src" -Wl,-soname,libvram-llm-sleep.so \
    -o "$LIB.tmp" "$SRC/vram_sleep.c" "$SRC/vram_sleep_ggml.c" -ldl -lpthread
mv "$LIB.tmp" "$LIB"
# shellcheck disable=SC2086
"$CC" -std=c11 $CFLAGS -I"$CUDA_INC" -I"$SRC" -o "$OUT/vmm_bench" \
    "$REPO/scripts/gpu/vmm_bench.c" -L"$OUT" -lvram-llm-sleep -Wl,-rpath,'$ORIGIN'

# no libcuda, at link time or otherwise
if readelf -d "$LIB" | grep -qi 'libcuda'; then die "$LIB has a DT_NEEDED on libcuda"; fi
if ldd "$LIB" 2>&1 | grep -qi 'libcuda'; then die "$LIB depends on libcuda (ldd)"; fi
if nm -D --undefined-only "$LIB" | grep -q ' cu[A-Z]'; then die "$LIB has undefined cu* symbols"; fi
# exports == the header's functions
want=$(grep -oE '\bvs_[a-z0-9_]+\(' "$SRC/vram_sleep.h" | tr -d '(' | sort -u)
have=$(nm -D --defined-only "$LIB" | awk '$2 == "T" { print $3 }' | sort -u)
[ "$want" = "$have" ] || die "exported symbols differ from vram_sleep.h: $(diff <(echo "$want") <(echo "$have") | grep '^[<>]' | tr '\n' ' ')"
printf 'build_shim.sh: %s (%s bytes, %s exports, no libcuda) and %s\n' "$LIB" "$(stat -c %s "$LIB")" \
    "$(echo "$have" | wc -l)" "$OUT/vmm_bench" >&2
