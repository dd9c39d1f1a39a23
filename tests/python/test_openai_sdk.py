"""End-to-end: the official `openai` Python SDK against a running vram-llm.

Started by `scripts/dev test`, which sets VRAM_LLM_BIN and VRAM_LLM_TEST_MODEL.
"""

import json
import math
import urllib.request

import openai
import pytest
from conftest import API_KEY

NO_EOG = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY)


def test_models_list(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["gemma"]


def test_models_retrieve(client):
    assert client.models.retrieve("gemma").id == "gemma"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/no-such-model:q4")


def test_chat_completion(client):
    r = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=8,
        temperature=0,
        logit_bias=NO_EOG,
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=10,
        temperature=0,
        logit_bias=NO_EOG,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage.completion_tokens == 10


def test_completion_and_stream_agree(client):
    args = dict(model="gemma", prompt="The sky is", max_tokens=10, temperature=0, logit_bias=NO_EOG)
    full = client.completions.create(**args)
    assert full.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices)
    assert streamed == full.choices[0].text


def test_token_id_prompts_and_echo(client, server):
    args = dict(model="gemma", max_tokens=6, temperature=0, logit_bias=NO_EOG)
    text = client.completions.create(prompt="The sky is", **args).choices[0].text
    req = urllib.request.Request(f"{server}/tokenize", data=b'{"content": "The sky is", "add_special": true}',
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req) as r:
        ids = json.load(r)["tokens"]
    # The same tokens given as ids continue the same way; echo puts the prompt first.
    assert client.completions.create(prompt=ids, **args).choices[0].text == text
    echoed = client.completions.create(prompt="The sky is", echo=True, **args).choices[0].text
    assert echoed == "The sky is" + text
    streamed = "".join(c.choices[0].text for c in client.completions.create(prompt=[ids], echo=True, stream=True, **args) if c.choices)
    assert streamed.endswith(text) and "The sky is" in streamed


def test_logprobs_agree_with_greedy_choices(client):
    r = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8,
                                       temperature=0, logprobs=True, top_logprobs=5)
    content = r.choices[0].logprobs.content
    # (No logit_bias here: log-probabilities are the model's own, before any sampler.)
    assert len(content) == r.usage.completion_tokens >= 1
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        # Greedy: the chosen token is the most likely one, and its log-probability is the top one's.
        assert len(t.top_logprobs) == 5 and t.top_logprobs[0].token == t.token
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 and t.logprob <= 0
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-4
    streamed = [t for c in client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Name a colour."}],
                max_tokens=8, temperature=0, logprobs=True, stream=True) if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    text = client.completions.create(model="gemma", prompt="The sky is", max_tokens=5, temperature=0, logprobs=2, echo=True)
    lp = text.choices[0].logprobs
    assert "".join(lp.tokens) == text.choices[0].text[len("The sky is"):]
    assert lp.text_offset[0] == len("The sky is") and all(len(top) == 2 for top in lp.top_logprobs)


def test_llama_server_n_probs_on_its_completion_endpoint(server):
    # llama-server's `/completion` with `n_probs`: `completion_probabilities`
    # in its shape, one entry per generated token, the greedy pick first.
    body = {"prompt": "The sky is", "n_predict": 6, "temperature": 0, "n_probs": 3}
    req = urllib.request.Request(f"{server}/completion", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.load(r)
    probs = out["completion_probabilities"]
    assert len(probs) == out["tokens_predicted"] > 0
    assert "".join(p["token"] for p in probs) == out["content"]
    for p in probs:
        assert len(p["top_logprobs"]) == 3 and p["top_logprobs"][0]["id"] == p["id"]
        assert bytes(p["bytes"]).decode("utf-8", "replace") == p["token"] and p["logprob"] <= 0


def test_post_sampling_probs_come_from_the_distribution_the_pick_was_drawn_from(server):
    # llama-server's `post_sampling_probs`: `prob` / `top_probs` after the
    # samplers. top_k 4 leaves four candidates, so their probabilities sum
    # to 1 and the picked token is one of them.
    body = {"prompt": "Today was the day. Today I would finally become a", "n_predict": 5, "n_probs": 10,
            "temperature": 1.0, "top_k": 4, "seed": 7, "post_sampling_probs": True}
    req = urllib.request.Request(f"{server}/completion", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.load(r)
    probs = out["completion_probabilities"]
    assert len(probs) == 5
    for p in probs:
        top = p["top_probs"]
        assert 1 <= len(top) <= 4 and "logprob" not in p and "top_logprobs" not in p
        assert all(0.0 < t["prob"] <= 1.0 for t in top) and abs(sum(t["prob"] for t in top) - 1.0) < 1e-3
        assert p["id"] in [t["id"] for t in top] and 0.0 < p["prob"] <= 1.0


def _sse_events(server, path, body):
    req = urllib.request.Request(f"{server}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        lines = r.read().decode().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_return_progress_and_timings_per_token_stream_llama_servers_fields(server):
    # `return_progress`: prompt_progress events before any text, the first
    # when the request has its slot (nothing read yet), `processed` growing
    # to `total`, timings never going backwards; `timings_per_token`: every
    # text chunk carries the timings so far.
    body = {"prompt": "the quick brown fox jumps over the lazy dog " * 8, "n_predict": 4, "stream": True,
            "return_progress": True, "timings_per_token": True, "cache_prompt": False}
    events = _sse_events(server, "/completion", body)
    progress = [e for e in events if "prompt_progress" in e]
    assert len(progress) >= 2, events[:3]
    first = progress[0]
    assert first["prompt_progress"]["processed"] == first["prompt_progress"]["cache"]
    assert first["timings"]["prompt_n"] == 0 and first["timings"]["prompt_ms"] == 0.0 and first["timings"]["predicted_n"] == 0
    last = progress[-1]["prompt_progress"]
    assert last["processed"] == last["total"] > 0
    ms = [e["timings"]["prompt_ms"] for e in progress]
    assert ms == sorted(ms) and ms[-1] > 0
    assert all(v is not None and v >= 0 for e in progress for v in e["timings"].values())
    first_text = next(i for i, e in enumerate(events) if e.get("content"))
    assert first_text > events.index(progress[-1]), "progress comes before the text"
    texts = [e for e in events if e.get("content")]
    assert texts and all("predicted_per_second" in e["timings"] for e in texts)
    # Chat: a chunk without choices carries the progress.
    chat = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True,
            "return_progress": True}
    chunks = _sse_events(server, "/v1/chat/completions", chat)
    with_progress = [c for c in chunks if "prompt_progress" in c]
    assert with_progress and all(c["choices"] == [] for c in with_progress)
    # Without the fields, nothing of it.
    plain = _sse_events(server, "/completion", {"prompt": "Hi", "n_predict": 2, "stream": True})
    assert not any("prompt_progress" in e or ("timings" in e and not e.get("stop")) for e in plain)


def test_errors_are_raised_as_sdk_exceptions(client):
    # A server of one model answers any name, as llama-server (the answer
    # says which model it is); --strict-model-names makes it a 404.
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert r.model == "gemma"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "x"}], temperature=-1)
    assert e.value.body["param"] == "temperature"


def test_wrong_key_is_rejected(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_metrics_parse_with_the_prometheus_parser(server, client):
    from prometheus_client.parser import text_string_to_metric_families

    client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    req = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)

    def value(name, **labels):
        found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, f"{name} {labels} not in /metrics"
        return found[0]

    assert value("vram_llm_requests_total", model="gemma", path="/v1/chat/completions", status="200") >= 1
    assert value("vram_llm_prompt_tokens_total", model="gemma") > 0
    assert value("vram_llm_tokens_predicted_total", model="gemma") >= 2
    assert value("llamacpp:tokens_predicted_total") >= 2
    assert value("llamacpp:n_decode_total") >= 1
    assert value("vram_llm_time_to_first_token_seconds_count", model="gemma") >= 1
    assert value("vram_llm_model_loaded", model="gemma") == 1
    assert value("vram_llm_slots_total", model="gemma") == 4
    assert value("vram_llm:num_requests_waiting") == 0
    info = samples["vram_llm:lora_requests_info"][0].labels
    assert info["running_lora_adapters"] == "gemma" and info["waiting_lora_adapters"] == "", info
