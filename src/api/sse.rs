//! Server-sent events framing for streamed completions: each event is one
//! `data: <json>` line followed by a blank line; the stream ends with
//! `data: [DONE]`, as OpenAI clients expect.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One `data:` event holding `value` as JSON.
pub fn data<T: Serialize>(value: &T) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"message":"cannot encode event: {e}","type":"server_error","param":null,"code":null}}}}"#)
    });
    Bytes::from(format!("data: {json}\n\n"))
}

/// The terminating event.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A streaming response and the sender that feeds it. When the client goes
/// away the receiver is dropped and `send` fails: producers stop on that.
pub fn channel_response() -> (mpsc::Sender<Bytes>, Response) {
    channel_response_as("text/event-stream")
}

/// `channel_response` with another content type (Ollama's NDJSON).
pub fn channel_response_as(content_type: &'static str) -> (mpsc::Sender<Bytes>, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = Body::from_stream(tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, std::io::Error>));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (tx, response)
}

/// Splits an SSE body back into its `data:` payloads (used by tests and the
/// benchmark client).
pub fn parse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// Named events (`event: TYPE` then `data: {"type": "TYPE", ...}`, as the
/// Messages and Responses streams send them) back to their JSON, checking
/// that each names its type twice. For tests.
#[cfg(test)]
pub fn named_events(frames: &[Bytes]) -> Vec<serde_json::Value> {
    frames
        .iter()
        .map(|f| {
            let text = std::str::from_utf8(f).expect("UTF-8");
            let (head, data) = text.split_once('\n').expect("two lines");
            let v: serde_json::Value = serde_json::from_str(data.strip_prefix("data: ").expect("data line").trim_end()).expect("JSON");
            assert_eq!(head, format!("event: {}", v["type"].as_str().expect("a type")));
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_data_lines_ending_in_a_blank_line() {
        assert_eq!(data(&json!({"a": "b\nc"})), Bytes::from("data: {\"a\":\"b\\nc\"}\n\n"));
        assert_eq!(done(), Bytes::from("data: [DONE]\n\n"));
    }

    #[test]
    fn parse_events_round_trips() {
        let body = [data(&json!({"x": 1})), data(&json!({"x": 2})), done()].concat();
        let body = String::from_utf8(body).unwrap();
        assert_eq!(parse_events(&body), vec![r#"{"x":1}"#, r#"{"x":2}"#, "[DONE]"]);
    }
}
