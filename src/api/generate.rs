//! What chat and text completions share: tokenize and check the prompt, start
//! the generation, and either collect its events or hand them to a stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;

use crate::engine::loaded::LoadedModel;
use crate::engine::{EventReceiver, FinishReason, GenerationEvent, GenerationRequest, PromptProgress, TokenId, TokenLogprob, Usage};

use super::error::{generation_error, ApiError};
use super::reqlog::RequestLog;
use super::validate::{Prompt, ValidSampling};

/// Frames a prompt-progress event of a stream (llama-server's
/// `return_progress`); the protocol that offers it sets one.
pub type ProgressFramer = Box<dyn FnMut(&PromptProgress) -> Bytes + Send>;

/// A started generation, and the request's log line its events complete.
pub struct Started {
    pub events: EventReceiver,
    pub log: RequestLog,
    /// Tokens of the prompt, known before anything is generated.
    pub prompt_tokens: usize,
    /// Streams only: progress frames (none: progress events are dropped).
    pub progress: Option<ProgressFramer>,
    /// What it has done so far, kept by [`pump`] (`timings_per_token`).
    pub live: Live,
}

/// What a streamed generation has done so far: its prompt (and the cached
/// part, from its first progress event) and the text pieces sent, as a
/// stand-in for tokens. Shared with the framers that report `timings`.
#[derive(Clone)]
pub struct Live(Arc<parking_lot::Mutex<Usage>>);

impl Live {
    pub fn new(prompt_tokens: usize) -> Self {
        Live(Arc::new(parking_lot::Mutex::new(Usage { prompt_tokens: prompt_tokens as u32, ..Usage::default() })))
    }

    /// llama-server's `timings` so far.
    pub fn timings(&self, log: &RequestLog) -> serde_json::Value {
        let usage = *self.0.lock();
        log.timings(&usage)
    }
}

/// llama-server's `timings` of a prompt's read so far, as a progress event
/// reports it (nothing generated yet).
pub fn progress_timings(p: &PromptProgress) -> serde_json::Value {
    let usage = Usage { prompt_tokens: p.processed, cached_tokens: p.cache, ..Usage::default() };
    super::reqlog::timings_of(&usage, p.time_ms, 0.0)
}

/// llama-server's `prompt_progress` object.
pub fn progress_value(p: &PromptProgress) -> serde_json::Value {
    serde_json::json!({"total": p.total, "cache": p.cache, "processed": p.processed, "time_ms": p.time_ms})
}

/// No token of any vocabulary we serve is longer than this many bytes: a
/// prompt of more than `n_ctx` times this cannot fit and is refused before
/// it is tokenized.
const MAX_TOKEN_BYTES: usize = 256;

/// The error for a prompt of `tokens` (or more) in a context of `n_ctx`.
pub fn too_long(tokens: &str, n_ctx: usize, prompt_param: &str) -> ApiError {
    ApiError::ContextLengthExceeded {
        n_prompt_tokens: tokens.parse().ok(),
        n_ctx: Some(n_ctx),
        message: format!(
            "the prompt has {tokens} tokens but a request's context holds {n_ctx} (including at least one generated token); shorten `{prompt_param}` or raise --ctx-size"
        ),
        param: prompt_param.to_string(),
    }
}

/// Tokenizes `prompt` (off the runtime), checks it against the per-request
/// context and queues it.
pub async fn start(
    model: &Arc<LoadedModel>,
    prompt: Prompt,
    sampling: &ValidSampling,
    prompt_param: &str,
    log: RequestLog,
) -> Result<Started, ApiError> {
    let tokens = prompt_tokens(model, prompt, prompt_param).await?;
    let prompt_tokens = tokens.len();
    let events = model.generate(request(tokens, sampling))?;
    Ok(Started { events, log, prompt_tokens, progress: None, live: Live::new(prompt_tokens) })
}

/// `prompt` as tokens (tokenized off the runtime), checked against the
/// per-request context.
pub async fn prompt_tokens(model: &Arc<LoadedModel>, prompt: Prompt, prompt_param: &str) -> Result<Vec<TokenId>, ApiError> {
    let engine = &model.engine;
    let info = engine.info();
    let n_ctx = info.n_ctx_slot as usize;
    let tokens = match prompt {
        // Checked against the GGUF header's vocabulary already; this is the loaded model's.
        Prompt::Tokens(ids) => super::validate::token_ids(prompt_param, &ids, info.n_vocab)?,
        text => {
            if text_bytes(&text) > n_ctx.saturating_mul(MAX_TOKEN_BYTES) {
                return Err(too_long(&format!("more than {n_ctx}"), n_ctx, prompt_param));
            }
            let tokenizer = model.clone();
            let ids = super::cpu::run(move || prompt_ids(&tokenizer, &text, true)).await?;
            super::validate::token_ids(prompt_param, &ids, info.n_vocab)?
        }
    };
    if tokens.is_empty() {
        return Err(super::error::invalid(prompt_param, "the prompt is empty"));
    }
    if tokens.len() >= n_ctx {
        return Err(too_long(&tokens.len().to_string(), n_ctx, prompt_param));
    }
    Ok(tokens)
}

/// Bytes of text a prompt holds.
fn text_bytes(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(t) => t.len(),
        Prompt::Tokens(_) => 0,
        Prompt::Mixed(pieces) => pieces.iter().map(text_bytes).sum(),
    }
}

/// A prompt's ids: text tokenized (with BOS first when `bos` and the model
/// adds one), ids as given, a mixed prompt piece by piece (BOS only before a
/// leading text). Blocking: call it off the runtime.
pub fn prompt_ids(model: &LoadedModel, prompt: &Prompt, bos: bool) -> Vec<TokenId> {
    match prompt {
        Prompt::Text(text) => model.engine.tokenize(text, bos && adds_bos(model.engine.info(), text)),
        Prompt::Tokens(ids) => ids.clone(),
        Prompt::Mixed(pieces) => pieces.iter().enumerate().flat_map(|(i, p)| prompt_ids(model, p, bos && i == 0)).collect(),
    }
}

/// Whether tokenizing `text` prepends BOS: when the model adds one and the
/// text does not start with it already.
fn adds_bos(info: &crate::engine::ModelInfo, text: &str) -> bool {
    info.add_bos && (info.bos_token.is_empty() || !text.starts_with(&info.bos_token))
}

/// Where `before`, the start of the prompt text that became `tokens`, ends
/// in `tokens` (tokenized the same way; a token that spans the boundary is
/// left out): a branch point for the engine (`GenerationRequest::branch_points`).
pub async fn branch_point(model: &Arc<LoadedModel>, before: String, tokens: &[TokenId]) -> Result<u32, ApiError> {
    let add_bos = adds_bos(model.engine.info(), &before);
    let tokenizer = model.clone();
    let head = super::cpu::run(move || tokenizer.engine.tokenize(&before, add_bos)).await?;
    Ok(crate::engine::slots::common_prefix(&head, tokens) as u32)
}

/// The engine's request for `tokens` sampled as `sampling` says.
pub fn request(tokens: Vec<TokenId>, sampling: &ValidSampling) -> GenerationRequest {
    GenerationRequest {
        prompt: tokens,
        sampling: sampling.params.clone(),
        max_tokens: sampling.max_tokens,
        stop: sampling.stop.clone(),
        logprobs: sampling.logprobs,
        post_sampling_probs: sampling.post_sampling_probs,
        return_progress: sampling.return_progress && sampling.stream,
        speculative: sampling.speculative,
        keep_special: sampling.keep_special.clone(),
        branch_points: Vec::new(),
        cache_prompt: sampling.cache_prompt,
    }
}

/// The whole output of a non-streamed generation.
pub struct Collected {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Each generated token's log-probability (requests with `logprobs`).
    pub logprobs: Vec<TokenLogprob>,
}

pub async fn collect(started: Started) -> Result<Collected, ApiError> {
    let Started { mut events, log, .. } = started;
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Text(t) => {
                log.first_token();
                text.push_str(&t);
            }
            GenerationEvent::Logprob(lp) => logprobs.push(lp),
            GenerationEvent::Progress(_) => {}
            GenerationEvent::Done { finish_reason, usage } => {
                log.done(&usage);
                return Ok(Collected { text, finish_reason, usage, logprobs });
            }
            ended => {
                if let Some(e) = generation_error(&ended) {
                    return Err(e);
                }
            }
        }
    }
    Err(ApiError::Internal("the model worker stopped before finishing".into()))
}

/// Unique-enough response ids (`chatcmpl-...`, `cmpl-...`).
pub fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:08x}{:06x}", nanos, n & 0xff_ffff)
}

/// How a stream frames what is not a text piece: an error, and the end.
pub struct Framing {
    pub error: fn(&ApiError) -> Bytes,
    /// Sent after the last event (`None`: the stream just ends).
    pub end: Option<Bytes>,
}

/// OpenAI's SSE: an error envelope event, then `data: [DONE]`.
pub fn sse_framing() -> Framing {
    Framing { error: |e| super::sse::data(&e.body()), end: Some(super::sse::done()) }
}

/// Streams a generation as SSE: `prologue` frames first, then what [`pump`]
/// sends. `permit` (the scheduler's slot) is held until the stream ends.
pub fn stream_sse(
    started: Started,
    permit: crate::scheduler::Permit,
    prologue: Vec<Bytes>,
    text: impl FnMut(String, &[TokenLogprob]) -> Bytes + Send + 'static,
    finish: impl FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static,
) -> axum::response::Response {
    super::choices::stream_many(vec![(started, text, finish)], 1, permit, prologue, |_| Vec::new())
}

/// Sends one frame per text piece (with the log-probabilities of the tokens
/// that arrived since the last one), the frames `finish` makes from the
/// outcome, then the framing's end; an engine failure becomes an error frame.
/// The stream ends at the generation's last event, whether or not the engine
/// drops its sender. Returns early when the client is gone: dropping `events` then tells the
/// engine to free the slot.
pub async fn pump(
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    started: Started,
    mut text: impl FnMut(String, &[TokenLogprob]) -> Bytes,
    finish: impl FnOnce(FinishReason, Usage) -> Vec<Bytes>,
    framing: &Framing,
) {
    let Started { mut events, log, mut progress, live, .. } = started;
    let end = |mut frames: Vec<Bytes>| {
        frames.extend(framing.end.clone());
        frames
    };
    let mut finish = Some(finish);
    let mut logprobs = Vec::new();
    loop {
        let (frames, last) = match events.recv().await {
            Some(GenerationEvent::Text(t)) => {
                log.first_token();
                live.0.lock().completion_tokens += 1;
                let frame = text(t, &logprobs);
                logprobs.clear();
                (vec![frame], false)
            }
            Some(GenerationEvent::Logprob(lp)) => {
                logprobs.push(lp);
                continue;
            }
            Some(GenerationEvent::Progress(p)) => {
                live.0.lock().cached_tokens = p.cache;
                match progress.as_mut() {
                    Some(frame) => (vec![frame(&p)], false),
                    None => continue,
                }
            }
            Some(GenerationEvent::Done { finish_reason, usage }) => {
                log.done(&usage);
                (end(finish.take().map(|f| f(finish_reason, usage)).unwrap_or_default()), true)
            }
            // A failure or cancellation is the stream's last event: an
            // error frame, then the end as after any stream.
            Some(ended) => {
                let error = generation_error(&ended);
                log.ended(&error.as_ref().map_or_else(|| "ended".to_string(), |e| e.to_string()));
                (end(error.map(|e| (framing.error)(&e)).into_iter().collect()), true)
            }
            None => {
                let e = ApiError::Internal("the model worker stopped before finishing".into());
                log.ended(&e.to_string());
                (end(vec![(framing.error)(&e)]), true)
            }
        };
        // A framer may have nothing to send yet (text held back as a possible tool-call mark).
        for frame in frames.into_iter().filter(|f| !f.is_empty()) {
            if tx.send(frame).await.is_err() {
                log.ended("client disconnected");
                return;
            }
        }
        if last {
            return;
        }
    }
}
