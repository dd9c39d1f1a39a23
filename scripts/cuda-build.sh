#!/usr/bin/env bash
# scripts/cuda-build.sh - build `vram-llm` with the `cuda` feature on a machine
# without a GPU and without a system CUDA toolkit, using NVIDIA's CUDA 13.0
# wheels from PyPI as the toolkit.
#
# What it does (each step is skipped when its result is already there):
#   1. pip-installs the CUDA 13.0 (update 2) wheels into
#      $VRAM_LLM_CUDA_ROOT/13.0 (default ~/.cache/vram-llm/cuda/13.0); the
#      wheels all unpack into one prefix, nvidia/cu13/{bin,include,lib,nvvm}.
#      CUDA 12 is not used: the nvidia-cuda-nvcc-cu12 wheels ship only ptxas and
#      libnvvm, no nvcc/cicc/cudafe++/fatbinary, so they cannot compile .cu files.
#   2. makes that prefix look like a toolkit to CMake's FindCUDAToolkit and to
#      llama-cpp-sys-2's build.rs (which looks in $CUDA_LIBRARY_PATH/lib64 and
#      lib64/stubs): lib64 -> lib, unversioned .so symlinks, and
#      lib/stubs/libcuda.so, a stub generated from cuda.h (no wheel ships the
#      driver stub) with the soname libcuda.so.1, used only at link time.
#   3. llama-cpp-sys-2 links cublas_static/cublasLt_static on Linux; the wheels
#      ship only libcublas.so.13/libcublasLt.so.13. So an empty
#      libcublas_static.a / libcublasLt_static.a go into a separate shim dir
#      ($VRAM_LLM_CUDA_ROOT/shim/lib64) and the binary links the shared cuBLAS
#      with link args appended at the end of the link line, plus an rpath to
#      the wheel prefix. cudart and culibos are linked statically as usual.
#   4. runs `cargo build --release --features cuda` for one GPU architecture
#      (CMAKE_CUDA_ARCHITECTURES, default 90 = H100/H200) and prints the
#      elapsed time.
#
# The binary then needs at run time: libcuda.so.1 (the NVIDIA driver, >= 580
# for CUDA 13.0) and libcublas.so.13 + libcublasLt.so.13 (found via the rpath
# to the wheel prefix, or install nvidia-cublas==13.0.* / a CUDA 13 toolkit and
# put its lib dir on LD_LIBRARY_PATH).
#
# Usage: scripts/cuda-build.sh            (from anywhere; builds this checkout)
# Env:   CMAKE_CUDA_ARCHITECTURES (90), CMAKE_BUILD_PARALLEL_LEVEL and
#        CARGO_BUILD_JOBS (2), VRAM_LLM_CUDA_ROOT (~/.cache/vram-llm/cuda).
# Run it niced on a shared machine:  nice -n 19 scripts/cuda-build.sh 2>&1 | tee /tmp/cuda-build.log
set -euo pipefail

ROOT_DIR=${VRAM_LLM_CUDA_ROOT:-$HOME/.cache/vram-llm/cuda}
SITE=$ROOT_DIR/13.0
PREFIX=$SITE/nvidia/cu13
SHIM=$ROOT_DIR/shim
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# CUDA 13.0 update 2, matching driver 580 (CUDA 13.0).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-culibos==13.0.85
  nvidia-cublas==13.0.2.14
)

log() { printf '[cuda-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# 1. wheels
if [[ -x $PREFIX/bin/nvcc && -f $PREFIX/lib/libcublas.so.13 && -f $PREFIX/lib/libcudart_static.a \
      && -f $PREFIX/lib/libculibos.a && -x $PREFIX/nvvm/bin/cicc && -f $PREFIX/include/cccl/cub/cub.cuh ]]; then
  log "toolkit already in $PREFIX"
else
  log "installing CUDA 13.0 wheels into $SITE"
  mkdir -p "$ROOT_DIR/wheels"
  python3 -m pip download --quiet --no-deps -d "$ROOT_DIR/wheels" "${WHEELS[@]}"
  python3 -m pip install --quiet --no-deps --no-index --upgrade --target "$SITE" \
    --find-links "$ROOT_DIR/wheels" "${WHEELS[@]}"
fi

# 2. toolkit layout
[[ -e $PREFIX/lib64 ]] || ln -s lib "$PREFIX/lib64"
for lib in cudart cublas cublasLt nvblas; do
  [[ -e $PREFIX/lib/lib$lib.so ]] || ln -s "lib$lib.so.13" "$PREFIX/lib/lib$lib.so"
done
[[ -e $PREFIX/lib/libnvvm.so ]] || ln -s libnvvm.so.4 "$PREFIX/lib/libnvvm.so"

if [[ ! -f $PREFIX/lib/stubs/libcuda.so ]]; then
  log "generating the libcuda.so link stub from cuda.h"
  mkdir -p "$PREFIX/lib/stubs"
  tmp=$(mktemp -d)
  # Every driver API function cuda.h declares, after its #define cuX cuX_v2
  # renames, becomes an exported function that returns
  # CUDA_ERROR_STUB_LIBRARY (34), as NVIDIA's own stub does.
  gcc -E -P -I"$PREFIX/include" "$PREFIX/include/cuda.h" \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u \
    | sed 's/.*/int &(void) { return 34; }/' > "$tmp/cuda_stub.c"
  gcc -shared -fPIC -o "$tmp/libcuda.so" -Wl,-soname,libcuda.so.1 "$tmp/cuda_stub.c"
  mv "$tmp/libcuda.so" "$PREFIX/lib/stubs/libcuda.so"
  rm -rf "$tmp"
fi

# 3. static cuBLAS shim (see header)
mkdir -p "$SHIM/lib64"
for lib in cublas_static cublasLt_static; do
  [[ -f $SHIM/lib64/lib$lib.a ]] || ar rcs "$SHIM/lib64/lib$lib.a"
done

# 4. build
export CUDA_PATH=$PREFIX CUDAToolkit_ROOT=$PREFIX
export CUDA_LIBRARY_PATH=$PREFIX:$SHIM   # llama-cpp-sys-2 searches <each>/lib64 and lib64/stubs
export PATH=$PREFIX/bin:$PATH
export CMAKE_CUDA_COMPILER=$PREFIX/bin/nvcc
export CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# Shared cuBLAS instead of the *_static archives the wheels lack; -C link-arg
# lands after all libraries on the link line, and --as-needed (rustc's default)
# keeps it out of binaries that do not use cuBLAS (build scripts).
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-L$PREFIX/lib -C link-arg=-lcublas -C link-arg=-lcublasLt -C link-arg=-Wl,-rpath,$PREFIX/lib"

log "nvcc: $(nvcc --version | tail -2 | head -1)"
log "cargo build --release --features cuda (CMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES, jobs $CARGO_BUILD_JOBS/$CMAKE_BUILD_PARALLEL_LEVEL) in $REPO"
start=$(date +%s)
(cd "$REPO" && cargo build --release --features cuda "$@")
end=$(date +%s)
log "build finished in $((end - start)) s ($(( (end - start) / 60 )) min $(( (end - start) % 60 )) s)"
