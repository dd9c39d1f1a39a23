//! A model's memory before it is loaded, from its GGUF header: host bytes,
//! per-layer footprint for GPU placement, and its vocabulary size.

use crate::types::ModelSpec;

const MIB: u64 = 1 << 20;

/// What the scheduler knows of a model before loading it.
pub struct ModelMemory {
    /// Weights + KV cache for its slots + a compute-buffer margin (see
    /// `gguf::estimate`); with an unreadable header, the file size plus 25%.
    /// The scheduler replaces it by the measured figure after the first load.
    pub bytes: u64,
    /// Per-layer sizes for GPU placement; `None` with an unreadable header.
    pub footprint: Option<crate::gpu::ModelFootprint>,
    /// Vocabulary size, so requests are validated before the model loads.
    pub n_vocab: Option<u32>,
    /// The GGUF says it cannot generate (a BERT-style encoder).
    pub encoder_only: bool,
}

/// Reads `spec`'s GGUF header once for both figures of [`ModelMemory`].
pub fn model_memory(spec: &ModelSpec) -> ModelMemory {
    if spec.fetch.is_some() {
        // Not downloaded: estimated once it is (the scheduler's fetch).
        return ModelMemory { bytes: 0, footprint: None, n_vocab: None, encoder_only: false };
    }
    let draft = draft_bytes(spec);
    match header_estimate(&spec.path, spec.ctx_size, spec.parallel, &spec.knobs.shape(spec.swa_full)) {
        Ok((header, estimate)) => ModelMemory {
            bytes: estimate.total_bytes + draft,
            footprint: Some(footprint_of(&header, &estimate)).map(|mut f| {
                // The draft model goes whole on the model's main GPU
                // (drafter.rs): counted as the model's own buffers there.
                f.compute_bytes += draft;
                f
            }),
            n_vocab: header.n_vocab().and_then(|n| u32::try_from(n).ok()),
            encoder_only: !header.generates(),
        },
        Err(e) => {
            tracing::warn!(model = %spec.id, "cannot read the GGUF header (memory is guessed from the file size, no GPU plan): {e}");
            ModelMemory { bytes: guessed_bytes(&spec.path) + draft, footprint: None, n_vocab: None, encoder_only: false }
        }
    }
}

/// A draft model's weights, KV (every position kept: drafts are cut back
/// anywhere) and compute buffers, loaded with `spec`'s slots and context.
fn draft_bytes(spec: &ModelSpec) -> u64 {
    let Some(draft) = spec.draft_in_use() else { return 0 };
    match header_estimate(&draft.path, spec.ctx_size, spec.parallel, &spec.knobs.shape(true)) {
        Ok((_, estimate)) => estimate.total_bytes,
        Err(_) => guessed_bytes(&draft.path),
    }
}

/// A model whose header cannot be read: its file size plus 25 % and 64 MiB.
fn guessed_bytes(path: &std::path::Path) -> u64 {
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    file + file / 4 + 64 * MIB
}

/// What GPU placement needs to know about a model, from its GGUF header.
pub fn footprint(path: &std::path::Path, ctx_size: Option<u32>, parallel: u32, swa_full: bool) -> Result<crate::gpu::ModelFootprint, String> {
    let shape = crate::gguf::Shape { swa_full, ..Default::default() };
    let (header, estimate) = header_estimate(path, ctx_size, parallel, &shape).map_err(|e| e.to_string())?;
    Ok(footprint_of(&header, &estimate))
}

fn footprint_of(header: &crate::gguf::GgufHeader, estimate: &crate::gguf::MemoryEstimate) -> crate::gpu::ModelFootprint {
    crate::gpu::ModelFootprint {
        layer_bytes: header.layer_bytes(),
        output_bytes: header.output_layer_bytes(),
        input_bytes: header.input_layer_bytes(),
        kv_bytes_per_layer: estimate.kv_bytes_per_layer.clone(),
        compute_bytes: estimate.compute_bytes,
    }
}

/// Reads a GGUF header and estimates the model with the per-slot context the
/// engine will use and the context `shape` (cache types, window, flash
/// attention, micro-batch).
fn header_estimate(
    path: &std::path::Path,
    ctx_size: Option<u32>,
    parallel: u32,
    shape: &crate::gguf::Shape,
) -> Result<(crate::gguf::GgufHeader, crate::gguf::MemoryEstimate), crate::gguf::GgufError> {
    let header = crate::gguf::read_header(path)?;
    let ctx = crate::engine::header_slot_context(&header, ctx_size);
    let estimate = crate::gguf::estimate(&header, ctx, parallel, shape);
    Ok((header, estimate))
}
