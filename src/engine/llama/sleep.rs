//! GPU weights that can sleep (issue 23): a model's weights on one GPU live in
//! a buffer type of the C shim `libvram-llm-sleep.so` (src/shim/vram_sleep.c).
//! Its buffers are CUDA virtual-memory ranges: sleeping copies the weights
//! once to pinned host memory and releases the GPU's physical memory, waking
//! maps new physical memory at the same addresses and copies them back in one
//! pinned transfer. The `llama_model` and its tensor pointers stay valid
//! throughout, so a woken model needs only a new context.
//!
//! The shim is loaded at run time (it takes the CUDA driver at run time too),
//! so a CPU build and a GPU build without it start as before: the load then
//! cannot sleep, and says why (`Engine::sleep_cost`). Where it is looked for:
//! `VRAM_LLM_SLEEP_LIB`, then `libvram-llm-sleep.so` beside the executable.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// The shim's file name (beside the executable).
pub const SHIM_FILE: &str = "libvram-llm-sleep.so";
/// The shim's ABI this binary speaks (`VS_ABI_VERSION` in vram_sleep.h).
const ABI_VERSION: c_int = 1;

type PoolPtr = *mut c_void;

/// The shim's entry points.
struct Shim {
    _lib: libloading::Library,
    path: PathBuf,
    last_error: unsafe extern "C" fn() -> *const c_char,
    pool_new: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> PoolPtr,
    pool_buft: unsafe extern "C" fn(PoolPtr) -> *mut c_void,
    pool_sleep: unsafe extern "C" fn(PoolPtr) -> c_int,
    pool_wake: unsafe extern "C" fn(PoolPtr) -> c_int,
    pool_device_bytes: unsafe extern "C" fn(PoolPtr) -> usize,
    pool_host_bytes: unsafe extern "C" fn(PoolPtr) -> usize,
    pool_buffers: unsafe extern "C" fn(PoolPtr) -> usize,
    pool_free: unsafe extern "C" fn(PoolPtr),
}

impl Shim {
    fn error(&self) -> String {
        // SAFETY: the shim returns a NUL-terminated thread-local string.
        unsafe { CStr::from_ptr((self.last_error)()) }.to_string_lossy().into_owned()
    }
}

fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("VRAM_LLM_SLEEP_LIB") {
        return vec![PathBuf::from(p)];
    }
    std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(SHIM_FILE))).into_iter().collect()
}

fn open(candidates: Vec<PathBuf>) -> Result<Shim, String> {
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no {SHIM_FILE} (set VRAM_LLM_SLEEP_LIB or put it beside the binary; scripts/gpu/build_shim.sh builds it)"))?;
    // SAFETY: loading our own shim, whose initialisers only set statics.
    let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the types match vram_sleep.h (VS_ABI_VERSION checked below).
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| format!("{}: {e}", path.display()))?
        };
    }
    let abi: unsafe extern "C" fn() -> c_int = sym!("vs_abi_version");
    let got = unsafe { abi() };
    if got != ABI_VERSION {
        return Err(format!("{} speaks ABI {got}, this binary {ABI_VERSION}: rebuild it from this source", path.display()));
    }
    let init: unsafe extern "C" fn() -> c_int = sym!("vs_init");
    let shim = Shim {
        last_error: sym!("vs_last_error"),
        pool_new: sym!("vs_pool_new"),
        pool_buft: sym!("vs_pool_buft"),
        pool_sleep: sym!("vs_pool_sleep"),
        pool_wake: sym!("vs_pool_wake"),
        pool_device_bytes: sym!("vs_pool_device_bytes"),
        pool_host_bytes: sym!("vs_pool_host_bytes"),
        pool_buffers: sym!("vs_pool_buffers"),
        pool_free: sym!("vs_pool_free"),
        path: path.clone(),
        _lib: lib,
    };
    if unsafe { init() } != 0 {
        return Err(format!("{}: {}", path.display(), shim.error()));
    }
    Ok(shim)
}

fn shim() -> Result<&'static Shim, String> {
    static SHIM: OnceLock<Result<Shim, String>> = OnceLock::new();
    SHIM.get_or_init(|| {
        let shim = open(candidates());
        match &shim {
            Ok(s) => tracing::info!(shim = %s.path.display(), "GPU weights can sleep in pinned host memory"),
            Err(e) => tracing::info!("GPU weights cannot sleep: {e}"),
        }
        shim
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether GPU weights can sleep in this process, and why not.
pub fn available() -> Result<(), String> {
    shim().map(|_| ())
}

/// For `--version` and `/props`: the shim in use (its driver loaded), or
/// why GPU weights cannot sleep.
pub fn status() -> Result<String, String> {
    shim().map(|s| s.path.display().to_string())
}

/// The weights buffers of one model on one GPU. Dropped after the model
/// (`Weights` field order), since llama.cpp frees its buffers first.
pub struct Pool {
    shim: &'static Shim,
    ptr: PoolPtr,
    /// Serialises sleep and wake.
    lock: Mutex<()>,
}

// SAFETY: the shim's pool functions lock internally; the pointer is only
// handed back to them.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Pool {
    /// A pool for ggml device `ggml_index` (a CUDA device), whose CUDA
    /// ordinal is `cuda`.
    pub fn new(ggml_index: usize, cuda: u32) -> Result<Self, String> {
        let shim = shim()?;
        let buft = llama_cpp_2::model::params::LlamaModelParams::ggml_device_buffer_type(ggml_index);
        if buft.is_null() {
            return Err(format!("no ggml device {ggml_index}"));
        }
        let init = llama_cpp_2::model::params::LlamaModelParams::ggml_buffer_init_fn();
        // SAFETY: `buft` is ggml's CUDA buffer type of that device, `init` ggml's own function.
        let ptr = unsafe { (shim.pool_new)(buft, cuda as c_int, init) };
        if ptr.is_null() {
            return Err(shim.error());
        }
        Ok(Self { shim, ptr, lock: Mutex::new(()) })
    }

    /// The buffer type for llama.cpp's `tensor_buft_overrides`.
    pub fn buft(&self) -> *mut c_void {
        unsafe { (self.shim.pool_buft)(self.ptr) }
    }

    /// Copies the weights to pinned memory (the first time) and releases the
    /// GPU memory. No context may use the weights.
    pub fn sleep(&self) -> Result<(), String> {
        let _g = self.lock.lock();
        if unsafe { (self.shim.pool_sleep)(self.ptr) } != 0 {
            return Err(self.shim.error());
        }
        Ok(())
    }

    /// Maps GPU memory at the same addresses and copies the weights back.
    pub fn wake(&self) -> Result<(), String> {
        let _g = self.lock.lock();
        if unsafe { (self.shim.pool_wake)(self.ptr) } != 0 {
            return Err(self.shim.error());
        }
        Ok(())
    }

    /// Bytes of GPU memory the weights take when awake.
    pub fn device_bytes(&self) -> u64 {
        unsafe { (self.shim.pool_device_bytes)(self.ptr) as u64 }
    }

    /// Pinned host bytes held (0 before the first sleep).
    pub fn host_bytes(&self) -> u64 {
        unsafe { (self.shim.pool_host_bytes)(self.ptr) as u64 }
    }

    /// Buffers llama.cpp allocated from this pool (0: the override matched nothing).
    pub fn buffers(&self) -> usize {
        unsafe { (self.shim.pool_buffers)(self.ptr) }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        unsafe { (self.shim.pool_free)(self.ptr) }
    }
}

/// The tensors that go to the pool on a whole-model, one-GPU load: every
/// repeating layer and the output head. `token_embd` stays where llama.cpp
/// puts it (host memory), as do tensors no pattern names (they stay awake
/// in CUDA's own buffers: small ones such as `rope_freqs`). A model with
/// tied embeddings has no `output.weight`: llama.cpp puts a GPU copy of
/// `token_embd` there under that name, so such a model does not sleep on a
/// GPU (load.rs says so).
pub const WEIGHTS_PATTERN: &CStr = c"^(blk\\.|output)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_shim_a_load_cannot_sleep_and_says_why() {
        let err = open(vec![PathBuf::from("/nonexistent/libvram-llm-sleep.so")]).err().expect("no shim there");
        assert!(err.contains(SHIM_FILE) && err.contains("VRAM_LLM_SLEEP_LIB"), "{err}");
        let dir = std::env::temp_dir().join(format!("vram-llm-sleep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bogus = dir.join(SHIM_FILE);
        std::fs::write(&bogus, b"not a shared library").unwrap();
        let err = open(vec![bogus]).err().expect("not a library");
        assert!(err.contains("cannot load"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pattern_takes_layers_and_the_head_not_the_embeddings() {
        let re = regex::Regex::new(WEIGHTS_PATTERN.to_str().unwrap()).unwrap();
        for name in ["blk.0.attn_q.weight", "blk.31.ffn_down.weight", "output.weight", "output_norm.weight"] {
            assert!(re.is_match(name), "{name}");
        }
        for name in ["token_embd.weight", "rope_freqs.weight", "per_layer_token_embd.weight"] {
            assert!(!re.is_match(name), "{name}");
        }
    }
}
