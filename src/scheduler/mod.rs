//! The cache-aware scheduler: which model is resident, who is admitted, when
//! to swap. `state.rs` is the synchronous state machine whose `poll` applies
//! the pure decision (`decide`), `policy.rs` the eviction choice,
//! `pools.rs` the memory pools, and this file the single owner task that
//! feeds events to the state, carries out its actions (loads and unloads run
//! off the async runtime on blocking threads) and publishes a [`Snapshot`]
//! after every step. Time comes from an injected [`Clock`].
//!
//! A request gets a [`Permit`] from [`Scheduler::acquire`]: the model is
//! loaded and one of its slots is reserved for it until the permit is dropped.
//! The scheduler's slots are the only admission control.

pub mod clock;
pub mod decide;
mod overload;
pub mod pools;
pub mod policy;
pub mod sleep;
pub mod snapshot;
pub mod state;
mod turns;

#[cfg(test)]
#[path = "state_tests.rs"]
mod state_tests;

#[cfg(test)]
#[path = "decide_tests.rs"]
mod decide_tests;

mod owner;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::loaded::LoadedModel;
use crate::engine::EngineFactory;
use crate::gpu::GpuInventory;
use crate::types::ModelSpec;
use owner::{Msg, Owner};

pub use clock::{Clock, ManualClock, SystemClock};
pub use decide::{Decision, Step, UnloadReason};
pub use pools::{GpuDemand, Holding};
pub use policy::Policy;
pub use snapshot::{GpuStatus, ModelView, Snapshot};
pub use overload::QUANTUM_SWAPS;
pub use state::{EnqueueError, ModelLimits, SchedLimits};

/// Why the scheduler could not serve a request; the API maps each to HTTP.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no model is registered")]
    NoModels,
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    /// The model's queue is full, or it is backing off after a failed load.
    #[error(transparent)]
    Rejected(#[from] EnqueueError),
    /// `--no-models-autoload` and the model is not loaded.
    #[error("the model `{0}` is not loaded and this server loads models only when asked (--no-models-autoload): POST /models/load first")]
    NotLoaded(String),
    #[error("model `{model}` failed to load: {reason}")]
    LoadFailed { model: String, reason: String },
    /// A broken invariant: admitted to a model that is not loaded.
    #[error("{0}")]
    Internal(String),
}

/// A model to serve, as the scheduler registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub spec: ModelSpec,
    pub limits: ModelLimits,
    /// Vocabulary size from the GGUF header, when it could be read.
    pub n_vocab: Option<u32>,
}

/// Downloads a model registered from the hub before its first load. The
/// scheduler decides when (the first request for it; every request that
/// comes meanwhile waits for the same download, and a client that leaves
/// cancels nothing); the fetcher does the work and answers the model's
/// registration as it is on disk (path, memory estimate).
pub trait Fetcher: Send + Sync {
    fn fetch(&self, spec: Arc<crate::types::ModelSpec>, progress: crate::types::Progress) -> FetchFuture;
}

pub type FetchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Registration, String>> + Send>>;

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

/// Handle to the owner task; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    clock: Arc<dyn Clock>,
    gpus: Arc<dyn GpuInventory>,
}

impl Scheduler {
    /// Starts the owner task. `gpus` is asked for a fresh snapshot before each
    /// load decision (an empty inventory: no GPUs, everything budgeted in host
    /// memory).
    pub fn start(
        models: Vec<Registration>,
        factory: Arc<dyn EngineFactory>,
        limits: SchedLimits,
        gpus: Arc<dyn GpuInventory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_fetching(models, factory, limits, gpus, clock, None)
    }

    /// `start`, with what downloads models registered from the hub
    /// (`ModelSpec::fetch`) on their first request.
    pub fn start_fetching(
        models: Vec<Registration>,
        factory: Arc<dyn EngineFactory>,
        limits: SchedLimits,
        gpus: Arc<dyn GpuInventory>,
        clock: Arc<dyn Clock>,
        fetcher: Option<Arc<dyn Fetcher>>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (owner, snapshot) = Owner::new(models, factory, limits, gpus.clone(), clock.clone(), tx.clone(), fetcher);
        tokio::spawn(owner.run(rx));
        Self { tx, snapshot, clock, gpus }
    }

    /// The latest published state (no round trip to the owner).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every snapshot the owner publishes.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The snapshot after every message sent so far (a permit dropped just
    /// before, say) has been applied.
    pub async fn synced(&self) -> Result<Arc<Snapshot>, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Sync { reply })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)
    }

    /// Waits until a published snapshot satisfies `check`.
    pub async fn wait_for(&self, check: impl Fn(&Snapshot) -> bool) -> Result<Arc<Snapshot>, SchedError> {
        let mut rx = self.watch();
        let snap = rx.wait_for(|s| check(s)).await.map_err(|_| SchedError::ShuttingDown)?;
        Ok(snap.clone())
    }

    /// The scheduler's clock (idle times in /admin/status).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The live GPU inventory with what our models hold on each GPU.
    pub fn gpu_status(&self, snapshot: &Snapshot) -> Vec<GpuStatus> {
        snapshot.gpu_status(self.gpus.gpus().unwrap_or_default())
    }

    /// Applies a re-read model list: new names are added, missing ones
    /// retired (they finish in-flight and queued work, then unload), changed
    /// ones retired and added anew. Requests in flight are never dropped.
    pub async fn reload(&self, models: Vec<Registration>) -> Result<ReloadReport, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Reload { models, reply })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)
    }

    /// Waits until `model` is loaded and has a free slot for this request.
    pub async fn acquire(&self, model: usize) -> Result<Permit, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Acquire { model, reply, explicit: false })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)?
    }

    /// Loads `model` (if needed) and returns once it is loaded; an explicit
    /// load, so it loads even with autoload off.
    pub async fn load(&self, model: usize) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Acquire { model, reply, explicit: true })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)?.map(drop)
    }

    /// Unloads `model` once its in-flight requests finish; `force` cancels
    /// them (their clients get a "model unloaded" error).
    pub async fn unload(&self, model: usize, force: bool) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Unload { model, force, reply })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)
    }

    /// Adds a model at run time; its index.
    pub async fn add(&self, model: Registration) -> Result<usize, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Add { model: Box::new(model), reply })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)
    }

    /// Starts downloading a model registered from the hub without loading
    /// it (llama-server's `POST /models`); nothing for one on disk.
    pub fn prefetch(&self, model: usize) -> Result<(), SchedError> {
        self.send(Msg::Prefetch { model })
    }

    /// Takes `model` off the list (404 from now on); it finishes what is
    /// queued and in flight, then unloads, as a model a reload removed.
    pub async fn retire(&self, model: usize) -> Result<(), SchedError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Retire { model, reply })?;
        rx.await.map_err(|_| SchedError::ShuttingDown)
    }

    /// Fails every waiter, cancels every generation and lets go of every
    /// model. Returns the models that were loaded: a request still holding
    /// one keeps it alive a moment longer (see [`Scheduler::models_dropped`]).
    pub async fn shutdown(&self) -> Vec<std::sync::Weak<LoadedModel>> {
        let loaded = self.snapshot().models.iter().filter_map(|m| m.engine.clone()).collect();
        let (reply, rx) = oneshot::channel();
        if self.send(Msg::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
        loaded
    }

    /// Waits until every model in `models` is dropped: its worker has
    /// stopped and saved what its slots held.
    pub async fn models_dropped(models: &[std::sync::Weak<LoadedModel>]) {
        while models.iter().any(|m| m.strong_count() > 0) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn send(&self, msg: Msg) -> Result<(), SchedError> {
        self.tx.send(msg).map_err(|_| SchedError::ShuttingDown)
    }
}

/// What a reload changed, by model name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}
