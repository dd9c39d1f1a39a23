//! The llama.cpp engine: the only file that touches `llama_cpp_2`.
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

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::text::TextStream;
use super::{
    Engine, EngineError, EventReceiver, EventSender, FinishReason, GenerationEvent,
    GenerationRequest, ModelInfo, SamplingParams, SlotStats, TokenId, Usage,
};

/// How a model is loaded and how its context is shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub path: PathBuf,
    /// Context tokens per sequence slot; see [`super::slot_context`].
    pub ctx_size: Option<u32>,
    /// Sequence slots decoded together (continuous batching).
    pub parallel: u32,
    /// CPU threads for llama.cpp; `None` = all available cores.
    pub threads: Option<u32>,
    /// Layers to offload to the GPU; `None` = all (ignored without a GPU build).
    pub n_gpu_layers: Option<u32>,
    /// A placement plan (GPUs present); wins over `n_gpu_layers`.
    pub gpu: Option<super::GpuParams>,
    /// `--use-fit-params`: llama.cpp's own fitter chooses the layers and the
    /// split instead of `gpu`.
    pub fit: Option<FitOptions>,
    /// Largest batch decoded in one step.
    pub batch_size: u32,
}

/// How llama.cpp's fitter may place a model.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// MiB kept free on every device.
    pub reserve_mib: u64,
    /// CUDA indices it may use (`--devices`); `None`: every device.
    pub devices: Option<Vec<u32>>,
}

/// What llama.cpp's fitter (`common_fit_params`) chose for a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fitted {
    /// llama.cpp's count (`-1`: its default, everything it can).
    pub n_gpu_layers: i32,
    /// One share per llama.cpp device (empty: no split chosen).
    pub tensor_split: Vec<f32>,
    /// Tensors the fitter kept in host memory (buffer-type overrides).
    pub cpu_overrides: Vec<String>,
    /// Context tokens (all slots together); never reduced by the fitter here.
    pub n_ctx: u32,
}

/// Asks llama.cpp's fitter where `path` should go with the context the
/// engine would give it, without loading it (`vram-llm plan --use-fit-params`).
pub fn fit_only(path: &Path, ctx_size: Option<u32>, parallel: u32, batch_size: u32, margin_mib: u64) -> Result<Fitted, String> {
    backend()?;
    let mut cparams = context_for(path, ctx_size, parallel, batch_size, None)?;
    fit(&mut LlamaModelParams::default(), path, &mut cparams, margin_mib)
}

/// The context parameters for `parallel` slots, with the slot context taken
/// from the GGUF header (before the model is loaded, as the fitter needs them).
fn context_for(
    path: &Path,
    ctx_size: Option<u32>,
    parallel: u32,
    batch_size: u32,
    threads: Option<u32>,
) -> Result<LlamaContextParams, String> {
    let header = crate::gguf::read_header(path).map_err(|e| e.to_string())?;
    context_params(super::header_slot_context(&header, ctx_size), parallel, batch_size, threads)
}

fn context_params(n_ctx_slot: u32, parallel: u32, batch_size: u32, threads: Option<u32>) -> Result<LlamaContextParams, String> {
    let parallel = parallel.clamp(1, 256);
    let n_ctx_total = n_ctx_slot
        .checked_mul(parallel)
        .ok_or_else(|| "ctx_size * parallel overflows".to_string())?;
    let n_batch = batch_size.max(parallel).max(32);
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(4))
        .max(1) as i32;
    Ok(LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_total))
        .with_n_seq_max(parallel)
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch.min(512))
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // One KV stream per slot: a request can never eat another's context.
        .with_kv_unified(false))
}

/// Runs llama.cpp's fitter on `params` (which must still hold the default
/// `n_gpu_layers` and no overrides). The context is kept whole (`n_ctx_min`
/// = the requested context). llama.cpp's fitter is not thread-safe; the
/// scheduler runs one load at a time.
fn fit(params: &mut LlamaModelParams, path: &Path, cparams: &mut LlamaContextParams, margin_mib: u64) -> Result<Fitted, String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "model path contains a NUL byte".to_string())?;
    let margin = usize::try_from(margin_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let mut margins = vec![margin; llama_cpp_2::max_devices().max(16)];
    let n_ctx = cparams.n_ctx().map_or(0, NonZeroU32::get);
    const INFO: u32 = 2; // GGML_LOG_LEVEL_INFO
    std::pin::Pin::new(&mut *params)
        .fit_params(&c_path, cparams, &mut margins, n_ctx, INFO)
        .map_err(|e| format!("llama.cpp's fitter (--use-fit-params): {e}"))?;
    let used = |shares: &[f32]| if shares.iter().all(|s| *s == 0.0) { Vec::new() } else { shares.to_vec() };
    Ok(Fitted {
        n_gpu_layers: params.n_gpu_layers(),
        tensor_split: used(params.tensor_split()),
        cpu_overrides: params.tensor_buft_override_patterns(),
        n_ctx: cparams.n_ctx().map_or(0, NonZeroU32::get),
    })
}

/// Initializes llama.cpp once per process; models take it as a token.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A model loaded by llama.cpp with its worker thread.
pub struct LlamaEngine {
    model: Arc<LlamaModel>,
    info: ModelInfo,
    /// Weights (llama.cpp's own count) + what creating the context added to
    /// this process's resident memory (KV cache and compute buffers).
    memory_bytes: u64,
    commands: Mutex<std_mpsc::Sender<Command>>,
    stats: Arc<Stats>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Command {
    Generate(GenerationRequest, EventSender),
    /// End every running and queued generation (forced unload).
    CancelAll,
    Shutdown,
}

#[derive(Default)]
struct Stats {
    busy: AtomicU32,
    queued: AtomicU32,
}

impl LlamaEngine {
    /// Loads the model and starts its worker. Blocks until the context exists,
    /// so call it off the async runtime.
    pub fn load(options: LoadOptions, progress: crate::types::Progress) -> Result<Self, EngineError> {
        let path_text = options.path.display().to_string();
        let fail = |reason: String| EngineError::Load { path: path_text.clone(), reason };
        if !options.path.is_file() {
            return Err(fail("no such file".into()));
        }
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let stats = Arc::new(Stats::default());
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(format!("model:{}", file_stem(&options.path)))
            .spawn(move || worker_main(options, progress, ready_tx, cmd_rx, worker_stats))
            .map_err(|e| fail(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok((model, info, context_bytes))) => Ok(Self {
                memory_bytes: model.size() + context_bytes,
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
        let _ = self.commands.lock().send(Command::Shutdown);
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
    }
}

impl Engine for LlamaEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, true)
            .into_iter()
            .map(|t| t.0 as TokenId)
            .collect()
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
        let (tx, rx) = mpsc::unbounded_channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.commands
            .lock()
            .send(Command::Generate(request, tx))
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.memory_bytes)
    }

    fn cancel_all(&self) {
        let _ = self.commands.lock().send(Command::CancelAll);
    }

    fn slot_stats(&self) -> SlotStats {
        SlotStats {
            total: self.info.parallel,
            busy: self.stats.busy.load(Ordering::Relaxed),
            queued: self.stats.queued.load(Ordering::Relaxed),
        }
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

type Ready = Result<(Arc<LlamaModel>, ModelInfo, u64), String>;

/// This process's resident memory in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn worker_main(
    options: LoadOptions,
    progress: crate::types::Progress,
    ready: std_mpsc::Sender<Ready>,
    commands: std_mpsc::Receiver<Command>,
    stats: Arc<Stats>,
) {
    let loaded = match load_model(&options, progress) {
        Ok(loaded) => loaded,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            return;
        }
    };
    let (model, info, ctx_params) = loaded;
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let before = resident_bytes();
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot create context: {e}")));
            return;
        }
    };
    tracing::info!(
        model = %options.path.display(),
        n_ctx_slot = info.n_ctx_slot,
        parallel = info.parallel,
        n_batch = ctx.n_batch(),
        "model loaded"
    );
    let context_bytes = resident_bytes().saturating_sub(before);
    let mut worker = Worker::new(&model, ctx, &info, stats);
    if ready.send(Ok((model.clone(), info, context_bytes))).is_err() {
        return;
    }
    worker.run(&commands);
}

fn load_model(
    options: &LoadOptions,
    progress: crate::types::Progress,
) -> Result<(Arc<LlamaModel>, ModelInfo, LlamaContextParams), String> {
    let backend = backend()?;
    let mut params = LlamaModelParams::default().with_progress_callback(move |fraction| {
        progress(fraction);
        true
    });
    if let Some(fit_options) = &options.fit {
        if let Some(cuda) = &fit_options.devices {
            let devices = ggml_devices(cuda)?;
            params = params.with_devices(&devices).map_err(|e| format!("cannot select GPUs {devices:?}: {e}"))?;
        }
        // The fitter needs the context before the model loads: from the header.
        let mut cparams = context_for(&options.path, options.ctx_size, options.parallel, options.batch_size, options.threads)?;
        let fitted = fit(&mut params, &options.path, &mut cparams, fit_options.reserve_mib)?;
        tracing::info!(path = %options.path.display(), ?fitted, "placement chosen by llama.cpp's fitter");
    } else {
        if let Some(n) = options.n_gpu_layers {
            params = params.with_n_gpu_layers(n);
        }
        if let Some(gpu) = &options.gpu {
            params = apply_gpu_plan(params, gpu)?;
        }
    }
    let model = LlamaModel::load_from_file(backend, &options.path, &params).map_err(|e| e.to_string())?;
    let model = Arc::new(model);
    let n_ctx_train = model.n_ctx_train();
    let n_ctx_slot = super::slot_context(options.ctx_size, n_ctx_train);
    let parallel = options.parallel.clamp(1, 256);
    let ctx_params = context_params(n_ctx_slot, parallel, options.batch_size, options.threads)?;

    let vocab = model.vocab();
    let token_text = |t: LlamaToken| vocab.text(t).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let info = ModelInfo {
        n_ctx_slot,
        n_ctx_train,
        parallel,
        n_params: model.n_params(),
        size_bytes: model.size(),
        n_vocab: model.n_vocab().max(0) as u32,
        bos_token: token_text(vocab.bos()),
        eos_token: token_text(vocab.eos()),
        add_bos: vocab.should_add_bos(),
        architecture: model.meta_val_str("general.architecture").ok(),
        chat_template: model.meta_val_str("tokenizer.chat_template").ok(),
    };
    Ok((model, info, ctx_params))
}

/// ggml's device indices for CUDA indices (`CUDA<i>` in ggml's device list).
fn ggml_devices(cuda: &[u32]) -> Result<Vec<usize>, String> {
    let ggml = llama_cpp_2::list_llama_ggml_backend_devices();
    cuda.iter()
        .map(|cuda| {
            let name = format!("CUDA{cuda}");
            ggml.iter()
                .find(|d| d.name == name)
                .map(|d| d.index)
                .ok_or_else(|| format!("GPU {cuda} ({name}) is not a llama.cpp device; is this a CUDA build?"))
        })
        .collect()
}

/// Puts a placement plan into the model params: CUDA indices become ggml
/// device indices (`CUDA<i>` in ggml's device list), `main_gpu` is a position
/// in that list, and `tensor_split` follows the same order.
fn apply_gpu_plan(params: LlamaModelParams, gpu: &super::GpuParams) -> Result<LlamaModelParams, String> {
    use llama_cpp_2::model::params::LlamaSplitMode;
    let devices = ggml_devices(&gpu.devices)?;
    let split_mode = match gpu.split_mode {
        crate::gpu::SplitMode::None => LlamaSplitMode::None,
        crate::gpu::SplitMode::Layer => LlamaSplitMode::Layer,
        crate::gpu::SplitMode::Row => LlamaSplitMode::Row,
    };
    if devices.is_empty() {
        // CPU only: llama.cpp clears its device list only for this combination.
        return Ok(params.with_n_gpu_layers(0).with_split_mode(LlamaSplitMode::None).with_main_gpu(-1));
    }
    params
        .with_n_gpu_layers(gpu.n_gpu_layers)
        .with_split_mode(split_mode)
        .with_main_gpu(0)
        .with_tensor_split(&gpu.tensor_split)
        .with_devices(&devices)
        .map_err(|e| format!("cannot select GPUs {devices:?}: {e}"))
}

/// One request occupying a sequence slot.
struct Active {
    tx: EventSender,
    prompt: Vec<LlamaToken>,
    sampler: LlamaSampler,
    text: TextStream,
    max_tokens: Option<u32>,
    generated: u32,
    /// Sampled but not yet decoded; `None` while the prompt is prefilling.
    pending: Option<LlamaToken>,
    /// Index of this sequence's logits in the batch just decoded.
    logits_at: Option<i32>,
}

struct Slot {
    seq: i32,
    /// Tokens whose KV entries this slot's sequence holds: a prefix cache for
    /// the next request (multi-turn chats resend the whole conversation).
    cached: Vec<LlamaToken>,
    active: Option<Active>,
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    queue: VecDeque<(GenerationRequest, EventSender)>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx_slot: usize,
    n_vocab: i32,
    stats: Arc<Stats>,
}

impl<'m> Worker<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, info: &ModelInfo, stats: Arc<Stats>) -> Self {
        let n_batch = ctx.n_batch() as usize;
        let slots = (0..info.parallel as i32).map(|seq| Slot { seq, cached: Vec::new(), active: None }).collect();
        Self {
            model,
            ctx,
            slots,
            queue: VecDeque::new(),
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_ctx_slot: info.n_ctx_slot as usize,
            n_vocab: info.n_vocab as i32,
            stats,
        }
    }

    fn run(&mut self, commands: &std_mpsc::Receiver<Command>) {
        loop {
            let idle = self.queue.is_empty() && self.slots.iter().all(|s| s.active.is_none());
            if idle {
                match commands.recv() {
                    Ok(cmd) => {
                        if !self.accept(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.accept(cmd) {
                            return;
                        }
                    }
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.drop_cancelled();
            self.admit();
            self.step();
            self.publish_stats();
        }
    }

    /// Takes one command; false means shut down.
    fn accept(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate(req, tx) => {
                self.queue.push_back((req, tx));
                true
            }
            Command::CancelAll => {
                self.cancel_all("cancelled: the model is being unloaded");
                true
            }
            Command::Shutdown => {
                self.cancel_all("the server is shutting down");
                false
            }
        }
    }

    /// Ends every running and pending generation on purpose (an unload or
    /// shutdown, not an engine failure).
    fn cancel_all(&mut self, reason: &str) {
        for slot in &mut self.slots {
            if let Some(active) = slot.active.take() {
                let _ = active.tx.send(GenerationEvent::Cancelled(reason.to_string()));
            }
        }
        for (_, tx) in self.queue.drain(..) {
            let _ = tx.send(GenerationEvent::Cancelled(reason.to_string()));
        }
    }

    fn publish_stats(&self) {
        let busy = self.slots.iter().filter(|s| s.active.is_some()).count() as u32;
        self.stats.busy.store(busy, Ordering::Relaxed);
        self.stats.queued.store(self.queue.len() as u32, Ordering::Relaxed);
    }

    /// Frees the slots of clients that went away (their receiver was dropped).
    fn drop_cancelled(&mut self) {
        self.queue.retain(|(_, tx)| !tx.is_closed());
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                tracing::debug!(seq = slot.seq, "client went away; freeing slot");
                slot.active = None;
            }
        }
    }

    /// Moves queued requests into free slots, preferring the slot whose cached
    /// tokens share the longest prefix with the prompt.
    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let Some((req, tx)) = self.queue.pop_front() else { break };
            if req.prompt.is_empty() || req.prompt.len() >= self.n_ctx_slot {
                // The HTTP layer rejects these; this guards llama.cpp against them.
                let _ = tx.send(GenerationEvent::Failed(format!(
                    "prompt of {} tokens does not fit a context of {}",
                    req.prompt.len(),
                    self.n_ctx_slot
                )));
                continue;
            }
            let prompt: Vec<LlamaToken> = req.prompt.iter().map(|&t| LlamaToken(t as i32)).collect();
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
                .max_by_key(|(_, s)| common_prefix(&s.cached, &prompt))
                .map(|(i, _)| i);
            let Some(i) = best else {
                self.queue.push_front((req, tx));
                break;
            };
            // Keep at least one prompt token to decode: its logits start generation.
            let reuse = common_prefix(&self.slots[i].cached, &prompt).min(prompt.len().saturating_sub(1));
            let seq = self.slots[i].seq;
            let reuse = match self.ctx.kv_cache_seq_rm(seq, Some(reuse as u32), None) {
                Ok(()) => reuse,
                Err(_) => {
                    // Recurrent models cannot drop a tail; start the sequence afresh.
                    let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
                    0
                }
            };
            self.slots[i].cached.truncate(reuse);
            let sampler = build_sampler(&req.sampling, self.n_vocab, &prompt);
            self.slots[i].active = Some(Active {
                tx,
                prompt,
                sampler,
                text: TextStream::new(req.stop),
                max_tokens: req.max_tokens,
                generated: 0,
                pending: None,
                logits_at: None,
            });
        }
    }

    /// Decodes one batch and samples every sequence that produced logits.
    fn step(&mut self) {
        self.batch.clear();
        // Generating sequences first: one token each keeps their latency flat.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            active.logits_at = None;
            if let Some(token) = active.pending.take() {
                let pos = slot.cached.len() as i32;
                active.logits_at = Some(self.batch.n_tokens());
                if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                    // Cannot happen: n_batch >= parallel. Put the token back.
                    active.pending = Some(token);
                    active.logits_at = None;
                    continue;
                }
                slot.cached.push(token);
            }
        }
        // Then prompt chunks in the room left.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            if active.generated > 0 || active.logits_at.is_some() {
                continue;
            }
            let done = slot.cached.len();
            let room = self.n_batch - self.batch.n_tokens() as usize;
            let take = (active.prompt.len() - done).min(room);
            for k in 0..take {
                let at = done + k;
                let last = at + 1 == active.prompt.len();
                if last {
                    active.logits_at = Some(self.batch.n_tokens());
                }
                let _ = self.batch.add(active.prompt[at], at as i32, &[slot.seq], last);
                slot.cached.push(active.prompt[at]);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            self.fail_batch(&format!("decode failed: {e}"));
            return;
        }
        let n_ctx_slot = self.n_ctx_slot;
        let vocab = self.model.vocab();
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            let Some(idx) = active.logits_at.take() else { continue };
            let token = active.sampler.sample(&self.ctx, idx);
            let outcome = if vocab.is_eog(token) {
                Some(FinishReason::Stop)
            } else {
                active.generated += 1;
                let mut piece = Vec::new();
                vocab.token_to_piece_into(token, &mut piece, false, None);
                let pushed = active.text.push(&piece);
                if !pushed.text.is_empty() && active.tx.send(GenerationEvent::Text(pushed.text)).is_err() {
                    slot.active = None;
                    continue;
                }
                if pushed.stopped {
                    Some(FinishReason::Stop)
                } else if active.max_tokens.is_some_and(|m| active.generated >= m)
                    || slot.cached.len() + 1 >= n_ctx_slot
                {
                    Some(FinishReason::Length)
                } else {
                    active.pending = Some(token);
                    None
                }
            };
            if let Some(finish_reason) = outcome {
                if let Some(mut done) = slot.active.take() {
                    // Text held back as a possible stop-string start is real output.
                    let rest = done.text.finish();
                    if !rest.is_empty() {
                        let _ = done.tx.send(GenerationEvent::Text(rest));
                    }
                    let usage = Usage { prompt_tokens: done.prompt.len() as u32, completion_tokens: done.generated };
                    let _ = done.tx.send(GenerationEvent::Done { finish_reason, usage });
                }
            }
        }
    }

    /// A failed decode leaves the KV cache of this batch's sequences unknown:
    /// fail their requests and clear their caches.
    fn fail_batch(&mut self, message: &str) {
        tracing::error!("{message}");
        for slot in &mut self.slots {
            if let Some(active) = slot.active.take() {
                let _ = active.tx.send(GenerationEvent::Failed(message.to_string()));
                let _ = self.ctx.kv_cache_seq_rm(slot.seq, None, None);
                slot.cached.clear();
            }
        }
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The sampler chain, in llama.cpp's usual order: bias, penalties, truncation,
/// temperature, then the pick (greedy at temperature 0).
fn build_sampler(p: &SamplingParams, n_vocab: i32, prompt: &[LlamaToken]) -> LlamaSampler {
    let mut chain = Vec::new();
    if !p.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> =
            p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t as i32), b)).collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    let penalties = p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
    if penalties {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.penalty_last_n,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed.unwrap_or(u32::MAX)));
    }
    let mut sampler = LlamaSampler::chain_simple(chain);
    if penalties {
        // The penalties look back over the prompt too, as llama-server does.
        let tail = prompt.len().saturating_sub(p.penalty_last_n.max(0) as usize);
        sampler.accept_many(&prompt[tail..]);
    }
    sampler
}
