//! The real test model registered under three names with a memory budget
//! that fits one: every model answers, the scheduler swaps, /admin/status
//! reports it, and unloading gives the memory back.

mod common;

use common::{test_model, RealServer};
use serde_json::{json, Value};

async fn admin(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}")).header("X-Admin-Token", "tok");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn three_names_one_budget_swap_and_unload_frees_memory() {
    let path = test_model().display().to_string();
    let (a, b, c) = (format!("a={path}"), format!("b={path}"), format!("c={path}"));
    let server = RealServer::start_with(&[
        "--model", &a, "--model", &b, "--model", &c,
        "--ctx-size", "512", "--parallel", "1",
        // One model measures about 250 MiB here: one fits, two do not.
        "--memory-budget-mib", "400",
        "--admin-token", "tok",
    ])
    .await;
    let base = server.base.as_str();
    let client = reqwest::Client::new();
    for model in ["a", "b", "c", "a"] {
        let resp = client
            .post(format!("{base}/v1/completions"))
            .json(&json!({"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["model"], model);
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    }
    let status = admin(base, reqwest::Method::GET, "/admin/status", None).await;
    assert_eq!(status["swaps"], 3, "{status}");
    let models = status["models"].as_array().unwrap();
    assert_eq!(models[0]["state"], "loaded");
    assert_eq!(models[0]["load_count"], 2);
    for m in models {
        assert_eq!(m["memory_measured"], true, "{m}");
        assert!(m["memory_bytes"].as_u64().unwrap() > 200 << 20, "{m}");
    }
    assert!(status["used_bytes"].as_u64().unwrap() <= status["budget_bytes"].as_u64().unwrap());
    // Evicted CPU models sleep (their weights are the mapped file: nothing
    // pinned), in every view of the state.
    for m in &models[1..] {
        assert_eq!((m["state"].as_str(), m["sleeping_bytes"].as_u64()), (Some("sleeping"), Some(0)), "{m}");
    }
    assert_eq!(status["sleeping_bytes"], 0, "{status}");
    let listed: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"][1]["state"], "sleeping", "{listed}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vram_llm_model_sleeping{model=\"b\"} 1"), "{metrics}");
    assert!(metrics.contains("vram_llm_model_sleeping{model=\"a\"} 0"), "{metrics}");
    // An admin unload of a sleeper releases it.
    let out = admin(base, reqwest::Method::POST, "/admin/models/unload", Some(json!({"model": "b"}))).await;
    assert_eq!(out["state"], "unloaded", "{out}");

    // Unloading frees the weights and the context (RSS on CPU).
    let loaded_rss = server.rss_bytes();
    let out = admin(base, reqwest::Method::POST, "/admin/models/unload", Some(json!({"model": "a"}))).await;
    assert_eq!(out["state"], "unloaded");
    let unloaded_rss = server.rss_bytes();
    assert!(
        loaded_rss > unloaded_rss + (150 << 20),
        "RSS {} MiB loaded vs {} MiB after unload",
        loaded_rss >> 20,
        unloaded_rss >> 20
    );
    eprintln!("RSS with one model loaded: {} MiB; after unload: {} MiB", loaded_rss >> 20, unloaded_rss >> 20);
}

#[tokio::test]
async fn a_preload_model_from_the_config_is_loaded_before_the_port_opens() {
    let dir = std::env::temp_dir().join(format!("vram-llm-preload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vram-llm.toml");
    let text = format!(
        "[server]\nctx_size = 256\nparallel = 1\n[[models]]\nname = \"warm\"\npath = \"{}\"\npreload = true\n[[models]]\nname = \"cold\"\npath = \"{}\"\n",
        test_model().display(),
        test_model().display()
    );
    std::fs::write(&config, text).unwrap();
    let server = RealServer::start_with(&["--config", config.to_str().unwrap(), "--admin-token", "tok"]).await;
    let status = admin(&server.base, reqwest::Method::GET, "/admin/status", None).await;
    assert_eq!(status["models"][0]["state"], "loaded", "{status}");
    assert_eq!(status["models"][1]["state"], "unloaded", "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn gpu_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/gpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Two names, so the server is ready at once and models load on demand.
async fn serve_two_on(gpus: &str) -> RealServer {
    let path = test_model().display().to_string();
    let (a, b) = (format!("a={path}"), format!("b={path}"));
    RealServer::start_with(&[
        "--model", &a, "--model", &b, "--ctx-size", "512", "--parallel", "1",
        "--gpus-from", &gpu_fixture(gpus), "--admin-token", "tok",
    ])
    .await
}

async fn complete(base: &str, model: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_placement_with_no_gpu_room_loads_on_the_cpu_and_status_shows_it() {
    let server = serve_two_on("reserve_exceeds_free.json").await;
    assert_eq!(complete(&server.base, "a").await.status(), 200);
    let status = admin(&server.base, reqwest::Method::GET, "/admin/status", None).await;
    assert_eq!(status["gpus"].as_array().map(Vec::len), Some(1), "{status}");
    let a = &status["models"][0];
    assert_eq!(a["placement"]["kind"], "cpu_only", "{a}");
    assert_eq!(a["placement"]["n_gpu_layers"], 0);
    assert_eq!(a["holding"]["gpu_mib"], json!([]));
    assert_eq!(a["memory_measured"], true, "a CPU-only load is measured in host memory");
}

#[cfg(not(feature = "cuda"))]
#[tokio::test]
async fn a_gpu_placement_on_a_cpu_build_fails_the_load_with_a_clear_reason() {
    let server = serve_two_on("one_24gb.json").await;
    let resp = complete(&server.base, "a").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("is this a CUDA build?"), "{body}");
    let status = admin(&server.base, reqwest::Method::GET, "/admin/status", None).await;
    assert_eq!(status["models"][0]["state"], "failed");
    assert_eq!(status["models"][0]["placement"], Value::Null, "a failed load holds nothing");
}

#[tokio::test]
async fn a_conversation_keeps_its_kv_cache_across_a_swap() {
    let path = test_model().display().to_string();
    let (a, b) = (format!("a={path}"), format!("b={path}"));
    let server = RealServer::start_with(&[
        "--model", &a, "--model", &b,
        "--ctx-size", "1024", "--parallel", "1",
        "--memory-budget-mib", "400",
        "--admin-token", "tok",
    ])
    .await;
    let base = server.base.as_str();
    let client = reqwest::Client::new();
    let turn = |model: &'static str, prompt: String| {
        let req = client.post(format!("{base}/v1/completions")).json(&json!({"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{model}");
            resp.json::<Value>().await.unwrap()
        }
    };
    let conversation: String = (0..40).map(|i| format!("Turn {i}: the user asks about planet number {i}.")).collect::<Vec<_>>().join(" ");
    let first = turn("a", conversation.clone()).await;
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    turn("b", "Hello".into()).await;
    let second = turn("a", conversation + " And the moon?").await;
    let status = admin(base, reqwest::Method::GET, "/admin/status", None).await;
    assert_eq!(status["swaps"], 2, "a was swapped out and back: {status}");
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached >= prompt_tokens - 1, "turn 2 prefilled again: {second}");
    let swaps = status["recent_swaps"].as_array().unwrap();
    assert_eq!(swaps.len(), 2, "{status}");
    assert_eq!(swaps[1]["model"], "a");
    assert_eq!(swaps[1]["evicted"], json!(["b"]));
}

#[tokio::test]
async fn a_truncated_model_file_fails_with_a_reason_and_without_the_servers_path() {
    let dir = std::env::temp_dir().join(format!("vram-llm-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.gguf");
    let bytes = std::fs::read(test_model()).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let good = format!("good={}", test_model().display());
    let bad = format!("broken={}", broken.display());
    let server = RealServer::start_with(&["--model", &good, "--model", &bad, "--ctx-size", "256", "--parallel", "1"]).await;
    let resp = complete(&server.base, "broken").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("model `broken` failed to load: the model file is not a readable GGUF file (broken.gguf: file truncated"), "{body}");
    assert!(!message.contains(dir.to_str().unwrap()), "the server's path leaked: {body}");
    assert_eq!(complete(&server.base, "good").await.status(), 200, "the other model still serves");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
