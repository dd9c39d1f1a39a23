//! The one table that maps every API error to an HTTP status and an OpenAI
//! error envelope: `{"error":{"message","type","param","code"}}`. The lower
//! layers' errors (scheduler, engine, template) become `ApiError`s here and
//! nowhere else; the SSE error event and /health use the same envelope.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::{EngineError, GenerationEvent};
use crate::scheduler::{EnqueueError, SchedError};
use crate::template::TemplateError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Bad input: malformed JSON, a wrong type, a value out of range.
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    /// The prompt does not fit the model's per-request context (with
    /// llama-server's `n_prompt_tokens` and `n_ctx` where known).
    #[error("{message}")]
    ContextLengthExceeded { message: String, param: String, n_prompt_tokens: Option<usize>, n_ctx: Option<usize> },
    /// The chat template raised an error or failed to render.
    #[error("{0}")]
    Template(String),
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("invalid or missing API key; send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A browser page or host name this server does not serve.
    #[error("{0}")]
    Forbidden(String),
    /// A thing the request names that is not here (e.g. a stream session).
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A queue is full: try again later.
    #[error("{message}")]
    Overloaded { message: String, retry_after_s: u64, code: &'static str },
    /// The model is loading or failed to load.
    #[error("{0}")]
    Unavailable(String),
    /// Every connection the server takes at once is open (--max-connections).
    #[error("the server is at its connection limit ({max}); try again shortly")]
    TooManyConnections { max: usize },
    /// An endpoint this server was started without (`--no-metrics`, `--no-slots`).
    #[error("{0}")]
    NotSupported(String),
    /// Something broke on our side; never caused by input.
    #[error("{0}")]
    Internal(String),
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> Self {
        match e {
            SchedError::UnknownModel(name) => ApiError::ModelNotFound(name),
            SchedError::NotLoaded(_) => ApiError::InvalidRequest { message: e.to_string(), param: Some("model".into()) },
            SchedError::Rejected(EnqueueError::QueueFull { .. }) => ApiError::Overloaded { message: e.to_string(), retry_after_s: 1, code: "queue_full" },
            SchedError::Rejected(EnqueueError::WaitTooLong { retry_after_s, .. } | EnqueueError::TurnsFull { retry_after_s, .. }) => {
                ApiError::Overloaded { message: e.to_string(), retry_after_s, code: "expected_wait_too_long" }
            }
            SchedError::Rejected(EnqueueError::NotMeasured { .. }) => {
                ApiError::Overloaded { message: e.to_string(), retry_after_s: 1, code: "expected_wait_too_long" }
            }
            SchedError::Rejected(EnqueueError::BackingOff { retry_in_s, .. }) => {
                ApiError::Unavailable(format!("{e} (retry after {retry_in_s}s)"))
            }
            SchedError::ShuttingDown | SchedError::NoModels | SchedError::LoadFailed { .. } => ApiError::Unavailable(e.to_string()),
            SchedError::Internal(message) => ApiError::Internal(message),
        }
    }
}

/// A chat template that raised or failed to render is the request's fault.
impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        ApiError::Template(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

/// How a generation that did not finish reaches the client: an engine
/// failure is ours (500); a forced unload is the model going away (503).
pub fn generation_error(event: &GenerationEvent) -> Option<ApiError> {
    match event {
        GenerationEvent::Failed(message) => Some(ApiError::Internal(message.clone())),
        GenerationEvent::Cancelled(message) => Some(ApiError::Unavailable(message.clone())),
        GenerationEvent::Text(_) | GenerationEvent::Logprob(_) | GenerationEvent::Done { .. } | GenerationEvent::Progress(_) => None,
    }
}

/// Builds the common 400 for a named field.
pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest { message: message.into(), param: Some(param.into()) }
}

impl ApiError {
    /// The table: HTTP status, OpenAI `type`, OpenAI `code`.
    fn classify(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            // llama-server's type; OpenAI's code.
            ContextLengthExceeded { .. } => {
                (StatusCode::BAD_REQUEST, "exceed_context_size_error", Some("context_length_exceeded"))
            }
            Template(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", Some("chat_template_error")),
            ModelNotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key")),
            Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", Some("forbidden")),
            RouteNotFound { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found")),
            // llama-server's type.
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error", Some("not_found")),
            MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", Some("method_not_allowed"))
            }
            PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("payload_too_large"))
            }
            Overloaded { code, .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some(code)),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", Some("model_unavailable")),
            TooManyConnections { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", Some("too_many_connections")),
            NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, "not_supported_error", Some("not_supported")),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ContextLengthExceeded { param, .. } => Some(param.as_str()),
            ApiError::Template(_) => Some("messages"),
            ApiError::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// The envelope as JSON, also used for errors sent inside an SSE stream.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.classify();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param: self.param().map(str::to_string),
                code,
                n_prompt_tokens: match self {
                    ApiError::ContextLengthExceeded { n_prompt_tokens, .. } => *n_prompt_tokens,
                    _ => None,
                },
                n_ctx: match self {
                    ApiError::ContextLengthExceeded { n_ctx, .. } => *n_ctx,
                    _ => None,
                },
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_prompt_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        match &self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) | ApiError::TooManyConnections { .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Overloaded { retry_after_s, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_request_names_the_field() {
        let body = serde_json::to_value(invalid("temperature", "must be >= 0").body()).unwrap();
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "must be >= 0");
        assert!(body["error"]["code"].is_null());
    }

    #[test]
    fn unknown_model_is_404_naming_model() {
        let e = ApiError::ModelNotFound("nope".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body().error.param.as_deref(), Some("model"));
        assert_eq!(e.body().error.code, Some("model_not_found"));
    }

    #[test]
    fn an_expected_wait_too_long_is_429_with_the_excess_as_retry_after() {
        let e = ApiError::from(SchedError::Rejected(EnqueueError::WaitTooLong {
            model: "m".into(),
            expected_s: 200,
            limit_s: 120,
            retry_after_s: 80,
            flag: "--max-queue-wait",
        }));
        assert_eq!(e.body().error.code, Some("expected_wait_too_long"));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "80");
    }

    #[test]
    fn only_internal_errors_are_5xx_besides_unavailable() {
        let client_errors = [
            invalid("x", "y"),
            ApiError::ContextLengthExceeded { message: "m".into(), param: "prompt".into(), n_prompt_tokens: None, n_ctx: None },
            ApiError::Template("t".into()),
            ApiError::Unauthorized,
            ApiError::PayloadTooLarge { limit: 1 },
        ];
        for e in client_errors {
            assert!(e.status().is_client_error(), "{e:?}");
        }
    }
}
