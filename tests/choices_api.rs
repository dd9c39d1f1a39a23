//! Several choices per request (`n`, a list of prompts) against the fake
//! engine: one choice per sequence with its `index`, the prompt counted once
//! per prompt in `usage`, streamed choices interleaved with one usage chunk.

mod common;

use common::{fake_server, FAILS_AFTER_REPLY};
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn chunks(text: &str) -> Vec<Value> {
    let events = vram_llm::api::sse::parse_events(text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn chat_n_gives_n_choices_and_counts_the_prompt_once() {
    let base = fake_server("abc", None, None).await;
    let one = json!({"messages": [{"role": "user", "content": "Hi"}]});
    let (_, body) = post(&base, "/v1/chat/completions", one.clone()).await;
    let single: Value = serde_json::from_str(&body).unwrap();
    let mut three = one;
    three["n"] = json!(3);
    let (status, body) = post(&base, "/v1/chat/completions", three.clone()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(choices.iter().all(|c| c["message"]["content"] == "abc"));
    assert_eq!(answer["usage"]["prompt_tokens"], single["usage"]["prompt_tokens"]);
    assert_eq!(answer["usage"]["completion_tokens"], json!(3 * single["usage"]["completion_tokens"].as_u64().unwrap()));

    three["stream"] = json!(true);
    three["stream_options"] = json!({"include_usage": true});
    let (_, text) = post(&base, "/v1/chat/completions", three).await;
    let chunks = chunks(&text);
    for i in 0..3 {
        let mine: Vec<&Value> = chunks.iter().filter(|c| c["choices"][0]["index"] == i).collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        let content: String = mine.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(content, "abc");
        assert_eq!(mine.last().unwrap()["choices"][0]["finish_reason"], "stop");
    }
    let usage: Vec<&Value> = chunks.iter().filter(|c| c["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1, "one usage chunk for all choices");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 9);
}

#[tokio::test]
async fn completion_prompt_lists_answer_each_prompt_n_times_in_order() {
    let base = fake_server("xyz", None, None).await;
    let body = json!({"prompt": ["A", "BB"], "n": 2, "echo": true});
    let (status, text) = post(&base, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let texts: Vec<&str> = answer["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["Axyz", "Axyz", "BBxyz", "BBxyz"]);
    // The fake tokenizer makes a token of each character: 1 + 2 prompt tokens.
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    assert_eq!(answer["usage"]["completion_tokens"], 12);

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (_, text) = post(&base, "/v1/completions", streamed).await;
    let chunks = chunks(&text);
    for (i, want) in ["Axyz", "Axyz", "BBxyz", "BBxyz"].iter().enumerate() {
        let got: String = chunks.iter().filter(|c| c["choices"][0]["index"] == i).filter_map(|c| c["choices"][0]["text"].as_str()).collect();
        assert_eq!(&got, want);
    }
    // Too many sequences, and endpoints that answer one, name the field.
    let (status, text) = post(&base, "/v1/completions", json!({"prompt": ["a", "b", "c"], "n": 6})).await;
    assert_eq!(status, 400, "{text}");
    // llama-server's /completion streams one prompt (a list is answered whole).
    let (status, text) = post(&base, "/completion", json!({"prompt": ["a", "b"], "stream": true})).await;
    assert_eq!((status, text.contains("\"param\":\"prompt\"")), (400, true), "{text}");
    let (status, text) = post(&base, "/completion", json!({"prompt": ["a", "b"], "n": 2})).await;
    assert_eq!((status, text.contains("\"param\":\"n\"")), (400, true), "{text}");
}

#[tokio::test]
async fn a_failed_choice_ends_the_stream_without_a_usage_chunk() {
    let base = fake_server(&format!("ab{FAILS_AFTER_REPLY}"), None, None).await;
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "n": 2, "stream": true, "stream_options": {"include_usage": true}});
    let (status, text) = post(&base, "/v1/chat/completions", body).await;
    assert_eq!(status, 200);
    let chunks = chunks(&text);
    assert_eq!(chunks.iter().filter(|c| c["error"].is_object()).count(), 2, "{text}");
    assert!(chunks.iter().all(|c| !c["usage"].is_object()), "no usage claims a complete answer: {text}");
}
