//! Memory figures the scheduler budgets with: a model's footprint before it
//! is loaded, and the default budget on a machine without GPUs.

use crate::registry::ModelSpec;

const MIB: u64 = 1 << 20;

/// Footprint of a model before loading it: the GGUF's bytes (all split
/// parts) plus a margin for KV cache and compute buffers. The scheduler
/// replaces it by the measured figure after the first load.
pub fn estimate_bytes(spec: &ModelSpec) -> u64 {
    let file = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
    file + 64 * MIB
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
