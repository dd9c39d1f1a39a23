//! Prometheus metrics: one registry for the process, every family defined
//! here. Events (a request ends, a load or unload finishes, a swap) are
//! recorded where they happen; gauges of the current state (queues, slots,
//! memory) are set from the scheduler's snapshot when `/metrics` is scraped
//! (api::metrics). Names follow llama-server's (`llamacpp:*`) where one
//! exists, so its dashboards work; the rest are `vram_llm_*`, and the gauges
//! the Kubernetes inference gateway reads are `vram_llm:*` (docs/scale-out.md).

use std::sync::LazyLock;

pub mod llamacpp;

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub ttft: HistogramVec,
    pub per_token: HistogramVec,
    pub duration: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub predicted_tokens: IntCounterVec,
    pub cached_tokens: IntCounterVec,
    pub loads: IntCounterVec,
    pub load_seconds: HistogramVec,
    pub unloads: IntCounterVec,
    pub swaps: IntCounter,
    pub swap_phase: HistogramVec,
    pub queue_wait: HistogramVec,
    pub wait_over_bound: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections: IntCounterVec,
    // Set at scrape time from the snapshot.
    pub model_loaded: IntGaugeVec,
    pub model_sleeping: IntGaugeVec,
    pub model_sleeping_bytes: IntGaugeVec,
    pub model_download_percent: IntGaugeVec,
    pub model_memory: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub slots_busy: IntGaugeVec,
    pub slots_total: IntGaugeVec,
    pub gpu_bytes: IntGaugeVec,
    pub kv_saved: IntGaugeVec,
    pub waiting: Gauge,
    pub running: Gauge,
    pub kv_usage: Gauge,
    pub resident_info: GaugeVec,
    /// llama-server's `llamacpp:*` families, server-wide.
    pub llamacpp: llamacpp::LlamaCpp,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("opts"));
        let gauge = |name: &str, help: &str, labels: &[&str]| register(&r, IntGaugeVec::new(Opts::new(name, help), labels).expect("opts"));
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            register(&r, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("opts"))
        };
        let seconds = |start: f64, count: usize| exponential_buckets(start, 2.0, count).expect("buckets");
        Self {
            requests: counter("vram_llm_requests_total", "HTTP requests answered, by model, endpoint and status.", &["model", "path", "status"]),
            ttft: histogram(
                "vram_llm_time_to_first_token_seconds",
                "From request to first generated text, including queueing and any model load.",
                &["model"],
                seconds(0.01, 14),
            ),
            per_token: histogram(
                "vram_llm_time_per_output_token_seconds",
                "Mean time per generated token after the first, per request.",
                &["model"],
                seconds(0.0025, 10),
            ),
            duration: histogram("vram_llm_request_duration_seconds", "From request to the end of its response.", &["model"], seconds(0.01, 16)),
            prompt_tokens: counter("vram_llm_prompt_tokens_total", "Prompt tokens of finished generations (cached ones included).", &["model"]),
            predicted_tokens: counter("vram_llm_tokens_predicted_total", "Generated tokens of finished generations.", &["model"]),
            cached_tokens: counter(
                "vram_llm_prompt_cache_hit_tokens_total",
                "Prompt tokens served from a slot's or the host KV cache instead of prefilled.",
                &["model"],
            ),
            loads: counter("vram_llm_model_loads_total", "Model loads, by result (ok, error).", &["model", "result"]),
            load_seconds: histogram("vram_llm_model_load_seconds", "Time to load a model.", &["model"], seconds(0.025, 12)),
            unloads: counter("vram_llm_model_unloads_total", "Model unloads, by reason (evicted for another model, or other).", &["model", "reason"]),
            swaps: register(&r, IntCounter::new("vram_llm_swaps_total", "Loads that evicted other models.").expect("opts")),
            connections_open: register(&r, IntGauge::new("vram_llm_connections_open", "Client connections being served.").expect("opts")),
            connections: counter(
                "vram_llm_connections_total",
                "Client connections accepted, by outcome: served, refused (--max-connections reached: answered 503), or dropped (as many refusals in flight as allowed: closed unread).",
                &["outcome"],
            ),
            swap_phase: histogram(
                "vram_llm_swap_phase_seconds",
                "Where swaps spend their time: wait (oldest request before the load began), unload, weights, context, load (all of it).",
                &["phase"],
                seconds(0.005, 14),
            ),
            queue_wait: histogram(
                "vram_llm_queue_wait_seconds",
                "From a request's arrival to its slot (the scheduler's admission), by model.",
                &["model"],
                seconds(0.01, 14),
            ),
            wait_over_bound: counter(
                "vram_llm_queue_wait_over_bound_total",
                "Admitted requests that waited longer than --max-wait for their slot, by model.",
                &["model"],
            ),
            model_loaded: gauge("vram_llm_model_loaded", "1 when the model is loaded.", &["model"]),
            model_sleeping: gauge("vram_llm_model_sleeping", "1 when the model sleeps (evicted, its weights kept for a fast wake).", &["model"]),
            model_sleeping_bytes: gauge(
                "vram_llm_model_sleeping_bytes",
                "Pinned host memory a sleeping model keeps (0 on the CPU: its weights are the mapped file).",
                &["model"],
            ),
            model_download_percent: gauge(
                "vram_llm_model_download_percent",
                "A hub model's download progress while it runs on its first request (0-100; absent otherwise).",
                &["model"],
            ),
            model_memory: gauge("vram_llm_model_memory_bytes", "Memory the model holds when loaded (measured), else its estimate.", &["model"]),
            queue_depth: gauge("vram_llm_queue_depth", "Requests waiting for the model (for it to load, or for a slot).", &["model"]),
            in_flight: gauge("vram_llm_requests_in_flight", "Requests holding one of the model's slots.", &["model"]),
            slots_busy: gauge("vram_llm_slots_busy", "Slots generating.", &["model"]),
            slots_total: gauge("vram_llm_slots_total", "Slots of the loaded model.", &["model"]),
            gpu_bytes: gauge("vram_llm_gpu_memory_bytes", "GPU memory by kind: total, free, used (all processes), models (ours).", &["gpu", "kind"]),
            kv_saved: gauge("vram_llm_kv_cache_saved_bytes", "Saved KV states held by the host KV cache, by tier (memory, disk).", &["tier"]),
            waiting: register(&r, Gauge::new("vram_llm:num_requests_waiting", "Requests waiting, all models (inference gateway: TotalQueuedRequests).").expect("opts")),
            running: register(&r, Gauge::new("vram_llm:num_requests_running", "Requests in flight, all models (inference gateway: TotalRunningRequests).").expect("opts")),
            kv_usage: register(
                &r,
                Gauge::new("vram_llm:kv_cache_usage_perc", "Fraction (0-1) of the loaded models' KV cells their slots hold (inference gateway: KVCacheUtilization).")
                    .expect("opts"),
            ),
            resident_info: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "vram_llm:lora_requests_info",
                        "Resident models as the inference gateway reads LoRA adapters: running_lora_adapters = loaded models, waiting_lora_adapters = models with waiting requests that are not loaded, max_lora = how many can be loaded now; the value is the time of the scrape.",
                    ),
                    &["running_lora_adapters", "waiting_lora_adapters", "max_lora"],
                )
                .expect("opts"),
            ),
            registry: r,
            llamacpp: llamacpp::LlamaCpp::default(),
        }
    }

    /// Everything in Prometheus' text format (0.0.4): llama-server's
    /// families first (`now`: its two gauges of the current state), then ours.
    pub fn encode(&self, now: llamacpp::Now) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        self.llamacpp.render(now) + &String::from_utf8(out).unwrap_or_default()
    }
}

static PROCESS_START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Notes when the process started serving (the first call wins).
pub fn mark_process_start() {
    PROCESS_START.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
}

/// Unix time the process started serving (`Process-Start-Time-Unix`).
pub fn process_start_unix() -> u64 {
    mark_process_start();
    PROCESS_START.get().copied().unwrap_or(0)
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_llama_servers_names_first() {
        let m = Metrics::new();
        m.prompt_tokens.with_label_values(&["a"]).inc_by(7);
        m.swap_phase.with_label_values(&["context"]).observe(0.09);
        let text = m.encode(llamacpp::Now::default());
        assert!(text.contains("vram_llm_prompt_tokens_total{model=\"a\"} 7"), "{text}");
        assert!(text.contains("\nllamacpp:prompt_tokens_total 0\n"), "{text}");
        assert!(text.contains("vram_llm_swap_phase_seconds_bucket{phase=\"context\",le=\"0.16\"} 1"), "{text}");
        assert!(text.contains("# TYPE vram_llm:num_requests_waiting gauge"), "{text}");
    }
}
