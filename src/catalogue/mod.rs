//! The catalogue: turns the configured model list into what the scheduler
//! registers. Each model's GGUF header is read once here for its memory
//! estimate, its GPU footprint, its vocabulary size and whether it can
//! generate at all (an encoder serves embeddings only); its placement options
//! come from `config::placement`. The list itself is then the scheduler's
//! (published in its snapshot, which also resolves names).

pub mod estimate;

use crate::config::placement::model_options;
use crate::gpu::{GpuInfo, Placement, PlacementOptions};
use crate::scheduler::{GpuDemand, ModelLimits, Registration};
use crate::types::ModelSpec;

/// Each model with its scheduling limits: memory estimated from its GGUF,
/// and what GPU placement needs (its footprint, the server's placement
/// options with the model's overrides).
pub fn registrations(models: Vec<ModelSpec>, placement: &PlacementOptions) -> Vec<Registration> {
    models
        .into_iter()
        .map(|mut spec| {
            let memory = estimate::model_memory(&spec);
            // An encoder cannot generate: chat and completions get a 400
            // naming it, not a decode of nonsense.
            if memory.encoder_only && !spec.knobs.embeddings_only {
                tracing::info!(model = %spec.id, "the GGUF says the model attends both ways (an encoder): serving embeddings only");
                spec.knobs.embeddings_only = true;
            }
            let limits = ModelLimits {
                name: spec.id.clone(),
                bytes: memory.bytes,
                slots: spec.parallel,
                exclusive: spec.exclusive,
                ttl: spec.ttl,
                gpu: memory.footprint.map(|footprint| GpuDemand { footprint, options: model_options(placement, &spec) }),
            };
            Registration { spec, limits, n_vocab: memory.n_vocab }
        })
        .collect()
}

/// Where each model would go on `gpus` as they are, alone; `None` without
/// GPUs or without a footprint to plan with, `Err` for options naming GPUs
/// that are not there (serve refuses those at startup; `vram-llm models`
/// prints them).
pub fn placements_alone(gpus: &[GpuInfo], models: &[Registration]) -> Vec<Option<Result<Placement, String>>> {
    models
        .iter()
        .map(|r| {
            let demand = r.limits.gpu.as_ref().filter(|_| !gpus.is_empty())?;
            Some(crate::scheduler::pools::ideal(gpus, demand).map_err(|e| e.to_string()))
        })
        .collect()
}
