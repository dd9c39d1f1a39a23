//! llama-server's helper endpoints: /health, /tokenize, /detokenize,
//! /apply-template and /props.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::openai::{ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest};
use super::validate;
use super::AppState;

/// 200 `{"status":"ok"}` once the startup loads are done (models load on
/// demand after that); 503 with the same shape while they run or after one
/// failed, carrying the error envelope. Both list each model's state.
pub async fn health(State(state): State<AppState>) -> Response {
    let snapshot = state.scheduler.snapshot();
    let models: serde_json::Map<String, Value> =
        snapshot.active().map(|m| (m.spec.id.clone(), Value::from(m.state))).collect();
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        return Json(json!({"status": "ok", "models": models})).into_response();
    }
    let failed = snapshot.active().any(|m| m.state == "failed");
    let (status, message) = if failed { ("error", "A model failed to load") } else { ("loading", "Loading model") };
    let error = ApiError::Unavailable(message.into());
    let body = json!({"status": status, "models": models, "error": error.body().error});
    (error.status(), Json(body)).into_response()
}

pub async fn tokenize(State(state): State<AppState>, ApiJson(req): ApiJson<TokenizeRequest>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let model = state.loaded(snapshot.resolve(req.model.as_deref())?).await?;
    let tokens = model.engine.tokenize(&req.content, req.add_special);
    if req.with_pieces {
        let pieces: Vec<Value> = tokens
            .iter()
            .map(|&t| json!({"id": t, "piece": model.engine.detokenize(&[t])}))
            .collect();
        return Ok(Json(json!({ "tokens": pieces })).into_response());
    }
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

pub async fn detokenize(State(state): State<AppState>, ApiJson(req): ApiJson<DetokenizeRequest>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    // Checked against the header's vocabulary before any load, and against
    // the loaded one (the crash guard) when the header did not say.
    validate::token_ids("tokens", &req.tokens, view.n_vocab.unwrap_or(u32::MAX))?;
    let model = state.loaded(view).await?;
    let tokens = validate::token_ids("tokens", &req.tokens, model.engine.info().n_vocab)?;
    Ok(Json(json!({ "content": model.engine.detokenize(&tokens) })).into_response())
}

pub async fn apply_template(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ApplyTemplateRequest>,
) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    let chat = super::openai::ChatCompletionRequest {
        model: None,
        messages: req.messages,
        max_completion_tokens: None,
        tools: req.tools,
        response_format: None,
        chat_template_kwargs: req.chat_template_kwargs,
        sampling: Default::default(),
    };
    let valid = validate::chat(chat, u32::MAX, &Default::default())?;
    let model = state.loaded(view).await?;
    let prompt = model.render_chat(
        &valid.messages,
        req.add_generation_prompt.unwrap_or(true),
        valid.tools.as_ref(),
        valid.template_kwargs.as_ref(),
    )?;
    Ok(Json(json!({ "prompt": prompt })).into_response())
}

/// Server and model properties, shaped like llama-server's `/props` where
/// the fields mean the same thing.
pub async fn props(State(state): State<AppState>) -> Result<Response, ApiError> {
    let first = state.scheduler.snapshot();
    let first = first.resolve(None)?;
    let (index, model) = (first.index, state.loaded(first).await?);
    // After the load: the snapshot that shows where it went.
    let snapshot = state.scheduler.synced().await?;
    let view = &snapshot.models[index];
    let info = model.engine.info();
    let slots = model.engine.slot_stats();
    Ok(Json(json!({
        "model_alias": view.spec.id,
        "model_path": view.spec.path.display().to_string(),
        "n_ctx": info.n_ctx_slot,
        "n_ctx_train": info.n_ctx_train,
        "total_slots": slots.total,
        "busy_slots": slots.busy,
        "queued_requests": slots.queued,
        "chat_template": model.template_source,
        "chat_template_origin": model.template_origin.label(),
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        "build_info": state.build,
        "gpus": state.scheduler.gpu_status(&snapshot),
        "placement": view.placement,
        "default_generation_settings": {
            "n_ctx": info.n_ctx_slot,
            "params": crate::types::SamplingParams::default().to_json(),
        },
    }))
    .into_response())
}
