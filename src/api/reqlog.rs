//! One log line per request (target `vram_llm::request`): method, path,
//! status, model, prompt / completion / cached tokens, time to first token
//! and total time. The middleware starts a [`RequestLog`]; handlers fill in
//! what they learn; the line is written when the last holder lets go of it,
//! so a streamed response is logged when its stream ends, with its totals.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use crate::engine::Usage;

#[derive(Debug, Default)]
struct Record {
    method: String,
    path: String,
    /// The router's route that matched (`other` when none did): the
    /// metrics label, bounded whatever paths clients send.
    route: String,
    status: u16,
    model: Option<String>,
    usage: Option<Usage>,
    /// When the first generated text arrived.
    first_at: Option<Instant>,
    /// How the generation ended, when it did not finish normally.
    ended: Option<String>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    record: Mutex<Record>,
}

/// A request's log line in the making; clones share it.
#[derive(Debug, Clone)]
pub struct RequestLog(Arc<Inner>);

impl RequestLog {
    fn new(method: &str, path: &str, route: &str) -> Self {
        let record = Record { method: method.to_string(), path: path.to_string(), route: route.to_string(), ..Record::default() };
        Self(Arc::new(Inner { started: Instant::now(), record: Mutex::new(record) }))
    }

    pub fn model(&self, id: &str) {
        self.0.record.lock().model = Some(id.to_string());
    }

    /// The first generated text arrived.
    pub fn first_token(&self) {
        let mut r = self.0.record.lock();
        r.first_at.get_or_insert_with(Instant::now);
    }

    /// Time since the request arrived, and to its first generated text.
    pub fn times(&self) -> (std::time::Duration, Option<std::time::Duration>) {
        let r = self.0.record.lock();
        (self.0.started.elapsed(), r.first_at.map(|at| at.duration_since(self.0.started)))
    }

    /// `timings` as llama-server names them: the prompt phase is the time to
    /// the first text, the rest is generation.
    pub fn timings(&self, usage: &Usage) -> serde_json::Value {
        let (total, first) = self.times();
        let first = first.unwrap_or(total);
        timings_of(usage, first.as_secs_f64() * 1000.0, (total - first).as_secs_f64() * 1000.0)
    }

    /// A generation of the request finished; several (`n`, prompt lists)
    /// add up their tokens.
    pub fn done(&self, usage: &Usage) {
        let mut r = self.0.record.lock();
        let total = match r.usage.take() {
            Some(before) => Usage {
                prompt_tokens: before.prompt_tokens + usage.prompt_tokens,
                completion_tokens: before.completion_tokens + usage.completion_tokens,
                cached_tokens: before.cached_tokens + usage.cached_tokens,
                draft_tokens: before.draft_tokens + usage.draft_tokens,
                draft_accepted: before.draft_accepted + usage.draft_accepted,
            },
            None => *usage,
        };
        r.usage = Some(total);
    }

    /// The generation failed or was cancelled after the response started.
    pub fn ended(&self, why: &str) {
        self.0.record.lock().ended = Some(why.to_string());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let r = self.record.get_mut();
        let total_ms = self.started.elapsed().as_millis() as u64;
        let ttft_ms = r.first_at.map(|at| at.duration_since(self.started).as_millis() as u64);
        let usage = r.usage.as_ref();
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "vram_llm::request",
                    $level,
                    method = %r.method,
                    path = %r.path,
                    status = r.status,
                    model = r.model.as_deref().unwrap_or("-"),
                    prompt_tokens = usage.map(|u| u.prompt_tokens),
                    completion_tokens = usage.map(|u| u.completion_tokens),
                    cached_tokens = usage.map(|u| u.cached_tokens),
                    ttft_ms,
                    total_ms,
                    ended = r.ended.as_deref(),
                    "request"
                )
            };
        }
        record_metrics(r, total_ms, ttft_ms);
        // Health and status polls would drown the rest.
        if r.path == "/health" || r.path == "/v1/health" || r.path == "/metrics" {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

/// Starts every request's log line; handlers find it in the extensions.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("other", |p| p.as_str());
    let log = RequestLog::new(req.method().as_str(), req.uri().path(), route);
    req.extensions_mut().insert(log.clone());
    let response = next.run(req).await;
    log.0.record.lock().status = response.status().as_u16();
    response
}

/// The request's counters and histograms (see `crate::metrics`).
fn record_metrics(r: &Record, total_ms: u64, ttft_ms: Option<u64>) {
    let m = crate::metrics::global();
    let model = r.model.as_deref().unwrap_or("");
    m.requests.with_label_values(&[model, &r.route, &r.status.to_string()]).inc();
    let Some(usage) = &r.usage else { return };
    m.prompt_tokens.with_label_values(&[model]).inc_by(u64::from(usage.prompt_tokens));
    m.predicted_tokens.with_label_values(&[model]).inc_by(u64::from(usage.completion_tokens));
    m.cached_tokens.with_label_values(&[model]).inc_by(u64::from(usage.cached_tokens));
    // llama-server's split: the prompt phase runs to the first token.
    let prompt_ms = ttft_ms.unwrap_or(total_ms);
    m.llamacpp.finished(crate::metrics::llamacpp::Finished {
        prompt_tokens: u64::from(usage.prompt_tokens.saturating_sub(usage.cached_tokens)),
        cached_tokens: u64::from(usage.cached_tokens),
        prompt_seconds: prompt_ms as f64 / 1000.0,
        predicted_tokens: u64::from(usage.completion_tokens),
        predicted_seconds: total_ms.saturating_sub(prompt_ms) as f64 / 1000.0,
    });
    m.duration.with_label_values(&[model]).observe(total_ms as f64 / 1000.0);
    if let Some(ttft) = ttft_ms {
        m.ttft.with_label_values(&[model]).observe(ttft as f64 / 1000.0);
        if usage.completion_tokens > 1 {
            let per_token = total_ms.saturating_sub(ttft) as f64 / 1000.0 / f64::from(usage.completion_tokens - 1);
            m.per_token.with_label_values(&[model]).observe(per_token);
        }
    }
}

/// llama-server's `timings` for `usage`, its prompt read in `prompt_ms` and
/// the rest generated in `predicted_ms`; rates are 0 where nothing was timed.
pub fn timings_of(usage: &Usage, prompt_ms: f64, predicted_ms: f64) -> serde_json::Value {
    let prompt_n = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
    // The first token comes with the prompt phase: the rest are timed.
    let timed = usage.completion_tokens.saturating_sub(1);
    let per_second = |n: u32, ms: f64| if ms > 0.0 { n as f64 * 1000.0 / ms } else { 0.0 };
    let per_token = |n: u32, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    let mut timings = serde_json::json!({
        "cache_n": usage.cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per_token(prompt_n, prompt_ms),
        "prompt_per_second": per_second(prompt_n, prompt_ms),
        "predicted_n": usage.completion_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per_token(timed, predicted_ms),
        "predicted_per_second": per_second(timed, predicted_ms),
    });
    // As llama-server: only when something was drafted.
    if usage.draft_tokens > 0 {
        timings["draft_n"] = usage.draft_tokens.into();
        timings["draft_n_accepted"] = usage.draft_accepted.into();
    }
    timings
}
