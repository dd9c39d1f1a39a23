//! llama-server's helper endpoints: /health, /tokenize, /detokenize,
//! /apply-template and /props.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::openai::{ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest};
use super::AppState;
use crate::registry::TemplateOrigin;

/// 200 `{"status":"ok"}` once the startup loads are done (models load on
/// demand after that); 503 with the same shape while they run or after one
/// failed. Both list each model's state.
pub async fn health(State(state): State<AppState>) -> Response {
    let models: serde_json::Map<String, Value> = state
        .registry
        .active()
        .iter()
        .map(|e| (e.spec.id.clone(), Value::from(e.state_name())))
        .collect();
    if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        Json(json!({"status": "ok", "models": models})).into_response()
    } else {
        let failed = state.registry.active().iter().any(|e| e.state_name() == "failed");
        let status = if failed { "error" } else { "loading" };
        let message = if failed { "A model failed to load" } else { "Loading model" };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": status,
                "models": models,
                "error": {"message": message, "type": "unavailable_error", "param": null, "code": "model_unavailable"}
            })),
        )
            .into_response()
    }
}

pub async fn tokenize(State(state): State<AppState>, ApiJson(req): ApiJson<TokenizeRequest>) -> Result<Response, ApiError> {
    let model = state.loaded(req.model.as_deref()).await?;
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
    let model = state.loaded(req.model.as_deref()).await?;
    let tokens = crate::validate::token_ids("tokens", &req.tokens, model.engine.info().n_vocab)?;
    Ok(Json(json!({ "content": model.engine.detokenize(&tokens) })).into_response())
}

pub async fn apply_template(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ApplyTemplateRequest>,
) -> Result<Response, ApiError> {
    let model = state.loaded(req.model.as_deref()).await?;
    let chat = crate::api::openai::ChatCompletionRequest {
        model: None,
        messages: req.messages,
        max_completion_tokens: None,
        tools: req.tools,
        response_format: None,
        chat_template_kwargs: req.chat_template_kwargs,
        sampling: Default::default(),
    };
    let valid = crate::validate::chat(chat, model.engine.info().n_vocab, &Default::default())?;
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
    let index = state.registry.resolve(None)?;
    let entry = state.registry.entry(index);
    let model = state.loaded(None).await?;
    let status = state.scheduler.status().await?;
    let placement = status.models.get(index).and_then(|m| m.placement.clone());
    let info = model.engine.info();
    let slots = model.engine.slot_stats();
    let origin = match &model.template_origin {
        TemplateOrigin::File(p) => format!("file:{}", p.display()),
        TemplateOrigin::Gguf => "gguf".to_string(),
        TemplateOrigin::BuiltIn(name) => format!("builtin:{name}"),
    };
    Ok(Json(json!({
        "model_alias": entry.spec.id,
        "model_path": entry.spec.path.display().to_string(),
        "n_ctx": info.n_ctx_slot,
        "n_ctx_train": info.n_ctx_train,
        "total_slots": slots.total,
        "busy_slots": slots.busy,
        "queued_requests": slots.queued,
        "chat_template": model.template_source,
        "chat_template_origin": origin,
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        "build_info": state.build,
        "gpus": status.gpus,
        "placement": placement,
        "default_generation_settings": {
            "n_ctx": info.n_ctx_slot,
            "params": crate::engine::SamplingParams::default().to_json(),
        },
    }))
    .into_response())
}
