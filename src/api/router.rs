//! llama-server's router endpoints as its clients call them: `POST
//! /models/load` and `/models/unload` answer `{"success": true}` at once and
//! the model's `status` in `GET /models` follows the load (`loading`, then
//! `loaded`); guarded by the API key like every other route. vram-llm's own
//! `/admin/models/*` (admin token) wait for the load instead.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::ModelAction;
use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::scheduler::ModelView;

/// llama-server's `status.value` for a model: `loaded`, `loading`,
/// `sleeping` (asleep holding its weights in pinned memory) or `unloaded`.
/// An unloading model still holds its memory: `loaded` until it is gone.
pub fn status_value(view: &ModelView) -> &'static str {
    match view.state {
        "loaded" | "unloading" => "loaded",
        "loading" | "downloading" => "loading",
        "sleeping" if view.sleeping_bytes.unwrap_or(0) > 0 => "sleeping",
        _ => "unloaded",
    }
}

/// Starts loading the model; 400 if it is loading or loaded already.
pub async fn load(State(state): State<AppState>, ApiJson(req): ApiJson<ModelAction>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.find(&req.model)?;
    if matches!(status_value(view), "loaded" | "loading") {
        return Err(ApiError::InvalidRequest { message: format!("the model `{}` is already loaded", view.spec.id), param: Some("model".into()) });
    }
    let index = view.index;
    // The load's outcome shows in the model's status (`failed` with why).
    Ok(started(&state, view, "/models/load", move |s| async move { s.load(index).await }))
}

/// Unloads the model once its requests finish; 400 if it is not loaded.
pub async fn unload(State(state): State<AppState>, ApiJson(req): ApiJson<ModelAction>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.find(&req.model)?;
    if !matches!(status_value(view), "loaded" | "loading" | "sleeping") {
        return Err(ApiError::InvalidRequest { message: format!("the model `{}` is not loaded", view.spec.id), param: Some("model".into()) });
    }
    let (index, force) = (view.index, req.force);
    Ok(started(&state, view, "/models/unload", move |s| async move { s.unload(index, force).await }))
}

/// llama-server's `DELETE /models?model=NAME`: a model of the Hugging Face
/// cache leaves the list (its requests finish first) and its files leave
/// the cache; 400 for a model that is not a cache file.
pub async fn delete(State(state): State<AppState>, query: RawQuery) -> Result<Response, ApiError> {
    let name = super::helpers::model_param(&query)?
        .ok_or_else(|| ApiError::InvalidRequest { message: "model: the query parameter is required".into(), param: Some("model".into()) })?;
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.find(&name)?;
    let cache = crate::hub::cache_dir()
        .filter(|cache| view.spec.path.starts_with(cache))
        .ok_or_else(|| ApiError::InvalidRequest {
            message: format!("the model `{}` is not a file of the Hugging Face cache; only those can be deleted", view.spec.id),
            param: Some("model".into()),
        })?;
    state.scheduler.retire(view.index).await?;
    let removed = crate::hub::cache::delete_model(&cache, &view.spec.path).map_err(ApiError::Internal)?;
    tracing::info!(model = %view.spec.id, files = removed, "deleted from the Hugging Face cache");
    Ok(Json(json!({"success": true})).into_response())
}

/// Runs `work` on the scheduler in the background (a failure is logged;
/// the model's status shows it) and answers llama-server's `{"success": true}`.
fn started<F, Fut>(state: &AppState, view: &ModelView, route: &'static str, work: F) -> Response
where
    F: FnOnce(crate::scheduler::Scheduler) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), crate::scheduler::SchedError>> + Send + 'static,
{
    let (scheduler, id) = (state.scheduler.clone(), view.spec.id.clone());
    tokio::spawn(async move {
        if let Err(e) = work(scheduler).await {
            tracing::warn!(model = %id, "{route} failed: {e}");
        }
    });
    Json(json!({"success": true})).into_response()
}
