//! Ollama's embeddings: `POST /api/embed` (`input`: a string or a list)
//! and the older `POST /api/embeddings` (`prompt`: one string). Both run
//! through the core in `embeddings.rs`; vectors have unit length (Ollama's
//! older endpoint does not normalise; ours does, the same vector for both).
//! `options` and `keep_alive` are accepted and ignored: options that size
//! resources are set per model on the server, and sampling options do not
//! touch an embedding. `truncate` (default true) cuts an input to the
//! longest an embedding input may be instead of refusing it.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::embeddings::{one_vector_per_input, parse_inputs, run, EmbedOptions};
use crate::api::error::ApiError;
use crate::api::extract::parse_json;
use super::{resolve, OllamaError};
use crate::api::openai::WireRequest;
use crate::api::reqlog::RequestLog;
use crate::api::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedBody {
    model: String,
    input: Value,
    truncate: Option<bool>,
    dimensions: Option<u32>,
    #[allow(dead_code)]
    options: Option<Map<String, Value>>,
    #[allow(dead_code)]
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyBody {
    model: String,
    prompt: String,
    #[allow(dead_code)]
    options: Option<Map<String, Value>>,
    #[allow(dead_code)]
    keep_alive: Option<Value>,
}

impl WireRequest for EmbedBody {}
impl WireRequest for LegacyBody {}

/// An empty `input` ("" or []), with which Ollama's clients load a model.
fn is_empty(input: &Value) -> bool {
    input.as_str().is_some_and(str::is_empty) || input.as_array().is_some_and(Vec::is_empty)
}

/// `POST /api/embed`.
pub async fn embed(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    embed_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn embed_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, OllamaError> {
    let began = Instant::now();
    let req: EmbedBody = parse_json(&body)?;
    let snapshot = state.scheduler.snapshot();
    let view = resolve(&snapshot, &req.model)?;
    log.model(&view.spec.id);
    one_vector_per_input(view, "/api/embed")?;
    if is_empty(&req.input) {
        // Ollama's way to load a model: nothing to embed, the model loaded.
        let _permit = state.scheduler.acquire(view.index).await.map_err(ApiError::from)?;
        let body = json!({"model": view.spec.id, "embeddings": [], "total_duration": began.elapsed().as_nanos() as u64, "prompt_eval_count": 0});
        return Ok(Json(body).into_response());
    }
    let inputs = parse_inputs("input", &req.input, view.n_vocab.unwrap_or(u32::MAX))?;
    let options = EmbedOptions { dimensions: req.dimensions, truncate: req.truncate.unwrap_or(true), field: "input" };
    let out = run(&state, view, inputs, options, &log).await?;
    Ok(Json(json!({
        "model": view.spec.id,
        "embeddings": out.vectors,
        "total_duration": began.elapsed().as_nanos() as u64,
        "load_duration": out.load.as_nanos() as u64,
        "prompt_eval_count": out.prompt_tokens,
    }))
    .into_response())
}

/// `POST /api/embeddings` (Ollama's older endpoint).
pub async fn embeddings(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    legacy_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn legacy_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, OllamaError> {
    let req: LegacyBody = parse_json(&body)?;
    let snapshot = state.scheduler.snapshot();
    let view = resolve(&snapshot, &req.model)?;
    log.model(&view.spec.id);
    one_vector_per_input(view, "/api/embeddings")?;
    if req.prompt.is_empty() {
        let _permit = state.scheduler.acquire(view.index).await.map_err(ApiError::from)?;
        return Ok(Json(json!({ "embedding": [] })).into_response());
    }
    let inputs = parse_inputs("prompt", &Value::String(req.prompt), view.n_vocab.unwrap_or(u32::MAX))?;
    let out = run(&state, view, inputs, EmbedOptions { dimensions: None, truncate: true, field: "prompt" }, &log).await?;
    let vector = out.vectors.into_iter().next().unwrap_or_default();
    Ok(Json(json!({ "embedding": vector })).into_response())
}
