//! `GET /v1/models`: every registered model with its state; loaded ones carry
//! a `meta` object (context, parameters, size) as llama-server does.

use axum::extract::State;
use axum::Json;

use super::openai::{ModelList, ModelMeta, ModelObject};
use super::AppState;

pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let snapshot = state.scheduler.snapshot();
    let data = snapshot
        .active()
        .map(|entry| {
            let meta = entry.loaded().map(|m| {
                let info = m.engine.info();
                ModelMeta {
                    n_ctx: info.n_ctx_slot,
                    n_ctx_train: info.n_ctx_train,
                    n_params: info.n_params,
                    size: info.size_bytes,
                    n_vocab: info.n_vocab,
                    parallel: info.parallel,
                }
            });
            ModelObject {
                id: entry.spec.id.clone(),
                object: "model",
                created: entry.created,
                owned_by: "vram-llm",
                aliases: entry.spec.aliases.clone(),
                state: entry.state,
                sleeping_bytes: entry.sleeping_bytes,
                meta,
            }
        })
        .collect();
    Json(ModelList { object: "list", data })
}
