//! Memory figures the scheduler budgets with: a model's footprint before it
//! is loaded, and the default budget on a machine without GPUs.

use crate::registry::ModelSpec;

const MIB: u64 = 1 << 20;

/// What the scheduler knows of a model before loading it.
pub struct ModelMemory {
    /// Weights + KV cache for its slots + a compute-buffer margin (see
    /// `gguf::estimate`); with an unreadable header, the file size plus 25%.
    /// The scheduler replaces it by the measured figure after the first load.
    pub bytes: u64,
    /// Per-layer sizes for GPU placement; `None` with an unreadable header.
    pub footprint: Option<crate::gpu::ModelFootprint>,
}

/// Reads `spec`'s GGUF header once for both figures of [`ModelMemory`].
pub fn model_memory(spec: &ModelSpec) -> ModelMemory {
    match header_estimate(&spec.path, spec.ctx_size, spec.parallel) {
        Ok((header, estimate)) => ModelMemory { bytes: estimate.total_bytes, footprint: Some(footprint_of(&header, &estimate)) },
        Err(e) => {
            tracing::warn!(model = %spec.id, "cannot read the GGUF header (memory is guessed from the file size, no GPU plan): {e}");
            let file = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
            ModelMemory { bytes: file + file / 4 + 64 * MIB, footprint: None }
        }
    }
}

/// Default budget on a CPU-only machine: 75% of the memory available now
/// (`MemAvailable`), so the OS and page cache keep the rest.
pub fn default_cpu_budget_bytes() -> u64 {
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    match available_kib {
        Some(kib) => kib * 1024 / 4 * 3,
        None => 8 * 1024 * MIB,
    }
}

/// What GPU placement needs to know about a model, from its GGUF header.
pub fn footprint(path: &std::path::Path, ctx_size: Option<u32>, parallel: u32) -> Result<crate::gpu::ModelFootprint, String> {
    let (header, estimate) = header_estimate(path, ctx_size, parallel).map_err(|e| e.to_string())?;
    Ok(footprint_of(&header, &estimate))
}

fn footprint_of(header: &crate::gguf::GgufHeader, estimate: &crate::gguf::MemoryEstimate) -> crate::gpu::ModelFootprint {
    crate::gpu::ModelFootprint {
        layer_bytes: header.layer_bytes(),
        non_layer_bytes: header.non_layer_bytes(),
        kv_bytes_per_layer: estimate.kv_bytes_per_layer.clone(),
        compute_bytes: estimate.compute_bytes,
    }
}

/// Reads a GGUF header and estimates the model with the per-slot context the
/// engine will use and an F16 KV cache.
fn header_estimate(
    path: &std::path::Path,
    ctx_size: Option<u32>,
    parallel: u32,
) -> Result<(crate::gguf::GgufHeader, crate::gguf::MemoryEstimate), crate::gguf::GgufError> {
    let header = crate::gguf::read_header(path)?;
    let ctx = crate::engine::header_slot_context(&header, ctx_size);
    let estimate = crate::gguf::estimate(&header, ctx, parallel, crate::gguf::KvCacheType::F16);
    Ok((header, estimate))
}
