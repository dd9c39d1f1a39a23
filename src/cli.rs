//! Command-line interface (clap types only).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vram-llm",
    version = crate::build_info::LONG_VERSION,
    about = "Serve local GGUF models in-process over the OpenAI API",
    long_about = "Serve local GGUF models in-process over the OpenAI API.\n\n\
        vram-llm links llama.cpp directly: models are loaded into this process (no child servers) \
        and every loaded model decodes its requests with continuous batching.\n\n\
        Example:\n  vram-llm serve --model models/gemma-3-270m-q4_k_m.gguf\n  \
        curl localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(ServeArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// GGUF model file to serve (for split models, the first part). Repeat
    /// to register several models; `NAME=PATH` names one explicitly, else its
    /// name is the file stem (models/gemma-3-270m-q4_k_m.gguf ->
    /// gemma-3-270m-q4_k_m).
    #[arg(short = 'm', long, value_name = "[NAME=]PATH", required = true)]
    pub model: Vec<String>,

    /// Name clients use for the model, when exactly one --model is given.
    #[arg(short = 'a', long, value_name = "NAME")]
    pub alias: Option<String>,

    /// Address to listen on. The default only accepts local connections;
    /// use 0.0.0.0 to listen on every interface (set --api-key then).
    #[arg(long, default_value = "127.0.0.1", env = "VRAM_LLM_HOST")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, default_value_t = 8080, env = "VRAM_LLM_PORT")]
    pub port: u16,

    /// Context size in tokens of EACH request slot (prompt + output).
    /// The KV cache holds ctx-size x parallel tokens. Default: the model's
    /// training context, capped at 4096.
    #[arg(short = 'c', long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: Option<u32>,

    /// Number of sequence slots decoded together (continuous batching);
    /// further requests wait in a queue.
    #[arg(short = 'p', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,

    /// CPU threads llama.cpp uses. Default: all cores.
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,

    /// Largest number of tokens decoded in one step (prompt chunks are cut
    /// to fit).
    #[arg(short = 'b', long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(32..))]
    pub batch_size: u32,

    /// Layers to offload to the GPU (CUDA builds only). Default: all.
    #[arg(long = "n-gpu-layers", alias = "ngl", value_name = "N")]
    pub n_gpu_layers: Option<u32>,

    /// Jinja chat template to use instead of the model's own. Without it the
    /// GGUF's tokenizer.chat_template is used, else a built-in one (Gemma 3
    /// for gemma models, ChatML otherwise).
    #[arg(long, value_name = "PATH")]
    pub chat_template_file: Option<PathBuf>,

    /// Require `Authorization: Bearer KEY` on every endpoint except /health.
    #[arg(long, env = "VRAM_LLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Memory the loaded models may use together, in MiB. Models stay loaded
    /// while their footprints fit. Default: 75% of the RAM available at
    /// startup.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget_mib: Option<u64>,

    /// Also cap how many models are loaded at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_models: Option<u64>,

    /// Scheduling policy: `cache-aware` keeps serving resident models and
    /// swaps when room can be made from idle ones or a waiter passed
    /// --max-wait; `fifo` serves strictly in arrival order (baseline).
    #[arg(long, default_value = "cache-aware", value_name = "POLICY")]
    pub policy: crate::scheduler::Policy,

    /// Longest a request waits for its model while other models keep the
    /// memory busy, before they stop taking new work and are swapped out
    /// (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::cli::parse_duration)]
    pub max_wait: std::time::Duration,

    /// Requests that may wait per model; beyond it clients get 429 with
    /// Retry-After.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue: u64,

    /// Enable the admin API (/admin/*) with this token (`Authorization:
    /// Bearer TOKEN` or `X-Admin-Token: TOKEN`).
    #[arg(long, env = "VRAM_LLM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest accepted request body, in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_body_mib: u32,
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
    if !secs.is_finite() || secs < 0.0 || secs > 1e9 {
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
