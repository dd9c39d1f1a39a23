//! Text-completion extras against the fake engine, whose vocabulary has
//! fill-in-the-middle tokens (private-use characters, see `common`).

mod common;

use common::{fake_server, FAKE_FIM};
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[test]
fn the_middle_is_asked_for_in_psm_order() {
    assert_eq!(FAKE_FIM.prompt(Some(1), &[10, 11], &[20]), vec![1, FAKE_FIM.pre, 10, 11, FAKE_FIM.suf, 20, FAKE_FIM.mid]);
    assert_eq!(FAKE_FIM.prompt(None, &[], &[]), vec![FAKE_FIM.pre, FAKE_FIM.suf, FAKE_FIM.mid]);
}

#[tokio::test]
async fn suffix_fills_in_the_middle() {
    let base = fake_server("x + y", None, None).await;
    let (status, body) = post(&base, "/v1/completions", json!({"prompt": "def add(x, y):\n    return ", "suffix": "\n\nprint(add(1, 2))"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], "x + y");
    // The fake makes a token of each character: prefix + suffix + 3 FIM tokens.
    let want = "def add(x, y):\n    return ".chars().count() + "\n\nprint(add(1, 2))".chars().count() + 3;
    assert_eq!(body["usage"]["prompt_tokens"], json!(want));
    // One sequence only on llama-server's endpoint: it says where to go.
    let (status, body) = post(&base, "/completion", json!({"prompt": "a", "suffix": "b"})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("suffix")), "{body}");
}

#[tokio::test]
async fn ollama_generate_suffix_fills_in_the_middle_too() {
    let base = fake_server("x + y", None, None).await;
    let body = json!({"model": "fake", "prompt": "def add(x, y):\n    return ", "suffix": "\n", "stream": false});
    let (status, body) = post(&base, "/api/generate", body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], "x + y");
    // The raw prompt in the FIM frame (no chat template): prefix + suffix + 3 FIM tokens.
    assert_eq!(body["prompt_eval_count"], json!("def add(x, y):\n    return ".chars().count() + 1 + 3));
}
