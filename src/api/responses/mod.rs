//! OpenAI's Responses API (`POST /v1/responses`, also `/responses`) for
//! Codex CLI and the OpenAI Agents SDK. Stateless: each request carries the
//! whole conversation (`store` is accepted and nothing is stored;
//! `previous_response_id` is refused). A thin translation: the request
//! becomes a chat body (`request.rs`) on the one internal path; the answer
//! takes the Responses shapes (`response.rs`). Errors keep OpenAI's
//! envelope, as on the other OpenAI routes. `POST /v1/responses/input_tokens`
//! counts a request's prompt tokens without generating.

mod request;
mod response;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::ApiError;
use super::extract::{parse_json, RawJson};
use super::generate::{collect, pump, Framing};
use super::reqlog::RequestLog;
use super::AppState;

/// `POST /v1/responses`.
pub async fn create(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Result<Response, ApiError> {
    let RawJson(req) = parse_json(&body)?;
    let (index, model, valid) = super::chat::validate_translated(&state, request::to_chat(&req)?, &log)?;
    let meta = response::Meta::new(model, &req);
    let permit = state.scheduler.acquire(index).await?;
    let (mut started, output) = super::chat::prepare(&permit, &valid, log).await?;
    let started = started.remove(0);
    if !valid.sampling.stream {
        let out = collect(started).await?;
        drop(permit);
        let items = response::output(output.whole(out.text));
        let incomplete = out.finish_reason == crate::engine::FinishReason::Length;
        let status = if incomplete { "incomplete" } else { "completed" };
        return Ok(Json(meta.response(status, items, Some(&out.usage), incomplete)).into_response());
    }
    let (tx, response) = super::sse::channel_response();
    let mut started = started;
    let mut events = response::Stream::new(meta);
    if valid.sampling.timings_per_token {
        events.timings = Some((started.live.clone(), started.log.clone()));
    }
    let events = std::sync::Arc::new(parking_lot::Mutex::new(events));
    if valid.sampling.return_progress {
        let events = events.clone();
        started.progress = Some(Box::new(move |p| events.lock().progress(p)));
    }
    tokio::spawn(async move {
        let _permit = permit;
        let start = events.lock().start();
        for frame in start {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        let (text, finish) = super::chat::parsed_framers(output, events, response::Stream::delta, |s, reason, usage| s.finish(reason, &usage));
        let framing = Framing { error: response::error_event, end: None };
        pump(&tx, started, text, finish, &framing).await;
    });
    Ok(response)
}

/// `POST /v1/responses/input_tokens`: the prompt the request renders to, in
/// tokens (template, instructions and tools), nothing generated.
pub async fn input_tokens(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Result<Response, ApiError> {
    let RawJson(req) = parse_json(&body)?;
    let (index, _, valid) = super::chat::validate_translated(&state, request::to_chat(&req)?, &log)?;
    let n = super::chat::count_tokens(&state, index, &valid).await?;
    Ok(Json(serde_json::json!({"object": "response.input_tokens", "input_tokens": n})).into_response())
}
