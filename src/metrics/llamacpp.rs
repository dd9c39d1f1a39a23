//! llama-server's own families (`llamacpp:*`), as a llama-server reports
//! them: unlabelled and server-wide (with several models, their sum). Written
//! by hand rather than through the registry because two of them are rates
//! over the time since the previous scrape, which a scrape resets.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

#[derive(Default)]
struct Counts {
    prompt_tokens: u64,
    cached_tokens: u64,
    prompt_seconds: f64,
    predicted_tokens: u64,
    predicted_seconds: f64,
    n_tokens_max: u64,
    /// Tokens and seconds since the previous scrape.
    window_prompt: (u64, f64),
    window_predicted: (u64, f64),
}

/// A finished generation as the `llamacpp:*` counters count it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finished {
    /// Prompt tokens prefilled (cached ones are counted apart).
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub prompt_seconds: f64,
    pub predicted_tokens: u64,
    pub predicted_seconds: f64,
}

/// The counters behind the `llamacpp:*` families.
#[derive(Default)]
pub struct LlamaCpp {
    counts: Mutex<Counts>,
    decodes: AtomicU64,
    busy_slots: AtomicU64,
    /// Speculative decoding: drafts, drafted tokens, accepted tokens.
    drafts: AtomicU64,
    draft_tokens: AtomicU64,
    accepted_tokens: AtomicU64,
}

/// Current state, read from the scheduler at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Now {
    pub processing: i64,
    pub deferred: i64,
}

impl LlamaCpp {
    /// A generation finished.
    pub fn finished(&self, f: Finished) {
        let mut c = self.counts.lock();
        c.prompt_tokens += f.prompt_tokens;
        c.cached_tokens += f.cached_tokens;
        c.prompt_seconds += f.prompt_seconds;
        c.predicted_tokens += f.predicted_tokens;
        c.predicted_seconds += f.predicted_seconds;
        c.n_tokens_max = c.n_tokens_max.max(f.prompt_tokens + f.cached_tokens + f.predicted_tokens);
        c.window_prompt.0 += f.prompt_tokens;
        c.window_prompt.1 += f.prompt_seconds;
        c.window_predicted.0 += f.predicted_tokens;
        c.window_predicted.1 += f.predicted_seconds;
    }

    /// One `llama_decode` of a batch holding `slots` sequences.
    pub fn decoded(&self, slots: usize) {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        self.busy_slots.fetch_add(slots as u64, Ordering::Relaxed);
    }

    /// One draft of `drafted` tokens was verified; `accepted` were kept.
    pub fn drafted(&self, drafted: usize, accepted: usize) {
        self.drafts.fetch_add(1, Ordering::Relaxed);
        self.draft_tokens.fetch_add(drafted as u64, Ordering::Relaxed);
        self.accepted_tokens.fetch_add(accepted as u64, Ordering::Relaxed);
    }

    /// The families in Prometheus' text format; starts a new rate window.
    pub fn render(&self, now: Now) -> String {
        let (c, prompt_rate, predicted_rate) = {
            let mut c = self.counts.lock();
            let rate = |(n, s): (u64, f64)| if s > 0.0 { n as f64 / s } else { 0.0 };
            let rates = (rate(c.window_prompt), rate(c.window_predicted));
            c.window_prompt = (0, 0.0);
            c.window_predicted = (0, 0.0);
            (Counts { window_prompt: (0, 0.0), window_predicted: (0, 0.0), ..*c }, rates.0, rates.1)
        };
        let decodes = self.decodes.load(Ordering::Relaxed);
        let busy = self.busy_slots.load(Ordering::Relaxed);
        let per_decode = if decodes > 0 { busy as f64 / decodes as f64 } else { 0.0 };
        let families: [(&str, &str, &str, f64); 15] = [
            ("prompt_tokens_total", "counter", "Prompt tokens prefilled (cached tokens are counted in prompt_tokens_cached_total).", c.prompt_tokens as f64),
            ("prompt_tokens_cached_total", "counter", "Prompt tokens taken from a cache instead of prefilled.", c.cached_tokens as f64),
            ("prompt_seconds_total", "counter", "Time to the first token of finished generations.", c.prompt_seconds),
            ("tokens_predicted_total", "counter", "Generated tokens.", c.predicted_tokens as f64),
            ("tokens_predicted_seconds_total", "counter", "Generation time after the first token.", c.predicted_seconds),
            ("n_decode_total", "counter", "llama_decode() calls.", decodes as f64),
            ("n_tokens_max", "counter", "Largest prompt plus generated tokens of one generation.", c.n_tokens_max as f64),
            ("spec_decode_num_draft_tokens_total", "counter", "Drafted tokens (speculative decoding).", self.draft_tokens.load(Ordering::Relaxed) as f64),
            ("spec_decode_num_accepted_tokens_total", "counter", "Drafted tokens the model accepted.", self.accepted_tokens.load(Ordering::Relaxed) as f64),
            ("spec_decode_num_drafts_total", "counter", "Drafts verified.", self.drafts.load(Ordering::Relaxed) as f64),
            ("prompt_tokens_seconds", "gauge", "Prompt throughput in tokens/s since the previous scrape.", prompt_rate),
            ("predicted_tokens_seconds", "gauge", "Generation throughput in tokens/s since the previous scrape.", predicted_rate),
            ("requests_processing", "gauge", "Requests holding a slot.", now.processing as f64),
            ("requests_deferred", "gauge", "Requests waiting for a model or a slot.", now.deferred as f64),
            ("n_busy_slots_per_decode", "gauge", "Mean sequences per llama_decode() call.", per_decode),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in families {
            let _ = write!(out, "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("llamacpp:{name} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("{name} in {text}")).parse().unwrap()
    }

    #[test]
    fn totals_add_up_and_rates_cover_the_time_since_the_last_scrape() {
        let m = LlamaCpp::default();
        m.finished(Finished { prompt_tokens: 6, cached_tokens: 4, prompt_seconds: 0.5, predicted_tokens: 9, predicted_seconds: 3.0 });
        m.decoded(1);
        m.decoded(3);
        m.drafted(8, 5);
        m.drafted(4, 0);
        let text = m.render(Now { processing: 1, deferred: 2 });
        assert_eq!(value(&text, "prompt_tokens_total"), 6.0);
        assert_eq!(value(&text, "prompt_tokens_cached_total"), 4.0);
        assert_eq!(value(&text, "tokens_predicted_total"), 9.0);
        assert_eq!(value(&text, "predicted_tokens_seconds"), 3.0);
        assert_eq!(value(&text, "n_tokens_max"), 19.0);
        assert_eq!(value(&text, "n_busy_slots_per_decode"), 2.0);
        assert_eq!(value(&text, "requests_deferred"), 2.0);
        assert_eq!(value(&text, "spec_decode_num_drafts_total"), 2.0);
        assert_eq!(value(&text, "spec_decode_num_draft_tokens_total"), 12.0);
        assert_eq!(value(&text, "spec_decode_num_accepted_tokens_total"), 5.0);
        assert!(text.contains("# TYPE llamacpp:n_decode_total counter\n"), "{text}");
        let again = m.render(Now::default());
        assert_eq!(value(&again, "predicted_tokens_seconds"), 0.0, "a new window");
        assert_eq!(value(&again, "tokens_predicted_total"), 9.0, "totals stay");
    }
}
