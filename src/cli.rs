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
    /// Path of the GGUF model file to serve (for split models, the first part).
    #[arg(short = 'm', long, value_name = "PATH")]
    pub model: PathBuf,

    /// Name clients use for the model; defaults to the file stem
    /// (models/gemma-3-270m-q4_k_m.gguf -> gemma-3-270m-q4_k_m).
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

    /// Largest accepted request body, in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_body_mib: u32,
}
