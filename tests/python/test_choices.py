"""End-to-end: several choices per request with the official `openai` SDK
on the test model (`n`, a list of prompts), and `suffix`."""

import json
import time
import urllib.request
import uuid

import openai
import pytest
from conftest import API_KEY


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY)


def test_chat_n_returns_n_choices(client):
    r = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Name a fruit."}],
                                       n=3, seed=7, temperature=1.0, max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert r.usage.completion_tokens <= 24


def _get(server, path):
    req = urllib.request.Request(f"{server}{path}", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def _cache_hits(server):
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(_get(server, "/metrics"))
               for s in family.samples if s.name == "vram_llm_prompt_cache_hit_tokens_total")


def test_n_choices_read_their_prompt_once(server, client):
    # The choices are queued together: one slot reads the prompt, the
    # others copy its KV and count the whole prompt as cached. The prompt
    # starts with a fresh id, so no slot holds any of it beforehand.
    deadline = time.monotonic() + 60
    while any(s["is_processing"] for s in json.loads(_get(server, "/slots"))):
        assert time.monotonic() < deadline, "slots stayed busy"
        time.sleep(0.05)
    prompt = f"Note {uuid.uuid4()}. " + "The river runs past the old mill and under the stone bridge. " * 20
    before = _cache_hits(server)
    r = client.completions.create(model="gemma", prompt=prompt, n=4, max_tokens=4, temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage.prompt_tokens > 200
    assert _cache_hits(server) - before >= 3 * r.usage.prompt_tokens


def test_completion_prompt_list_answers_each_prompt(client):
    prompts = ["The capital of France is", "One, two, three,"]
    r = client.completions.create(model="gemma", prompt=prompts, max_tokens=6, temperature=0, echo=True)
    assert [c.index for c in r.choices] == [0, 1]
    # (Not compared with single requests: batch composition may shift the
    # CPU kernels' rounding enough to flip a greedy tie.)
    for prompt, choice in zip(prompts, r.choices):
        assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)


def test_suffix_needs_fill_in_the_middle_tokens(client):
    # Gemma 3 has none: the field is refused, naming it, rather than ignored.
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="gemma", prompt="def f(", suffix="):\n    pass", max_tokens=4)
    assert e.value.body["param"] == "suffix"
    assert "fill-in-the-middle" in e.value.body["message"]
