#!/usr/bin/env python3
"""Download throughput on loopback (issue 25): huggingface_hub's
`hf_hub_download` and `vram-llm pull` fetch the test model from the same fake
hub (tests/python/fakehub.py: resolve 302 -> CDN port) into separate scratch
caches, one run each; prints both times, MB/s, and the ratio. Both files are
checked against the sha256, and the hub must have served each exactly once.

    .venv/bin/python scripts/bench/hub_download.py [--ours target/release/vram-llm] [--skip-ours]
        [--first-token [--peer PATH]]

`--first-token` also times, side by side, `vram-llm serve -hf` and
llama-server's `-hf` (the peer, scripts/bench/build_peer.sh) from their start
with an empty cache to the first token of a completion (one run each, same
fake hub, same context and slots).

Both clients run as child processes (the hub runs here, its bodies sent with
sendfile). huggingface_hub's time is the hf_hub_download call alone (its
import excluded); ours is the whole `pull` process. The served file is read
once first so both find it in the page cache.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lib  # noqa: E402
from fakehub import GEMMA_FILE, GEMMA_REPO, FakeHub, Repo, RepoFile, file_sha256  # noqa: E402

HF_CODE = """
import json, sys, time
import huggingface_hub
t = time.perf_counter()
path = huggingface_hub.hf_hub_download(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "path": path, "version": huggingface_hub.__version__}))
"""


def clean_env(hub, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "LLAMA_CACHE"}
    env.update({"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    return env


def run_hf(hub, cache: Path, python: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run([python, "-c", HF_CODE, GEMMA_REPO, GEMMA_FILE], env=clean_env(hub, cache),
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"hf_hub_download failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall}


def run_ours(hub, cache: Path, binary: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run([binary, "pull", f"{GEMMA_REPO}:Q4_K_M"], env=clean_env(hub, cache), capture_output=True,
                         text=True, timeout=600)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{binary} pull failed ({out.returncode}):\n{out.stderr}")
    return {"seconds": wall, "wall": wall, "path": out.stdout.strip().splitlines()[-1]}


def first_token(hub, tmp: Path, ours: str, peer: str) -> dict:
    """Seconds from spawn to the first token, model not on disk yet."""
    results = {}
    for label, argv in [("vram-llm", [ours, "serve", "-hf", f"{GEMMA_REPO}:Q4_K_M", "-c", "1024", "-np", "1"]),
                        ("llama-server", [peer, "-hf", f"{GEMMA_REPO}:Q4_K_M", "-c", "1024", "-np", "1", "--no-webui",
                                          "--host", "127.0.0.1"])]:
        if not os.path.exists(argv[0]):
            print(f"{label}: {argv[0]} not built (scripts/bench/build_peer.sh): left out")
            continue
        hub.reset()
        port = bench_lib.free_port()
        server = bench_lib.Server(label, argv + ["--port", str(port)], port, f"/tmp/hub-first-token-{label}.log",
                                  env=clean_env(hub, tmp / f"first-{label}")).start()
        try:
            results[label] = server.wait_first_token(timeout=300)
        finally:
            server.stop()
        print(f"{label} -hf, empty cache: first token {results[label]:.2f} s after start, "
              f"{hub.bytes_served() / 1e6:.0f} MB served")
    if len(results) == 2:
        print(f"ratio, llama-server / vram-llm: {results['llama-server'] / results['vram-llm']:.2f}x (one run; above 1 means vram-llm is faster)")
    return results


def report(label: str, r: dict, size: int, expected: str):
    ok = file_sha256(r["path"]) == expected
    print(f"{label}: {r['seconds']:.2f} s ({size / r['seconds'] / 1e6:.0f} MB/s), process {r['wall']:.2f} s, "
          f"{r['served'] / size:.2f}x the file served, sha256 {'ok' if ok else 'WRONG'}")
    return ok and r["served"] == size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", default=str(ROOT / "target/release/vram-llm"))
    ap.add_argument("--skip-ours", action="store_true", help="time huggingface_hub only")
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("VRAM_LLM_TEST_MODEL", ROOT / "models/gemma-3-270m-q4_k_m.gguf")))
    ap.add_argument("--python", default=sys.executable, help="the Python that has huggingface_hub")
    ap.add_argument("--first-token", action="store_true", help="also time serve -hf to the first token, beside llama-server")
    ap.add_argument("--peer", default=bench_lib.PEER)
    args = ap.parse_args()
    if not args.skip_ours:
        helptext = subprocess.run([args.ours, "--help"], capture_output=True, text=True).stdout
        if " pull " not in helptext:
            sys.exit(f"{args.ours} has no `pull` command yet (issue 25): pass --skip-ours to time huggingface_hub alone")
    hub = FakeHub([Repo(GEMMA_REPO, [RepoFile(GEMMA_FILE, source=args.model)])])
    f = hub.file(GEMMA_REPO, GEMMA_FILE)
    bench_lib.read_whole(str(args.model))
    expected = f.sha256
    print(f"{GEMMA_REPO}/{GEMMA_FILE}: {f.size / 1e6:.1f} MB from the fake hub on loopback (302 to a CDN port)")
    ok = True
    results = {}
    with hub, tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        runs = [("huggingface_hub", lambda c: run_hf(hub, c, args.python))]
        if not args.skip_ours:
            runs.append(("vram-llm pull", lambda c: run_ours(hub, c, args.ours)))
        for label, run in runs:
            hub.reset()
            r = run(Path(tmp) / label.replace(" ", "-"))
            r["served"] = hub.bytes_served()
            if "version" in r:
                label = f"{label} {r['version']} hf_hub_download"
            ok &= report(label, r, f.size, expected)
            results[label.split()[0]] = r
        if "vram-llm" in results:
            ratio = results["huggingface_hub"]["seconds"] / results["vram-llm"]["seconds"]
            print(f"ratio, huggingface_hub time / vram-llm time: {ratio:.2f}x (one run; above 1 means vram-llm is faster)")
        if args.first_token:
            first_token(hub, Path(tmp), args.ours, args.peer)
    if not ok:
        sys.exit("a download was wrong (sha256) or not served exactly once")


if __name__ == "__main__":
    main()
