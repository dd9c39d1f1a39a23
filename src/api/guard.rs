//! Browser protections. A page on another site must not drive the API:
//! - the `Host` header must name this server (loopback names and the bind
//!   address, plus `--allowed-hosts`), which defeats DNS rebinding (a
//!   hostile name re-pointed at 127.0.0.1). Skipped when the server listens
//!   on every interface without `--allowed-hosts`: clients then reach it by
//!   names we cannot know;
//! - a request carrying an `Origin` (browsers send it on cross-site calls,
//!   even "simple" form posts that skip the CORS preflight) must come from
//!   an allowed host, the server itself, or a `--cors-origins` entry.
//! Clients that are not browsers (curl, SDKs) send no `Origin` and pass.
//! A `Host` that is an IP address always passes (rebinding needs a name).

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

pub async fn check_host_and_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = check(&state, req.headers()) {
        // A preflight from a page that may not call us gets what the CORS
        // layer gives one: 200 without `Access-Control-Allow-*` (the browser
        // then refuses the call), as llama-server answers it.
        if req.method() == axum::http::Method::OPTIONS && matches!(e, ApiError::Forbidden(_)) && req.headers().contains_key(ORIGIN) {
            return axum::http::StatusCode::OK.into_response();
        }
        return e.into_response();
    }
    next.run(req).await
}

fn check(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(HOST).map(host_name);
    if let (Some(allowed), Some(host)) = (state.allowed_hosts.as_deref(), host.as_deref()) {
        // An IP address is no DNS name, so no rebinding: probes and scrapes
        // by address are fine.
        if host.parse::<std::net::IpAddr>().is_err() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return Err(ApiError::Forbidden(format!(
                "the Host header `{host}` is not one of this server's names; add it with --allowed-hosts"
            )));
        }
    }
    if let Some(origin) = header(ORIGIN) {
        let origin_host = origin_host(origin);
        let ok = super::cors::origin_allowed(&state.cors_origins, origin)
            || match state.allowed_hosts.as_deref() {
                Some(allowed) => origin_host.as_deref().is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h))),
                None => origin_host.is_some() && origin_host == host,
            };
        if !ok {
            return Err(ApiError::Forbidden(format!(
                "requests from the web page at `{origin}` are not allowed; add it with --cors-origins"
            )));
        }
    }
    Ok(())
}

/// The host of a `Host` header, without the port (`[::1]:8080` -> `::1`);
/// an IP address in its canonical form.
fn host_name(value: &str) -> String {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let inner = rest.split(']').next().unwrap_or_default();
        return inner.parse::<std::net::IpAddr>().map_or_else(|_| inner.to_string(), |ip| ip.to_string());
    }
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return ip.to_string();
    }
    value.rsplit_once(':').filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit())).map_or(value, |(h, _)| h).to_string()
}

/// The host of an `Origin` (`http://localhost:3000` -> `localhost`).
pub(super) fn origin_host(origin: &str) -> Option<String> {
    let rest = origin.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    Some(host_name(authority)).filter(|h| !h.is_empty())
}

/// The host names a server bound to `bind` answers to: `None` (any) when it
/// listens on every interface and no names were given; otherwise the loopback
/// names, the bind address and `extra`.
pub fn allowed_hosts(binds: &[std::net::IpAddr], extra: &[String]) -> Option<Vec<String>> {
    if binds.iter().any(|b| b.is_unspecified()) && extra.is_empty() {
        return None;
    }
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    names.extend(binds.iter().map(|b| b.to_string()));
    names.extend(extra.iter().map(|h| host_name(h)));
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_lose_their_ports() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("fe80::1"), "fe80::1", "an IPv6 address is not host:port");
        assert_eq!(host_name("[0:0:0:0:0:0:0:1]:80"), "::1");
        assert_eq!(origin_host("http://localhost:3000").as_deref(), Some("localhost"));
        assert_eq!(origin_host("https://app.example.com").as_deref(), Some("app.example.com"));
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn a_server_on_every_interface_checks_hosts_only_when_told_which() {
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(allowed_hosts(&[any], &[]), None);
        let named = allowed_hosts(&[any], &["gpu-box.lan:8080".into()]).unwrap();
        assert!(named.contains(&"gpu-box.lan".to_string()) && named.contains(&"localhost".to_string()));
        let local = allowed_hosts(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        assert!(local.contains(&"127.0.0.1".to_string()));
    }
}
