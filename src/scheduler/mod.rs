//! The cache-aware scheduler: which model is resident, who is admitted, when
//! to swap. `state.rs` is the synchronous state machine, `policy.rs` the pure
//! decisions, and this file the single owner task that feeds events to the
//! state and carries out its actions (loads and unloads run off the async
//! runtime on blocking threads).
//!
//! A request gets a [`Permit`] from [`Scheduler::acquire`]: the model is
//! loaded and one of its slots is reserved for it until the permit is dropped.

pub mod memory;
pub mod policy;
pub mod state;

#[cfg(test)]
#[path = "state_tests.rs"]
mod state_tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::error::ApiError;
use crate::gpu::{GpuInfo, GpuInventory, Placement};
use crate::registry::{load_one, EngineFactory, LoadedModel, ModelSpec, ModelState, Registry};
use state::{Action, EnqueueError, Residency, SchedState, Ticket};

pub use memory::{GpuDemand, Holding};
pub use policy::Policy;
pub use state::{ModelLimits, SchedLimits};

/// The right to run one request on a loaded model. Dropping it frees the slot.
pub struct Permit {
    pub model: Arc<LoadedModel>,
    pub index: usize,
    _release: Release,
}

struct Release {
    tx: mpsc::UnboundedSender<Msg>,
    model: usize,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Release { model: self.model });
    }
}

type Reply = oneshot::Sender<Result<Permit, ApiError>>;

enum Msg {
    Acquire { model: usize, reply: Reply },
    Release { model: usize },
    LoadDone { model: usize, result: Result<Arc<LoadedModel>, String> },
    UnloadDone { model: usize },
    Unload { model: usize, force: bool, reply: oneshot::Sender<()> },
    Status { reply: oneshot::Sender<Status> },
    Reload { models: Vec<(ModelSpec, ModelLimits)>, reply: oneshot::Sender<ReloadReport> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// Handle to the owner task; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
    /// Per model: load progress in percent while a load runs, else `None`.
    progress: Progress,
}

/// One watch channel per model, growing with reloads.
type Progress = Arc<parking_lot::RwLock<Vec<watch::Sender<Option<u8>>>>>;

impl Scheduler {
    /// Starts the owner task. `models` must list the registry's entries in
    /// order; `gpus` is asked for a fresh snapshot before each load (an empty
    /// inventory: no GPUs, everything budgeted in host memory).
    pub fn start(
        registry: Arc<Registry>,
        factory: Arc<dyn EngineFactory>,
        models: Vec<ModelLimits>,
        limits: SchedLimits,
        gpus: Arc<dyn GpuInventory>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress: Progress = Arc::new(parking_lot::RwLock::new(models.iter().map(|_| watch::channel(None).0).collect()));
        let mut state = SchedState::new(models, limits, Instant::now());
        match gpus.gpus() {
            Ok(live) => state.set_gpus(&live, gpus.counts_our_usage()),
            Err(e) => tracing::warn!("GPU snapshot failed, will retry before the next load: {e}"),
        }
        let owner = Owner {
            progress: progress.clone(),
            state,
            registry,
            factory,
            gpu_source: gpus.has_gpus(),
            gpus,
            before_load: None,
            unloads: 0,
            waiters: HashMap::new(),
            unload_replies: Vec::new(),
            tx: tx.clone(),
        };
        tokio::spawn(owner.run(rx));
        Self { tx, progress }
    }

    /// Watches `model`'s load progress (percent; `None` when not loading).
    pub fn progress(&self, model: usize) -> watch::Receiver<Option<u8>> {
        self.progress.read()[model].subscribe()
    }

    /// Applies a re-read model list: new names are added, missing ones
    /// retired (they finish in-flight and queued work, then unload), changed
    /// ones retired and added anew. Requests in flight are never dropped.
    pub async fn reload(&self, models: Vec<(ModelSpec, ModelLimits)>) -> Result<ReloadReport, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Reload { models, reply }).map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())
    }

    /// Waits until `model` is loaded and has a free slot for this request.
    pub async fn acquire(&self, model: usize) -> Result<Permit, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Acquire { model, reply }).map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())?
    }

    /// Loads `model` (if needed) and returns once it is loaded.
    pub async fn load(&self, model: usize) -> Result<(), ApiError> {
        self.acquire(model).await.map(drop)
    }

    /// Unloads `model` once its in-flight requests finish; `force` cancels them.
    pub async fn unload(&self, model: usize, force: bool) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Unload { model, force, reply }).map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())
    }

    pub async fn status(&self) -> Result<Status, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Status { reply }).map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())
    }

    /// Fails every waiter and unloads every model; returns when done.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable("the server is shutting down".into())
}

/// A snapshot for `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub policy: Policy,
    /// Host memory budget and what the models hold of it.
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub swaps: u64,
    pub max_wait_ms: u64,
    /// The inventory now, with what our models hold on each GPU.
    pub gpus: Vec<GpuStatus>,
    pub models: Vec<ModelStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuStatus {
    #[serde(flatten)]
    pub info: GpuInfo,
    /// MiB our resident models hold there (measured when NVML could tell).
    pub models_mib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub state: &'static str,
    pub bytes: u64,
    pub bytes_measured: bool,
    pub queue_depth: usize,
    pub in_flight: u32,
    pub slots: u32,
    pub idle_ms: u64,
    pub load_count: u32,
    pub last_load_ms: Option<u64>,
    pub failure: Option<String>,
    /// Where it is loaded (GPUs present and the model loading or loaded).
    pub placement: Option<Placement>,
    /// What it holds while resident: host bytes and MiB per GPU.
    pub holding: Option<Holding>,
}

/// What a reload changed, by model name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

struct Owner {
    progress: Progress,
    state: SchedState,
    registry: Arc<Registry>,
    factory: Arc<dyn EngineFactory>,
    gpus: Arc<dyn GpuInventory>,
    /// Whether there are GPUs to refresh before load decisions.
    gpu_source: bool,
    /// The GPU snapshot taken as the running load started (live inventories
    /// only), with `unloads` at that moment, to measure what the load took.
    before_load: Option<(u64, Vec<GpuInfo>)>,
    /// Unloads started or finished so far: an unload during a load (a ttl,
    /// an admin unload) spoils that load's measurement.
    unloads: u64,
    waiters: HashMap<Ticket, (usize, Reply)>,
    unload_replies: Vec<(usize, oneshot::Sender<()>)>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let wakeup = self.state.next_wakeup(Instant::now()).map(tokio::time::Instant::from_std);
            // A timer wake-up (max_wait or a ttl) brings no message.
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => Some(msg),
                    None => return,
                },
                () = sleep_until(wakeup) => None,
            };
            if let Some(msg) = msg {
                if let Some(reply) = self.handle(msg) {
                    let _ = reply.send(());
                    return;
                }
            }
            self.prune_cancelled();
            if self.gpu_source && self.state.wants_gpu_refresh(Instant::now()) {
                self.refresh_gpus();
            }
            let actions = self.state.poll(Instant::now());
            self.apply(actions);
        }
    }

    /// Applies one message; returns the reply to send when shutting down.
    fn handle(&mut self, msg: Msg) -> Option<oneshot::Sender<()>> {
        let now = Instant::now();
        match msg {
            Msg::Acquire { model, reply } => match self.state.enqueue(model, now) {
                Ok(ticket) => {
                    self.waiters.insert(ticket, (model, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(enqueue_error(e)));
                }
            },
            Msg::Release { model } => self.state.release(model, now),
            Msg::LoadDone { model, result } => {
                self.progress.read()[model].send_replace(None);
                let entry = self.registry.entry(model);
                let fails = match result {
                    Ok(loaded) => {
                        self.measure_gpus(model);
                        let measured = loaded.engine.memory_bytes();
                        entry.set(ModelState::Loaded(loaded));
                        self.state.load_done(model, Ok(measured), now)
                    }
                    Err(reason) => {
                        self.before_load = None;
                        tracing::error!(model = %entry.spec.id, "load failed: {reason}");
                        entry.set(ModelState::Failed(reason.clone()));
                        self.state.load_done(model, Err(reason), now)
                    }
                };
                self.apply(fails);
            }
            Msg::UnloadDone { model } => {
                self.unloads += 1;
                self.registry.entry(model).set(ModelState::Unloaded);
                self.state.unload_done(model);
                let (done, keep): (Vec<_>, Vec<_>) = self.unload_replies.drain(..).partition(|(m, _)| *m == model);
                self.unload_replies = keep;
                done.into_iter().for_each(|(_, r)| {
                    let _ = r.send(());
                });
            }
            Msg::Unload { model, force, reply } => {
                if self.state.models[model].residency != Residency::Loaded {
                    let _ = reply.send(());
                } else {
                    if force {
                        if let Some(loaded) = self.registry.entry(model).loaded() {
                            loaded.engine.cancel_all();
                        }
                    }
                    self.state.request_unload(model);
                    self.unload_replies.push((model, reply));
                }
            }
            Msg::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Msg::Reload { models, reply } => {
                let _ = reply.send(self.reload(models, now));
            }
            Msg::Shutdown { reply } => {
                for (_, (_, waiter)) in self.waiters.drain() {
                    let _ = waiter.send(Err(shutting_down()));
                }
                self.registry.unload_all();
                return Some(reply);
            }
        }
        None
    }

    /// Forgets queued requests whose client went away.
    fn prune_cancelled(&mut self) {
        let gone: Vec<Ticket> = self.waiters.iter().filter(|(_, (_, r))| r.is_closed()).map(|(t, _)| *t).collect();
        for ticket in gone {
            if let Some((model, _)) = self.waiters.remove(&ticket) {
                self.state.cancel(model, ticket);
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Admit { model, ticket } => {
                    let Some((_, reply)) = self.waiters.remove(&ticket) else {
                        self.state.release(model, Instant::now());
                        continue;
                    };
                    let release = Release { tx: self.tx.clone(), model };
                    match self.registry.entry(model).loaded() {
                        // If the client is gone, the returned permit drops here
                        // and its Release frees the slot.
                        Some(loaded) => drop(reply.send(Ok(Permit { model: loaded, index: model, _release: release }))),
                        None => drop(reply.send(Err(ApiError::Internal("admitted to a model that is not loaded".into())))),
                    }
                }
                Action::Load { model } => self.start_load(model),
                Action::Unload { model } => self.start_unload(model),
                Action::Fail { ticket, reason, model } => {
                    if let Some((_, reply)) = self.waiters.remove(&ticket) {
                        let name = self.registry.entry(model).spec.id.clone();
                        let _ = reply.send(Err(ApiError::Unavailable(format!("model `{name}` failed to load: {reason}"))));
                    }
                }
            }
        }
    }

    /// A fresh GPU snapshot for the next load decision.
    fn refresh_gpus(&mut self) {
        match self.gpus.gpus() {
            Ok(live) => self.state.set_gpus(&live, self.gpus.counts_our_usage()),
            Err(e) => tracing::warn!("GPU snapshot failed, deciding on the previous one: {e}"),
        }
    }

    /// After a load: what it took on each of its GPUs, from the free memory
    /// before and after (loads run one at a time, so the difference is ours
    /// unless an unload ran meanwhile; then the plan's figures stay).
    fn measure_gpus(&mut self, model: usize) {
        let Some((unloads_before, before)) = self.before_load.take() else { return };
        let Some(placement) = self.state.models[model].placement.clone() else { return };
        if unloads_before != self.unloads {
            tracing::debug!("an unload ran during the load: keeping the planned GPU figures");
            return;
        }
        let Ok(after) = self.gpus.gpus() else { return };
        // llama.cpp's fitter may use any GPU; our own plan only its devices.
        let devices: Vec<u32> =
            if placement.use_fit_params { after.iter().map(|g| g.index).collect() } else { placement.devices.clone() };
        let mib: Vec<(u32, u64)> = devices
            .iter()
            .filter_map(|&index| {
                let free = |gpus: &[GpuInfo]| gpus.iter().find(|g| g.index == index).map(|g| g.free_mib);
                Some((index, free(&before)?.saturating_sub(free(&after)?)))
            })
            .collect();
        tracing::info!(model = %self.registry.entry(model).spec.id, planned = ?placement.mib_per_device, measured_mib = ?mib, "GPU memory taken by the load");
        self.state.gpu_measured(model, mib);
    }

    fn start_load(&mut self, model: usize) {
        let entry = self.registry.entry(model);
        entry.set(ModelState::Loading);
        let placement = self.state.models[model].placement.clone();
        match &placement {
            Some(p) => tracing::info!(model = %entry.spec.id, kind = ?p.kind, devices = ?p.devices, tensor_split = ?p.tensor_split,
                n_gpu_layers = p.n_gpu_layers, "loading; placement: {}", p.reason),
            None => tracing::info!(model = %entry.spec.id, "loading"),
        }
        self.before_load = match (&placement, self.gpus.counts_our_usage()) {
            (Some(p), true) if !p.devices.is_empty() || p.use_fit_params => self.gpus.gpus().ok().map(|g| (self.unloads, g)),
            _ => None,
        };
        let factory = self.factory.clone();
        let tx = self.tx.clone();
        let watcher = self.progress.clone();
        let progress: crate::registry::Progress = Arc::new(move |fraction: f32| {
            let percent = (fraction.clamp(0.0, 1.0) * 100.0) as u8;
            watcher.read()[model].send_if_modified(|p| {
                let changed = *p != Some(percent);
                *p = Some(percent);
                changed
            });
        });
        tokio::spawn(async move {
            let spec = entry.spec.clone();
            let result = tokio::task::spawn_blocking(move || load_one(factory.as_ref(), &spec, placement.as_ref(), progress))
                .await
                .unwrap_or_else(|e| Err(format!("loader panicked: {e}")))
                .map(Arc::new);
            let _ = tx.send(Msg::LoadDone { model, result });
        });
    }

    fn start_unload(&mut self, model: usize) {
        self.unloads += 1;
        let entry = self.registry.entry(model);
        tracing::info!(model = %entry.spec.id, "unloading");
        let loaded = entry.take_loaded();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Dropping the last handle stops the worker thread and frees the
            // context and weights; that blocks, so not on the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(loaded)).await;
            let _ = tx.send(Msg::UnloadDone { model });
        });
    }

    fn reload(&mut self, models: Vec<(ModelSpec, ModelLimits)>, now: Instant) -> ReloadReport {
        let mut report = ReloadReport::default();
        let current: Vec<(usize, Arc<crate::registry::ModelEntry>)> =
            self.registry.entries().into_iter().enumerate().filter(|(_, e)| !e.is_retired()).collect();
        for (index, entry) in &current {
            match models.iter().find(|(spec, _)| spec.id == entry.spec.id) {
                Some((spec, _)) if *spec == entry.spec => report.unchanged.push(spec.id.clone()),
                found => {
                    entry.retire();
                    self.state.retire(*index);
                    let list = if found.is_some() { &mut report.changed } else { &mut report.removed };
                    list.push(entry.spec.id.clone());
                }
            }
        }
        for (spec, limits) in models {
            if report.unchanged.contains(&spec.id) {
                continue;
            }
            if !report.changed.contains(&spec.id) {
                report.added.push(spec.id.clone());
            }
            // Registry, scheduler state and progress channels grow together.
            self.registry.push(spec);
            self.state.add_model(limits, now);
            self.progress.write().push(watch::channel(None).0);
        }
        tracing::info!(?report, "config reloaded");
        report
    }

    fn status(&self, now: Instant) -> Status {
        let s = &self.state;
        let holdings: Vec<Option<Holding>> = (0..s.models.len())
            .map(|i| s.models[i].residency.occupies_memory().then(|| s.holding(i)))
            .collect();
        let gpus = self
            .gpus
            .gpus()
            .unwrap_or_default()
            .into_iter()
            .map(|info| {
                let models_mib = holdings.iter().flatten().flat_map(|h| &h.gpu_mib).filter(|(i, _)| *i == info.index).map(|(_, m)| m).sum();
                GpuStatus { info, models_mib }
            })
            .collect();
        Status {
            gpus,
            policy: s.limits.policy,
            budget_bytes: s.limits.budget_bytes,
            used_bytes: s.used_bytes(),
            swaps: s.swaps,
            max_wait_ms: s.limits.max_wait.as_millis() as u64,
            models: s
                .models
                .iter()
                .zip(holdings)
                .map(|(m, holding)| ModelStatus {
                    name: m.limits.name.clone(),
                    state: m.residency.name(),
                    bytes: m.limits.bytes,
                    bytes_measured: m.measured,
                    queue_depth: m.queue.len(),
                    in_flight: m.in_flight,
                    slots: m.limits.slots,
                    idle_ms: now.saturating_duration_since(m.last_used).as_millis() as u64,
                    load_count: m.load_count,
                    last_load_ms: m.last_load.map(|d| d.as_millis() as u64),
                    failure: match &m.residency {
                        Residency::Failed { reason, .. } => Some(reason.clone()),
                        _ => None,
                    },
                    placement: m.placement.clone(),
                    holding,
                })
                .collect(),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn enqueue_error(e: EnqueueError) -> ApiError {
    match e {
        EnqueueError::QueueFull { .. } => ApiError::Overloaded { message: e.to_string(), retry_after_s: 1 },
        EnqueueError::BackingOff { retry_in_s, .. } => ApiError::Unavailable(format!("{e} (retry after {retry_in_s}s)")),
    }
}
