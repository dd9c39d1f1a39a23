//! Tool calls through the HTTP layer against the fake engine, whose template
//! knows no tools (the generic format): the answer's JSON becomes
//! `tool_calls` in OpenAI's and Ollama's shapes, streamed or not.

mod common;

use std::sync::Arc;

use common::{fake_spec, fake_state, roomy_limits, serve, FakeFactory};
use serde_json::{json, Value};

/// A fake that answers `reply`, with room for the generic format's tool
/// descriptions (the fake tokenizer makes a token of every character).
async fn fake_server(reply: &str) -> String {
    let mut factory = FakeFactory::new(reply);
    factory.n_ctx_slot = 4096;
    serve(fake_state(vec![fake_spec("fake")], Arc::new(factory), roomy_limits(), 1 << 20, true)).await
}

const CALL: &str = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"tz": "CET"}}]}"#;

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
    ])
}

async fn post(base: &str, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Weather and time?"}], "tools": tools()});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn calls_come_back_as_tool_calls() {
    let base = fake_server(CALL).await;
    let (status, body) = post(&base, "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let choice = &serde_json::from_str::<Value>(&body).unwrap()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    // parallel_tool_calls: false keeps one.
    let (_, body) = post(&base, "/v1/chat/completions", chat(json!({"parallel_tool_calls": false}))).await;
    let calls = serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(calls.as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn streamed_calls_are_whole_deltas_with_indices() {
    let base = fake_server(CALL).await;
    let (status, text) = post(&base, "/v1/chat/completions", chat(json!({"stream": true}))).await;
    assert_eq!(status, 200, "{text}");
    let events = vram_llm::api::sse::parse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(calls[1]["function"], json!({"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}));
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "", "no JSON leaks into the content");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn a_plain_answer_is_content_and_tool_results_render() {
    let base = fake_server(r#"{"response": "It is sunny."}"#).await;
    let history = json!({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ], "tools": tools()});
    let (status, body) = post(&base, "/v1/chat/completions", history.clone()).await;
    assert_eq!(status, 200, "{body}");
    let choice = &serde_json::from_str::<Value>(&body).unwrap()["choices"][0];
    assert_eq!(choice["message"]["content"], "It is sunny.");
    assert_eq!(choice["finish_reason"], "stop");
    // What the template got: the tools described, the call as JSON, the result as a user turn.
    let (_, body) = post(&base, "/apply-template", history).await;
    let prompt = serde_json::from_str::<Value>(&body).unwrap()["prompt"].as_str().unwrap().to_string();
    assert!(prompt.starts_with("<system>You can call these tools (get_weather, get_time)"), "{prompt}");
    assert!(prompt.contains(r#"<assistant>{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}"#), "{prompt}");
    assert!(prompt.contains(r#"<user>{"tool_response":{"tool":"get_weather","content":"sunny"}}"#), "{prompt}");
}

#[tokio::test]
async fn ollama_chat_answers_calls_with_object_arguments() {
    let base = fake_server(CALL).await;
    let body = json!({"model": "fake", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools(), "stream": false});
    let (status, text) = post(&base, "/api/chat", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let message = &serde_json::from_str::<Value>(&text).unwrap()["message"];
    assert_eq!(message["tool_calls"][0], json!({"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}));
    assert_eq!(message["content"], "");

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (_, text) = post(&base, "/api/chat", streamed).await;
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let calls: Vec<&Value> = lines.iter().filter_map(|l| l["message"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls.len(), 2, "{text}");
    assert_eq!(lines.last().unwrap()["done"], true);
}

#[tokio::test]
async fn ollama_think_maps_onto_the_template() {
    let base = fake_server("ok").await;
    let ask = |think: Value| json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "think": think, "stream": false});
    for think in [json!(true), json!(false), json!("high")] {
        let (status, text) = post(&base, "/api/chat", ask(think.clone())).await;
        assert_eq!(status, 200, "{think}: {text}");
    }
    let (status, text) = post(&base, "/api/chat", ask(json!("max"))).await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = post(&base, "/api/generate", json!({"model": "fake", "prompt": "Hi", "think": true})).await;
    assert_eq!(status, 400);
}
