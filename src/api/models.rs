//! `GET /v1/models`: every registered model with its state; loaded ones carry
//! a `meta` object (context, parameters, size) as llama-server does.
//! `GET /v1/models/{id}` (the OpenAI SDK's `models.retrieve`): one of them,
//! by name or alias (names may hold slashes), or 404 naming it.

use axum::extract::{Path, State};
use axum::Json;

use super::error::ApiError;
use super::openai::{ModelList, ModelMeta, ModelObject};
use super::AppState;
use crate::scheduler::ModelView;

/// `GET /models` (`?reload=1`, llama-server's: the config, models folder and
/// `--models-preset` are read again first, as `/admin/reload` does).
pub async fn list_models(State(state): State<AppState>, query: axum::extract::RawQuery) -> Result<Json<ModelList>, ApiError> {
    let snapshot = match super::helpers::query_param(&query, "reload")?.as_deref() {
        Some("1" | "true") => {
            super::admin::reload_config(&state).await?;
            state.scheduler.synced().await?
        }
        _ => state.scheduler.snapshot(),
    };
    let data = snapshot.active().map(object).collect();
    Ok(Json(ModelList { object: "list", data }))
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelObject>, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let name = id.trim();
    if name.is_empty() {
        return Err(ApiError::ModelNotFound(String::new()));
    }
    Ok(Json(object(snapshot.find(name)?)))
}

fn object(entry: &ModelView) -> ModelObject {
    let meta = entry.loaded().map(|m| {
        let info = m.engine.info();
        ModelMeta {
            n_ctx: info.n_ctx_slot,
            n_ctx_train: info.n_ctx_train,
            n_params: info.n_params,
            size: info.size_bytes,
            n_vocab: info.n_vocab,
            parallel: info.parallel,
            draft: info.draft.clone(),
        }
    });
    ModelObject {
        id: entry.spec.id.clone(),
        object: "model",
        created: entry.created,
        owned_by: "vram-llm",
        aliases: std::iter::once(&entry.spec.id).chain(&entry.spec.aliases).cloned().collect(),
        tags: entry.spec.tags.clone(),
        state: entry.state,
        status: match entry.state {
            "failed" => serde_json::json!({"value": "unloaded", "args": [], "failed": true}),
            _ => serde_json::json!({"value": super::router::status_value(entry), "args": []}),
        },
        sleeping_bytes: entry.sleeping_bytes,
        downloaded: entry.spec.fetch.as_ref().map(|_| false),
        draft: entry.spec.draft.as_ref().map(|d| d.id.clone()),
        progress: entry.progress,
        meta,
    }
}
