//! The TOML config file's shape (serde types only). Every `[server]` key is
//! named like its command-line flag with dashes as underscores; unknown keys
//! are errors, so a typo never silently does nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub models: Vec<ModelSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<std::net::IpAddr>,
    pub port: Option<u16>,
    pub ctx_size: Option<u32>,
    pub parallel: Option<u32>,
    pub kv_unified: Option<bool>,
    pub threads: Option<u32>,
    pub kv_cache_mib: Option<u64>,
    pub flash_attn: Option<crate::types::FlashAttn>,
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    pub threads_batch: Option<u32>,
    pub ubatch_size: Option<u32>,
    pub ctx_checkpoints: Option<u32>,
    pub mlock: Option<bool>,
    pub no_mmap: Option<bool>,
    pub context_shift: Option<bool>,
    pub pooling: Option<crate::types::Pooling>,
    pub embeddings_only: Option<bool>,
    pub reasoning: Option<crate::types::Reasoning>,
    pub reasoning_format: Option<crate::types::ReasoningFormat>,
    pub spec_type: Option<crate::types::SpecType>,
    pub spec_draft_n_max: Option<u32>,
    pub spec_draft_n_min: Option<u32>,
    pub spec_ngram_simple_size_n: Option<u32>,
    pub spec_draft_p_min: Option<f32>,
    pub kv_cache_dir: Option<PathBuf>,
    pub kv_cache_dir_mib: Option<u64>,
    pub swa_full: Option<bool>,
    pub json_schema_engine: Option<crate::types::JsonSchemaEngine>,
    pub batch_size: Option<u32>,
    pub n_gpu_layers: Option<u32>,
    pub chat_template_file: Option<PathBuf>,
    /// llama-server's `--chat-template`: a built-in name or Jinja source.
    pub chat_template: Option<String>,
    pub api_key: Option<String>,
    pub admin_token: Option<String>,
    pub memory_budget_mib: Option<u64>,
    pub sleep_mib: Option<u64>,
    pub max_loaded_models: Option<u64>,
    pub policy: Option<crate::scheduler::Policy>,
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
    pub max_queue: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub max_queue_wait: Option<Duration>,
    pub notify_swaps: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_grace: Option<Duration>,
    pub max_body_mib: Option<u32>,
    pub max_connections: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub header_timeout: Option<Duration>,
    pub cors_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub models_dir: Option<PathBuf>,
    pub gpus_from: Option<PathBuf>,
    pub reserve_mib: Option<u64>,
    pub devices: Option<Vec<u32>>,
    pub device_order: Option<crate::gpu::DeviceOrder>,
    pub split_mode: Option<crate::gpu::SplitMode>,
    pub spread: Option<bool>,
    pub main_gpu: Option<u32>,
    pub use_fit_params: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    /// A GGUF file, or with `hf` a model of the Hugging Face hub.
    pub path: Option<PathBuf>,
    /// `owner/repo[:QUANT]`: downloaded on the first request unless cached.
    pub hf: Option<String>,
    /// With `hf`: this file of the repository instead of a quant's.
    pub hf_file: Option<String>,
    /// A GGUF at an https:// URL: downloaded on the first request unless it was.
    pub url: Option<String>,
    /// The model that drafts for this one (speculative decoding): another
    /// `[[models]]` name, a GGUF path, or `auto` (see `config::draft`).
    pub draft: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub ctx_size: Option<u32>,
    pub parallel: Option<u32>,
    pub kv_unified: Option<bool>,
    pub n_gpu_layers: Option<u32>,
    pub swa_full: Option<bool>,
    pub json_schema_engine: Option<crate::types::JsonSchemaEngine>,
    pub flash_attn: Option<crate::types::FlashAttn>,
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    pub threads_batch: Option<u32>,
    pub ubatch_size: Option<u32>,
    pub ctx_checkpoints: Option<u32>,
    pub mlock: Option<bool>,
    pub no_mmap: Option<bool>,
    pub context_shift: Option<bool>,
    pub pooling: Option<crate::types::Pooling>,
    pub embeddings_only: Option<bool>,
    pub reasoning: Option<crate::types::Reasoning>,
    pub reasoning_format: Option<crate::types::ReasoningFormat>,
    pub spec_type: Option<crate::types::SpecType>,
    pub spec_draft_n_max: Option<u32>,
    pub spec_draft_n_min: Option<u32>,
    pub spec_ngram_simple_size_n: Option<u32>,
    pub spec_draft_p_min: Option<f32>,
    /// Placement overrides: each wins over the `[server]` key of the same name.
    pub devices: Option<Vec<u32>>,
    pub main_gpu: Option<u32>,
    pub split_mode: Option<crate::gpu::SplitMode>,
    /// GPU shares in index order (like llama.cpp's `--tensor-split`).
    pub tensor_split: Option<Vec<f32>>,
    pub chat_template_file: Option<PathBuf>,
    /// llama-server's `--chat-template`: a built-in name or Jinja source.
    pub chat_template: Option<String>,
    /// Idle time after which the model is unloaded.
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub preload: bool,
    #[serde(default)]
    pub exclusive: bool,
    /// Sampling defaults for requests that leave a field out.
    #[serde(default)]
    pub sampling: SamplingSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub max_tokens: Option<u32>,
}

/// A duration as `"10s"`, `"500ms"`, `"2m"` or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Secs(s)) => crate::cli::parse_duration(&s.to_string()).map(Some).map_err(serde::de::Error::custom),
        Some(Raw::Text(t)) => crate::cli::parse_duration(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The engine knobs as `[server]` / `[[models]]` keys (see `types::EngineKnobs`).
/// Both sections repeat these fields (and `knob_keys!` copies them here):
/// serde's `flatten` would drop `deny_unknown_fields`, which catches typos.
#[derive(Debug, Default, Clone)]
pub struct KnobKeys {
    pub flash_attn: Option<crate::types::FlashAttn>,
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    pub threads_batch: Option<u32>,
    pub ubatch_size: Option<u32>,
    pub ctx_checkpoints: Option<u32>,
    pub mlock: Option<bool>,
    pub no_mmap: Option<bool>,
    pub context_shift: Option<bool>,
    pub pooling: Option<crate::types::Pooling>,
    pub embeddings_only: Option<bool>,
    pub reasoning: Option<crate::types::Reasoning>,
    pub reasoning_format: Option<crate::types::ReasoningFormat>,
    pub spec_type: Option<crate::types::SpecType>,
    pub spec_draft_n_max: Option<u32>,
    pub spec_draft_n_min: Option<u32>,
    pub spec_ngram_simple_size_n: Option<u32>,
    pub spec_draft_p_min: Option<f32>,
}

macro_rules! knob_keys {
    ($section:ty) => {
        impl $section {
            pub fn knob_keys(&self) -> KnobKeys {
                KnobKeys {
                    flash_attn: self.flash_attn,
                    cache_type_k: self.cache_type_k.clone(),
                    cache_type_v: self.cache_type_v.clone(),
                    threads_batch: self.threads_batch,
                    ubatch_size: self.ubatch_size,
                    ctx_checkpoints: self.ctx_checkpoints,
                    mlock: self.mlock,
                    no_mmap: self.no_mmap,
                    context_shift: self.context_shift,
                    pooling: self.pooling,
                    embeddings_only: self.embeddings_only,
                    reasoning: self.reasoning,
                    reasoning_format: self.reasoning_format,
                    spec_type: self.spec_type,
                    spec_draft_n_max: self.spec_draft_n_max,
                    spec_draft_n_min: self.spec_draft_n_min,
                    spec_ngram_simple_size_n: self.spec_ngram_simple_size_n,
                    spec_draft_p_min: self.spec_draft_p_min,
                }
            }
        }
    };
}
knob_keys!(ServerSection);
knob_keys!(ModelSection);
