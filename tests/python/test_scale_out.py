"""Scale-out on loopback: three vram-llm nodes and a minimal endpoint picker
driven only by their /metrics, as the Kubernetes inference gateway's picker
is (docs/scale-out.md). Each node registers six models (the test model under
six names) and keeps at most two loaded (--max-loaded-models 2). The same interleaved trace goes through the
picker and through round-robin; the picker must cause fewer swaps.
"""

import os
import random
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

MODELS = [f"m{i}" for i in range(6)]
NODES = 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def _post(url, body):
    import json

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200
        return json.load(r)


def scrape(base):
    """What the picker reads: resident models, waiting requests, swaps."""
    out = {"resident": set(), "waiting": 0.0, "swaps": 0.0}
    for family in text_string_to_metric_families(_get(f"{base}/metrics")):
        for s in family.samples:
            if s.name == "vram_llm:lora_requests_info":
                out["resident"] = {m for m in s.labels["running_lora_adapters"].split(",") if m}
            elif s.name == "vram_llm:num_requests_waiting":
                out["waiting"] = s.value
            elif s.name == "vram_llm_swaps_total":
                out["swaps"] = s.value
    return out


def pick(bases, model):
    """Prefer a node where the model is resident, then the least queued."""
    views = [scrape(b) for b in bases]
    return min(range(len(bases)), key=lambda i: (model not in views[i]["resident"], views[i]["waiting"], len(views[i]["resident"]), i))


@pytest.fixture(scope="module")
def nodes():
    binary = os.environ["VRAM_LLM_BIN"]
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    procs, bases = [], []
    for _ in range(NODES):
        port = _free_port()
        args = [binary, "serve", "--port", str(port), "--ctx-size", "256", "--parallel", "1", "--threads", "1",
                "--max-loaded-models", "2", "--max-wait", "1s"]
        for name in MODELS:
            args += ["--model", f"{name}={model}"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        bases.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    for proc, base in zip(procs, bases):
        while True:
            assert proc.poll() is None, "a node exited during startup"
            try:
                _get(f"{base}/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "a node did not start"
                time.sleep(0.1)
    yield bases
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def replay(bases, trace, route):
    before = sum(scrape(b)["swaps"] for b in bases)
    for i, model in enumerate(trace):
        node = route(i, model)
        _post(f"{bases[node]}/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
    return sum(scrape(b)["swaps"] for b in bases) - before


def test_a_metrics_driven_picker_swaps_less_than_round_robin(nodes):
    # Two of the six models per node: all six fit across the three nodes.
    rng = random.Random(3)
    trace = [rng.choice(MODELS) for _ in range(36)]
    picked = replay(nodes, trace, lambda i, model: pick(nodes, model))
    round_robin = replay(nodes, trace, lambda i, model: i % NODES)
    print(f"\nswaps over {len(trace)} requests, {len(MODELS)} models, {NODES} nodes: picker {picked:.0f}, round-robin {round_robin:.0f}")
    assert picked < round_robin
