//! llama.cpp's own fitter (`--use-fit-params`, `vram-llm plan
//! --use-fit-params`) and the context parameters it and the loader share.

use std::num::NonZeroU32;
use std::path::Path;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::model::params::LlamaModelParams;

use super::*;
use crate::types::{EngineKnobs, FlashAttn};

#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// MiB kept free on every device.
    pub reserve_mib: u64,
    /// CUDA indices it may use (`--devices`); `None`: every device.
    pub devices: Option<Vec<u32>>,
}

/// What llama.cpp's fitter (`common_fit_params`) chose for a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fitted {
    /// llama.cpp's count (`-1`: its default, everything it can).
    pub n_gpu_layers: i32,
    /// One share per llama.cpp device (empty: no split chosen).
    pub tensor_split: Vec<f32>,
    /// Tensors the fitter kept in host memory (buffer-type overrides).
    pub cpu_overrides: Vec<String>,
    /// Context tokens (all slots together); never reduced by the fitter here.
    pub n_ctx: u32,
}

/// Asks llama.cpp's fitter where `path` should go with the context the
/// engine would give it, without loading it (`vram-llm plan --use-fit-params`).
pub fn fit_only(path: &Path, ctx_size: Option<u32>, parallel: u32, batch_size: u32, margin_mib: u64) -> Result<Fitted, String> {
    backend()?;
    let mut cparams = context_for(path, ctx_size, parallel, batch_size, None, false, &EngineKnobs::default())?;
    fit(&mut LlamaModelParams::default(), path, &mut cparams, margin_mib)
}

/// The context parameters for `parallel` slots, with the slot context taken
/// from the GGUF header (before the model is loaded, as the fitter needs them).
pub(super) fn context_for(
    path: &Path,
    ctx_size: Option<u32>,
    parallel: u32,
    batch_size: u32,
    threads: Option<u32>,
    swa_full: bool,
    knobs: &EngineKnobs,
) -> Result<LlamaContextParams, String> {
    let header = crate::gguf::read_header(path).map_err(|e| e.to_string())?;
    context_params(crate::engine::header_slot_context(&header, ctx_size), parallel, batch_size, threads, swa_full, knobs)
}

pub(super) fn context_params(
    n_ctx_slot: u32,
    parallel: u32,
    batch_size: u32,
    threads: Option<u32>,
    swa_full: bool,
    knobs: &EngineKnobs,
) -> Result<LlamaContextParams, String> {
    let parallel = parallel.clamp(1, 256);
    let n_ctx_total = n_ctx_slot
        .checked_mul(parallel)
        .ok_or_else(|| "ctx_size * parallel overflows".to_string())?;
    let n_batch = batch_size.max(parallel).max(32);
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(4))
        .max(1) as i32;
    Ok(LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_total))
        .with_n_seq_max(parallel)
        .with_n_batch(n_batch)
        .with_n_ubatch(knobs.ubatch_size.unwrap_or(512).min(n_batch))
        .with_n_threads(threads)
        .with_n_threads_batch(knobs.threads_batch.map_or(threads, |t| t.max(1) as i32))
        .with_flash_attention_policy(match knobs.flash_attn {
            FlashAttn::Auto => -1,
            FlashAttn::Off => 0,
            FlashAttn::On => 1,
        })
        .with_type_k(cache_type(knobs.cache_type_k))
        .with_type_v(cache_type(knobs.cache_type_v))
        // One KV stream per slot: a request can never eat another's context.
        .with_kv_unified(false)
        // Sliding-window layers keep only their window (llama-server's
        // default): a smaller KV cache, created faster. A sequence can then
        // be continued but not rolled back (see the worker's admit).
        .with_swa_full(swa_full))
}

/// Runs llama.cpp's fitter on `params` (which must still hold the default
/// `n_gpu_layers` and no overrides). The context is kept whole (`n_ctx_min`
/// = the requested context). llama.cpp's fitter is not thread-safe; the
/// scheduler runs one load at a time.
pub(super) fn fit(params: &mut LlamaModelParams, path: &Path, cparams: &mut LlamaContextParams, margin_mib: u64) -> Result<Fitted, String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "model path contains a NUL byte".to_string())?;
    let margin = usize::try_from(margin_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let mut margins = vec![margin; llama_cpp_2::max_devices().max(16)];
    let n_ctx = cparams.n_ctx().map_or(0, NonZeroU32::get);
    const INFO: u32 = 2; // GGML_LOG_LEVEL_INFO
    std::pin::Pin::new(&mut *params)
        .fit_params(&c_path, cparams, &mut margins, n_ctx, INFO)
        .map_err(|e| format!("llama.cpp's fitter (--use-fit-params): {e}"))?;
    let used = |shares: &[f32]| if shares.iter().all(|s| *s == 0.0) { Vec::new() } else { shares.to_vec() };
    Ok(Fitted {
        n_gpu_layers: params.n_gpu_layers(),
        tensor_split: used(params.tensor_split()),
        cpu_overrides: params.tensor_buft_override_patterns(),
        n_ctx: cparams.n_ctx().map_or(0, NonZeroU32::get),
    })
}

fn cache_type(t: crate::gguf::KvCacheType) -> llama_cpp_2::context::params::KvCacheType {
    use crate::gguf::KvCacheType as Ours;
    use llama_cpp_2::context::params::KvCacheType as Theirs;
    match t {
        Ours::F32 => Theirs::F32,
        Ours::F16 => Theirs::F16,
        Ours::BF16 => Theirs::BF16,
        Ours::Q8_0 => Theirs::Q8_0,
        Ours::Q5_1 => Theirs::Q5_1,
        Ours::Q5_0 => Theirs::Q5_0,
        Ours::Q4_1 => Theirs::Q4_1,
        Ours::Q4_0 => Theirs::Q4_0,
        Ours::IQ4_NL => Theirs::IQ4_NL,
    }
}
