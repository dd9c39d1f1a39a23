"""llama-server's `--models-preset FILE` (an INI, one `[name]` section per
model) and `GET /models?reload=1`, which reads it again."""

import json
import os
import urllib.error
import urllib.request

from conftest import launch, stop


def ids(base, query=""):
    with urllib.request.urlopen(f"{base}/models{query}", timeout=120) as r:
        return sorted(m["id"] for m in json.loads(r.read())["data"])


def test_a_preset_names_the_models_and_a_reload_reads_it_again(tmp_path):
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    preset = tmp_path / "models.ini"
    preset.write_text(f"; two names of the test model\n[a]\nmodel = {model}\nctx-size = 512\n\n[b]\nm = {model}\nalias = bee\n")
    proc, base = launch(["--models-preset", str(preset)])
    try:
        assert ids(base) == ["a", "b"]
        preset.write_text(f"[b]\nm = {model}\nalias = bee\n\n[c]\nmodel = {model}\n")
        assert ids(base, "?reload=1") == ["b", "c"]
        preset.write_text("[d]\nspec-draft-hf = org/draft\n")
        req = urllib.request.Request(f"{base}/models?reload=1")
        try:
            urllib.request.urlopen(req, timeout=60)
            raise AssertionError("a key vram-llm does not take was accepted")
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
            assert e.code == 400 and "spec-draft-hf" in body["error"]["message"], body
        assert ids(base) == ["b", "c"], "a refused reload changes nothing"
    finally:
        stop(proc)
