//! llama-server's command-line flags, so a llama-server command line starts
//! vram-llm unchanged: the ones with a vram-llm meaning map onto it, the ones
//! that cannot change what we do are accepted and do nothing, and the ones
//! for features we lack are refused by name (never silently ignored).

use std::ffi::OsString;

use clap::Args;

/// llama-server's flags (see docs/api.md, "llama-server's flags").
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "llama-server's flags (same names, same meaning)")]
pub struct LlamaServerFlags {
    /// Default temperature of requests that send none (per-model
    /// `sampling.temperature` in the config wins) [default: 0.8].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temp: Option<f32>,

    /// Default seed of requests that send none; -1: a random one per request
    /// [default: -1].
    #[arg(short = 's', long, value_name = "N", allow_negative_numbers = true)]
    pub seed: Option<i64>,

    /// The most tokens a request generates when it sends no `max_tokens` /
    /// `n_predict` (or -1), as llama-server's; a request's own limit wins.
    /// -1: until the context is full (a model's `sampling.max_tokens` wins)
    /// [default: -1].
    #[arg(short = 'n', long = "n-predict", visible_alias = "predict", value_name = "N", allow_negative_numbers = true)]
    pub n_predict: Option<i64>,

    /// Serve embeddings only, as `--embeddings-only`.
    #[arg(long, visible_alias = "embeddings")]
    pub embedding: bool,

    /// Host memory for saved prompt caches in MiB, as `--kv-cache-mib`
    /// (-1: no limit, 0: off).
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub cache_ram: Option<i64>,

    /// Most models loaded at once, as `--max-loaded-models` (0: no cap).
    #[arg(long, value_name = "N")]
    pub models_max: Option<u64>,

    /// Unload a model after this many idle seconds (it shows as sleeping and
    /// the next request loads it again); a model's own `ttl` wins.
    #[arg(long, value_name = "SECONDS")]
    pub sleep_idle_seconds: Option<u64>,

    /// Requests for a model that is not loaded answer 400 instead of loading
    /// it; `POST /models/load` (or /admin/models/load) loads it.
    #[arg(long)]
    pub no_models_autoload: bool,

    /// Answer /metrics with 501, as llama-server does without `--metrics`
    /// (vram-llm serves /metrics by default; `--metrics` is accepted).
    #[arg(long)]
    pub no_metrics: bool,
    #[arg(long, hide = true)]
    pub metrics: bool,

    /// Answer /slots with 501 (`--slots`, the default, is accepted).
    #[arg(long)]
    pub no_slots: bool,
    #[arg(long, hide = true)]
    pub slots: bool,

    /// Accepted without effect, with the other llama-server flags that change
    /// nothing here: --no-cont-batching (batching is always continuous),
    /// --jinja and --no-jinja (templates are always Jinja),
    /// --no-cache-idle-slots, --no-mmproj. Flags for features
    /// vram-llm lacks (--lora, --mmproj, --grp-attn-n...) are
    /// refused at startup, naming the flag.
    #[arg(long)]
    pub cont_batching: bool,
    #[arg(long, hide = true)]
    pub no_cont_batching: bool,
    #[arg(long, hide = true)]
    pub jinja: bool,
    #[arg(long, hide = true)]
    pub no_jinja: bool,
    /// Every slot may use the whole --ctx-size (llama-server's default when
    /// --parallel is not given; with --parallel, -c is split across the
    /// slots). vram-llm still gives each slot its own KV stream, so the cache
    /// then holds ctx-size x parallel tokens.
    #[arg(long, conflicts_with = "no_kv_unified")]
    pub kv_unified: bool,
    /// Split --ctx-size evenly across the --parallel slots, even when
    /// --parallel is not given (4 slots).
    #[arg(long)]
    pub no_kv_unified: bool,
    /// No dashboard at `/` (404), as llama-server's `--no-ui` turns off
    /// its web UI (`--no-webui` too).
    #[arg(long)]
    pub no_ui: bool,
    #[arg(long, hide = true, alias = "no-webui")]
    pub no_webui: bool,
    /// With --hf-repo: use the Hugging Face cache alone, download nothing
    /// (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Non-streamed chat answers carry llama-server's `__verbose`
    /// object: the prompt the template rendered (logs: RUST_LOG=debug).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[arg(long, hide = true)]
    pub no_cache_idle_slots: bool,
    #[arg(long, hide = true)]
    pub no_mmproj: bool,
    /// Labels for the models given on the command line, comma-separated,
    /// listed as `tags` in /models (llama-server's; `tags` in the config).
    #[arg(long, value_name = "TAG[,TAG...]")]
    pub tags: Option<String>,

    /// (-hf) Serve a model from the Hugging Face hub: owner/repo[:QUANT],
    /// QUANT picking the file (Q4_K_M, then Q8_0, then the first when none is
    /// given), named `owner/repo:QUANT`; downloaded at startup unless the
    /// cache has it (HF_ENDPOINT, HF_TOKEN honoured). The cache is the one
    /// llama.cpp and huggingface_hub share (LLAMA_CACHE, HF_HUB_CACHE,
    /// HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long, value_name = "OWNER/REPO[:QUANT]")]
    pub hf_repo: Option<String>,
    /// With --hf-repo: this file of the repository instead of a QUANT's.
    #[arg(long, value_name = "FILE")]
    pub hf_file: Option<String>,

    /// (-mu) A GGUF at an https:// URL (as `--model URL`): downloaded at startup into the
    /// cache folder's urls/ unless it was, then served as a --model.
    #[arg(long, value_name = "URL")]
    pub model_url: Option<String>,

    /// (-md) A smaller GGUF of the same vocabulary that drafts for every
    /// model (speculative decoding, `--spec-type draft-simple`): loaded and
    /// unloaded with each, in the same process, counted in its memory (on
    /// the CPU, weights of that file already in use are shared, not loaded
    /// again); a model it cannot draft for (another vocabulary) loads
    /// without it. A
    /// `[[models]]` entry's `draft` key wins (another model's name, a path,
    /// or `auto`).
    #[arg(long, value_name = "PATH")]
    pub model_draft: Option<std::path::PathBuf>,

    /// llama-server flags for features vram-llm lacks: refused at startup,
    /// naming the flag (see `unsupported`).
    #[arg(long, hide = true, value_name = "V")]
    pub lora: Vec<String>,
    #[arg(long, hide = true, value_name = "V")]
    pub mmproj: Option<String>,
    #[arg(long, hide = true, value_name = "V")]
    pub mmproj_url: Option<String>,
    #[arg(long, hide = true, value_name = "V", allow_negative_numbers = true)]
    pub grp_attn_n: Option<String>,
    #[arg(long, hide = true, value_name = "V", allow_negative_numbers = true)]
    pub grp_attn_w: Option<String>,
    /// llama-server's preset INI: one `[name]` section per model, keys as
    /// its flags (`hf-repo`, `model`, `ctx-size`, `alias`...); read again by
    /// `GET /models?reload=1` and `/admin/reload`.
    #[arg(long, value_name = "FILE")]
    pub models_preset: Option<String>,
    #[arg(long, hide = true, value_name = "V")]
    pub tools: Option<String>,
    #[arg(long, hide = true)]
    pub ui_mcp_proxy: bool,
    #[arg(long, hide = true, value_name = "V")]
    pub slot_save_path: Option<String>,
    /// A chat template for every model without a template file of its own,
    /// as llama-server takes it: a built-in name (chatml, gemma, llama3,
    /// command-r, phi3) or the Jinja source itself. It wins over the GGUF's
    /// template; --chat-template-file wins over it.
    #[arg(long, value_name = "NAME|JINJA")]
    pub chat_template: Option<String>,
    #[arg(long, hide = true, value_name = "V")]
    pub media_path: Option<String>,
    #[arg(long = "backend_sampling", hide = true)]
    pub backend_sampling: bool,
}

impl LlamaServerFlags {
    /// The first llama-server flag given whose feature vram-llm lacks, as an
    /// error naming it and what to do instead.
    pub fn unsupported(&self) -> Result<(), String> {
        let given = |present: bool, flag: &str, why: &str| if present { Err(format!("{flag} (llama-server's) is not supported: {why}")) } else { Ok(()) };
        given(!self.lora.is_empty(), "--lora", "LoRA adapters are not supported")?;
        let vision = "multimodal projectors (images, audio) are not supported";
        given(self.mmproj.is_some(), "--mmproj", vision)?;
        given(self.mmproj_url.is_some(), "--mmproj-url", vision)?;
        given(self.media_path.is_some(), "--media-path", vision)?;
        let ga = "group-attention self-extend is not supported; use --context-shift or a longer --ctx-size";
        given(self.grp_attn_n.is_some(), "--grp-attn-n", ga)?;
        given(self.grp_attn_w.is_some(), "--grp-attn-w", ga)?;
        given(self.tools.is_some() || self.ui_mcp_proxy, "--tools / --ui-mcp-proxy", "built-in tools and the MCP proxy are not supported")?;
        given(self.slot_save_path.is_some(), "--slot-save-path", "use --kv-cache-dir DIR: saved KV caches survive restarts there")?;
        given(self.backend_sampling, "--backend_sampling", "sampling runs on the CPU")?;
        Ok(())
    }

    /// `--seed` as a request default (`None`: random per request).
    pub fn seed(&self) -> Option<u32> {
        self.seed.filter(|s| *s >= 0).map(|s| s as u32)
    }

    /// `--n-predict` as a request default (`None`: no limit).
    /// `--kv-unified` / `--no-kv-unified`, when either was given.
    pub fn kv_unified(&self) -> Option<bool> {
        (self.kv_unified || self.no_kv_unified).then_some(self.kv_unified)
    }

    pub fn n_predict(&self) -> Option<u32> {
        self.n_predict.filter(|n| *n > 0).map(|n| n.min(u32::MAX as i64) as u32)
    }

    /// `--cache-ram` in MiB (`-1`: as good as no limit).
    pub fn cache_ram_mib(&self) -> Option<u64> {
        self.cache_ram.map(|m| if m < 0 { u64::MAX >> 20 } else { m as u64 })
    }
}

/// llama.cpp's single-dash multi-letter flags (`-ngl 99`, `-fa on`, `-ctk
/// q8_0`), which a command-line parser reads as bundles of short flags,
/// spelled as their long names.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("-ngl", "--n-gpu-layers"),
    ("-fa", "--flash-attn"),
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-np", "--parallel"),
    ("-tb", "--threads-batch"),
    ("-ub", "--ubatch-size"),
    ("-sm", "--split-mode"),
    ("-mg", "--main-gpu"),
    ("-cb", "--cont-batching"),
    ("-nocb", "--no-cont-batching"),
    ("-kvu", "--kv-unified"),
    ("-cram", "--cache-ram"),
    ("-hf", "--hf-repo"),
    ("-hfr", "--hf-repo"),
    ("-hff", "--hf-file"),
    ("-mu", "--model-url"),
    ("-md", "--model-draft"),
    ("-gan", "--grp-attn-n"),
    ("-gaw", "--grp-attn-w"),
];

/// The arguments with llama.cpp's multi-letter single-dash flags spelled
/// long. Only whole arguments that name a flag are rewritten (values such as
/// a negative number pass unchanged).
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| match arg.to_str().and_then(|a| SHORT_NAMES.iter().find(|(short, _)| *short == a)) {
            Some((_, long)) => OsString::from(long),
            None => arg,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_short_names_are_spelled_long() {
        let args = ["serve", "-ngl", "99", "-fa", "on", "-ctk", "q8_0", "-n", "-1", "-c", "512"].map(OsString::from);
        let out: Vec<String> = normalize_args(args).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(out, ["serve", "--n-gpu-layers", "99", "--flash-attn", "on", "--cache-type-k", "q8_0", "-n", "-1", "-c", "512"]);
    }

    #[test]
    fn unsupported_flags_are_named() {
        let f = LlamaServerFlags { mmproj: Some("x.gguf".into()), ..Default::default() };
        let err = f.unsupported().unwrap_err();
        assert!(err.contains("--mmproj") && err.contains("not supported"), "{err}");
        assert!(LlamaServerFlags { jinja: true, no_ui: true, ..Default::default() }.unsupported().is_ok());
    }

    #[test]
    fn defaults_read_llama_servers_sentinels() {
        let f = LlamaServerFlags { seed: Some(-1), n_predict: Some(-1), cache_ram: Some(-1), ..Default::default() };
        assert_eq!((f.seed(), f.n_predict()), (None, None));
        assert!(f.cache_ram_mib().unwrap() > 1 << 30);
        let f = LlamaServerFlags { seed: Some(42), n_predict: Some(64), cache_ram: Some(0), ..Default::default() };
        assert_eq!((f.seed(), f.n_predict(), f.cache_ram_mib()), (Some(42), Some(64), Some(0)));
    }
}
