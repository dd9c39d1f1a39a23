"""End-to-end: the Messages API (`/v1/messages`, `/v1/messages/count_tokens`)
with the official `anthropic` SDK, as Claude Code and Anthropic-SDK agents
call it: streamed and not, stop sequences, forced tool use and a tool round
trip, token counting, and errors in Anthropic's envelope. The answer is the
one the OpenAI route gives for the same conversation (one internal path)."""

import json
import urllib.error
import urllib.request

import anthropic
import jsonschema
import openai
import pytest
import os

from conftest import API_KEY, launch, stop

# Sampling fields are no longer in the SDK's signature (Anthropic's newest
# models fix them); the Messages API still takes them, and Claude Code may send them.
GREEDY = {"temperature": 0}
QUESTION = [{"role": "user", "content": "Count from one to ten: one, two, three,"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture()
def client(server):
    return anthropic.Anthropic(base_url=server, api_key=API_KEY, max_retries=0)


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def test_create_answers_as_the_openai_route_does(client, server):
    m = client.messages.create(model="gemma", max_tokens=24, messages=QUESTION, extra_body=GREEDY,
                               system="You are a careful counter.")
    assert m.type == "message" and m.role == "assistant" and m.model == "gemma"
    assert m.id.startswith("msg_")
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 0 and 0 < m.usage.output_tokens <= 24
    o = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY).chat.completions.create(
        model="gemma", max_tokens=24, temperature=0,
        messages=[{"role": "system", "content": "You are a careful counter."}, *QUESTION])
    assert text_of(m) == o.choices[0].message.content


def test_a_stream_adds_up_to_the_whole_message(client):
    whole = client.messages.create(model="gemma", max_tokens=24, messages=QUESTION, extra_body=GREEDY)
    with client.messages.stream(model="gemma", max_tokens=24, messages=QUESTION, extra_body=GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, pieces
    assert "".join(pieces) == text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_a_stop_sequence_is_named_in_the_answer(client):
    free = text_of(client.messages.create(model="gemma", max_tokens=24, messages=QUESTION, extra_body=GREEDY))
    assert len(free) >= 6, free
    stop = free[3:5]
    m = client.messages.create(model="gemma", max_tokens=24, messages=QUESTION, extra_body=GREEDY, stop_sequences=["@@never@@", stop])
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop)
    assert text_of(m) == free[: free.index(stop)]


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_tool_comes_back_as_tool_use(client, stream):
    args = dict(model="gemma", max_tokens=60, extra_body=GREEDY,
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    if stream:
        with client.messages.stream(**args) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(**args)
    calls = [b for b in m.content if b.type == "tool_use"]
    assert len(calls) == 1, m.content
    assert calls[0].name == "get_weather" and calls[0].id.startswith("toolu_")
    jsonschema.validate(calls[0].input, WEATHER["input_schema"])
    assert m.stop_reason == "tool_use"


def test_a_tool_round_trip_is_accepted(client):
    m = client.messages.create(model="gemma", max_tokens=8, extra_body=GREEDY, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C and sunny"}]},
    ])
    assert m.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_a_tool_result_beside_text_is_accepted(client):
    # One user message, text and a tool result: two turns in a row for the
    # template (the test model's built-in one lets roles repeat).
    m = client.messages.create(model="gemma", max_tokens=8, extra_body=GREEDY, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Here are the results:"},
                                     {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C and sunny"}]},
    ])
    assert m.type == "message" and m.content


def test_count_tokens_counts_the_prompt_the_answer_used(client):
    counted = client.messages.count_tokens(model="gemma", messages=QUESTION, system="Be brief.")
    m = client.messages.create(model="gemma", max_tokens=4, messages=QUESTION, system="Be brief.", extra_body=GREEDY)
    assert counted.input_tokens == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 0


def test_errors_come_in_anthropics_envelope(client, server):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="gemma", max_tokens=8, messages=[{"role": "user", "content": [image]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in e.value.body["error"]["message"]
    # One model answers any name (as llama-server); with --strict-model-names
    # an unknown one is a 404 in Anthropic's envelope.
    assert client.messages.create(model="claude-sonnet-4-5", max_tokens=2, messages=QUESTION).model == "gemma"
    proc, strict = launch(["--model", os.environ["VRAM_LLM_TEST_MODEL"], "--ctx-size", "256", "--alias", "gemma",
                           "--api-key", API_KEY, "--strict-model-names"])
    try:
        with pytest.raises(anthropic.NotFoundError) as e:
            anthropic.Anthropic(base_url=strict, api_key=API_KEY, max_retries=0).messages.create(model="no-such-model", max_tokens=8, messages=QUESTION)
        assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error", e.value.body
    finally:
        stop(proc)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0).messages.create(model="gemma", max_tokens=8, messages=QUESTION)
    # Without max_tokens (the SDK always sends it): a 400 naming the field.
    req = urllib.request.Request(f"{server}/v1/messages", data=json.dumps({"model": "gemma", "messages": QUESTION}).encode(),
                                 headers={"Content-Type": "application/json", "x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(req, timeout=30)
    assert raw.value.code == 400
    body = json.load(raw.value)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_the_stream_starts_with_the_prompts_size(client):
    # Last, on its own prompt: the tests above compare greedy answers of
    # QUESTION, whose top tokens are near ties, and a prefix read from the
    # cache rounds differently (other batch shapes).
    chat = [{"role": "user", "content": "Name three rivers."}]
    counted = client.messages.count_tokens(model="gemma", messages=chat).input_tokens
    with client.messages.stream(model="gemma", max_tokens=4, messages=chat, extra_body=GREEDY) as stream:
        start = next(e for e in stream if e.type == "message_start")
    assert start.message.usage.input_tokens == counted > 0
