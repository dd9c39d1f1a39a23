//! Ollama's API (`/api/*`) against the fake engine: shapes, NDJSON streams,
//! errors as `{"error": "..."}`, load and unload through `/api/generate`.

mod common;

use common::fake_server;
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap()
}

/// The lines of an NDJSON body, parsed.
fn lines(body: &str) -> Vec<Value> {
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test]
async fn chat_answers_in_ollama_s_shape_streamed_by_default() {
    let base = fake_server("Hello there", None, None).await;
    let messages = json!([{"role": "user", "content": "Hi"}]);

    let (status, body) = post(&base, "/api/chat", json!({"model": "fake:latest", "messages": messages, "stream": false})).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model"], "fake");
    assert_eq!(answer["message"], json!({"role": "assistant", "content": "Hello there"}));
    assert_eq!(answer["done"], true);
    assert_eq!(answer["done_reason"], "stop");
    assert_eq!(answer["eval_count"], 11);
    assert_eq!(answer["prompt_eval_count"], 20);
    assert!(answer["created_at"].as_str().unwrap().ends_with('Z'), "{answer}");

    let (status, body) = post(&base, "/api/chat", json!({"model": "fake", "messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    let chunks = lines(&body);
    let (last, pieces) = chunks.split_last().unwrap();
    assert!(pieces.iter().all(|c| c["done"] == false));
    let text: String = pieces.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(text, "Hello there");
    assert_eq!(last["done"], true);
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 11);
}

#[tokio::test]
async fn generate_raw_continues_the_prompt_and_options_map_onto_ours() {
    let base = fake_server("one two three", None, None).await;
    let request = json!({"model": "fake", "prompt": "Count:", "raw": true, "stream": false, "options": {"num_predict": 2, "num_ctx": 4096}});
    let (status, body) = post(&base, "/api/generate", request).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["done_reason"], "length", "num_predict is max_tokens: {answer}");
    assert_eq!(answer["eval_count"], 2);

    let (status, body) = post(&base, "/api/generate", json!({"model": "fake", "prompt": "Count:", "raw": true})).await;
    assert_eq!(status, 200, "{body}");
    let text: String = lines(&body).iter().map(|c| c["response"].as_str().unwrap().to_string()).collect();
    assert_eq!(text, "one two three");
}

#[tokio::test]
async fn errors_are_ollama_s_error_strings_naming_the_field() {
    let base = fake_server("ok", None, None).await;
    let cases = [
        (json!({"model": "fake", "prompt": "x", "options": {"tfs_z": 0.9}}), 400, "options.tfs_z"),
        (json!({"model": "fake", "prompt": "x", "options": {"mirostat": 3}}), 400, "options.mirostat"),
        (json!({"model": "fake", "prompt": "x", "options": {"temperature": -1}}), 400, "options.temperature"),
        (json!({"model": "fake", "prompt": "x", "format": 5}), 400, "format"),
        (json!({"model": "fake", "prompt": "x", "format": {"type": "object", "properties": {"a": {"type": "nope"}}}}), 400, "format"),
        (json!({"model": "fake", "prompt": "x", "images": ["aGk="]}), 400, "images"),
        (json!({"model": "nope", "prompt": "x"}), 404, "nope"),
    ];
    for (request, want, names) in cases {
        let (status, body) = post(&base, "/api/generate", request.clone()).await;
        assert_eq!(status, want, "{request}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let message = error["error"].as_str().unwrap_or_else(|| panic!("a string error: {body}"));
        assert!(message.contains(names), "{request}: {message}");
    }
}

#[tokio::test]
async fn tags_ps_show_and_load_unload_through_an_empty_prompt() {
    let base = fake_server("ok", None, None).await;
    let tags = get(&base, "/api/tags").await;
    assert_eq!(tags["models"][0]["name"], "fake", "{tags}");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");

    let (status, body) = post(&base, "/api/generate", json!({"model": "fake"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["done_reason"], "load");
    assert_eq!(get(&base, "/api/ps").await["models"][0]["name"], "fake");

    let (status, body) = post(&base, "/api/show", json!({"model": "fake"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["capabilities"], json!(["completion", "embedding"]));

    let (status, body) = post(&base, "/api/generate", json!({"model": "fake", "keep_alive": 0})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["done_reason"], "unload");
    assert_eq!(get(&base, "/api/ps").await["models"], json!([]));
    assert_eq!(get(&base, "/api/version").await["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn request_metrics_label_the_matched_route_and_other_for_the_rest() {
    let base = fake_server("ok", None, None).await;
    get(&base, "/api/tags").await;
    let _ = reqwest::get(format!("{base}/no/such/path/{}", std::process::id())).await.unwrap();
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"vram_llm_requests_total{model="",path="/api/tags",status="200"}"#), "{text}");
    assert!(text.contains(r#"path="other",status="404""#), "{text}");
    assert!(!text.contains("/no/such/path"), "unknown paths never become labels");
}
