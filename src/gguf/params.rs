//! Typed metadata accessors, the per-layer weight split used for GPU
//! placement and the hyper-parameters the estimate needs.

use serde::Serialize;

use super::*;

// ---------------------------------------------------------------------------
// Accessors and model parameters
// ---------------------------------------------------------------------------

/// Hyper-parameters relevant to memory, derived from the metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelParams {
    pub architecture: Option<String>,
    /// `{arch}.block_count` (0 if absent).
    pub n_layers: u32,
    /// `{arch}.context_length` (training context).
    pub n_ctx_train: Option<u64>,
    /// `{arch}.embedding_length`.
    pub n_embd: u64,
    /// `{arch}.vocab_size`, else length of `tokenizer.ggml.tokens`, else `token_embd.weight` `dims[1]`.
    pub n_vocab: Option<u64>,
    /// `{arch}.attention.head_count` (max over layers if per-layer).
    pub n_head: u64,
    /// KV heads per layer (`{arch}.attention.head_count_kv`, scalar or per-layer
    /// array; default `n_head`). 0 for layers without attention (recurrent layers
    /// of hybrid models) and for layers that reuse another layer's KV cache.
    pub n_head_kv: Vec<u64>,
    /// `{arch}.attention.key_length`, default `n_embd / n_head`.
    pub head_dim_k: u64,
    /// `{arch}.attention.value_length`, default `n_embd / n_head`.
    pub head_dim_v: u64,
    /// `{arch}.feed_forward_length` (max over layers if per-layer).
    pub n_ff: Option<u64>,
    /// `{arch}.expert_count`, `{arch}.expert_used_count` (MoE).
    pub n_expert: Option<u64>,
    pub n_expert_used: Option<u64>,
    /// `{arch}.attention.sliding_window` (tokens), if the model uses SWA.
    pub sliding_window: Option<u64>,
    /// Per layer: true = sliding-window layer. `None` when the model has no
    /// sliding window or the pattern cannot be determined. See [`swa_layers`].
    pub swa_layers: Option<Vec<bool>>,
    /// True when the model has recurrent state (Mamba/RWKV style `ssm.*` or
    /// `wkv.*` metadata).
    pub recurrent: bool,
    /// Per-sequence recurrent state in bytes per recurrent layer (F32), if known.
    pub recurrent_state_bytes_per_layer: Option<u64>,
    /// Number of layers holding recurrent state.
    pub n_recurrent_layers: u32,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    /// Whether the model can generate text: a BERT-style encoder
    /// (`{arch}.attention.causal` false) attends both ways and computes
    /// embeddings only.
    pub fn generates(&self) -> bool {
        self.arch_get("attention.causal").and_then(MetaValue::as_bool) != Some(false)
    }
    /// `"{arch}.{suffix}"` (e.g. `arch_key("block_count")` → `"gemma3.block_count"`).
    pub fn arch_key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.architecture.as_deref().unwrap_or(""))
    }
    pub fn arch_get(&self, suffix: &str) -> Option<&MetaValue> {
        self.get(&self.arch_key(suffix))
    }
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.arch_get(suffix)?.as_u64()
    }
    pub fn arch_f64(&self, suffix: &str) -> Option<f64> {
        self.arch_get(suffix)?.as_f64()
    }
    pub fn arch_str(&self, suffix: &str) -> Option<&str> {
        self.arch_get(suffix)?.as_str()
    }
    /// A value that may be a scalar or a per-layer array, expanded to `n` layers.
    /// A scalar is repeated; an array is used as is when its length is `n`,
    /// otherwise truncated/padded with its last element. `None` if absent or not numeric.
    pub fn arch_u64_per_layer(&self, suffix: &str, n: usize) -> Option<Vec<u64>> {
        match self.arch_get(suffix)? {
            MetaValue::Array(a) => {
                let v: Option<Vec<u64>> = a.iter().map(MetaValue::as_u64).collect();
                let mut v = v?;
                let last = *v.last()?;
                v.resize(n, last);
                Some(v)
            }
            other => Some(vec![other.as_u64()?; n]),
        }
    }

    /// `{arch}.block_count`; `None` if absent or implausible (> [`MAX_LAYERS`]).
    pub fn n_layers(&self) -> Option<u32> {
        self.arch_u64("block_count").filter(|&n| n <= MAX_LAYERS as u64).map(|n| n as u32)
    }

    /// `{arch}.context_length` (training context).
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// Sum of all tensor bytes. Equals llama.cpp's `llama_model_size()`
    /// (the loader sums `ggml_nbytes` of every tensor in the file(s)).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().fold(0, |a, t| a.saturating_add(t.bytes))
    }

    /// Bytes of the tensors named `blk.{i}.*`, indexed by `i`. The length is
    /// `max(block_count, highest blk index + 1)`.
    pub fn layer_bytes(&self) -> Vec<u64> {
        let n = self.n_layers().unwrap_or(0) as usize;
        let max_idx = self.tensors.iter().filter_map(TensorInfo::layer).max().map_or(0, |m| m + 1);
        // Layer indices come from the file; never allocate more than one entry per tensor.
        let len = n.max(max_idx.min(self.tensors.len() + n));
        let mut v = vec![0u64; len];
        for t in &self.tensors {
            if let Some(i) = t.layer() {
                if let Some(slot) = v.get_mut(i) {
                    *slot = slot.saturating_add(t.bytes);
                }
            }
        }
        v
    }

    /// Bytes of all tensors that are not `blk.{i}.*` (token embedding, output
    /// head, output norm, rope tables, …).
    pub fn non_layer_bytes(&self) -> u64 {
        self.tensors.iter().filter(|t| t.layer().is_none()).fold(0, |a, t| a.saturating_add(t.bytes))
    }

    /// Bytes of the non-layer tensors that are not the output head
    /// (`output.*`, `output_norm.*`): the token embeddings and the like, which
    /// llama.cpp keeps in host memory whatever `n_gpu_layers` says.
    pub fn input_layer_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.layer().is_none() && !t.name.starts_with("output.") && !t.name.starts_with("output_norm."))
            .fold(0, |a, t| a.saturating_add(t.bytes))
    }

    /// Bytes llama.cpp puts on the *output* device when the output layer is
    /// offloaded (`n_gpu_layers > n_layers`): `output.weight` + `output_norm.*`
    /// (+ `output.bias`). For models with tied embeddings (no `output.weight`)
    /// llama.cpp duplicates `token_embd.weight` as the output matrix, so its
    /// size is counted here even though it is stored once in the file.
    /// `token_embd` itself (the input layer) always stays in host memory.
    pub fn output_layer_bytes(&self) -> u64 {
        let mut has_output = false;
        let mut sum = 0;
        for t in &self.tensors {
            if t.name == "output.weight" {
                has_output = true;
            }
            if t.name.starts_with("output.") || t.name.starts_with("output_norm.") {
                sum = sat_add(&[sum, t.bytes]);
            }
        }
        if !has_output {
            sum = sat_add(&[sum, self.tensors.iter().find(|t| t.name == "token_embd.weight").map_or(0, |t| t.bytes)]);
        }
        sum
    }

    /// Vocabulary size (see [`ModelParams::n_vocab`]).
    pub fn n_vocab(&self) -> Option<u64> {
        self.arch_u64("vocab_size")
            .or_else(|| self.get("tokenizer.ggml.tokens").and_then(MetaValue::array_len))
            .or_else(|| self.tensors.iter().find(|t| t.name == "token_embd.weight").and_then(|t| t.dims.get(1).copied()))
    }

    /// Hyper-parameters relevant to memory. Missing values default to 0 / `None`.
    pub fn model_params(&self) -> ModelParams {
        let n_layers = self.n_layers().unwrap_or(0);
        let nl = n_layers as usize;
        let n_embd = self.arch_u64("embedding_length").unwrap_or(0);
        let n_head = self
            .arch_u64_per_layer("attention.head_count", nl.max(1))
            .and_then(|v| v.into_iter().max())
            .unwrap_or(0);
        let mut n_head_kv = self
            .arch_u64_per_layer("attention.head_count_kv", nl)
            .unwrap_or_else(|| vec![n_head; nl]);
        let default_head_dim = n_embd.checked_div(n_head).unwrap_or(0);
        let head_dim_k = self.arch_u64("attention.key_length").unwrap_or(default_head_dim);
        let head_dim_v = self.arch_u64("attention.value_length").unwrap_or(default_head_dim);

        // Layers that reuse the KV cache of an earlier layer (llama.cpp
        // `n_layer_kv_from_start`): gemma4 via shared_kv_layers, gemma3n fixed 20.
        let kv_from_start = match self.arch_u64("attention.shared_kv_layers") {
            Some(shared) => Some((n_layers as u64).saturating_sub(shared)),
            None if self.architecture.as_deref() == Some("gemma3n") => Some(20),
            None => None,
        };
        if let Some(k) = kv_from_start {
            for (il, h) in n_head_kv.iter_mut().enumerate() {
                if il as u64 >= k {
                    *h = 0;
                }
            }
        }

        let sliding_window = self.arch_u64("attention.sliding_window").filter(|&w| w > 0);
        let swa = sliding_window.and_then(|_| swa_layers(self, nl));

        // Recurrent state (llama.cpp hparams n_embd_r / n_embd_s, F32 cache).
        let d_conv = self.arch_u64("ssm.conv_kernel").unwrap_or(0);
        let d_inner = self.arch_u64("ssm.inner_size").unwrap_or(0);
        let d_state = self.arch_u64("ssm.state_size").unwrap_or(0);
        let n_group = self.arch_u64("ssm.group_count").unwrap_or(0);
        let wkv_head = self.arch_u64("wkv.head_size").unwrap_or(0);
        let (recurrent, per_layer) = if wkv_head > 0 {
            let shift = self.arch_u64("token_shift_count").unwrap_or(2);
            (true, Some(sat_mul(&[sat_add(&[sat_mul(&[shift, n_embd]), sat_mul(&[n_embd, wkv_head])]), 4])))
        } else if d_inner > 0 || d_state > 0 {
            let r = sat_mul(&[d_conv.saturating_sub(1), sat_add(&[d_inner, sat_mul(&[2, n_group, d_state])])]);
            (true, Some(sat_mul(&[sat_add(&[r, sat_mul(&[d_state, d_inner])]), 4])))
        } else {
            (false, None)
        };
        // RWKV: every layer is recurrent. Mamba-style: hybrid models mark the
        // attention-free layers with head_count_kv = 0; if no layer has KV
        // heads the model is purely recurrent. (Hybrids that encode the layer
        // layout differently, e.g. qwen3next's full_attention_interval, are
        // counted as attention-only here: an under-estimate of the small
        // recurrent state.)
        let n_recurrent_layers = if !recurrent {
            0
        } else if wkv_head > 0 || n_head_kv.iter().all(|&h| h == 0) {
            n_head_kv.iter_mut().for_each(|h| *h = 0);
            n_layers
        } else {
            n_head_kv.iter().filter(|&&h| h == 0).count() as u32
        };

        ModelParams {
            architecture: self.architecture.clone(),
            n_layers,
            n_ctx_train: self.context_length(),
            n_embd,
            n_vocab: self.n_vocab(),
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: self.arch_u64_per_layer("feed_forward_length", nl.max(1)).and_then(|v| v.into_iter().max()),
            n_expert: self.arch_u64("expert_count"),
            n_expert_used: self.arch_u64("expert_used_count"),
            sliding_window,
            swa_layers: swa,
            recurrent,
            recurrent_state_bytes_per_layer: per_layer,
            n_recurrent_layers,
        }
    }
}

/// Which layers use the sliding window, following llama.cpp:
///
/// 1. `{arch}.attention.sliding_window_pattern` as a per-layer bool array → used as is.
/// 2. As an integer `n` (or, if absent, llama.cpp's built-in default for the
///    architecture: gemma2 2, gemma3/gemma-embedding 6, gemma3n 5, cohere2 4,
///    gpt-oss 2): layer `il` is SWA iff `il % n < n - 1`, i.e. every n-th layer
///    (il = n-1, 2n-1, …) is global; `n == 0` means all layers are SWA.
///    (llama.cpp `set_swa_pattern(n, dense_first = false)`.)
/// 3. Unknown architecture without the key → `None`.
pub fn swa_layers(h: &GgufHeader, n_layers: usize) -> Option<Vec<bool>> {
    let pattern = match h.arch_get("attention.sliding_window_pattern") {
        Some(MetaValue::Array(a)) => {
            let mut v: Vec<bool> = a.iter().map(|x| x.as_bool().or_else(|| x.as_u64().map(|n| n != 0))).collect::<Option<_>>()?;
            v.resize(n_layers, false);
            return Some(v);
        }
        Some(v) => v.as_u64()?,
        None => match h.architecture.as_deref()? {
            "gemma2" | "gpt-oss" => 2,
            "gemma3" | "gemma-embedding" => 6,
            "gemma3n" => 5,
            "cohere2" => 4,
            _ => return None,
        },
    };
    Some((0..n_layers as u64).map(|il| pattern == 0 || il % pattern < pattern - 1).collect())
}

