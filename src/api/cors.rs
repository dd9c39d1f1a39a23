//! Cross-origin calls from browser pages (`--cors-origins`). Off by default,
//! as in llama-server: a page on another site cannot read the API's answers.
//! When origins are configured, preflights are answered and responses carry
//! `Access-Control-Allow-Origin` for those origins only (`*`: any).

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The CORS layer for `origins` (already checked by the config), or `None`.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            // Whatever the page asks for: SDKs add their own headers
            // (openai-node sends x-stainless-*).
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_secs(600)),
    )
}
