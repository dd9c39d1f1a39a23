//! A large file over several connections (as axel and hf_transfer fetch):
//! `CONNECTIONS` byte ranges at once, each written at its offset of the
//! temporary file. Which bytes each range has is kept beside it
//! (`<temp>.parts`), so a dropped range resumes alone and a restart resumes
//! every range where it stopped. A server that ignores ranges answers the
//! whole file: the caller then fetches it over one connection.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::download::{OnProgress, Progress, ATTEMPTS};
use super::remote::{self, Hub};

/// Files at least this large are fetched over several connections.
pub const MIN_BYTES: u64 = 64 << 20;
pub const CONNECTIONS: u64 = 4;
/// How often (bytes per range) the ranges' progress is written down.
const SAVE_EVERY: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// Bytes from `start` already in the file.
    pub done: u64,
}

/// `size` bytes cut into `n` ranges (the last takes the remainder).
pub fn split(size: u64, n: u64) -> Vec<Range> {
    let step = size.div_ceil(n.max(1)).max(1);
    (0..size).step_by(step as usize).map(|start| Range { start, end: (start + step).min(size), done: 0 }).collect()
}

pub fn parts_path(temp: &Path) -> PathBuf {
    PathBuf::from(format!("{}.parts", temp.display()))
}

enum Outcome {
    Done,
    /// The server sent the whole file: it does not take ranges.
    NoRanges,
}

/// Fetches `url` (`size` bytes) into `temp`; false when the server takes no
/// ranges (nothing kept then).
pub async fn fetch(hub: &Hub, url: &str, temp: &Path, size: u64, name: &str, on: &OnProgress) -> Result<bool, String> {
    let sidecar = parts_path(temp);
    let ranges = std::fs::read(&sidecar)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Range>>(&bytes).ok())
        .filter(|r| r.last().is_some_and(|last| last.end == size))
        .unwrap_or_else(|| split(size, CONNECTIONS));
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(temp).map_err(|e| e.to_string())?;
    file.set_len(size).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared { ranges: Mutex::new(ranges.clone()), sidecar: sidecar.clone(), file, name: name.to_string(), size, on: on.clone() });
    shared.save();
    let tasks: Vec<_> = (0..ranges.len())
        .map(|i| {
            let (hub, url, shared) = (hub.clone(), url.to_string(), shared.clone());
            tokio::spawn(async move { fetch_range(&hub, &url, &shared, i).await })
        })
        .collect();
    let mut no_ranges = false;
    let mut failure = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(Outcome::Done) => {}
            Ok(Outcome::NoRanges) => no_ranges = true,
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let _ = std::fs::remove_file(&sidecar);
    if no_ranges {
        shared.file.set_len(0).map_err(|e| e.to_string())?;
        return Ok(false);
    }
    Ok(true)
}

struct Shared {
    ranges: Mutex<Vec<Range>>,
    sidecar: PathBuf,
    file: std::fs::File,
    name: String,
    size: u64,
    on: OnProgress,
}

impl Shared {
    /// Writes the ranges' progress down (a temporary file, then a rename).
    fn save(&self) {
        let text = serde_json::to_vec(&*self.ranges.lock()).expect("ranges serialize");
        let temp = PathBuf::from(format!("{}.tmp", self.sidecar.display()));
        if std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &self.sidecar)).is_err() {
            tracing::warn!(path = %self.sidecar.display(), "cannot write the download's progress; a restart begins it again");
        }
    }

    fn report(&self) {
        let done = self.ranges.lock().iter().map(|r| r.done).sum();
        (self.on)(&Progress { file: self.name.clone(), done, total: Some(self.size) });
    }
}

/// One range to its end, resumed after a dropped connection.
async fn fetch_range(hub: &Hub, url: &str, shared: &Shared, i: usize) -> Result<Outcome, String> {
    let mut failures = 0;
    loop {
        let Range { start, end, done } = shared.ranges.lock()[i].clone();
        if start + done >= end {
            return Ok(Outcome::Done);
        }
        let error = match fetch_some(hub, url, shared, i, start + done, end).await {
            Ok(outcome) => return Ok(outcome),
            Err((e, retry)) if retry => e,
            Err((e, _)) => return Err(e),
        };
        failures += 1;
        if failures >= ATTEMPTS {
            shared.save();
            return Err(format!("{error} ({ATTEMPTS} tries; run again to resume)"));
        }
        tracing::warn!(file = %shared.name, "bytes {start}-{end}: {error}; resuming (try {}/{ATTEMPTS})", failures + 1);
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
    }
}

/// One request for bytes `from..end`; an error says whether to retry.
async fn fetch_some(hub: &Hub, url: &str, shared: &Shared, i: usize, from: u64, end: u64) -> Result<Outcome, (String, bool)> {
    let resp = hub
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={from}-{}", end - 1))
        .send()
        .await
        .map_err(|e| (format!("cannot reach {url}: {e}"), true))?;
    let status = resp.status();
    let resp = remote::check(resp, hub.token.is_some()).await.map_err(|e| (e, status.is_server_error()))?;
    if status.as_u16() != 206 {
        return Ok(Outcome::NoRanges);
    }
    let (mut at, mut unsaved) = (from, 0u64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| (format!("the transfer broke at byte {at}: {e}"), true))?;
        let take = chunk.len().min((end - at) as usize);
        shared.file.write_all_at(&chunk[..take], at).map_err(|e| (e.to_string(), false))?;
        at += take as u64;
        unsaved += take as u64;
        {
            let mut ranges = shared.ranges.lock();
            ranges[i].done = at - ranges[i].start;
        }
        shared.report();
        if unsaved >= SAVE_EVERY || at == end {
            shared.save();
            unsaved = 0;
        }
        if at == end {
            return Ok(Outcome::Done);
        }
    }
    Err((format!("the transfer ended at byte {at} of {end}"), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_splits_into_ranges_that_cover_it_once() {
        let ranges = split(10, 4);
        assert_eq!(ranges.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), vec![(0, 3), (3, 6), (6, 9), (9, 10)]);
        assert_eq!(split(3, 4).len(), 3, "never an empty range");
        assert_eq!(split(100, 1), vec![Range { start: 0, end: 100, done: 0 }]);
    }
}
