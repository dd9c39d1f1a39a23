//! llama-server's helper endpoints: /health, /tokenize, /detokenize,
//! /apply-template, /props and /slots.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::openai::{ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest};
use super::validate;
use super::AppState;

/// 200 `{"status":"ok"}` once the startup loads are done (models load on
/// demand after that); 503 with the same shape while they run, after one
/// failed, or while a model marked `preload` is failed (it is retried on its
/// next request), carrying the error envelope. Both list each model's state.
pub async fn health(State(state): State<AppState>) -> Response {
    let snapshot = state.scheduler.snapshot();
    let models: serde_json::Map<String, Value> =
        snapshot.active().map(|m| (m.spec.id.clone(), Value::from(m.state))).collect();
    let preload_failed = snapshot.active().any(|m| m.spec.preload && m.state == "failed");
    if state.ready.load(std::sync::atomic::Ordering::Acquire) && !preload_failed {
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
    let body = super::cpu::run(move || {
        let tokens = model.engine.tokenize_with(&req.content, req.add_special, req.parse_special.unwrap_or(true));
        if req.with_pieces {
            // As llama-server: a piece that is not whole UTF-8 (part of a
            // character) is its bytes.
            let piece = |t| match String::from_utf8(model.engine.token_bytes(t)) {
                Ok(text) => json!(text),
                Err(e) => json!(e.into_bytes()),
            };
            let pieces: Vec<Value> = tokens.iter().map(|&t| json!({"id": t, "piece": piece(t)})).collect();
            return json!({ "tokens": pieces });
        }
        json!({ "tokens": tokens })
    })
    .await?;
    Ok(Json(body).into_response())
}

pub async fn detokenize(State(state): State<AppState>, ApiJson(req): ApiJson<DetokenizeRequest>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    // Checked against the header's vocabulary before any load, and against
    // the loaded one (the crash guard) when the header did not say.
    validate::token_ids("tokens", &req.tokens, view.n_vocab.unwrap_or(u32::MAX))?;
    let model = state.loaded(view).await?;
    let tokens = validate::token_ids("tokens", &req.tokens, model.engine.info().n_vocab)?;
    let content = super::cpu::run(move || model.engine.detokenize(&tokens)).await?;
    Ok(Json(json!({ "content": content })).into_response())
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
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        chat_template_kwargs: req.chat_template_kwargs,
        reasoning_format: None,
        add_generation_prompt: req.add_generation_prompt,
        continue_final_message: req.continue_final_message,
        verbose: None,
        sampling: Default::default(),
    };
    // The model's defaults (`--reasoning`) and chat's own rendering: the
    // prompt is exactly what a chat completion would read.
    let valid = validate::chat(chat, u32::MAX, &view.spec.defaults())?;
    let model = state.loaded(view).await?;
    let (_, prompt, _) = super::chat::render(&model, &valid).await?;
    Ok(Json(json!({ "prompt": prompt })).into_response())
}

/// Server and model properties, shaped like llama-server's `/props` where
/// the fields mean the same thing. `?model=NAME` picks the model (default:
/// the first). Answered from the published snapshot: a monitoring poll never
/// loads or evicts anything; a model that is not loaded says `loaded: false`
/// and gives what its registration knows.
pub async fn props(State(state): State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    let name = model_param(&query)?;
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(name.as_deref())?;
    let several = snapshot.active().nth(1).is_some();
    let mut body = json!({
        "model_alias": view.spec.id,
        "model_path": view.spec.path.display().to_string(),
        "loaded": false,
        "state": view.state,
        // llama-server's keys: a server of several models answers as its router.
        "role": if several { "router" } else { "model" },
        "max_instances": snapshot.max_loaded.unwrap_or(0),
        "models_autoload": snapshot.autoload,
        "is_sleeping": view.state == "sleeping" || (view.state == "unloaded" && view.load_count > 0),
        "endpoint_slots": state.options.slots,
        "endpoint_props": true,
        "endpoint_metrics": state.options.metrics,
        "modalities": {"vision": false, "video": false, "audio": false},
        "total_slots": view.spec.parallel,
        "busy_slots": 0,
        "queued_requests": view.queue_depth,
        "default_generation_settings": {"n_ctx": 0, "params": view.spec.sampling.to_json()},
        "build_info": state.build.llama_server_style(),
        "build": state.build,
        "backends": &*state.backends,
        "backend_modules": &*state.backend_modules,
        "gpu_sleep": match crate::engine::llama::sleep::status() {
            Ok(shim) => json!({"available": true, "shim": shim}),
            Err(reason) => json!({"available": false, "reason": reason}),
        },
        "gpus": state.scheduler.gpu_status(&snapshot),
        "placement": view.placement,
    });
    if let Some(model) = view.loaded() {
        let info = model.engine.info();
        let slots = model.engine.slot_stats();
        let loaded = json!({
            "loaded": true,
            "n_ctx": info.n_ctx_slot,
            "n_ctx_train": info.n_ctx_train,
            "total_slots": slots.total,
            "busy_slots": slots.busy,
            "queued_requests": slots.queued as usize + view.queue_depth,
            "chat_template": model.template_source,
            "chat_template_origin": model.template_origin.label(),
            "bos_token": info.bos_token,
            "eos_token": info.eos_token,
            "default_generation_settings": {
                "n_ctx": info.n_ctx_slot,
                "params": view.spec.sampling.to_json(),
            },
        });
        if let (Some(body), Value::Object(loaded)) = (body.as_object_mut(), loaded) {
            body.extend(loaded);
        }
    }
    Ok(Json(body).into_response())
}

/// llama-server's `/slots` for one model (`?model=NAME`, default the
/// first): each slot's id, context size, whether it is processing and how
/// many tokens its cache holds. From the published snapshot: a model that is
/// not loaded has no slots (`[]`), and nothing is loaded to answer.
pub async fn slots(State(state): State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    if !state.options.slots {
        return Err(ApiError::NotSupported("this server does not serve /slots (started with --no-slots)".into()));
    }
    let name = model_param(&query)?;
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(name.as_deref())?;
    let slots: Vec<Value> = match view.loaded() {
        Some(model) => {
            let n_ctx = model.engine.info().n_ctx_slot;
            model
                .engine
                .slots()
                .into_iter()
                .map(|s| json!({"id": s.id, "n_ctx": n_ctx, "is_processing": s.is_processing, "n_cached": s.n_cached, "model": view.spec.id}))
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Json(slots).into_response())
}

/// The `model` query parameter of a GET (`?model=NAME`), percent-decoded.
pub(super) fn model_param(query: &RawQuery) -> Result<Option<String>, ApiError> {
    query_param(query, "model")
}

/// A query parameter (`?key=value`), percent-decoded; a bad encoding is a
/// 400 naming it.
pub(super) fn query_param(query: &RawQuery, key: &str) -> Result<Option<String>, ApiError> {
    let Some(query) = query.0.as_deref() else { return Ok(None) };
    for pair in query.split('&') {
        let (k, value) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(value).map(Some).ok_or_else(|| ApiError::InvalidRequest {
                message: format!("{key}: not a valid percent-encoded value"),
                param: Some(key.into()),
            });
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_parameter_is_percent_decoded() {
        let q = |s: &str| model_param(&RawQuery(Some(s.to_string())));
        assert_eq!(q("model=org%2Fname%3Aq4").unwrap().as_deref(), Some("org/name:q4"));
        assert_eq!(q("x=1&model=a+b").unwrap().as_deref(), Some("a b"));
        assert_eq!(q("x=1").unwrap(), None);
        assert_eq!(model_param(&RawQuery(None)).unwrap(), None);
        assert!(q("model=%zz").is_err());
    }
}
