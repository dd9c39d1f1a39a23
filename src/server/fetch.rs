//! The scheduler's downloads: a `[[models]] hf` model not in the cache is
//! fetched from the hub on its first request (config::hub, over src/hub),
//! then registered as it is on disk (its memory estimated from the file).

use std::sync::Arc;

use crate::gpu::PlacementOptions;
use crate::scheduler::{FetchFuture, Fetcher};
use crate::types::{ModelSpec, Progress};

pub struct HubFetcher {
    pub placement: PlacementOptions,
}

impl Fetcher for HubFetcher {
    fn fetch(&self, spec: Arc<ModelSpec>, progress: Progress) -> FetchFuture {
        let placement = self.placement.clone();
        Box::pin(async move {
            let source = spec.fetch.clone().ok_or_else(|| format!("`{}` is not a model of the hub", spec.id))?;
            let path = crate::config::hub::fetch_for_scheduler(&source.repo, source.file.as_deref(), progress).await?;
            let mut on_disk = (*spec).clone();
            on_disk.path = path;
            on_disk.fetch = None;
            // Reading the GGUF header blocks: not on the runtime.
            let mut registered = tokio::task::spawn_blocking(move || crate::catalogue::registrations(vec![on_disk], &placement))
                .await
                .map_err(|e| format!("estimating the downloaded model: {e}"))?;
            registered.pop().ok_or_else(|| "the downloaded model was not registered".to_string())
        })
    }
}
