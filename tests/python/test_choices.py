"""End-to-end: several choices per request with the official `openai` SDK
on the test model (`n`, a list of prompts), and `suffix`."""

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
