"""Many vram-llm nodes on loopback, for the scale-out tests and
scripts/bench/scale_out.py: the nodes, what their /metrics say, a
residency-aware picker, and HAProxy run from config/haproxy/vram-llm.cfg with
only its addresses replaced (and its balance line, for round robin)."""

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "config/haproxy/vram-llm.cfg"
# Gemma 3: token 1 is <eos>, 106 <end_of_turn>; biased away, a request generates exactly max_tokens.
NO_EOG = {"1": -100, "106": -100}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(done, what, timeout=120):
    """Polls `done()` until it is true; the deadline only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def post(url, body):
    """POSTs JSON; returns (status, parsed body), errors included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def scrape(base):
    """What a node's /metrics says: models resident, requests waiting, swaps
    so far, and requests answered per model (any route, any status)."""
    out = {"resident": set(), "coming": set(), "waiting": 0.0, "swaps": 0.0, "requests": {}}
    for family in text_string_to_metric_families(get(f"{base}/metrics")):
        for s in family.samples:
            if s.name == "vram_llm:lora_requests_info":
                out["resident"] = {m for m in s.labels["running_lora_adapters"].split(",") if m}
                out["coming"] = {m for m in s.labels["waiting_lora_adapters"].split(",") if m}
            elif s.name == "vram_llm:num_requests_waiting":
                out["waiting"] = s.value
            elif s.name == "vram_llm_swaps_total":
                out["swaps"] = s.value
            elif s.name == "vram_llm_requests_total" and s.labels["model"]:
                out["requests"][s.labels["model"]] = out["requests"].get(s.labels["model"], 0) + s.value
    return out


def pick(bases, model):
    """The residency-aware picker (what the Kubernetes inference gateway's
    endpoint picker does from the same metrics): a node where the model is
    resident or coming (requests wait for it: it is loading or next), then
    the least queued, then the one with fewest models there or coming."""
    views = [scrape(b) for b in bases]

    def key(i):
        there = views[i]["resident"] | views[i]["coming"]
        return (model not in there, views[i]["waiting"], len(there), i)

    return min(range(len(bases)), key=key)


class Nodes:
    """`count` vram-llm processes on loopback serving the test model under
    each of `names`, `max_loaded` of them loaded at a time, small contexts."""

    def __init__(self, count, names, max_loaded, max_wait="1s", binary=None, model=None):
        binary = binary or os.environ["VRAM_LLM_BIN"]
        model = model or os.environ["VRAM_LLM_TEST_MODEL"]
        self.procs, self.ports = [], []
        for _ in range(count):
            port = free_port()
            args = [binary, "serve", "--port", str(port), "--ctx-size", "256", "--parallel", "1", "--threads", "1",
                    "--max-loaded-models", str(max_loaded), "--max-wait", max_wait]
            for name in names:
                args += ["--model", f"{name}={model}"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        self.bases = [f"http://127.0.0.1:{p}" for p in self.ports]
        for i in range(count):
            until(lambda: self._healthy(i), f"node {i} healthy")

    def _healthy(self, i):
        assert self.procs[i].poll() is None, f"node {i} exited during startup"
        try:
            get(f"{self.bases[i]}/health")
            return True
        except OSError:
            return False

    def scrape(self):
        """Every running node's scrape, by index (a stopped node: None)."""
        return [scrape(b) if p.poll() is None else None for p, b in zip(self.procs, self.bases)]

    def swaps(self):
        return sum(s["swaps"] for s in self.scrape() if s)

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def haproxy_config(node_ports, port, stats_port, balance="affinity"):
    """config/haproxy/vram-llm.cfg for these loopback nodes. `balance`:
    affinity (the file as it is), bounded (its hash-balance-factor line
    uncommented) or roundrobin (its balance line replaced)."""
    text = HAPROXY_CFG.read_text()

    def sub(pattern, repl):
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == 1, f"{HAPROXY_CFG}: expected one match of {pattern!r}"

    servers = "".join(f"    server node{i} 127.0.0.1:{p} id {i}\n" for i, p in enumerate(node_ports, 1))
    sub(r"^    bind :8000$", f"    bind 127.0.0.1:{port}")
    sub(r"^    bind 127\.0\.0\.1:8404$", f"    bind 127.0.0.1:{stats_port}")
    sub(r"(^    server node\d+ .*\n)+", servers)
    if balance == "bounded":
        sub(r"^    # (hash-balance-factor \d+)$", r"    \1")
    elif balance == "roundrobin":
        sub(r"^    balance hash .*$", "    balance roundrobin")
    else:
        assert balance == "affinity", balance
    return text


def haproxy_bin():
    """HAProxy's path: on PATH, or in /usr/sbin where Debian installs it (not
    on a user's PATH); None when it is not installed."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


MISSING_HAPROXY = "haproxy is not installed: run `scripts/dev setup` (it installs it with apt)"


class HAProxy:
    """HAProxy in the foreground on `config` (haproxy_config's text for
    `node_ports`, or `edit` of it), its log in `workdir`; returned once
    every server is UP."""

    def __init__(self, workdir, node_ports, balance="affinity", edit=lambda text: text):
        binary = haproxy_bin()
        if binary is None:
            raise RuntimeError(MISSING_HAPROXY)
        self.port, stats_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stats_url = f"http://127.0.0.1:{stats_port}/stats;csv"
        cfg = Path(workdir) / f"haproxy-{self.port}.cfg"
        cfg.write_text(edit(haproxy_config(node_ports, self.port, stats_port, balance)))
        self.log = cfg.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        until(lambda: self._up(len(node_ports)), f"HAProxy ({balance}) with every server UP (log: {self.log})")

    def _up(self, count):
        assert self.proc.poll() is None, f"haproxy exited: {self.log.read_text()}"
        try:
            return sum(s["status"] == "UP" for s in self.servers().values()) == count
        except OSError:
            return False

    def servers(self):
        """The backend's servers by name: status, retries (wretr), redispatches (wredis)."""
        rows = csv.DictReader(io.StringIO(get(self.stats_url).lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "vram_llm" and r["svname"] not in ("FRONTEND", "BACKEND")}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
