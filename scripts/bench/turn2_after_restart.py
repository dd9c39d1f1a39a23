#!/usr/bin/env python3
"""Turn 2 of a conversation after the server restarted, vs turn 1 (cold).

    .venv/bin/python scripts/bench/turn2_after_restart.py [--model M] [--threads N]

Runs, one after the other, on the same model, threads, slots and context:
  vram-llm --kv-cache-dir D   turn 1, graceful stop (SIGTERM), start, turn 2
  vram-llm without a dir      the same (turn 2 is cold again)
  llama-server                the same, when the peer is built (scripts/dev bench
                              builds it); it keeps no cache across a restart
Time to first token of a 1-token completion, non-streamed. Standard library only.
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_lib as bl  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PEER = os.path.join(os.environ.get("VRAM_LLM_PEER_DIR", os.path.expanduser("~/.cache/vram-llm/llama-server-11434.0.0")),
                    "bin", "llama-server")


def ttft_ms(server, prompt):
    r = bl.complete(server.url, prompt, 1, stream=False)
    return 1000 * (r["end"] - r["start"]), (r["usage"] or {}).get("prompt_tokens_details", {}).get("cached_tokens")


def run(label, argv_for_port):
    conv = " ".join(f"Turn {i}: the user asks about planet number {i} and its moons." for i in range(45))
    times = []
    for turn, prompt in ((1, conv), (2, conv + " And the rings?")):
        port = bl.free_port()
        server = bl.Server(label, argv_for_port(port), port, f"/tmp/vram-llm-restart-{label}-{turn}.log").start()
        try:
            server.wait_http("/health")
            server.wait_first_token()
            times.append(ttft_ms(server, prompt))
        finally:
            server.stop()
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "vram-llm"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--ctx", type=int, default=4096, help="per slot")
    args = p.parse_args()
    bl.read_whole(args.model)
    kv_dir = tempfile.mkdtemp(prefix="vram-llm-restart-")

    def vram(extra):
        return lambda port: [args.bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
                             "--parallel", str(args.parallel), "--ctx-size", str(args.ctx * args.parallel), "--model", args.model] + extra

    rows = [("vram-llm --kv-cache-dir", run("vram-dir", vram(["--kv-cache-dir", kv_dir]))),
            ("vram-llm (memory only)", run("vram-mem", vram([])))]
    shutil.rmtree(kv_dir, ignore_errors=True)
    if os.access(PEER, os.X_OK):
        peer = lambda port: [PEER, "-m", args.model, "--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads),
                             "-tb", str(args.threads), "-np", str(args.parallel), "-c", str(args.ctx * args.parallel),
                             "--no-kv-unified", "--no-webui"]
        rows.append(("llama-server", run("peer", peer)))
    print("| server | turn 1 (cold) | turn 2 after a restart | cold / turn 2 |")
    print("|---|---|---|---|")
    for label, ((t1, _), (t2, cached)) in rows:
        shown = f", cached {cached}" if cached is not None else ""
        print(f"| {label} | {t1:.0f} ms | {t2:.0f} ms{shown} | {t1 / t2:.1f}x |")


if __name__ == "__main__":
    main()
