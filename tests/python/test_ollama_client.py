"""End-to-end: the official `ollama` Python client against vram-llm's
Ollama API (`/api/*`), on the real test model."""

import json
import ollama
import pytest
from conftest import API_KEY

OPTIONS = {"num_predict": 8, "temperature": 0}


@pytest.fixture()
def client(server):
    return ollama.Client(host=server, headers={"Authorization": f"Bearer {API_KEY}"})


def test_list_and_ps(client):
    names = [m.model for m in client.list().models]
    assert names == ["gemma"]
    client.generate(model="gemma")  # an empty prompt loads the model
    assert [m.model for m in client.ps().models] == ["gemma"]


def test_chat_and_streamed_chat_agree(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat(model="gemma:latest", messages=messages, options=OPTIONS)
    assert whole.done and whole.message.role == "assistant"
    assert whole.eval_count and whole.eval_count <= 8
    parts = list(client.chat(model="gemma", messages=messages, options=OPTIONS, stream=True))
    assert parts[-1].done and parts[-1].done_reason == whole.done_reason
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_raw_generate_counts_tokens(client):
    r = client.generate(model="gemma", prompt="The capital of France is", raw=True, options={"num_predict": 4, "temperature": 0})
    assert r.done and r.done_reason in ("stop", "length")
    assert r.prompt_eval_count and r.prompt_eval_count > 3
    assert isinstance(r.response, str)


def test_an_option_that_changes_the_output_is_refused(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="gemma", prompt="x", options={"penalize_newline": True})
    assert e.value.status_code == 400
    assert "options.penalize_newline" in e.value.error


def test_format_holds_the_answer_to_a_schema(client):
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
              "required": ["colour", "ok"], "additionalProperties": False}
    r = client.chat(model="gemma", messages=[{"role": "user", "content": "A colour:"}], format=schema,
                    options={"num_predict": 60, "temperature": 0, "mirostat": 2})
    answer = json.loads(r.message.content)
    assert answer["colour"] in ("red", "green") and isinstance(answer["ok"], bool)
