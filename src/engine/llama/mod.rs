//! The llama.cpp engine: the only code that touches `llama_cpp_2`.
//!
//! Each loaded model gets one OS thread that owns its `LlamaContext` (which
//! borrows the model and is `!Sync`; llama.cpp calls block) and runs the
//! continuous-batching loop. The `LlamaModel` itself is `Send + Sync`, so the
//! HTTP side shares it through an `Arc` for tokenizing.
//!
//! Slot lifecycle: `Free -> Prefill -> Generate -> Free`. Every step decodes one
//! batch holding the pending token of each generating sequence plus prompt
//! chunks of prefilling ones, never more than `n_batch` tokens (a larger batch
//! aborts the process inside llama.cpp).
//!
//! Files: this one (`LlamaEngine`, the `Engine` impl, `LoadOptions`, the
//! backend), `modules.rs` (dynamic-backends), `load.rs`, `fitter.rs`, `worker.rs`, `embed.rs` (embeddings), `sampler.rs`, `llg.rs` (llguidance). What a step
//! decodes is decided by the pure `engine::step::plan_step`.

mod embed;
mod fork;
mod fitter;
mod llg;
mod load;
pub mod mapguard;
pub mod modules;
mod sampler;
mod prefix;
mod progress;
mod recover;
mod drafter;
mod speculate;
pub mod reference;
mod saved;
mod shift;
pub mod sleep;
pub mod weights;
mod worker;

pub use fitter::{fit_only, FitOptions, Fitted};
pub use llg::json_schema_lark;
pub use saved::SavedSeq;
pub use sampler::json_schema_grammar;
use fitter::*;
use load::*;
use worker::*;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::token::LlamaToken;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::engine::{Engine, EngineError, EventReceiver, EventSender, GenerationRequest, LoadTimings, ModelInfo, SlotStats, TokenId};

/// How a model is loaded and how its context is shaped.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub path: PathBuf,
    /// Context tokens per sequence slot; see [`crate::engine::slot_context`].
    pub ctx_size: Option<u32>,
    /// Sequence slots decoded together (continuous batching).
    pub parallel: u32,
    /// CPU threads for llama.cpp; `None` = all available cores.
    pub threads: Option<u32>,
    /// Layers to offload to the GPU; `None` = all (ignored without a GPU build).
    pub n_gpu_layers: Option<u32>,
    /// A placement plan (GPUs present); wins over `n_gpu_layers`.
    pub gpu: Option<crate::engine::GpuParams>,
    /// `--use-fit-params`: llama.cpp's own fitter chooses the layers and the
    /// split instead of `gpu`.
    pub fit: Option<FitOptions>,
    /// Where sequences are saved before a slot drops them or the model
    /// unloads, and restored from (`None`: no host KV cache).
    pub kv_store: Option<crate::engine::SharedKvStore>,
    /// The model's name: with the file's identity, the key of its
    /// sleeping weights.
    pub model_id: String,
    /// Where sleeping models' weights are kept.
    pub kept_weights: Option<Arc<weights::KeptWeights<weights::Weights>>>,
    /// Whether GPU weights go to a pool that can sleep (sleep.rs).
    pub sleep_gpu: bool,
    /// Full-size KV cache for sliding-window layers (rollbacks keep their
    /// prefix) instead of the window only.
    pub swa_full: bool,
    /// Largest batch decoded in one step.
    pub batch_size: u32,
    /// Flash attention, cache types, micro-batch, batch threads, mlock, mmap.
    pub knobs: crate::types::EngineKnobs,
    /// The files of a smaller model of the same vocabulary that may draft
    /// (drafter.rs), in order of preference (the first in use in the
    /// process is shared, else the first loads), and whether the model
    /// loads without a draft where it cannot draft.
    pub draft: Option<(Vec<PathBuf>, bool)>,
    /// The weights in use in this process, by file: this model's join them,
    /// and a draft model whose file is in use shares them (`None`: nothing
    /// is shared).
    pub live_weights: Option<Arc<weights::LiveWeights<weights::Weights>>>,
}

/// How llama.cpp's fitter may place a model.

/// Initializes llama.cpp once per process; models take it as a token.
pub(super) fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            modules::load()?;
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether an evicted GPU model can sleep in this process: a GPU build of
/// llama.cpp and the sleep shim with its driver (sleep.rs).
pub fn gpu_sleep_possible() -> bool {
    backend().is_ok_and(|b| b.supports_gpu_offload()) && sleep::available().is_ok()
}

/// llama.cpp's devices as found at run time (with `dynamic-link`, from
/// whichever libggml* the loader found): e.g. `CPU (AMD EPYC 7B13, 24000 MiB)`,
/// `CUDA0 (NVIDIA H200, 143771 MiB)`. For `--version` and `/props`; the error
/// says why llama.cpp could not start (e.g. no backend module found).
pub fn backend_devices() -> Result<Vec<String>, String> {
    backend()?;
    Ok(llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{} ({}, {} MiB)", d.name, d.description.trim(), d.memory_total >> 20))
        .collect())
}

/// The backend modules loaded (`dynamic-backends` only; empty otherwise),
/// e.g. `/opt/vram-llm/libggml-cpu-haswell.so`.
pub fn backend_modules() -> Vec<String> {
    modules::loaded()
}

/// A model loaded by llama.cpp with its worker thread.
pub struct LlamaEngine {
    model: Arc<weights::Weights>,
    /// The file as loaded, to notice it changed on disk.
    file: weights::LoadedFile,
    info: ModelInfo,
    /// Weights (llama.cpp's own count) + what creating the context added to
    /// this process's resident memory (KV cache and compute buffers).
    memory_bytes: u64,
    timings: LoadTimings,
    /// Where the weights sleep after `sleep_on_unload`: the cache and this
    /// model's key in it.
    keep: Option<(Arc<weights::KeptWeights<weights::Weights>>, String)>,
    /// What sleeping costs this load (`Engine::sleep_cost`).
    sleep_cost: Result<u64, String>,
    keep_on_drop: std::sync::atomic::AtomicBool,
    /// Set by the first `stop`: whether the weights slept.
    stopped: Mutex<Option<bool>>,
    /// The weights' entry among those in use (`LoadOptions::live_weights`),
    /// removed when the model stops, before its weights may sleep.
    live: Mutex<Option<weights::Live<weights::Weights>>>,
    commands: Mutex<std_mpsc::Sender<Command>>,
    stats: Arc<Stats>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

pub(super) enum Command {
    /// Several generations queued together (the `n` choices of a prompt).
    Generate(Vec<(GenerationRequest, EventSender)>),
    /// Embed each input (see `embed.rs`).
    Embed(Vec<Vec<TokenId>>, crate::engine::embed::EmbedSender),
    /// End every running and queued generation (forced unload).
    CancelAll,
    Shutdown,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) busy: AtomicU32,
    pub(super) queued: AtomicU32,
    pub(super) slots: Mutex<Vec<crate::engine::SlotView>>,
}

impl LlamaEngine {
    /// Loads the model and starts its worker. Blocks until the context exists,
    /// so call it off the async runtime.
    pub fn load(options: LoadOptions, progress: crate::types::Progress) -> Result<Self, EngineError> {
        let path_text = options.path.display().to_string();
        let fail = |reason: String| {
            tracing::error!(path = %path_text, "cannot load: {reason}");
            EngineError::Load { path: path_text.clone(), reason }
        };
        // The file's identity keys both the kept weights and the saved KV states.
        let file = weights::LoadedFile::at(&options.path);
        let identity = file.identity().to_string();
        // CPU weights that are page cache (mapped, not locked or read in)
        // sleep for free; other CPU loads cannot sleep; GPU loads sleep when
        // their weights went to a sleep pool (sleep.rs).
        let cpu_sleep = match (cpu_only(&options), options.knobs.weights_are_page_cache()) {
            (false, _) => None,
            (true, true) => Some(Ok(0)),
            (true, false) => Some(Err("its weights are read into memory or locked (--no-mmap, --mlock), not page cache".to_string())),
        };
        let key = weights::KeptWeights::<weights::Weights>::key(&options.model_id, &identity);
        let keep = options.kept_weights.clone().map(|w| (w, key));
        // Taken first, so that a failed load leaves nothing asleep for this
        // model (and sleeping weights of an older version of the file go).
        let reused = keep.as_ref().and_then(|(kept, key)| kept.take_model(&options.model_id, key));
        if !options.path.is_file() {
            return Err(fail("the model file is missing".into()));
        }
        // CPU weights join those in use, for a draft model to share
        // (drafter.rs: GPU weights are not shared).
        let live = options.live_weights.clone().filter(|_| cpu_only(&options)).zip(weights::live_key(&options.path));
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let stats = Arc::new(Stats::default());
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(format!("model:{}", file_stem(&options.path)))
            .spawn(move || worker_main(options, identity, reused, progress, ready_tx, cmd_rx, worker_stats))
            .map_err(|e| fail(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok((model, info, context_bytes, timings))) => Ok(Self {
                memory_bytes: model.size() + context_bytes,
                sleep_cost: cpu_sleep.unwrap_or_else(|| match &model.sleep {
                    Ok(pool) => Ok(pool.device_bytes()),
                    Err(why) => Err(why.clone()),
                }),
                file,
                timings,
                keep,
                keep_on_drop: Default::default(),
                stopped: Mutex::new(None),
                live: Mutex::new(live.map(|(l, key)| l.add(key, &model))),
                model,
                info,
                commands: Mutex::new(cmd_tx),
                stats,
                worker: Mutex::new(Some(worker)),
            }),
            Ok(Err(reason)) => {
                let _ = worker.join();
                Err(fail(reason))
            }
            Err(_) => {
                let _ = worker.join();
                Err(fail("the model worker exited during load".into()))
            }
        }
    }
}

impl Drop for LlamaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LlamaEngine {
    /// Stops the worker (which frees the context) and, when the scheduler
    /// chose it, puts the weights to sleep; once. Whether they slept.
    fn stop(&self) -> bool {
        let mut done = self.stopped.lock();
        if let Some(slept) = *done {
            return slept;
        }
        // Shared no more from here on (only CPU weights are shared: their
        // sleep moves nothing, whoever still drafts with them).
        drop(self.live.lock().take());
        let _ = self.commands.lock().send(Command::Shutdown);
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
        let slept = self.put_to_sleep();
        *done = Some(slept);
        slept
    }

    /// After the worker is gone: keeps the weights asleep if asked to.
    /// Nothing to release otherwise (the weights were taken out of the
    /// cache at load, and another engine's may sit under the same key).
    fn put_to_sleep(&self) -> bool {
        if let Some((kept, key)) = &self.keep {
            // The worker (and its context) is gone: nothing uses the weights.
            let asleep = match &self.model.sleep {
                _ if !self.keep_on_drop.load(Ordering::Relaxed) => false,
                Ok(pool) => {
                    let started = std::time::Instant::now();
                    match pool.sleep() {
                        Ok(()) => {
                            tracing::info!(model = %self.info.architecture.as_deref().unwrap_or("?"), pinned_mib = pool.host_bytes() >> 20,
                                ms = started.elapsed().as_millis() as u64, "GPU weights asleep in pinned host memory");
                            true
                        }
                        Err(e) => {
                            tracing::warn!("the GPU weights could not sleep ({e}): unloading them");
                            false
                        }
                    }
                }
                Err(_) => true,
            };
            if asleep {
                kept.keep(key.clone(), self.model.clone());
            }
            return asleep;
        }
        false
    }
}

/// Whether a load puts nothing on a GPU (its weights are then the mapped file).
pub(super) fn cpu_only(options: &LoadOptions) -> bool {
    let no_gpu_build = backend().map(|b| !b.supports_gpu_offload()).unwrap_or(false);
    let planned_cpu = options.gpu.as_ref().is_some_and(|g| g.devices.is_empty() || g.n_gpu_layers == 0);
    options.fit.is_none() && (no_gpu_build || planned_cpu || (options.gpu.is_none() && options.n_gpu_layers == Some(0)))
}

impl Engine for LlamaEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn check_grammar(&self, grammar: &str) -> Result<(), String> {
        sampler::grammar_parses(&self.model, &self.model.llg, grammar)
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        self.tokenize_with(text, add_bos, true)
    }

    fn tokenize_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<TokenId> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, parse_special)
            .into_iter()
            .map(|t| t.0 as TokenId)
            .collect()
    }

    fn eog_tokens(&self) -> Vec<TokenId> {
        self.model.eog().iter().map(|t| t.0 as TokenId).collect()
    }

    fn token_bytes(&self, token: TokenId) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.model.vocab().token_to_piece_into(LlamaToken(token as i32), &mut bytes, true, None);
        bytes
    }

    fn detokenize(&self, tokens: &[TokenId]) -> String {
        let vocab = self.model.vocab();
        let mut bytes = Vec::new();
        for &t in tokens {
            vocab.token_to_piece_into(LlamaToken(t as i32), &mut bytes, true, None);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn generate(&self, request: GenerationRequest) -> Result<EventReceiver, EngineError> {
        let mut receivers = self.generate_many(vec![request])?;
        Ok(receivers.remove(0))
    }

    fn generate_many(&self, requests: Vec<GenerationRequest>) -> Result<Vec<EventReceiver>, EngineError> {
        let (queued, receivers): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|request| {
                let (tx, rx) = mpsc::unbounded_channel();
                ((request, tx), rx)
            })
            .unzip();
        self.stats.queued.fetch_add(queued.len() as u32, Ordering::Relaxed);
        self.commands.lock().send(Command::Generate(queued)).map_err(|_| EngineError::Stopped)?;
        Ok(receivers)
    }

    fn embed(&self, inputs: Vec<Vec<TokenId>>) -> Result<crate::engine::embed::EmbedReceiver, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.lock().send(Command::Embed(inputs, tx)).map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.memory_bytes)
    }

    fn cancel_all(&self) {
        let _ = self.commands.lock().send(Command::CancelAll);
    }

    fn load_timings(&self) -> LoadTimings {
        self.timings
    }

    fn sleep_cost(&self) -> Result<u64, String> {
        self.sleep_cost.clone()
    }

    fn pinned_bytes(&self) -> u64 {
        self.model.sleep.as_ref().map_or(0, |pool| pool.host_bytes())
    }

    fn shutdown(&self) -> bool {
        self.stop()
    }

    fn sleep_on_unload(&self) {
        self.keep_on_drop.store(self.sleep_cost.is_ok(), Ordering::Relaxed);
    }

    fn stale(&self) -> Option<String> {
        if self.model.guard.faulted() {
            return Some(worker::FILE_CHANGED.to_string());
        }
        self.file
            .changed()
            .then(|| "the model file changed on disk (size, modification time or content); it is reloaded once its requests finish".to_string())
    }

    fn slots(&self) -> Vec<crate::engine::SlotView> {
        self.stats.slots.lock().clone()
    }

    fn slot_stats(&self) -> SlotStats {
        SlotStats {
            total: self.info.parallel,
            busy: self.stats.busy.load(Ordering::Relaxed),
            queued: self.stats.queued.load(Ordering::Relaxed),
        }
    }
}

