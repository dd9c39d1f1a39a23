//! The owner task: the one place that mutates scheduling state. It applies
//! messages (acquire, release, load/unload results, admin requests, reload)
//! to `SchedState`, carries out the actions its `poll` returns, and publishes
//! a [`Snapshot`] after every step. Replies go out after the snapshot that
//! reflects them is published, so a caller never reads an older state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::snapshot::{ModelView, Snapshot, SwapRecord};
use super::state::{Action, Residency, SchedState, Ticket};
use super::{Clock, Fetcher, Permit, Registration, ReloadReport, Release, SchedError, SchedLimits};
use crate::engine::loaded::{load_one, LoadedModel};
use crate::engine::EngineFactory;
use crate::gpu::{GpuInfo, GpuInventory};
use crate::types::{ModelSpec, Progress};

type Reply = oneshot::Sender<Result<Permit, SchedError>>;

#[path = "owner_models.rs"]
mod models;

pub(super) enum Msg {
    /// `explicit`: a load asked for by name (admin, `/models/load`), not a request.
    Acquire { model: usize, reply: Reply, explicit: bool },
    Release { model: usize },
    Progress { model: usize, percent: u8 },
    /// A hub model's download ended.
    Fetched { model: usize, result: Result<Registration, String> },
    LoadDone { model: usize, result: Result<Arc<LoadedModel>, String> },
    /// `slept`: the engine kept its weights asleep.
    UnloadDone { model: usize, slept: bool },
    Unload { model: usize, force: bool, reply: oneshot::Sender<()> },
    Sync { reply: oneshot::Sender<Arc<Snapshot>> },
    Reload { models: Vec<Registration>, reply: oneshot::Sender<ReloadReport> },
    Retire { model: usize, reply: oneshot::Sender<()> },
    Add { model: Box<Registration>, reply: oneshot::Sender<usize> },
    Prefetch { model: usize },
    Shutdown { reply: oneshot::Sender<()> },
}

/// What the owner keeps per model beside `SchedState`'s figures.
struct Entry {
    spec: Arc<ModelSpec>,
    n_vocab: Option<u32>,
    created: u64,
    loaded: Option<Arc<LoadedModel>>,
    progress: Option<u8>,
    /// While its download runs: the requests that wait for it.
    fetching: Option<Vec<(Reply, bool)>>,
}

type Deferred = Box<dyn FnOnce(&Arc<Snapshot>) + Send>;

pub(super) struct Owner {
    state: SchedState,
    entries: Vec<Entry>,
    factory: Arc<dyn EngineFactory>,
    fetcher: Option<Arc<dyn Fetcher>>,
    gpus: Arc<dyn GpuInventory>,
    clock: Arc<dyn Clock>,
    /// Whether there are GPUs to refresh before load decisions.
    gpu_source: bool,
    /// The GPU snapshot taken as the running load started (live inventories
    /// only), with `unloads` at that moment, to measure what the load took.
    before_load: Option<(u64, Vec<GpuInfo>)>,
    /// Unloads started or finished so far: an unload during a load (a ttl,
    /// an admin unload) spoils that load's measurement.
    unloads: u64,
    /// Each waiter's model, reply, and when it came with the wait it was expected to have.
    waiters: HashMap<Ticket, (usize, Reply, Instant, Duration)>,
    unload_replies: Vec<(usize, oneshot::Sender<()>)>,
    /// Evictions since the last load began: model, start, duration once done.
    evictions: Vec<(usize, Instant, Option<Duration>)>,
    /// The running load: when it began, how long its first waiter had
    /// waited, and the evictions made for it.
    swap: Option<(Instant, Duration, Vec<(usize, Instant, Option<Duration>)>)>,
    recent_swaps: std::collections::VecDeque<SwapRecord>,
    /// The model whose file was last read ahead (see `read_ahead`).
    read_ahead_for: Option<usize>,
    /// Replies to send once this step's snapshot is published.
    deferred: Vec<Deferred>,
    publish: watch::Sender<Arc<Snapshot>>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Owner {
    pub(super) fn new(
        models: Vec<Registration>,
        factory: Arc<dyn EngineFactory>,
        limits: SchedLimits,
        gpus: Arc<dyn GpuInventory>,
        clock: Arc<dyn Clock>,
        tx: mpsc::UnboundedSender<Msg>,
        fetcher: Option<Arc<dyn Fetcher>>,
    ) -> (Self, watch::Receiver<Arc<Snapshot>>) {
        let now = clock.now();
        let mut state = SchedState::new(Vec::new(), limits, now);
        let mut entries = Vec::new();
        for r in models {
            state.add_model(r.limits, now);
            entries.push(entry(r.spec, r.n_vocab));
        }
        match gpus.gpus() {
            Ok(live) => state.set_gpus(&live, gpus.counts_our_usage()),
            Err(e) => tracing::warn!("GPU snapshot failed, will retry before the next load: {e}"),
        }
        let mut owner = Self {
            state,
            entries,
            factory,
            fetcher,
            gpu_source: gpus.has_gpus(),
            gpus,
            clock,
            before_load: None,
            unloads: 0,
            waiters: HashMap::new(),
            unload_replies: Vec::new(),
            evictions: Vec::new(),
            swap: None,
            recent_swaps: Default::default(),
            read_ahead_for: None,
            deferred: Vec::new(),
            publish: watch::channel(Arc::new(Snapshot::empty())).0,
            tx,
        };
        let rx = owner.publish.subscribe();
        owner.publish_snapshot();
        (owner, rx)
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let wakeup = self.state.next_wakeup(self.clock.now());
            // A timer wake-up (max_wait, linger or a ttl) brings no message.
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => Some(msg),
                    None => return,
                },
                () = sleep_until(self.clock.as_ref(), wakeup) => None,
            };
            if let Some(msg) = msg {
                if let Some(reply) = self.handle(msg) {
                    self.publish_snapshot();
                    let _ = reply.send(());
                    return;
                }
            }
            self.prune_cancelled();
            let now = self.clock.now();
            if self.gpu_source && self.state.wants_gpu_refresh(now) {
                self.refresh_gpus();
            }
            let actions = self.state.poll(now);
            self.apply(actions);
            self.read_ahead(now);
            self.publish_snapshot();
        }
    }

    /// Applies one message; returns the reply to send when shutting down.
    fn handle(&mut self, msg: Msg) -> Option<oneshot::Sender<()>> {
        let now = self.clock.now();
        match msg {
            Msg::Acquire { model, reply, explicit } => {
                self.unload_if_stale(model);
                if !explicit && !self.state.serves_without_load(model) {
                    let _ = reply.send(Err(SchedError::NotLoaded(self.entries[model].spec.id.clone())));
                    return None;
                }
                if self.entries[model].spec.fetch.is_some() {
                    self.fetch(model, reply, explicit);
                    return None;
                }
                match self.state.enqueue(model, now) {
                    Ok(ticket) => {
                        // What enqueue expected, as a refusal would have judged it.
                        let raw = self.state.models[model].queue.back().map_or(Duration::ZERO, |w| w.expected);
                        let expected = raw.mul_f64(self.state.wait_calibration);
                        self.waiters.insert(ticket, (model, reply, now, expected));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Msg::Release { model } => {
                self.state.release(model, now);
                self.unload_if_stale(model);
            }
            Msg::Progress { model, percent } => self.entries[model].progress = Some(percent),
            Msg::Fetched { model, result } => self.fetched(model, result),
            Msg::LoadDone { model, result } => {
                self.entries[model].progress = None;
                let metrics = crate::metrics::global();
                let id = self.entries[model].spec.id.clone();
                if let Some((started, _, _)) = &self.swap {
                    metrics.load_seconds.with_label_values(&[&id]).observe(now.saturating_duration_since(*started).as_secs_f64());
                }
                metrics.loads.with_label_values(&[id.as_str(), if result.is_ok() { "ok" } else { "error" }]).inc();
                let fails = match result {
                    Ok(loaded) => {
                        self.measure_gpus(model);
                        self.record_swap(model, &loaded, now);
                        let measured = loaded.engine.memory_bytes();
                        let sleep_cost = loaded.engine.sleep_cost();
                        if let Err(why) = &sleep_cost {
                            tracing::info!(model = %id, "an eviction will unload it for good: it cannot sleep ({why})");
                        }
                        self.state.models[model].sleep_cost = sleep_cost;
                        self.state.models[model].pinned_awake = loaded.engine.pinned_bytes();
                        self.entries[model].loaded = Some(loaded);
                        self.state.load_done(model, Ok(measured), now)
                    }
                    Err(reason) => {
                        self.before_load = None;
                        tracing::error!(model = %self.entries[model].spec.id, "load failed: {reason}");
                        self.state.load_done(model, Err(reason), now)
                    }
                };
                self.apply(fails);
            }
            Msg::UnloadDone { model, slept } => {
                self.unloads += 1;
                let pending = self.evictions.iter_mut().chain(self.swap.iter_mut().flat_map(|s| s.2.iter_mut()));
                for (m, started, took) in pending {
                    if *m == model && took.is_none() {
                        *took = Some(now.saturating_duration_since(*started));
                    }
                }
                if self.state.models[model].asleep.is_some() && !slept {
                    tracing::warn!(model = %self.entries[model].spec.id, "chosen to sleep, but its engine unloaded it");
                }
                let release = self.state.unload_done(model, slept);
                self.apply(release);
                let (done, keep): (Vec<_>, Vec<_>) = self.unload_replies.drain(..).partition(|(m, _)| *m == model);
                self.unload_replies = keep;
                for (_, reply) in done {
                    self.defer(move |_| { let _ = reply.send(()); });
                }
            }
            Msg::Unload { model, force, reply } => {
                let m = &self.state.models[model];
                if m.residency == Residency::Unloading && m.asleep.is_some() {
                    // Unloading to sleep: released once it is done (then the reply).
                    let none = self.state.drop_sleeper(model);
                    self.apply(none);
                    self.unload_replies.push((model, reply));
                } else if m.residency != Residency::Loaded {
                    // An admin unload of a sleeping model releases what it keeps.
                    let dropped = self.state.drop_sleeper(model);
                    self.apply(dropped);
                    let _ = reply.send(());
                } else {
                    if force {
                        if let Some(loaded) = &self.entries[model].loaded {
                            loaded.cancel_all();
                        }
                    }
                    self.state.request_unload(model);
                    self.unload_replies.push((model, reply));
                }
            }
            Msg::Sync { reply } => self.defer(move |snap| drop(reply.send(snap.clone()))),
            Msg::Reload { models, reply } => {
                let report = self.reload(models, now);
                self.defer(move |_| drop(reply.send(report)));
            }
            Msg::Add { model, reply } => {
                let same = (0..self.entries.len()).find(|&i| !self.state.models[i].retired && self.entries[i].spec.id == model.spec.id);
                let index = same.unwrap_or_else(|| {
                    self.state.add_model(model.limits, now);
                    self.entries.push(entry(model.spec, model.n_vocab));
                    self.entries.len() - 1
                });
                self.defer(move |_| { let _ = reply.send(index); });
            }
            Msg::Prefetch { model } => self.prefetch(model),
            Msg::Retire { model, reply } => {
                self.state.retire(model);
                self.defer(move |_| { let _ = reply.send(()); });
            }
            Msg::Shutdown { reply } => {
                for (_, (_, waiter, _, _)) in self.waiters.drain() {
                    let _ = waiter.send(Err(SchedError::ShuttingDown));
                }
                // Open generations end now (their streams get an error
                // event); dropping the engines stops their workers and frees
                // memory once the last request lets go of its model.
                for e in &mut self.entries {
                    if let Some(loaded) = e.loaded.take() {
                        loaded.cancel_all();
                    }
                }
                return Some(reply);
            }
        }
        None
    }

    fn defer(&mut self, f: impl FnOnce(&Arc<Snapshot>) + Send + 'static) {
        self.deferred.push(Box::new(f));
    }

    /// Forgets queued requests whose client went away.
    fn prune_cancelled(&mut self) {
        let gone: Vec<Ticket> = self.waiters.iter().filter(|(_, (_, r, _, _))| r.is_closed()).map(|(t, _)| *t).collect();
        for ticket in gone {
            if let Some((model, ..)) = self.waiters.remove(&ticket) {
                self.state.cancel(model, ticket);
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Admit { model, ticket } => {
                    let Some((_, reply, since, expected)) = self.waiters.remove(&ticket) else {
                        self.state.release(model, self.clock.now());
                        continue;
                    };
                    let waited = self.clock.now().saturating_duration_since(since);
                    let id = self.entries[model].spec.id.as_str();
                    let metrics = crate::metrics::global();
                    metrics.queue_wait.with_label_values(&[id]).observe(waited.as_secs_f64());
                    if waited > self.state.limits.max_wait {
                        metrics.wait_over_bound.with_label_values(&[id]).inc();
                    }
                    tracing::debug!(model = %self.entries[model].spec.id, waited_ms = waited.as_millis() as u64,
                        expected_ms = expected.as_millis() as u64, "admitted");
                    let release = Release { tx: self.tx.clone(), model };
                    let result = match &self.entries[model].loaded {
                        Some(loaded) => Ok(Permit { model: loaded.clone(), index: model, _release: release }),
                        None => Err(SchedError::Internal("admitted to a model that is not loaded".into())),
                    };
                    // If the client is gone, the permit drops here and its
                    // Release frees the slot.
                    self.defer(move |_| drop(reply.send(result)));
                }
                Action::Load { model } => self.start_load(model),
                Action::Unload { model } => self.start_unload(model),
                Action::Sleep { model } => {
                    if let Some(loaded) = &self.entries[model].loaded {
                        loaded.engine.sleep_on_unload();
                    }
                }
                Action::DropSleeper { model } => {
                    tracing::info!(model = %self.entries[model].spec.id, "releasing what the sleeping model keeps");
                    // Freeing a model (and GBs of pinned memory) blocks: not on the runtime.
                    let (factory, spec) = (self.factory.clone(), self.entries[model].spec.clone());
                    tokio::task::spawn_blocking(move || factory.release_sleeper(&spec));
                }
                Action::Fail { ticket, reason, model } => {
                    if let Some((_, reply, ..)) = self.waiters.remove(&ticket) {
                        let model = self.entries[model].spec.id.clone();
                        let _ = reply.send(Err(SchedError::LoadFailed { model, reason }));
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
    /// A loaded model whose file changed on disk (or was cut short under its
    /// mapping) admits nothing new and unloads once its requests finish; its
    /// queued requests then load it again from the file as it is now.
    fn unload_if_stale(&mut self, model: usize) {
        let m = &self.state.models[model];
        if m.residency != Residency::Loaded || m.unload_requested {
            return;
        }
        let Some(why) = self.entries[model].loaded.as_ref().and_then(|l| l.engine.stale()) else { return };
        tracing::warn!(model = %self.entries[model].spec.id, "{why}");
        self.state.request_unload(model);
    }

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
        tracing::info!(model = %self.entries[model].spec.id, planned = ?placement.mib_per_device, measured_mib = ?mib, "GPU memory taken by the load");
        self.state.gpu_measured(model, mib);
    }

    /// Starts reading the next model's file while the current ones drain or
    /// unload (once per target).
    fn read_ahead(&mut self, now: Instant) {
        let next = self.state.next_load(now);
        if let Some(model) = next.filter(|_| next != self.read_ahead_for) {
            let path = self.entries[model].spec.path.clone();
            tokio::task::spawn_blocking(move || crate::engine::prefetch::read_ahead(&path));
        }
        self.read_ahead_for = next;
    }

    /// A load that evicted models is a swap: log and keep where its time went.
    fn record_swap(&mut self, model: usize, loaded: &LoadedModel, now: Instant) {
        let Some((started, waited, evicted)) = self.swap.take() else { return };
        if evicted.is_empty() {
            return;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let timings = loaded.engine.load_timings();
        let record = SwapRecord {
            model: self.entries[model].spec.id.clone(),
            evicted: evicted.iter().map(|(m, _, _)| self.entries[*m].spec.id.clone()).collect(),
            wait_ms: ms(waited),
            unload_ms: evicted.iter().filter_map(|(_, _, took)| *took).map(ms).max().unwrap_or(0),
            weights_ms: timings.weights_ms,
            context_ms: timings.context_ms,
            load_ms: ms(now.saturating_duration_since(started)),
            at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        tracing::info!(model = %record.model, evicted = ?record.evicted, wait_ms = record.wait_ms, unload_ms = record.unload_ms,
            weights_ms = record.weights_ms, context_ms = record.context_ms, load_ms = record.load_ms, "swap");
        let metrics = crate::metrics::global();
        metrics.swaps.inc();
        let phases = [("wait", record.wait_ms), ("unload", record.unload_ms), ("weights", record.weights_ms), ("context", record.context_ms), ("load", record.load_ms)];
        for (phase, ms) in phases {
            metrics.swap_phase.with_label_values(&[phase]).observe(ms as f64 / 1000.0);
        }
        if self.recent_swaps.len() == 16 {
            self.recent_swaps.pop_front();
        }
        self.recent_swaps.push_back(record);
    }

    fn start_load(&mut self, model: usize) {
        let now = self.clock.now();
        let waited = self.state.models[model].oldest_wait().map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.swap = Some((now, waited, std::mem::take(&mut self.evictions)));
        let spec = self.entries[model].spec.clone();
        let placement = self.state.models[model].placement.clone();
        match &placement {
            Some(p) => tracing::info!(model = %spec.id, kind = ?p.kind, devices = ?p.devices, tensor_split = ?p.tensor_split,
                n_gpu_layers = p.n_gpu_layers, "loading; placement: {}", p.reason),
            None => tracing::info!(model = %spec.id, "loading"),
        }
        self.before_load = match (&placement, self.gpus.counts_our_usage()) {
            (Some(p), true) if !p.devices.is_empty() || p.use_fit_params => self.gpus.gpus().ok().map(|g| (self.unloads, g)),
            _ => None,
        };
        let factory = self.factory.clone();
        let tx = self.tx.clone();
        let progress_tx = self.tx.clone();
        let progress: Progress = Arc::new(move |fraction: f32| {
            let percent = (fraction.clamp(0.0, 1.0) * 100.0) as u8;
            let _ = progress_tx.send(Msg::Progress { model, percent });
        });
        tokio::spawn(async move {
            let load = move || load_one(factory.as_ref(), &spec, placement.as_ref(), progress);
            let result = match tokio::task::spawn_blocking(load).await {
                Ok(loaded) => loaded.map(Arc::new).map_err(|e| e.to_string()),
                Err(e) => Err(format!("loader panicked: {e}")),
            };
            let _ = tx.send(Msg::LoadDone { model, result });
        });
    }

    fn start_unload(&mut self, model: usize) {
        self.unloads += 1;
        let reason = if self.state.models[model].evicted() { "evicted" } else { "other" };
        crate::metrics::global().unloads.with_label_values(&[self.entries[model].spec.id.as_str(), reason]).inc();
        if self.state.models[model].evicted() {
            self.evictions.push((model, self.clock.now(), None));
        }
        let sleeps = self.state.models[model].asleep.is_some();
        tracing::info!(model = %self.entries[model].spec.id, "{}", if sleeps { "unloading to sleep" } else { "unloading" });
        let loaded = self.entries[model].loaded.take();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Shutting the engine down stops its worker and frees its context
            // (and puts its weights to sleep) now, even while a status or
            // metrics reader still holds a handle; that blocks, so not on the
            // runtime.
            let stop = move || {
                let slept = loaded.as_ref().is_some_and(|l| l.engine.shutdown());
                drop(loaded);
                slept
            };
            let slept = tokio::task::spawn_blocking(stop).await.unwrap_or(false);
            let _ = tx.send(Msg::UnloadDone { model, slept });
        });
    }

    /// Publishes the state after this step, then sends the replies it holds.
    fn publish_snapshot(&mut self) {
        let snapshot = Arc::new(self.snapshot());
        self.publish.send_replace(snapshot.clone());
        for reply in self.deferred.drain(..) {
            reply(&snapshot);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let s = &self.state;
        let models = s
            .models
            .iter()
            .zip(&self.entries)
            .enumerate()
            .map(|(i, (m, e))| ModelView {
                index: i,
                spec: e.spec.clone(),
                n_vocab: e.n_vocab,
                created: e.created,
                retired: m.retired,
                state: if e.fetching.is_some() { "downloading" } else { m.state_name() },
                sleeping_bytes: m.asleep.filter(|_| m.residency == Residency::Unloaded),
                engine: e.loaded.as_ref().map(Arc::downgrade),
                progress: e.progress,
                bytes: m.limits.bytes,
                bytes_measured: m.measured,
                queue_depth: m.queue.len(),
                in_flight: m.in_flight,
                slots: m.limits.slots,
                last_used: m.last_used,
                load_count: m.load_count,
                last_load_ms: m.last_load.map(|d| d.as_millis() as u64),
                lingers: m.linger() > Duration::ZERO,
                failure: match &m.residency {
                    Residency::Failed { reason, .. } => Some(reason.clone()),
                    _ => None,
                },
                placement: m.placement.clone(),
                holding: m.residency.occupies_memory().then(|| s.holding(i)),
            })
            .collect();
        Snapshot {
            models,
            policy: s.limits.policy,
            budget_bytes: s.limits.budget_bytes,
            used_bytes: s.used_bytes(),
            sleep_budget_bytes: s.limits.sleep.budget_bytes,
            swaps: s.swaps,
            max_wait_ms: s.limits.max_wait.as_millis() as u64,
            any_model_name: s.limits.any_model_name,
            autoload: s.limits.autoload,
            max_loaded: s.limits.max_loaded,
            recent_swaps: self.recent_swaps.iter().cloned().collect(),
        }
    }
}

fn entry(spec: ModelSpec, n_vocab: Option<u32>) -> Entry {
    Entry { spec: Arc::new(spec), n_vocab, created: crate::types::unix_now(), loaded: None, progress: None, fetching: None }
}


async fn sleep_until(clock: &dyn Clock, at: Option<std::time::Instant>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
