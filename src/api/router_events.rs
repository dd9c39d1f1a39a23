//! llama-server's router endpoints that add models and report on them:
//! `POST /models` `{"model": "owner/repo[:QUANT]"}` downloads a model of the
//! hub (added to the list first when it is not there) without loading it,
//! and `GET /models/sse` streams what changes, in llama-server's shape
//! `{"model", "event", "data"}`: `status_change` (`data.value` as in
//! `/models`), `download_progress` (`data.progress`, percent),
//! `download_finished`, `download_failed`, `model_remove`. The events are
//! read off the scheduler's snapshots (`events`, a pure diff).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::router::status_value;
use super::AppState;
use crate::scheduler::Snapshot;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    model: String,
}

impl super::openai::WireRequest for Download {}

/// `POST /models`: answers `{"success": true}` once the download started
/// (or at once for a model on disk); its end shows in `/models/sse` and
/// `/models`.
pub async fn download(State(state): State<AppState>, ApiJson(req): ApiJson<Download>) -> Result<Response, ApiError> {
    let invalid = |message: String| ApiError::InvalidRequest { message, param: Some("model".into()) };
    let index = match state.scheduler.snapshot().find(&req.model) {
        Ok(view) => view.index,
        Err(_) => {
            let source = state.reload_from.clone().ok_or_else(|| invalid("this server cannot add models".into()))?;
            let name = req.model.clone();
            let read = move || {
                let config = crate::config::Config::load(&source.sources, &source.flags)?;
                let spec = config.hub_model(&name)?;
                crate::catalogue::registrations(vec![spec], &source.placement).pop().ok_or_else(|| "not registered".to_string())
            };
            let registration = tokio::task::spawn_blocking(read).await.map_err(|e| ApiError::Internal(e.to_string()))?.map_err(invalid)?;
            state.scheduler.add(registration).await?
        }
    };
    state.scheduler.prefetch(index)?;
    Ok(Json(json!({"success": true})).into_response())
}

/// `GET /models/sse`: an event for each change, as long as the client stays.
pub async fn events_stream(State(state): State<AppState>) -> Response {
    let (tx, response) = super::sse::channel_response();
    let mut watch = state.scheduler.watch();
    tokio::spawn(async move {
        let mut before = watch.borrow_and_update().clone();
        while watch.changed().await.is_ok() {
            let after = watch.borrow_and_update().clone();
            for event in events(&before, &after) {
                if tx.send(super::sse::data(&event)).await.is_err() {
                    return;
                }
            }
            before = after;
        }
    });
    response
}

/// What changed from `before` to `after`, as llama-server's router events.
pub fn events(before: &Snapshot, after: &Snapshot) -> Vec<Value> {
    let event = |model: &str, name: &str, data: Option<Value>| {
        let mut e = json!({"model": model, "event": name});
        if let Some(data) = data {
            e["data"] = data;
        }
        e
    };
    let mut out = Vec::new();
    for now in after.active() {
        let id = now.spec.id.as_str();
        let was = before.active().find(|m| m.spec.id == id);
        let downloading = |m: &crate::scheduler::ModelView| m.state == "downloading";
        if was.is_none_or(|w| status_value(w) != status_value(now)) {
            out.push(event(id, "status_change", Some(json!({"value": status_value(now)}))));
        }
        if downloading(now) && was.is_none_or(|w| !downloading(w) || w.progress != now.progress) {
            out.push(event(id, "download_progress", Some(json!({"progress": now.progress.unwrap_or(0)}))));
        }
        if was.is_some_and(downloading) && !downloading(now) {
            out.push(event(id, if now.spec.fetch.is_none() { "download_finished" } else { "download_failed" }, None));
        }
    }
    for gone in before.active().filter(|m| !after.active().any(|n| n.spec.id == m.spec.id)) {
        out.push(event(&gone.spec.id, "model_remove", None));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::scheduler::ModelView;
    use crate::types::{HubSource, ModelSpec};

    fn view(id: &str, state: &'static str, progress: Option<u8>, downloaded: bool) -> ModelView {
        let spec = ModelSpec { fetch: (!downloaded).then(|| HubSource { repo: "o/r:Q8_0".into(), file: None }), ..ModelSpec::new(id, "/m.gguf") };
        ModelView {
            index: 0,
            spec: Arc::new(spec),
            n_vocab: None,
            created: 0,
            retired: false,
            state,
            sleeping_bytes: None,
            engine: None,
            progress,
            bytes: 0,
            bytes_measured: false,
            queue_depth: 0,
            in_flight: 0,
            slots: 1,
            last_used: Instant::now(),
            load_count: 0,
            last_load_ms: None,
            lingers: false,
            failure: None,
            placement: None,
            holding: None,
        }
    }

    fn snap(models: Vec<ModelView>) -> Snapshot {
        Snapshot { models, ..Snapshot::empty() }
    }

    fn names(events: &[Value]) -> Vec<String> {
        events.iter().map(|e| format!("{} {}", e["event"].as_str().unwrap(), e["model"].as_str().unwrap())).collect()
    }

    #[test]
    fn a_download_reports_its_status_progress_and_end() {
        let idle = snap(vec![view("m", "unloaded", None, false)]);
        let started = snap(vec![view("m", "downloading", Some(0), false)]);
        let half = snap(vec![view("m", "downloading", Some(50), false)]);
        let done = snap(vec![view("m", "unloaded", None, true)]);
        assert_eq!(names(&events(&idle, &started)), ["status_change m", "download_progress m"]);
        assert_eq!(events(&started, &half), vec![json!({"model": "m", "event": "download_progress", "data": {"progress": 50}})]);
        assert!(events(&half, &half).is_empty(), "nothing changed, nothing sent");
        assert_eq!(names(&events(&half, &done)), ["status_change m", "download_finished m"]);
        assert_eq!(names(&events(&half, &idle)), ["status_change m", "download_failed m"]);
    }

    #[test]
    fn a_new_model_and_a_removed_one_are_told() {
        let one = snap(vec![view("a", "loaded", None, true)]);
        let two = snap(vec![view("a", "loaded", None, true), view("b", "unloaded", None, true)]);
        assert_eq!(events(&one, &two), vec![json!({"model": "b", "event": "status_change", "data": {"value": "unloaded"}})]);
        assert_eq!(names(&events(&two, &one)), ["model_remove b"]);
    }
}
