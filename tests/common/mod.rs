//! Test support: a fake engine (scripted replies, no model), an in-process
//! server on an ephemeral port, and a launcher for the real binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vram_llm::api::{router, AppState, DEFAULT_BODY_LIMIT};
use vram_llm::build_info::BUILD;
use vram_llm::engine::text::TextStream;
use vram_llm::engine::*;
use vram_llm::gpu::{GpuInventory, Placement, StaticInventory};
use vram_llm::scheduler::{ManualClock, ModelLimits, Policy, Registration, SchedLimits, Scheduler};
use vram_llm::types::{ModelSpec, Progress};

/// Tokens are Unicode code points; the reply is sent one character at a time.
/// With a gate, each generation waits for a permit before it finishes, so a
/// test controls how long requests stay in flight; `cancel_all` (a forced
/// unload) ends the ones still waiting.
pub struct FakeEngine {
    info: ModelInfo,
    reply: String,
    gate: Option<Arc<tokio::sync::Semaphore>>,
    waiting: std::sync::Mutex<Vec<EventSender>>,
    /// Dropped with the engine (see `FakeFactory::on_load`).
    _guard: Option<LoadGuard>,
}

/// Whatever a test wants released when a fake model unloads.
pub type LoadGuard = Box<dyn std::any::Any + Send + Sync>;

/// Called on every fake load with its placement; the guard it returns lives
/// as long as the model (a fake GPU uses it to give memory back).
pub type OnLoad = Arc<dyn Fn(Option<&Placement>) -> LoadGuard + Send + Sync>;

/// The fake vocabulary's fill-in-the-middle tokens: private-use characters,
/// since the fake makes a token of every character.
pub const FAKE_FIM: vram_llm::engine::FimTokens = vram_llm::engine::FimTokens { pre: 0xE000, suf: 0xE001, mid: 0xE002 };

pub const FAKE_TEMPLATE: &str =
    "{% for m in messages %}{% if m.role == 'system' and m.content == 'fail' %}{{ raise_exception('no system role here') }}{% endif %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

/// Text that makes the fake tokenizer block until `tokenize_gate::open()`:
/// stands in for CPU-heavy tokenizing of a huge prompt.
pub const BLOCKING_TOKENIZE: &str = "\u{0}block the tokenizer\u{0}";

pub mod tokenize_gate {
    use std::sync::{Condvar, Mutex};

    static STATE: Mutex<(bool, usize)> = Mutex::new((false, 0));
    static CHANGED: Condvar = Condvar::new();

    /// Blocks (a blocking thread, like real tokenizing) until `open`.
    pub fn wait() {
        let mut s = STATE.lock().unwrap();
        s.1 += 1;
        CHANGED.notify_all();
        while !s.0 {
            s = CHANGED.wait(s).unwrap();
        }
    }

    /// How many tokenizers are (or were) blocked.
    pub fn blocked() -> usize {
        STATE.lock().unwrap().1
    }

    pub fn open() {
        STATE.lock().unwrap().0 = true;
        CHANGED.notify_all();
    }
}

impl FakeEngine {
    pub fn new(reply: &str, n_ctx_slot: u32) -> Self {
        Self {
            info: ModelInfo {
                n_ctx_slot,
                n_ctx_train: n_ctx_slot,
                parallel: 2,
                n_params: 1000,
                size_bytes: 2000,
                n_vocab: 0x11_0000,
                bos_token: String::new(),
                eos_token: String::new(),
                add_bos: false,
                architecture: Some("fake".into()),
                chat_template: Some(FAKE_TEMPLATE.into()),
                n_embd: FAKE_N_EMBD,
                n_ctx_embed: n_ctx_slot / 2,
                fim: Some(FAKE_FIM),
                bos_id: None,
                n_swa: 0,
                draft: None,
            },
            reply: reply.to_string(),
            gate: None,
            waiting: Default::default(),
            _guard: None,
        }
    }
}

impl Engine for FakeEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn tokenize(&self, text: &str, _add_bos: bool) -> Vec<TokenId> {
        if text.contains(BLOCKING_TOKENIZE) {
            tokenize_gate::wait();
        }
        text.chars().map(|c| c as TokenId).collect()
    }
    fn detokenize(&self, tokens: &[TokenId]) -> String {
        tokens.iter().filter_map(|&t| char::from_u32(t)).collect()
    }
    /// One end-of-generation token, for `generation_settings`.
    fn eog_tokens(&self) -> Vec<TokenId> {
        vec![3]
    }
    fn generate(&self, request: GenerationRequest) -> Result<EventReceiver, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut text = TextStream::new(request.stop.clone());
        let mut generated = 0;
        let mut finish_reason = FinishReason::Stop;
        for c in self.reply.chars() {
            if request.max_tokens.is_some_and(|m| generated >= m) {
                finish_reason = FinishReason::Length;
                break;
            }
            generated += 1;
            let pushed = text.push(c.to_string().as_bytes());
            if !pushed.text.is_empty() {
                let _ = tx.send(GenerationEvent::Text(pushed.text));
            }
            if let Some(i) = pushed.stopped {
                finish_reason = FinishReason::StopSequence(i as u16);
                break;
            }
        }
        let rest = text.finish();
        if !rest.is_empty() {
            let _ = tx.send(GenerationEvent::Text(rest));
        }
        let usage = Usage { prompt_tokens: request.prompt.len() as u32, completion_tokens: generated, ..Usage::default() };
        let done = match self.reply.ends_with(FAILS_AFTER_REPLY) {
            true => GenerationEvent::Failed("decode failed: the fake engine was told to fail".into()),
            false => GenerationEvent::Done { finish_reason, usage },
        };
        match self.gate.clone() {
            None => {
                let _ = tx.send(done);
            }
            Some(gate) => {
                self.waiting.lock().expect("waiting").push(tx.clone());
                tokio::spawn(async move {
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                    let _ = tx.send(done);
                });
            }
        }
        Ok(rx)
    }
    fn embed(&self, inputs: Vec<Vec<TokenId>>) -> Result<embed::EmbedReceiver, EngineError> {
        Ok(embed::answered(Ok(inputs.iter().map(|tokens| fake_embedding(tokens)).collect())))
    }
    fn slot_stats(&self) -> SlotStats {
        SlotStats { total: self.info.parallel, busy: 0, queued: 0 }
    }
    fn cancel_all(&self) {
        for tx in self.waiting.lock().expect("waiting").drain(..) {
            let _ = tx.send(GenerationEvent::Cancelled("the model was unloaded".into()));
        }
    }
}

/// A reply ending with this fails after its text (as a decode failure would).
pub const FAILS_AFTER_REPLY: &str = "\u{1}";

/// The fake engine's embedding length.
pub const FAKE_N_EMBD: u32 = 8;

/// The fake engine's embedding of some tokens: a unit vector that depends
/// on every token and its position, so equal inputs give equal vectors.
pub fn fake_embedding(tokens: &[TokenId]) -> Vec<f32> {
    let mut v = vec![0.0f32; FAKE_N_EMBD as usize];
    for (pos, &t) in tokens.iter().enumerate() {
        v[(t as usize + pos) % FAKE_N_EMBD as usize] += 1.0 + (t % 7) as f32;
    }
    embed::normalize(&mut v);
    v
}

/// Each load's model name and the placement it was given.
pub type LoadLog = Arc<std::sync::Mutex<Vec<(String, Option<Placement>)>>>;

pub struct FakeFactory {
    pub reply: String,
    pub n_ctx_slot: u32,
    /// Generations finish only as permits are added (see FakeEngine).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Models whose load fails.
    pub failing: Vec<String>,
    /// When set, a load reports 50% and then waits until the flag is true.
    pub load_gate: Option<Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>>,
    /// Every load's model and the placement the scheduler gave it.
    pub placements: LoadLog,
    pub on_load: Option<OnLoad>,
    /// The scheduler's clock in tests built with this factory: it moves only
    /// by `load_time` per load, or when a test advances it.
    pub clock: Arc<ManualClock>,
    /// How long each load takes on `clock`.
    pub load_time: Duration,
}

impl FakeFactory {
    pub fn new(reply: &str) -> Self {
        Self {
            reply: reply.into(),
            n_ctx_slot: 64,
            gate: None,
            failing: Vec::new(),
            load_gate: None,
            placements: Default::default(),
            on_load: None,
            clock: Default::default(),
            load_time: Duration::ZERO,
        }
    }
}

impl EngineFactory for FakeFactory {
    fn load(&self, spec: &ModelSpec, placement: Option<&Placement>, progress: Progress) -> Result<Arc<dyn Engine>, EngineError> {
        self.placements.lock().expect("placements").push((spec.id.clone(), placement.cloned()));
        progress(0.5);
        if let Some(gate) = &self.load_gate {
            let (open, cond) = &**gate;
            let mut open = open.lock().expect("gate");
            while !*open {
                open = cond.wait(open).expect("gate");
            }
        }
        progress(1.0);
        self.clock.advance(self.load_time);
        if self.failing.contains(&spec.id) {
            return Err(EngineError::Load { path: spec.path.display().to_string(), reason: "corrupt file".into() });
        }
        let mut engine = FakeEngine::new(&self.reply, self.n_ctx_slot);
        engine.gate = self.gate.clone();
        engine._guard = self.on_load.as_ref().map(|f| f(placement));
        Ok(Arc::new(engine))
    }
}

pub fn fake_spec(id: &str) -> ModelSpec {
    ModelSpec { aliases: vec![format!("{id}-alias")], parallel: 2, ..ModelSpec::new(id, format!("/fake/{id}.gguf")) }
}

/// Scheduler limits roomy enough that nothing is ever evicted.
pub fn roomy_limits() -> SchedLimits {
    SchedLimits {
        budget_bytes: 1 << 40,
        max_loaded: None,
        max_wait: Duration::from_secs(10),
        max_queue: 16,
        max_queue_wait: None,
        policy: Policy::CacheAware,
        retry_backoff: Duration::from_secs(2),
        sleep: Default::default(),
        autoload: true,
        any_model_name: false,
    }
}

/// App state over fake models; `ready` says whether startup loads are done.
pub fn fake_state(specs: Vec<ModelSpec>, factory: Arc<FakeFactory>, limits: SchedLimits, bytes_per_model: u64, ready: bool) -> AppState {
    let model_limits = specs
        .iter()
        .map(|s| ModelLimits { name: s.id.clone(), bytes: bytes_per_model, slots: s.parallel, exclusive: s.exclusive, ttl: s.ttl, gpu: None })
        .collect();
    state_with(specs, model_limits, factory, limits, Arc::new(StaticInventory::default()), ready)
}

/// App state over fake models with explicit limits and a GPU inventory; the
/// scheduler runs on the factory's manual clock.
pub fn state_with(
    specs: Vec<ModelSpec>,
    model_limits: Vec<ModelLimits>,
    factory: Arc<FakeFactory>,
    limits: SchedLimits,
    gpus: Arc<dyn GpuInventory>,
    ready: bool,
) -> AppState {
    let models = specs.into_iter().zip(model_limits).map(|(spec, limits)| Registration { spec, limits, n_vocab: None }).collect();
    let clock = factory.clock.clone();
    let scheduler = Scheduler::start(models, factory, limits, gpus, clock);
    AppState {
        scheduler,
        ready: Arc::new(AtomicBool::new(ready)),
        api_key: None,
        admin_token: None,
        notify_swaps: false,
        reload_from: None,
        body_limit: DEFAULT_BODY_LIMIT,
        build: BUILD,
        backends: vec!["CPU (test)".to_string()].into(),
        backend_modules: Vec::new().into(),
        kv_cache: None,
        cors_origins: Arc::from(Vec::new()),
        allowed_hosts: None,
        options: Default::default(),
        streams: Default::default(),
    }
}

/// Serves the router with one fake model on 127.0.0.1:<ephemeral>.
pub async fn fake_server(reply: &str, api_key: Option<&str>, body_limit: Option<usize>) -> String {
    let factory = Arc::new(FakeFactory::new(reply));
    let mut state = fake_state(vec![fake_spec("fake")], factory, roomy_limits(), 1 << 20, true);
    state.api_key = api_key.map(Arc::from);
    state.body_limit = body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
    serve(state).await
}

/// Serves `state`'s router on 127.0.0.1:<ephemeral> through the server's
/// own listener with its default connection limits; returns the base URL.
pub async fn serve(state: AppState) -> String {
    let limits = vram_llm::server::conn::ConnLimits {
        max_connections: vram_llm::config::DEFAULT_MAX_CONNECTIONS,
        header_timeout: vram_llm::config::DEFAULT_HEADER_TIMEOUT,
        refusals: Default::default(),
    };
    serve_limited(state, limits).await
}

/// `serve` with chosen connection limits.
pub async fn serve_limited(state: AppState, limits: vram_llm::server::conn::ConnLimits) -> String {
    serve_app(router(state), limits).await
}

/// Serves an app (the router, perhaps wrapped) with the server's listener.
pub async fn serve_app(app: axum::Router, limits: vram_llm::server::conn::ConnLimits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(vram_llm::server::conn::serve(vec![listener], app, limits, std::future::pending()));
    format!("http://{addr}")
}

/// The real test model, set by `scripts/dev test` (VRAM_LLM_TEST_MODEL).
/// Tests that need it fail loudly when it is missing rather than skipping.
pub fn test_model() -> PathBuf {
    let path = std::env::var("VRAM_LLM_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/gemma-3-270m-q4_k_m.gguf")));
    assert!(
        path.is_file(),
        "test model {} is missing: run `scripts/dev setup` (or set VRAM_LLM_TEST_MODEL)",
        path.display()
    );
    path
}

/// The real `vram-llm` binary serving the test model; killed on drop.
pub struct RealServer {
    child: Child,
    pub base: String,
}

impl RealServer {
    /// Serves the test model with `extra_args` added.
    pub async fn start(extra_args: &[&str]) -> Self {
        let model = test_model().display().to_string();
        let mut args = vec!["--model", model.as_str()];
        args.extend_from_slice(extra_args);
        Self::start_with(&args).await
    }

    /// `vram-llm serve ARGS --port <free>`.
    pub async fn start_with(args: &[&str]) -> Self {
        Self::spawn(args, None).await
    }

    /// Serves the test model with `extra_args`, its log (`RUST_LOG=info`)
    /// going to the file `log`.
    pub async fn start_logging(extra_args: &[&str], log: &std::path::Path) -> Self {
        let model = test_model().display().to_string();
        let mut args = vec!["--model", model.as_str()];
        args.extend_from_slice(extra_args);
        Self::spawn(&args, Some(log)).await
    }

    async fn spawn(args: &[&str], log: Option<&std::path::Path>) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vram-llm"));
        cmd.arg("serve").args(["--port", &port.to_string()]).args(args).stdout(Stdio::null());
        match log {
            Some(path) => cmd.env("RUST_LOG", "info").stderr(std::fs::File::create(path).expect("log file")),
            None => cmd.env("RUST_LOG", "error").stderr(Stdio::inherit()),
        };
        let child = cmd.spawn().expect("spawn vram-llm");
        let server = Self { child, base: format!("http://127.0.0.1:{port}") };
        server.wait_healthy(Duration::from_secs(120)).await;
        server
    }

    /// Polls /health until 200 (model loaded) or the deadline passes.
    async fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let client = reqwest::Client::new();
        loop {
            if let Ok(resp) = client.get(format!("{}/health", self.base)).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl RealServer {
    /// The server process's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }
}

impl RealServer {
    /// Stops the server as SIGTERM does (graceful shutdown) and waits for
    /// it to exit; returns whether it exited successfully.
    pub fn stop(self) -> bool {
        self.terminate();
        self.wait()
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits for the server to exit; whether it exited successfully.
    pub fn wait(mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

