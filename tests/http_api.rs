//! HTTP behaviour against a fake engine: shapes, SSE framing, errors, auth.
//! Runs in milliseconds; the real model is covered by tests/real_model.rs.

mod common;

use common::fake_server;
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).body(body).send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn assert_envelope(body: &Value, param: Option<&str>) {
    let err = &body["error"];
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(err["type"].is_string(), "{body}");
    assert!(err.get("code").is_some() && err.get("param").is_some(), "{body}");
    if let Some(p) = param {
        assert_eq!(err["param"], p, "{body}");
    }
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_usage() {
    let base = fake_server("Hello there", None, None).await;
    let (status, body) =
        post(&base, "/v1/chat/completions", json!({"model":"fake","messages":[{"role":"user","content":"Hi"}]}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "fake");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // The fake template renders "<user>Hi\n<assistant>": 20 characters = 20 tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 20);
    assert_eq!(body["usage"]["completion_tokens"], 11);
    assert_eq!(body["usage"]["total_tokens"], 31);
    // llama-server's timings beside the usage.
    let t = &body["timings"];
    assert_eq!((t["prompt_n"].as_u64(), t["predicted_n"].as_u64(), t["cache_n"].as_u64()), (Some(20), Some(11), Some(0)), "{t}");
    for key in ["prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_ms", "predicted_per_token_ms", "predicted_per_second"] {
        assert!(t[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {t}");
    }
}

#[tokio::test]
async fn chat_input_tokens_counts_the_rendered_prompt_without_generating() {
    let base = fake_server("ok", None, None).await;
    for path in ["/chat/completions/input_tokens", "/v1/chat/completions/input_tokens"] {
        let (status, body) = post(&base, path, json!({"messages":[{"role":"user","content":"Hi"}]}).to_string()).await;
        // The fake template renders "<user>Hi\n<assistant>": 20 tokens.
        assert_eq!((status, body["input_tokens"].as_u64()), (200, Some(20)), "{path}: {body}");
    }
    // The Responses API's count: the same prompt from `input`.
    let (status, body) = post(&base, "/v1/responses/input_tokens", json!({"input":"Hi"}).to_string()).await;
    assert_eq!((status, body["input_tokens"].as_u64(), body["object"].as_str()), (200, Some(20), Some("response.input_tokens")), "{body}");
    let (status, body) = post(&base, "/chat/completions/input_tokens", json!({"messages":"nope"}).to_string()).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages")), "{body}");
}

#[tokio::test]
async fn a_trailing_assistant_message_is_continued_as_llama_servers_prefill() {
    let base = fake_server("ok", None, None).await;
    let prefill = json!([{"role":"user","content":"Hi"},{"role":"assistant","content":"Whi"}]);
    let render = |body: Value| {
        let base = base.clone();
        async move { post(&base, "/apply-template", body.to_string()).await }
    };
    let (status, body) = render(json!({"messages": prefill})).await;
    assert_eq!((status, body["prompt"].as_str()), (200, Some("<user>Hi\n<assistant>Whi")), "{body}");
    let (_, body) = render(json!({"messages": prefill, "continue_final_message": false})).await;
    assert_eq!(body["prompt"], "<user>Hi\n<assistant>Whi\n<assistant>", "a new turn when asked");
    let (status, body) = render(json!({"messages": prefill, "continue_final_message": true, "add_generation_prompt": true})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("continue_final_message")), "{body}");
    // Chat reads the same prompt: the fake answers, the usage counts it.
    let (status, body) = post(&base, "/v1/chat/completions", json!({"messages": prefill}).to_string()).await;
    assert_eq!((status, body["usage"]["prompt_tokens"].as_u64()), (200, Some(23)), "{body}");
}

#[tokio::test]
async fn a_server_of_one_model_answers_any_name_unless_strict() {
    let chat = |name: &str| json!({"model": name, "messages": [{"role": "user", "content": "Hi"}]}).to_string();
    let factory = std::sync::Arc::new(common::FakeFactory::new("ok"));
    let mut limits = common::roomy_limits();
    limits.any_model_name = true;
    let lenient = common::serve(common::fake_state(vec![common::fake_spec("fake")], factory.clone(), limits.clone(), 1 << 20, true)).await;
    let (status, body) = post(&lenient, "/v1/chat/completions", chat("gpt-4o-mini")).await;
    assert_eq!((status, body["model"].as_str()), (200, Some("fake")), "{body}");
    // Retrieving a model is by its own names.
    assert_eq!(reqwest::get(format!("{lenient}/v1/models/gpt-4o-mini")).await.unwrap().status(), 404);
    // Several models route by name, whatever the setting.
    let two = common::serve(common::fake_state(vec![common::fake_spec("a"), common::fake_spec("b")], factory.clone(), limits, 1 << 20, true)).await;
    assert_eq!(post(&two, "/v1/chat/completions", chat("gpt-4o-mini")).await.0, 404);
    // --strict-model-names.
    let strict = common::serve(common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true)).await;
    let (status, body) = post(&strict, "/v1/chat/completions", chat("gpt-4o-mini")).await;
    assert_eq!((status, body["error"]["param"].as_str()), (404, Some("model")), "{body}");
}

#[tokio::test]
async fn completions_without_v1_is_llama_servers_native_endpoint() {
    let base = fake_server("ok", None, None).await;
    for path in ["/completion", "/completions"] {
        let (status, body) = post(&base, path, json!({"prompt": "Hi"}).to_string()).await;
        assert_eq!((status, body["content"].as_str(), body["stop"].as_bool()), (200, Some("ok"), Some(true)), "{path}: {body}");
    }
    let (_, body) = post(&base, "/v1/completions", json!({"prompt": "Hi"}).to_string()).await;
    assert_eq!(body["choices"][0]["text"], "ok", "OpenAI's shape under /v1");
}

#[tokio::test]
async fn model_may_be_named_by_alias_or_omitted() {
    let base = fake_server("ok", None, None).await;
    for body in [
        json!({"model":"fake-alias","messages":[{"role":"user","content":"Hi"}]}),
        json!({"messages":[{"role":"user","content":"Hi"}]}),
    ] {
        let (status, out) = post(&base, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["model"], "fake");
    }
}

#[tokio::test]
async fn max_tokens_gives_length_and_stop_cuts_output() {
    let base = fake_server("one two three", None, None).await;
    let (_, body) = post(&base, "/v1/completions", json!({"prompt":"x","max_tokens":3}).to_string()).await;
    assert_eq!(body["choices"][0]["text"], "one");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let (_, body) = post(&base, "/v1/completions", json!({"prompt":"x","stop":[" th"]}).to_string()).await;
    assert_eq!(body["choices"][0]["text"], "one two");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_stream_is_role_then_deltas_then_finish_then_usage_then_done() {
    let base = fake_server("abc", None, None).await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .body(json!({"messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = vram_llm::api::sse::parse_events(&text);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[0]["choices"][0]["delta"]["content"].is_null(), "null, as llama-server: {}", chunks[0]);
    let pieces: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(pieces.iter().all(|p| !p.is_empty()), "no empty content pieces: {pieces:?}");
    assert_eq!(pieces.concat(), "abc");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["timings"]["predicted_n"], 3, "llama-server's timings on the finishing chunk");
    assert!(chunks[..chunks.len() - 2].iter().all(|c| c.get("timings").is_none()), "not on the deltas");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["timings"]["predicted_n"], 3, "and beside the usage, as llama-server");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn completion_stream_without_usage_option_sends_no_usage_chunk() {
    let base = fake_server("xy", None, None).await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .body(json!({"prompt":"p","stream":true}).to_string())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let events = vram_llm::api::sse::parse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "xy");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn bad_input_gets_4xx_envelopes_naming_the_field() {
    let base = fake_server("ok", None, None).await;
    let user = json!([{"role":"user","content":"Hi"}]);
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{not json".into(), 400, None),
        ("".into(), 400, None),
        (json!({"model":"fake"}).to_string(), 400, Some("messages")),
        (json!({"messages":"hi"}).to_string(), 400, Some("messages")),
        (json!({"messages":[]}).to_string(), 400, Some("messages")),
        (json!({"messages":user,"temperature":-1}).to_string(), 400, Some("temperature")),
        (json!({"messages":user,"temperature":"hot"}).to_string(), 400, Some("temperature")),
        (json!({"messages":user,"top_p":0}).to_string(), 400, Some("top_p")),
        (json!({"messages":user,"max_tokens":0}).to_string(), 400, Some("max_tokens")),
        (json!({"messages":user,"n":17}).to_string(), 400, Some("n")),
        (json!({"messages":user,"model":"missing"}).to_string(), 404, Some("model")),
        (json!({"messages":[{"role":"system","content":"fail"}]}).to_string(), 400, Some("messages")),
        (json!({"messages":[{"role":"user","content":"x".repeat(100)}]}).to_string(), 400, Some("messages")),
    ];
    for (body, want, param) in cases {
        let (status, out) = post(&base, "/v1/chat/completions", body.clone()).await;
        assert_eq!(status, want, "{body} -> {out}");
        assert_envelope(&out, param);
    }
}

#[tokio::test]
async fn template_errors_carry_the_template_message() {
    let base = fake_server("ok", None, None).await;
    let (status, out) =
        post(&base, "/v1/chat/completions", json!({"messages":[{"role":"system","content":"fail"}]}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["message"], "no system role here");
}

#[tokio::test]
async fn prompt_longer_than_context_is_400_context_length_exceeded() {
    let base = fake_server("ok", None, None).await;
    let (status, out) = post(&base, "/v1/completions", json!({"prompt":"y".repeat(64)}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["code"], "context_length_exceeded");
    // llama-server's type and counts.
    assert_eq!((out["error"]["type"].as_str(), out["error"]["n_prompt_tokens"].as_u64(), out["error"]["n_ctx"].as_u64()), (Some("exceed_context_size_error"), Some(64), Some(64)), "{out}");
    // Cheap checks refuse without tokenizing: more bytes than n_ctx (64)
    // tokens can hold, more messages than n_ctx tokens.
    let (status, out) = post(&base, "/v1/completions", json!({"prompt":"y".repeat(64 * 256 + 1)}).to_string()).await;
    assert_eq!((status, out["error"]["param"].as_str()), (400, Some("prompt")), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("more than 64 tokens"), "{out}");
    let messages: Vec<Value> = (0..64).map(|_| json!({"role": "user", "content": "hi"})).collect();
    let (status, out) = post(&base, "/v1/chat/completions", json!({"messages": messages}).to_string()).await;
    assert_eq!((status, out["error"]["param"].as_str()), (400, Some("messages")), "{out}");
    assert_eq!(out["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn oversized_body_is_413_envelope() {
    let base = fake_server("ok", None, Some(1024)).await;
    let (status, out) = post(&base, "/v1/completions", json!({"prompt":"z".repeat(5000)}).to_string()).await;
    assert_eq!(status, 413);
    assert_envelope(&out, None);
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_envelopes() {
    let base = fake_server("ok", None, None).await;
    let (status, out) = post(&base, "/v1/nothing", "{}").await;
    assert_eq!(status, 404);
    assert_envelope(&out, None);
    let resp = reqwest::Client::new().get(format!("{base}/v1/chat/completions")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_envelope(&resp.json().await.unwrap(), None);
}

#[tokio::test]
async fn api_key_guards_everything_but_health() {
    let base = fake_server("ok", Some("s3cret"), None).await;
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for path in ["/v1/models", "/props"] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_envelope(&resp.json().await.unwrap(), None);
        let wrong = client.get(format!("{base}{path}")).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let ok = client.get(format!("{base}{path}")).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
        // llama-server's header works too.
        let ok = client.get(format!("{base}{path}")).header("X-Api-Key", "s3cret").send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
        let wrong = client.get(format!("{base}{path}")).header("X-Api-Key", "nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let (status, _) = post(&base, "/tokenize", json!({"content":"a"}).to_string()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn no_metrics_and_no_slots_answer_501_as_llama_server() {
    let factory = std::sync::Arc::new(common::FakeFactory::new("ok"));
    let on = common::serve(common::fake_state(vec![common::fake_spec("fake")], factory.clone(), common::roomy_limits(), 1 << 20, true)).await;
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true);
    state.options.metrics = false;
    state.options.slots = false;
    let off = common::serve(state).await;
    // --no-ui: no dashboard.
    assert_eq!(reqwest::get(format!("{on}/")).await.unwrap().status(), 200);
    let mut state = common::fake_state(vec![common::fake_spec("fake")], std::sync::Arc::new(common::FakeFactory::new("ok")), common::roomy_limits(), 1 << 20, true);
    state.options.ui = false;
    assert_eq!(reqwest::get(format!("{}/", common::serve(state).await)).await.unwrap().status(), 404);
    let scrape = reqwest::get(format!("{on}/metrics")).await.unwrap();
    let started: u64 = scrape.headers()["process-start-time-unix"].to_str().unwrap().parse().unwrap();
    assert!(started > 1_700_000_000, "llama-server's Process-Start-Time-Unix: {started}");
    for path in ["/metrics", "/slots"] {
        assert_eq!(reqwest::get(format!("{on}{path}")).await.unwrap().status(), 200, "{path}");
        let resp = reqwest::get(format!("{off}{path}")).await.unwrap();
        assert_eq!(resp.status(), 501, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "not_supported_error", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("--no-"), "{body}");
    }
}

#[tokio::test]
async fn models_lists_state_and_meta() {
    let base = fake_server("ok", None, None).await;
    let before: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(before["data"][0]["state"], "unloaded", "models load on demand");
    assert!(before["data"][0].get("meta").is_none());
    let (status, _) = post(&base, "/v1/completions", json!({"prompt":"x"}).to_string()).await;
    assert_eq!(status, 200);
    let body: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(body["object"], "list");
    let m = &body["data"][0];
    assert_eq!(m["id"], "fake");
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "vram-llm");
    assert_eq!(m["state"], "loaded");
    assert_eq!(m["meta"]["n_ctx"], 64);
    assert_eq!(m["meta"]["n_params"], 1000);
    assert_eq!(m["meta"]["size"], 2000);
    // One model by name (the SDK's models.retrieve); an unknown one is a 404 naming it.
    let one: Value = reqwest::get(format!("{base}/v1/models/fake")).await.unwrap().json().await.unwrap();
    assert_eq!((one["id"].as_str(), one["state"].as_str()), (Some("fake"), Some("loaded")));
    let missing = reqwest::get(format!("{base}/v1/models/org/no-such:q4")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("org/no-such:q4"), "{err}");
    let legacy: Value = reqwest::get(format!("{base}/models")).await.unwrap().json().await.unwrap();
    assert_eq!(legacy, body);
}

#[tokio::test]
async fn helpers_tokenize_detokenize_apply_template_props() {
    let base = fake_server("ok", None, None).await;
    let (_, t) = post(&base, "/tokenize", json!({"content":"hé"}).to_string()).await;
    assert_eq!(t["tokens"], json!([104, 233]));
    let (_, d) = post(&base, "/detokenize", json!({"tokens":[104, 233]}).to_string()).await;
    assert_eq!(d["content"], "hé");
    let (status, bad) = post(&base, "/detokenize", json!({"tokens":[-5]}).to_string()).await;
    assert_eq!(status, 400);
    assert_envelope(&bad, Some("tokens[0]"));
    let (_, p) = post(&base, "/apply-template", json!({"messages":[{"role":"user","content":"Hi"}]}).to_string()).await;
    assert_eq!(p["prompt"], "<user>Hi\n<assistant>");
    let (_, p) = post(
        &base,
        "/apply-template",
        json!({"messages":[{"role":"user","content":"Hi"}],"add_generation_prompt":false}).to_string(),
    )
    .await;
    assert_eq!(p["prompt"], "<user>Hi\n");
    let props: Value = reqwest::get(format!("{base}/props")).await.unwrap().json().await.unwrap();
    assert_eq!(props["n_ctx"], 64);
    assert_eq!(props["chat_template"], common::FAKE_TEMPLATE);
    assert_eq!(props["backends"], serde_json::json!(["CPU (test)"]));
    assert_eq!(props["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(props["build_info"].as_str().unwrap().starts_with("vram-llm-"), "{props}");
    assert_eq!((props["role"].as_str(), props["models_autoload"].as_bool(), props["endpoint_slots"].as_bool()), (Some("model"), Some(true), Some(true)));
    assert_eq!(props["total_slots"], 2);
    let slots: Value = reqwest::get(format!("{base}/slots")).await.unwrap().json().await.unwrap();
    assert_eq!(slots.as_array().map(Vec::len), Some(2), "{slots}");
    assert_eq!(slots[1]["id"], 1);
    assert_eq!(slots[0]["is_processing"], false);
    // The scheduler's limits, as the scheduler holds them.
    let limits = vram_llm::scheduler::SchedLimits { autoload: false, max_loaded: Some(2), ..common::roomy_limits() };
    let state = common::fake_state(vec![common::fake_spec("fake")], std::sync::Arc::new(common::FakeFactory::new("ok")), limits, 1 << 20, true);
    let props: Value = reqwest::get(format!("{}/props", common::serve(state).await)).await.unwrap().json().await.unwrap();
    assert_eq!((props["models_autoload"].as_bool(), props["max_instances"].as_u64()), (Some(false), Some(2)), "{props}");
}

#[tokio::test]
async fn health_is_ok_when_loaded() {
    let base = fake_server("ok", None, None).await;
    let resp = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn health_is_503_until_startup_loads_finish() {
    use std::sync::Arc;
    let factory = Arc::new(common::FakeFactory::new("ok"));
    let state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, false);
    let ready = state.ready.clone();
    let base = common::serve(state).await;

    let resp = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "loading");
    assert_eq!(body["models"]["fake"], "unloaded");
    assert_envelope(&body, None);

    ready.store(true, std::sync::atomic::Ordering::Release);
    let resp = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn cors_answers_preflights_only_for_configured_origins() {
    use std::sync::Arc;
    let preflight = |base: String, origin: &'static str| async move {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/chat/completions"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type")
            .send()
            .await
            .unwrap()
    };
    let allowed = |resp: &reqwest::Response| resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());

    // Default: no CORS at all, as llama-server.
    let closed = fake_server("ok", None, None).await;
    let resp = preflight(closed.clone(), "http://localhost:3000").await;
    assert_eq!(allowed(&resp), None);

    let factory = Arc::new(common::FakeFactory::new("ok"));
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true);
    state.cors_origins = Arc::from(vec!["http://localhost:3000".to_string()]);
    let base = common::serve(state).await;
    let resp = preflight(base.clone(), "http://localhost:3000").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(allowed(&resp).as_deref(), Some("http://localhost:3000"));
    let methods = resp.headers().get("access-control-allow-methods").unwrap().to_str().unwrap().to_string();
    assert!(methods.contains("POST"), "{methods}");
    assert_eq!(allowed(&preflight(base.clone(), "http://evil.example").await), None);

    // The actual call carries the header for the allowed origin only.
    let call = |origin: &'static str| {
        reqwest::Client::new().get(format!("{base}/v1/models")).header("Origin", origin).send()
    };
    assert_eq!(allowed(&call("http://localhost:3000").await.unwrap()).as_deref(), Some("http://localhost:3000"));
    assert_eq!(allowed(&call("http://evil.example").await.unwrap()), None);

    // llama-server's `localhost`: pages on a loopback host, any port, reflected.
    let factory = Arc::new(common::FakeFactory::new("ok"));
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true);
    state.cors_origins = Arc::from(vec!["localhost".to_string()]);
    let local = common::serve(state).await;
    for origin in ["http://localhost", "http://localhost:8080", "http://127.0.0.1:3000", "http://[::1]:3000", "https://localhost:5173"] {
        let resp = preflight(local.clone(), origin).await;
        assert_eq!((resp.status().as_u16(), allowed(&resp).as_deref()), (200, Some(origin)));
    }
    // Others: the preflight answers 200 without the header (the browser
    // refuses the call), and the call itself is refused.
    for origin in ["http://evil.com", "http://notlocalhost", "http://localhost.evil.com", "http://web.mydomain.fr"] {
        let resp = preflight(local.clone(), origin).await;
        assert_eq!((resp.status().as_u16(), allowed(&resp)), (200, None), "{origin}");
        let call = reqwest::Client::new().get(format!("{local}/v1/models")).header("Origin", origin).send().await.unwrap();
        assert_eq!(call.status(), 403, "{origin}");
    }
}

#[tokio::test]
async fn health_answers_while_tokenizers_hold_every_core() {
    // Tokenizing runs on the blocking pool (api::cpu), never on the async
    // runtime: with every CPU job slot taken by a tokenizer that does not
    // finish, /health still answers. (Before, the first such request blocked
    // this test's single runtime thread and nothing answered.)
    let base = fake_server("ok", None, None).await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let requests: Vec<_> = (0..cores + 1)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let body = json!({"content": format!("x{}", common::BLOCKING_TOKENIZE)});
                reqwest::Client::new().post(format!("{base}/tokenize")).json(&body).send().await.unwrap().status()
            })
        })
        .collect();
    while common::tokenize_gate::blocked() < cores {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let health = tokio::time::timeout(std::time::Duration::from_secs(60), reqwest::get(format!("{base}/health")));
    assert_eq!(health.await.expect("/health answered").unwrap().status(), 200);
    common::tokenize_gate::open();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn foreign_host_names_and_web_pages_are_refused() {
    use std::sync::Arc;
    let factory = Arc::new(common::FakeFactory::new("ok"));
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true);
    state.allowed_hosts = vram_llm::api::guard::allowed_hosts(&["127.0.0.1".parse().unwrap()], &[]).map(Into::into);
    let base = common::serve(state).await;
    let client = reqwest::Client::new();
    let get = |host: &'static str, origin: Option<&'static str>| {
        let mut req = client.get(format!("{base}/v1/models")).header("Host", host);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        req.send()
    };
    assert_eq!(get("127.0.0.1:1234", None).await.unwrap().status(), 200);
    assert_eq!(get("localhost", None).await.unwrap().status(), 200);
    // DNS rebinding: a hostile name pointed at 127.0.0.1.
    let resp = get("evil.example:8080", None).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_envelope(&body, None);
    assert_eq!(body["error"]["code"], "forbidden");
    // A page on another site, even with a valid Host (a "simple" form post).
    let resp = client
        .post(format!("{base}/v1/completions"))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "text/plain")
        .body(json!({"prompt": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Pages served from this machine are fine.
    assert_eq!(get("localhost:8080", Some("http://localhost:3000")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn llama_server_completion_answers_in_its_shape() {
    let base = fake_server("xy", None, None).await;
    let (status, body) = post(&base, "/completion", json!({"prompt": "p", "n_predict": 8, "cache_prompt": true}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], "xy");
    assert_eq!((body["stop"].as_bool(), body["stop_type"].as_str(), body["prompt"].as_str()), (Some(true), Some("eos"), Some("p")));
    assert!(body["tokens_predicted"].as_u64().is_some() && body["timings"]["predicted_n"].is_u64(), "{body}");
    // A stop string: llama-server's `word`, naming it.
    let (_, stopped) = post(&base, "/completion", json!({"prompt": "p", "stop": ["zz", "y"]}).to_string()).await;
    assert_eq!((stopped["content"].as_str(), stopped["stop_type"].as_str(), stopped["stopping_word"].as_str()), (Some("x"), Some("word"), Some("y")));
    // `generation_settings`: what it was sampled with; a ban is a null bias,
    // and `ignore_eos` bans every end-of-generation token (the fake's is 3).
    let g = &body["generation_settings"];
    assert_eq!((g["n_predict"].as_i64(), g["logit_bias"].as_array().map(Vec::len)), (Some(8), Some(0)), "{g}");
    // `response_fields`: only those, keyed by their path; a path to nothing is left out.
    let fields = json!({"prompt": "p", "n_predict": 8, "response_fields": ["content", "generation_settings/n_predict", "no/such"]});
    let (_, picked) = post(&base, "/completion", fields.to_string()).await;
    assert_eq!(picked, json!({"content": "xy", "generation_settings/n_predict": 8}));
    let (_, banned) = post(&base, "/completion", json!({"prompt": "p", "ignore_eos": true, "logit_bias": [[7, 1.5]]}).to_string()).await;
    assert_eq!(banned["generation_settings"]["logit_bias"], json!([{"token": 7, "bias": 1.5}, {"token": 3, "bias": null}]), "{banned}");

    // llama-server's prompt forms: a list answers with a list, in order; ids
    // beside text make one prompt; `{"prompt_string"}` is text.
    let (status, list) = post(&base, "/completion", json!({"prompt": [[1, 2], "p", {"prompt_string": "q"}]}).to_string()).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("a list answers with a list");
    assert_eq!(list.iter().map(|b| (b["index"].as_u64().unwrap(), b["content"].as_str().unwrap())).collect::<Vec<_>>(), [(0, "xy"), (1, "xy"), (2, "xy")]);
    assert_eq!((list[0]["prompt"].clone(), list[2]["prompt"].clone()), (json!([1, 2]), json!("q")));
    let (status, mixed) = post(&base, "/completion", json!({"prompt": [1, "p", 2]}).to_string()).await;
    assert_eq!((status, mixed["content"].as_str()), (200, Some("xy")), "{mixed}");
    let (status, body) = post(&base, "/completion", json!({"prompt": ["a", "b"], "stream": true}).to_string()).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("prompt")), "one streamed prompt: {body}");

    let resp = reqwest::Client::new().post(format!("{base}/completion")).body(json!({"prompt": "p", "stream": true}).to_string()).send().await.unwrap();
    let events = vram_llm::api::sse::parse_events(&resp.text().await.unwrap());
    let chunks: Vec<Value> = events.iter().map(|e| serde_json::from_str(e).expect("no [DONE] in llama-server's stream")).collect();
    let text: String = chunks.iter().filter_map(|c| c["content"].as_str()).collect();
    assert_eq!(text, "xy");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["stop"] == false));
    assert_eq!(chunks.last().unwrap()["stop"], true);
    assert_eq!(chunks.last().unwrap()["generation_settings"]["stream"], true, "on the last event, as llama-server");

    // `n_probs` is honoured (the fake engine reports no log-probabilities);
    // out of range, or the OpenAI field, is a 400 naming it.
    let (status, body) = post(&base, "/completion", json!({"prompt": "p", "n_probs": 3}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["completion_probabilities"].is_array(), "{body}");
    for (field, value) in [("n_probs", json!(21)), ("logprobs", json!(2))] {
        let (status, body) = post(&base, "/completion", json!({"prompt": "p", field: value}).to_string()).await;
        assert_eq!(status, 400);
        assert_envelope(&body, Some(field));
    }
}

#[tokio::test]
async fn verbose_answers_carry_the_rendered_prompt_as_llama_server() {
    let factory = std::sync::Arc::new(common::FakeFactory::new("ok"));
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory.clone(), common::roomy_limits(), 1 << 20, true);
    state.options.verbose = true;
    let verbose = common::serve(state).await;
    let quiet = common::fake_server("ok", None, None).await;
    let chat = json!({"messages":[{"role":"user","content":"Hi"}]}).to_string();
    let (status, body) = post(&verbose, "/v1/chat/completions", chat.clone()).await;
    assert_eq!((status, body["__verbose"]["prompt"].as_str()), (200, Some("<user>Hi\n<assistant>")), "{body}");
    let (_, body) = post(&quiet, "/v1/chat/completions", chat).await;
    assert!(body.get("__verbose").is_none(), "only with --verbose: {body}");
    // Or when the request asks (llama-server's `verbose` field).
    let (_, body) = post(&quiet, "/v1/chat/completions", json!({"messages":[{"role":"user","content":"Hi"}],"verbose":true}).to_string()).await;
    assert_eq!(body["__verbose"]["prompt"], "<user>Hi\n<assistant>", "{body}");
}

#[tokio::test]
async fn vertex_predict_answers_each_instance_through_its_route() {
    let factory = std::sync::Arc::new(common::FakeFactory::new("ok"));
    let mut state = common::fake_state(vec![common::fake_spec("fake")], factory, common::roomy_limits(), 1 << 20, true);
    state.api_key = Some(std::sync::Arc::from("k"));
    let routes = vram_llm::config::VertexRoutes { predict: "/predict".into(), health: Some("/hz".into()) };
    let limits = vram_llm::server::conn::ConnLimits {
        max_connections: vram_llm::config::DEFAULT_MAX_CONNECTIONS,
        header_timeout: vram_llm::config::DEFAULT_HEADER_TIMEOUT,
        refusals: Default::default(),
    };
    let base = common::serve_app(vram_llm::api::vertex::wrap(vram_llm::api::router(state), &routes), limits).await;
    let call = |body: Value, key: Option<&'static str>| {
        let req = reqwest::Client::new().post(format!("{base}/predict")).body(body.to_string());
        async move { req.bearer_auth(key.unwrap_or("")).send().await.unwrap() }
    };
    let body = json!({"instances": [
        {"@requestFormat": "chatCompletions", "messages": [{"role": "user", "content": "Hi"}], "stream": true},
        {"@requestFormat": "/tokenize", "content": "ab"},
        {"@requestFormat": "nope"},
        7,
    ]});
    let resp = call(body.clone(), Some("k")).await;
    assert_eq!(resp.status(), 200);
    let p: Value = resp.json().await.unwrap();
    let p = p["predictions"].as_array().unwrap();
    assert_eq!((p.len(), p[0]["choices"][0]["message"]["content"].as_str()), (4, Some("ok")), "{p:?}");
    assert_eq!(p[1]["tokens"].as_array().map(Vec::len), Some(2), "{p:?}");
    assert!(p[2]["error"]["message"].as_str().unwrap().contains("nope"), "{p:?}");
    assert_eq!(p[3]["error"]["type"], "invalid_request_error");
    // Each instance is a request of its own: the API key still guards it.
    let p: Value = call(body, None).await.json().await.unwrap();
    assert_eq!(p["predictions"][0]["error"]["type"], "authentication_error", "{p}");
    let resp = call(json!({"no": "instances"}), Some("k")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(reqwest::get(format!("{base}/hz")).await.unwrap().status(), 200, "the health alias");
}
