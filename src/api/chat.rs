//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, pump, response_id, start, stream_sse, Started};
use super::openai::*;
use super::{sse, unix_now, AppState};
use crate::engine::{FinishReason, Usage};
use crate::scheduler::Permit;
use crate::validate::ValidChat;

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let index = state.registry.resolve(req.model.as_deref())?;
    let entry = state.registry.entry(index);
    let spec = &entry.spec;
    let model_id = spec.id.clone();
    let chunks = Chunks::new(&state, model_id.clone(), req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage));
    if state.notify_swaps && req.sampling.stream && entry.loaded().is_none() {
        // Check everything that needs no model now, so bad input is still a 400.
        crate::validate::chat(req.clone(), u32::MAX, &spec.defaults())?;
        return Ok(stream_after_load(state, index, req, chunks));
    }
    let permit = state.scheduler.acquire(index).await?;
    let (valid, started) = prepare(&state, &permit, req)?;

    if !valid.sampling.stream {
        let out = collect(started.events).await?;
        drop(permit);
        return Ok(Json(ChatCompletion {
            id: chunks.id,
            object: "chat.completion",
            created: chunks.created,
            model: model_id,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: out.text },
                logprobs: None,
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
    Ok(stream_sse(started.events, permit, prologue, text, finish))
}

/// Validates against the loaded model, renders the template, starts generating.
fn prepare(state: &AppState, permit: &Permit, req: ChatCompletionRequest) -> Result<(ValidChat, Started), ApiError> {
    let model = &permit.model;
    let entry = state.registry.entry(permit.index);
    let spec = &entry.spec;
    let valid = crate::validate::chat(req, model.engine.info().n_vocab, &spec.defaults())?;
    let prompt = model.render_chat(&valid.messages, true, valid.tools.as_ref(), valid.template_kwargs.as_ref())?;
    let started = start(model, &prompt, &valid.sampling, "messages")?;
    Ok((valid, started))
}

/// `--notify-swaps`: the stream starts at once; while the model loads, the
/// client gets progress in `delta.reasoning_content`, then the answer. Errors
/// after this point can only be sent as error events in the stream.
fn stream_after_load(state: AppState, index: usize, req: ChatCompletionRequest, chunks: Chunks) -> Response {
    let (tx, response) = sse::channel_response();
    let chunks = Arc::new(chunks);
    tokio::spawn(async move {
        if tx.send(chunks.role()).await.is_err() {
            return;
        }
        let name = state.registry.entry(index).spec.id.clone();
        let mut progress = state.scheduler.progress(index);
        let acquire = state.scheduler.acquire(index);
        tokio::pin!(acquire);
        let mut last_sent = None;
        let permit = loop {
            tokio::select! {
                permit = &mut acquire => break permit,
                changed = progress.changed() => {
                    let percent = *progress.borrow_and_update();
                    if changed.is_err() || percent.is_none() || percent == last_sent {
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
        let prepared = permit.and_then(|permit| prepare(&state, &permit, req).map(|(_, started)| (permit, started)));
        match prepared {
            Ok((_permit, started)) => {
                let (text, finish) = chunks.framers();
                pump(&tx, started.events, text, finish).await;
            }
            Err(e) => {
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
}

impl Chunks {
    fn new(state: &AppState, model: String, include_usage: bool) -> Self {
        Self {
            id: response_id("chatcmpl"),
            created: unix_now(),
            model,
            fingerprint: state.build.fingerprint(),
            include_usage,
        }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice { index: 0, delta, logprobs: None, finish_reason }],
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
    fn framers(self: Arc<Self>) -> (impl Fn(String) -> Bytes + Send + 'static, impl FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static) {
        let for_text = self.clone();
        let text = move |t: String| sse::data(&for_text.chunk(Delta { content: Some(t), ..Delta::default() }, None));
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
