"""End-to-end: tool calls with the official `openai` SDK (and the `ollama`
client) on the test model. It is a base model with no tool format of its
own, so it gets the generic format: the tools in a system message and the
answer constrained to JSON. A forced call (`tool_choice` required or named)
must come back as a parseable call whose arguments validate against the
tool's schema, streamed or not."""

import json
import os
import urllib.request

import jsonschema
import ollama
import openai
import pytest
from conftest import API_KEY, launch, stop

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 12}}, "required": ["tz"], "additionalProperties": False},
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY)


def check_call(call):
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name in SCHEMAS
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_returns_a_valid_call(client, seed):
    r = client.chat.completions.create(model="gemma", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0.9, seed=seed, max_tokens=120)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    check_call(choice.message.tool_calls[0])


def test_a_named_function_is_the_one_called(client):
    r = client.chat.completions.create(model="gemma", messages=QUESTION, tools=TOOLS, max_tokens=120, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    check_call(calls[0])


def test_streamed_calls_arrive_whole_with_their_index(client):
    stream = client.chat.completions.create(model="gemma", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, temperature=0, max_tokens=120, stream=True)
    calls, finish, content = [], None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for c in delta.tool_calls or []:
            assert c.index == len(calls)
            calls.append(c)
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert content == ""
    assert len(calls) == 1
    check_call(calls[0])


def test_tool_results_go_back_through_the_template(client):
    history = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                               "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    r = client.chat.completions.create(model="gemma", messages=history, tools=TOOLS, max_tokens=60, temperature=0)
    message = r.choices[0].message
    # Auto: an answer or another call, either way well formed.
    assert message.content or message.tool_calls
    for call in message.tool_calls or []:
        assert call.function.name in SCHEMAS


def test_tool_errors_name_the_field(client):
    for kwargs, param in [
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name"),
        (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "response_format"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="gemma", messages=QUESTION, max_tokens=5, **kwargs)
        assert e.value.body["param"] == param, e.value.body


def test_ollama_chat_returns_tool_calls_with_object_arguments(server):
    c = ollama.Client(host=server, headers={"Authorization": f"Bearer {API_KEY}"})
    r = c.chat(model="gemma", messages=QUESTION, tools=TOOLS, options={"temperature": 0, "num_predict": 120})
    # Ollama has no tool_choice: the generic format's JSON answer is either
    # a call or a response; whichever it is must come back well formed.
    calls = r.message.tool_calls or []
    assert calls or r.message.content
    for call in calls:
        assert call.function.name in SCHEMAS
        assert isinstance(call.function.arguments, dict)


# The same model behind real templates: each format's grammar forces a call
# the format's parser reads back (the marks are plain text in Gemma's
# vocabulary, which is all the grammar and the parser need).
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "chat-templates")
FORMATS = {
    "hermes": "Qwen-Qwen2.5-7B-Instruct",
    "llama3": "meta-llama-Llama-3.1-8B-Instruct",
    "mistral": "Mistral-Small-3.2-24B-Instruct-2506",
    "deepseek-r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    "functionary-v3.1": "meetkai-functionary-medium-v3.1",
    "command-r7b": "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
}


@pytest.fixture(scope="module", params=sorted(FORMATS))
def templated(request):
    template = os.path.join(FIXTURES, FORMATS[request.param] + ".jinja")
    proc, base = launch(["--model", os.environ["VRAM_LLM_TEST_MODEL"], "--ctx-size", "2048", "--alias", "gemma",
                         "--api-key", API_KEY, "--chat-template-file", template])
    yield request.param, openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    stop(proc)


def test_each_format_forces_and_parses_a_call(templated):
    name, client = templated
    r = client.chat.completions.create(model="gemma", messages=QUESTION, tools=TOOLS, max_tokens=150, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", (name, choice.message)
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"], name
    check_call(choice.message.tool_calls[0])


@pytest.fixture(scope="module")
def thinking():
    """A template whose generation prompt opens a `<think>` block."""
    template = os.path.join(FIXTURES, FORMATS["deepseek-r1"] + ".jinja")
    proc, base = launch(["--model", os.environ["VRAM_LLM_TEST_MODEL"], "--ctx-size", "1024", "--alias", "gemma",
                         "--api-key", API_KEY, "--chat-template-file", template])
    yield openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    stop(proc)


def test_thinking_goes_to_reasoning_content(thinking):
    # With enable_thinking the generation prompt ends with `<think>\n`; the
    # base model never writes `</think>`, so all it writes is reasoning.
    ask = dict(model="gemma", messages=QUESTION, max_tokens=12, temperature=0,
               extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    r = thinking.chat.completions.create(**ask)
    message = r.choices[0].message
    assert message.reasoning_content and message.content == "", message
    stream = thinking.chat.completions.create(**ask, stream=True)
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in stream if c.choices)
    assert streamed == message.reasoning_content
    # `reasoning_format: "none"` leaves it in the content.
    r = thinking.chat.completions.create(**{**ask, "extra_body": {**ask["extra_body"], "reasoning_format": "none"}})
    assert r.choices[0].message.content.strip() == message.reasoning_content
    assert getattr(r.choices[0].message, "reasoning_content", None) is None


def test_the_servers_reasoning_switches_are_the_requests_defaults():
    # `--reasoning on`: the template is told `enable_thinking` without the
    # request saying so; `--reasoning-format none`: the block stays content.
    template = os.path.join(FIXTURES, FORMATS["deepseek-r1"] + ".jinja")
    proc, base = launch(["--model", os.environ["VRAM_LLM_TEST_MODEL"], "--ctx-size", "1024", "--alias", "gemma",
                         "--api-key", API_KEY, "--chat-template-file", template,
                         "--reasoning", "on", "--reasoning-format", "none"])
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY)
        req = urllib.request.Request(f"{base}/apply-template", data=json.dumps({"messages": QUESTION}).encode(),
                                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.load(r)["prompt"].endswith("<think>\n")
        ask = dict(model="gemma", messages=QUESTION, max_tokens=12, temperature=0)
        r = client.chat.completions.create(**ask)
        assert r.choices[0].message.content and getattr(r.choices[0].message, "reasoning_content", None) is None
        # The request's own `reasoning_format` wins.
        r = client.chat.completions.create(**ask, extra_body={"reasoning_format": "deepseek"})
        assert r.choices[0].message.reasoning_content and r.choices[0].message.content == ""
    finally:
        stop(proc)


def test_output_held_to_a_grammar_is_content_not_reasoning(thinking):
    # The block is open, but a schema holds the answer from its first token
    # (a forced tool call takes the same path: any grammar turns the split off).
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"], "additionalProperties": False}
    r = thinking.chat.completions.create(model="gemma", messages=QUESTION, max_tokens=40, temperature=0,
                                         response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
                                         extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
