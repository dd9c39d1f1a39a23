//! A model's settings: the server's per-model defaults (`ModelDefaults`,
//! flags over `[server]` over built-ins) and one `[[models]]` entry (or
//! preset section) built on them, checked, into a `ModelSpec`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{self, ModelSection};
use super::{hub, json_schema_engine, knobs};
use crate::types::{EngineKnobs, GpuOverrides, JsonSchemaEngine, ModelSpec, SamplingField, SamplingParams};

/// The smallest context a request slot may have.
pub(super) const MIN_SLOT_CTX: u32 = 16;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ModelDefaults {
    /// The model's whole KV context, as llama-server's `-c` (see
    /// [`crate::engine::per_slot_ctx`]).
    pub(super) ctx_size: Option<u32>,
    pub(super) parallel: u32,
    /// `--parallel` (or `parallel =`) was given: llama-server then splits
    /// `-c` across the slots unless `--kv-unified` says otherwise.
    pub(super) parallel_given: bool,
    pub(super) kv_unified: Option<bool>,
    pub(super) n_gpu_layers: Option<u32>,
    pub(super) chat_template_file: Option<PathBuf>,
    pub(super) chat_template: Option<String>,
    /// `--tags`, for the models the command line names.
    pub(super) tags: Vec<String>,
    pub(super) swa_full: bool,
    pub(super) json_schema_engine: JsonSchemaEngine,
    pub(super) knobs: EngineKnobs,
    /// Request defaults from llama-server's `--temp`, `--seed`, `--n-predict`.
    pub(super) sampling: SamplingParams,
    pub(super) max_tokens: Option<u32>,
    /// Idle unload (`--sleep-idle-seconds`); a model's `ttl` wins.
    pub(super) ttl: Option<Duration>,
    /// `--model-draft`: every model's draft unless its entry names one.
    pub(super) draft: Option<crate::types::DraftModel>,
}

impl ModelDefaults {
    pub(super) fn spec(&self, id: String, path: PathBuf) -> ModelSpec {
        ModelSpec {
            id,
            aliases: Vec::new(),
            tags: self.tags.clone(),
            path,
            ctx_size: crate::engine::per_slot_ctx(self.ctx_size, self.parallel, self.parallel_given, self.kv_unified),
            parallel: self.parallel,
            n_gpu_layers: self.n_gpu_layers,
            gpu: Default::default(),
            chat_template_file: self.chat_template_file.clone(),
            chat_template: self.chat_template.clone(),
            ttl: self.ttl,
            preload: false,
            exclusive: false,
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            swa_full: self.swa_full,
            knobs: self.knobs,
            json_schema_engine: self.json_schema_engine,
            fetch: None,
            draft: self.draft.clone(),
        }
    }
}

pub(super) fn model_from_section(m: &ModelSection, base: &ModelDefaults, dir: &Path, at: &str) -> Result<ModelSpec, String> {
    let cache = || crate::hub::cache_dir();
    let (path, fetch) = match (&m.path, &m.hf, &m.url) {
        (Some(path), None, None) if m.hf_file.is_none() => (dir.join(path), None),
        (None, Some(repo), None) => hub::hub_entry(repo, m.hf_file.as_deref(), cache().as_deref()).map_err(|e| format!("{at}: {e}"))?,
        (None, None, Some(url)) if m.hf_file.is_none() => hub::url_entry(url, cache().as_deref()).map_err(|e| format!("{at}: {e}"))?,
        (None, None, None) => return Err(format!("{at}: `path` (a GGUF file), `hf` (owner/repo[:QUANT]) or `url` is required")),
        _ => return Err(format!("{at}: give one of `path` (a GGUF file), `hf` (owner/repo[:QUANT], with `hf_file`) or `url`, not several")),
    };
    let mut spec = base.spec(m.name.clone(), path);
    spec.fetch = fetch;
    spec.aliases = m.aliases.clone();
    if !m.tags.is_empty() {
        spec.tags = m.tags.clone();
    }
    spec.parallel = m.parallel.unwrap_or(spec.parallel);
    let parallel_given = base.parallel_given || m.parallel.is_some();
    spec.ctx_size = crate::engine::per_slot_ctx(m.ctx_size.or(base.ctx_size), spec.parallel, parallel_given, m.kv_unified.or(base.kv_unified));
    spec.n_gpu_layers = m.n_gpu_layers.or(spec.n_gpu_layers);
    spec.swa_full = m.swa_full.unwrap_or(spec.swa_full);
    if let Some(e) = m.json_schema_engine {
        spec.json_schema_engine = json_schema_engine(e, &format!("{at}: json_schema_engine"))?;
    }
    spec.knobs = knobs(&file::KnobKeys::default(), &m.knob_keys(), spec.knobs, at)?;
    spec.gpu = GpuOverrides {
        devices: m.devices.clone(),
        main_gpu: m.main_gpu,
        split_mode: m.split_mode,
        tensor_split: m.tensor_split.clone(),
    };
    if let Some(shares) = &spec.gpu.tensor_split {
        if shares.is_empty() || shares.iter().any(|v| !v.is_finite() || *v < 0.0) || shares.iter().all(|v| *v == 0.0) {
            return Err(format!("{at}: tensor_split must list non-negative shares, not all zero (got {shares:?})"));
        }
    }
    if let Some(t) = &m.chat_template {
        // A model's own template replaces the server's file too.
        spec.chat_template = Some(t.clone());
        spec.chat_template_file = None;
    }
    if let Some(t) = &m.chat_template_file {
        spec.chat_template_file = Some(dir.join(t));
    }
    spec.ttl = m.ttl.or(spec.ttl);
    if let Some(d) = &m.draft {
        spec.draft = Some(super::draft::given(d, dir, false));
    }
    spec.preload = m.preload;
    spec.exclusive = m.exclusive;
    let d = &m.sampling;
    let p = &mut spec.sampling;
    // The same ranges as requests (types::SamplingField), named as in the file.
    let check = |field: SamplingField, v: f64| field.check(v).map_err(|rule| format!("{at}: sampling.{} {rule}", field.name()));
    if let Some(v) = d.temperature {
        check(SamplingField::Temperature, v.into())?;
        p.temperature = v;
    }
    if let Some(v) = d.top_p {
        check(SamplingField::TopP, v.into())?;
        p.top_p = v;
    }
    if let Some(v) = d.top_k {
        check(SamplingField::TopK, v.into())?;
        p.top_k = v;
    }
    if let Some(v) = d.min_p {
        check(SamplingField::MinP, v.into())?;
        p.min_p = v;
    }
    if let Some(v) = d.presence_penalty {
        check(SamplingField::PresencePenalty, v.into())?;
        p.presence_penalty = v;
    }
    if let Some(v) = d.frequency_penalty {
        check(SamplingField::FrequencyPenalty, v.into())?;
        p.frequency_penalty = v;
    }
    if let Some(v) = d.repeat_penalty {
        check(SamplingField::RepeatPenalty, v.into())?;
        p.repeat_penalty = v;
    }
    if let Some(v) = d.repeat_last_n {
        check(SamplingField::RepeatLastN, v.into())?;
        p.penalty_last_n = v;
    }
    if let Some(v) = d.max_tokens {
        check(SamplingField::MaxTokens, v.into())?;
        spec.max_tokens = Some(v);
    }
    if !(1..=256).contains(&spec.parallel) {
        return Err(format!("{at}: parallel must be between 1 and 256 (got {})", spec.parallel));
    }
    Ok(spec)
}
