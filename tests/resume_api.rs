//! llama-server's resumable streams over the HTTP API, with fake engines:
//! a streamed request sent with `X-Conversation-Id` survives its client,
//! `GET /v1/stream` replays it, `DELETE /v1/stream` stops it.

mod common;

use std::sync::Arc;

use common::{fake_spec, fake_state, roomy_limits, serve, FakeFactory};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const CONV: &str = "conv-1::org/model:Q8_0";

fn chat(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "Hi"}], "stream": stream})
}

async fn post_conv(base: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("X-Conversation-Id", CONV)
        .json(&body)
        .send()
        .await
        .expect("send")
}

fn stream_url(base: &str, query: &str) -> String {
    format!("{base}/v1/stream?conv_id=conv-1%3A%3Aorg%2Fmodel%3AQ8_0{query}")
}

async fn get_stream(base: &str, from: usize) -> reqwest::Response {
    reqwest::get(stream_url(base, &format!("&from={from}"))).await.unwrap()
}

async fn delete_stream(base: &str) -> u16 {
    reqwest::Client::new().delete(stream_url(base, "")).send().await.unwrap().status().as_u16()
}

fn answer_of(text: &str) -> String {
    let events = vram_llm::api::sse::parse_events(text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

/// A server whose generations finish only as the returned semaphore gets permits.
async fn gated_server() -> (String, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let factory = FakeFactory { gate: Some(gate.clone()), ..FakeFactory::new("hello") };
    (serve(fake_state(vec![fake_spec("fake")], Arc::new(factory), roomy_limits(), 1 << 20, true)).await, gate)
}

#[tokio::test]
async fn a_client_that_drops_loses_nothing_and_a_reader_replays_the_whole_stream() {
    let (base, gate) = gated_server().await;
    let resp = post_conv(&base, chat(true)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"content\"") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.expect("stream ended early").unwrap()));
    }
    drop(stream);
    // The generation goes on without its client, to its end.
    gate.add_permits(1);
    let replay = get_stream(&base, 0).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["content-type"], "text/event-stream");
    let text = replay.text().await.unwrap();
    assert!(text.starts_with(&seen), "the replay starts with what the client saw");
    assert_eq!(answer_of(&text), "hello");
    // From an offset: the rest only.
    let tail = get_stream(&base, seen.len()).await.text().await.unwrap();
    assert_eq!(format!("{seen}{tail}"), text);

    let lookup: Value = reqwest::Client::new()
        .post(format!("{base}/v1/streams/lookup"))
        .json(&json!({"conversation_ids": ["conv-1", "someone-else"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sessions = lookup.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{lookup}");
    assert_eq!(sessions[0]["conversation_id"], CONV);
    assert_eq!(sessions[0]["is_done"], true);
    assert_eq!(sessions[0]["total_bytes"], text.len());

    assert_eq!(delete_stream(&base).await, 204);
    let gone = get_stream(&base, 0).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(gone.json::<Value>().await.unwrap()["error"]["type"], "not_found_error");
    assert_eq!(delete_stream(&base).await, 204, "a stop is idempotent");
}

#[tokio::test]
async fn a_stop_during_the_generation_ends_it_for_every_reader() {
    let (base, _gate) = gated_server().await;
    let resp = post_conv(&base, chat(true)).await;
    let reader = get_stream(&base, 0).await;
    assert_eq!(reader.status(), 200);
    assert_eq!(delete_stream(&base).await, 204);
    for body in [resp.text().await.unwrap(), reader.text().await.unwrap()] {
        assert!(!body.contains("[DONE]"), "stopped before its end: {body}");
    }
    assert_eq!(get_stream(&base, 0).await.status(), 404);
}

#[tokio::test]
async fn a_stop_while_the_model_loads_cancels_the_waiting_request() {
    let load_gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let factory = FakeFactory { load_gate: Some(load_gate.clone()), ..FakeFactory::new("hello") };
    let base = serve(fake_state(vec![fake_spec("fake")], Arc::new(factory), roomy_limits(), 1 << 20, true)).await;
    let waiting = tokio::spawn({
        let base = base.clone();
        async move { post_conv(&base, chat(true)).await }
    });
    // The request waits for its model: readers are told to come back.
    for tries in 0.. {
        assert!(tries < 100_000, "the request never showed as waiting");
        let resp = get_stream(&base, 0).await;
        match resp.status().as_u16() {
            404 => tokio::task::yield_now().await,
            503 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                break;
            }
            other => panic!("unexpected {other} while the model loads"),
        }
    }
    assert_eq!(delete_stream(&base).await, 204);
    let resp = waiting.await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("cancelled"), "{body}");
    assert_eq!(get_stream(&base, 0).await.status(), 404);
    let (open, cond) = &*load_gate;
    *open.lock().unwrap() = true;
    cond.notify_all();
}

#[tokio::test]
async fn only_streamed_requests_are_kept_and_bad_queries_name_the_parameter() {
    let base = serve(fake_state(vec![fake_spec("fake")], Arc::new(FakeFactory::new("hello")), roomy_limits(), 1 << 20, true)).await;
    let resp = post_conv(&base, chat(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["choices"][0]["message"]["content"], "hello");
    assert_eq!(get_stream(&base, 0).await.status(), 404, "a non-streamed answer is not kept");

    // An error answers the request itself and keeps nothing.
    let bad = post_conv(&base, json!({"messages": [], "stream": true})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(get_stream(&base, 0).await.status(), 404);

    let missing = reqwest::get(format!("{base}/v1/stream?from=0")).await.unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["param"], "conv_id");
    let streamed = post_conv(&base, chat(true)).await.text().await.unwrap();
    assert_eq!(answer_of(&streamed), "hello");
    let not_a_number = get_stream_query(&base, "&from=abc").await;
    assert_eq!(not_a_number.status(), 400);
    assert_eq!(not_a_number.json::<Value>().await.unwrap()["error"]["param"], "from");
    let past_the_end = get_stream(&base, streamed.len()).await;
    assert_eq!(past_the_end.status(), 200);
    assert_eq!(past_the_end.text().await.unwrap(), "", "a finished stream read from its end is empty");
}

async fn get_stream_query(base: &str, query: &str) -> reqwest::Response {
    reqwest::get(stream_url(base, query)).await.unwrap()
}
