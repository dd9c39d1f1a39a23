//! End-to-end tests of the `vram-llm` binary serving the real test model
//! (Gemma 3 270M Q4_K_M, fetched by `scripts/dev setup`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RealServer;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// Gemma's end-of-generation tokens (<eos> = 1, <end_of_turn> = 106), biased
/// away so that generations run exactly to max_tokens.
fn no_eog() -> Value {
    json!({"1": -100, "106": -100})
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// Reads an SSE response, returning each `data:` payload as it arrives.
async fn sse_payloads(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.expect("stream body");
    vram_llm::api::sse::parse_events(&text)
}

fn stream_text(events: &[String], pick: impl Fn(&Value) -> Option<String>) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| pick(&v))
        .collect()
}

#[tokio::test]
async fn serves_the_openai_api_with_the_real_model() {
    let server = RealServer::start(&["--ctx-size", "4096", "--parallel", "4"]).await;
    let base = server.base.as_str();

    // /v1/models carries meta for the loaded model.
    let models: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    let m = &models["data"][0];
    assert_eq!(m["id"], "gemma-3-270m-q4_k_m");
    assert_eq!(m["meta"]["n_ctx"], 1024);
    assert!(m["meta"]["n_params"].as_u64().unwrap() > 200_000_000);
    assert!(m["meta"]["size"].as_u64().unwrap() > 100_000_000);

    // Chat, not streamed, with the built-in Gemma 3 template.
    let (status, chat) = post(
        base,
        "/v1/chat/completions",
        json!({"model":"gemma-3-270m-q4_k_m","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"temperature":0}),
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    assert!(!chat["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{chat}");
    assert!(chat["usage"]["prompt_tokens"].as_u64().unwrap() > 5);

    // The template the server applied is Gemma 3's.
    let (_, applied) = post(base, "/apply-template", json!({"messages":[{"role":"user","content":"Hi"}]})).await;
    assert_eq!(applied["prompt"], "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");

    // Chat streamed equals chat not streamed (greedy), and starts with the role.
    let body = json!({"messages":[{"role":"user","content":"Write a haiku about snow 雪 ❄️."}],"max_tokens":24,"temperature":0,"logit_bias":no_eog()});
    let (_, plain) = post(base, "/v1/chat/completions", body.clone()).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = reqwest::Client::new().post(format!("{base}/v1/chat/completions")).json(&streamed).send().await.unwrap();
    let events = sse_payloads(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let text = stream_text(&events, |v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string));
    assert_eq!(text, plain["choices"][0]["message"]["content"].as_str().unwrap());
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 24);
    let finish: Value = serde_json::from_str(&events[events.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");

    // Text completions: max_tokens honoured exactly, greedy is deterministic.
    let body = json!({"prompt":"The capital of France is","max_tokens":12,"temperature":0,"logit_bias":no_eog()});
    let (_, a) = post(base, "/v1/completions", body.clone()).await;
    let (_, b) = post(base, "/v1/completions", body.clone()).await;
    assert_eq!(a["usage"]["completion_tokens"], 12, "{a}");
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let full = a["choices"][0]["text"].as_str().unwrap().to_string();

    // A stop string taken from the greedy output cuts it right before.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 3, "{full}");
    let stop = words[2];
    let mut with_stop = body.clone();
    with_stop["stop"] = json!([stop]);
    let (_, cut) = post(base, "/v1/completions", with_stop).await;
    let cut_text = cut["choices"][0]["text"].as_str().unwrap();
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert_eq!(cut_text, &full[..full.find(stop).unwrap()]);

    // Completions stream.
    let mut s = body.clone();
    s["stream"] = json!(true);
    let resp = reqwest::Client::new().post(format!("{base}/v1/completions")).json(&s).send().await.unwrap();
    let events = sse_payloads(resp).await;
    assert_eq!(stream_text(&events, |v| v["choices"][0]["text"].as_str().map(str::to_string)), full);

    // Tokenize / detokenize round trip.
    let (_, t) = post(base, "/tokenize", json!({"content":"Hello world, ünïcödé!"})).await;
    let tokens = t["tokens"].as_array().unwrap().clone();
    assert!(!tokens.is_empty());
    let (_, d) = post(base, "/detokenize", json!({"tokens": tokens})).await;
    assert_eq!(d["content"], "Hello world, ünïcödé!");
    let (status, bad) = post(base, "/detokenize", json!({"tokens": [999_999_999]})).await;
    assert_eq!(status, 400, "{bad}");
    // llama-server's logit_bias forms: a text key bans each of its tokens.
    let ask = |bias: Value| json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logit_bias": bias});
    let (_, free) = post(base, "/v1/completions", ask(json!({}))).await;
    let first = free["choices"][0]["text"].as_str().unwrap().to_string();
    let (status, banned) = post(base, "/v1/completions", ask(json!([[first.clone(), false]]))).await;
    assert_eq!(status, 200, "{banned}");
    assert!(!banned["choices"][0]["text"].as_str().unwrap().starts_with(&first), "{first:?} banned: {banned}");
    // llama-server's fields: special-token text parsed or not, pieces as
    // text where whole UTF-8, else as bytes (emoji span several tokens here).
    let count = |v: &serde_json::Value| v["tokens"].as_array().unwrap().len();
    let (_, special) = post(base, "/tokenize", json!({"content": "<start_of_turn>"})).await;
    let (_, plain) = post(base, "/tokenize", json!({"content": "<start_of_turn>", "parse_special": false})).await;
    assert_eq!((count(&special), count(&plain) > 1), (1, true), "{special} {plain}");
    let (_, pieces) = post(base, "/tokenize", json!({"content": "unicode 媽 and emoji 🤗", "with_pieces": true})).await;
    let mut bytes = Vec::new();
    for p in pieces["tokens"].as_array().unwrap() {
        match &p["piece"] {
            serde_json::Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
            serde_json::Value::Array(b) => bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8)),
            other => panic!("piece {other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), "unicode 媽 and emoji 🤗", "{pieces}");

    // A prompt longer than the context is a 400 naming the field.
    let (status, long) = post(base, "/v1/completions", json!({"prompt": "word ".repeat(2000)})).await;
    assert_eq!(status, 400, "{long}");
    assert_eq!(long["error"]["code"], "context_length_exceeded");
    assert_eq!(long["error"]["param"], "prompt");

    // /props reports the build and the template.
    let props: Value = reqwest::get(format!("{base}/props")).await.unwrap().json().await.unwrap();
    assert_eq!(props["chat_template_origin"], "builtin:gemma3");
    assert_eq!(props["total_slots"], 4);
}

#[tokio::test]
async fn two_concurrent_streams_both_progress() {
    let server = RealServer::start(&["--ctx-size", "1024", "--parallel", "2"]).await;
    let log: Arc<Mutex<Vec<(usize, &'static str)>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let url = format!("{}/v1/completions", server.base);
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"prompt": format!("Story number {i}:"), "max_tokens": 40, "temperature": 0,
                              "logit_bias": no_eog(), "stream": true});
            let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            let mut stream = resp.bytes_stream();
            let mut seen_text = false;
            while let Some(chunk) = stream.next().await {
                let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
                if !seen_text && chunk.contains("\"text\":\"") && !chunk.contains("\"text\":\"\"") {
                    seen_text = true;
                    log.lock().push((i, "first"));
                }
            }
            log.lock().push((i, "done"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().clone();
    let pos = |i, what| log.iter().position(|e| *e == (i, what)).unwrap_or_else(|| panic!("{log:?}"));
    let last_first = pos(0, "first").max(pos(1, "first"));
    let first_done = pos(0, "done").min(pos(1, "done"));
    assert!(last_first < first_done, "a stream finished before the other started: {log:?}");
}

#[tokio::test]
async fn disconnected_stream_frees_its_slot() {
    // One slot: if the abandoned stream kept it, the next request would wait
    // for ~4000 tokens (well over a minute here).
    let server = RealServer::start(&["--ctx-size", "4096", "--parallel", "1"]).await;
    let base = server.base.clone();
    let body = json!({"prompt":"Count:","max_tokens":4000,"temperature":0,"logit_bias":no_eog(),"stream":true});
    let resp = reqwest::Client::new().post(format!("{base}/v1/completions")).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.expect("a first chunk").unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);

    let next = tokio::time::timeout(
        Duration::from_secs(30),
        post(&base, "/v1/completions", json!({"prompt":"Hi","max_tokens":4,"logit_bias":no_eog()})),
    )
    .await
    .expect("the slot was not freed after the client disconnected");
    assert_eq!(next.0, 200, "{}", next.1);
    assert_eq!(next.1["usage"]["completion_tokens"], 4);
    let props: Value = reqwest::get(format!("{base}/props")).await.unwrap().json().await.unwrap();
    assert_eq!(props["busy_slots"], 0, "{props}");
}

/// A long prompt of numbered sentences (several hundred tokens).
fn long_prompt(topic: &str) -> String {
    (0..40).map(|i| format!("Sentence {i} is about {topic} number {i}.")).collect::<Vec<_>>().join(" ")
}

fn cached_tokens(body: &Value) -> u64 {
    body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or_else(|| panic!("no cached_tokens: {body}"))
}

#[tokio::test]
async fn an_unrelated_prompt_leaves_the_slot_holding_a_long_prefix_alone() {
    // Without the host KV cache, only the slot choice can keep the prefix.
    let server = RealServer::start(&["--ctx-size", "2048", "--parallel", "2", "--kv-cache-mib", "0"]).await;
    let base = server.base.as_str();
    let ask = |prompt: String| post(base, "/v1/completions", json!({"prompt": prompt, "max_tokens": 1, "temperature": 0}));
    let (status, first) = ask(long_prompt("the sky")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(cached_tokens(&first), 0);
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 300, "{first}");
    // /slots shows which slot holds the prompt.
    let slots: Value = reqwest::get(format!("{base}/slots")).await.unwrap().json().await.unwrap();
    let held: Vec<u64> = slots.as_array().unwrap().iter().map(|s| s["n_cached"].as_u64().unwrap()).collect();
    assert_eq!(held.len(), 2);
    assert!(held.iter().any(|&n| n >= prompt_tokens), "{slots}");
    let (_, unrelated) = ask(long_prompt("the price of apples")).await;
    let (_, again) = ask(long_prompt("the sky") + " One more sentence.").await;
    assert!(cached_tokens(&again) >= prompt_tokens - 1, "the prefix was overwritten: {again} after {unrelated}");
}

#[tokio::test]
async fn a_follow_up_that_reuses_the_cache_answers_as_a_fresh_prefill_does() {
    // Gemma 3's sliding-window layers keep only their window (no
    // --swa-full): reusing the prompt means cutting the generated tokens back
    // off where the window still covers, or to a checkpoint. The answer must
    // not change.
    let server = RealServer::start(&["--ctx-size", "1024", "--parallel", "1", "--kv-cache-mib", "0"]).await;
    let base = server.base.as_str();
    let ask = |prompt: String| post(base, "/v1/completions", json!({"prompt": prompt, "max_tokens": 12, "temperature": 0}));
    let prompt = long_prompt("the sky");
    let follow_up = prompt.clone() + " One more sentence.";
    let (_, first) = ask(prompt.clone()).await;
    let (_, reused) = ask(follow_up.clone()).await;
    assert!(cached_tokens(&reused) >= first["usage"]["prompt_tokens"].as_u64().unwrap(), "{reused}");
    let unrelated: String = (0..40).map(|i| format!("Item {i}: apples cost {i} coins.")).collect::<Vec<_>>().join(" ");
    ask(unrelated).await;
    let (_, fresh) = ask(follow_up).await;
    assert!(cached_tokens(&fresh) <= 1, "only the BOS token is shared: {fresh}");
    assert_eq!(reused["choices"][0]["text"], fresh["choices"][0]["text"], "reused {reused}\nfresh {fresh}");
}

#[tokio::test]
async fn chat_requests_sharing_a_long_system_prompt_resume_where_the_question_starts() {
    // One slot, no host cache: each long question moves Gemma 3's 512-token
    // window past the system prompt, so the next request can reuse it only
    // through the checkpoint the chat layer asked for where the last user
    // message's content starts.
    let server = RealServer::start(&["--ctx-size", "3072", "--parallel", "1", "--kv-cache-mib", "0"]).await;
    let base = server.base.as_str();
    let system = long_prompt("the sky") + " " + &long_prompt("the sea");
    let question = |topic: &str| long_prompt(topic) + " " + &long_prompt("the same");
    let ask = |question: String| {
        post(base, "/v1/chat/completions", json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}], "max_tokens": 2, "temperature": 0}))
    };
    let (status, first) = ask(format!("First question. {}", question("apples"))).await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = ask(format!("Second question. {}", question("pears"))).await;
    let (_, alone) = post(base, "/tokenize", json!({"content": system})).await;
    let system_tokens = alone["tokens"].as_array().unwrap().len() as u64;
    assert!(system_tokens > 700, "{alone}");
    assert!(first["usage"]["prompt_tokens"].as_u64().unwrap() > system_tokens + 520, "the question must move the window: {first}");
    let cached = cached_tokens(&second);
    assert!(cached >= system_tokens && cached < system_tokens + 16, "resumed after the system prompt: cached {cached} of {system_tokens}: {second}");
}

#[tokio::test]
async fn saved_caches_in_the_kv_cache_dir_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("vram-llm-kv-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["--ctx-size", "1024", "--parallel", "1", "--kv-cache-dir", dir.to_str().unwrap()];
    let prompt = long_prompt("the sky");
    let server = RealServer::start(&args).await;
    let (status, first) = post(&server.base, "/v1/completions", json!({"prompt": prompt.clone(), "max_tokens": 1, "temperature": 0})).await;
    assert_eq!(status, 200, "{first}");
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(server.stop(), "graceful shutdown");
    let saved = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "vlkv")).count();
    assert_eq!(saved, 1, "the slot's cache was saved at shutdown");

    let server = RealServer::start(&args).await;
    let follow_up = prompt + " One more sentence.";
    let (status, again) = post(&server.base, "/v1/completions", json!({"prompt": follow_up, "max_tokens": 1, "temperature": 0})).await;
    assert_eq!(status, 200, "{again}");
    assert!(cached_tokens(&again) >= prompt_tokens - 1, "restored from the directory: {again}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn every_request_is_one_log_line_without_colour_codes() {
    let log = std::env::temp_dir().join(format!("vram-llm-request-log-{}.log", std::process::id()));
    let server = RealServer::start_logging(&["--ctx-size", "256", "--parallel", "1"], &log).await;
    let (status, body) = post(&server.base, "/v1/completions", json!({"prompt": "Hello", "max_tokens": 2})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(&server.base, "/v1/completions", json!({"prompt": "Hello", "temperature": -1})).await;
    assert_eq!(status, 400);
    assert!(server.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(!text.contains('\x1b'), "ANSI codes in a log file:\n{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("vram_llm::request")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for field in ["method=POST", "path=/v1/completions", "status=200", "prompt_tokens=", "completion_tokens=2", "ttft_ms=", "total_ms="] {
        assert!(lines[0].contains(field), "{field} missing: {}", lines[0]);
    }
    assert!(lines[1].contains("status=400"), "{}", lines[1]);
}

#[tokio::test]
async fn a_stream_cut_by_shutdown_ends_with_an_error_event_and_done() {
    let server = RealServer::start(&["--ctx-size", "4096", "--parallel", "1", "--shutdown-grace", "0s"]).await;
    let body = json!({"prompt":"Count:","max_tokens":4000,"temperature":0,"logit_bias":no_eog(),"stream":true});
    let resp = reqwest::Client::new().post(format!("{}/v1/completions", server.base)).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.expect("a first chunk").unwrap().to_vec()).unwrap();
    server.terminate();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream ends cleanly")));
    }
    let events = vram_llm::api::sse::parse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "model_unavailable", "{error}");
    assert!(server.wait(), "exited successfully");
}

#[tokio::test]
async fn engine_knobs_load_and_serve() {
    // Quantized KV, explicit flash attention and micro-batch, batch threads,
    // weights read instead of mapped: llama.cpp accepts them and answers.
    let args = ["--ctx-size", "512", "--parallel", "1", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on",
        "--ubatch-size", "64", "--threads-batch", "1", "--no-mmap"];
    let server = RealServer::start(&args).await;
    let (status, body) = post(&server.base, "/v1/completions", json!({"prompt": "The capital of France is", "max_tokens": 4, "logit_bias": no_eog()})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn context_shift_lets_a_generation_run_past_a_full_slot() {
    // A 64-token slot: without --context-shift a 150-token request ends at the
    // slot's end; with it, the slot drops its older half and goes on, and the
    // shifted slot is not offered as a prefix cache afterwards.
    let prompt = "Once upon a time, in a land far away,";
    let ask = |max: u32| json!({"prompt": prompt, "max_tokens": max, "temperature": 0, "logit_bias": no_eog()});
    let plain = RealServer::start(&["--ctx-size", "64", "--parallel", "1"]).await;
    let (status, body) = post(&plain.base, "/v1/completions", ask(150)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let filled = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(filled <= 64, "{body}");
    drop(plain);
    let shifting = RealServer::start(&["--ctx-size", "64", "--parallel", "1", "--context-shift"]).await;
    let (status, body) = post(&shifting.base, "/v1/completions", ask(150)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 150, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let (status, body) = post(&shifting.base, "/v1/completions", ask(4)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cached_tokens(&body), 0, "a shifted slot is not a prefix cache: {body}");
    assert_eq!(body["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn a_model_file_truncated_in_place_mid_stream_fails_cleanly_and_reloads_once_restored() {
    // The weights are the mapped file: truncating it in place (as `cp` over
    // it does) made the next read a SIGBUS that killed the whole server.
    let dir = std::env::temp_dir().join(format!("vram-llm-truncate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("model.gguf");
    let original = std::fs::read(common::test_model()).unwrap();
    std::fs::write(&copy, &original).unwrap();
    let model = copy.display().to_string();
    let server = RealServer::start_with(&["--model", &model, "--ctx-size", "4096", "--parallel", "1"]).await;

    let body = json!({"prompt":"Count:","max_tokens":4000,"temperature":0,"logit_bias":no_eog(),"stream":true});
    let resp = reqwest::Client::new().post(format!("{}/v1/completions", server.base)).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.expect("a first chunk").unwrap().to_vec()).unwrap();
    std::fs::OpenOptions::new().write(true).open(&copy).unwrap().set_len(original.len() as u64 / 2).unwrap();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream ends cleanly")));
    }
    let events = vram_llm::api::sse::parse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("truncated or overwritten"), "{error}");
    assert_eq!(reqwest::get(format!("{}/health", server.base)).await.unwrap().status(), 200, "the server lives");

    // Put the file back (in place again); the model loads from it anew.
    std::fs::write(&copy, &original).unwrap();
    let again = json!({"prompt":"The sky is","max_tokens":4,"temperature":0});
    let mut answers = Vec::new();
    for _ in 0..120 {
        let (status, answer) = post(&server.base, "/v1/completions", again.clone()).await;
        if status == 200 {
            break;
        }
        // While the first load after the restore backs off from a failure.
        assert_eq!(status, 503, "{answer}");
        answers.push(answer);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, answer) = post(&server.base, "/v1/completions", again).await;
    assert_eq!(status, 200, "{answer} after {answers:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
