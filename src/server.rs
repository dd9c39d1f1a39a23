//! Runs the server: build the registry and scheduler, bind, load what must be
//! loaded, serve until SIGINT/SIGTERM, then free every model.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{router, AppState};
use crate::build_info::BUILD;
use crate::cli::{parse_model_arg, ServeArgs};
use crate::engine::llama::{LlamaEngine, LoadOptions};
use crate::engine::{Engine, EngineError};
use crate::registry::{default_id, EngineFactory, ModelSpec, Registry};
use crate::scheduler::{ModelLimits, SchedLimits, Scheduler};

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

/// The models named on the command line, checked: files exist, names unique.
pub fn model_specs(args: &ServeArgs) -> Result<Vec<ModelSpec>, String> {
    if args.alias.is_some() && args.model.len() > 1 {
        return Err("--alias names a single --model; with several, write --model NAME=PATH".into());
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for value in &args.model {
        let (name, path) = parse_model_arg(value);
        if !path.is_file() {
            return Err(format!("--model {}: no such file", path.display()));
        }
        let id = name.or_else(|| args.alias.clone()).unwrap_or_else(|| default_id(&path));
        if !seen.insert(id.clone()) {
            return Err(format!("--model {value}: the name `{id}` is used twice; name models with NAME=PATH"));
        }
        specs.push(ModelSpec {
            id,
            aliases: Vec::new(),
            path,
            ctx_size: args.ctx_size,
            parallel: args.parallel,
            n_gpu_layers: args.n_gpu_layers,
            chat_template_file: args.chat_template_file.clone(),
        });
    }
    Ok(specs)
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let specs = model_specs(&args)?;
    if let Some(path) = &args.chat_template_file {
        if !path.is_file() {
            return Err(format!("--chat-template-file {}: no such file", path.display()));
        }
    }
    let budget_bytes = args.memory_budget_mib.map_or_else(crate::memory::default_cpu_budget_bytes, |m| m << 20);
    let limits = SchedLimits {
        budget_bytes,
        max_loaded: args.max_loaded_models.map(|n| n as usize),
        max_wait: args.max_wait,
        max_queue: args.max_queue as usize,
        policy: args.policy,
        retry_backoff: std::time::Duration::from_secs(2),
    };
    let model_limits = specs
        .iter()
        .map(|spec| ModelLimits {
            name: spec.id.clone(),
            bytes: crate::memory::estimate_bytes(spec),
            slots: spec.parallel,
            exclusive: false,
            ttl: None,
        })
        .collect();
    tracing::info!(budget_mib = budget_bytes >> 20, policy = ?args.policy, models = specs.len(), "scheduler");
    let single = specs.len() == 1;
    let registry = Arc::new(Registry::new(specs));
    let factory: Arc<dyn EngineFactory> = Arc::new(LlamaFactory { threads: args.threads, batch_size: args.batch_size });
    let scheduler = Scheduler::start(registry.clone(), factory, model_limits, limits);
    let ready = Arc::new(AtomicBool::new(!single));
    let state = AppState {
        registry: registry.clone(),
        scheduler: scheduler.clone(),
        ready: ready.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()).map(Arc::from),
        admin_token: args.admin_token.clone().filter(|k| !k.is_empty()).map(Arc::from),
        body_limit: args.max_body_mib as usize * 1024 * 1024,
        build: BUILD,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");

    if single {
        // One model: load it right away; /health answers 503 until it is in.
        let scheduler = scheduler.clone();
        tokio::spawn(async move {
            match scheduler.load(0).await {
                Ok(()) => ready.store(true, std::sync::atomic::Ordering::Release),
                Err(e) => tracing::error!("{e}"),
            }
        });
    }

    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("shutting down; freeing models");
    scheduler.shutdown().await;
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
