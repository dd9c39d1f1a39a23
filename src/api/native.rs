//! llama-server's own `POST /completion`: the same request fields as
//! `/v1/completions` (llama-server's names included: `n_predict`,
//! `cache_prompt`, ...), answered in llama-server's shape: `content`, `stop`,
//! `stop_type`, `tokens_predicted`, `tokens_evaluated`, `tokens_cached`,
//! `timings`; streamed as `data:` events whose last has `stop: true`, with no
//! `[DONE]`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{collect, pump, start, Framing};
use super::openai::CompletionRequest;
use super::reqlog::RequestLog;
use super::validate::{self, Prompt, ValidSampling};
use super::{sse, AppState};
use crate::engine::{FinishReason, TokenId, TokenLogprob, Usage};

/// llama-server's `stop_type`: `eos` (end-of-generation token), `word` (a
/// stop string), `limit`.
fn stop_type(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "eos",
        FinishReason::StopSequence(_) => "word",
        FinishReason::Length => "limit",
    }
}

/// llama-server's `completion_probabilities` (`n_probs`): per generated
/// token its id, text, bytes and log-probability, and the most likely
/// alternatives in the same shape.
/// With `post_sampling_probs`, probabilities (`prob`, `top_probs`) instead.
fn probabilities(logprobs: &[TokenLogprob], post_sampling: bool) -> Value {
    let entry = |id: u32, bytes: &[u8], logprob: f32| {
        let mut e = json!({"id": id, "token": String::from_utf8_lossy(bytes), "bytes": bytes});
        match post_sampling {
            true => e["prob"] = json!(logprob.exp()),
            false => e["logprob"] = json!(logprob),
        }
        e
    };
    let top = if post_sampling { "top_probs" } else { "top_logprobs" };
    logprobs
        .iter()
        .map(|lp| {
            let mut e = entry(lp.token, &lp.bytes, lp.logprob);
            e[top] = lp.top.iter().map(|(id, bytes, logprob)| entry(*id, bytes, *logprob)).collect();
            e
        })
        .collect()
}

/// llama-server's `response_fields`: only the fields at these paths
/// (`a/b` reads `body["a"]["b"]`), keyed by the path; none: all of it.
fn only_fields(body: Value, paths: &[String]) -> Value {
    if paths.is_empty() {
        return body;
    }
    let picked = paths.iter().filter_map(|p| body.pointer(&format!("/{p}")).map(|v| (p.clone(), v.clone())));
    Value::Object(picked.collect())
}

/// llama-server's `generation_settings`: what the request was sampled with
/// (`logit_bias` as `{token, bias}`, a banned token's bias null; with
/// `ignore_eos`, every end-of-generation token banned).
fn generation_settings(s: &ValidSampling, eog: &[TokenId]) -> Value {
    let entry = |token: TokenId, bias: f32| json!({"token": token, "bias": if bias.is_finite() { json!(bias) } else { Value::Null }});
    let mut bias: Vec<Value> = s.params.logit_bias.iter().map(|&(t, b)| entry(t, b)).collect();
    if s.params.ignore_eos {
        bias.extend(eog.iter().map(|&t| entry(t, f32::NEG_INFINITY)));
    }
    let mut g = s.params.to_json();
    g["n_predict"] = json!(s.max_tokens.map_or(-1, i64::from));
    g["n_probs"] = json!(s.logprobs.unwrap_or(0));
    g["stream"] = json!(s.stream);
    g["stop"] = json!(s.stop);
    g["ignore_eos"] = json!(s.params.ignore_eos);
    g["logit_bias"] = Value::Array(bias);
    g
}

fn last(model: &str, content: String, finish: FinishReason, stops: &[String], usage: &Usage, log: &RequestLog) -> Value {
    let word = match finish {
        FinishReason::StopSequence(i) => stops.get(usize::from(i)).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    json!({
        "index": 0,
        "content": content,
        "tokens": [],
        "id_slot": -1,
        "stop": true,
        "model": model,
        "tokens_predicted": usage.completion_tokens,
        "tokens_evaluated": usage.prompt_tokens,
        "truncated": false,
        "stop_type": stop_type(finish),
        "stopping_word": word,
        "tokens_cached": usage.cached_tokens,
        "timings": log.timings(usage),
    })
}

pub async fn completion(
    State(state): State<AppState>,
    Extension(log): Extension<RequestLog>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    super::embeddings::refuse_generation(view)?;
    // `n_probs` is how this endpoint asks for log-probabilities.
    let asks_logprobs = req.sampling.logprobs.as_ref().is_some_and(|v| !v.is_null());
    let mut valid = validate::completion(req, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    // A list of prompts is answered with a list, as llama-server does (not streamed).
    let mut rest = match valid.prompts.len() > 1 && !valid.sampling.stream {
        true => valid.prompts.split_off(1),
        false => Vec::new(),
    };
    let one = valid.one_prompt("/completion")?;
    if valid.echo || asks_logprobs {
        let field = if valid.echo { "echo" } else { "logprobs" };
        let hint = if valid.echo { "" } else { " (`n_probs` is its field)" };
        return Err(super::error::invalid(field, format!("`{field}` is for /v1/completions; /completion does not take it{hint}")));
    }
    let model_id = view.spec.id.clone();
    let permit = state.scheduler.acquire(view.index).await?;
    let model = permit.model.clone();
    validate::against_model(&mut valid.sampling, &model.engine).await?;
    let eog = if valid.sampling.params.ignore_eos { model.engine.eog_tokens() } else { Vec::new() };
    let settings = generation_settings(&valid.sampling, &eog);
    if !valid.sampling.stream {
        let listed = !rest.is_empty();
        rest.insert(0, one);
        // All queued before any is awaited: the slots read them side by side.
        let mut started = Vec::new();
        for (i, prompt) in rest.into_iter().enumerate() {
            let param = if listed { format!("prompt[{i}]") } else { "prompt".to_string() };
            let echo = match &prompt {
                Prompt::Text(text) => Value::from(text.clone()),
                Prompt::Tokens(ids) => json!(ids),
                Prompt::Mixed(_) => Value::Null,
            };
            started.push((start(&model, prompt, &valid.sampling, &param, log.clone()).await?, echo));
        }
        let mut bodies = Vec::new();
        for (i, (started, prompt)) in started.into_iter().enumerate() {
            let out = collect(started).await?;
            let mut body = last(&model_id, out.text, out.finish_reason, &valid.sampling.stop, &out.usage, &log);
            body["index"] = json!(i);
            body["prompt"] = prompt;
            body["generation_settings"] = settings.clone();
            if valid.sampling.logprobs.is_some() {
                body["completion_probabilities"] = probabilities(&out.logprobs, valid.sampling.post_sampling_probs);
            }
            bodies.push(only_fields(body, &valid.response_fields));
        }
        drop(permit);
        return Ok(Json(if listed { Value::Array(bodies) } else { bodies.remove(0) }).into_response());
    }
    let mut started = start(&model, one, &valid.sampling, "prompt", log.clone()).await?;
    if valid.sampling.return_progress {
        started.progress = Some(Box::new(|p| {
            let progress = super::generate::progress_value(p);
            let chunk = json!({"index": 0, "content": "", "tokens": [], "stop": false, "id_slot": -1, "prompt_progress": progress,
                "timings": super::generate::progress_timings(p)});
            sse::data(&chunk)
        }));
    }
    let (tx, response) = sse::channel_response();
    let post_sampling = valid.sampling.post_sampling_probs;
    let live = valid.sampling.timings_per_token.then(|| (started.live.clone(), log.clone()));
    tokio::spawn(async move {
        let _permit = permit;
        let text = move |t: String, logprobs: &[TokenLogprob]| {
            let mut chunk = json!({"index": 0, "content": t, "tokens": [], "stop": false, "id_slot": -1});
            if !logprobs.is_empty() {
                chunk["completion_probabilities"] = probabilities(logprobs, post_sampling);
            }
            if let Some((live, log)) = &live {
                chunk["timings"] = live.timings(log);
            }
            sse::data(&chunk)
        };
        let stops = valid.sampling.stop.clone();
        let finish = move |finish, usage: Usage| {
            let mut body = last(&model_id, String::new(), finish, &stops, &usage, &log);
            body["generation_settings"] = settings;
            vec![sse::data(&body)]
        };
        let framing = Framing { error: |e| sse::data(&e.body()), end: None };
        pump(&tx, started, text, finish, &framing).await;
    });
    Ok(response)
}
