#!/usr/bin/env python3
"""vram-llm side by side with llama-server (the peer) on one machine.

    scripts/dev bench                       # builds both, runs every section
    .venv/bin/python scripts/bench/side_by_side.py --only swaps,evicted --out /tmp/b.json

Both servers get the same model, --threads, slots and per-slot context
(both read -c as the total, split over -np slots without a unified KV cache,
so each gets ctx x parallel).
Each server is started here on its own port and stopped at the end; its
output goes to /tmp/vram-llm-bench-<server>-<section>.log, printed on failure.
Both servers run at once and the measurements alternate between them (an
idle server uses no CPU), so background load on a shared machine hits both;
the swap alternations run back to back per server. Servers use
--threads cores each: keep other jobs off the machine while it runs.

Sections (--only, comma separated; default all):
  startup  process spawn -> first token of a 1-token completion
  decode   aggregate decode tok/s at 1, 4, 8 streams (128 tokens, EOG biased away)
  prefill  prompt tok/s of a cold ~700-token prompt (prompt tokens / TTFT)
  cache    TTFT of a prompt-cache sequence: cold P, P+1, P, branch, unrelated U, P+1
  swaps    two copies of the model (a, b) that do not fit together, alternating
  evicted  the same alternation, each file dropped from the page cache first
  trace    scripts/bench_trace.py: vram-llm cache-aware vs fifo (vram-llm only)

Prints one markdown table (ratio = vram-llm / llama-server) and writes it
with the raw numbers as JSON to --out. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in scripts/bench
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_lib as bl  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SECTIONS = ["startup", "decode", "prefill", "cache", "swaps", "evicted", "trace"]
VRAM, PEER = "vram-llm", "llama-server"
PEER_DIR = os.environ.get("VRAM_LLM_PEER_DIR", os.path.expanduser("~/.cache/vram-llm/llama-server-11434.0.0"))


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- servers

def vram_argv(args, port, models):
    argv = [args.bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
            "--parallel", str(args.parallel), "--ctx-size", str(args.ctx * args.parallel), "--admin-token", "bench"]
    for name, path in models:
        argv += ["--model", f"{name}={path}" if name else path]
    return argv + args.vram_args.split()


def peer_common(args, port):
    return ["--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads), "-tb", str(args.threads),
            "-np", str(args.parallel), "-c", str(args.ctx * args.parallel), "--no-kv-unified", "--no-webui"] + args.peer_args.split()


def spawn(label, argv, port, section):
    path = f"/tmp/vram-llm-bench-{label}-{section}.log"
    return bl.Server(label, argv, port, path).start()


def main_server(args, which, section):
    port = bl.free_port()
    bl.read_whole(args.model)  # the same warm page cache for both
    if which == VRAM:
        return spawn(VRAM, vram_argv(args, port, [(None, args.model)]), port, section)
    return spawn(PEER, [args.peer_bin, "-m", args.model] + peer_common(args, port), port, section)


def slot_ctx(server, which):
    """The per-slot context the server reports (checks the flags' meaning)."""
    if which == VRAM:
        st = bl.get_json(server.url, "/admin/status", {"X-Admin-Token": "bench"})
        return [m.get("n_ctx") for m in st["models"]]
    return [ln.split("n_ctx_slot =")[1].split(",")[0].strip() for ln in server.grep_log("n_ctx_slot =")][-1:]


# ---------------------------------------------------------------- sections on one server

def each(servers, raw, section, fn, reverse=False):
    """fn(which, server) for every live server, in turn; a server that fails
    is reported and leaves `servers` (the other one goes on)."""
    items = list(servers.items())
    for which, server in reversed(items) if reverse else items:
        try:
            fn(which, server)
        except Exception as e:  # noqa: BLE001 - keep going with the other server
            fail(raw.setdefault(which, {}), section, e, server)
            servers.pop(which, None)


def run_decode(args, servers, raw):
    each(servers, raw, "decode", lambda w, s: bl.concurrent(s.url, ["Warm-up: once upon a time"] * args.parallel, 8))
    for n in (1, 4, 8):
        runs = {w: [] for w in servers}
        for rep in range(args.repeat):  # ABBA order against drift
            each(servers, raw, "decode", lambda w, s: runs[w].append(
                bl.concurrent(s.url, [f"Story {i}: Once upon a time" for i in range(n)], args.max_tokens)),
                reverse=rep % 2 == 1)
        for w in servers:
            agg = statistics.median(r["aggregate_tps"] for r in runs[w])
            raw[w].setdefault("decode", {})[n] = {"aggregate_tps": agg, "runs": runs[w]}
            log(f"  {w} decode {n} streams: {agg:.1f} tok/s (tokens per stream {runs[w][0]['tokens_each']})")


def run_prefill(args, servers, raw):
    out = {w: [] for w in servers}

    def one(w, s, k):
        r = bl.complete(s.url, bl.document(5000 + k, args.sentences, title=f"prefill {k}"), 1)
        ttft = r["first"] - r["start"]
        out[w].append({"prompt_tokens": r["prompt_tokens"], "ttft_s": ttft, "tps": (r["prompt_tokens"] or 0) / ttft,
                       "timings": r["timings"]})
        log(f"  {w} prefill {r['prompt_tokens']} tokens: TTFT {1000 * ttft:.0f} ms")

    for k in range(args.prefill_prompts):
        each(servers, raw, "prefill", lambda w, s: one(w, s, k))
    for w in servers:
        raw[w]["prefill"] = {"tps": statistics.median(o["tps"] for o in out[w]), "runs": out[w]}


CACHE_STEPS = ["cold P", "P + one sentence", "P again", "branch: P with another last sentence",
               "unrelated prompt U", "P + one sentence, after an unrelated prompt"]


def cache_prompts(n):
    lines = bl.document(77, n, title="cache").split("\n")
    extra = bl.sentences(78, 3, first_number=n + 1)
    p = "\n".join(lines)
    branch = "\n".join(lines[:-1] + [bl.sentences(79, 1, first_number=n)[0]])
    u = bl.document(99, n, title="unrelated")
    return [p, p + "\n" + extra[0], p, branch, u, p + "\n" + extra[1]]


def run_cache(args, servers, raw):
    """Sequential requests; each server sees the same sequence (their
    steps interleave, but each server's cache only sees its own)."""
    out = {w: [] for w in servers}

    def one(w, s, name, prompt):
        r = bl.complete(s.url, prompt, 1, extra={"cache_prompt": True} if w == PEER else None)
        ttft = r["first"] - r["start"]
        cached = ((r["usage"] or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
        out[w].append({"step": name, "ttft_s": ttft, "prompt_tokens": r["prompt_tokens"], "cached_tokens": cached,
                       "timings": r["timings"]})
        log(f"  {w} cache {name}: TTFT {1000 * ttft:.0f} ms ({r['prompt_tokens']} prompt tokens, cached {cached})")

    for name, prompt in zip(CACHE_STEPS, cache_prompts(args.sentences)):
        each(servers, raw, "cache", lambda w, s: one(w, s, name, prompt))
    for w in servers:
        raw[w]["cache"] = out[w]


def single_server_sections(args, which_list, sections, raw):
    """Both servers run side by side (an idle one uses no CPU) and every
    measurement alternates between them, so background load hits both."""
    servers = {}
    try:
        for which in which_list:
            server = main_server(args, which, "main")
            res = raw.setdefault(which, {})
            try:
                res["startup_s"] = server.wait_first_token(timeout=args.start_timeout)
                log(f"{which}: spawn -> first token {res['startup_s']:.2f} s")
                res["slot_ctx"] = slot_ctx(server, which)
                servers[which] = server
            except Exception as e:  # noqa: BLE001
                fail(res, "startup", e, server)
                server.stop()
        for section, fn in (("decode", run_decode), ("prefill", run_prefill), ("cache", run_cache)):
            if section in sections and servers:
                log(section)
                fn(args, servers, raw)
    finally:
        for server in servers.values():
            server.stop()


def fail(res, section, err, *servers):
    res.setdefault("errors", {})[section] = f"{type(err).__name__}: {err}"
    print(f"!! {section} failed: {err}", file=sys.stderr)
    traceback.print_exc()
    for s in servers:
        if s is not None:
            print(f"--- tail of {s.log_path} ---\n{s.tail()}\n---", file=sys.stderr)


# ---------------------------------------------------------------- swaps

def footprint_mib(args, path):
    """vram-llm's measured footprint of the model with these settings."""
    port = bl.free_port()
    s = spawn(VRAM, vram_argv(args, port, [("probe", path)]), port, "footprint")
    try:
        s.wait_first_token(timeout=args.start_timeout)
        st = bl.get_json(s.url, "/admin/status", {"X-Admin-Token": "bench"})
        return st["models"][0]["memory_bytes"] / 2**20
    finally:
        s.stop()


def vram_status(server):
    try:
        return bl.get_json(server.url, "/admin/status", {"X-Admin-Token": "bench"})
    except Exception as e:  # noqa: BLE001 - informational only
        return {"error": str(e)}


def swap_request(server, which, names, files, i, evict):
    """Request i of the rotation (a, b, a, ... or a, b, c, a, ...): a 4-token
    completion. With `evict`, the requested model's file leaves the page
    cache first."""
    k = i % len(names)
    resid = None
    if evict:
        bl.evict(files[k])
        others = [bl.resident_fraction(f) for j, f in enumerate(files) if j != k]
        resid = {"requested": bl.resident_fraction(files[k]), "other": min(others)}
    r = bl.complete(server.url, f"Request {i}: tell me about the number {17 * i + 3}.", 4,
                    model=names[k], stream=False, timeout=600)
    row = {"model": names[k], "latency_s": r["end"] - r["start"], "tokens": r["tokens"], "residency": resid}
    if which == VRAM:
        st = vram_status(server)
        models = st.get("models", [])
        row["loaded"] = [m["name"] for m in models if m.get("state") == "loaded"]
        row["last_load_ms"] = {m["name"]: m.get("last_load_ms") for m in models}
        row["swaps"] = st.get("swaps")
    return row


def verify_eviction(path):
    bl.read_whole(path)
    before = bl.resident_fraction(path)
    bl.evict(path)
    after = bl.resident_fraction(path)
    cold = bl.read_whole(path)
    warm = bl.read_whole(path)
    bl.evict(path)
    return {"resident_before": before, "resident_after_evict": after, "cold_read_mbps": cold, "warm_read_mbps": warm,
            "resident_after_second_evict": bl.resident_fraction(path)}


def start_swap_server(args, which, folder, res):
    """Two copies of the model, a and b, in `folder` (or the --swap-models
    files, two or more, as a, b, c...); one fits, not two."""
    sources = args.swap_models.split(",") if args.swap_models else [args.model, args.model]
    stems = [chr(ord("a") + i) for i in range(len(sources))]
    files = [os.path.join(folder, f"{s}.gguf") for s in stems]
    for src, f in zip(sources, files):
        if args.swap_models:
            os.link(src, f)  # given files are distinct already: no copy
        else:
            shutil.copyfile(args.model, f)
    port = bl.free_port()
    if which == VRAM:
        budget = args.swap_budget_mib or int(1.5 * footprint_mib(args, files[0]))
        res["swap_budget_mib"] = budget
        argv = vram_argv(args, port, list(zip(stems, files))) + ["--memory-budget-mib", str(budget)]
        server = spawn(VRAM, argv, port, "swaps")
        server.wait_http("/health", args.start_timeout)
        return server, stems, files
    argv = [args.peer_bin, "--models-dir", folder, "--models-max", "1"] + peer_common(args, port)
    server = spawn(PEER, argv, port, "swaps")
    ids = [m["id"] for m in server.wait_http("/v1/models", args.start_timeout).get("data", [])]
    names = [next((i for i in ids if i == stem), None) or next(i for i in ids if stem in i.split("/")[-1])
             for stem in stems]
    return server, names, files


def swap_sections(args, which_list, sections, raw):
    """Both swap servers run at once, each with its own two copies (so
    evicting one server's file never meets the other's mapping)."""
    tmp = tempfile.mkdtemp(prefix="vram-llm-bench-", dir=args.tmp_dir)
    servers, setup = {}, {}
    try:
        for which in which_list:
            res = raw.setdefault(which, {})
            folder = os.path.join(tmp, which)
            os.makedirs(folder)
            try:
                server, names, files = start_swap_server(args, which, folder, res)
                servers[which], setup[which] = server, (names, files)
                res["swap_models"] = names
            except Exception as e:  # noqa: BLE001
                fail(res, "swaps", e, bl.Server(which, [], 0, f"/tmp/vram-llm-bench-{which}-swaps.log"))
        if "evicted" in sections and setup:
            raw["eviction_check"] = verify_eviction(next(iter(setup.values()))[1][0])
            log(f"eviction check: {raw['eviction_check']}")
        for section, evict in (("swaps", False), ("evicted", True)):
            if section not in sections:
                continue
            # Each server's requests back to back (vram-llm's choices depend
            # on the time between requests); the other server idles meanwhile.
            rows = {w: [] for w in servers}
            each(servers, raw, section, lambda w, s: rows[w].extend(
                swap_request(s, w, *setup[w], i, evict) for i in range(args.swaps)))
            for w in servers:
                # The first round (each model's first, cold load) is the warm-up.
                lat = [r["latency_s"] for r in rows[w][len(setup[w][0]):]]
                raw[w][section] = {"mean_s": statistics.mean(lat), "median_s": statistics.median(lat),
                                   "requests": rows[w]}
                log(f"{w} {section}: mean {1000 * raw[w][section]['mean_s']:.0f} ms per request")
        if VRAM in servers:
            raw[VRAM]["swap_status"] = vram_status(servers[VRAM])
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- trace

def run_trace(args, raw):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_trace.py"), "--bin", args.bin, "--model", args.model,
           "--json"] + args.trace_args.split()
    log("trace: " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"bench_trace.py exited {p.returncode}: {p.stderr[-2000:]}")
    raw["trace"] = {"command": cmd, "results": json.loads(p.stdout)}


# ---------------------------------------------------------------- report

def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def build_table(raw):
    v, p = raw.get(VRAM, {}), raw.get(PEER, {})
    rows = []

    def add(name, a, b, fmt):
        rows.append({"measurement": name, VRAM: a, PEER: b, "ratio": ratio(a, b), "fmt": fmt})

    def get(d, *path):
        for key in path:
            if not isinstance(d, (dict, list)):
                return None
            try:
                d = d[key]
            except (KeyError, IndexError, TypeError):
                return None
        return d

    for n in (1, 4, 8):
        if get(v, "decode") is not None or get(p, "decode") is not None:
            add(f"decode tok/s, {n} stream{'s' if n > 1 else ''}", get(v, "decode", n, "aggregate_tps"),
                get(p, "decode", n, "aggregate_tps"), "{:.1f}")
    if "prefill" in v or "prefill" in p:
        toks = get(v, "prefill", "runs", 0, "prompt_tokens") or get(p, "prefill", "runs", 0, "prompt_tokens")
        add(f"prefill tok/s (~{toks}-token cold prompt)", get(v, "prefill", "tps"), get(p, "prefill", "tps"), "{:.0f}")
    if "startup_s" in v or "startup_s" in p:
        add("spawn -> first token, s", v.get("startup_s"), p.get("startup_s"), "{:.2f}")
    if "cache" in v or "cache" in p:
        for i, step in enumerate(CACHE_STEPS):
            a, b = get(v, "cache", i, "ttft_s"), get(p, "cache", i, "ttft_s")
            add(f"cache ({i + 1}) {step}: TTFT ms", a and 1000 * a, b and 1000 * b, "{:.0f}")
    for section, label in (("swaps", "alternating a/b swaps"), ("evicted", "alternating a/b, files evicted")):
        if section in v or section in p:
            a, b = get(v, section, "mean_s"), get(p, section, "mean_s")
            add(f"{label}: mean ms/request", a and 1000 * a, b and 1000 * b, "{:.0f}")
    tr = get(raw, "trace", "results")
    if tr and len(tr) >= 2:
        ca, ff = tr[0], tr[1]
        rows.append({"measurement": f"trace swaps, {ca['policy']} vs {ff['policy']} (vram-llm only)",
                     VRAM: f"{ca['swaps']} vs {ff['swaps']}", PEER: None, "ratio": ratio(ca["swaps"], ff["swaps"])})
        rows.append({"measurement": f"trace makespan s, {ca['policy']} vs {ff['policy']} (vram-llm only)",
                     VRAM: f"{ca['makespan_s']:.2f} vs {ff['makespan_s']:.2f}", PEER: None,
                     "ratio": ratio(ca["makespan_s"], ff["makespan_s"])})
    return rows


def cell(value, fmt="{}"):
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def markdown(rows):
    out = [f"| measurement | {VRAM} | {PEER} | ratio |", "|---|---|---|---|"]
    for r in rows:
        fmt = r.get("fmt", "{}")
        out.append(f"| {r['measurement']} | {cell(r[VRAM], fmt)} | {cell(r[PEER], fmt)} | {cell(r['ratio'], '{:.2f}')} |")
    return "\n".join(out)


def machine():
    cpu = "?"
    mem = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal"))
            mem = f"{kb / 2**20:.1f} GiB"
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            words = next(ln for ln in f if ln.startswith("flags")).split()
        flags = ",".join(x for x in ("avx2", "fma", "f16c", "avx512f") if x in words)
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "cpu_flags": flags, "ram": mem, "kernel": platform.release()}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return [0.0, 0.0, 0.0]


def git_commit():
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except OSError:
        return "?"


def mtime(path):
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/vram-llm"))
    ap.add_argument("--peer-bin", default=os.path.join(PEER_DIR, "bin/llama-server"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--servers", default=f"{VRAM},{PEER}", help="which servers to run (comma separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4, help="slots per model")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per slot")
    ap.add_argument("--max-tokens", type=int, default=128, help="decode tokens per stream")
    ap.add_argument("--repeat", type=int, default=2, help="decode runs per concurrency (median)")
    ap.add_argument("--sentences", type=int, default=35, help="numbered sentences in the ~700-token prompts (~20 tokens each)")
    ap.add_argument("--prefill-prompts", type=int, default=3, help="cold prompts for prefill (median)")
    ap.add_argument("--swaps", type=int, default=10, help="requests rotating over the swap models (the first round, "
                    "each model's first load, is a warm-up)")
    ap.add_argument("--swap-budget-mib", type=int, help="vram-llm budget for the swap sections "
                    "[default: 1.5 x the measured footprint, so one copy fits and two do not]")
    ap.add_argument("--swap-models", metavar="A,B[,C]", help="two or more distinct model files for the swap sections "
                    "(hard-linked into --tmp-dir, same file system) instead of two copies of --model")
    ap.add_argument("--vram-args", default="", help="extra vram-llm serve arguments (e.g. '--max-loaded-models 1')")
    ap.add_argument("--peer-args", default="", help="extra llama-server arguments (e.g. '-ngl all -fit off')")
    ap.add_argument("--tmp-dir", default=os.path.expanduser("~/.cache/vram-llm"),
                    help="where the model copies go (must be a disk, not tmpfs, for eviction)")
    ap.add_argument("--trace-args", default="--rate 2 --max-wait 10s", help="extra bench_trace.py arguments")
    ap.add_argument("--start-timeout", type=float, default=300)
    ap.add_argument("--out", default="/tmp/vram-llm-bench.json")
    args = ap.parse_args()

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in (VRAM, PEER):
            ap.error(f"unknown server {s}")
    for s, path in ((VRAM, args.bin), (PEER, args.peer_bin)):
        if s in servers and not os.access(path, os.X_OK):
            sys.exit(f"{s} binary not found: {path} (scripts/dev bench builds it)")
    os.makedirs(args.tmp_dir, exist_ok=True)

    t0 = time.time()
    load_before = loadavg()
    bin_at_start, git_at_start = mtime(args.bin), git_commit()
    if load_before[0] > 0.5:
        log(f"warning: load average {load_before[0]:.2f} before the run: other jobs skew these numbers")
    raw = {}
    single = [s for s in ("startup", "decode", "prefill", "cache") if s in sections]
    if single:
        log(f"{' and '.join(servers)}: {', '.join(single)}")
        single_server_sections(args, servers, sections, raw)
    if "swaps" in sections or "evicted" in sections:
        log("swaps: " + ", ".join(s for s in ("swaps", "evicted") if s in sections))
        swap_sections(args, servers, sections, raw)
    if "trace" in sections and VRAM in servers:
        try:
            run_trace(args, raw)
        except Exception as e:  # noqa: BLE001
            fail(raw.setdefault("trace_run", {}), "trace", e)

    if "startup" not in sections:
        for which in servers:
            raw.get(which, {}).pop("startup_s", None)
    rows = build_table(raw)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_at_start,
        "git_at_end": git_commit(),
        "machine": machine(),
        "vram_llm_bin": {"path": args.bin, "mtime": bin_at_start, "mtime_at_end": mtime(args.bin)},
        "peer_bin": {"path": args.peer_bin, "mtime": mtime(args.peer_bin)},
        "settings": {"threads": args.threads, "parallel": args.parallel, "ctx_per_slot": args.ctx,
                     "peer_ctx_total": args.ctx * args.parallel, "model": args.model, "max_tokens": args.max_tokens},
        "elapsed_s": time.time() - t0,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    m = info["machine"]
    if info["vram_llm_bin"]["mtime_at_end"] != bin_at_start:
        print(f"WARNING: {args.bin} was rebuilt during the run ({bin_at_start} -> "
              f"{info['vram_llm_bin']['mtime_at_end']}): later sections ran the new binary")
    print(f"\nvram-llm {info['git']} (binary {info['vram_llm_bin']['mtime']}) vs llama-server "
          f"({os.path.basename(os.path.dirname(os.path.dirname(args.peer_bin)))}), {info['date']}")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']} [{m['cpu_flags']}], {m['ram']} RAM, Linux {m['kernel']}")
    print(f"model {os.path.basename(args.model)}; both: --threads {args.threads}, {args.parallel} slots x "
          f"{args.ctx} tokens (slot ctx reported: vram-llm {raw.get(VRAM, {}).get('slot_ctx')}, "
          f"llama-server {raw.get(PEER, {}).get('slot_ctx')})\n")
    print(markdown(rows))
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {info['loadavg_after']} "
          f"(the benchmark itself keeps ~{args.threads} cores busy)")
    print("\nratio = vram-llm / llama-server (tok/s: higher is better for vram-llm; ms and s: lower is).")
    if "eviction_check" in raw:
        e = raw["eviction_check"]
        print(f"eviction check: page-cache residency {e['resident_before']:.2f} -> {e['resident_after_evict']:.2f} "
              f"after POSIX_FADV_DONTNEED; cold read {e['cold_read_mbps']:.0f} MB/s vs warm {e['warm_read_mbps']:.0f} MB/s")
    for which in servers:
        ev = raw.get(which, {}).get("evicted")
        if ev:
            req = [r["residency"]["requested"] for r in ev["requests"][1:] if r["residency"]]
            if req:
                note = ("eviction had no effect: the server still maps the file" if max(req) > 0.5
                        else "the file was read from disk")
                print(f"{which}: requested file's page-cache residency after eviction, measured requests: "
                      f"{min(req):.2f}-{max(req):.2f} ({note})")
    st = raw.get(VRAM, {}).get("swap_status")
    if st:
        print(f"vram-llm /admin/status after the swaps (budget {raw[VRAM].get('swap_budget_mib')} MiB): "
              + json.dumps({"swaps": st.get("swaps"), "models": [
                  {k: mm.get(k) for k in ("name", "state", "memory_bytes", "load_count", "last_load_ms")}
                  for mm in st.get("models", [])]}))
        recent = st.get("recent_swaps")
        print("vram-llm last swap (/admin/status recent_swaps[-1]): "
              + (json.dumps(recent[-1]) if recent else "not exposed by this build"))
    errors = {w: raw[w]["errors"] for w in raw if isinstance(raw[w], dict) and raw[w].get("errors")}
    if errors:
        print(f"\nERRORS: {json.dumps(errors)}")
    with open(args.out, "w") as f:
        json.dump({"info": info, "table": rows, "markdown": markdown(rows), "raw": raw}, f, indent=1, default=str)
    print(f"\nJSON: {args.out}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
