//! Shared plain types, the bottom layer above the leaf libraries (gguf,
//! template, gpu): what a served model is (`ModelSpec`), its sampling
//! defaults and their allowed ranges (one table for the config file and for
//! requests), the load-progress callback, and speculative decoding's
//! settings (types/spec.rs). Nothing here does I/O.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gpu::SplitMode;

mod spec;
pub use spec::*;

/// A token id as the vocabulary numbers it.
pub type TokenId = u32;

/// Receives load progress, 0.0 to 1.0.
pub type Progress = Arc<dyn Fn(f32) + Send + Sync>;

/// What the user asked to serve, before loading.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name clients use: `--alias` or the file stem.
    pub id: String,
    pub aliases: Vec<String>,
    /// Labels listed in /models (llama-server's `--tags`).
    pub tags: Vec<String>,
    pub path: PathBuf,
    pub ctx_size: Option<u32>,
    pub parallel: u32,
    pub n_gpu_layers: Option<u32>,
    /// The model's own GPU placement settings (config); they win over the server's.
    pub gpu: GpuOverrides,
    pub chat_template_file: Option<PathBuf>,
    /// llama-server's `--chat-template`: a built-in name or Jinja source
    /// (`chat_template_file` wins over it).
    pub chat_template: Option<String>,
    /// Unload after this long idle.
    pub ttl: Option<Duration>,
    /// Load at startup, before the port opens.
    pub preload: bool,
    /// Evict every other model while this one is loaded.
    pub exclusive: bool,
    /// Sampling defaults for requests that leave a field out.
    pub sampling: SamplingParams,
    /// Default `max_tokens` for requests that give none.
    pub max_tokens: Option<u32>,
    /// Full-size KV cache for sliding-window layers (`--swa-full`).
    pub swa_full: bool,
    /// llama.cpp context and loading settings.
    pub knobs: EngineKnobs,
    /// What enforces this model's JSON schemas (`--json-schema-engine`).
    pub json_schema_engine: JsonSchemaEngine,
    /// Named on the hub and not downloaded yet: the scheduler fetches it
    /// before its first load (`path` is then where it will not be).
    pub fetch: Option<HubSource>,
    /// A smaller model of the same vocabulary that drafts for this one
    /// (speculative decoding); it loads and unloads with it.
    pub draft: Option<DraftModel>,
}

/// A model of the Hugging Face hub (`[[models]] hf`) or at a URL (`url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSource {
    /// `owner/repo[:QUANT]`, or an https:// URL (`[[models]] url`).
    pub repo: String,
    /// One file of the repository instead of a quant's (`hf_file`).
    pub file: Option<String>,
}

/// What enforces a JSON schema (`response_format`, `json_schema`) while
/// sampling. GBNF `grammar` fields and tool-call grammars always use
/// llama.cpp's grammar sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JsonSchemaEngine {
    /// llama.cpp's converter to GBNF and its grammar sampler, as llama-server.
    #[default]
    Llama,
    /// llguidance (needs a binary built with `--features llguidance`).
    Llguidance,
}

impl JsonSchemaEngine {
    pub fn name(self) -> &'static str {
        match self {
            JsonSchemaEngine::Llama => "llama",
            JsonSchemaEngine::Llguidance => "llguidance",
        }
    }
}

/// How llama.cpp loads a model and shapes its context (`--flash-attn`,
/// `--cache-type-k/-v`, `--threads-batch`, `--ubatch-size`, `--ctx-checkpoints`, `--mlock`,
/// `--no-mmap`, `--context-shift`, `--pooling`, `--embeddings-only`, `--spec-*`); each also a `[server]` and a `[[models]]` key.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineKnobs {
    pub flash_attn: FlashAttn,
    pub cache_type_k: crate::gguf::KvCacheType,
    pub cache_type_v: crate::gguf::KvCacheType,
    /// Threads for prompt processing (`None`: the `--threads` count).
    pub threads_batch: Option<u32>,
    /// Micro-batch: tokens per compute step (`None`: min(batch, 512)).
    pub ubatch_size: Option<u32>,
    /// Checkpoints a slot of a sliding-window model keeps (`None`:
    /// `engine::checkpoints::DEFAULT_PER_SLOT`; 0: none).
    pub ctx_checkpoints: Option<u32>,
    /// Pin the weights in RAM.
    pub mlock: bool,
    /// Read the weights into memory instead of mapping the file.
    pub no_mmap: bool,
    /// A generation that fills its slot's context drops the older half of
    /// it (after BOS) and goes on, instead of ending with `length`.
    pub context_shift: bool,
    /// How an embedding pools a sequence's token vectors (`None`: the
    /// GGUF's `{arch}.pooling_type`, mean where it names none; see
    /// `engine::embed::choose_pooling`).
    pub pooling: Option<Pooling>,
    /// Serve embeddings only: chat and text completions on this model are
    /// refused with 400.
    pub embeddings_only: bool,
    /// Thinking on or off for chat templates that can think (see `Reasoning`).
    pub reasoning: Reasoning,
    /// Where a thinking model's reasoning goes (see `ReasoningFormat`).
    pub reasoning_format: ReasoningFormat,
    /// Speculative decoding (`--spec-type` and its sizes; `engine::spec`).
    pub spec: SpecConfig,
}

/// Whether chat templates that can think are told to (`enable_thinking`),
/// when a request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reasoning {
    /// Thinking where the template can think (`enable_thinking: true`), as
    /// llama-server's default.
    #[default]
    Auto,
    /// `enable_thinking: true`.
    On,
    /// `enable_thinking: false`.
    Off,
}

/// Where a thinking model's `<think>` block goes, when a request does not
/// say (its `reasoning_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningFormat {
    /// As `deepseek`.
    #[default]
    Auto,
    /// To `message.reasoning_content` (`delta.reasoning_content` streamed).
    Deepseek,
    /// Left in the content.
    None,
}

/// How token vectors become one embedding (llama.cpp's pooling types), or
/// `none`: a vector per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The average of the token vectors.
    Mean,
    /// The first token's vector (BERT-style models).
    Cls,
    /// The last token's vector (decoder embedding models).
    Last,
    /// No pooling: one vector per token, unnormalized, on llama-server's
    /// `/embeddings` only (`/v1/embeddings` refuses it, as llama-server does).
    None,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::None => "none",
        }
    }
}

impl EngineKnobs {
    /// What the memory estimate needs (an unset micro-batch counts as 512,
    /// the most the server uses).
    pub fn shape(&self, swa_full: bool) -> crate::gguf::Shape {
        crate::gguf::Shape {
            type_k: self.cache_type_k,
            type_v: self.cache_type_v,
            swa_full,
            flash_attn: self.flash_attn != FlashAttn::Off,
            n_ubatch: u64::from(self.ubatch_size.unwrap_or(512)),
        }
    }

    /// Weights that stay page cache the kernel may reclaim (mapped, not
    /// pinned): only those are worth keeping after an eviction.
    pub fn weights_are_page_cache(&self) -> bool {
        !self.no_mmap && !self.mlock
    }
}

/// llama.cpp's flash attention setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    /// llama.cpp decides (on where the backend supports it).
    #[default]
    Auto,
    On,
    Off,
}

impl ModelSpec {
    /// `path` served as `id` with every setting at its plain default (one
    /// slot; tests and models added at run time start from it).
    pub fn new(id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            aliases: Vec::new(),
            tags: Vec::new(),
            path: path.into(),
            ctx_size: None,
            parallel: 1,
            n_gpu_layers: None,
            gpu: Default::default(),
            chat_template_file: None,
            chat_template: None,
            ttl: None,
            preload: false,
            exclusive: false,
            sampling: Default::default(),
            max_tokens: None,
            swa_full: false,
            knobs: Default::default(),
            json_schema_engine: Default::default(),
            fetch: None,
            draft: None,
        }
    }

    /// The draft model this model loads with, if any: none for a model
    /// that serves embeddings only (it never generates).
    pub fn draft_in_use(&self) -> Option<&DraftModel> {
        self.draft.as_ref().filter(|_| !self.knobs.embeddings_only)
    }

    /// What a request's missing fields default to for this model.
    pub fn defaults(&self) -> Defaults {
        Defaults {
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            reasoning: self.knobs.reasoning,
            reasoning_format: self.knobs.reasoning_format,
            json_schema_engine: self.json_schema_engine,
        }
    }

    /// Whether `name` is this model's id or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Per-model placement settings from `[[models]]`; `None` keeps the server's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuOverrides {
    pub devices: Option<Vec<u32>>,
    pub main_gpu: Option<u32>,
    pub split_mode: Option<SplitMode>,
    /// Shares over the selected GPUs in index order, like llama.cpp's `--tensor-split`.
    pub tensor_split: Option<Vec<f32>>,
}

/// The id a model file gets when no alias is given: its file stem, with a
/// split suffix (`-00001-of-00003`) removed.
pub fn default_id(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    match stem.rfind("-of-") {
        Some(at) if at >= 6 && stem[at - 6..at].starts_with('-') && stem[at - 5..at].bytes().all(|b| b.is_ascii_digit()) => {
            stem[..at - 6].to_string()
        }
        _ => stem,
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Sampling settings after validation. Defaults follow llama-server, whose
/// users are the people we want to serve without surprises.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    /// 0 disables min-p.
    pub min_p: f32,
    /// `None` lets llama.cpp pick a random seed.
    pub seed: Option<u32>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1.0 disables the repetition penalty.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: i32,
    /// Additive biases on token logits (ids checked against the vocabulary).
    pub logit_bias: Vec<(TokenId, f32)>,
    /// Locally typical sampling; 1.0 disables it.
    pub typical_p: f32,
    /// Fewest candidates top-p, min-p and typical-p may leave.
    pub min_keep: u32,
    /// 0 off, 1 Mirostat, 2 Mirostat 2.0 (replaces top-k/p, min-p, typical-p, XTC).
    pub mirostat: u8,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
    /// DRY repetition penalty; 0.0 disables it.
    pub dry_multiplier: f32,
    pub dry_base: f32,
    pub dry_allowed_length: i32,
    /// Tokens DRY looks back over; -1 = the whole slot context.
    pub dry_penalty_last_n: i32,
    pub dry_sequence_breakers: Vec<String>,
    /// XTC ("exclude top choices"); probability 0.0 disables it.
    pub xtc_probability: f32,
    pub xtc_threshold: f32,
    /// End-of-generation tokens are never sampled (llama-server's `ignore_eos`).
    pub ignore_eos: bool,
    /// A grammar every generated token must follow: from `response_format`,
    /// `json_schema` or `grammar`. GBNF (root rule `root`), or llguidance's
    /// Lark text when it starts with `%llguidance` (llama.cpp's convention).
    pub grammar: Option<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            typical_p: 1.0,
            min_keep: 0,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            ignore_eos: false,
            grammar: None,
        }
    }
}

impl SamplingParams {
    /// The settings as llama-server names them, for `/props`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repeat_penalty": self.repeat_penalty,
            "repeat_last_n": self.penalty_last_n,
        })
    }
}

/// Defaults a request's missing fields take: the model's configured sampling;
/// and how its JSON schemas become a constraint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub reasoning: Reasoning,
    pub reasoning_format: ReasoningFormat,
    pub json_schema_engine: JsonSchemaEngine,
}

/// A sampling field with a range, as the config file and requests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingField {
    Temperature,
    TopP,
    TopK,
    MinP,
    PresencePenalty,
    FrequencyPenalty,
    RepeatPenalty,
    RepeatLastN,
    MaxTokens,
    TypicalP,
    MinKeep,
    Mirostat,
    MirostatTau,
    MirostatEta,
    DryMultiplier,
    DryBase,
    DryAllowedLength,
    DryPenaltyLastN,
    XtcProbability,
    XtcThreshold,
}

impl SamplingField {
    pub fn name(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::TopP => "top_p",
            Self::TopK => "top_k",
            Self::MinP => "min_p",
            Self::PresencePenalty => "presence_penalty",
            Self::FrequencyPenalty => "frequency_penalty",
            Self::RepeatPenalty => "repeat_penalty",
            Self::RepeatLastN => "repeat_last_n",
            Self::MaxTokens => "max_tokens",
            Self::TypicalP => "typical_p",
            Self::MinKeep => "min_keep",
            Self::Mirostat => "mirostat",
            Self::MirostatTau => "mirostat_tau",
            Self::MirostatEta => "mirostat_eta",
            Self::DryMultiplier => "dry_multiplier",
            Self::DryBase => "dry_base",
            Self::DryAllowedLength => "dry_allowed_length",
            Self::DryPenaltyLastN => "dry_penalty_last_n",
            Self::XtcProbability => "xtc_probability",
            Self::XtcThreshold => "xtc_threshold",
        }
    }

    /// The one table of allowed values, for `[[models]] sampling` and for
    /// requests alike: `Err(rule)` says what the value must be.
    pub fn check(self, v: f64) -> Result<(), &'static str> {
        let (ok, rule) = match self {
            Self::Temperature => ((0.0..=100.0).contains(&v), "must be between 0 and 100"),
            Self::TopP => (v > 0.0 && v <= 1.0, "must be in (0, 1]"),
            Self::TopK => ((0.0..=i32::MAX as f64).contains(&v), "must be >= 0; 0 disables it"),
            Self::MinP => ((0.0..=1.0).contains(&v), "must be in [0, 1]"),
            Self::PresencePenalty | Self::FrequencyPenalty => ((-2.0..=2.0).contains(&v), "must be between -2 and 2"),
            Self::RepeatPenalty => (v > 0.0 && v.is_finite(), "must be > 0; 1 disables it"),
            Self::RepeatLastN => ((0.0..=1_000_000.0).contains(&v), "must be between 0 and 1000000"),
            Self::MaxTokens => ((1.0..=u32::MAX as f64).contains(&v), "must be at least 1"),
            Self::TypicalP => (v > 0.0 && v <= 1.0, "must be in (0, 1]; 1 disables it"),
            Self::MinKeep => ((0.0..=1_000_000.0).contains(&v) && v.fract() == 0.0, "must be a whole number between 0 and 1000000"),
            Self::Mirostat => ([0.0, 1.0, 2.0].contains(&v), "must be 0 (off), 1 or 2"),
            Self::MirostatTau | Self::MirostatEta => ((0.0..=1000.0).contains(&v), "must be between 0 and 1000"),
            Self::DryMultiplier => ((0.0..=100.0).contains(&v), "must be between 0 and 100; 0 disables it"),
            Self::DryBase => ((1.0..=100.0).contains(&v), "must be between 1 and 100"),
            Self::DryAllowedLength => ((0.0..=1_000_000.0).contains(&v) && v.fract() == 0.0, "must be a whole number >= 0"),
            Self::DryPenaltyLastN => ((-1.0..=1_000_000.0).contains(&v) && v.fract() == 0.0, "must be a whole number >= -1; -1 = the whole context"),
            Self::XtcProbability => ((0.0..=1.0).contains(&v), "must be in [0, 1]; 0 disables it"),
            Self::XtcThreshold => ((0.0..=1.0).contains(&v), "must be in [0, 1]"),
        };
        // NaN fails every range above (comparisons with NaN are false).
        if ok {
            Ok(())
        } else {
            Err(rule)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_id_is_the_file_stem_without_split_suffix() {
        assert_eq!(default_id(Path::new("models/gemma-3-270m-q4_k_m.gguf")), "gemma-3-270m-q4_k_m");
        assert_eq!(default_id(Path::new("/m/big-model-00001-of-00003.gguf")), "big-model");
    }

    #[test]
    fn one_range_table_for_config_and_requests() {
        use SamplingField::*;
        assert!(Temperature.check(0.0).is_ok() && Temperature.check(100.0).is_ok());
        assert!(Temperature.check(f64::NAN).is_err() && Temperature.check(-0.1).is_err());
        assert!(TopP.check(0.0).is_err() && TopP.check(1.0).is_ok());
        assert!(RepeatPenalty.check(f64::INFINITY).is_err() && RepeatPenalty.check(0.0).is_err());
        assert!(RepeatLastN.check(1_000_001.0).is_err() && RepeatLastN.check(0.0).is_ok());
        assert!(MaxTokens.check(0.0).is_err() && MaxTokens.check(1.0).is_ok());
        assert!(Mirostat.check(1.5).is_err() && Mirostat.check(2.0).is_ok());
        assert!(DryPenaltyLastN.check(-1.0).is_ok() && DryPenaltyLastN.check(-2.0).is_err());
        assert!(TypicalP.check(0.0).is_err() && XtcProbability.check(1.1).is_err());
    }
}
