//! The admin API, enabled by `--admin-token`: status, explicit load/unload.
//! Without a token configured these routes answer 404, as if absent.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::constant_time_eq;
use super::error::ApiError;
use super::extract::ApiJson;
use super::openai::WireRequest;
use super::AppState;

pub async fn require_admin_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return ApiError::RouteNotFound { method: req.method().to_string(), path: req.uri().path().to_string() }
            .into_response();
    };
    let headers = req.headers();
    let given = headers
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .unwrap_or("");
    if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// Per model: state, estimated and measured memory, placement and what it
/// holds on each GPU, queue, in-flight, idle time, loads; totals: host budget
/// and use, swaps, and the GPU inventory with what our models hold there.
pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.synced().await?;
    let now = state.scheduler.now();
    let models: Vec<serde_json::Value> = snapshot
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.spec.id,
                "aliases": m.spec.aliases,
                "path": m.spec.path.display().to_string(),
                "state": m.state,
                "sleeping_bytes": m.sleeping_bytes,
                "retired": m.retired,
                "memory_bytes": m.bytes,
                "memory_measured": m.bytes_measured,
                "queue_depth": m.queue_depth,
                "in_flight": m.in_flight,
                "slots": m.slots,
                "idle_ms": now.saturating_duration_since(m.last_used).as_millis() as u64,
                "load_count": m.load_count,
                "last_load_ms": m.last_load_ms,
                "last_load": m.loaded().map(|l| l.engine.load_timings()),
                "lingers": m.lingers,
                "failure": m.failure,
                "n_ctx": m.loaded().map(|l| l.engine.info().n_ctx_slot),
                "placement": m.placement,
                "holding": m.holding,
            })
        })
        .collect();
    Ok(Json(json!({
        "policy": snapshot.policy,
        "budget_bytes": snapshot.budget_bytes,
        "used_bytes": snapshot.used_bytes,
        "sleep_budget_bytes": snapshot.sleep_budget_bytes,
        "sleeping_bytes": snapshot.sleeping_bytes(),
        "swaps": snapshot.swaps,
        "max_wait_ms": snapshot.max_wait_ms,
        "recent_swaps": snapshot.recent_swaps,
        "kv_cache": state.kv_cache.as_ref().map(|c| c.usage()),
        "gpus": state.scheduler.gpu_status(&snapshot),
        "models": models,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ModelAction {
    pub model: String,
    #[serde(default)]
    pub force: bool,
}

impl WireRequest for ModelAction {}

/// Loads a model now (waits until it is loaded).
pub async fn load(State(state): State<AppState>, ApiJson(req): ApiJson<ModelAction>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let model = snapshot.find(&req.model)?;
    state.scheduler.load(model.index).await?;
    Ok(Json(json!({"model": model.spec.id, "state": "loaded"})).into_response())
}

/// Unloads a model once its in-flight requests finish (`force`: cancels them).
pub async fn unload(State(state): State<AppState>, ApiJson(req): ApiJson<ModelAction>) -> Result<Response, ApiError> {
    let index = state.scheduler.snapshot().find(&req.model)?.index;
    state.scheduler.unload(index, req.force).await?;
    let snapshot = state.scheduler.synced().await?;
    let model = &snapshot.models[index];
    Ok(Json(json!({"model": model.spec.id, "state": model.state})).into_response())
}

/// Re-reads the config (and models folder, and --model flags) and applies its
/// model list: adds new models, retires removed ones once their work is done,
/// replaces changed ones. Server settings need a restart.
pub async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = reload_config(&state).await?;
    Ok(Json(json!({ "reloaded": true, "added": report.added, "removed": report.removed,
                    "changed": report.changed, "unchanged": report.unchanged,
                    "note": "server settings ([server], flags) take effect on restart" }))
    .into_response())
}

/// The reload itself (also llama-server's `GET /models?reload=1`).
pub(super) async fn reload_config(state: &AppState) -> Result<crate::scheduler::ReloadReport, ApiError> {
    let Some(read) = state.reload_from.clone() else {
        return Err(ApiError::InvalidRequest { message: "this server has no config to reload".into(), param: None });
    };
    // Reading the config and the GGUF headers blocks: not on the runtime.
    let read_models = move || {
        let config = crate::config::Config::load(&read.sources, &read.flags)?;
        Ok::<_, String>(crate::catalogue::registrations(config.models, &read.placement))
    };
    let models = tokio::task::spawn_blocking(read_models)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|message| ApiError::InvalidRequest { message: format!("config not reloaded: {message}"), param: None })?;
    Ok(state.scheduler.reload(models).await?)
}
