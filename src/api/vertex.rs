//! Vertex AI's prediction protocol, as llama-server serves it when Google
//! Cloud starts the container with `AIP_MODE=PREDICTION` (config/vertex.rs
//! reads the environment): `POST {AIP_PREDICT_ROUTE}` (default `/predict`)
//! takes `{"instances": [...]}`, each instance a request body for one of our
//! POST routes named by `@requestFormat` (its camelCase alias such as
//! `chatCompletions`, or its path), answered `{"predictions": [...]}` in
//! order, one answer or error body per instance. Each instance goes through
//! the whole app as its own request (same headers: the API key, the host
//! check), concurrently, never streamed.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::error::{invalid, ApiError};
use super::extract::{parse_json, RawJson};
use crate::config::VertexRoutes;

/// llama-server's cap on instances per call.
pub const MAX_INSTANCES: usize = 128;

/// The POST routes an instance may name; on an alias collision the first wins.
const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/chat/completions/input_tokens",
    "/v1/completions",
    "/completion",
    "/v1/embeddings",
    "/embedding",
    "/v1/responses",
    "/v1/responses/input_tokens",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/api/chat",
    "/api/generate",
    "/api/embed",
];

/// `/v1/chat/completions` -> `chatCompletions`, `/apply-template` -> `applyTemplate`.
pub fn alias(path: &str) -> String {
    let path = path.strip_prefix("/v1").unwrap_or(path).trim_start_matches('/');
    let mut out = String::new();
    let mut upper = false;
    for c in path.chars() {
        if matches!(c, '/' | '-' | '_') {
            upper = true;
        } else {
            out.extend(if upper { c.to_uppercase().collect::<Vec<_>>() } else { vec![c] });
            upper = false;
        }
    }
    out
}

/// The route an instance's `@requestFormat` names.
pub fn route_for(format: &str) -> Option<&'static str> {
    ROUTES.iter().copied().find(|p| alias(p) == format).or_else(|| ROUTES.iter().copied().find(|p| *p == format))
}

/// `app` with the prediction route (and the health alias) in front of it.
pub fn wrap(app: Router, routes: &VertexRoutes) -> Router {
    let inner = app.clone();
    let mut outer = Router::new().route(&routes.predict, post(move |headers: HeaderMap, body: Bytes| predict(inner.clone(), headers, body)));
    if let Some(health) = &routes.health {
        let inner = app.clone();
        outer = outer.route(health, get(move |headers: HeaderMap| dispatch(inner.clone(), headers, Method::GET, "/health", Body::empty())));
    }
    outer.fallback_service(app)
}

async fn dispatch(app: Router, headers: HeaderMap, method: Method, path: &str, body: Body) -> Response {
    let mut req = Request::builder().method(method).uri(path).body(body).expect("a valid request");
    *req.headers_mut() = headers;
    req.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
    match app.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// An instance's error, in the place of its answer.
fn refused(message: impl Into<String>) -> Value {
    serde_json::to_value(ApiError::InvalidRequest { message: message.into(), param: None }.body()).unwrap_or_default()
}

async fn instance(app: Router, headers: HeaderMap, instance: Value) -> Value {
    let Value::Object(mut body) = instance else { return refused("each instance must be a JSON object") };
    let Some(Value::String(format)) = body.remove("@requestFormat") else {
        return refused("each instance must include a string @requestFormat");
    };
    let Some(path) = route_for(&format) else { return refused(format!("no route for @requestFormat: {format}")) };
    if body.contains_key("stream") {
        body.insert("stream".into(), Value::Bool(false));
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let response = dispatch(app, headers, Method::POST, path, Body::from(bytes)).await;
    let data = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    serde_json::from_slice(&data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&data).into_owned()))
}

async fn predict(app: Router, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    // A JSON object, checked as every route's body is.
    let RawJson(mut req) = parse_json(&body)?;
    let Some(Value::Array(instances)) = req.as_object_mut().and_then(|o| o.remove("instances")) else {
        return Err(invalid("instances", "the body must hold an array named `instances`"));
    };
    if instances.len() > MAX_INSTANCES {
        return Err(invalid("instances", format!("`instances` holds {} requests; at most {MAX_INSTANCES} are taken", instances.len())));
    }
    let answers = instances.into_iter().map(|i| instance(app.clone(), headers.clone(), i));
    Ok(Json(json!({"predictions": futures_util::future::join_all(answers).await})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_llama_servers_camel_case() {
        assert_eq!(alias("/v1/chat/completions"), "chatCompletions");
        assert_eq!(alias("/apply-template"), "applyTemplate");
        assert_eq!(alias("/v1/messages/count_tokens"), "messagesCountTokens");
        assert_eq!(route_for("chatCompletions"), Some("/v1/chat/completions"));
        assert_eq!(route_for("/completion"), Some("/completion"));
        assert_eq!(route_for("nope"), None);
    }
}
