//! Runs the server: build the catalogue and scheduler, bind, load what must
//! be loaded, serve until SIGINT/SIGTERM, then free every model.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{router, AppState, ReloadSource};
use crate::build_info::BUILD;
use crate::catalogue::{placements_alone, registrations};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::engine::factory::LlamaFactory;
use crate::engine::kvcache::HostKvCache;
use crate::engine::kvdisk::KvDir;
use crate::engine::llama::weights::KeptWeights;
use crate::engine::{EngineFactory, SharedKvStore};
use crate::scheduler::{Scheduler, SystemClock};

pub mod conn;
mod fetch;

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    crate::metrics::mark_process_start();
    let mut args = args;
    if let Some(url) = args.server.llama.model_url.take() {
        // llama-server's --model-url: a --model given as a URL.
        args.sources.model.push(url);
    }
    for value in &mut args.sources.model {
        // `--model [NAME=]URL`: downloaded now unless it was, then served from the file.
        let (name, path) = crate::cli::parse_model_arg(value);
        let text = path.display().to_string();
        if text.starts_with("https://") || text.starts_with("http://") {
            let file = crate::config::hub::fetch(&text, None, args.server.llama.offline).await?;
            // Named as the URL's file (not the cache's hashed name) unless --alias names it.
            let stem = crate::hub::download::url_parts(&text)?.1.trim_end_matches(".gguf").to_string();
            let name = name.or_else(|| args.sources.alias.is_none().then_some(stem));
            *value = match name {
                Some(name) => format!("{name}={}", file.display()),
                None => file.display().to_string(),
            };
        }
    }
    if let Some(repo) = &args.server.llama.hf_repo {
        // Downloaded now unless cached; the config then finds it there.
        crate::config::hub::fetch(repo, args.server.llama.hf_file.as_deref(), args.server.llama.offline).await?;
    }
    let config = Config::load(&args.sources, &args.server)?;
    let server = config.server.clone();
    let inventory = server.gpu_inventory()?;
    let limits = server.sched_limits(inventory.has_gpus() && crate::engine::llama::gpu_sleep_possible());
    let models = registrations(config.models, &server.placement);
    // Placement options that name missing GPUs are config errors: say so now,
    // not at the first request.
    let gpus_now = inventory.gpus().unwrap_or_default();
    for (r, alone) in models.iter().zip(placements_alone(&gpus_now, &models)) {
        alone.transpose().map_err(|e| format!("model `{}`: {e}", r.spec.id))?;
    }
    tracing::info!(
        budget_mib = limits.budget_bytes >> 20,
        sleep_mib = limits.sleep.budget_bytes >> 20,
        policy = ?limits.policy,
        models = models.len(),
        "scheduler ready"
    );
    let preload: Vec<(usize, String)> =
        models.iter().enumerate().filter(|(_, r)| r.spec.preload).map(|(i, r)| (i, r.spec.id.clone())).collect();
    // A lone model without a config loads at once, after the port opens.
    let load_after_bind = models.len() == 1 && preload.is_empty();
    let kv_dir = match &server.kv_cache_dir {
        Some(dir) => Some(KvDir::open(dir, (server.kv_cache_dir_mib << 20) as usize)?),
        None => None,
    };
    let kv_store: Option<SharedKvStore> = (server.kv_cache_mib > 0 || kv_dir.is_some())
        .then(|| Arc::new(HostKvCache::new((server.kv_cache_mib << 20) as usize, kv_dir)));
    let factory: Arc<dyn EngineFactory> = Arc::new(LlamaFactory {
        threads: server.threads,
        batch_size: server.batch_size,
        fit_reserve_mib: server.placement.reserve_mib,
        fit_devices: server.placement.devices.clone(),
        gpus_known: inventory.has_gpus(),
        kept_weights: Some(Arc::new(KeptWeights::new())),
        live_weights: Some(Arc::new(Default::default())),
        sleep_gpu: limits.sleep.budget_bytes > 0,
        kv_store: kv_store.clone(),
    });
    let fetcher: Arc<dyn crate::scheduler::Fetcher> = Arc::new(fetch::HubFetcher { placement: server.placement.clone() });
    let scheduler = Scheduler::start_fetching(models, factory, limits, inventory, Arc::new(SystemClock), Some(fetcher));

    for (i, id) in &preload {
        tracing::info!(model = %id, "preloading");
        if let Err(e) = scheduler.load(*i).await {
            tracing::error!(model = %id, "preload failed: {e}; retrying in the background");
            tokio::spawn(retry_preload(scheduler.clone(), *i, id.clone()));
        }
    }

    let ready = Arc::new(AtomicBool::new(!load_after_bind));
    let state = AppState {
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
        backends: crate::engine::llama::backend_devices().unwrap_or_default().into(),
        backend_modules: crate::engine::llama::backend_modules().into(),
        kv_cache: kv_store.clone(),
        cors_origins: server.cors_origins.clone().into(),
        allowed_hosts: crate::api::guard::allowed_hosts(&server.hosts, &server.allowed_hosts).map(Into::into),
        options: crate::api::ServeOptions {
            metrics: server.metrics,
            slots: server.slots,
            ui: server.ui,
            verbose: server.verbose,
        },
        streams: Default::default(),
    };
    if server.hosts.iter().any(|h| h.is_unspecified()) && server.allowed_hosts.is_empty() {
        tracing::warn!(
            "listening on every interface without --allowed-hosts: any Host name is accepted, so a web page \
             using DNS rebinding is not stopped; name this server's hosts with --allowed-hosts, or set --api-key"
        );
    }
    // Every address on one port (with --port 0, the one the first got).
    let mut listeners = Vec::new();
    let mut port = server.port;
    for &host in &server.hosts {
        let addr = SocketAddr::new(host, port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        port = local.port();
        tracing::info!("listening on http://{local}");
        listeners.push(listener);
    }

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
    let (max_connections, lowered) = conn::effective_max_connections(server.max_connections, conn::raise_open_files_limit());
    if let Some(why) = lowered {
        tracing::warn!("{why}");
    }
    let limits = conn::ConnLimits { max_connections, header_timeout: server.header_timeout, refusals: Default::default() };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = match &server.vertex {
        Some(routes) => {
            tracing::info!(predict = %routes.predict, health = ?routes.health, "Vertex AI prediction routes (AIP_MODE=PREDICTION)");
            crate::api::vertex::wrap(router(state), routes)
        }
        None => router(state),
    };
    let mut serving = tokio::spawn(conn::serve(listeners, app, limits, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(());
    }));
    let grace = server.shutdown_grace;
    let mut models = Vec::new();
    tokio::select! {
        result = &mut serving => result.map_err(|e| e.to_string())?,
        () = async {
            let _ = stop_rx.await;
            tracing::info!("shutting down: open requests get {grace:?} to finish (a second signal cuts it short)");
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = shutdown_signal() => {}
            }
        } => {
            tracing::warn!("grace period over; cancelling open requests");
            // Cancelling ends each open stream with an error event and
            // [DONE]; the connections then close and the server returns. A
            // client that stops reading could hold it: another signal exits
            // at once.
            models = scheduler.shutdown().await;
            tokio::select! {
                _ = &mut serving => {}
                () = shutdown_signal() => {
                    tracing::warn!("signal: closing the remaining connections");
                    serving.abort();
                }
            }
        }
    }
    tracing::info!("freeing models");
    models.extend(scheduler.shutdown().await);
    // A model a finishing request still held is dropped with it; its worker
    // then saves what its slots hold.
    tokio::select! {
        () = Scheduler::models_dropped(&models) => {}
        () = shutdown_signal() => tracing::warn!("signal: not waiting for the models to be freed"),
    }
    if let Some(store) = kv_store {
        // Unloading saved what the slots held; let it reach the directory.
        tokio::task::spawn_blocking(move || store.flush()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Retries a failed preload with a doubling delay (2 s to 1 min) until it
/// loads: /health says 503 meanwhile, and a probe that keeps requests away
/// from an unready server would otherwise never see it recover.
async fn retry_preload(scheduler: Scheduler, model: usize, id: String) {
    let mut delay = std::time::Duration::from_secs(2);
    loop {
        tokio::time::sleep(delay).await;
        match scheduler.load(model).await {
            Ok(()) => {
                tracing::info!(model = %id, "preloaded after a retry");
                return;
            }
            Err(crate::scheduler::SchedError::ShuttingDown | crate::scheduler::SchedError::UnknownModel(_)) => return,
            Err(e) => tracing::warn!(model = %id, "preload retry failed: {e}"),
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(60));
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
