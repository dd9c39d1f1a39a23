//! `GET /`: the dashboard, one static page embedded in the binary (no CDN, no
//! build step). It holds no data itself: its script reads the same API as any
//! client, `/v1/models` and `/metrics` with the API key, `/admin/status` and the
//! admin load/unload routes with the admin token (both typed into the page or
//! given once as `?api_key=` / `?admin_token=`, and kept in the browser's
//! localStorage). So the page is public and every number on it is authorised
//! by the routes it calls.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

/// Only this page's own inline style and script, and calls to this origin.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn page(axum::extract::State(state): axum::extract::State<super::AppState>) -> axum::response::Response {
    if !state.options.ui {
        return super::error::ApiError::RouteNotFound { method: "GET".into(), path: "/".into() }.into_response();
    }
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache"), (CONTENT_SECURITY_POLICY, CSP)], PAGE).into_response()
}
