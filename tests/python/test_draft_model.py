"""A draft model must share its model's vocabulary: one a `[[models]]` entry
names is refused when the pair loads, with an error that says why; one given
for every model (`--model-draft`) is left out where it cannot draft; a draft
that is neither a model nor a file stops the server at startup, naming it."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import launch, post_json, stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny llama-architecture GGUF with its own 512-token vocabulary."""
    out = tmp_path_factory.mktemp("draft") / "tiny.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts/gpu/mkgguf.py"), "--shape", "tiny", "--out", str(out)], check=True, capture_output=True)
    return out


def post(base, body):
    return post_json(base, "/completion", body, timeout=120)


def test_a_draft_model_of_another_vocabulary_is_refused_when_the_pair_loads(tiny_llama, tmp_path):
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    # Two models, so that neither loads at startup: the request loads one.
    config = tmp_path / "c.toml"
    config.write_text(f'[[models]]\nname = "a"\npath = "{model}"\ndraft = "{tiny_llama}"\n\n[[models]]\nname = "b"\npath = "{model}"\n')
    proc, base = launch(["--config", str(config), "--ctx-size", "1024"])
    try:
        status, body = post(base, {"model": "a", "prompt": "Hello", "n_predict": 4})
        assert status == 503, body
        message = body["error"]["message"]
        assert "draft model" in message and "tiny.gguf" in message and "vocabulary" in message and "BOS" in message, message
        # Nothing half-loaded stays: the same answer again, and the server is healthy.
        status, again = post(base, {"model": "a", "prompt": "Hello", "n_predict": 4})
        assert status == 503 and "vocabulary" in again["error"]["message"], again
        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            assert r.status == 200
        # /v1/models names each model's draft model.
        with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
            drafts = {m["id"]: m.get("draft") for m in json.load(r)["data"]}
        assert drafts == {"a": "tiny", "b": None}, drafts
    finally:
        stop(proc)


def test_a_draft_for_every_model_is_left_out_where_it_cannot_draft(tiny_llama):
    """`--model-draft` is every model's: one it cannot draft for (here, any:
    another vocabulary) loads and answers without it."""
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    proc, base = launch(["--model", f"a={model}", "--model", f"b={model}", "--ctx-size", "1024", "--model-draft", str(tiny_llama)])
    try:
        status, body = post(base, {"model": "a", "prompt": "Hello", "n_predict": 4, "temperature": 0})
        assert status == 200, body
        assert "draft_n" not in body["timings"], body["timings"]
    finally:
        stop(proc)


def test_a_draft_that_is_neither_a_model_nor_a_file_stops_the_server_at_startup(tmp_path):
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    config = tmp_path / "c.toml"
    config.write_text(f'[[models]]\nname = "m"\npath = "{model}"\ndraft = "no-such-model"\n')
    run = subprocess.run([os.environ["VRAM_LLM_BIN"], "serve", "--config", str(config), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "draft `no-such-model`" in run.stderr and "models[0]" in run.stderr, run.stderr
