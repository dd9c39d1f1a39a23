//! llama-server's resumable streams. A streamed request (`"stream": true`)
//! sent with an `X-Conversation-Id` header runs apart from its connection:
//! its events are kept, a client that drops (a page reload) loses nothing,
//! and any reader picks them up again:
//!
//! - `GET /v1/stream?conv_id=ID&from=N`: the stream's bytes from byte `N`
//!   on, then live until it ends (404 unknown or expired, 503 while the
//!   request still waits for its model or a slot, 400 an offset dropped);
//! - `DELETE /v1/stream?conv_id=ID`: the user's stop. Unlike llama-server,
//!   it also stops the generation; a request still waiting answers 400
//!   "cancelled". Always 204;
//! - `POST /v1/streams/lookup` `{"conversation_ids": [...]}`: the sessions
//!   of those ids (and their `ID::model` variants), never others.
//!
//! A transport feature over every streaming route: the handlers do not know.

mod session;

use axum::body::{to_bytes, Body};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::error::ApiError;
use super::extract::ApiJson;
use super::helpers::query_param;
use super::AppState;
pub use session::{SessionInfo, Sessions};
use session::ReadError;

/// The header that makes a streamed request resumable.
pub const CONVERSATION_HEADER: &str = "x-conversation-id";

/// Runs a resumable request on its own task; everything else passes.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(conv) = conversation_id(req.headers()).filter(|_| req.method() == Method::POST) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, state.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge { limit: state.body_limit }.into_response(),
    };
    let streamed = serde_json::from_slice::<StreamFlag>(&bytes).is_ok_and(|f| f.stream == Some(true));
    let req = Request::from_parts(parts, Body::from(bytes));
    if !streamed {
        return next.run(req).await;
    }
    run_resumable(state.streams.clone(), conv, next.run(req)).await
}

#[derive(Deserialize)]
struct StreamFlag {
    stream: Option<bool>,
}

fn conversation_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(CONVERSATION_HEADER)?.to_str().ok()?.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The request runs on a task that outlives the connection; its stream is
/// copied into the conversation's session, and this response reads the
/// session from the start.
async fn run_resumable<F>(sessions: Sessions, conv: String, request: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let ticket = sessions.begin(&conv);
    let (answer, answered) = oneshot::channel::<Response>();
    let task = tokio::spawn({
        let (sessions, conv) = (sessions.clone(), conv.clone());
        async move {
            let response = request.await;
            if !is_event_stream(&response) {
                sessions.forget(&conv, ticket);
                let _ = answer.send(response);
                return;
            }
            // Stopped meanwhile: dropping the response cancels the request.
            let Some(session) = sessions.go_live(&conv, ticket) else { return };
            let (parts, body) = response.into_parts();
            let reader = session.clone().read_from(0).expect("a new session has dropped nothing");
            let _ = answer.send(Response::from_parts(parts, Body::from_stream(reader)));
            let mut frames = body.into_data_stream();
            while let Some(Ok(chunk)) = frames.next().await {
                if !session.append(&chunk) {
                    break;
                }
            }
            session.finish();
        }
    });
    if !sessions.attach(&conv, ticket, task.abort_handle()) {
        task.abort();
    }
    match answered.await {
        Ok(response) => response,
        Err(_) => ApiError::InvalidRequest {
            message: format!("request cancelled: the stream of conversation `{conv}` was stopped (DELETE /v1/stream) before it started"),
            param: None,
        }
        .into_response(),
    }
}

fn is_event_stream(response: &Response) -> bool {
    response.status() == StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// `GET /v1/stream?conv_id=ID&from=N`.
pub async fn get(State(state): State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    let conv = required_conv_id(&query)?;
    let from = match query_param(&query, "from")? {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::InvalidRequest { message: format!("from: `{text}` is not a byte offset"), param: Some("from".into()) })?,
    };
    match state.streams.read(&conv, from) {
        Ok(reader) => {
            let mut response = Body::from_stream(reader).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        Err(ReadError::Unknown) => Err(ApiError::NotFound(format!(
            "no stream for conversation `{conv}`: it never started, was stopped, or ended more than {} s ago",
            session::TTL.as_secs()
        ))),
        Err(ReadError::Pending) => Err(ApiError::Unavailable(format!(
            "the request of conversation `{conv}` waits for its model or a slot; its stream starts when it runs"
        ))),
        Err(ReadError::OffsetLost { first_kept }) => Err(ApiError::InvalidRequest {
            message: format!("from: byte {from} of the stream is no longer kept (the first kept is {first_kept}); restart the request"),
            param: Some("from".into()),
        }),
    }
}

/// `DELETE /v1/stream?conv_id=ID`: 204 whether or not it ran.
pub async fn delete(State(state): State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    let conv = required_conv_id(&query)?;
    if !state.streams.stop(&conv) {
        tracing::debug!(conversation = %conv, "stop of a stream that is not kept");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    conversation_ids: Vec<String>,
}

impl super::openai::WireRequest for LookupRequest {}

/// `POST /v1/streams/lookup`.
pub async fn lookup(State(state): State<AppState>, ApiJson(req): ApiJson<LookupRequest>) -> Json<Vec<SessionInfo>> {
    Json(state.streams.lookup(&req.conversation_ids))
}

fn required_conv_id(query: &RawQuery) -> Result<String, ApiError> {
    query_param(query, "conv_id")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest { message: "conv_id: the query parameter is required".into(), param: Some("conv_id".into()) })
}
