//! `POST /v1/completions` (legacy text completions).

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::Extension;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{response_id, stream_sse};
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
    let mut valid = validate::completion(req, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    let model_id = view.spec.id.clone();
    let permit = state.scheduler.acquire(view.index).await?;
    let model = permit.model.clone();
    validate::against_model(&mut valid.sampling, &model.engine).await?;
    // One generation per prompt and `n` (seeds one apart when a seed is
    // given); `echo`: each answer starts with its prompt as text.
    let n = valid.sampling.n as usize;
    let listed = valid.prompts.len() > 1;
    let (mut started, mut echoes) = (Vec::new(), Vec::new());
    for (p, prompt) in valid.prompts.into_iter().enumerate() {
        let echo = match (&prompt, valid.echo) {
            (_, false) => None,
            (validate::Prompt::Text(text), true) => Some(text.clone()),
            (ids, true) => {
                let (detokenizer, ids) = (model.clone(), ids.clone());
                Some(super::cpu::run(move || detokenizer.engine.detokenize(&super::generate::prompt_ids(&detokenizer, &ids, false))).await?)
            }
        };
        let param = if listed { format!("prompt[{p}]") } else { "prompt".to_string() };
        let prompt = match &valid.suffix {
            Some(suffix) => fill_in_the_middle(&model, &model_id, prompt, suffix).await?,
            None => prompt,
        };
        started.extend(super::choices::start_choices(&model, prompt, None, &valid.sampling, &param, &log).await?);
        echoes.extend(std::iter::repeat(echo).take(n));
    }
    let id = response_id("cmpl");
    let created = unix_now();
    let fingerprint = state.build.fingerprint();
    let completion = move |index: usize, text: String, finish_reason: Option<&'static str>, usage: Option<UsageOut>, logprobs: Option<serde_json::Value>| {
        TextCompletion {
            id: id.clone(),
            object: "text_completion",
            created,
            model: model_id.clone(),
            choices: vec![TextChoice { index: index as u32, text, logprobs, finish_reason }],
            usage,
            system_fingerprint: fingerprint.clone(),
        }
    };
    let wants_logprobs = valid.sampling.logprobs.is_some();

    if !valid.sampling.stream {
        let outs = super::choices::collect_all(started).await?;
        drop(permit);
        let usages: Vec<crate::engine::Usage> = outs.iter().map(|o| o.usage).collect();
        let mut body = completion(0, String::new(), None, Some(super::choices::total_usage(&usages, n).into()), None);
        body.choices = outs
            .into_iter()
            .zip(echoes)
            .enumerate()
            .map(|(index, (out, echo))| {
                let echoed_chars = echo.as_ref().map_or(0, |e| e.chars().count());
                let logprobs = wants_logprobs.then(|| super::logprobs::completion(&out.logprobs, echoed_chars).0);
                let text = echo.unwrap_or_default() + &out.text;
                TextChoice { index: index as u32, text, logprobs, finish_reason: Some(out.finish_reason.as_str()) }
            })
            .collect();
        return Ok(Json(body).into_response());
    }

    let include_usage = valid.sampling.include_usage;
    let single = started.len() == 1;
    let mut prologue = Vec::new();
    let mut streams = Vec::new();
    for (index, (s, echo)) in started.into_iter().zip(echoes).enumerate() {
        let offset = AtomicUsize::new(echo.as_ref().map_or(0, |e| e.chars().count()));
        prologue.extend(echo.map(|prompt| sse::data(&completion(index, prompt, None, None, None))));
        let (text_chunk, finish_chunk) = (completion.clone(), completion.clone());
        let text = move |text, lps: &[crate::engine::TokenLogprob]| {
            // `text_offset` runs on from the echoed prompt and earlier chunks.
            let logprobs = wants_logprobs.then(|| {
                let (value, end) = super::logprobs::completion(lps, offset.load(Ordering::Relaxed));
                offset.store(end, Ordering::Relaxed);
                value
            });
            sse::data(&text_chunk(index, text, None, None, logprobs))
        };
        let finish = move |finish_reason: crate::engine::FinishReason, usage: crate::engine::Usage| {
            let mut frames = vec![sse::data(&finish_chunk(index, String::new(), Some(finish_reason.as_str()), None, None))];
            if include_usage && single {
                let mut usage_chunk = finish_chunk(index, String::new(), None, Some(usage.into()), None);
                usage_chunk.choices.clear();
                frames.push(sse::data(&usage_chunk));
            }
            frames
        };
        streams.push((s, text, finish));
    }
    if single {
        let (s, text, finish) = streams.remove(0);
        return Ok(stream_sse(s, permit, prologue, text, finish));
    }
    let end = move |usage: crate::engine::Usage| {
        let mut usage_chunk = completion(0, String::new(), None, Some(usage.into()), None);
        usage_chunk.choices.clear();
        if include_usage { vec![sse::data(&usage_chunk)] } else { Vec::new() }
    };
    Ok(super::choices::stream_many(streams, n, permit, prologue, end))
}

/// `suffix`: the prompt becomes the model's fill-in-the-middle prompt for
/// the text between `prefix` and `suffix`; a model without FIM tokens is
/// a 400 naming `suffix`.
pub(super) async fn fill_in_the_middle(
    model: &std::sync::Arc<crate::engine::loaded::LoadedModel>,
    name: &str,
    prefix: validate::Prompt,
    suffix: &str,
) -> Result<validate::Prompt, ApiError> {
    let info = model.engine.info();
    let Some(fim) = info.fim else {
        return Err(super::error::invalid(
            "suffix",
            format!("model `{name}` has no fill-in-the-middle tokens, so `suffix` cannot be honoured; use a code model that has them"),
        ));
    };
    let bos = info.bos_id.filter(|_| info.add_bos);
    let (tokenizer, suffix) = (model.clone(), suffix.to_string());
    let tokens = super::cpu::run(move || {
        let prefix = super::generate::prompt_ids(&tokenizer, &prefix, false);
        fim.prompt(bos, &prefix, &tokenizer.engine.tokenize(&suffix, false))
    })
    .await?;
    Ok(validate::Prompt::Tokens(tokens))
}
