//! One validated `Config` from the command line, the TOML file and a models
//! folder. Precedence: a command-line flag beats the file's `[server]` key,
//! which beats the default below (the one place defaults live). Models:
//! `--model` beats `[[models]]` beats `--models-dir` when names collide.

pub mod draft;
pub mod file;
pub mod hub;
pub mod placement;
pub mod preset;
pub mod scan;
pub mod vertex;
mod models;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{parse_model_arg, ModelSources, ServerFlags};
use crate::scheduler::{Policy, SchedLimits};
use crate::gguf::KvCacheType;
use crate::types::{default_id, EngineKnobs, FlashAttn, JsonSchemaEngine, ModelSpec, SamplingField, SamplingParams};
use file::ConfigFile;
use models::{model_from_section, ModelDefaults, MIN_SLOT_CTX};
pub use vertex::VertexRoutes;

pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_PARALLEL: u32 = 4;
pub const DEFAULT_BATCH_SIZE: u32 = 512;
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_QUEUE: usize = 128;
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(120);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BODY_MIB: u32 = 16;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Host memory for saved KV caches (`--kv-cache-mib`).
pub const DEFAULT_KV_CACHE_MIB: u64 = 512;
/// Disk for saved KV caches when `--kv-cache-dir` is given.
pub const DEFAULT_KV_CACHE_DIR_MIB: u64 = 4096;
/// First retry delay after a failed load (doubles per failure).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// Server-wide settings after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Addresses to listen on (the same port on each).
    pub hosts: Vec<IpAddr>,
    pub port: u16,
    pub threads: Option<u32>,
    pub batch_size: u32,
    pub api_key: Option<String>,
    pub admin_token: Option<String>,
    pub memory_budget_mib: Option<u64>,
    /// Pinned host memory for sleeping GPU models (`None`: the default).
    pub sleep_mib: Option<u64>,
    /// Host KV cache budget (0: off).
    pub kv_cache_mib: u64,
    /// Where saved KV caches are also kept across restarts, and its budget.
    pub kv_cache_dir: Option<PathBuf>,
    pub kv_cache_dir_mib: u64,
    pub max_loaded_models: Option<usize>,
    pub policy: Policy,
    pub max_wait: Duration,
    pub max_queue: usize,
    /// Longest expected wait a request is admitted with (then 429).
    pub max_queue_wait: Duration,
    pub notify_swaps: bool,
    pub shutdown_grace: Duration,
    pub max_body_mib: u32,
    /// Connections served at once (before the open-files limit lowers it).
    pub max_connections: usize,
    /// Header-read (and idle keep-alive) timeout per connection.
    pub header_timeout: Duration,
    /// Browser origins allowed to call the API (`*`: any); empty: none.
    pub cors_origins: Vec<String>,
    /// Host names beyond the loopback ones and the bind address.
    pub allowed_hosts: Vec<String>,
    /// /metrics and /slots served (else 501, as llama-server's
    /// `--no-metrics` / `--no-slots`).
    pub metrics: bool,
    pub slots: bool,
    /// A request for a model that is not loaded loads it (else 400, as
    /// llama-server's `--no-models-autoload`).
    pub models_autoload: bool,
    /// `--strict-model-names`: a server of one model answers only its names.
    pub strict_model_names: bool,
    /// The dashboard at `/` (llama-server's `--no-ui` turns it off).
    pub ui: bool,
    /// llama-server's `--verbose`: debugging detail in answers (`__verbose`).
    pub verbose: bool,
    /// Vertex AI's prediction routes (`AIP_MODE=PREDICTION`).
    pub vertex: Option<VertexRoutes>,
    /// A JSON GPU inventory replacing NVML.
    pub gpus_from: Option<PathBuf>,
    pub placement: crate::gpu::PlacementOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub models: Vec<ModelSpec>,
    /// The config file, when one was read (for /admin/reload).
    pub file: Option<PathBuf>,
    /// What a model added at run time gets (`hub_model`).
    defaults: ModelDefaults,
}

impl Config {
    pub fn load(sources: &ModelSources, flags: &ServerFlags) -> Result<Config, String> {
        let (file, file_path) = match &sources.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None => (ConfigFile::default(), None),
        };
        let s = &file.server;
        flags.llama.unsupported()?;
        let vertex = vertex::from_env(|name| std::env::var(name).ok())?;
        let server = ServerConfig {
            hosts: match (&flags.host[..], s.host) {
                ([], from_file) => vec![from_file.unwrap_or(DEFAULT_HOST)],
                (given, _) => given.to_vec(),
            },
            // Vertex AI says where to listen.
            port: vertex.as_ref().and_then(|(_, port)| *port).or(flags.port).or(s.port).unwrap_or(DEFAULT_PORT),
            threads: flags.threads.or(s.threads),
            batch_size: flags.batch_size.or(s.batch_size).unwrap_or(DEFAULT_BATCH_SIZE),
            api_key: secret("api_key", flags.api_key.clone().or_else(|| s.api_key.clone()), flags.api_key_file.as_deref())?,
            admin_token: secret("admin_token", flags.admin_token.clone().or_else(|| s.admin_token.clone()), None)?,
            memory_budget_mib: flags.memory_budget_mib.or(s.memory_budget_mib),
            sleep_mib: flags.sleep_mib.or(s.sleep_mib),
            kv_cache_mib: flags.kv_cache_mib.or(flags.llama.cache_ram_mib()).or(s.kv_cache_mib).unwrap_or(DEFAULT_KV_CACHE_MIB),
            kv_cache_dir: flags.kv_cache_dir.clone().or_else(|| s.kv_cache_dir.as_ref().map(|p| config_dir_of(&file_path).join(p))),
            kv_cache_dir_mib: flags.kv_cache_dir_mib.or(s.kv_cache_dir_mib).unwrap_or(DEFAULT_KV_CACHE_DIR_MIB),
            max_loaded_models: match flags.llama.models_max {
                Some(0) => None,
                max => flags.max_loaded_models.or(max).or(s.max_loaded_models).map(|n| n as usize),
            },
            policy: flags.policy.or(s.policy).unwrap_or_default(),
            max_wait: flags.max_wait.or(s.max_wait).unwrap_or(DEFAULT_MAX_WAIT),
            max_queue: flags.max_queue.or(s.max_queue).map_or(DEFAULT_MAX_QUEUE, |n| n as usize),
            max_queue_wait: flags.max_queue_wait.or(s.max_queue_wait).unwrap_or(DEFAULT_MAX_QUEUE_WAIT),
            notify_swaps: flags.notify_swaps.or(s.notify_swaps).unwrap_or(false),
            shutdown_grace: flags.shutdown_grace.or(s.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            max_body_mib: flags.max_body_mib.or(s.max_body_mib).unwrap_or(DEFAULT_MAX_BODY_MIB),
            max_connections: flags.max_connections.or(s.max_connections).map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            header_timeout: flags.header_timeout.or(s.header_timeout).unwrap_or(DEFAULT_HEADER_TIMEOUT),
            cors_origins: flags.cors_origins.clone().or_else(|| s.cors_origins.clone()).unwrap_or_default(),
            allowed_hosts: flags.allowed_hosts.clone().or_else(|| s.allowed_hosts.clone()).unwrap_or_default(),
            metrics: !flags.llama.no_metrics,
            slots: !flags.llama.no_slots,
            models_autoload: !flags.llama.no_models_autoload,
            strict_model_names: flags.strict_model_names,
            ui: !(flags.llama.no_ui || flags.llama.no_webui),
            verbose: flags.llama.verbose,
            vertex: vertex.map(|(routes, _)| routes),
            gpus_from: flags.gpu.gpus_from.clone().or_else(|| s.gpus_from.as_ref().map(|p| config_dir_of(&file_path).join(p))),
            placement: placement::server_options(&flags.gpu, s),
        };
        let origin = file_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        check_server(&server, &origin)?;

        // Per-model defaults: flag, then [server] key, then built-in.
        let base = ModelDefaults {
            ctx_size: flags.ctx_size.or(s.ctx_size),
            parallel: flags.parallel.or(s.parallel).unwrap_or(DEFAULT_PARALLEL),
            parallel_given: flags.parallel.or(s.parallel).is_some(),
            kv_unified: flags.llama.kv_unified().or(s.kv_unified),
            n_gpu_layers: flags.n_gpu_layers.or(s.n_gpu_layers),
            chat_template_file: flags.chat_template_file.clone().or_else(|| s.chat_template_file.clone()),
            chat_template: flags.llama.chat_template.clone().or_else(|| s.chat_template.clone()),
            tags: flags.llama.tags.as_deref().map(comma_list).unwrap_or_default(),
            swa_full: flags.swa_full.or(s.swa_full).unwrap_or(false),
            json_schema_engine: match flags.json_schema_engine {
                Some(e) => json_schema_engine(e, "--json-schema-engine")?,
                None => json_schema_engine(s.json_schema_engine.unwrap_or_default(), &format!("{origin}: [server] json_schema_engine"))?,
            },
            knobs: knobs(&flags_knobs(flags), &s.knob_keys(), EngineKnobs::default(), &format!("{origin}: [server]"))?,
            sampling: server_sampling(flags)?,
            max_tokens: flags.llama.n_predict(),
            ttl: flags.llama.sleep_idle_seconds.map(Duration::from_secs),
            draft: flags.llama.model_draft.as_deref().map(|p| draft::given(&p.to_string_lossy(), Path::new(""), true)),
        };
        let config_dir = config_dir_of(&file_path);
        let mut models = Models::default();
        let models_dir = sources.models_dir.clone().or_else(|| s.models_dir.as_ref().map(|d| config_dir.join(d)));
        if let Some(dir) = models_dir {
            for path in scan::scan_models_dir(&dir)? {
                models.add(base.spec(default_id(&path), path), Source::Dir, "--models-dir")?;
            }
        }
        for (i, section) in file.models.iter().enumerate() {
            let at = format!("{origin}: models[{i}] (`{}`)", section.name);
            let spec = model_from_section(section, &base, &config_dir, &at)?;
            models.add(spec, Source::File, &at)?;
        }
        if let Some(file) = flags.llama.models_preset.as_deref().map(Path::new) {
            // llama-server's preset INI: one more list of [[models]] entries.
            let dir = file.parent().unwrap_or(Path::new("."));
            for section in preset::read(file)? {
                let at = format!("--models-preset {}: [{}]", file.display(), section.name);
                let spec = model_from_section(&section, &base, dir, &at)?;
                models.add(spec, Source::File, &at)?;
            }
        }
        let hf = flags.llama.hf_repo.as_deref();
        if sources.alias.is_some() && sources.model.len() + usize::from(hf.is_some()) != 1 {
            return Err("--alias names a single --model; with several, write --model NAME=PATH".into());
        }
        if flags.llama.hf_file.is_some() && hf.is_none() {
            return Err("--hf-file names a file of the --hf-repo repository: give --hf-repo too".into());
        }
        let cache = crate::hub::cache_dir();
        if let Some(repo) = hf {
            let (id, path) = hub::hf_model(repo, flags.llama.hf_file.as_deref(), cache.as_deref())?;
            let spec = named(base.spec(id, path), sources.alias.as_deref());
            models.add(spec, Source::Cli, &format!("--hf-repo {repo}"))?;
        }
        for value in &sources.model {
            let (name, path) = parse_model_arg(value);
            let spec = match name {
                Some(id) => base.spec(id, path),
                None => named(base.spec(default_id(&path), path), sources.alias.as_deref()),
            };
            models.add(spec, Source::Cli, &format!("--model {value}"))?;
        }
        // Nothing named a model: serve the Hugging Face cache's models, as
        // llama-server's router does when started without one.
        if models.list.is_empty() {
            for (id, path) in hub::cached(cache.as_deref()) {
                models.add(base.spec(id, path), Source::Dir, "the Hugging Face cache")?;
            }
        }
        let models = models.finish()?;
        if models.is_empty() {
            let cache = cache.map_or_else(|| "no cache folder".to_string(), |c| c.display().to_string());
            return Err(format!(
                "no model to serve: give --model PATH, -hf owner/repo[:QUANT], --models-dir DIR or a --config with [[models]] \
                 (the Hugging Face cache, {cache}, holds no GGUF model either)"
            ));
        }
        // A step gives each generating slot one token: a batch smaller than
        // the slots would leave the last ones waiting every step.
        if let Some(m) = models.iter().find(|m| m.parallel > server.batch_size) {
            return Err(format!(
                "--batch-size {} is smaller than the {} slots (--parallel) of model `{}`: raise --batch-size or lower --parallel",
                server.batch_size, m.parallel, m.id
            ));
        }
        if let Some(m) = models.iter().find(|m| m.ctx_size.is_some_and(|c| c < MIN_SLOT_CTX)) {
            return Err(format!(
                "--ctx-size split across the {} slots (--parallel) of model `{}` leaves {} tokens per slot (at least {MIN_SLOT_CTX}): \
                 raise --ctx-size, lower --parallel or give --kv-unified",
                m.parallel,
                m.id,
                m.ctx_size.unwrap_or(0)
            ));
        }
        Ok(Config { server, models, file: file_path, defaults: base })
    }

    /// A model of the hub named at run time (llama-server's `POST /models`),
    /// with the server's per-model defaults: its cached file, or where it
    /// will be with the source to fetch.
    pub fn hub_model(&self, name: &str) -> Result<ModelSpec, String> {
        let id = crate::hub::RepoTag::parse(name)?.name();
        let (path, fetch) = hub::hub_entry(name, None, crate::hub::cache_dir().as_deref())?;
        let mut spec = self.defaults.spec(id, path);
        spec.tags = Vec::new();
        spec.fetch = fetch;
        // `--model-draft` (a file) drafts for it too.
        draft::resolve(std::slice::from_mut(&mut spec), &[format!("model `{name}`")])?;
        Ok(spec)
    }
}

impl ServerConfig {
    /// The GPU inventory named by the config (a JSON file, else NVML), probed
    /// once; `gpus()` refreshes its figures on every call.
    pub fn gpu_inventory(&self) -> Result<std::sync::Arc<dyn crate::gpu::GpuInventory>, String> {
        crate::gpu::detect(self.gpus_from.as_deref()).map(std::sync::Arc::from).map_err(|e| e.to_string())
    }

    /// Scheduler settings. The budget is host memory (--memory-budget-mib,
    /// else 75% of what is available); GPUs are budgeted per GPU from their
    /// free memory by the scheduler itself. When GPU models can sleep here
    /// (`gpu_sleep`: GPUs, a GPU build and the sleep shim), sleeping models
    /// may pin --sleep-mib (else a quarter of what is available, which the
    /// default host budget then leaves out: pinned memory is not swappable).
    pub fn sched_limits(&self, gpu_sleep: bool) -> SchedLimits {
        let available = available_bytes();
        let sleep_bytes = match (self.sleep_mib, gpu_sleep, available) {
            (Some(mib), _, _) => mib << 20,
            (None, true, Some(available)) => available / 4,
            _ => 0,
        };
        let default_budget = || {
            let budget = default_cpu_budget_bytes();
            if self.sleep_mib.is_none() { budget.saturating_sub(sleep_bytes).max(1 << 30) } else { budget }
        };
        SchedLimits {
            sleep: crate::scheduler::sleep::SleepLimits { budget_bytes: sleep_bytes, ..Default::default() },
            budget_bytes: self.memory_budget_mib.map_or_else(default_budget, |m| m << 20),
            max_loaded: self.max_loaded_models,
            max_wait: self.max_wait,
            max_queue: self.max_queue,
            max_queue_wait: Some(self.max_queue_wait),
            policy: self.policy,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            autoload: self.models_autoload,
            any_model_name: !self.strict_model_names,
        }
    }
}

/// Default budget on a CPU-only machine: 75% of the memory available now
/// (`MemAvailable`), so the OS and page cache keep the rest.
pub fn default_cpu_budget_bytes() -> u64 {
    available_bytes().map_or(8 << 30, |b| b / 4 * 3)
}

/// The memory available now (`MemAvailable`), if the kernel says.
fn available_bytes() -> Option<u64> {
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    available_kib.map(|kib| kib * 1024)
}

fn config_dir_of(file: &Option<PathBuf>) -> PathBuf {
    file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

fn read_file(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_server(s: &ServerConfig, origin: &str) -> Result<(), String> {
    let at = if origin.is_empty() { String::new() } else { format!("{origin}: ") };
    if s.batch_size < 1 {
        return Err(format!("{at}[server] batch_size must be at least 1 (got {})", s.batch_size));
    }
    if s.placement.use_fit_params && s.gpus_from.is_some() {
        return Err(format!(
            "{at}use_fit_params (--use-fit-params) asks llama.cpp, which sees this machine's GPUs, \
             not the gpus_from (--gpus-from) list: use one or the other"
        ));
    }
    for origin in &s.cors_origins {
        if origin != "*" && origin != "localhost" && !is_origin(origin) {
            return Err(format!("{at}cors_origins: `{origin}` is not an origin like http://localhost:3000 (or `*`, or `localhost`: any loopback page)"));
        }
    }
    if s.max_queue == 0 {
        return Err(format!("{at}[server] max_queue must be at least 1"));
    }
    if s.memory_budget_mib == Some(0) {
        return Err(format!("{at}[server] memory_budget_mib must be at least 1"));
    }
    if s.max_loaded_models == Some(0) {
        return Err(format!("{at}[server] max_loaded_models must be at least 1"));
    }
    if s.max_queue_wait.is_zero() {
        return Err(format!("{at}[server] max_queue_wait must be longer than 0"));
    }
    if s.max_connections == 0 {
        return Err(format!("{at}[server] max_connections must be at least 1"));
    }
    if s.header_timeout.is_zero() {
        return Err(format!("{at}[server] header_timeout must be longer than 0"));
    }
    Ok(())
}

/// The JSON-schema engine asked for (default: llama.cpp's), refused at
/// startup when this binary was built without it.
fn json_schema_engine(engine: JsonSchemaEngine, at: &str) -> Result<JsonSchemaEngine, String> {
    if engine == JsonSchemaEngine::Llguidance && !cfg!(feature = "llguidance") {
        return Err(format!(
            "{at}: `llguidance` needs a vram-llm built with `cargo build --release --features llguidance`; \
             this one was built without it (use `llama`, the default)"
        ));
    }
    Ok(engine)
}

/// The flags' engine knobs in the keys' shape (flags win over keys).
/// Request sampling defaults from llama-server's `--temp` and `--seed`.
fn server_sampling(flags: &ServerFlags) -> Result<SamplingParams, String> {
    let mut p = SamplingParams::default();
    if let Some(t) = flags.llama.temp {
        SamplingField::Temperature.check(t.into()).map_err(|rule| format!("--temp {rule}"))?;
        p.temperature = t;
    }
    p.seed = flags.llama.seed();
    Ok(p)
}

fn flags_knobs(f: &ServerFlags) -> file::KnobKeys {
    file::KnobKeys {
        flash_attn: f.flash_attn,
        cache_type_k: f.cache_type_k.map(|t| t.name().to_string()),
        cache_type_v: f.cache_type_v.map(|t| t.name().to_string()),
        threads_batch: f.threads_batch,
        ubatch_size: f.ubatch_size,
        ctx_checkpoints: f.ctx_checkpoints,
        mlock: f.mlock,
        no_mmap: f.no_mmap,
        context_shift: f.context_shift,
        pooling: f.pooling,
        embeddings_only: f.embeddings_only.or(f.llama.embedding.then_some(true)),
        reasoning: f.reasoning,
        reasoning_format: f.reasoning_format,
        spec_type: f.spec_type,
        spec_draft_n_max: f.spec_draft_n_max,
        spec_draft_n_min: f.spec_draft_n_min,
        spec_ngram_simple_size_n: f.spec_ngram_simple_size_n,
        spec_draft_p_min: f.spec_draft_p_min,
    }
}

/// Engine knobs: `first` wins over `then`, which wins over `base`. A cache
/// type must be one llama.cpp knows, and a quantized V cache needs flash
/// attention.
fn knobs(first: &file::KnobKeys, then: &file::KnobKeys, base: EngineKnobs, at: &str) -> Result<EngineKnobs, String> {
    let cache_type = |key: &str, given: Option<&String>, base: KvCacheType| match given {
        None => Ok(base),
        Some(name) => KvCacheType::from_name(name).ok_or_else(|| {
            format!("{at}: {key} `{name}` is not a KV cache type (f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl)")
        }),
    };
    let k = cache_type("cache_type_k", first.cache_type_k.as_ref().or(then.cache_type_k.as_ref()), base.cache_type_k)?;
    let v = cache_type("cache_type_v", first.cache_type_v.as_ref().or(then.cache_type_v.as_ref()), base.cache_type_v)?;
    let out = EngineKnobs {
        flash_attn: first.flash_attn.or(then.flash_attn).unwrap_or(base.flash_attn),
        cache_type_k: k,
        cache_type_v: v,
        threads_batch: first.threads_batch.or(then.threads_batch).or(base.threads_batch),
        ubatch_size: first.ubatch_size.or(then.ubatch_size).or(base.ubatch_size),
        ctx_checkpoints: first.ctx_checkpoints.or(then.ctx_checkpoints).or(base.ctx_checkpoints),
        mlock: first.mlock.or(then.mlock).unwrap_or(base.mlock),
        no_mmap: first.no_mmap.or(then.no_mmap).unwrap_or(base.no_mmap),
        context_shift: first.context_shift.or(then.context_shift).unwrap_or(base.context_shift),
        pooling: first.pooling.or(then.pooling).or(base.pooling),
        embeddings_only: first.embeddings_only.or(then.embeddings_only).unwrap_or(base.embeddings_only),
        reasoning: first.reasoning.or(then.reasoning).unwrap_or(base.reasoning),
        reasoning_format: first.reasoning_format.or(then.reasoning_format).unwrap_or(base.reasoning_format),
        spec: crate::types::SpecConfig {
            kind: first.spec_type.or(then.spec_type).unwrap_or(base.spec.kind),
            n_max: first.spec_draft_n_max.or(then.spec_draft_n_max).or(base.spec.n_max),
            n_min: first.spec_draft_n_min.or(then.spec_draft_n_min).or(base.spec.n_min),
            size_n: first.spec_ngram_simple_size_n.or(then.spec_ngram_simple_size_n).or(base.spec.size_n),
            p_min: first.spec_draft_p_min.or(then.spec_draft_p_min).or(base.spec.p_min),
        },
    };
    let quantized = |t: KvCacheType| !matches!(t, KvCacheType::F16 | KvCacheType::BF16 | KvCacheType::F32);
    if quantized(out.cache_type_v) && out.flash_attn == FlashAttn::Off {
        return Err(format!("{at}: a quantized cache_type_v needs flash attention (flash_attn on or auto)"));
    }
    if let Some(Err(rule)) = out.spec.p_min.map(|p| crate::types::SpecConfig::check_p_min(p.into())) {
        return Err(format!("{at}: spec_draft_p_min {rule}"));
    }
    if out.threads_batch == Some(0) || out.ubatch_size == Some(0) {
        return Err(format!("{at}: threads_batch and ubatch_size must be at least 1"));
    }
    Ok(out)
}

/// A key or token: given, read from a file, or absent. Empty is an error,
/// never "no authentication" (`--api-key ""`, `VRAM_LLM_API_KEY=`).
fn secret(name: &str, given: Option<String>, file: Option<&Path>) -> Result<Option<String>, String> {
    let value = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string())
        }
        None => given,
    };
    match value {
        Some(v) if v.trim().is_empty() => {
            Err(format!("{name} is empty: an empty key would turn authentication off; leave it unset for no authentication"))
        }
        other => Ok(other),
    }
}

/// A browser origin as browsers send it: `http(s)://host[:port]`, nothing after.
fn is_origin(s: &str) -> bool {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|host| {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
    })
}

/// `a, b ,c` as `["a", "b", "c"]` (empty items dropped).
fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// `--alias a,b,c` on `spec`, as llama-server reads it: the model answers to
/// each name, and the first in alphabetical order is its id.
fn named(mut spec: ModelSpec, alias: Option<&str>) -> ModelSpec {
    let mut names = alias.map(comma_list).unwrap_or_default();
    names.sort();
    names.dedup();
    if !names.is_empty() {
        spec.id = names.remove(0);
        spec.aliases = names;
    }
    spec
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Dir,
    File,
    Cli,
}

/// Collects models from the three sources, applying the precedence rule.
#[derive(Default)]
struct Models {
    list: Vec<(ModelSpec, Source, String)>,
}

impl Models {
    fn add(&mut self, spec: ModelSpec, source: Source, at: &str) -> Result<(), String> {
        if let Some(i) = self.list.iter().position(|(s, _, _)| s.id == spec.id) {
            let (_, existing, first_at) = &self.list[i];
            if *existing == source {
                return Err(format!("{at}: the name `{}` is already used by {first_at}", spec.id));
            }
            // A later (higher) source replaces a lower one of the same name.
            self.list.remove(i);
        }
        self.list.push((spec, source, at.to_string()));
        Ok(())
    }

    fn finish(self) -> Result<Vec<ModelSpec>, String> {
        let at: Vec<String> = self.list.iter().map(|(_, _, at)| at.clone()).collect();
        let mut specs = self.check()?;
        draft::resolve(&mut specs, &at)?;
        Ok(specs)
    }

    fn check(self) -> Result<Vec<ModelSpec>, String> {
        let mut names: HashMap<String, String> = HashMap::new();
        for (spec, _, at) in &self.list {
            if spec.fetch.is_none() && !spec.path.is_file() {
                return Err(format!("{at}: path `{}`: no such file", spec.path.display()));
            }
            if let Some(t) = &spec.chat_template_file {
                if !t.is_file() {
                    return Err(format!("{at}: chat_template_file `{}`: no such file", t.display()));
                }
            }
            for name in std::iter::once(&spec.id).chain(&spec.aliases) {
                if name.trim().is_empty() {
                    return Err(format!("{at}: model names and aliases must not be empty"));
                }
                if let Some(other) = names.insert(name.clone(), at.clone()) {
                    return Err(format!("{at}: the name or alias `{name}` is already used by {other}"));
                }
            }
        }
        Ok(self.list.into_iter().map(|(spec, _, _)| spec).collect())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
