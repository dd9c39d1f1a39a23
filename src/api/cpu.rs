//! CPU-heavy request work (template rendering, tokenizing, detokenizing) runs
//! here, off the async runtime: on tokio's blocking pool, at most one job per
//! core at a time. The runtime's threads then only do I/O, so `/health` and
//! streams stay responsive while large prompts are being tokenized.

use std::sync::{Arc, LazyLock};

use tokio::sync::Semaphore;

use super::error::ApiError;

static JOBS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))));

/// Runs `work` on the blocking pool once a core is free for it. The slot is
/// held until `work` returns, even if the request that asked for it is gone.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let permit = JOBS.clone().acquire_owned().await.map_err(|_| ApiError::Internal("the CPU job pool is closed".into()))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a CPU job failed: {e}")))
}
