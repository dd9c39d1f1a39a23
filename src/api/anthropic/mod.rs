//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`)
//! for Claude Code and the Anthropic SDKs. A thin translation: the request
//! becomes the OpenAI chat body (`request.rs`) and takes the one internal
//! path (model names, validation, scheduler, template, tools, generation);
//! the answer takes the Messages shapes (`response.rs`), and errors
//! Anthropic's envelope (`{"type": "error", "error": {"type", "message"}}`).
//! The API key may come as `x-api-key` (auth.rs); `anthropic-version` and
//! `anthropic-beta` headers are accepted and not checked.

mod request;
mod response;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::chat::Output;
use super::error::ApiError;
use super::extract::{parse_json, RawJson};
use super::generate::{collect, pump, Framing};
use super::reqlog::RequestLog;
use super::validate::ValidChat;
use super::AppState;
use crate::scheduler::Permit;

/// An error in Anthropic's envelope, with our status.
pub struct AnthropicError(ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

fn envelope(e: &ApiError) -> Value {
    let mut message = e.to_string();
    if let Some(param) = e.body().error.param.filter(|p| !message.contains(p.as_str())) {
        message = format!("{param}: {message}");
    }
    json!({"type": "error", "error": {"type": error_type(e.status()), "message": message}})
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        // Keep what our own response adds (Retry-After on a 429), with Anthropic's body.
        let mut response = self.0.clone().into_response();
        let body = envelope(&self.0);
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response
    }
}

/// The request as a validated chat, and the model it names.
fn validated(state: &AppState, body: &Bytes, count: bool, log: &RequestLog) -> Result<(usize, String, ValidChat), ApiError> {
    let RawJson(req) = parse_json(body)?;
    super::chat::validate_translated(state, request::to_openai(&req, count)?, log)
}

/// `POST /v1/messages`.
pub async fn messages(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    messages_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn messages_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, AnthropicError> {
    let (index, model, valid) = validated(&state, &body, false, &log)?;
    let permit = state.scheduler.acquire(index).await.map_err(ApiError::from)?;
    let (mut started, output) = super::chat::prepare(&permit, &valid, log).await?;
    let started = started.remove(0);
    let id = super::generate::response_id("msg").replacen('-', "_", 1);
    let stops = valid.sampling.stop.clone();
    if !valid.sampling.stream {
        let out = collect(started).await?;
        drop(permit);
        let parsed = output.whole(out.text);
        return Ok(Json(response::message(&id, &model, parsed, out.finish_reason, &stops, &out.usage)).into_response());
    }
    Ok(stream(permit, started, output, id, model, stops))
}

fn stream(permit: Permit, started: super::generate::Started, output: Output, id: String, model: String, stops: Vec<String>) -> Response {
    let (tx, response) = super::sse::channel_response();
    tokio::spawn(async move {
        let _permit = permit;
        if tx.send(response::start(&id, &model, started.prompt_tokens)).await.is_err() {
            return;
        }
        let blocks = response::Blocks::new(stops);
        let (text, finish) = super::chat::parsed_framers(output, std::sync::Arc::new(parking_lot::Mutex::new(blocks)), response::Blocks::delta, |b, reason, usage| b.finish(reason, &usage));
        let framing = Framing { error: |e| response::event(&envelope(e)), end: None };
        pump(&tx, started, text, finish, &framing).await;
    });
    response
}

/// `POST /v1/messages/count_tokens`: the prompt the template renders for
/// the request, in tokens (the model is loaded to tokenize).
pub async fn count_tokens(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    count_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn count_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, AnthropicError> {
    let (index, _, valid) = validated(&state, &body, true, &log)?;
    let n = super::chat::count_tokens(&state, index, &valid).await?;
    Ok(Json(json!({"input_tokens": n})).into_response())
}
