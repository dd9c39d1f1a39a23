"""The server every end-to-end test talks to: the `vram-llm` binary serving
the test model (VRAM_LLM_BIN, VRAM_LLM_TEST_MODEL, set by `scripts/dev test`)
with an API key, one per test module; and the fake Hugging Face hub
(fakehub.py) for the download tests."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from cluster import free_port

API_KEY = "e2e-secret"


def launch(args, env=None):
    """Starts `vram-llm serve` with `args` (and environment `env`, if given)
    on a free port and waits until /health says 200; returns (process, base URL)."""
    binary = os.environ["VRAM_LLM_BIN"]
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--port", str(port), *args], stdout=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "vram-llm exited during startup"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.1)


def post_json(base, path, body, headers=None, timeout=60):
    """POSTs `body` as JSON to `base + path`; returns (status, parsed body),
    error answers included."""
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    proc, base = launch(["--model", model, "--ctx-size", "1024", "--alias", "gemma", "--api-key", API_KEY])
    yield base
    stop(proc)


@pytest.fixture
def fakehub():
    """A fresh fake hub serving fakehub.default_repos(): the test model as
    ggml-org/gemma-3-270m-GGUF, a tiny split repo, a gated one, a lying one."""
    from fakehub import FakeHub

    with FakeHub() as hub:
        yield hub
