use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use vram_llm::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), None) = (args.next(), args.next()) {
        if flag == "--version" || flag == "-V" {
            // clap's version text is fixed at build time; the backends are what
            // llama.cpp finds now (with `dynamic-link`, the libraries on the path).
            let backends = vram_llm::engine::llama::backend_devices().unwrap_or_else(|e| vec![format!("none ({e})")]);
            let mut text = format!("vram-llm {}\nbackends: {}\n", vram_llm::build_info::LONG_VERSION, backends.join("; "));
            let modules = vram_llm::engine::llama::backend_modules();
            if !modules.is_empty() {
                text += &format!("backend modules: {}\n", modules.join("; "));
            }
            text += &match vram_llm::engine::llama::sleep::status() {
                Ok(shim) => format!("gpu sleep: yes ({shim})\n"),
                Err(why) => format!("gpu sleep: no ({why})\n"),
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            return std::process::ExitCode::SUCCESS;
        }
    }
    let cli = Cli::parse_from(vram_llm::cli::normalize_args(std::env::args_os()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => vram_llm::server::serve(args).await,
            Command::Models(args) => vram_llm::commands::models::print_models(&args),
            Command::Gpus(args) => vram_llm::commands::gpus::print_gpus(&args),
            Command::Plan(args) => vram_llm::commands::gpus::print_plan(&args),
            Command::Pull(args) => vram_llm::commands::pull::pull(&args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
