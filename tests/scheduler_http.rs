//! The scheduler behind the HTTP API, with fake engines: swaps under a
//! one-model budget, 429 on a full queue, failed loads, the admin API.

mod common;

use std::sync::Arc;

use common::{fake_spec, fake_state, roomy_limits, serve, FakeFactory};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use vram_llm::scheduler::{ModelView, Scheduler, Snapshot};

async fn post(base: &str, path: &str, body: Value, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("{base}{path}")).json(&body);
    if let Some(t) = token {
        req = req.header("X-Admin-Token", t);
    }
    req.send().await.expect("send")
}

async fn admin_status(base: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/admin/status"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn one_model_budget() -> vram_llm::scheduler::SchedLimits {
    let mut limits = roomy_limits();
    limits.budget_bytes = 150 << 20; // each fake model counts 100 MiB
    limits
}

#[tokio::test]
async fn three_models_with_a_one_model_budget_all_answer_and_swap() {
    let specs = vec![fake_spec("a"), fake_spec("b"), fake_spec("c")];
    let mut state = fake_state(specs, Arc::new(FakeFactory::new("hi")), one_model_budget(), 100 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let base = serve(state).await;
    for model in ["a", "b", "c", "a"] {
        let resp = post(&base, "/v1/completions", json!({"model": model, "prompt": "x"}), None).await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["model"], model);
    }
    let status = admin_status(&base).await;
    assert_eq!(status["swaps"], 3, "{status}");
    let states: Vec<&str> = status["models"].as_array().unwrap().iter().map(|m| m["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["loaded", "unloaded", "unloaded"]);
    assert_eq!(status["models"][0]["load_count"], 2);
    let models: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][1]["state"], "unloaded");
}

/// Waits until a snapshot the scheduler publishes shows `check` true for
/// model 0. The timeout only turns a hang into a failure.
async fn wait_for(sched: &Scheduler, what: &str, check: impl Fn(&ModelView) -> bool) {
    wait_until(sched, what, |s| s.models.first().is_some_and(&check)).await;
}

/// Waits until a published snapshot satisfies `check`.
async fn wait_until(sched: &Scheduler, what: &str, check: impl Fn(&Snapshot) -> bool) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(120), sched.wait_for(check)).await;
    assert!(matches!(waited, Ok(Ok(_))), "the scheduler never reached: {what}");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let mut spec = fake_spec("a");
    spec.parallel = 1;
    let factory = FakeFactory { gate: Some(gate.clone()), ..FakeFactory::new("ok") };
    let mut limits = roomy_limits();
    limits.max_queue = 1;
    let mut state = fake_state(vec![spec], Arc::new(factory), limits, 1 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let sched = state.scheduler.clone();
    let base = serve(state).await;

    let send = |prompt: &'static str| {
        let base = base.clone();
        tokio::spawn(async move { post(&base, "/v1/completions", json!({"prompt": prompt}), None).await.status() })
    };
    let first = send("1");
    wait_for(&sched, "the first request to hold the only slot", |m| m.in_flight == 1).await;
    let second = send("2");
    wait_for(&sched, "the second request to queue", |m| m.queue_depth == 1).await;

    let third = post(&base, "/v1/completions", json!({"prompt": "3"}), None).await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    gate.add_permits(2);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
}

#[tokio::test]
async fn a_failed_load_is_a_503_naming_the_reason_and_the_model_shows_failed() {
    let factory = FakeFactory { failing: vec!["a".into()], ..FakeFactory::new("ok") };
    let base = serve(fake_state(vec![fake_spec("a")], Arc::new(factory), roomy_limits(), 1 << 20, true)).await;
    let resp = post(&base, "/v1/completions", json!({"prompt": "x"}), None).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("corrupt file"), "{message}");
    let models: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["state"], "failed");
    // Within the backoff a new request fails fast, saying when it retries.
    let again = post(&base, "/v1/completions", json!({"prompt": "x"}), None).await;
    assert_eq!(again.status(), 503);
    let body: Value = again.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("retry"), "{body}");
    // Not a preloaded model: the server itself stays healthy.
    assert_eq!(reqwest::get(format!("{base}/health")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn health_is_503_while_a_preloaded_model_is_failed() {
    let factory = FakeFactory { failing: vec!["a".into()], ..FakeFactory::new("ok") };
    let spec = vram_llm::types::ModelSpec { preload: true, ..fake_spec("a") };
    let base = serve(fake_state(vec![spec, fake_spec("b")], Arc::new(factory), roomy_limits(), 1 << 20, true)).await;
    assert_eq!(post(&base, "/v1/completions", json!({"model": "a", "prompt": "x"}), None).await.status(), 503);
    let resp = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["models"]["a"].as_str()), (Some("error"), Some("failed")), "{body}");
}

#[tokio::test]
async fn admin_api_needs_its_token_and_loads_and_unloads() {
    // Disabled without a token: 404.
    let base = serve(fake_state(vec![fake_spec("a")], Arc::new(FakeFactory::new("ok")), roomy_limits(), 1 << 20, true)).await;
    assert_eq!(reqwest::get(format!("{base}/admin/status")).await.unwrap().status(), 404);

    let mut state = fake_state(vec![fake_spec("a")], Arc::new(FakeFactory::new("ok")), roomy_limits(), 1 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let base = serve(state).await;
    assert_eq!(reqwest::get(format!("{base}/admin/status")).await.unwrap().status(), 401);
    let wrong = post(&base, "/admin/models/load", json!({"model": "a"}), Some("nope")).await;
    assert_eq!(wrong.status(), 401);

    let loaded = post(&base, "/admin/models/load", json!({"model": "a"}), Some("tok")).await;
    assert_eq!(loaded.status(), 200);
    assert_eq!(admin_status(&base).await["models"][0]["state"], "loaded");
    let unloaded = post(&base, "/admin/models/unload", json!({"model": "a-alias"}), Some("tok")).await;
    assert_eq!(unloaded.status(), 200);
    let body: Value = unloaded.json().await.unwrap();
    assert_eq!(body["state"], "unloaded");
    let missing = post(&base, "/admin/models/load", json!({"model": "zzz"}), Some("tok")).await;
    assert_eq!(missing.status(), 404);
}

/// llama-server's router: `/models/load` and `/models/unload` start the work
/// and answer `{"success": true}`; `status.value` in `/models` follows it;
/// with `--no-models-autoload` a request for an unloaded model is a 400.
#[tokio::test]
async fn router_endpoints_answer_as_llama_server_and_no_autoload_refuses_unloaded_models() {
    let mut limits = roomy_limits();
    limits.autoload = false;
    let mut state = fake_state(vec![fake_spec("org/a:Q8_0")], Arc::new(FakeFactory::new("ok")), limits, 1 << 20, true);
    state.api_key = Some(Arc::from("key"));
    let sched = state.scheduler.clone();
    let base = serve(state).await;
    let client = reqwest::Client::new();
    let call = |path: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth("key").json(&body).send();
    let status = || async {
        let models: Value = client.get(format!("{base}/models")).bearer_auth("key").send().await.unwrap().json().await.unwrap();
        models["data"][0]["status"]["value"].as_str().unwrap().to_string()
    };
    let chat = json!({"model": "org/a:Q8_0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    // Guarded by the API key, as every route.
    let anonymous = client.post(format!("{base}/models/load")).json(&json!({"model": "org/a:Q8_0"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // Not loaded and no autoload: 400 naming the way out.
    assert_eq!(status().await, "unloaded");
    let refused = call("/v1/chat/completions", chat.clone()).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("/models/load"), "{body}");
    assert_eq!(sched.snapshot().models[0].load_count, 0, "a refused request loads nothing");

    let loading = call("/models/load", json!({"model": "org/a:Q8_0"})).await.unwrap();
    assert_eq!(loading.status(), 200);
    assert_eq!(loading.json::<Value>().await.unwrap(), json!({"success": true}));
    wait_for(&sched, "loaded", |m| m.state == "loaded").await;
    assert_eq!(status().await, "loaded");
    assert_eq!(call("/models/load", json!({"model": "org/a:Q8_0"})).await.unwrap().status(), 400, "already loaded");
    assert_eq!(call("/v1/chat/completions", chat.clone()).await.unwrap().status(), 200);
    assert_eq!(call("/models/load", json!({"model": "zzz"})).await.unwrap().status(), 404);

    let unloading = call("/models/unload", json!({"model": "org/a:Q8_0"})).await.unwrap();
    assert_eq!(unloading.json::<Value>().await.unwrap(), json!({"success": true}));
    wait_for(&sched, "unloaded", |m| m.state != "loaded" && m.state != "unloading").await;
    assert_eq!(status().await, "unloaded");
    assert_eq!(call("/models/unload", json!({"model": "org/a:Q8_0"})).await.unwrap().status(), 400, "not loaded");
    assert_eq!(call("/v1/chat/completions", chat).await.unwrap().status(), 400, "unloaded again: refused again");
}

#[tokio::test]
async fn notify_swaps_streams_load_progress_before_the_answer() {
    use futures_util::StreamExt;
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let factory = FakeFactory { load_gate: Some(gate.clone()), ..FakeFactory::new("done") };
    let mut state = fake_state(vec![fake_spec("fake")], Arc::new(factory), roomy_limits(), 1 << 20, true);
    state.notify_swaps = true;
    let base = serve(state).await;
    let resp = post(&base, "/v1/chat/completions", json!({"messages":[{"role":"user","content":"Hi"}],"stream":true}), None).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    // The load is held at 50%: its progress must arrive before any answer.
    while !text.contains("loading model fake: 50%") {
        let chunk = stream.next().await.expect("stream ended early").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("\"content\":\"d"), "no answer before the load finished: {text}");
    {
        let (open, cond) = &*gate;
        *open.lock().unwrap() = true;
        cond.notify_all();
    }
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = vram_llm::api::sse::parse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let answer: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(answer, "done");
    let first_content = chunks.iter().position(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).unwrap();
    let last_progress = chunks.iter().rposition(|c| c["choices"][0]["delta"]["reasoning_content"].is_string()).unwrap();
    assert!(last_progress < first_content);
}

#[tokio::test]
async fn notify_swaps_still_rejects_bad_input_with_a_400() {
    let mut state = fake_state(vec![fake_spec("fake")], Arc::new(FakeFactory::new("x")), roomy_limits(), 1 << 20, true);
    state.notify_swaps = true;
    let base = serve(state).await;
    let resp = post(&base, "/v1/chat/completions", json!({"messages":[],"stream":true}), None).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn reload_adds_removes_and_changes_models_without_dropping_in_flight_work() {
    use vram_llm::cli::{ModelSources, ServerFlags};
    let dir = std::env::temp_dir().join(format!("vram-llm-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["a.gguf", "b.gguf", "c.gguf"] {
        std::fs::write(dir.join(f), b"not really a model").unwrap();
    }
    let config = dir.join("vram-llm.toml");
    let model = |name: &str, extra: &str| format!("[[models]]\nname = \"{name}\"\npath = \"{name}.gguf\"\n{extra}\n");
    std::fs::write(&config, model("a", "") + &model("b", "")).unwrap();
    let sources = ModelSources { config: Some(config.clone()), ..Default::default() };
    let loaded = vram_llm::config::Config::load(&sources, &ServerFlags::default()).unwrap();

    let gate = Arc::new(Semaphore::new(0));
    let factory = FakeFactory { gate: Some(gate.clone()), ..FakeFactory::new("ok") };
    let mut state = fake_state(loaded.models, Arc::new(factory), roomy_limits(), 1 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    state.notify_swaps = true;
    state.reload_from = Some(Arc::new(vram_llm::api::ReloadSource {
        sources,
        flags: ServerFlags::default(),
        placement: Default::default(),
    }));
    let sched = state.scheduler.clone();
    let base = serve(state).await;

    // A request on `a` is in flight (held at the gate) while `a` is removed.
    let in_flight = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/completions", json!({"model": "a", "prompt": "x"}), None).await.status() }
    });
    wait_for(&sched, "a's request to be in flight", |m| m.in_flight == 1).await;
    std::fs::write(&config, model("b", "ctx_size = 32") + &model("c", "")).unwrap();
    let resp = post(&base, "/admin/reload", json!({}), Some("tok")).await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["added"], json!(["c"]), "{report}");
    assert_eq!(report["removed"], json!(["a"]));
    assert_eq!(report["changed"], json!(["b"]));

    let models: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["b", "c"]);
    let gone = post(&base, "/v1/completions", json!({"model": "a", "prompt": "x"}), None).await;
    assert_eq!(gone.status(), 404);

    gate.add_permits(100);
    assert_eq!(in_flight.await.unwrap(), 200, "the in-flight request on the removed model finished");
    // A streamed chat that waits for the added model's first load follows its
    // progress in the scheduler's snapshot (one list: no index it lacks).
    let chat = json!({"model": "c", "messages": [{"role": "user", "content": "Hi"}], "stream": true});
    let streamed = post(&base, "/v1/chat/completions", chat, None).await;
    assert_eq!(streamed.status(), 200);
    let events = vram_llm::api::sse::parse_events(&streamed.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(String::from))
        .collect();
    assert_eq!(text, "ok", "{events:?}");
    for m in ["b", "c"] {
        let resp = post(&base, "/v1/completions", json!({"model": m, "prompt": "x"}), None).await;
        assert_eq!(resp.status(), 200, "{m}");
    }
    // A bad config is refused and changes nothing.
    std::fs::write(&config, "[[models]]\nname = \"z\"\npath = \"missing.gguf\"\n").unwrap();
    let bad = post(&base, "/admin/reload", json!({}), Some("tok")).await;
    assert_eq!(bad.status(), 400);
    let ok = post(&base, "/v1/completions", json!({"model": "c", "prompt": "x"}), None).await;
    assert_eq!(ok.status(), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two GPUs with 20 000 MiB free each.
fn two_gpus() -> vram_llm::gpu::StaticInventory {
    vram_llm::gpu::StaticInventory::from_json_str(
        r#"[{"index": 0, "name": "GPU A", "total_mib": 24576, "free_mib": 20000},
            {"index": 1, "name": "GPU B", "total_mib": 24576, "free_mib": 20000}]"#,
    )
    .unwrap()
}

/// Three fake models of 15 000 MiB (10 layers of 1 500 MiB) on a machine
/// with two GPUs of 20 000 MiB free: one model fits per GPU.
fn on_two_gpus(factory: Arc<FakeFactory>, gpus: Arc<dyn vram_llm::gpu::GpuInventory>) -> vram_llm::api::AppState {
    use vram_llm::gpu::{ModelFootprint, PlacementOptions};
    use vram_llm::scheduler::{GpuDemand, ModelLimits};
    let specs = vec![fake_spec("a"), fake_spec("b"), fake_spec("c")];
    let limits = specs
        .iter()
        .map(|s| ModelLimits {
            name: s.id.clone(),
            bytes: 15_000 << 20,
            slots: s.parallel,
            exclusive: false,
            ttl: None,
            gpu: Some(GpuDemand {
                footprint: ModelFootprint {
                    layer_bytes: vec![1500 << 20; 10],
                    output_bytes: 0, input_bytes: 0,
                    kv_bytes_per_layer: vec![0; 10],
                    compute_bytes: 0,
                },
                options: PlacementOptions::default(),
            }),
        })
        .collect();
    let mut sched = roomy_limits();
    sched.budget_bytes = 64 << 20; // host memory: fully offloaded models hold none
    let mut state = common::state_with(specs, limits, factory, sched, gpus, true);
    state.admin_token = Some(Arc::from("tok"));
    state
}

#[tokio::test]
async fn models_on_different_gpus_stay_loaded_together_and_status_shows_where() {
    let factory = Arc::new(FakeFactory::new("ok"));
    let base = serve(on_two_gpus(factory.clone(), Arc::new(two_gpus()))).await;
    for model in ["a", "b"] {
        let resp = post(&base, "/v1/completions", json!({"model": model, "prompt": "x"}), None).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let status = admin_status(&base).await;
    assert_eq!(status["swaps"], 0, "{status}");
    let m = &status["models"];
    assert_eq!((m[0]["state"].as_str(), m[1]["state"].as_str()), (Some("loaded"), Some("loaded")));
    assert_eq!(m[0]["placement"]["devices"], json!([0]));
    assert_eq!(m[1]["placement"]["devices"], json!([1]));
    assert_eq!(m[1]["placement"]["kind"], "single_gpu");
    assert_eq!(m[1]["holding"]["gpu_mib"], json!([{"index": 1, "mib": 15000}]));
    assert_eq!(status["gpus"][0]["models_mib"], 15000);
    assert_eq!(status["gpus"][1]["name"], "GPU B");
    assert_eq!(status["gpus"][1]["free_mib"], 20000);

    // The third model evicts the least recently used one and takes its GPU.
    let resp = post(&base, "/v1/completions", json!({"model": "c", "prompt": "x"}), None).await;
    assert_eq!(resp.status(), 200);
    let status = admin_status(&base).await;
    let states: Vec<&str> = status["models"].as_array().unwrap().iter().map(|m| m["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["unloaded", "loaded", "loaded"], "{status}");
    assert_eq!(status["models"][0]["placement"], Value::Null, "an unloaded model has no placement");
    assert_eq!(status["swaps"], 1);

    // The engine was loaded exactly where the scheduler placed it.
    let loads: Vec<(String, Vec<u32>)> = factory
        .placements
        .lock()
        .unwrap()
        .iter()
        .map(|(id, p)| (id.clone(), p.as_ref().expect("a GPU plan").devices.clone()))
        .collect();
    assert_eq!(loads, vec![("a".into(), vec![0]), ("b".into(), vec![1]), ("c".into(), vec![0])]);

    // /props of a loaded model shows the inventory and its placement.
    let props: Value = reqwest::get(format!("{base}/props?model=c")).await.unwrap().json().await.unwrap();
    assert_eq!(props["gpus"].as_array().map(Vec::len), Some(2));
    assert_eq!(props["placement"]["n_layers"], 10);
    assert_eq!(props["loaded"], true);
    // A monitoring poll of the unloaded model (also the default one) loads nothing.
    for path in ["/props", "/props?model=a"] {
        let props: Value = reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap();
        assert_eq!((props["model_alias"].as_str(), &props["loaded"], &props["placement"]), (Some("a"), &json!(false), &Value::Null), "{props}");
    }
    assert_eq!(factory.placements.lock().unwrap().len(), 3, "no load");
    let unknown = reqwest::get(format!("{base}/props?model=zzz")).await.unwrap();
    assert_eq!(unknown.status(), 404);

    // /metrics: the swap and the loads were counted (the registry is the
    // process's, shared with other tests: at least), the GPUs are there.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("vram_llm_swaps_total ") >= 1.0);
    assert!(value("vram_llm_swap_phase_seconds_count{phase=\"context\"}") >= 1.0);
    assert!(value("vram_llm_model_loads_total{model=\"c\",result=\"ok\"}") >= 1.0);
    assert_eq!(value("vram_llm_model_loaded{model=\"a\"}"), 0.0);
    assert!(value("vram_llm_gpu_memory_bytes{gpu=\"1\",kind=\"total\"}") > 0.0);
}

/// NVML stand-in: live free memory that fake loads take and give back, plus
/// the 300 MiB a CUDA context keeps on each GPU once a model used it.
struct FakeNvml {
    gpus: std::sync::Mutex<Vec<vram_llm::gpu::GpuInfo>>,
    contexts: std::sync::Mutex<Vec<u32>>,
}

impl vram_llm::gpu::GpuInventory for FakeNvml {
    fn gpus(&self) -> Result<Vec<vram_llm::gpu::GpuInfo>, vram_llm::gpu::GpuError> {
        Ok(self.gpus.lock().unwrap().clone())
    }
    // The default `counts_our_usage() == true`: free figures include our loads.
}

impl FakeNvml {
    fn take(&self, index: u32, mib: i64) {
        let mut gpus = self.gpus.lock().unwrap();
        let g = gpus.iter_mut().find(|g| g.index == index).unwrap();
        g.free_mib = (g.free_mib as i64 - mib) as u64;
        g.used_mib = (g.used_mib as i64 + mib) as u64;
    }
}

struct GiveBack(Arc<FakeNvml>, Vec<(u32, u64)>);

impl Drop for GiveBack {
    fn drop(&mut self) {
        for (index, mib) in &self.1 {
            self.0.take(*index, -(*mib as i64));
        }
    }
}

#[tokio::test]
async fn with_live_nvml_figures_our_models_are_added_back_and_measured() {
    let nvml = Arc::new(FakeNvml {
        gpus: std::sync::Mutex::new(vram_llm::gpu::GpuInventory::gpus(&two_gpus()).unwrap()),
        contexts: Default::default(),
    });
    let on_load: common::OnLoad = Arc::new({
        let nvml = nvml.clone();
        move |placement| {
            let mut held = Vec::new();
            for d in placement.map(|p| p.mib_per_device.clone()).unwrap_or_default() {
                let mut contexts = nvml.contexts.lock().unwrap();
                if !contexts.contains(&d.index) {
                    contexts.push(d.index);
                    nvml.take(d.index, 300);
                }
                nvml.take(d.index, d.mib as i64);
                held.push((d.index, d.mib));
            }
            Box::new(GiveBack(nvml.clone(), held))
        }
    });
    let factory = Arc::new(FakeFactory { on_load: Some(on_load), ..FakeFactory::new("ok") });
    let base = serve(on_two_gpus(factory.clone(), nvml.clone())).await;

    for model in ["a", "b", "c"] {
        let resp = post(&base, "/v1/completions", json!({"model": model, "prompt": "x"}), None).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let loads: Vec<(String, Vec<u32>)> =
        factory.placements.lock().unwrap().iter().map(|(id, p)| (id.clone(), p.as_ref().unwrap().devices.clone())).collect();
    // b goes to GPU 1 although NVML shows GPU 0 with only 4 700 MiB free:
    // a's 15 000 MiB count as ours. c takes a's GPU after a is evicted.
    assert_eq!(loads, vec![("a".into(), vec![0]), ("b".into(), vec![1]), ("c".into(), vec![0])]);
    let status = admin_status(&base).await;
    assert_eq!(status["swaps"], 1, "{status}");
    // Without adding a's 15 000 MiB back to NVML's 4 700, c would have
    // evicted b as well. The measured drop for b on GPU 1 was 15 300 MiB
    // (its share and the CUDA context, which stays after an unload): what b
    // holds is capped at its plan.
    assert_eq!(status["models"][1]["holding"]["gpu_mib"], json!([{"index": 1, "mib": 15000}]));
    assert_eq!(status["models"][2]["holding"]["gpu_mib"], json!([{"index": 0, "mib": 15000}]));
    assert_eq!(status["gpus"][0]["free_mib"], 20000 - 300 - 15000, "live NVML figure");
    assert_eq!(status["gpus"][0]["models_mib"], 15000);
}

/// One fake model `a` whose generations wait at the returned gate, with the
/// admin API on: the gate, the scheduler and the base URL.
async fn gated_server() -> (Arc<Semaphore>, Scheduler, String) {
    let gate = Arc::new(Semaphore::new(0));
    let factory = FakeFactory { gate: Some(gate.clone()), ..FakeFactory::new("ok") };
    let mut state = fake_state(vec![fake_spec("a")], Arc::new(factory), roomy_limits(), 1 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let sched = state.scheduler.clone();
    (gate, sched, serve(state).await)
}

#[tokio::test]
async fn a_non_streamed_request_whose_client_goes_away_frees_its_slot() {
    use std::io::Write;
    let (_gate, sched, base) = gated_server().await;
    let body = r#"{"prompt":"x"}"#;
    // A plain socket (writing a few bytes into the kernel buffer never blocks).
    let mut socket = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).unwrap();
    wait_for(&sched, "the request to hold a slot", |m| m.in_flight == 1).await;
    drop(socket); // the client hangs up before the (gated) answer
    wait_for(&sched, "the slot to be freed", |m| m.in_flight == 0).await;
}

#[tokio::test]
async fn a_bad_request_is_refused_before_any_load_or_swap() {
    let factory = Arc::new(FakeFactory::new("hi"));
    let mut state = fake_state(vec![fake_spec("a"), fake_spec("b")], factory.clone(), one_model_budget(), 100 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let base = serve(state).await;
    assert_eq!(post(&base, "/v1/completions", json!({"model": "a", "prompt": "x"}), None).await.status(), 200);
    let bad = [
        ("/v1/completions", json!({"model": "b", "prompt": "x", "temperature": 500})),
        ("/v1/completions", json!({"model": "b", "prompt": "x", "max_tokens": 0})),
        ("/v1/chat/completions", json!({"model": "b", "messages": [{"role": "user", "content": "x"}], "top_p": 7})),
        ("/v1/chat/completions", json!({"model": "b", "messages": []})),
    ];
    for (path, body) in bad {
        let resp = post(&base, path, body.clone(), None).await;
        assert_eq!(resp.status(), 400, "{body}");
    }
    let status = admin_status(&base).await;
    assert_eq!(status["swaps"], 0, "{status}");
    assert_eq!((status["models"][0]["state"].as_str(), status["models"][1]["state"].as_str()), (Some("loaded"), Some("unloaded")));
    let loads: Vec<String> = factory.placements.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(loads, vec!["a"]);
}

#[tokio::test]
async fn a_forced_unload_ends_in_flight_requests_with_a_503_not_a_500() {
    let (_gate, sched, base) = gated_server().await;
    let in_flight = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/completions", json!({"prompt": "x"}), None).await }
    });
    wait_for(&sched, "the request to be in flight", |m| m.in_flight == 1).await;
    let unloaded = post(&base, "/admin/models/unload", json!({"model": "a", "force": true}), Some("tok")).await;
    assert_eq!(unloaded.status(), 200);
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_unavailable", "{body}");
    assert_eq!(admin_status(&base).await["models"][0]["state"], "unloaded");
}

/// Lingering (an idle model is kept for as long as it took to load) runs on
/// the scheduler's clock: with loads of 5 s on a manual clock, the outcome is
/// the same however long the machine really takes.
#[tokio::test]
async fn an_idle_model_lingers_for_its_load_time_on_the_schedulers_clock() {
    let factory = Arc::new(FakeFactory { load_time: std::time::Duration::from_secs(5), ..FakeFactory::new("hi") });
    let mut limits = one_model_budget();
    limits.max_wait = std::time::Duration::from_secs(60);
    let mut state = fake_state(vec![fake_spec("a"), fake_spec("b")], factory.clone(), limits, 100 << 20, true);
    state.admin_token = Some(Arc::from("tok"));
    let sched = state.scheduler.clone();
    let base = serve(state).await;
    assert_eq!(post(&base, "/v1/completions", json!({"model": "a", "prompt": "x"}), None).await.status(), 200);
    let b = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/completions", json!({"model": "b", "prompt": "x"}), None).await.status() }
    });
    wait_until(&sched, "b's request to queue", |s| s.models[1].queue_depth == 1).await;
    // a was used 0 s ago and took 5 s to load: it stays, b waits.
    let snapshot = sched.synced().await.unwrap();
    assert_eq!((snapshot.models[0].state, snapshot.models[1].state), ("loaded", "unloaded"));
    factory.clock.advance(std::time::Duration::from_secs(4));
    assert_eq!(sched.synced().await.unwrap().models[0].state, "loaded", "still within a's load time");
    factory.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(b.await.unwrap(), 200);
    let status = admin_status(&base).await;
    assert_eq!(status["swaps"], 1, "{status}");
    assert_eq!(status["models"][1]["last_load_ms"], 5000);
}
