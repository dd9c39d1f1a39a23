//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Extension;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, pump, response_id, start, stream_sse, Started};
use super::openai::*;
use super::reqlog::RequestLog;
use super::validate::{self, ValidChat};
use super::{sse, unix_now, AppState};
use crate::engine::{FinishReason, TokenLogprob, Usage};
use crate::scheduler::Permit;

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(log): Extension<RequestLog>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    // Everything that needs no loaded model is checked before one is
    // acquired: a bad request never causes a load or a swap.
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    super::embeddings::refuse_generation(view)?;
    let valid = validate::chat(req, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    let (index, model_id) = (view.index, view.spec.id.clone());
    let chunks = Chunks::new(&state, model_id.clone(), &valid.sampling);
    if state.notify_swaps && valid.sampling.stream && view.loaded().is_none() {
        return Ok(stream_after_load(state, index, valid, chunks, log));
    }
    let permit = state.scheduler.acquire(index).await?;
    let started = prepare(&permit, &valid, log).await?;

    if !valid.sampling.stream {
        let out = collect(started).await?;
        drop(permit);
        return Ok(Json(ChatCompletion {
            id: chunks.id,
            object: "chat.completion",
            created: chunks.created,
            model: model_id,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: out.text },
                logprobs: chunks.logprobs.then(|| super::logprobs::chat(&out.logprobs)),
                finish_reason: out.finish_reason.as_str(),
            }],
            usage: out.usage.into(),
            system_fingerprint: chunks.fingerprint,
        })
        .into_response());
    }
    let chunks = Arc::new(chunks);
    let prologue = vec![chunks.role()];
    let (text, finish) = chunks.clone().framers();
    Ok(stream_sse(started, permit, prologue, text, finish))
}

/// On the acquired model: the token-id guard, the template, the generation.
/// Rendering and tokenizing run off the runtime (`cpu::run`); a conversation
/// with more messages than the context has tokens is refused before either.
pub(super) async fn prepare(permit: &Permit, valid: &ValidChat, log: RequestLog) -> Result<Started, ApiError> {
    let model = permit.model.clone();
    let info = model.engine.info();
    validate::against_model(&valid.sampling, &*model.engine)?;
    let n_ctx = info.n_ctx_slot as usize;
    if valid.messages.len() >= n_ctx {
        return Err(super::generate::too_long(&format!("at least {}", valid.messages.len()), n_ctx, "messages"));
    }
    let (messages, tools, kwargs) = (valid.messages.clone(), valid.tools.clone(), valid.template_kwargs.clone());
    let renderer = model.clone();
    let prompt = super::cpu::run(move || renderer.render_chat(&messages, true, tools.as_ref(), kwargs.as_ref())).await??;
    start(&model, super::validate::Prompt::Text(prompt), &valid.sampling, "messages", log).await
}

/// `--notify-swaps`: the stream starts at once; while the model loads, the
/// client gets progress in `delta.reasoning_content` (from the scheduler's
/// snapshots), then the answer. Errors after this point can only be sent as
/// error events in the stream.
fn stream_after_load(state: AppState, index: usize, valid: ValidChat, chunks: Chunks, log: RequestLog) -> Response {
    let (tx, response) = sse::channel_response();
    let chunks = Arc::new(chunks);
    tokio::spawn(async move {
        if tx.send(chunks.role()).await.is_err() {
            return;
        }
        let name = chunks.model.clone();
        let mut snapshots = state.scheduler.watch();
        let acquire = state.scheduler.acquire(index);
        tokio::pin!(acquire);
        let mut last_sent = None;
        let permit = loop {
            tokio::select! {
                permit = &mut acquire => break permit,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The scheduler is gone: the acquire ends too.
                        break (&mut acquire).await;
                    }
                    let percent = snapshots.borrow_and_update().models.get(index).and_then(|m| m.progress);
                    if percent.is_none() || percent == last_sent {
                        continue;
                    }
                    last_sent = percent;
                    let note = format!("loading model {name}: {}%\n", percent.unwrap_or(0));
                    if tx.send(chunks.reasoning(note)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let prepared = match permit.map_err(ApiError::from) {
            Ok(permit) => prepare(&permit, &valid, log.clone()).await.map(|started| (permit, started)),
            Err(e) => Err(e),
        };
        match prepared {
            Ok((_permit, started)) => {
                let (text, finish) = chunks.framers();
                pump(&tx, started, text, finish, &super::generate::sse_framing()).await;
            }
            Err(e) => {
                log.ended(&e.to_string());
                let _ = tx.send(sse::data(&e.body())).await;
                let _ = tx.send(sse::done()).await;
            }
        }
    });
    response
}

/// Builds the chunks of one streamed chat completion.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
    include_usage: bool,
    /// The request asked for log-probabilities.
    logprobs: bool,
}

impl Chunks {
    fn new(state: &AppState, model: String, sampling: &validate::ValidSampling) -> Self {
        Self {
            id: response_id("chatcmpl"),
            created: unix_now(),
            model,
            fingerprint: state.build.fingerprint(),
            include_usage: sampling.include_usage,
            logprobs: sampling.logprobs.is_some(),
        }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> ChatCompletionChunk {
        self.chunk_with(delta, finish_reason, None)
    }

    fn chunk_with(&self, delta: Delta, finish_reason: Option<&'static str>, logprobs: Option<serde_json::Value>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice { index: 0, delta, logprobs, finish_reason }],
            usage: self.include_usage.then_some(None),
            system_fingerprint: self.fingerprint.clone(),
        }
    }

    /// The first chunk: the assistant role, empty content.
    fn role(&self) -> Bytes {
        sse::data(&self.chunk(Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() }, None))
    }

    fn reasoning(&self, note: String) -> Bytes {
        sse::data(&self.chunk(Delta { reasoning_content: Some(note), ..Delta::default() }, None))
    }

    /// The content-delta framer and the finish framer for [`pump`].
    #[allow(clippy::type_complexity)]
    fn framers(
        self: Arc<Self>,
    ) -> (impl Fn(String, &[TokenLogprob]) -> Bytes + Send + 'static, impl FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static) {
        let for_text = self.clone();
        let text = move |t: String, lps: &[TokenLogprob]| {
            let logprobs = for_text.logprobs.then(|| super::logprobs::chat(lps));
            sse::data(&for_text.chunk_with(Delta { content: Some(t), ..Delta::default() }, None, logprobs))
        };
        let finish = move |finish_reason: FinishReason, usage: Usage| {
            let mut frames = vec![sse::data(&self.chunk(Delta::default(), Some(finish_reason.as_str())))];
            if self.include_usage {
                let mut usage_chunk = self.chunk(Delta::default(), None);
                usage_chunk.choices.clear();
                usage_chunk.usage = Some(Some(usage.into()));
                frames.push(sse::data(&usage_chunk));
            }
            frames
        };
        (text, finish)
    }
}
