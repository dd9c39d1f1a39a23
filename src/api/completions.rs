//! `POST /v1/completions` (legacy text completions).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, response_id, start, stream_sse};
use super::openai::*;
use super::{sse, unix_now, AppState};

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let permit = state.permit(req.model.as_deref()).await?;
    let model = permit.model.clone();
    let entry = state.registry.entry(permit.index);
    let spec = &entry.spec;
    let model_id = spec.id.clone();
    let valid = crate::validate::completion(req, model.engine.info().n_vocab, &spec.defaults())?;
    let started = start(&model, &valid.prompt, &valid.sampling, "prompt")?;
    let id = response_id("cmpl");
    let created = unix_now();
    let fingerprint = state.build.fingerprint();
    let completion = move |text: String, finish_reason: Option<&'static str>, usage: Option<UsageOut>| TextCompletion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model_id.clone(),
        choices: vec![TextChoice { index: 0, text, logprobs: None, finish_reason }],
        usage,
        system_fingerprint: fingerprint.clone(),
    };

    if !valid.sampling.stream {
        let out = collect(started.events).await?;
        drop(permit);
        return Ok(Json(completion(out.text, Some(out.finish_reason.as_str()), Some(out.usage.into()))).into_response());
    }

    let include_usage = valid.sampling.include_usage;
    let text_chunk = completion.clone();
    Ok(stream_sse(
        started.events,
        permit,
        Vec::new(),
        move |text| sse::data(&text_chunk(text, None, None)),
        move |finish_reason, usage| {
            let mut frames = vec![sse::data(&completion(String::new(), Some(finish_reason.as_str()), None))];
            if include_usage {
                let mut usage_chunk = completion(String::new(), None, Some(usage.into()));
                usage_chunk.choices.clear();
                frames.push(sse::data(&usage_chunk));
            }
            frames
        },
    ))
}
