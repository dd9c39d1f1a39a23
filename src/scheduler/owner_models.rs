//! The owner's changes to the model list: a reload, and the downloads of
//! models registered from the hub (`ModelSpec::fetch`): the first request
//! starts one, later ones wait for it, the end of it sends every waiter on
//! as a request (or the failure to each).

use std::sync::Arc;

use super::{entry, Msg, Owner, Reply};
use crate::scheduler::{Registration, ReloadReport, SchedError};

impl Owner {
    /// Parks a request for a model not downloaded yet; the first starts the
    /// download, every later one waits for the same.
    pub(super) fn fetch(&mut self, model: usize, reply: Reply, explicit: bool) {
        self.start_fetch(model, Some((reply, explicit)));
    }

    /// Downloads without a request waiting (nothing when it is on disk or
    /// already downloading).
    pub(super) fn prefetch(&mut self, model: usize) {
        if self.entries.get(model).is_some_and(|e| e.spec.fetch.is_some()) {
            self.start_fetch(model, None);
        }
    }

    fn start_fetch(&mut self, model: usize, waiter: Option<(Reply, bool)>) {
        let entry = &mut self.entries[model];
        if let Some(waiting) = &mut entry.fetching {
            waiting.extend(waiter);
            return;
        }
        let Some(fetcher) = self.fetcher.clone() else {
            let reason = "it is not downloaded and this server downloads nothing".to_string();
            if let Some((reply, _)) = waiter {
                let _ = reply.send(Err(SchedError::LoadFailed { model: entry.spec.id.clone(), reason }));
            }
            return;
        };
        entry.fetching = Some(waiter.into_iter().collect());
        entry.progress = Some(0);
        tracing::info!(model = %entry.spec.id, "downloading on its first request");
        let (tx, progress_tx) = (self.tx.clone(), self.tx.clone());
        let last = std::sync::atomic::AtomicU8::new(0);
        let progress: crate::types::Progress = Arc::new(move |fraction| {
            let percent = (fraction.clamp(0.0, 1.0) * 100.0) as u8;
            if last.swap(percent, std::sync::atomic::Ordering::Relaxed) != percent {
                let _ = progress_tx.send(Msg::Progress { model, percent });
            }
        });
        let download = fetcher.fetch(entry.spec.clone(), progress);
        tokio::spawn(async move {
            let result = download.await;
            let _ = tx.send(Msg::Fetched { model, result });
        });
    }

    /// The download ended: the model takes its registration on disk and its
    /// waiting requests go on as any request; or they all get the failure
    /// (the next request tries again).
    pub(super) fn fetched(&mut self, model: usize, result: Result<Registration, String>) {
        let waiting = self.entries[model].fetching.take().unwrap_or_default();
        self.entries[model].progress = None;
        match result {
            Ok(r) if r.spec.fetch.is_none() && !self.state.models[model].retired => {
                tracing::info!(model = %r.spec.id, path = %r.spec.path.display(), "downloaded");
                self.state.models[model].limits = r.limits;
                self.entries[model].spec = Arc::new(r.spec);
                self.entries[model].n_vocab = r.n_vocab;
                for (reply, explicit) in waiting.into_iter().filter(|(r, _)| !r.is_closed()) {
                    self.handle(Msg::Acquire { model, reply, explicit });
                }
            }
            other => {
                let reason = other.err().unwrap_or_else(|| "the model changed while it downloaded".into());
                tracing::error!(model = %self.entries[model].spec.id, "download failed: {reason}");
                for (reply, _) in waiting {
                    let _ = reply.send(Err(SchedError::LoadFailed { model: self.entries[model].spec.id.clone(), reason: reason.clone() }));
                }
            }
        }
    }

    pub(super) fn reload(&mut self, models: Vec<Registration>, now: std::time::Instant) -> ReloadReport {
        let mut report = ReloadReport::default();
        for index in 0..self.entries.len() {
            if self.state.models[index].retired {
                continue;
            }
            let spec = self.entries[index].spec.clone();
            match models.iter().find(|r| r.spec.id == spec.id) {
                Some(r) if r.spec == *spec => report.unchanged.push(spec.id.clone()),
                found => {
                    self.state.retire(index);
                    let list = if found.is_some() { &mut report.changed } else { &mut report.removed };
                    list.push(spec.id.clone());
                }
            }
        }
        for r in models {
            if report.unchanged.contains(&r.spec.id) {
                continue;
            }
            if !report.changed.contains(&r.spec.id) {
                report.added.push(r.spec.id.clone());
            }
            self.state.add_model(r.limits, now);
            self.entries.push(entry(r.spec, r.n_vocab));
        }
        tracing::info!(?report, "config reloaded");
        report
    }
}
