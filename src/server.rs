//! Runs the server: bind first (so /health can answer 503 while loading),
//! load the models in the background, serve until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{router, AppState};
use crate::build_info::BUILD;
use crate::cli::ServeArgs;
use crate::engine::llama::{LlamaEngine, LoadOptions};
use crate::engine::{Engine, EngineError};
use crate::registry::{default_id, EngineFactory, ModelSpec, Registry};

/// Loads models with llama.cpp.
pub struct LlamaFactory {
    pub threads: Option<u32>,
    pub batch_size: u32,
}

impl EngineFactory for LlamaFactory {
    fn load(&self, spec: &ModelSpec) -> Result<Arc<dyn Engine>, EngineError> {
        let engine = LlamaEngine::load(LoadOptions {
            path: spec.path.clone(),
            ctx_size: spec.ctx_size,
            parallel: spec.parallel,
            threads: self.threads,
            n_gpu_layers: spec.n_gpu_layers,
            batch_size: self.batch_size,
        })?;
        Ok(Arc::new(engine))
    }
}

pub fn model_spec(args: &ServeArgs) -> ModelSpec {
    ModelSpec {
        id: args.alias.clone().unwrap_or_else(|| default_id(&args.model)),
        aliases: Vec::new(),
        path: args.model.clone(),
        ctx_size: args.ctx_size,
        parallel: args.parallel,
        n_gpu_layers: args.n_gpu_layers,
        chat_template_file: args.chat_template_file.clone(),
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    if !args.model.is_file() {
        return Err(format!("--model {}: no such file", args.model.display()));
    }
    if let Some(path) = &args.chat_template_file {
        if !path.is_file() {
            return Err(format!("--chat-template-file {}: no such file", path.display()));
        }
    }
    let registry = Arc::new(Registry::new(vec![model_spec(&args)]));
    let state = AppState {
        registry: registry.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()).map(Arc::from),
        body_limit: args.max_body_mib as usize * 1024 * 1024,
        build: BUILD,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");

    let factory: Arc<dyn EngineFactory> = Arc::new(LlamaFactory { threads: args.threads, batch_size: args.batch_size });
    let loader = registry.clone();
    tokio::spawn(async move { loader.load_all(factory).await });

    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("shutting down; freeing models");
    registry.unload_all();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
