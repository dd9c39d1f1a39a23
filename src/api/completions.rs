//! `POST /v1/completions` (legacy text completions).

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::Extension;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, response_id, start, stream_sse};
use super::openai::*;
use super::reqlog::RequestLog;
use super::validate;
use super::{sse, unix_now, AppState};

pub async fn completions(
    State(state): State<AppState>,
    Extension(log): Extension<RequestLog>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    // Validated before a model is acquired: a bad request never causes a swap.
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    super::embeddings::refuse_generation(view)?;
    let valid = validate::completion(req, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    let model_id = view.spec.id.clone();
    let permit = state.scheduler.acquire(view.index).await?;
    let model = permit.model.clone();
    validate::against_model(&valid.sampling, &*model.engine)?;
    // `echo`: the answer starts with the prompt as text.
    let echo = match (&valid.prompt, valid.echo) {
        (_, false) => None,
        (validate::Prompt::Text(text), true) => Some(text.clone()),
        (validate::Prompt::Tokens(ids), true) => {
            let (detokenizer, ids) = (model.clone(), ids.clone());
            Some(super::cpu::run(move || detokenizer.engine.detokenize(&ids)).await?)
        }
    };
    let started = start(&model, valid.prompt, &valid.sampling, "prompt", log).await?;
    let id = response_id("cmpl");
    let created = unix_now();
    let fingerprint = state.build.fingerprint();
    let completion = move |text: String, finish_reason: Option<&'static str>, usage: Option<UsageOut>, logprobs: Option<serde_json::Value>| {
        TextCompletion {
            id: id.clone(),
            object: "text_completion",
            created,
            model: model_id.clone(),
            choices: vec![TextChoice { index: 0, text, logprobs, finish_reason }],
            usage,
            system_fingerprint: fingerprint.clone(),
        }
    };
    let wants_logprobs = valid.sampling.logprobs.is_some();
    let echoed_chars = echo.as_ref().map_or(0, |e| e.chars().count());

    if !valid.sampling.stream {
        let out = collect(started).await?;
        drop(permit);
        let text = echo.unwrap_or_default() + &out.text;
        let logprobs = wants_logprobs.then(|| super::logprobs::completion(&out.logprobs, echoed_chars).0);
        return Ok(Json(completion(text, Some(out.finish_reason.as_str()), Some(out.usage.into()), logprobs)).into_response());
    }

    let include_usage = valid.sampling.include_usage;
    let text_chunk = completion.clone();
    let offset = AtomicUsize::new(echoed_chars);
    Ok(stream_sse(
        started,
        permit,
        echo.into_iter().map(|prompt| sse::data(&completion(prompt, None, None, None))).collect(),
        move |text, lps: &[crate::engine::TokenLogprob]| {
            // `text_offset` runs on from the echoed prompt and earlier chunks.
            let logprobs = wants_logprobs.then(|| {
                let (value, end) = super::logprobs::completion(lps, offset.load(Ordering::Relaxed));
                offset.store(end, Ordering::Relaxed);
                value
            });
            sse::data(&text_chunk(text, None, None, logprobs))
        },
        move |finish_reason, usage| {
            let mut frames = vec![sse::data(&completion(String::new(), Some(finish_reason.as_str()), None, None))];
            if include_usage {
                let mut usage_chunk = completion(String::new(), None, Some(usage.into()), None);
                usage_chunk.choices.clear();
                frames.push(sse::data(&usage_chunk));
            }
            frames
        },
    ))
}
