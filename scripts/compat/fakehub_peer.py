#!/usr/bin/env python3
"""llama-server's `-hf` against the fake hub (tests/python/fakehub.py): checks
that the fake hub answers llama.cpp's own download client, and prints every
request it made, per scenario. Not run in CI (it needs the peer binary, built
by scripts/bench/build_peer.sh); docs/hub-protocol.md records its output.

    scripts/compat/fakehub_peer.py [--peer-bin PATH]

Each scenario starts llama-server with HF_ENDPOINT at the fake hub and
LLAMA_CACHE at a scratch folder, waits until the model file is in the cache's
snapshot (or the server exits), then stops it. Exits non-zero when a scenario
does not end as expected.
"""

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/python"))
import fakehub  # noqa: E402
from fakehub import GATED_REPO, GEMMA_FILE, GEMMA_REPO, TINY_REPO, FakeHub  # noqa: E402

DEFAULT_PEER = Path.home() / ".cache/vram-llm/llama-server-11434.0.0/bin/llama-server"


def snapshot(cache: Path, repo: str, commit: str, name: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit / name


LISTENING = "listening on http"


def run_peer(peer: Path, hub: FakeHub, cache: Path, hf: str, wait_for: Path | None, extra_env=None, args=()):
    """Starts the peer, returns (exit code or None if stopped by us, log) once
    `wait_for` exists, the peer listens, or it exits (60 s at most)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLAMA_", "HUGGING"))}
    env.update({"HF_ENDPOINT": hub.endpoint, "LLAMA_CACHE": str(cache), **(extra_env or {})})
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([str(peer), "-hf", hf, "--port", "0", "-c", "256", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    code = None
    while time.monotonic() < deadline:
        code = proc.poll()
        log.seek(0)
        if code is not None or (wait_for is not None and wait_for.exists()) or LISTENING.encode() in log.read():
            break
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        code = None
    log.seek(0)
    return code, log.read().decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-bin", type=Path, default=DEFAULT_PEER)
    args = ap.parse_args()
    if not args.peer_bin.is_file():
        sys.exit(f"no llama-server at {args.peer_bin}: build it with scripts/bench/build_peer.sh")
    failures = []
    with tempfile.TemporaryDirectory() as tmp, FakeHub() as hub:
        cache = Path(tmp) / "cache"
        gemma = hub.repos[GEMMA_REPO]
        model = snapshot(cache, GEMMA_REPO, gemma.commit, GEMMA_FILE)
        tiny = hub.repos[TINY_REPO]

        def scenario(title, hf, wait_for, expect, **kw):
            hub.reset()
            code, text = run_peer(args.peer_bin, hub, cache, hf, wait_for, **kw)
            print(f"\n## {title}: llama-server -hf {hf} (exit: {'stopped by us' if code is None else code})")
            for line in hub.routes():
                print("  " + line)
            print(f"  file bytes served: {hub.bytes_served()}")
            errors = [line for line in text.splitlines() if "error" in line.lower() or "failed" in line.lower()]
            for line in errors[:4]:
                print("  log: " + line.strip())
            if not expect(code, text):
                failures.append(title)
                print("  UNEXPECTED; log tail:\n    " + "\n    ".join(text.splitlines()[-8:]))

        scenario("first download", f"{GEMMA_REPO}:Q4_K_M", model, lambda c, t: model.exists())
        if model.exists():
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
            print(f"  {model.relative_to(cache)} -> {os.readlink(model)}; sha256 ok: {digest == gemma.file(GEMMA_FILE).sha256}")
        scenario("already cached", f"{GEMMA_REPO}:Q4_K_M", None,
                 lambda c, t: LISTENING in t and hub.bytes_served() == 0, args=("--no-warmup",))
        model.unlink()
        for blob in (model.parent.parent.parent / "blobs").iterdir():
            blob.unlink()
        hub.drop_once(GEMMA_REPO, GEMMA_FILE)
        scenario("connection cut at half the file", f"{GEMMA_REPO}:Q4_K_M", model,
                 lambda c, t: model.exists() and hub.bytes_served() < 1.5 * gemma.file(GEMMA_FILE).size)
        part1 = snapshot(cache, TINY_REPO, tiny.commit, "tiny-Q4_K_M-00001-of-00002.gguf")
        scenario("split model, default quant (plus mmproj)", TINY_REPO, None,
                 lambda c, t: part1.exists() and snapshot(cache, TINY_REPO, tiny.commit, "tiny-Q4_K_M-00002-of-00002.gguf").exists())
        scenario("unknown quant", f"{TINY_REPO}:Q2_K", None, lambda c, t: c not in (None, 0))
        scenario("gated repo without HF_TOKEN", GATED_REPO, None, lambda c, t: c not in (None, 0))
        gated = snapshot(cache, GATED_REPO, hub.repos[GATED_REPO].commit, fakehub.GATED_FILE)
        scenario("gated repo with HF_TOKEN", GATED_REPO, gated, lambda c, t: gated.exists(),
                 extra_env={"HF_TOKEN": hub.token})
        hub.down()
        scenario("hub down, --offline", f"{GEMMA_REPO}:Q4_K_M", None, lambda c, t: LISTENING in t, args=("--offline", "--no-warmup"))
    if failures:
        sys.exit(f"\nunexpected: {', '.join(failures)}")
    print("\nall scenarios ended as expected")


if __name__ == "__main__":
    main()
