//! Runs the server: build the registry and scheduler, bind, load what must be
//! loaded, serve until SIGINT/SIGTERM, then free every model.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{router, AppState};
use crate::build_info::BUILD;
use crate::cli::{ModelsArgs, ServeArgs};
use crate::config::{Config, ServerConfig};
use crate::engine::llama::{LlamaEngine, LoadOptions};
use crate::engine::{Engine, EngineError, GpuParams};
use crate::gpu::{GpuInfo, GpuInventory, PlacementOptions};
use crate::registry::{EngineFactory, ModelSpec, Progress, Registry};
use crate::scheduler::{ModelLimits, SchedLimits, Scheduler};

/// Loads models with llama.cpp, placing them on GPUs when there are any.
pub struct LlamaFactory {
    pub threads: Option<u32>,
    pub batch_size: u32,
    pub inventory: Arc<dyn GpuInventory>,
    pub placement: PlacementOptions,
}

impl LlamaFactory {
    /// The GPU plan for `spec` from the inventory as it is now (`None`: no GPU).
    fn gpu_params(&self, spec: &ModelSpec) -> Result<Option<GpuParams>, String> {
        let gpus = self.inventory.gpus().map_err(|e| e.to_string())?;
        if gpus.is_empty() {
            return Ok(None);
        }
        let footprint = crate::memory::footprint(&spec.path, spec.ctx_size, spec.parallel)?;
        let options = PlacementOptions { n_gpu_layers_override: spec.n_gpu_layers, ..self.placement.clone() };
        let plan = crate::gpu::plan(&gpus, &footprint, &options).map_err(|e| e.to_string())?;
        tracing::info!(model = %spec.id, kind = ?plan.kind, devices = ?plan.devices, tensor_split = ?plan.tensor_split,
            n_gpu_layers = plan.n_gpu_layers, "placement: {}", plan.reason);
        Ok(Some(GpuParams {
            devices: plan.devices,
            split_mode: plan.split_mode,
            n_gpu_layers: plan.n_gpu_layers,
            tensor_split: plan.tensor_split,
        }))
    }
}

impl EngineFactory for LlamaFactory {
    fn load(&self, spec: &ModelSpec, progress: Progress) -> Result<Arc<dyn Engine>, EngineError> {
        let gpu = self
            .gpu_params(spec)
            .map_err(|reason| EngineError::Load { path: spec.path.display().to_string(), reason })?;
        let engine = LlamaEngine::load(LoadOptions {
            gpu,
            path: spec.path.clone(),
            ctx_size: spec.ctx_size,
            parallel: spec.parallel,
            threads: self.threads,
            n_gpu_layers: spec.n_gpu_layers,
            batch_size: self.batch_size,
        }, progress)?;
        Ok(Arc::new(engine))
    }
}

/// Scheduler settings from a validated config; `gpus` decides the default
/// budget when --memory-budget-mib is not given.
pub fn sched_limits(server: &ServerConfig, gpus: &[GpuInfo]) -> SchedLimits {
    SchedLimits {
        budget_bytes: server.memory_budget_mib.map_or_else(|| default_budget_bytes(server, gpus), |m| m << 20),
        max_loaded: server.max_loaded_models,
        max_wait: server.max_wait,
        max_queue: server.max_queue,
        policy: server.policy,
        retry_backoff: std::time::Duration::from_secs(2),
    }
}

/// Each model's scheduling limits, with its memory estimated from its GGUF.
pub fn model_limits(models: &[ModelSpec]) -> Vec<ModelLimits> {
    models
        .iter()
        .map(|spec| ModelLimits {
            name: spec.id.clone(),
            bytes: crate::memory::estimate_bytes(spec),
            slots: spec.parallel,
            exclusive: spec.exclusive,
            ttl: spec.ttl,
        })
        .collect()
}

/// Without --memory-budget-mib: the free memory of the selected GPUs minus
/// the reserve on each, when there are GPUs; else the CPU default.
fn default_budget_bytes(server: &ServerConfig, gpus: &[GpuInfo]) -> u64 {
    if gpus.is_empty() {
        return crate::memory::default_cpu_budget_bytes();
    }
    let selected = gpus.iter().filter(|g| server.placement.devices.as_ref().is_none_or(|d| d.contains(&g.index)));
    let usable_mib: u64 = selected.map(|g| g.free_mib.saturating_sub(server.placement.reserve_mib)).sum();
    usable_mib << 20
}

/// The GPU inventory named by the config (a JSON file, else NVML), probed
/// once; `gpus()` refreshes its figures on every call.
fn inventory(server: &ServerConfig) -> Result<Arc<dyn GpuInventory>, String> {
    crate::gpu::detect(server.gpus_from.as_deref()).map(Arc::from).map_err(|e| e.to_string())
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::load(&args.sources, &args.server)?;
    let server = config.server.clone();
    let inventory = inventory(&server)?;
    let limits = sched_limits(&server, &inventory.gpus().map_err(|e| e.to_string())?);
    let model_limits = model_limits(&config.models);
    tracing::info!(
        budget_mib = limits.budget_bytes >> 20,
        policy = ?limits.policy,
        models = config.models.len(),
        "scheduler ready"
    );
    let preload: Vec<usize> = config.models.iter().enumerate().filter(|(_, m)| m.preload).map(|(i, _)| i).collect();
    // A lone model without a config loads at once, after the port opens.
    let load_after_bind = config.models.len() == 1 && preload.is_empty();
    let registry = Arc::new(Registry::new(config.models));
    let factory: Arc<dyn EngineFactory> = Arc::new(LlamaFactory {
        threads: server.threads,
        batch_size: server.batch_size,
        inventory,
        placement: server.placement.clone(),
    });
    let scheduler = Scheduler::start(registry.clone(), factory, model_limits, limits);

    for &i in &preload {
        let id = &registry.entry(i).spec.id;
        tracing::info!(model = %id, "preloading");
        if let Err(e) = scheduler.load(i).await {
            tracing::error!(model = %id, "preload failed: {e}");
        }
    }

    let ready = Arc::new(AtomicBool::new(!load_after_bind));
    let state = AppState {
        registry: registry.clone(),
        scheduler: scheduler.clone(),
        ready: ready.clone(),
        api_key: server.api_key.clone().map(Arc::from),
        admin_token: server.admin_token.clone().map(Arc::from),
        notify_swaps: server.notify_swaps,
        reload_from: Some(Arc::new((args.sources.clone(), args.server.clone()))),
        body_limit: server.max_body_mib as usize * 1024 * 1024,
        build: BUILD,
    };
    let addr = SocketAddr::new(server.host, server.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");

    if load_after_bind {
        // /health answers 503 until this load is done.
        let scheduler = scheduler.clone();
        tokio::spawn(async move {
            match scheduler.load(0).await {
                Ok(()) => ready.store(true, std::sync::atomic::Ordering::Release),
                Err(e) => tracing::error!("{e}"),
            }
        });
    }

    // Graceful: stop accepting, let open requests finish within the grace
    // period, then cancel what is left and free every model.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(());
    });
    let grace = server.shutdown_grace;
    tokio::select! {
        result = serving.into_future() => result.map_err(|e| e.to_string())?,
        () = async {
            let _ = stop_rx.await;
            tracing::info!("shutting down: open requests get {grace:?} to finish");
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; cancelling open requests"),
    }
    tracing::info!("freeing models");
    scheduler.shutdown().await;
    Ok(())
}

/// `vram-llm models`: the registry with estimated memory, nothing loaded.
pub fn print_models(args: &ModelsArgs) -> Result<(), String> {
    let config = Config::load(&args.sources, &args.server)?;
    let gpus = inventory(&config.server)?.gpus().map_err(|e| e.to_string())?;
    let limits = sched_limits(&config.server, &gpus);
    let model_limits = model_limits(&config.models);
    let rows: Vec<serde_json::Value> = config
        .models
        .iter()
        .zip(&model_limits)
        .map(|(spec, l)| {
            serde_json::json!({
                "name": spec.id,
                "aliases": spec.aliases,
                "path": spec.path.display().to_string(),
                "ctx_size": spec.ctx_size,
                "parallel": spec.parallel,
                "estimated_mib": l.bytes >> 20,
                "ttl_s": spec.ttl.map(|t| t.as_secs()),
                "preload": spec.preload,
                "exclusive": spec.exclusive,
            })
        })
        .collect();
    if args.json {
        let out = serde_json::json!({"budget_mib": limits.budget_bytes >> 20, "models": rows});
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<28} {:>9} {:>6} {:>8}  {:<24} path", "name", "est. MiB", "ctx", "parallel", "flags");
    for (spec, l) in config.models.iter().zip(&model_limits) {
        let mut flags = Vec::new();
        if spec.preload {
            flags.push("preload".to_string());
        }
        if spec.exclusive {
            flags.push("exclusive".to_string());
        }
        if let Some(ttl) = spec.ttl {
            flags.push(format!("ttl={}s", ttl.as_secs()));
        }
        if !spec.aliases.is_empty() {
            flags.push(format!("aliases={}", spec.aliases.join(",")));
        }
        let ctx = spec.ctx_size.map_or_else(|| "auto".to_string(), |c| c.to_string());
        println!("{:<28} {:>9} {:>6} {:>8}  {:<24} {}", spec.id, l.bytes >> 20, ctx, spec.parallel, flags.join(" "), spec.path.display());
    }
    println!("memory budget: {} MiB ({} policy)", limits.budget_bytes >> 20, match limits.policy {
        crate::scheduler::Policy::CacheAware => "cache-aware",
        crate::scheduler::Policy::Fifo => "fifo",
    });
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
