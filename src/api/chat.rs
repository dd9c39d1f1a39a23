//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, response_id, start, stream_sse};
use super::openai::*;
use super::{sse, unix_now, AppState};

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let permit = state.permit(req.model.as_deref()).await?;
    let model = permit.model.clone();
    let spec = &state.registry.entry(permit.index).spec;
    let model_id = spec.id.clone();
    let valid = crate::validate::chat(req, model.engine.info().n_vocab, &spec.defaults())?;
    let prompt = model.render_chat(&valid.messages, true, valid.tools.as_ref(), valid.template_kwargs.as_ref())?;
    let started = start(&model, &prompt, &valid.sampling, "messages")?;
    let id = response_id("chatcmpl");
    let created = unix_now();
    let fingerprint = state.build.fingerprint();

    if !valid.sampling.stream {
        let out = collect(started.events).await?;
        drop(permit);
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: model_id,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: out.text },
                logprobs: None,
                finish_reason: out.finish_reason.as_str(),
            }],
            usage: out.usage.into(),
            system_fingerprint: fingerprint,
        })
        .into_response());
    }

    let include_usage = valid.sampling.include_usage;
    let chunk = move |delta: Delta, finish_reason: Option<&'static str>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model_id.clone(),
        choices: vec![ChatChunkChoice { index: 0, delta, logprobs: None, finish_reason }],
        usage: include_usage.then_some(None),
        system_fingerprint: fingerprint.clone(),
    };
    let first = chunk(Delta { role: Some("assistant"), content: Some(String::new()) }, None);
    let prologue = vec![sse::data(&first)];
    let text_chunk = chunk.clone();
    Ok(stream_sse(
        started.events,
        permit,
        prologue,
        move |text| sse::data(&text_chunk(Delta { role: None, content: Some(text) }, None)),
        move |finish_reason, usage| {
            let mut frames = vec![sse::data(&chunk(Delta::default(), Some(finish_reason.as_str())))];
            if include_usage {
                let mut usage_chunk = chunk(Delta::default(), None);
                usage_chunk.choices.clear();
                usage_chunk.usage = Some(Some(usage.into()));
                frames.push(sse::data(&usage_chunk));
            }
            frames
        },
    ))
}
