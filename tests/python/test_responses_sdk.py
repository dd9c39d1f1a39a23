"""End-to-end: the Responses API (`/v1/responses`) with the official `openai`
SDK, as Codex CLI and the Agents SDK call it: created and streamed, the same
text the chat route gives, function tools and their outputs, JSON-schema
output, and the stateless refusals."""

import json

import jsonschema
import openai
import pytest
from conftest import API_KEY

INPUT = "Count from one to ten: one, two, three,"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


def test_create_answers_as_the_chat_route_does(client):
    r = client.responses.create(model="gemma", input=INPUT, instructions="You are a careful counter.", max_output_tokens=24, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "gemma"
    assert r.status in ("completed", "incomplete")
    assert r.output[0].type == "message" and r.output_text
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 24
    assert r.instructions == "You are a careful counter." and r.max_output_tokens == 24
    chat = client.chat.completions.create(model="gemma", max_tokens=24, temperature=0, messages=[
        {"role": "system", "content": "You are a careful counter."}, {"role": "user", "content": INPUT}])
    assert r.output_text == chat.choices[0].message.content


def test_a_stream_adds_up_to_the_final_response(client):
    whole = client.responses.create(model="gemma", input=INPUT, max_output_tokens=24, temperature=0)
    deltas, kinds = [], []
    with client.responses.stream(model="gemma", input=INPUT, max_output_tokens=24, temperature=0) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type in ("response.completed", "response.incomplete"):
                # At max_output_tokens the stream ends `incomplete`, as OpenAI's
                # does (the SDK's get_final_response wants `completed` only).
                final = event.response
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert final.status == whole.status
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_function_comes_back_as_a_function_call(client, stream):
    args = dict(model="gemma", input="What is the weather in Paris?", tools=[WEATHER],
                tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=200, temperature=0)
    if stream:
        with client.responses.stream(**args) as s:
            r = s.get_final_response()
    else:
        r = client.responses.create(**args)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1, r.output
    assert calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])


def test_a_function_output_round_trip_is_accepted(client):
    r = client.responses.create(model="gemma", tools=[WEATHER], max_output_tokens=8, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C and sunny"},
    ])
    assert r.status in ("completed", "incomplete")


def test_a_json_schema_format_is_enforced(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    r = client.responses.create(model="gemma", input="Give a number as JSON.", max_output_tokens=40, temperature=0,
                                text={"format": {"type": "json_schema", "name": "number", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(r.output_text), schema)


def test_stateless_refusals_name_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gemma", input=INPUT, previous_response_id="resp_123")
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gemma", input=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}])
    assert e.value.body["param"] == "input[0].content[0]"
    # `store` is accepted; nothing is kept, and the answer says so.
    assert client.responses.create(model="gemma", input=INPUT, max_output_tokens=4, store=True).store is False


def test_input_tokens_counts_the_prompt_as_a_response_reads_it(client):
    counted = client.responses.input_tokens.count(model="gemma", input=INPUT, instructions="You are a careful counter.")
    assert counted.object == "response.input_tokens"
    r = client.responses.create(model="gemma", input=INPUT, instructions="You are a careful counter.", max_output_tokens=1, temperature=0)
    assert counted.input_tokens == r.usage.input_tokens
