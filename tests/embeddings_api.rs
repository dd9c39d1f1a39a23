//! Embeddings over HTTP against the fake engine (whose vectors are a
//! function of the tokens, see `common::fake_embedding`): the OpenAI,
//! llama-server and Ollama shapes, base64, and the 400s naming fields. The
//! real model is covered by tests/python/test_embeddings.py.

mod common;

use std::sync::Arc;

use common::{fake_embedding, fake_server, fake_spec, fake_state, roomy_limits, serve, FakeFactory, FAKE_N_EMBD};
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).body(body.to_string()).send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The fake tokenizer: one token per character.
fn tokens(text: &str) -> Vec<u32> {
    text.chars().map(|c| c as u32).collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().expect("a list").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

fn param(body: &Value) -> &Value {
    &body["error"]["param"]
}

#[tokio::test]
async fn openai_embeddings_have_the_openai_shape() {
    let base = fake_server("unused", None, None).await;
    let (status, body) = post(&base, "/v1/embeddings", json!({"model": "fake", "input": ["cat", "a dog"], "user": "u1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "fake");
    assert_eq!(body["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, (item, text)) in data.iter().zip(["cat", "a dog"]).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_close(&floats(&item["embedding"]), &fake_embedding(&tokens(text)));
    }
}

#[tokio::test]
async fn token_id_inputs_give_the_same_vectors_as_text() {
    let base = fake_server("unused", None, None).await;
    let (_, by_text) = post(&base, "/v1/embeddings", json!({"input": "hello"})).await;
    let (_, by_ids) = post(&base, "/v1/embeddings", json!({"input": tokens("hello")})).await;
    let (_, by_lists) = post(&base, "/v1/embeddings", json!({"input": [tokens("hello"), tokens("hi")]})).await;
    assert_eq!(by_text["data"][0]["embedding"], by_ids["data"][0]["embedding"]);
    assert_eq!(by_text["data"][0]["embedding"], by_lists["data"][0]["embedding"]);
    assert_eq!(by_lists["data"].as_array().unwrap().len(), 2);
    assert_eq!(by_lists["usage"]["prompt_tokens"], 7);
}

#[tokio::test]
async fn base64_is_the_little_endian_floats() {
    let base = fake_server("unused", None, None).await;
    let (status, body) = post(&base, "/v1/embeddings", json!({"input": "hello", "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{body}");
    let text = body["data"][0]["embedding"].as_str().expect("a base64 string");
    let want: Vec<u8> = fake_embedding(&tokens("hello")).iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(text, base64(&want));
}

/// A reference encoder written the other way round from the server's.
fn base64(bytes: &[u8]) -> String {
    let alphabet: Vec<char> = ('A'..='Z').chain('a'..='z').chain('0'..='9').chain(['+', '/']).collect();
    let bits: String = bytes.iter().map(|b| format!("{b:08b}")).collect();
    let mut out: String = bits
        .as_bytes()
        .chunks(6)
        .map(|c| {
            let s = format!("{:0<6}", std::str::from_utf8(c).unwrap());
            alphabet[usize::from_str_radix(&s, 2).unwrap()]
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[tokio::test]
async fn bad_requests_are_400s_naming_the_field() {
    let base = fake_server("unused", None, None).await;
    let long = "x".repeat(40); // the fake's embedding input holds 64 / 2 = 32 tokens
    let cases = [
        (json!({"input": ""}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": ["a", ""]}), "input"),
        (json!({"input": [[]]}), "input"),
        (json!({"input": 5}), "input"),
        (json!({"input": long}), "input"),
        (json!({"model": "fake"}), "input"),
        (json!({"input": "a", "encoding_format": "hex"}), "encoding_format"),
        (json!({"input": "a", "dimensions": 3}), "dimensions"),
        (json!({"input": "a", "dimensions": -1}), "dimensions"),
        (json!({"input": "a", "inptu": "b"}), "inptu"),
        (json!({"input": [1, -2]}), "input[1]"),
    ];
    for (request, field) in cases {
        let (status, body) = post(&base, "/v1/embeddings", request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(param(&body), field, "{request}: {body}");
        let too_long = request["input"] == json!(long);
        assert_eq!(body["error"]["type"], if too_long { "exceed_context_size_error" } else { "invalid_request_error" }, "{body}");
    }
    let (_, body) = post(&base, "/v1/embeddings", json!({"input": "x".repeat(40)})).await;
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "exceed_context_size_error", "llama-server's type: {body}");
    let (_, body) = post(&base, "/v1/embeddings", json!({"input": "a", "dimensions": 3})).await;
    assert!(body["error"]["message"].as_str().unwrap().contains(&FAKE_N_EMBD.to_string()), "{body}");
    let (status, body) = post(&base, "/v1/embeddings", json!({"input": "a", "dimensions": FAKE_N_EMBD})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&base, "/v1/embeddings", json!({"model": "nope", "input": "a"})).await;
    assert_eq!((status, param(&body).clone()), (404, json!("model")), "{body}");
}

#[tokio::test]
async fn llama_server_embedding_nests_each_vector() {
    let base = fake_server("unused", None, None).await;
    for path in ["/embedding", "/embeddings"] {
        let (status, body) = post(&base, path, json!({"content": ["cat", "dog"]})).await;
        assert_eq!(status, 200, "{body}");
        let items = body.as_array().expect("a list");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["index"], 1);
        assert_eq!(items[1]["embedding"].as_array().unwrap().len(), 1, "one pooled vector inside the list");
        assert_close(&floats(&items[1]["embedding"][0]), &fake_embedding(&tokens("dog")));
    }
    let (status, body) = post(&base, "/embedding", json!({"input": "cat", "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&body[0]["embedding"][0]), &fake_embedding(&tokens("cat")));
    let (status, body) = post(&base, "/embedding", json!({})).await;
    assert_eq!((status, param(&body).clone()), (400, json!("content")), "{body}");
    let (status, body) = post(&base, "/embedding", json!({"content": "a", "embd_normalize": 1})).await;
    assert_eq!((status, param(&body).clone()), (400, json!("embd_normalize")), "{body}");
}

#[tokio::test]
async fn ollama_embed_and_the_older_embeddings() {
    let base = fake_server("unused", None, None).await;
    let (status, body) = post(&base, "/api/embed", json!({"model": "fake:latest", "input": ["cat", "dog"], "keep_alive": "5m", "options": {"num_ctx": 64}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "fake");
    assert_eq!(body["prompt_eval_count"], 6);
    assert!(body["total_duration"].is_u64() && body["load_duration"].is_u64(), "{body}");
    assert_close(&floats(&body["embeddings"][0]), &fake_embedding(&tokens("cat")));
    assert_close(&floats(&body["embeddings"][1]), &fake_embedding(&tokens("dog")));
    // truncate (the default) cuts a long input to the 32 tokens an input holds
    let long = "y".repeat(40);
    let (status, body) = post(&base, "/api/embed", json!({"model": "fake", "input": long})).await;
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&body["embeddings"][0]), &fake_embedding(&tokens(&"y".repeat(32))));
    let (status, body) = post(&base, "/api/embed", json!({"model": "fake", "input": long, "truncate": false})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("input"), "{body}");
    let (status, body) = post(&base, "/api/embeddings", json!({"model": "fake", "prompt": "cat"})).await;
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&body["embedding"]), &fake_embedding(&tokens("cat")));
    // An empty input loads the model and embeds nothing, as Ollama does.
    for (path, body) in [("/api/embed", json!({"model": "fake", "input": ""})), ("/api/embed", json!({"model": "fake", "input": []})), ("/api/embeddings", json!({"model": "fake", "prompt": ""}))] {
        let (status, answer) = post(&base, path, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer.get("embeddings").or(answer.get("embedding")), Some(&json!([])), "{answer}");
    }
}

#[tokio::test]
async fn an_embeddings_only_model_refuses_generation_but_embeds() {
    let mut spec = fake_spec("emb");
    spec.knobs.embeddings_only = true;
    let state = fake_state(vec![spec, fake_spec("gen")], Arc::new(FakeFactory::new("hi")), roomy_limits(), 1 << 20, true);
    let base = serve(state).await;
    let chat = json!({"model": "emb", "messages": [{"role": "user", "content": "Hi"}]});
    for (path, body) in [("/v1/chat/completions", chat), ("/v1/completions", json!({"model": "emb", "prompt": "x"})), ("/completion", json!({"model": "emb", "prompt": "x"}))] {
        let (status, out) = post(&base, path, body).await;
        assert_eq!(status, 400, "{path}: {out}");
        assert_eq!(param(&out), "model", "{out}");
        assert!(out["error"]["message"].as_str().unwrap().contains("serves embeddings only"), "{out}");
    }
    let (status, out) = post(&base, "/api/generate", json!({"model": "emb", "prompt": "x", "stream": false})).await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = post(&base, "/v1/embeddings", json!({"model": "emb", "input": "x"})).await;
    assert_eq!(status, 200, "{out}");
    // Other models still generate, and embed too.
    let (status, out) = post(&base, "/v1/completions", json!({"model": "gen", "prompt": "x"})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = post(&base, "/v1/embeddings", json!({"model": "gen", "input": "x"})).await;
    assert_eq!(status, 200, "{out}");
}
