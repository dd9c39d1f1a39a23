//! `GET /metrics`: Prometheus text format. Event counters and histograms are
//! recorded as things happen (`crate::metrics`); the gauges of the current
//! state are set here from the scheduler's snapshot at each scrape.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

pub async fn metrics(State(state): State<AppState>) -> Response {
    if !state.options.metrics {
        return ApiError::NotSupported("this server does not serve /metrics (started with --no-metrics)".into()).into_response();
    }
    // Scrapes reset and set the same global gauges: one at a time, or a
    // concurrent one could encode between another's reset and set.
    static SCRAPE: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _one_at_a_time = SCRAPE.lock();
    let m = crate::metrics::global();
    let snapshot = state.scheduler.snapshot();
    for family in [&m.model_loaded, &m.model_sleeping, &m.model_sleeping_bytes, &m.model_download_percent, &m.model_memory, &m.queue_depth, &m.in_flight, &m.slots_busy, &m.slots_total] {
        family.reset();
    }
    let (mut waiting, mut running, mut processing, mut held, mut cells) = (0i64, 0i64, 0i64, 0u64, 0u64);
    let (mut resident, mut wanted) = (Vec::new(), Vec::new());
    let registered = snapshot.active().count();
    for view in snapshot.active() {
        let id = view.spec.id.as_str();
        let loaded = view.loaded();
        let (busy, total, engine_queue) = match &loaded {
            Some(model) => {
                let stats = model.engine.slot_stats();
                let n_ctx = u64::from(model.engine.info().n_ctx_slot);
                cells += n_ctx * u64::from(stats.total);
                held += model.engine.slots().iter().map(|s| u64::from(s.n_cached).min(n_ctx)).sum::<u64>();
                (stats.busy, stats.total, stats.queued)
            }
            None => (0, 0, 0),
        };
        let queued = view.queue_depth as i64 + i64::from(engine_queue);
        m.model_loaded.with_label_values(&[id]).set(i64::from(loaded.is_some()));
        m.model_sleeping.with_label_values(&[id]).set(i64::from(view.sleeping_bytes.is_some()));
        m.model_sleeping_bytes.with_label_values(&[id]).set(view.sleeping_bytes.unwrap_or(0) as i64);
        m.model_memory.with_label_values(&[id]).set(view.bytes as i64);
        if view.state == "downloading" {
            m.model_download_percent.with_label_values(&[id]).set(i64::from(view.progress.unwrap_or(0)));
        }
        m.queue_depth.with_label_values(&[id]).set(queued);
        m.in_flight.with_label_values(&[id]).set(i64::from(view.in_flight));
        m.slots_busy.with_label_values(&[id]).set(i64::from(busy));
        m.slots_total.with_label_values(&[id]).set(i64::from(total));
        processing += i64::from(busy);
        waiting += queued;
        running += i64::from(view.in_flight);
        if loaded.is_some() {
            resident.push(id.to_string());
        } else if view.queue_depth > 0 {
            wanted.push(id.to_string());
        }
    }
    m.waiting.set(waiting as f64);
    m.running.set(running as f64);
    m.kv_usage.set(if cells == 0 { 0.0 } else { held as f64 / cells as f64 });
    // Room for one more model unless a model already waits for room.
    let max = if wanted.is_empty() { (resident.len() + 1).min(registered) } else { resident.len() };
    m.resident_info.reset();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    m.resident_info.with_label_values(&[&resident.join(","), &wanted.join(","), &max.to_string()]).set(now);
    m.gpu_bytes.reset();
    for gpu in state.scheduler.gpu_status(&snapshot) {
        let index = gpu.info.index.to_string();
        let kinds = [("total", gpu.info.total_mib), ("free", gpu.info.free_mib), ("used", gpu.info.used_mib), ("models", gpu.models_mib)];
        for (kind, mib) in kinds {
            m.gpu_bytes.with_label_values(&[&index, kind]).set((mib << 20) as i64);
        }
    }
    if let Some(usage) = state.kv_cache.as_ref().map(|c| c.usage()) {
        m.kv_saved.with_label_values(&["memory"]).set((usage.memory_mib << 20) as i64);
        m.kv_saved.with_label_values(&["disk"]).set((usage.disk_mib << 20) as i64);
    }
    let started = crate::metrics::process_start_unix().to_string();
    // llama-server's header: a scraper tells a restart from a counter reset.
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], [("process-start-time-unix", started)], m.encode(crate::metrics::llamacpp::Now { processing, deferred: waiting })).into_response()
}
