//! `ApiJson<T>`: a JSON body extractor whose every failure is an OpenAI error
//! envelope naming the field (axum's own `Json` answers in plain text and
//! insists on a Content-Type header, which `curl -d` does not send).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{invalid, ApiError};
use super::openai::WireRequest;
use super::AppState;

pub struct ApiJson<T>(pub T);

/// A body kept as JSON, for protocols that check their own fields
/// (Anthropic's, the Responses API) before they become a chat body.
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Value);

impl WireRequest for RawJson {}

impl<T: WireRequest> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: state.body_limit }
            } else {
                ApiError::InvalidRequest { message: format!("cannot read request body: {rejection}"), param: None }
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a body, turning serde's errors into messages that name the field.
pub fn parse_json<T: WireRequest>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest { message: "request body is empty; expected a JSON object".into(), param: None });
    }
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| syntax(&e))?;
    if !raw.is_object() {
        return Err(ApiError::InvalidRequest { message: "request body must be a JSON object".into(), param: None });
    }
    if let (Some(endpoint), Some(body)) = (T::FIELDS, raw.as_object()) {
        super::fields::check(endpoint, body)?;
    }
    let mut request: T = from_value(&raw)?;
    if let Some(sampling) = request.sampling_mut() {
        *sampling = from_value(&raw)?;
    }
    Ok(request)
}

/// Typed view of a JSON value; errors name the path of the field at fault.
fn from_value<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    let err = match serde_path_to_error::deserialize(raw) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    let inner = err.inner();
    let path = err.path().to_string();
    let message = strip_position(&inner.to_string());
    if path == "." || path.is_empty() {
        // serde reports a missing top-level field at the root: pull its name out.
        if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            return Err(invalid(field, format!("`{field}` is required")));
        }
        // `deny_unknown_fields` reports a misspelt top-level field at the root too.
        if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
            return Err(invalid(field, message.clone()));
        }
        return Err(ApiError::InvalidRequest { message: format!("invalid request: {message}"), param: None });
    }
    Err(invalid(path.clone(), format!("`{path}`: {message}")))
}

fn syntax(e: &serde_json::Error) -> ApiError {
    ApiError::InvalidRequest { message: format!("request body is not valid JSON: {e}"), param: None }
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::ChatCompletionRequest;

    fn param(e: ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn malformed_json_is_a_400_without_param() {
        let e = parse_json::<ChatCompletionRequest>(b"{\"messages\": [").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        assert_eq!(param(e), None);
    }

    #[test]
    fn missing_messages_names_the_field() {
        let e = parse_json::<ChatCompletionRequest>(b"{\"model\":\"m\"}").unwrap_err();
        assert_eq!(param(e), Some("messages".into()));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_json::<ChatCompletionRequest>(br#"{"messages":[],"temperature":"hot"}"#).unwrap_err();
        assert_eq!(param(e.clone()), Some("temperature".into()), "{e}");
        let e = parse_json::<ChatCompletionRequest>(br#"{"messages":"hi"}"#).unwrap_err();
        assert_eq!(param(e), Some("messages".into()));
    }

    #[test]
    fn empty_body_is_explained() {
        let e = parse_json::<ChatCompletionRequest>(b"  ").unwrap_err();
        assert!(e.to_string().contains("empty"));
    }
}
