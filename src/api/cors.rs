//! Cross-origin calls from browser pages (`--cors-origins`). Off by default,
//! as in llama-server: a page on another site cannot read the API's answers.
//! When origins are configured, preflights are answered and responses carry
//! `Access-Control-Allow-Origin` for those origins only (`*`: any;
//! `localhost`, llama-server's special value: any page served from a
//! loopback host, `http://localhost:5173`, `http://127.0.0.1`, `http://[::1]:3000`).

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Whether a page at `origin` may call the API under `--cors-origins`
/// `origins` (the one place that decides; the guard and the layer ask it).
pub fn origin_allowed(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| match o.as_str() {
        "*" => true,
        "localhost" => super::guard::origin_host(origin).is_some_and(|h| is_loopback(&h)) && origin.split_once("://").is_some_and(|(scheme, _)| matches!(scheme, "http" | "https")),
        listed => listed.trim_end_matches('/') == origin,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The CORS layer for `origins` (already checked by the config), or `None`.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let origins: Vec<String> = origins.to_vec();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| origin.to_str().is_ok_and(|o| origin_allowed(&origins, o)))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            // Whatever the page asks for: SDKs add their own headers
            // (openai-node sends x-stainless-*).
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_secs(600)),
    )
}
