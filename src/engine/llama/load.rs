//! Loading a model: llama.cpp model parameters, the GPU plan applied as
//! ggml devices, split mode and tensor split.

use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::engine::ModelInfo;

use super::*;

/// `reused`: weights kept asleep since this file's last eviction.
pub(super) fn load_model(
    options: &LoadOptions,
    progress: crate::types::Progress,
    reused: Option<Arc<weights::Weights>>,
) -> Result<(Arc<weights::Weights>, ModelInfo, LlamaContextParams), String> {
    let backend = backend()?;
    let mut params = LlamaModelParams::default()
        .with_use_mmap(!options.knobs.no_mmap)
        .with_use_mlock(options.knobs.mlock)
        .with_progress_callback(move |fraction| {
            progress(fraction);
            true
        });
    if let Some(fit_options) = &options.fit {
        if let Some(cuda) = &fit_options.devices {
            let devices = ggml_devices(cuda)?;
            params = params.with_devices(&devices).map_err(|e| format!("cannot select GPUs {devices:?}: {e}"))?;
        }
        // The fitter needs the context before the model loads: from the header.
        let mut cparams = context_for(&options.path, options.ctx_size, options.parallel, options.batch_size, options.threads, options.swa_full, &options.knobs)?;
        let fitted = fit(&mut params, &options.path, &mut cparams, fit_options.reserve_mib)?;
        tracing::info!(path = %options.path.display(), ?fitted, "placement chosen by llama.cpp's fitter");
    } else {
        if let Some(n) = options.n_gpu_layers {
            params = params.with_n_gpu_layers(n);
        }
        if let Some(gpu) = &options.gpu {
            params = apply_gpu_plan(params, gpu)?;
        }
    }
    // A sleeping model wakes only for a load placed as it was.
    let placed = format!("{:?}|{:?}", options.gpu, options.n_gpu_layers);
    let woken = reused.and_then(|kept| wake(kept, &placed, &options.path));
    let model = match woken {
        Some(model) => model,
        None => {
            let pool = sleep_pool(options);
            let mut params = std::pin::pin!(params);
            if let Ok(pool) = &pool {
                // SAFETY: the pool's buffer type lives as long as the
                // `Weights` below, which drop the model first.
                unsafe { params.as_mut().add_buft_override(sleep::WEIGHTS_PATTERN, pool.buft()) };
            }
            // The mappings this load adds are watched for a file truncated
            // under them (mapguard.rs); other models may map the same file.
            let before = mapguard::mappings_of(&options.path);
            let model = LlamaModel::load_from_file(backend, &options.path, &params).map_err(|e| why_not_loaded(&options.path, &e.to_string()))?;
            let added: Vec<(usize, usize)> = mapguard::mappings_of(&options.path).into_iter().filter(|r| !before.contains(r)).collect();
            let sleep = pool.and_then(|p| if p.buffers() > 0 { Ok(p) } else { Err("no weights went to the sleep pool".into()) });
            Arc::new(weights::Weights { model, guard: mapguard::MapGuard::watch(&added), llg: Default::default(), eog: Default::default(), sleep, placed })
        }
    };
    describe(model, options)
}

/// What a load of `model` (weights loaded, woken or shared) serves as under
/// `options`: its facts and its context's parameters.
pub(super) fn describe(
    model: Arc<weights::Weights>,
    options: &LoadOptions,
) -> Result<(Arc<weights::Weights>, ModelInfo, LlamaContextParams), String> {
    let n_ctx_train = model.n_ctx_train();
    let n_ctx_slot = crate::engine::slot_context(options.ctx_size, n_ctx_train);
    let parallel = options.parallel.clamp(1, 256);
    let ctx_params = context_params(n_ctx_slot, parallel, options.batch_size, options.threads, options.swa_full, &options.knobs)?;

    let vocab = model.vocab();
    let token_text = |t: LlamaToken| vocab.text(t).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let info = ModelInfo {
        n_ctx_slot,
        n_ctx_train,
        parallel,
        n_params: model.n_params(),
        size_bytes: model.size(),
        n_vocab: model.n_vocab().max(0) as u32,
        bos_token: token_text(vocab.bos()),
        eos_token: token_text(vocab.eos()),
        add_bos: vocab.should_add_bos(),
        architecture: model.meta_val_str("general.architecture").ok(),
        chat_template: model.meta_val_str("tokenizer.chat_template").ok(),
        n_embd: model.n_embd_out().max(0) as u32,
        n_ctx_embed: crate::engine::embed::context_tokens(n_ctx_slot, options.knobs.ubatch_size),
        fim: fim_tokens(&vocab),
        bos_id: u32::try_from(vocab.bos().0).ok(),
        // `--swa-full` keeps every position in the sliding layers too: no window to mind.
        n_swa: if options.swa_full { 0 } else { sliding_window(&model) as u32 },
        draft: None,
    };
    Ok((model, info, ctx_params))
}

/// How many positions the sliding-window layers attend to (Gemma 2/3,
/// gpt-oss...), as llama.cpp uses them (not the GGUF's key: llama.cpp turns
/// Phi-3's off); 0 when no layer has a window. Llama 4's chunked window is
/// treated as a sliding one of the same width, which asks for more than it
/// needs (never less).
fn sliding_window(model: &LlamaModel) -> usize {
    model.n_swa() as usize
}

/// Wakes `kept` for a load placed as `placed` (GPU weights: one copy back
/// from pinned memory); `None` when it cannot serve (it is then dropped,
/// which frees what it kept, and the caller loads the file again).
fn wake(kept: Arc<weights::Weights>, placed: &str, path: &std::path::Path) -> Option<Arc<weights::Weights>> {
    if kept.placed != placed {
        tracing::info!(path = %path.display(), "the sleeping weights were placed differently: loading the file again");
        return None;
    }
    if let Ok(pool) = &kept.sleep {
        let started = std::time::Instant::now();
        if let Err(e) = pool.wake() {
            tracing::warn!(path = %path.display(), "waking the GPU weights failed ({e}): loading the file again");
            return None;
        }
        let took = started.elapsed();
        let bytes = pool.device_bytes();
        tracing::info!(path = %path.display(), mib = bytes >> 20, ms = took.as_millis() as u64,
            gb_per_s = format!("{:.1}", bytes as f64 / took.as_secs_f64().max(1e-9) / 1e9), "woke the GPU weights");
    } else {
        tracing::debug!(path = %path.display(), "reusing the weights kept from the last unload");
    }
    Some(kept)
}

/// The pool a load's weights go to so that they can sleep: only a whole
/// model on one GPU, placed by the scheduler's plan; else why not (such a
/// model unloads for good when evicted).
fn sleep_pool(options: &LoadOptions) -> Result<sleep::Pool, String> {
    if !options.sleep_gpu {
        return Err("sleeping on a GPU is off (--sleep-mib 0)".into());
    }
    if options.fit.is_some() {
        return Err("llama.cpp's fitter places it (--use-fit-params)".into());
    }
    let Some(gpu) = &options.gpu else { return Err("no GPU plan".into()) };
    match gpu.devices.as_slice() {
        [] => Err("it runs on the CPU".into()),
        [cuda] if gpu.whole => {
            sleep::available()?;
            // Tied embeddings: llama.cpp's output head is a GPU copy of
            // `token_embd`, which the pool's pattern cannot take apart from
            // the input copy; it would stay on the GPU while "asleep".
            let header = crate::gguf::read_header(&options.path).map_err(|e| e.to_string())?;
            if !header.tensors.iter().any(|t| t.name == "output.weight") {
                return Err("tied embeddings: its output head (a GPU copy of token_embd) could not sleep".into());
            }
            let ggml = ggml_devices(&[*cuda])?;
            sleep::Pool::new(ggml[0], *cuda)
        }
        [_] => Err("partial offload: part of it stays on the CPU".into()),
        many => Err(format!("it is split across {} GPUs", many.len())),
    }
}

/// The vocabulary's fill-in-the-middle tokens (llama.cpp reports -1 for a
/// missing one).
fn fim_tokens(vocab: &llama_cpp_2::vocab::LlamaVocab<'_>) -> Option<crate::engine::FimTokens> {
    let id = |t: LlamaToken| u32::try_from(t.0).ok();
    Some(crate::engine::FimTokens { pre: id(vocab.fim_pre())?, suf: id(vocab.fim_suf())?, mid: id(vocab.fim_mid())? })
}

/// ggml's device indices for CUDA indices (`CUDA<i>` in ggml's device list).
pub(super) fn ggml_devices(cuda: &[u32]) -> Result<Vec<usize>, String> {
    let ggml = llama_cpp_2::list_llama_ggml_backend_devices();
    cuda.iter()
        .map(|cuda| {
            let name = format!("CUDA{cuda}");
            ggml.iter()
                .find(|d| d.name == name)
                .map(|d| d.index)
                .ok_or_else(|| format!("GPU {cuda} ({name}) is not a llama.cpp device; is this a CUDA build?"))
        })
        .collect()
}

/// Puts a placement plan into the model params: CUDA indices become ggml
/// device indices (`CUDA<i>` in ggml's device list), `main_gpu` is a position
/// in that list, and `tensor_split` follows the same order.
pub(super) fn apply_gpu_plan(params: LlamaModelParams, gpu: &crate::engine::GpuParams) -> Result<LlamaModelParams, String> {
    use llama_cpp_2::model::params::LlamaSplitMode;
    let devices = ggml_devices(&gpu.devices)?;
    let split_mode = match gpu.split_mode {
        crate::gpu::SplitMode::None => LlamaSplitMode::None,
        crate::gpu::SplitMode::Layer => LlamaSplitMode::Layer,
        crate::gpu::SplitMode::Row => LlamaSplitMode::Row,
    };
    if devices.is_empty() {
        // CPU only: llama.cpp clears its device list only for this combination.
        return Ok(params.with_n_gpu_layers(0).with_split_mode(LlamaSplitMode::None).with_main_gpu(-1));
    }
    params
        .with_n_gpu_layers(gpu.n_gpu_layers)
        .with_split_mode(split_mode)
        .with_main_gpu(0)
        .with_tensor_split(&gpu.tensor_split)
        .with_devices(&devices)
        .map_err(|e| format!("cannot select GPUs {devices:?}: {e}"))
}

/// A load failure in words: llama.cpp only says "null result"; the header
/// tells a file that is not GGUF (or is truncated) from one llama.cpp
/// rejects.
fn why_not_loaded(path: &std::path::Path, llama: &str) -> String {
    match crate::gguf::read_header(path) {
        Err(e) => {
            // Without the directory: clients need not learn the server's layout.
            let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            format!("the model file is not a readable GGUF file ({})", e.to_string().replace(&path.display().to_string(), &name))
        }
        Ok(header) => {
            let arch = header.model_params().architecture.unwrap_or_else(|| "unknown".into());
            format!("llama.cpp could not load this GGUF (architecture `{arch}`; unsupported, or tensors missing or truncated; {llama}; details in the server log)")
        }
    }
}
