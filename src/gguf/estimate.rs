//! The memory estimate: weights, KV cache and a compute-buffer margin.

use serde::Serialize;

use super::*;

// ---------------------------------------------------------------------------
// Memory estimate
// ---------------------------------------------------------------------------

/// KV cache element type (llama.cpp `--cache-type-k/-v`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(non_camel_case_types)]
pub enum KvCacheType {
    F32,
    #[default]
    F16,
    BF16,
    Q8_0,
    Q5_1,
    Q5_0,
    Q4_1,
    Q4_0,
    IQ4_NL,
}

impl KvCacheType {
    /// ggml type id.
    pub fn ggml_type(self) -> u32 {
        match self {
            KvCacheType::F32 => 0,
            KvCacheType::F16 => 1,
            KvCacheType::BF16 => 30,
            KvCacheType::Q8_0 => 8,
            KvCacheType::Q5_1 => 7,
            KvCacheType::Q5_0 => 6,
            KvCacheType::Q4_1 => 3,
            KvCacheType::Q4_0 => 2,
            KvCacheType::IQ4_NL => 20,
        }
    }
    /// Average bytes per element (F16: 2.0, Q8_0: 34/32, Q4_0: 18/32).
    pub fn bytes_per_element(self) -> f64 {
        let (b, s) = ggml_type_block(self.ggml_type()).expect("cache types are known");
        s as f64 / b as f64
    }
    /// Bytes of a row of `n` elements (rounded up to whole blocks).
    pub fn row_bytes(self, n: u64) -> u64 {
        let (b, s) = ggml_type_block(self.ggml_type()).expect("cache types are known");
        n.div_ceil(b).saturating_mul(s)
    }
    /// llama.cpp's name (`f16`, `q8_0`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::BF16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q5_1 => "q5_1",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::IQ4_NL => "iq4_nl",
        }
    }
    /// Parses llama.cpp names: "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl".
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => KvCacheType::F32,
            "f16" => KvCacheType::F16,
            "bf16" => KvCacheType::BF16,
            "q8_0" => KvCacheType::Q8_0,
            "q5_1" => KvCacheType::Q5_1,
            "q5_0" => KvCacheType::Q5_0,
            "q4_1" => KvCacheType::Q4_1,
            "q4_0" => KvCacheType::Q4_0,
            "iq4_nl" => KvCacheType::IQ4_NL,
            _ => return None,
        })
    }
}

/// How the context will be created, as far as memory goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub type_k: KvCacheType,
    pub type_v: KvCacheType,
    /// Sliding-window layers at full size (llama.cpp's default) or the window.
    pub swa_full: bool,
    /// Flash attention (llama.cpp's `auto` resolves to on for CPU and CUDA).
    pub flash_attn: bool,
    pub n_ubatch: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self { type_k: KvCacheType::F16, type_v: KvCacheType::F16, swa_full: true, flash_attn: true, n_ubatch: DEFAULT_N_UBATCH }
    }
}

impl Shape {
    /// llama.cpp's defaults with both caches of type `kv`.
    pub fn kv(kv: KvCacheType) -> Self {
        Self { type_k: kv, type_v: kv, ..Self::default() }
    }
}

/// Result of [`estimate`]. All sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Sum of all tensors (= llama.cpp model size).
    pub weights_bytes: u64,
    /// KV cache, all layers (SWA layers at full size only with `swa_full`).
    pub kv_bytes: u64,
    /// Recurrent state (Mamba/RWKV), 0 for attention-only models.
    pub recurrent_bytes: u64,
    /// Compute buffer margin, see [`compute_buffer_estimate`].
    pub compute_bytes: u64,
    /// weights + kv + recurrent + compute.
    pub total_bytes: u64,
    /// KV bytes of each layer (0 for layers without a KV cache).
    pub kv_bytes_per_layer: Vec<u64>,
    /// KV cells in total over all sequences (after llama.cpp's padding).
    pub kv_cells: u64,
    /// KV cells per sequence (slot).
    pub n_ctx_seq: u64,
}

/// KV cells llama.cpp allocates for `ctx_per_slot × parallel` with one KV
/// stream per sequence (`kv_unified = false`, the server's setting):
/// `n_ctx = pad256(ctx × parallel)`, `n_ctx_seq = pad256(n_ctx / parallel)`,
/// cells = `n_ctx_seq × parallel`. Returns `(total cells, cells per sequence)`.
/// (With `kv_unified = true` llama.cpp allocates `pad256(ctx × parallel)`,
/// which is never more.)
pub fn kv_cells(ctx_per_slot: u64, parallel: u64) -> (u64, u64) {
    let parallel = parallel.max(1);
    let n_ctx = ctx_per_slot.saturating_mul(parallel).div_ceil(KV_CELL_PAD).saturating_mul(KV_CELL_PAD);
    let n_ctx_seq = (n_ctx / parallel).div_ceil(KV_CELL_PAD).saturating_mul(KV_CELL_PAD).max(KV_CELL_PAD);
    (n_ctx_seq.saturating_mul(parallel), n_ctx_seq)
}

/// KV cells per sequence of a sliding-window layer when the SWA cache is not
/// full size (llama.cpp's `llama_kv_cache_iswa`, one stream per sequence):
/// `pad256(min(n_ctx_seq, window + n_ubatch))`. The server's n_ubatch is at
/// most 512, so estimating with 512 never undercounts.
pub fn swa_cells(n_ctx_seq: u64, window: u64, n_ubatch: u64) -> u64 {
    n_ctx_seq.min(window.saturating_add(n_ubatch)).div_ceil(KV_CELL_PAD).saturating_mul(KV_CELL_PAD)
}

/// The default micro-batch llama.cpp reserves the compute graph for (`n_ubatch`).
pub const DEFAULT_N_UBATCH: u64 = 512;

/// Compute-buffer margin — an **estimate**, not a measurement.
///
/// llama.cpp sizes its compute buffer by reserving the graph for one
/// micro-batch of `n_ubatch` tokens; the graph allocator reuses memory, so
/// the peak is roughly the larger of two phases plus the graph inputs:
///
/// ```text
/// logits    = n_ubatch × n_vocab × 4                       (F32 output of the last matmul)
/// attention = n_ubatch × n_ctx_seq × n_head × 4            (KQ scores; only without flash attention)
///           + n_ubatch × (4·n_embd + 2·n_ff + 3·n_head·head_dim) × 4   (activations)
/// masks     = n_ubatch × n_ctx_seq × 4 × (2 if the model mixes SWA and global layers else 1)
/// compute   = 64 MiB + max(logits, attention) + masks
/// ```
///
/// Calibration against the vendored llama.cpp (CPU backend) with
/// gemma-3-270m (262k vocabulary, so the logits dominate), n_ubatch 512:
///
/// | n_ctx_seq × seqs | flash attn | llama.cpp | this estimate |
/// |---|---|---|---|
/// | 4096 × 4  | off | 536.3 MiB | 592 MiB |
/// | 4096 × 4  | on  | 526.3 MiB | 592 MiB |
/// | 32768 × 1 | off | 648.3 MiB | 704 MiB |
/// | 32768 × 1 | on  | 582.3 MiB | 704 MiB |
/// | 1024 × 1  | on  | 521.5 MiB | 580 MiB |
/// | 256 × 1   | on  | 259.4 MiB | 320 MiB (n_ubatch capped at the context, see `estimate`) |
///
/// i.e. about 40–120 MiB high, by design. Not included: the host-side output
/// buffer (`n_seq × n_vocab × 4`, a few MiB) and per-process backend overhead
/// (e.g. the CUDA context, typically several hundred MiB per GPU). With
/// several GPUs each one gets its own compute buffer. The scheduler should
/// replace the estimate by the measured value after the first load.
pub fn compute_buffer_estimate(p: &ModelParams, n_ubatch: u64, n_ctx_seq: u64, flash_attn: bool) -> u64 {
    const FIXED: u64 = 64 << 20;
    const F32: u64 = 4;
    let logits = sat_mul(&[n_ubatch, p.n_vocab.unwrap_or(0), F32]);
    let scores = if flash_attn { 0 } else { sat_mul(&[n_ubatch, n_ctx_seq, p.n_head, F32]) };
    let head_dim = p.head_dim_k.max(p.head_dim_v);
    let per_token = sat_add(&[
        sat_mul(&[4, p.n_embd]),
        sat_mul(&[2, p.n_ff.unwrap_or(sat_mul(&[4, p.n_embd]))]),
        sat_mul(&[3, p.n_head, head_dim]),
    ]);
    let act = sat_mul(&[n_ubatch, per_token, F32]);
    let mixed_swa = p.swa_layers.as_ref().is_some_and(|v| v.contains(&true) && v.contains(&false));
    let masks = sat_mul(&[n_ubatch, n_ctx_seq, F32, if mixed_swa { 2 } else { 1 }]);
    sat_add(&[FIXED, logits.max(sat_add(&[scores, act])), masks])
}

/// Estimates the memory to serve `header`'s model with `parallel` slots of
/// `ctx_per_slot` tokens each (`ctx_per_slot == 0` → training context, as
/// llama.cpp does; the server additionally clamps to the training context —
/// pass the clamped value). The compute margin assumes n_ubatch 512 and
/// flash attention on (llama.cpp's `auto` default resolves to on for the
/// CPU, CUDA and Metal backends); call [`compute_buffer_estimate`] directly
/// for other settings. KV for SWA layers is full size (llama.cpp
/// default `swa_full = true`) when `swa_full`; otherwise a sliding-window
/// layer holds [`swa_cells`] per sequence. The SWA layout is in
/// [`GgufHeader::model_params`]. K and V use the same `kv_type`.
pub fn estimate(header: &GgufHeader, ctx_per_slot: u32, parallel: u32, shape: &Shape) -> MemoryEstimate {
    let Shape { type_k, type_v, swa_full, flash_attn, n_ubatch } = *shape;
    let p = header.model_params();
    let ctx = if ctx_per_slot == 0 { p.n_ctx_train.unwrap_or(4096) } else { ctx_per_slot as u64 };
    let parallel = parallel.max(1) as u64;
    let (cells, n_ctx_seq) = kv_cells(ctx, parallel);
    // llama.cpp limits a causal model's batch, and so its micro-batch, to
    // the context: a small context reserves a smaller graph (Gemma 3 270M
    // at 256 x 1 reserves 259 MiB of compute, not 515).
    let n_ubatch = n_ubatch.min(cells);
    let window_cells = match (swa_full, p.sliding_window) {
        (false, Some(window)) => swa_cells(n_ctx_seq, window, n_ubatch).saturating_mul(parallel),
        _ => cells,
    };
    let kv_bytes_per_layer: Vec<u64> = p
        .n_head_kv
        .iter()
        .enumerate()
        .map(|(il, &h)| {
            let k = type_k.row_bytes(h.saturating_mul(p.head_dim_k));
            let v = type_v.row_bytes(h.saturating_mul(p.head_dim_v));
            let windowed = p.swa_layers.as_ref().is_some_and(|swa| swa.get(il) == Some(&true));
            let cells = if windowed { window_cells } else { cells };
            cells.saturating_mul(k.saturating_add(v))
        })
        .collect();
    let kv_bytes = sat_add(&kv_bytes_per_layer);
    let recurrent_bytes = sat_mul(&[p.recurrent_state_bytes_per_layer.unwrap_or(0), p.n_recurrent_layers as u64, parallel]);
    let compute_bytes = compute_buffer_estimate(&p, n_ubatch, n_ctx_seq, flash_attn);
    let weights_bytes = header.weight_bytes();
    MemoryEstimate {
        weights_bytes,
        kv_bytes,
        recurrent_bytes,
        compute_bytes,
        total_bytes: sat_add(&[weights_bytes, kv_bytes, recurrent_bytes, compute_bytes]),
        kv_bytes_per_layer,
        kv_cells: cells,
        n_ctx_seq,
    }
}

