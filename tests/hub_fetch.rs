//! A model registered from the hub and not downloaded yet, with fake
//! engines and a fake fetcher: the scheduler downloads it on its first
//! request, every request meanwhile waits for that one download, other
//! models keep serving, and a failed download fails its waiters only.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{fake_spec, fake_state, roomy_limits, serve, FakeFactory};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use vram_llm::scheduler::state::ModelLimits;
use vram_llm::scheduler::{FetchFuture, Fetcher, Registration, Scheduler};
use vram_llm::types::{HubSource, ModelSpec, Progress};

/// Each fetch reports 50 %, then waits for a permit; the first `failures`
/// fetches fail after it.
struct FakeFetcher {
    calls: AtomicUsize,
    gate: Arc<Semaphore>,
    failures: usize,
}

impl Fetcher for FakeFetcher {
    fn fetch(&self, spec: Arc<ModelSpec>, progress: Progress) -> FetchFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let (gate, fails) = (self.gate.clone(), call < self.failures);
        Box::pin(async move {
            progress(0.5);
            gate.acquire().await.expect("gate").forget();
            if fails {
                return Err("the hub is down".into());
            }
            let mut on_disk = (*spec).clone();
            on_disk.fetch = None;
            on_disk.path = "/fake/downloaded.gguf".into();
            let limits = ModelLimits { name: on_disk.id.clone(), bytes: 1 << 20, slots: on_disk.parallel, exclusive: false, ttl: None, gpu: None };
            Ok(Registration { spec: on_disk, limits, n_vocab: None })
        })
    }
}

/// A server with `local` on disk and `hubbed` on the hub only.
async fn server(failures: usize) -> (String, Arc<FakeFetcher>, Scheduler) {
    server_with(failures, false).await
}

async fn server_with(failures: usize, notify_swaps: bool) -> (String, Arc<FakeFetcher>, Scheduler) {
    let hubbed = ModelSpec { fetch: Some(HubSource { repo: "org/hubbed-GGUF:Q4_K_M".into(), file: None }), ..fake_spec("hubbed") };
    let specs = vec![fake_spec("local"), hubbed];
    let factory = Arc::new(FakeFactory::new("hello"));
    let mut state = fake_state(specs.clone(), factory.clone(), roomy_limits(), 1 << 20, true);
    let fetcher = Arc::new(FakeFetcher { calls: AtomicUsize::new(0), gate: Arc::new(Semaphore::new(0)), failures });
    let models = specs
        .into_iter()
        .map(|spec| {
            let bytes = if spec.fetch.is_some() { 0 } else { 1 << 20 };
            let limits = ModelLimits { name: spec.id.clone(), bytes, slots: spec.parallel, exclusive: false, ttl: None, gpu: None };
            Registration { spec, limits, n_vocab: None }
        })
        .collect();
    let clock = factory.clock.clone();
    let gpus = Arc::new(vram_llm::gpu::StaticInventory::default());
    state.notify_swaps = notify_swaps;
    state.scheduler = Scheduler::start_fetching(models, factory, roomy_limits(), gpus, clock, Some(fetcher.clone()));
    let scheduler = state.scheduler.clone();
    (serve(state).await, fetcher, scheduler)
}

async fn complete(base: &str, model: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": model, "prompt": "Hi", "max_tokens": 5}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn model_object(base: &str, id: &str) -> Value {
    let list: Value = reqwest::get(format!("{base}/v1/models")).await.unwrap().json().await.unwrap();
    list["data"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap().clone()
}

#[tokio::test]
async fn the_first_request_downloads_and_every_waiter_shares_one_download() {
    let (base, fetcher, scheduler) = server(0).await;
    let before = model_object(&base, "hubbed").await;
    assert_eq!((before["state"].as_str(), before["downloaded"].as_bool()), (Some("unloaded"), Some(false)), "{before}");

    let first = tokio::spawn({
        let base = base.clone();
        async move { complete(&base, "hubbed").await }
    });
    scheduler.wait_for(|s| s.find("hubbed").is_ok_and(|m| m.state == "downloading" && m.progress == Some(50))).await.unwrap();
    let second = tokio::spawn({
        let base = base.clone();
        async move { complete(&base, "hubbed").await }
    });
    // A client that leaves cancels nothing.
    let leaves = tokio::spawn({
        let base = base.clone();
        async move { complete(&base, "hubbed").await }
    });
    scheduler.wait_for(|s| s.find("hubbed").is_ok_and(|m| m.state == "downloading")).await.unwrap();
    leaves.abort();

    let during = model_object(&base, "hubbed").await;
    assert_eq!((during["state"].as_str(), during["status"]["value"].as_str(), during["progress"].as_u64()), (Some("downloading"), Some("loading"), Some(50)));
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vram_llm_model_download_percent{model=\"hubbed\"} 50"), "{metrics}");
    // Other models keep serving meanwhile.
    assert_eq!(complete(&base, "local").await.0, 200);

    fetcher.gate.add_permits(1);
    for waiter in [first, second] {
        let (status, body) = waiter.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["text"], "hello");
    }
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1, "one download for every waiter");
    let after = model_object(&base, "hubbed").await;
    assert_eq!(after["state"], "loaded");
    assert!(after.get("downloaded").is_none() && after.get("progress").is_none(), "{after}");
    assert_eq!(complete(&base, "hubbed").await.0, 200);
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1, "downloaded once");
}

#[tokio::test]
async fn a_failed_download_fails_its_waiters_and_the_next_request_tries_again() {
    let (base, fetcher, scheduler) = server(1).await;
    let waiter = tokio::spawn({
        let base = base.clone();
        async move { complete(&base, "hubbed").await }
    });
    scheduler.wait_for(|s| s.find("hubbed").is_ok_and(|m| m.state == "downloading")).await.unwrap();
    fetcher.gate.add_permits(1);
    let (status, body) = waiter.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("the hub is down"), "{body}");
    assert_eq!(model_object(&base, "hubbed").await["downloaded"], false);

    fetcher.gate.add_permits(1);
    let (status, body) = complete(&base, "hubbed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_streamed_chat_with_notify_swaps_tells_the_download_then_answers() {
    use futures_util::StreamExt;
    let (base, fetcher, _) = server_with(0, true).await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "hubbed", "messages": [{"role": "user", "content": "Hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("downloading model hubbed: 50%") {
        text.push_str(&String::from_utf8_lossy(&stream.next().await.expect("stream ended early").unwrap()));
    }
    fetcher.gate.add_permits(1);
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let answer: String = vram_llm::api::sse::parse_events(&text)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(answer, "hello", "{text}");
}
