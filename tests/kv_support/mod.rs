//! The real llama.cpp engine driven directly (no HTTP, no scheduler) for the
//! KV-cache tests, and the oracle they share: every served answer is scored
//! by a fresh context that read the same prompt and answer from nothing
//! (`engine::llama::reference`).

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use vram_llm::engine::kvcache::HostKvCache;
use vram_llm::engine::kvdisk::KvDir;
use vram_llm::engine::llama::reference::{Reference, Scored};
use vram_llm::engine::llama::{LlamaEngine, LoadOptions};
use vram_llm::engine::{Engine, EventReceiver, GenerationEvent, GenerationRequest, SharedKvStore};
use vram_llm::types::{EngineKnobs, SamplingParams};

pub use crate::common::test_model;

/// A host KV cache of `mib` in memory, with `dir` when given.
pub fn store(mib: usize, dir: Option<&Path>) -> SharedKvStore {
    let disk = dir.map(|d| KvDir::open(d, 1 << 30).expect("open the KV cache directory"));
    Arc::new(HostKvCache::new(mib << 20, disk))
}

/// How an engine under test is shaped.
#[derive(Clone)]
pub struct Shape {
    pub parallel: u32,
    pub ctx_size: u32,
    pub store: Option<SharedKvStore>,
}

/// `--ctx-checkpoints` for the engines the tests load (`VRAM_LLM_TEST_CTX_CHECKPOINTS`; default: the server's).
fn ctx_checkpoints() -> Option<u32> {
    std::env::var("VRAM_LLM_TEST_CTX_CHECKPOINTS").ok().and_then(|v| v.parse().ok())
}

/// Speculative decoding for the engines these tests load
/// (VRAM_LLM_TEST_SPEC_TYPE=ngram-simple, a 3-token lookup so that drafts
/// come often; `draft-simple`, the test model as its own draft model, with
/// no probability floor): the
/// differential test then checks drafted answers too.
fn spec() -> vram_llm::types::SpecConfig {
    let kind = std::env::var("VRAM_LLM_TEST_SPEC_TYPE").ok().map(|name| {
        <vram_llm::types::SpecType as clap::ValueEnum>::from_str(&name, false).expect("VRAM_LLM_TEST_SPEC_TYPE names a --spec-type")
    });
    // A draft model drafts at any probability: more drafts to check.
    vram_llm::types::SpecConfig { kind: kind.unwrap_or_default(), size_n: Some(3), p_min: Some(0.0), ..Default::default() }
}

pub fn load(shape: &Shape) -> LlamaEngine {
    let options = LoadOptions {
        path: test_model(),
        ctx_size: Some(shape.ctx_size),
        parallel: shape.parallel,
        threads: Some(2),
        n_gpu_layers: Some(0),
        gpu: None,
        fit: None,
        kv_store: shape.store.clone(),
        model_id: "test".into(),
        kept_weights: None,
        sleep_gpu: false,
        swa_full: false,
        batch_size: 2048,
        knobs: EngineKnobs { ctx_checkpoints: ctx_checkpoints(), spec: spec(), ..EngineKnobs::default() },
        draft: (spec().kind == vram_llm::types::SpecType::DraftSimple).then(|| (vec![test_model()], false)),
        live_weights: None,
    };
    LlamaEngine::load(options, Arc::new(|_| {})).expect("load the test model")
}

/// A greedy request for `prompt` reporting each token's log-probability.
pub fn greedy(prompt: Vec<u32>, max_tokens: u32) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        logprobs: Some(0),
        post_sampling_probs: false,
        keep_special: Vec::new(),
        branch_points: Vec::new(),
        cache_prompt: true,
        return_progress: false,
        speculative: Default::default(),
    }
}

/// What one request was served.
#[derive(Debug, Clone)]
pub struct Served {
    pub prompt: Vec<u32>,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub cached: u32,
}

/// Waits for a generation to end.
pub fn collect(prompt: &[u32], mut rx: EventReceiver) -> Served {
    let mut served = Served { prompt: prompt.to_vec(), tokens: Vec::new(), logprobs: Vec::new(), cached: 0 };
    while let Some(event) = rx.blocking_recv() {
        match event {
            GenerationEvent::Logprob(lp) => {
                served.tokens.push(lp.token);
                served.logprobs.push(lp.logprob);
            }
            GenerationEvent::Text(_) | GenerationEvent::Progress(_) => {}
            GenerationEvent::Done { usage, .. } => {
                served.cached = usage.cached_tokens;
                return served;
            }
            other => panic!("generation ended with {other:?}"),
        }
    }
    panic!("the engine dropped a generation");
}

pub fn run(engine: &LlamaEngine, prompt: &[u32], max_tokens: u32) -> Served {
    collect(prompt, engine.generate(greedy(prompt.to_vec(), max_tokens)).expect("queued"))
}

/// The worst disagreement of a served answer with a fresh context.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Deviation {
    /// Largest gap between the fresh context's greedy pick and the served
    /// token (0 when every served token was the fresh pick).
    pub margin: f32,
    /// Largest distance of a served token's log-probability as served from
    /// what the fresh context gives it.
    pub logprob: f32,
}

impl Deviation {
    pub fn max(self, other: Deviation) -> Deviation {
        Deviation { margin: self.margin.max(other.margin), logprob: self.logprob.max(other.logprob) }
    }
}

/// How far a served answer is from a fresh context's reading of the same
/// prompt and answer. llama.cpp's kernels round differently with the shape
/// of a batch, and at a few near-degenerate positions that moves a
/// token's log-probability by more than half a nat (measured on this model:
/// the same tokens read with the batch cut at another place). So the fresh
/// context reads them twice: in plain 512-token batches, and cut where the
/// server cut them (the reused prefix, the last prompt token, then one
/// answer token per step); a served token is as far off as it is outside
/// what those two give. Wrong KV (another conversation's, stale cells) moves
/// every later position, by whole nats.
pub fn deviation(reference: &Reference, served: &Served) -> Deviation {
    let n = served.prompt.len();
    let mut splits = vec![served.cached as usize, n - 1];
    splits.extend(n..n + served.tokens.len());
    let plain: Vec<Scored> = reference.score(&served.prompt, &served.tokens).expect("score");
    let cut: Vec<Scored> = reference.score_split(&served.prompt, &served.tokens, &splits).expect("score");
    let mut d = Deviation::default();
    for ((a, b), &lp) in plain.iter().zip(&cut).zip(&served.logprobs) {
        let (lo, hi) = (a.logprob.min(b.logprob), a.logprob.max(b.logprob));
        let outside = if lp < lo { lo - lp } else if lp > hi { lp - hi } else { 0.0 };
        d = d.max(Deviation { margin: a.margin().min(b.margin()), logprob: outside });
    }
    d
}

/// Deterministic English-like text: `words` words from a seeded generator.
pub fn text(seed: u64, words: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "stone", "light", "north", "market", "window", "quiet", "garden", "engine", "paper", "winter", "copper",
        "signal", "harbor", "forest", "letter", "silver", "bridge", "orange", "school", "thunder", "village", "mirror", "candle",
        "basket", "planet", "doctor", "rabbit", "castle", "pencil", "ocean", "ladder", "meadow", "anchor", "violin", "desert",
        "falcon", "lantern", "marble", "number", "salt", "tower", "yellow", "seven", "under", "behind", "slowly", "bright", "open",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = String::new();
    for i in 0..words {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let word = WORDS[(state >> 33) as usize % WORDS.len()];
        if i > 0 {
            out.push(if i % 11 == 0 { '.' } else { ' ' });
            if i % 11 == 0 {
                out.push(' ');
            }
        }
        out.push_str(word);
    }
    out
}

/// Sends the engine's log to the test's output when RUST_LOG is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    }
}

/// Runs `request` (a prompt with its branch points) greedily.
pub fn run_with(engine: &LlamaEngine, request: GenerationRequest) -> Served {
    let prompt = request.prompt.clone();
    collect(&prompt, engine.generate(request).expect("queued"))
}

pub mod differential;
