//! `LlamaFactory`: loads models with llama.cpp where the scheduler placed
//! them, turning a `gpu::Placement` into the engine's `GpuParams` (or handing
//! the choice to llama.cpp's fitter with `--use-fit-params`).

use std::sync::Arc;

use super::llama::{FitOptions, LlamaEngine, LoadOptions};
use super::{Engine, EngineError, EngineFactory, GpuParams};
use crate::gpu::Placement;
use crate::types::{ModelSpec, Progress};

pub struct LlamaFactory {
    pub threads: Option<u32>,
    pub batch_size: u32,
    /// For placements left to llama.cpp's fitter (`--use-fit-params`): the
    /// MiB kept free per device and the GPUs it may use (`None`: all).
    pub fit_reserve_mib: u64,
    pub fit_devices: Option<Vec<u32>>,
    /// GPUs are known (NVML or a GPU list): a model the scheduler could not
    /// place (no GGUF footprint) then stays on the CPU rather than landing on
    /// a GPU outside the budget. Without an inventory llama.cpp's defaults
    /// apply, as they would in any llama.cpp program.
    pub gpus_known: bool,
    /// The host KV cache shared by every model (`None`: off).
    pub kv_store: Option<super::SharedKvStore>,
    /// The weights in use, by file: a draft model whose file is in use
    /// shares them (`None`: every draft loads its own).
    pub live_weights: Option<Arc<super::llama::weights::LiveWeights<super::llama::weights::Weights>>>,
    /// Where sleeping models' weights are kept (`None`: nothing sleeps).
    pub kept_weights: Option<Arc<super::llama::weights::KeptWeights<super::llama::weights::Weights>>>,
    /// Whole-GPU loads put their weights in a pool that can sleep
    /// (`--sleep-mib` above 0).
    pub sleep_gpu: bool,
}

impl EngineFactory for LlamaFactory {
    fn load(&self, spec: &ModelSpec, placement: Option<&Placement>, progress: Progress) -> Result<Arc<dyn Engine>, EngineError> {
        let fit = placement.is_some_and(|p| p.use_fit_params);
        let gpu = placement.filter(|_| !fit).map(|p| GpuParams {
            devices: p.devices.clone(),
            split_mode: p.split_mode,
            n_gpu_layers: p.n_gpu_layers,
            tensor_split: p.tensor_split.clone(),
            whole: p.kind == crate::gpu::PlacementKind::SingleGpu,
        });
        let options = LoadOptions {
            gpu,
            path: spec.path.clone(),
            ctx_size: spec.ctx_size,
            parallel: spec.parallel,
            threads: self.threads,
            n_gpu_layers: match (placement, spec.n_gpu_layers) {
                (Some(_), _) => None,
                (None, Some(n)) => Some(n),
                (None, None) => self.gpus_known.then_some(0),
            },
            fit: fit.then(|| FitOptions { reserve_mib: self.fit_reserve_mib, devices: self.fit_devices.clone() }),
            batch_size: self.batch_size,
            kv_store: self.kv_store.clone(),
            model_id: spec.id.clone(),
            kept_weights: self.kept_weights.clone(),
            sleep_gpu: self.sleep_gpu,
            swa_full: spec.swa_full,
            knobs: spec.knobs,
            draft: spec.draft_in_use().map(|d| (d.files(), d.optional)),
            live_weights: self.live_weights.clone(),
        };
        Ok(Arc::new(LlamaEngine::load(options, progress)?))
    }

    fn release_sleeper(&self, spec: &ModelSpec) {
        if let Some(kept) = &self.kept_weights {
            kept.release_model(&spec.id);
        }
    }
}
