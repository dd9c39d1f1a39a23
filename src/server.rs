//! Runs the server: build the registry and scheduler, bind, load what must be
//! loaded, serve until SIGINT/SIGTERM, then free every model.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{router, AppState, ReloadSource};
use crate::build_info::BUILD;
use crate::cli::{ModelsArgs, ServeArgs};
use crate::config::{Config, ServerConfig};
use crate::engine::llama::{FitOptions, LlamaEngine, LoadOptions};
use crate::engine::{Engine, EngineError, GpuParams};
use crate::gpu::{GpuInventory, Placement, PlacementKind, PlacementOptions};
use crate::registry::{EngineFactory, ModelSpec, Progress, Registry};
use crate::scheduler::{GpuDemand, ModelLimits, SchedLimits, Scheduler};

/// Loads models with llama.cpp where the scheduler placed them.
pub struct LlamaFactory {
    pub threads: Option<u32>,
    pub batch_size: u32,
    /// For placements left to llama.cpp's fitter (`--use-fit-params`): the
    /// MiB kept free per device and the GPUs it may use (`None`: all).
    pub fit_reserve_mib: u64,
    pub fit_devices: Option<Vec<u32>>,
    /// GPUs are known (NVML or a GPU list): a model the scheduler could not
    /// place (no GGUF footprint) then stays on the CPU rather than landing on
    /// a GPU outside the budget. Without an inventory llama.cpp's defaults
    /// apply, as they would in any llama.cpp program.
    pub gpus_known: bool,
}

impl EngineFactory for LlamaFactory {
    fn load(&self, spec: &ModelSpec, placement: Option<&Placement>, progress: Progress) -> Result<Arc<dyn Engine>, EngineError> {
        let fit = placement.is_some_and(|p| p.use_fit_params);
        let gpu = placement.filter(|_| !fit).map(|p| GpuParams {
            devices: p.devices.clone(),
            split_mode: p.split_mode,
            n_gpu_layers: p.n_gpu_layers,
            tensor_split: p.tensor_split.clone(),
        });
        let engine = LlamaEngine::load(LoadOptions {
            gpu,
            path: spec.path.clone(),
            ctx_size: spec.ctx_size,
            parallel: spec.parallel,
            threads: self.threads,
            n_gpu_layers: match (placement, spec.n_gpu_layers) {
                (Some(_), _) => None,
                (None, Some(n)) => Some(n),
                (None, None) => self.gpus_known.then_some(0),
            },
            fit: fit.then(|| FitOptions { reserve_mib: self.fit_reserve_mib, devices: self.fit_devices.clone() }),
            batch_size: self.batch_size,
        }, progress)?;
        Ok(Arc::new(engine))
    }
}

/// Scheduler settings from a validated config. The budget is host memory
/// (--memory-budget-mib, else 75% of what is available); GPUs are budgeted
/// per GPU from their free memory by the scheduler itself.
pub fn sched_limits(server: &ServerConfig) -> SchedLimits {
    SchedLimits {
        budget_bytes: server.memory_budget_mib.map_or_else(crate::memory::default_cpu_budget_bytes, |m| m << 20),
        max_loaded: server.max_loaded_models,
        max_wait: server.max_wait,
        max_queue: server.max_queue,
        policy: server.policy,
        retry_backoff: std::time::Duration::from_secs(2),
    }
}

/// Each model's scheduling limits: memory estimated from its GGUF, and what
/// GPU placement needs (its footprint, the server's placement options with
/// the model's overrides).
pub fn model_limits(models: &[ModelSpec], placement: &PlacementOptions) -> Vec<ModelLimits> {
    models
        .iter()
        .map(|spec| {
            let memory = crate::memory::model_memory(spec);
            ModelLimits {
                name: spec.id.clone(),
                bytes: memory.bytes,
                slots: spec.parallel,
                exclusive: spec.exclusive,
                ttl: spec.ttl,
                gpu: memory.footprint.map(|footprint| GpuDemand { footprint, options: spec.placement_options(placement) }),
            }
        })
        .collect()
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
    let limits = sched_limits(&server);
    let model_limits = model_limits(&config.models, &server.placement);
    // Placement options that name missing GPUs are config errors: say so now,
    // not at the first request.
    let gpus_now = inventory.gpus().unwrap_or_default();
    for (spec, alone) in config.models.iter().zip(placements_alone(&gpus_now, &model_limits)) {
        alone.transpose().map_err(|e| format!("model `{}`: {e}", spec.id))?;
    }
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
        fit_reserve_mib: server.placement.reserve_mib,
        fit_devices: server.placement.devices.clone(),
        gpus_known: inventory.has_gpus(),
    });
    let scheduler = Scheduler::start(registry.clone(), factory, model_limits, limits, inventory);

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
        reload_from: Some(Arc::new(ReloadSource {
            sources: args.sources.clone(),
            flags: args.server.clone(),
            placement: server.placement.clone(),
        })),
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
    let limits = sched_limits(&config.server);
    let model_limits = model_limits(&config.models, &config.server.placement);
    let gpus = inventory(&config.server)?.gpus().map_err(|e| e.to_string())?;
    let placements = placements_alone(&gpus, &model_limits);
    let rows: Vec<serde_json::Value> = config
        .models
        .iter()
        .zip(&model_limits)
        .zip(&placements)
        .map(|((spec, l), placement)| {
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
                "placement": placement.as_ref().and_then(|p| p.as_ref().ok()),
                "placement_error": placement.as_ref().and_then(|p| p.as_ref().err()),
            })
        })
        .collect();
    if args.json {
        let out = serde_json::json!({"budget_mib": limits.budget_bytes >> 20, "models": rows});
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<28} {:>9} {:>6} {:>8}  {:<20} {:<24} path", "name", "est. MiB", "ctx", "parallel", "alone on GPUs", "flags");
    let mut errors = Vec::new();
    for ((spec, l), placement) in config.models.iter().zip(&model_limits).zip(&placements) {
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
        let alone = match placement {
            None => "-".to_string(),
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", spec.id));
                "error (below)".to_string()
            }
            Some(Ok(p)) => short_placement(p),
        };
        println!(
            "{:<28} {:>9} {:>6} {:>8}  {:<20} {:<24} {}",
            spec.id,
            l.bytes >> 20,
            ctx,
            spec.parallel,
            alone,
            flags.join(" "),
            spec.path.display()
        );
    }
    for e in errors {
        println!("placement error: {e}");
    }
    println!("host memory budget: {} MiB ({} policy)", limits.budget_bytes >> 20, match limits.policy {
        crate::scheduler::Policy::CacheAware => "cache-aware",
        crate::scheduler::Policy::Fifo => "fifo",
    });
    Ok(())
}

/// Where each model would go on `gpus` as they are, alone; `None` without
/// GPUs or without a footprint to plan with, `Err` for options naming GPUs
/// that are not there.
fn placements_alone(gpus: &[crate::gpu::GpuInfo], models: &[ModelLimits]) -> Vec<Option<Result<Placement, String>>> {
    models
        .iter()
        .map(|l| {
            let demand = l.gpu.as_ref().filter(|_| !gpus.is_empty())?;
            Some(crate::scheduler::memory::ideal(gpus, demand).map_err(|e| e.to_string()))
        })
        .collect()
}

/// `GPU 0`, `split 0,1`, `13/33 layers on 0`, `cpu`: a placement in a table cell.
fn short_placement(p: &Placement) -> String {
    let list = p.devices.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    match p.kind {
        PlacementKind::SingleGpu => format!("GPU {list}"),
        PlacementKind::Split => format!("split {list}"),
        PlacementKind::PartialOffload => format!("{}/{} layers on {list}", p.n_gpu_layers.saturating_sub(1), p.n_layers),
        PlacementKind::CpuOnly => "cpu".to_string(),
    }
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
