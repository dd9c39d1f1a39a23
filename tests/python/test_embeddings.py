"""End-to-end: embeddings of the test model (Gemma 3 270M, a decoder whose
GGUF names no pooling, so mean pooling) with the official `openai` SDK,
and llama-server's and Ollama's embedding endpoints over plain HTTP."""

import base64
import json

import numpy as np
import openai
import pytest
from conftest import API_KEY, post_json

CAT = "The cat sat on the mat."
CAT_TOO = "A cat was sitting on the mat."
TAX = "Quarterly tax filings are due in April."


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY)


def vectors(response):
    return [np.array(item.embedding, dtype=np.float64) for item in response.data]


def post(server, path, body):
    return post_json(server, path, body, {"Authorization": f"Bearer {API_KEY}"})


def test_similar_sentences_are_closer_than_unrelated_ones(client):
    cat, cat_too, tax = vectors(client.embeddings.create(model="gemma", input=[CAT, CAT_TOO, TAX], encoding_format="float"))
    similar, unrelated = cat @ cat_too, cat @ tax
    assert similar > unrelated + 0.1, (similar, unrelated)


def test_vectors_have_unit_norm_and_the_models_width(client):
    response = client.embeddings.create(model="gemma", input=[CAT, TAX], encoding_format="float")
    assert response.model == "gemma"
    assert response.usage.prompt_tokens == response.usage.total_tokens > 0
    for v in vectors(response):
        assert v.shape == (640,)
        assert abs(np.linalg.norm(v) - 1.0) < 1e-4


def test_a_batch_gives_the_vectors_of_single_requests(client):
    texts = [CAT, CAT_TOO, TAX]
    batch = vectors(client.embeddings.create(model="gemma", input=texts, encoding_format="float"))
    singles = [vectors(client.embeddings.create(model="gemma", input=t, encoding_format="float"))[0] for t in texts]
    for b, s in zip(batch, singles):
        # Not bit-identical: llama.cpp's CPU kernels group a batch's rows
        # differently from a single input's (measured: up to 1.7e-3 on one
        # component, cosine 0.99997).
        assert float(b @ s) > 0.9999, float(b @ s)
        assert np.abs(b - s).max() < 5e-3


def test_base64_decodes_to_the_same_floats(client):
    floats = vectors(client.embeddings.create(model="gemma", input=CAT, encoding_format="float"))[0]
    # The SDK asks for base64 by default and decodes it itself.
    decoded = vectors(client.embeddings.create(model="gemma", input=CAT))[0]
    assert np.abs(decoded - floats).max() < 1e-6
    raw = client.embeddings.with_raw_response.create(model="gemma", input=CAT, encoding_format="base64")
    text = json.loads(raw.text)["data"][0]["embedding"]
    assert np.abs(np.frombuffer(base64.b64decode(text), dtype="<f4") - floats).max() < 1e-6


def test_token_ids_embed_like_their_text(client, server):
    status, tokens = post(server, "/tokenize", {"model": "gemma", "content": CAT, "add_special": True})
    assert status == 200, tokens
    by_text = vectors(client.embeddings.create(model="gemma", input=CAT, encoding_format="float"))[0]
    by_ids = vectors(client.embeddings.create(model="gemma", input=tokens["tokens"], encoding_format="float"))[0]
    assert np.abs(by_text - by_ids).max() < 1e-6


def test_errors_name_the_field(client):
    for kwargs, param in [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": CAT, "dimensions": 64}, "dimensions"),
        ({"input": "word " * 600}, "input"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model="gemma", **kwargs)
        assert e.value.body["param"] == param, e.value.body


def test_llama_server_and_ollama_endpoints_agree(client, server):
    want = vectors(client.embeddings.create(model="gemma", input=CAT, encoding_format="float"))[0]
    status, native = post(server, "/embedding", {"content": [CAT]})
    assert status == 200, native
    assert native[0]["index"] == 0
    assert np.abs(np.array(native[0]["embedding"][0]) - want).max() < 1e-6
    status, ollama = post(server, "/api/embed", {"model": "gemma", "input": [CAT]})
    assert status == 200, ollama
    assert ollama["model"] == "gemma" and ollama["prompt_eval_count"] > 0
    assert np.abs(np.array(ollama["embeddings"][0]) - want).max() < 1e-6


def test_pooling_none_gives_a_vector_per_token_on_embeddings_only():
    # llama-server's --pooling none: /embeddings answers each token's vector
    # (unnormalized); the endpoints that promise one vector per input refuse.
    import os

    from conftest import launch, stop

    proc, base = launch(["--model", os.environ["VRAM_LLM_TEST_MODEL"], "--ctx-size", "512", "--alias", "gemma", "--pooling", "none", "--api-key", API_KEY])
    try:
        status, tokens = post(base, "/tokenize", {"content": "hello hello hello", "add_special": True})
        assert status == 200, tokens
        status, body = post(base, "/embeddings", {"input": "hello hello hello"})
        assert status == 200, body
        rows = np.array(body[0]["embedding"], dtype=np.float64)
        assert rows.shape[0] == len(tokens["tokens"]) and rows.shape[1] > 1
        assert all(abs(np.linalg.norm(r) - 1) > 1e-3 for r in rows)
        # The same token at different places has different vectors (context).
        assert np.abs(rows[1] - rows[2]).max() > 1e-4
        for path, body in [("/v1/embeddings", {"input": "hi"}), ("/api/embed", {"model": "gemma", "input": "hi"})]:
            status, err = post(base, path, body)
            assert status == 400, (path, err)
            assert "pooling `none`" in json.dumps(err), err
    finally:
        stop(proc)
