"""End-to-end: constrained output with the official `openai` SDK on the test
model (a 270M base model, which left alone would not write JSON at all).
Every answer must validate against its schema (`jsonschema`), and every
field that would change the output is honoured or refused, never dropped."""

import json
from typing import Literal

import jsonschema
import openai
import pydantic
import pytest
from conftest import API_KEY

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "enum_and_bool": {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
        "required": ["colour", "bright"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "location": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                "required": ["lat", "lon"],
                "additionalProperties": False,
            },
        },
        "required": ["city", "location"],
        "additionalProperties": False,
    },
    "array_of_objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
    "array_of_enums": {"type": "array", "items": {"enum": ["yes", "no", "maybe"]}, "minItems": 2, "maxItems": 4},
}


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY)


def chat(client, content, **kwargs):
    return client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": content}], max_tokens=200, **kwargs)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_output_validates(client, name, seed):
    schema = SCHEMAS[name]
    r = chat(client, f"Give me a {name} example as JSON.", temperature=0.9, seed=seed,
             response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def completes_to_json(prefix):
    """Whether `prefix` is the start of a JSON document: some ending makes it
    parse (finish the last token, then close the open brackets)."""
    stack, in_string, escaped = [], False, False
    for ch in prefix:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return False
    closers = "".join(reversed(stack))
    if in_string:
        tails = ['"', '":null', '\\""', '\\"":null', 'u0000"']
    else:
        tails = ["", "null", ":null", '"x":null', "0", "e", "ue", "rue", "lse", "alse", "ll", "ull", "l"]
    for tail in tails:
        try:
            json.loads(prefix + tail + closers)
            return True
        except ValueError:
            pass
    return False


def test_json_object_is_a_json_object(client):
    # A 270M base model never closes an open object by itself, so it runs to
    # max_tokens: what it wrote must still be the start of a JSON object.
    r = chat(client, "Describe a cat as JSON.", temperature=0, response_format={"type": "json_object"})
    text = r.choices[0].message.content
    assert text.startswith("{") and completes_to_json(text), text
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    assert not completes_to_json('{"a": 1}}') and not completes_to_json("[1, 2}")


def test_sdk_parse_gets_a_typed_object(client):
    class Pet(pydantic.BaseModel):
        kind: Literal["cat", "dog", "fish"]
        legs: int

    r = client.chat.completions.parse(model="gemma", messages=[{"role": "user", "content": "A pet:"}],
                                      max_tokens=120, temperature=0, response_format=Pet)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and isinstance(pet.legs, int)


def test_llama_server_fields_constrain_completions(client):
    r = client.completions.create(model="gemma", prompt="Is the sky blue? Answer:", max_tokens=8, temperature=0.7, seed=3,
                                  extra_body={"grammar": 'root ::= " yes" | " no"'})
    assert r.choices[0].text in (" yes", " no")
    schema = SCHEMAS["enum_and_bool"]
    r = client.completions.create(model="gemma", prompt="JSON:", max_tokens=60, temperature=0, extra_body={"json_schema": schema})
    jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_streamed_constrained_output_validates(client):
    schema = SCHEMAS["nested"]
    stream = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "A city:"}], max_tokens=200,
                                            temperature=0, stream=True, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"grammar": "root ::= nope"}, "grammar"),
    ({"grammar": "root ::= \"a\"", "json_schema": {"type": "object"}}, "json_schema"),
    ({"max_token": 5}, "max_token"),
    ({"n": 17}, "n"),
    ({"logprobs": True, "top_logprobs": 30}, "top_logprobs"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"mirostat": 3}, "mirostat"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(client, body, param):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "Hi", extra_body=body)
    assert e.value.body["param"] == param, e.value.body


def test_sampler_knobs_and_developer_role_are_taken(client):
    r = client.chat.completions.create(model="gemma", max_tokens=6, seed=5,
                                       messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                       extra_body={"mirostat": 2, "mirostat_tau": 4.0, "dry_multiplier": 0.8, "typical_p": 0.9,
                                                   "xtc_probability": 0.5, "min_keep": 2, "user": "u", "store": False})
    assert r.choices[0].message.content is not None
    r = client.completions.create(model="gemma", prompt="Once", max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 12
