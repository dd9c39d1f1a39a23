//! Command-line interface (clap types only).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod llama_flags;
pub use llama_flags::{normalize_args, LlamaServerFlags};

#[derive(Debug, Parser)]
#[command(
    name = "vram-llm",
    version = crate::build_info::LONG_VERSION,
    about = "Serve GGUF models (local files or from the Hugging Face hub) in-process over the OpenAI API",
    long_about = "Serve GGUF models (local files or from the Hugging Face hub) in-process over the OpenAI API.\n\n\
        vram-llm links llama.cpp directly: models are loaded into this process (no child servers) \
        and every loaded model decodes its requests with continuous batching.\n\n\
        Example:\n  vram-llm serve --model models/gemma-3-270m-q4_k_m.gguf\n  \
        curl localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` (colours only on a terminal) or `json` (one
    /// object per line); `RUST_LOG` sets the levels (default
    /// `info,llama-cpp-2=warn`; every request is one `vram_llm::request`
    /// line at info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VRAM_LLM_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI-compatible API for the registered models (loaded on
    /// demand, kept while they fit in GPU memory and the memory budget).
    Serve(ServeArgs),
    /// Print the configured models (from --config, --models-dir and --model)
    /// with each model's estimated memory, without loading anything.
    Models(ModelsArgs),
    /// Print the GPU inventory (NVML, or --gpus-from FILE).
    Gpus(GpusArgs),
    /// Print where a model would be placed (GPUs, tensor_split, offloaded
    /// layers) without loading anything.
    Plan(PlanArgs),
    /// Download a model from the Hugging Face hub into the cache that
    /// llama.cpp and huggingface_hub share (a model already there is not
    /// downloaded again); prints its path last.
    Pull(PullArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// owner/repo[:QUANT]: QUANT picks the file (Q4_K_M, then Q8_0, then
    /// the first model file when none is given); a split model comes whole.
    /// Or an https:// URL of a GGUF file (into the cache folder's urls/).
    #[arg(value_name = "OWNER/REPO[:QUANT]|URL")]
    pub model: String,
    /// This file of the repository instead of a QUANT's.
    #[arg(long, value_name = "FILE")]
    pub hf_file: Option<String>,
    /// Use the cache alone: download nothing (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GpusArgs {
    /// Read the inventory from a JSON file instead of NVML: a list in CUDA
    /// order of {"index", "name", "total_mib", "free_mib"} (optional "uuid",
    /// "utilization", "used_mib").
    #[arg(long, value_name = "FILE")]
    pub gpus_from: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// The GGUF model to place.
    #[arg(short = 'm', long, value_name = "PATH")]
    pub model: PathBuf,
    /// The model's KV context as `serve -c` reads it: split across the slots
    /// when --parallel is given, else each of the 4 slots may use all of it
    /// [default: training context, capped at 4096, per slot].
    #[arg(short = 'c', long, value_name = "TOKENS")]
    pub ctx_size: Option<u32>,
    /// Sequence slots [default: 4].
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: Option<u32>,
    /// Size the KV cache of sliding-window layers at full size, as `serve
    /// --swa-full` does (by default they hold only their window).
    #[arg(long)]
    pub swa_full: bool,
    #[command(flatten)]
    pub gpus: GpuFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// GPU placement flags.
#[derive(Debug, Args, Clone, Default)]
pub struct GpuFlags {
    /// Read the GPU inventory from this JSON file instead of NVML.
    #[arg(long, value_name = "FILE")]
    pub gpus_from: Option<PathBuf>,
    /// MiB kept free on every GPU [default: 1024].
    #[arg(long, value_name = "MIB")]
    pub reserve_mib: Option<u64>,
    /// Use only these GPUs (physical CUDA indices, e.g. 0,2).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub devices: Option<Vec<u32>>,
    /// `free_desc`: the GPU with the most free memory becomes the main GPU;
    /// `index`: by index [default: free_desc].
    #[arg(long, value_name = "ORDER")]
    pub device_order: Option<crate::gpu::DeviceOrder>,
    /// `layer` (split layers across GPUs), `row` (split tensors by rows) or
    /// `none` (one GPU) [default: layer].
    #[arg(long, value_name = "MODE")]
    pub split_mode: Option<crate::gpu::SplitMode>,
    /// Split even a model that fits on one GPU across all selected GPUs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub spread: Option<bool>,
    /// Force the main GPU (physical index).
    #[arg(long, value_name = "INDEX")]
    pub main_gpu: Option<u32>,
    /// Let llama.cpp's own fitter (common_fit_params) choose n_gpu_layers and
    /// tensor_split at load time, keeping --reserve-mib free per device. The
    /// scheduler still budgets with its own plan until the load is measured.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_fit_params: Option<bool>,
}

/// Where models come from. They merge: `--model` beats `[[models]]` in the
/// config file, which beats `--models-dir`, when names collide.
#[derive(Debug, Args, Clone, Default)]
pub struct ModelSources {
    /// TOML config file: `[server]` settings and a `[[models]]` list (see
    /// config/vram-llm.toml). Command-line flags win over the file.
    #[arg(long, value_name = "FILE", env = "VRAM_LLM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Register every .gguf below DIR (recursively; mmproj* files skipped,
    /// split files -00001-of-0000N.gguf registered once), named by file stem.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// GGUF model file to serve (for split models, the first part). Repeat
    /// to register several; `NAME=PATH` names one, else its name is the file
    /// stem (models/gemma-3-270m-q4_k_m.gguf -> gemma-3-270m-q4_k_m). An
    /// https:// URL is downloaded at startup (once) into the cache folder.
    #[arg(short = 'm', long, value_name = "[NAME=]PATH|URL")]
    pub model: Vec<String>,

    /// Name clients use for the model, when exactly one --model is given;
    /// several, comma-separated, as llama-server takes them: the model
    /// answers to each, and the first in alphabetical order is its id.
    #[arg(short = 'a', long, value_name = "NAME[,NAME...]")]
    pub alias: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub sources: ModelSources,
    #[command(flatten)]
    pub server: ServerFlags,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub sources: ModelSources,
    #[command(flatten)]
    pub server: ServerFlags,
}

/// Server settings. Each has the same-named key in the config file's
/// `[server]` table (dashes become underscores); a flag given here wins.
/// Defaults live in src/config (one place) and are repeated in the help.
#[derive(Debug, Args, Clone, Default)]
pub struct ServerFlags {
    /// Address to listen on [default: 127.0.0.1]; several, comma-separated
    /// (127.0.0.1,::1), as llama-server takes them. 0.0.0.0 listens on every
    /// interface (set --api-key then).
    #[arg(long, env = "VRAM_LLM_HOST", value_delimiter = ',', value_name = "ADDR[,ADDR...]")]
    pub host: Vec<IpAddr>,

    /// Port to listen on [default: 8080]; 0 picks a free one and logs it.
    #[arg(long, env = "VRAM_LLM_PORT")]
    pub port: Option<u16>,

    /// The model's context in tokens (prompt + output), as llama-server's -c:
    /// with --parallel given it is split evenly across the slots (-c 8192
    /// -np 4: 2048 tokens per request); without, each slot may use all of
    /// it (--kv-unified, llama-server's default then) [default: the model's
    /// training context, capped at 4096, per slot]. Per-model `ctx_size` in
    /// the config wins.
    #[arg(short = 'c', long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: Option<u32>,

    /// Sequence slots each model decodes together (continuous batching);
    /// more requests wait in a queue [default: 4].
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: Option<u32>,

    /// CPU threads llama.cpp uses [default: all cores].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,

    /// CPU threads for prompt processing [default: --threads].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads_batch: Option<u32>,

    /// Micro-batch: tokens computed per step within a batch; with the
    /// context it sizes the compute buffer [default: min(batch-size, 512)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ubatch_size: Option<u32>,

    /// Flash attention: `auto` lets llama.cpp decide (on for CPU and CUDA)
    /// [default: auto].
    #[arg(long, value_enum, value_name = "on|off|auto")]
    pub flash_attn: Option<crate::types::FlashAttn>,

    /// KV cache type for K: f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0,
    /// iq4_nl (smaller types fit longer contexts, at some quality) [default: f16].
    #[arg(long, value_name = "TYPE", value_parser = parse_cache_type)]
    pub cache_type_k: Option<crate::gguf::KvCacheType>,

    /// KV cache type for V (quantized V needs flash attention) [default: f16].
    #[arg(long, value_name = "TYPE", value_parser = parse_cache_type)]
    pub cache_type_v: Option<crate::gguf::KvCacheType>,

    /// Pin model weights in RAM (mlock) so the kernel never pages them out;
    /// needs a high enough `ulimit -l` [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub mlock: Option<bool>,

    /// Read weights into memory instead of mapping the GGUF file: slower
    /// loads, but a file replaced on disk cannot affect a loaded model
    /// [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_mmap: Option<bool>,

    /// When a generation fills its slot's context, drop the older half of
    /// the slot (keeping BOS) and go on, as llama-server's `--context-shift`,
    /// instead of finishing with `length`. Only requests with `max_tokens`
    /// (or a model default) shift, so none runs forever; models whose memory
    /// cannot shift (recurrent) finish as before [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub context_shift: Option<bool>,

    /// How embeddings pool a sequence's token vectors: mean, cls or last;
    /// none answers a vector per token on /embeddings (and a 400 on
    /// /v1/embeddings) [default: the GGUF's `pooling_type`; mean where it
    /// names none, as for decoder models]. Per-model `pooling` in the
    /// config wins.
    #[arg(long, value_enum, value_name = "mean|cls|last|none")]
    pub pooling: Option<crate::types::Pooling>,

    /// Models serve embeddings only: chat and text completions answer 400
    /// [default: false]. Per-model `embeddings_only` in the config wins.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub embeddings_only: Option<bool>,

    /// Thinking in chat templates that can think (Qwen3, DeepSeek R1,
    /// gpt-oss...): `on` and `auto` tell the template `enable_thinking:
    /// true` (so it opens its thinking block), `off` tells it `false`, as
    /// llama-server's `--reasoning`. A request's `chat_template_kwargs.enable_thinking`
    /// wins [default: auto]. Per-model `reasoning` in the config wins.
    #[arg(long, value_enum, value_name = "on|off|auto")]
    pub reasoning: Option<crate::types::Reasoning>,

    /// Where a thinking model's `<think>` block goes: `deepseek` (or
    /// `auto`) to `message.reasoning_content`, `none` leaves it in the
    /// content, as llama-server's `--reasoning-format`. A request's
    /// `reasoning_format` wins [default: auto]. Per-model
    /// `reasoning_format` in the config wins.
    #[arg(long, value_enum, value_name = "auto|deepseek|none")]
    pub reasoning_format: Option<crate::types::ReasoningFormat>,

    /// Speculative decoding, as llama-server's `--spec-type`: `ngram-simple`
    /// drafts, after each token, what followed the last
    /// `--spec-ngram-simple-size-n` tokens the last time they occurred in the
    /// prompt or the answer; `draft-simple` lets the draft model
    /// (`--model-draft`, a model's `draft` key) draft greedily. The model
    /// checks the draft in the same decode. Output is unchanged (each token
    /// is still sampled from the model; only a near tie may round the other
    /// way, see README); answers that repeat their context
    /// (or that the draft model guesses) come faster. A slot whose drafts
    /// keep failing pauses drafting [default: none; draft-simple for models
    /// with a draft model]. Per-model `spec_type` in the config wins.
    #[arg(long, value_enum, value_name = "none|ngram-simple|draft-simple")]
    pub spec_type: Option<crate::types::SpecType>,

    /// Longest draft; a slot's n-gram drafts start at 16 tokens (or as
    /// long as the repeat they continue has lasted), double while they are
    /// accepted whole and halve when cut short [default: 64 for
    /// ngram-simple, as llama-server's ngram-mod; 3 for a draft model, as
    /// llama-server].
    #[arg(long, value_name = "N")]
    pub spec_draft_n_max: Option<u32>,

    /// Shorter drafts are not tried [default: 0].
    #[arg(long, value_name = "N")]
    pub spec_draft_n_min: Option<u32>,

    /// Tokens `ngram-simple` matches before drafting [default: 12].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub spec_ngram_simple_size_n: Option<u32>,

    /// A draft model's draft ends at a token it gives less than this
    /// probability [default: 0, as llama-server: drafts go on to
    /// --spec-draft-n-max].
    #[arg(long, value_name = "P", value_parser = probability)]
    pub spec_draft_p_min: Option<f32>,

    /// What enforces JSON schemas (`response_format`, `json_schema`):
    /// `llama` turns them into GBNF for llama.cpp's grammar sampler, as
    /// llama-server does; `llguidance` hands them to llguidance (needs a
    /// binary built with `--features llguidance`; its schema dialect differs
    /// a little, see docs/api.md). GBNF `grammar` fields and tool-call
    /// grammars always use llama.cpp's sampler [default: llama]. Per-model
    /// `json_schema_engine` in the config wins.
    #[arg(long, value_enum, value_name = "llama|llguidance", env = "VRAM_LLM_JSON_SCHEMA_ENGINE")]
    pub json_schema_engine: Option<crate::types::JsonSchemaEngine>,

    /// Most tokens decoded in one step; long prompts are fed in chunks; at
    /// least --parallel, so every slot generates in each step [default: 512].
    #[arg(short = 'b', long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,

    /// Layers to offload to the GPU (CUDA builds only) [default: all].
    #[arg(long = "n-gpu-layers", alias = "ngl", value_name = "N")]
    pub n_gpu_layers: Option<u32>,

    /// Jinja chat template for every model that has no `chat_template_file`
    /// of its own [default: the GGUF's tokenizer.chat_template, else a
    /// built-in one: Gemma 3 for gemma models, ChatML otherwise].
    #[arg(long, value_name = "PATH")]
    pub chat_template_file: Option<PathBuf>,

    /// Require `Authorization: Bearer KEY` on every endpoint except /health.
    /// A flag shows in `ps`: prefer the environment or --api-key-file. An
    /// empty key is refused (it would turn authentication off).
    #[arg(long, env = "VRAM_LLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Read the API key from this file (its first line); wins over
    /// --api-key, VRAM_LLM_API_KEY and the config's api_key.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Enable the admin API (/admin/*) with this token (`Authorization:
    /// Bearer TOKEN` or `X-Admin-Token: TOKEN`).
    #[arg(long, env = "VRAM_LLM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Host memory the loaded models may use together, in MiB; without GPUs,
    /// models stay loaded while their footprints fit. With GPUs each GPU is
    /// budgeted by its free memory and this bounds only what placements
    /// leave on the CPU [default: 75% of the RAM available at startup, less
    /// the default --sleep-mib where GPU models can sleep].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget_mib: Option<u64>,

    /// Pinned host memory for sleeping GPU models, in MiB. A model evicted
    /// from a GPU for a swap sleeps: its weights wait in pinned host memory
    /// and its next load wakes them with one copy at PCIe speed instead of
    /// reading the file. The least recently used sleepers are dropped to
    /// make room; 0 unloads GPU models for good. Evicted CPU models always
    /// sleep (their weights are the mapped file) [default where GPU models
    /// can sleep (GPUs, a GPU build, the sleep shim): 25% of the RAM
    /// available at startup, taken from the default --memory-budget-mib;
    /// elsewhere: 0].
    #[arg(long, value_name = "MIB")]
    pub sleep_mib: Option<u64>,

    /// Host memory for saved KV caches, in MiB, shared by every model: a
    /// slot's cache is saved before another prompt takes the slot or its
    /// model unloads, and a request sharing a saved prefix restores it
    /// instead of prefilling (0 turns it off) [default: 512].
    #[arg(long, value_name = "MIB")]
    pub kv_cache_mib: Option<u64>,

    /// Also keep saved KV caches in this directory, so they survive a
    /// restart: written in the background as they are saved, read back when
    /// a prompt shares a longer prefix than memory holds. A state restores
    /// only into the same model file (path, size, modification time) and
    /// context size; files are checksummed [default: none].
    #[arg(long, value_name = "DIR")]
    pub kv_cache_dir: Option<std::path::PathBuf>,

    /// Disk space for --kv-cache-dir, in MiB; the least recently used
    /// states are deleted beyond it [default: 4096].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_cache_dir_mib: Option<u64>,

    /// Full-size KV cache for sliding-window layers (Gemma 2/3, gpt-oss...).
    /// Off, those layers keep only their window: less memory and faster
    /// swaps, but once a sequence outgrew the window its cache can only be
    /// continued, cut where the window still covers, or cut back to one of
    /// its checkpoints (--ctx-checkpoints) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub swa_full: Option<bool>,

    /// Context checkpoints a slot of a sliding-window model keeps (llama-
    /// server's flag): the window's state where a prompt's last user message
    /// starts, where an earlier prompt left this one and at the prompt's
    /// end, so a later prompt sharing that much resumes there instead of
    /// reading everything again. Each costs about the window's KV in host
    /// memory; 0 turns them off [default: 8].
    #[arg(long, visible_alias = "swa-checkpoints", value_name = "N")]
    pub ctx_checkpoints: Option<u32>,

    /// Also cap how many models are loaded at once [default: no cap].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_models: Option<u64>,

    /// `cache-aware` keeps serving resident models and swaps when room can be
    /// made from idle ones or a waiter passed --max-wait; `fifo` serves in
    /// strict arrival order (the baseline) [default: cache-aware].
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<crate::scheduler::Policy>,

    /// How long other models may keep the memory busy while a request waits
    /// for its model; then they stop taking new work, finish what is in
    /// flight and are swapped out (10s, 500ms, 2m). While models take turns
    /// for the memory, a request is promised a turn of its model (the
    /// current or the next one), which does not end before it is admitted; a
    /// request whose first token is expected later than twice this (that,
    /// plus their drain and its load), or whose model's next turns are
    /// full, gets 429 at once, with Retry-After [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub max_wait: Option<std::time::Duration>,

    /// Requests that may wait per model; beyond it clients get 429 with
    /// Retry-After [default: 128].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue: Option<u64>,

    /// A request expected to wait longer than this for a slot behind its own
    /// model's work (the queue ahead of it at the measured time per request)
    /// gets 429 at once, with Retry-After, so overload is shed rather than
    /// queued for minutes; waits on other models' turns are bounded by
    /// twice --max-wait instead, when that is shorter [default: 120s].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub max_queue_wait: Option<std::time::Duration>,

    /// Streaming requests that wait for a model load get progress in
    /// `delta.reasoning_content` ("loading model X: 40%") [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub notify_swaps: Option<bool>,

    /// On SIGINT/SIGTERM, how long open requests may run before they are
    /// cancelled [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub shutdown_grace: Option<std::time::Duration>,

    /// Largest accepted request body, in MiB [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_body_mib: Option<u32>,

    /// Client connections served at once; past it a connection gets 503
    /// (`too_many_connections`) and is closed. Lowered to fit the open-files
    /// limit, which is raised to its hard limit at start [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// How long a connection may take to send a request's headers, counted
    /// from when it opens and from each response, so it also closes idle
    /// keep-alive connections; a request body that pauses this long fails
    /// too (30s, 2m) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub header_timeout: Option<std::time::Duration>,

    /// Web origins whose pages may call the API from a browser (CORS), e.g.
    /// `http://localhost:3000`; `*` allows every site. Comma separated
    /// [default: none: browsers refuse cross-site calls].
    #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
    pub cors_origins: Option<Vec<String>>,

    /// Host names clients may use to reach this server (the `Host` header),
    /// besides localhost, 127.0.0.1, ::1 and the --host address; other
    /// names are refused (403), which stops DNS-rebinding pages. Listening
    /// on every interface (0.0.0.0) without this list accepts any name.
    /// Comma separated [default: none].
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub allowed_hosts: Option<Vec<String>>,

    /// A server of one model answers only requests naming it (its id or an
    /// alias, else 404); without this flag it answers any `model`, as
    /// llama-server does (OpenAI-only clients send `gpt-4o-mini`). Servers
    /// of several models always route by name.
    #[arg(long)]
    pub strict_model_names: bool,

    #[command(flatten)]
    pub gpu: GpuFlags,

    #[command(flatten)]
    pub llama: LlamaServerFlags,
}

/// Parses `10s`, `500ms`, `2m`, `1h` or plain seconds (`10`, `0.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (try 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}` (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Splits a `--model` value into an optional name and a path. A value with
/// `=` whose left side looks like a path (contains `/`) is a plain path.
pub fn parse_model_arg(value: &str) -> (Option<String>, PathBuf) {
    match value.split_once('=') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => (Some(name.to_string()), PathBuf::from(path)),
        _ => (None, PathBuf::from(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn model_args_may_carry_a_name() {
        assert_eq!(parse_model_arg("a=models/x.gguf"), (Some("a".into()), PathBuf::from("models/x.gguf")));
        assert_eq!(parse_model_arg("models/x.gguf"), (None, PathBuf::from("models/x.gguf")));
        assert_eq!(parse_model_arg("./dir/a=b.gguf"), (None, PathBuf::from("./dir/a=b.gguf")));
    }
}

fn parse_cache_type(s: &str) -> Result<crate::gguf::KvCacheType, String> {
    crate::gguf::KvCacheType::from_name(s)
        .ok_or_else(|| format!("`{s}` is not a KV cache type (f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl)"))
}

/// A probability, 0 to 1.
fn probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if crate::types::SpecConfig::check_p_min(p.into()).is_ok() => Ok(p),
        _ => Err(format!("`{s}` is not a probability between 0 and 1")),
    }
}
