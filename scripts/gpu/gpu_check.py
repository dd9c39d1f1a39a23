#!/usr/bin/env python3
"""Placement checks of vram-llm on a real GPU (run by scripts/gpu/check).

    python3 scripts/gpu/gpu_check.py --bin vram-llm --models DIR --out results.json
    python3 scripts/gpu/gpu_check.py --report results.json     # the tables only

With a GPU it:
  1. compares `vram-llm gpus --json` with nvidia-smi (total and free MiB);
  2. picks --reserve-mib so that --usable-mib are left for models, asks
     `vram-llm plan --json` where each test model would go;
  3. serves all the models at once with that reserve and requests them in
     turn (1b, 8b, 8b-b, 30b). After each request it records what
     /admin/status says (placement, measured MiB per GPU, who is loaded), what
     nvidia-smi says, and what llama.cpp's load log says it did (layers
     offloaded, CUDA buffers);
  4. writes everything to --out and prints the tables: estimate against
     measured memory (error in %), planned against llama.cpp's offloaded
     layers, co-residency and eviction.
Standard library only (the GPU machine has no network).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

ADMIN = "gpu-check"
SEQUENCE = ["1b", "8b", "8b-b", "30b"]


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run_json(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def nvidia_smi():
    p = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free",
                        "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=60)
    rows = []
    for line in p.stdout.strip().splitlines():
        i, uuid, name, total, used, free = [x.strip() for x in line.split(",")]
        rows.append({"index": int(i), "uuid": uuid, "name": name, "total_mib": int(total),
                     "used_mib": int(used), "free_mib": int(free)})
    return rows


def http(url, body=None, headers=None, timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_health(url, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        try:
            http(url + "/health", timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise RuntimeError("server not healthy in time")


# llama.cpp's load log lines (through vram-llm's log at llama-cpp-2=info).
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
BUFFER = re.compile(r"(CUDA\d+|CPU|CUDA_Host|CPU_Mapped|CUDA\d+_Mapped)[_ ]?(model|KV|compute)? ?buffer size\s*=\s*([\d.]+) MiB")


def load_log(text):
    """Per load (in order): layers offloaded and CUDA buffer MiB by kind."""
    loads, cur = [], None
    for line in text.splitlines():
        m = OFFLOADED.search(line)
        if m:
            cur = {"offloaded": int(m.group(1)), "of": int(m.group(2)), "buffers": {}}
            loads.append(cur)
            continue
        m = BUFFER.search(line)
        if m and cur is not None:
            key = f"{m.group(1)} {m.group(2) or 'model'}"
            cur["buffers"][key] = round(cur["buffers"].get(key, 0) + float(m.group(3)), 1)
    return loads


def check(args):
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    smi = nvidia_smi()
    ours = run_json([args.bin, "gpus", "--json"])
    res["gpus"] = {"nvidia_smi": smi, "vram_llm": ours}
    free = smi[0]["free_mib"]
    reserve = max(0, free - args.usable_mib)
    res["reserve_mib"], res["usable_mib"] = reserve, args.usable_mib
    models = {name: os.path.join(args.models, f"{name}.gguf") for name in SEQUENCE}
    common = ["--ctx-size", str(args.ctx * args.parallel), "--parallel", str(args.parallel), "--reserve-mib", str(reserve)]
    res["plans"] = {n: run_json([args.bin, "plan", "--model", p, "--json"] + common) for n, p in models.items()}
    log("plans: " + ", ".join(f"{n}={p['kind']} {p['n_gpu_layers']}/{p['n_layers']}" for n, p in res["plans"].items()))

    port = args.port
    url = f"http://127.0.0.1:{port}"
    argv = [args.bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
            "--admin-token", ADMIN] + common
    for n, p in models.items():
        argv += ["--model", f"{n}={p}"]
    env = dict(os.environ, RUST_LOG="info,llama-cpp-2=info", NO_COLOR="1")
    res["serve_argv"] = argv
    log_path = args.server_log
    steps = []
    with open(log_path, "w") as lf:
        proc = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, env=env)
        try:
            wait_health(url, proc)
            for name in SEQUENCE:
                before = nvidia_smi()[0]
                t0 = time.time()
                err = None
                try:
                    r = http(url + "/v1/completions", {"model": name, "prompt": "Once upon a time", "max_tokens": 8,
                                                       "temperature": 0})
                    tokens = r["usage"]["completion_tokens"]
                except Exception as e:  # noqa: BLE001 - recorded
                    err, tokens = str(e), None
                took = time.time() - t0
                st = http(url + "/admin/status", headers={"X-Admin-Token": ADMIN})
                after = nvidia_smi()[0]
                step = {"request": name, "seconds": round(took, 3), "tokens": tokens, "error": err,
                        "smi_used_before": before["used_mib"], "smi_used_after": after["used_mib"],
                        "smi_free_after": after["free_mib"],
                        "loaded": [m["name"] for m in st["models"] if m["state"] == "loaded"],
                        "models": {m["name"]: {k: m.get(k) for k in ("state", "memory_bytes", "memory_measured",
                                                                     "placement", "holding", "last_load_ms",
                                                                     "load_count")}
                                   for m in st["models"]},
                        "gpus": st.get("gpus"), "swaps": st.get("swaps")}
                steps.append(step)
                log(f"{name}: {took:.2f}s tokens={tokens} loaded={step['loaded']} smi used "
                    f"{before['used_mib']} -> {after['used_mib']} MiB{' ERROR ' + err if err else ''}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    res["steps"] = steps
    with open(log_path) as f:
        res["llama_loads"] = load_log(f.read())
    return res


# ---------------------------------------------------------------- report

def pct(est, meas):
    return f"{100.0 * (est - meas) / meas:+.1f}%" if meas else "-"


def report(res):
    out = []
    g = res["gpus"]
    out.append("### GPUs: vram-llm gpus vs nvidia-smi\n")
    out.append("| GPU | name | total MiB (ours / smi) | free MiB (ours / smi) |")
    out.append("|---|---|---|---|")
    for s in g["nvidia_smi"]:
        o = next((x for x in g["vram_llm"] if x.get("uuid") == s["uuid"] or x.get("index") == s["index"]), {})
        out.append(f"| {s['index']} | {s['name']} | {o.get('total_mib', '-')} / {s['total_mib']} | "
                   f"{o.get('free_mib', '-')} / {s['free_mib']} |")
    out.append(f"\nreserve {res['reserve_mib']} MiB, leaving {res['usable_mib']} MiB for models\n")
    out.append("### Estimate against measured memory, planned against llama.cpp's layers\n")
    out.append("The plan is the one `serve` made for the load (after the CUDA context and the models already")
    out.append("resident); measured is what llama.cpp's load log says it allocated on the GPU (model, KV and")
    out.append("compute buffers). The error is (plan - measured) / measured: positive means the plan")
    out.append("reserved more than was used.\n")
    out.append("| model | placement | layers planned (n_gpu_layers) | llama.cpp offloaded | plan GPU MiB |"
               " measured GPU MiB | error | load ms |")
    out.append("|---|---|---|---|---|---|---|---|")
    loads = list(res.get("llama_loads", []))
    for step in res["steps"]:
        name = step["request"]
        m = step["models"].get(name, {})
        plan = m.get("placement") or res["plans"][name]
        planned = sum(d["mib"] for d in plan.get("mib_per_device", []))
        ll = loads.pop(0) if loads and m.get("last_load_ms") is not None else {}
        cuda = sum(v for k, v in ll.get("buffers", {}).items() if k.startswith("CUDA") and "Host" not in k)
        out.append(f"| {name} | {plan['kind']} | {plan['n_gpu_layers']} | {ll.get('offloaded', '-')}/{ll.get('of', '-')} |"
                   f" {planned} | {cuda:.0f} | {pct(planned, cuda) if cuda else '-'} | {m.get('last_load_ms', '-')} |")
    out.append("\n`vram-llm plan` before anything was loaded (the whole usable memory, no CUDA context yet):\n")
    out.append("| model | placement | n_gpu_layers | plan GPU MiB |")
    out.append("|---|---|---|---|")
    for name, plan in res["plans"].items():
        out.append(f"| {name} | {plan['kind']} | {plan['n_gpu_layers']} ({plan['n_gpu_layers'] - 1} of {plan['n_layers']} layers + output) |"
                   f" {sum(d['mib'] for d in plan.get('mib_per_device', []))} |")
    out.append("\n### Co-residency and eviction (requests in order)\n")
    out.append("| request | seconds | loaded after | nvidia-smi used MiB after | error |")
    out.append("|---|---|---|---|---|")
    for s in res["steps"]:
        out.append(f"| {s['request']} | {s['seconds']} | {', '.join(s['loaded'])} | {s['smi_used_after']} | "
                   f"{s['error'] or ''} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin")
    ap.add_argument("--models", help="folder with 1b.gguf, 8b.gguf, 8b-b.gguf, 30b.gguf")
    ap.add_argument("--usable-mib", type=int, default=12288, help="GPU MiB left for models (the reserve is the rest)")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per slot")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--server-log", default="/tmp/vram-llm-gpu-check.log")
    ap.add_argument("--out", default="/tmp/vram-llm-gpu-check.json")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a recorded run and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print(report(json.load(f)))
        return
    if not (args.bin and args.models):
        ap.error("--bin and --models are needed (or --report)")
    res = check(args)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(report(res))


if __name__ == "__main__":
    main()
