//! The seam between the HTTP layer and inference.
//!
//! The scheduler and the HTTP layer see only the [`Engine`] trait and
//! the plain types below, never llama.cpp types. `llama.rs` is the one file
//! that touches `llama_cpp_2`; `text.rs` holds the pure streaming-text logic
//! (UTF-8 reassembly and stop strings) so it can be unit-tested alone.

pub mod checkpoints;
pub mod embed;
pub mod factory;
pub mod kvcache;
pub mod kvdisk;
pub mod kvstore;
pub mod llama;
pub mod loaded;
pub mod prefetch;
pub mod slots;
pub mod spec;
pub mod step;
pub mod text;

use std::fmt;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc;

use crate::gpu::Placement;
use crate::types::{ModelSpec, Progress};

/// Per-slot context used when the user gives no `ctx_size`: large enough for
/// real conversations, small enough that `parallel` slots stay affordable.
pub const DEFAULT_CTX_CAP: u32 = 4096;

/// Turns `ctx_size` as llama-server means it (the model's whole KV context)
/// into the context of one request slot: split evenly across the `parallel`
/// slots, or, unified, the whole of it for each slot. `kv_unified` is
/// `--kv-unified` / `--no-kv-unified` when given; else, as llama-server,
/// unified unless `--parallel` was given (`parallel_given`). `None` stays
/// `None` (the default per slot, see [`slot_context`]).
pub fn per_slot_ctx(total: Option<u32>, parallel: u32, parallel_given: bool, kv_unified: Option<bool>) -> Option<u32> {
    let unified = kv_unified.unwrap_or(!parallel_given);
    total.map(|c| if unified { c } else { c / parallel.max(1) })
}

/// The context one request slot gets: the requested size, else the training
/// context capped at [`DEFAULT_CTX_CAP`]; never above the training context.
pub fn slot_context(requested: Option<u32>, n_ctx_train: u32) -> u32 {
    requested.unwrap_or(DEFAULT_CTX_CAP.min(n_ctx_train)).min(n_ctx_train).max(1)
}

/// [`slot_context`] for a model not loaded yet: the training context from
/// its GGUF header (absent: [`DEFAULT_CTX_CAP`]), as llama.cpp will read it.
pub fn header_slot_context(header: &crate::gguf::GgufHeader, requested: Option<u32>) -> u32 {
    let n_ctx_train = header.context_length().unwrap_or(u64::from(DEFAULT_CTX_CAP));
    slot_context(requested, n_ctx_train.min(u64::from(u32::MAX)) as u32)
}

/// Where llama.cpp should put a model, in CUDA device indices (the engine
/// maps them to ggml's device list). Built from a `gpu::Placement`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuParams {
    /// CUDA indices of the devices used, main GPU first.
    pub devices: Vec<u32>,
    /// `None`: one GPU (the first device); `Layer`/`Row`: split across `devices`.
    pub split_mode: crate::gpu::SplitMode,
    /// llama.cpp's count: `n_layers + 1` offloads the output head too.
    pub n_gpu_layers: u32,
    /// One fraction per entry of `devices`.
    pub tensor_split: Vec<f32>,
    /// The whole model on the GPU(s), nothing left on the CPU.
    pub whole: bool,
}

pub use crate::types::{SamplingParams, TokenId};
pub use llama::{json_schema_grammar, json_schema_lark};

/// One generation job, fully validated: the prompt is already tokenized and
/// fits the context.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<TokenId>,
    pub sampling: SamplingParams,
    /// `None`: generate until end of generation or the context is full.
    pub max_tokens: Option<u32>,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many
    /// alternatives (`None`: no log-probabilities).
    pub logprobs: Option<u32>,
    /// The log-probabilities come from the distribution the sampler chain
    /// drew from (llama-server's `post_sampling_probs`), not the raw logits.
    pub post_sampling_probs: bool,
    /// Special tokens written out as text (tool-call marks such as
    /// `[TOOL_CALLS]`); other special tokens produce no text.
    pub keep_special: Vec<TokenId>,
    /// Prompt positions where a later prompt is likely to leave this one
    /// (where the last user message's content starts): a sliding-window
    /// model keeps a checkpoint there (see `checkpoints`).
    pub branch_points: Vec<u32>,
    /// Reuse what a slot's (or the host) KV cache holds of the prompt;
    /// `false` (llama-server's `cache_prompt: false`) reads it all again.
    pub cache_prompt: bool,
    /// Send a `Progress` event after each decode that reads the prompt.
    pub return_progress: bool,
    /// Speculative decoding settings of this request (over the model's).
    pub speculative: crate::types::SpecRequest,
}

/// A generated token's log-probability under the model (its raw logits,
/// before any sampler), and the most likely tokens at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: TokenId,
    /// The token's text as bytes (a piece may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// Most likely first; as many as the request asked for.
    pub top: Vec<(TokenId, Vec<u8>, f32)>,
}

/// Why a sequence ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token.
    Stop,
    /// A stop string: its index in the request's `stop`.
    StopSequence(u16),
    /// `max_tokens` reached or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence(_) => "stop",
            FinishReason::Length => "length",
        }
    }

    /// Ended by the model or a stop string (OpenAI's `stop`), not a limit.
    pub fn is_stop(self) -> bool {
        !matches!(self, FinishReason::Length)
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts for the `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens served from a cache instead of being decoded.
    pub cached_tokens: u32,
    /// Speculative decoding: tokens drafted, and of those accepted
    /// (llama-server's `draft_n`, `draft_n_accepted`).
    pub draft_tokens: u32,
    pub draft_accepted: u32,
}

/// What a running generation reports, in order: any number of `Text`, then
/// exactly one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// The next piece of output text; never splits a UTF-8 character.
    Text(String),
    /// A generated token's log-probability (requests with `logprobs`); sent
    /// before the text it produced.
    Logprob(TokenLogprob),
    Done { finish_reason: FinishReason, usage: Usage },
    /// The engine could not go on (a decode error, a prompt it cannot take).
    Failed(String),
    /// Ended on purpose: the model is being unloaded (`cancel_all`).
    Cancelled(String),
    /// How far the prompt's read got: once when the request takes its slot,
    /// then after each decode when it asked (`return_progress`).
    Progress(PromptProgress),
}

/// llama-server's `prompt_progress`: of `total` prompt tokens, `cache` came
/// from a cache and `processed` (those included) are in the KV cache, after
/// `time_ms` of reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptProgress {
    pub total: u32,
    pub cache: u32,
    pub processed: u32,
    pub time_ms: f64,
}

/// Receives a generation's events. Dropping it cancels the generation: the
/// engine notices at its next step and frees the sequence slot.
pub type EventReceiver = mpsc::UnboundedReceiver<GenerationEvent>;
pub type EventSender = mpsc::UnboundedSender<GenerationEvent>;

/// Facts about a loaded model, read once at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Context tokens available to one request (one sequence slot).
    pub n_ctx_slot: u32,
    pub n_ctx_train: u32,
    pub parallel: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    pub n_vocab: u32,
    pub bos_token: String,
    pub eos_token: String,
    /// Whether tokenizing a prompt should prepend BOS.
    pub add_bos: bool,
    /// `general.architecture` from the GGUF, e.g. "gemma3".
    pub architecture: Option<String>,
    /// `tokenizer.chat_template` from the GGUF, if any.
    pub chat_template: Option<String>,
    /// Length of an embedding vector (llama.cpp's `n_embd_out`).
    pub n_embd: u32,
    /// Most tokens one embedding input may have ([`embed::context_tokens`]).
    pub n_ctx_embed: u32,
    /// Fill-in-the-middle tokens, when the vocabulary has all three.
    pub fim: Option<FimTokens>,
    /// The beginning-of-sequence token id (a prompt built from ids starts with it when `add_bos`).
    pub bos_id: Option<TokenId>,
    /// Positions the sliding-window layers keep when they keep only their
    /// window (`--swa-full` off); 0 otherwise. Chat requests then mark where
    /// their last user message starts (`GenerationRequest::branch_points`).
    pub n_swa: u32,
    /// The draft model it loaded with (speculative decoding), if any.
    pub draft: Option<DraftInUse>,
}

/// A loaded model's draft model: its file, and whether its weights are
/// shared with a model or draft that was in use already (drafter.rs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DraftInUse {
    pub path: String,
    pub shared: bool,
}

/// A code model's fill-in-the-middle tokens: the prompt is
/// `pre PREFIX suf SUFFIX mid`, and the model writes the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FimTokens {
    pub pre: TokenId,
    pub suf: TokenId,
    pub mid: TokenId,
}

impl FimTokens {
    /// The prompt for the middle between `prefix` and `suffix` (PSM order,
    /// as llama-server builds it), after `bos` when the model adds one.
    pub fn prompt(&self, bos: Option<TokenId>, prefix: &[TokenId], suffix: &[TokenId]) -> Vec<TokenId> {
        let mut out = Vec::with_capacity(prefix.len() + suffix.len() + 4);
        out.extend(bos);
        out.push(self.pre);
        out.extend_from_slice(prefix);
        out.push(self.suf);
        out.extend_from_slice(suffix);
        out.push(self.mid);
        out
    }
}

/// Slot occupancy, for `/health` and `/props`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotStats {
    pub total: u32,
    pub busy: u32,
    pub queued: u32,
}

/// One sequence slot, for `/slots` (as of the last admission or finish).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SlotView {
    pub id: u32,
    pub is_processing: bool,
    /// Tokens its KV cache holds (a prefix the next request may reuse).
    pub n_cached: u32,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    /// The reason only: it reaches API clients, who need not learn the
    /// server's file layout (the path is in the server log).
    #[error("{reason}")]
    Load { path: String, reason: String },
    #[error("the model worker has stopped")]
    Stopped,
    /// The chat template file could not be read or the template not compiled.
    #[error("{0}")]
    Template(String),
}

/// Loads engines; the real one wraps llama.cpp ([`factory::LlamaFactory`]),
/// tests pass a fake.
pub trait EngineFactory: Send + Sync + 'static {
    /// Loads `spec` where the scheduler placed it (`None`: no GPU plan).
    fn load(&self, spec: &ModelSpec, placement: Option<&Placement>, progress: Progress) -> Result<Arc<dyn Engine>, EngineError>;
    /// Releases what a sleeping `spec` keeps (the scheduler dropped it).
    fn release_sleeper(&self, _spec: &ModelSpec) {}
}

/// A loaded model that can tokenize and generate. Implemented by the llama.cpp
/// engine and by the fake engine in tests.
pub trait Engine: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;
    /// Tokenizes text; special-token text such as `<start_of_turn>` is parsed
    /// as the special token.
    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<TokenId>;
    /// `tokenize`, where `parse_special: false` reads special-token text as
    /// plain text (llama-server's `/tokenize` field).
    fn tokenize_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<TokenId> {
        let _ = parse_special;
        self.tokenize(text, add_bos)
    }
    /// Turns tokens back into text. Callers check ids against `n_vocab` first.
    fn detokenize(&self, tokens: &[TokenId]) -> String;
    /// The end-of-generation token ids (what `ignore_eos` bans).
    fn eog_tokens(&self) -> Vec<TokenId> {
        Vec::new()
    }
    /// One token's bytes, which may be part of a UTF-8 character.
    fn token_bytes(&self, token: TokenId) -> Vec<u8> {
        self.detokenize(&[token]).into_bytes()
    }
    /// Queues a generation; events arrive on the returned receiver.
    fn generate(&self, request: GenerationRequest) -> Result<EventReceiver, EngineError>;
    /// Queues several generations at once (the `n` choices of one prompt),
    /// so that they are admitted together: an engine may then read their
    /// shared prompt once and copy its KV to the others.
    fn generate_many(&self, requests: Vec<GenerationRequest>) -> Result<Vec<EventReceiver>, EngineError> {
        requests.into_iter().map(|r| self.generate(r)).collect()
    }
    /// Whether a GBNF grammar (root rule `root`) parses against this
    /// model's vocabulary; asked before `generate`, so a bad grammar is the
    /// client's error, not a failed generation.
    fn check_grammar(&self, _grammar: &str) -> Result<(), String> {
        Ok(())
    }
    /// Queues an embedding of each input (token ids, each non-empty, in the
    /// vocabulary and at most `info().n_ctx_embed` long); one unit-norm
    /// vector per input arrives on the receiver. Runs on the engine's own
    /// thread, never on the caller's.
    fn embed(&self, _inputs: Vec<Vec<TokenId>>) -> Result<embed::EmbedReceiver, EngineError> {
        Ok(embed::answered(Err(embed::EmbedError::Failed("this engine does not compute embeddings".into()))))
    }
    fn slot_stats(&self) -> SlotStats;
    /// Each slot's state; by default only what `slot_stats` says.
    fn slots(&self) -> Vec<SlotView> {
        let stats = self.slot_stats();
        (0..stats.total).map(|id| SlotView { id, is_processing: id < stats.busy, n_cached: 0 }).collect()
    }
    /// Memory this model measurably holds (weights + context), if known.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
    /// Ends every running and queued generation with an error (forced unload).
    fn cancel_all(&self) {}
    /// What this load would keep in host memory while asleep
    /// (`scheduler/sleep.rs`): `Ok(0)` for CPU weights (the mapped file),
    /// `Ok(bytes)` of pinned memory for GPU weights, or why it cannot sleep.
    fn sleep_cost(&self) -> Result<u64, String> {
        Err("this engine cannot sleep".into())
    }
    /// Pinned host bytes this awake model still holds from an earlier sleep.
    fn pinned_bytes(&self) -> u64 {
        0
    }
    /// Stops the engine now (its worker and context), whoever else still
    /// holds it; the weights go to sleep if `sleep_on_unload` was called.
    /// Returns whether they did. Later calls (and the drop) do nothing more.
    fn shutdown(&self) -> bool {
        false
    }
    /// Called before the unload of a model the scheduler chose to sleep:
    /// the engine keeps its weights (asleep) for the next load of the same
    /// model, which then only wakes them and creates a context.
    fn sleep_on_unload(&self) {}
    /// Why this model should be unloaded and loaded again: its file
    /// changed on disk or was cut short under its mapping (`None`: fine).
    fn stale(&self) -> Option<String> {
        None
    }
    /// Where this model's load went (zero when unknown).
    fn load_timings(&self) -> LoadTimings {
        LoadTimings::default()
    }
}

/// The parts of a load, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LoadTimings {
    /// Reading the weights (or reusing them, see the weights cache).
    pub weights_ms: u64,
    /// Creating the context: KV cache and compute buffers.
    pub context_ms: u64,
}

/// The host-memory KV cache every model's worker shares (see [`kvstore`]).
pub type SharedKvStore = Arc<kvcache::HostKvCache<llama::SavedSeq>>;
