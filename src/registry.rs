//! The model catalogue: every served model, its names and its lifecycle.
//!
//! The scheduler (src/scheduler) decides every transition; the registry holds
//! the result so handlers and `/v1/models` can see it:
//! ```text
//!   Unloaded --> Loading --ok--> Loaded --> Unloading --> Unloaded
//!                   \----err---> Failed (retried after a backoff)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::api::error::ApiError;
use crate::engine::{Engine, EngineError, ModelInfo};
use crate::gpu::{Placement, PlacementOptions, SplitMode};
use crate::template::ChatTemplate;

/// What the user asked to serve, before loading.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name clients use: `--alias` or the file stem.
    pub id: String,
    pub aliases: Vec<String>,
    pub path: PathBuf,
    pub ctx_size: Option<u32>,
    pub parallel: u32,
    pub n_gpu_layers: Option<u32>,
    /// The model's own GPU placement settings (config); they win over the server's.
    pub gpu: GpuOverrides,
    pub chat_template_file: Option<PathBuf>,
    /// Unload after this long idle.
    pub ttl: Option<std::time::Duration>,
    /// Load at startup, before the port opens.
    pub preload: bool,
    /// Evict every other model while this one is loaded.
    pub exclusive: bool,
    /// Sampling defaults for requests that leave a field out.
    pub sampling: crate::engine::SamplingParams,
    /// Default `max_tokens` for requests that give none.
    pub max_tokens: Option<u32>,
}

/// Receives load progress, 0.0 to 1.0.
pub type Progress = Arc<dyn Fn(f32) + Send + Sync>;

/// Loads engines; the real one wraps llama.cpp, tests pass a fake.
pub trait EngineFactory: Send + Sync + 'static {
    /// Loads `spec` where the scheduler placed it (`None`: no GPU plan).
    fn load(&self, spec: &ModelSpec, placement: Option<&Placement>, progress: Progress) -> Result<Arc<dyn Engine>, EngineError>;
}

/// Where a model's chat template came from, for `/props` and the logs.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateOrigin {
    File(PathBuf),
    Gguf,
    /// Built in, chosen by architecture when the GGUF has none.
    BuiltIn(&'static str),
}

/// A model ready to serve.
pub struct LoadedModel {
    pub engine: Arc<dyn Engine>,
    pub template: ChatTemplate,
    pub template_source: String,
    pub template_origin: TemplateOrigin,
}

pub enum ModelState {
    Unloaded,
    Loading,
    Loaded(Arc<LoadedModel>),
    Unloading,
    Failed(String),
}

impl ModelState {
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Loaded(_) => "loaded",
            ModelState::Unloading => "unloading",
            ModelState::Failed(_) => "failed",
        }
    }
}

pub struct ModelEntry {
    pub spec: ModelSpec,
    /// Unix time the entry was registered (`created` in /v1/models).
    pub created: u64,
    state: RwLock<ModelState>,
    /// Removed by a reload: takes no new requests, unloads once idle.
    retired: std::sync::atomic::AtomicBool,
}

impl ModelEntry {
    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn state_name(&self) -> &'static str {
        self.state.read().name()
    }

    pub fn loaded(&self) -> Option<Arc<LoadedModel>> {
        match &*self.state.read() {
            ModelState::Loaded(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// Only the scheduler's owner task calls this.
    pub(crate) fn set(&self, state: ModelState) {
        *self.state.write() = state;
    }

    /// Takes the loaded model out (for unloading), leaving `Unloading`.
    pub(crate) fn take_loaded(&self) -> Option<Arc<LoadedModel>> {
        let mut state = self.state.write();
        match std::mem::replace(&mut *state, ModelState::Unloading) {
            ModelState::Loaded(m) => Some(m),
            other => {
                *state = other;
                None
            }
        }
    }
}

/// The catalogue. Append-only, so a model's index never changes: a reload
/// retires entries (they finish their work, then unload) and appends new ones.
pub struct Registry {
    entries: RwLock<Vec<Arc<ModelEntry>>>,
}

impl Registry {
    pub fn new(specs: Vec<ModelSpec>) -> Self {
        let registry = Self { entries: RwLock::new(Vec::new()) };
        for spec in specs {
            registry.push(spec);
        }
        registry
    }

    /// Appends a model; returns its index.
    pub(crate) fn push(&self, spec: ModelSpec) -> usize {
        let entry = ModelEntry {
            spec,
            created: crate::api::unix_now(),
            state: RwLock::new(ModelState::Unloaded),
            retired: std::sync::atomic::AtomicBool::new(false),
        };
        let mut entries = self.entries.write();
        entries.push(Arc::new(entry));
        entries.len() - 1
    }

    /// Every entry ever registered, retired ones included (index order).
    pub fn entries(&self) -> Vec<Arc<ModelEntry>> {
        self.entries.read().clone()
    }

    /// The models clients can use now.
    pub fn active(&self) -> Vec<Arc<ModelEntry>> {
        self.entries.read().iter().filter(|e| !e.is_retired()).cloned().collect()
    }

    /// Finds a model by id or alias, returning its index. With no name
    /// (llama-server clients often send none) the first active model answers.
    pub fn resolve(&self, name: Option<&str>) -> Result<usize, ApiError> {
        let entries = self.entries.read();
        let mut active = entries.iter().enumerate().filter(|(_, e)| !e.is_retired());
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None => active.next().map(|(i, _)| i).ok_or_else(|| ApiError::Unavailable("no model is registered".into())),
            Some(name) => active
                .find(|(_, e)| e.spec.id == name || e.spec.aliases.iter().any(|a| a == name))
                .map(|(i, _)| i)
                .ok_or_else(|| ApiError::ModelNotFound(name.to_string())),
        }
    }

    pub fn entry(&self, index: usize) -> Arc<ModelEntry> {
        self.entries.read()[index].clone()
    }

    /// Drops every loaded model (stops its worker thread, frees its memory).
    pub fn unload_all(&self) {
        for entry in self.entries.read().iter() {
            entry.set(ModelState::Unloaded);
        }
    }
}

/// Loads one model and its chat template (blocking: call off the runtime).
pub fn load_one(
    factory: &dyn EngineFactory,
    spec: &ModelSpec,
    placement: Option<&Placement>,
    progress: Progress,
) -> Result<LoadedModel, String> {
    // Read the template file before the (slow) load so a typo fails fast.
    let file_template = match &spec.chat_template_file {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read chat template file {}: {e}", path.display()))?,
            path.clone(),
        )),
        None => None,
    };
    let engine = factory.load(spec, placement, progress).map_err(|e| e.to_string())?;
    let (source, origin) = choose_template(file_template, engine.info());
    let info = engine.info();
    let template = ChatTemplate::new(&source, &info.bos_token, &info.eos_token)
        .map_err(|e| format!("chat template of model `{}` ({origin:?}): {e}", spec.id))?;
    Ok(LoadedModel { engine, template, template_source: source, template_origin: origin })
}

/// Built-in templates, used when neither a file nor the GGUF provides one.
pub const GEMMA3_TEMPLATE: &str = include_str!("../config/templates/gemma3.jinja");
pub const CHATML_TEMPLATE: &str = include_str!("../config/templates/chatml.jinja");

/// The one place that decides a model's chat template: `--chat-template-file`,
/// else the GGUF's `tokenizer.chat_template`, else a built-in chosen by the
/// architecture (Gemma 3 for `gemma3`, ChatML otherwise).
pub fn choose_template(file: Option<(String, PathBuf)>, info: &ModelInfo) -> (String, TemplateOrigin) {
    if let Some((source, path)) = file {
        return (source, TemplateOrigin::File(path));
    }
    if let Some(source) = info.chat_template.as_ref().filter(|s| !s.trim().is_empty()) {
        return (source.clone(), TemplateOrigin::Gguf);
    }
    match info.architecture.as_deref() {
        Some(arch) if arch.starts_with("gemma") => (GEMMA3_TEMPLATE.to_string(), TemplateOrigin::BuiltIn("gemma3")),
        _ => (CHATML_TEMPLATE.to_string(), TemplateOrigin::BuiltIn("chatml")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_id_is_the_file_stem_without_split_suffix() {
        assert_eq!(default_id(Path::new("models/gemma-3-270m-q4_k_m.gguf")), "gemma-3-270m-q4_k_m");
        assert_eq!(default_id(Path::new("/m/big-model-00001-of-00003.gguf")), "big-model");
    }

    fn info(arch: Option<&str>, template: Option<&str>) -> ModelInfo {
        ModelInfo {
            n_ctx_slot: 1,
            n_ctx_train: 1,
            parallel: 1,
            n_params: 0,
            size_bytes: 0,
            n_vocab: 1,
            bos_token: String::new(),
            eos_token: String::new(),
            add_bos: false,
            architecture: arch.map(str::to_string),
            chat_template: template.map(str::to_string),
        }
    }

    #[test]
    fn template_file_beats_gguf_beats_builtin() {
        let file = Some(("F".to_string(), PathBuf::from("t.jinja")));
        assert_eq!(choose_template(file, &info(None, Some("G"))).0, "F");
        assert_eq!(choose_template(None, &info(Some("gemma3"), Some("G"))).1, TemplateOrigin::Gguf);
        assert_eq!(choose_template(None, &info(Some("gemma3"), None)).1, TemplateOrigin::BuiltIn("gemma3"));
        assert_eq!(choose_template(None, &info(Some("llama"), None)).1, TemplateOrigin::BuiltIn("chatml"));
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

impl ModelSpec {
    /// The placement options for this model: the server's, with the model's
    /// overrides (`n_gpu_layers`, `devices`, `main_gpu`, `split_mode`,
    /// `tensor_split`) winning.
    pub fn placement_options(&self, server: &PlacementOptions) -> PlacementOptions {
        let g = &self.gpu;
        PlacementOptions {
            devices: g.devices.clone().or_else(|| server.devices.clone()),
            main_gpu: g.main_gpu.or(server.main_gpu),
            split_mode: g.split_mode.unwrap_or(server.split_mode),
            n_gpu_layers_override: self.n_gpu_layers,
            tensor_split_override: g.tensor_split.clone().or_else(|| server.tensor_split_override.clone()),
            // A model's own placement settings win over llama.cpp's fitter.
            use_fit_params: server.use_fit_params && self.n_gpu_layers.is_none() && *g == GpuOverrides::default(),
            ..server.clone()
        }
    }

    /// What a request's missing fields default to for this model.
    pub fn defaults(&self) -> crate::validate::Defaults {
        crate::validate::Defaults { sampling: self.sampling.clone(), max_tokens: self.max_tokens }
    }
}

impl LoadedModel {
    /// Renders a conversation with this model's chat template; a template
    /// error (including its own `raise_exception`) becomes a 400.
    pub fn render_chat(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        kwargs: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, ApiError> {
        let request = crate::template::RenderRequest {
            messages,
            add_generation_prompt,
            tools,
            extra: kwargs,
            now: None,
        };
        self.template.render(&request).map_err(|e| ApiError::Template(e.to_string()))
    }
}
