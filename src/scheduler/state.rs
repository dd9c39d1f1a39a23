//! The scheduler's state machine: plain data plus event methods, synchronous
//! and deterministic (time is passed in), so tests drive it step by step.
//!
//! Per model:
//! ```text
//!   Unloaded --Load--> Loading --ok--> Loaded --Unload--> Unloading --> Unloaded
//!                         \--err--> Failed (retry after a backoff) --> Loading
//! ```
//! Events (`enqueue`, `release`, `load_done`, ...) update the state; `poll`
//! decides what happens next (`decide.rs`: a pure `decide`, then `apply`)
//! and returns the actions for the owner task to carry out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::pools::{self, GpuDemand, Holding};
use super::policy::Policy;
use crate::gpu::{GpuInfo, Placement, PlacementKind};

pub type Ticket = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Residency {
    Unloaded,
    Loading,
    Loaded,
    Unloading,
    Failed { reason: String, retry_at: Instant },
}

impl Residency {
    pub fn name(&self) -> &'static str {
        match self {
            Residency::Unloaded => "unloaded",
            Residency::Loading => "loading",
            Residency::Loaded => "loaded",
            Residency::Unloading => "unloading",
            Residency::Failed { .. } => "failed",
        }
    }

    /// Holds (or is about to hold, or still holds) memory.
    pub fn occupies_memory(&self) -> bool {
        matches!(self, Residency::Loading | Residency::Loaded | Residency::Unloading)
    }
}

/// What the scheduler needs to know about a model up front.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLimits {
    pub name: String,
    /// Memory footprint estimate; replaced by the measured figure after a load.
    pub bytes: u64,
    /// Sequence slots: how many requests may be in flight at once.
    pub slots: u32,
    /// Evicts every other model while it is resident.
    pub exclusive: bool,
    /// Unload after this long idle.
    pub ttl: Option<Duration>,
    /// What GPU placement needs; `None` when the GGUF header could not be
    /// read (the model is then budgeted in host memory only).
    pub gpu: Option<GpuDemand>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Waiter {
    pub ticket: Ticket,
    pub since: Instant,
    /// The wait it was expected to have (overload.rs), before calibration.
    pub expected: Duration,
    /// The turn of its model it was promised (`turns.rs`): set when it came
    /// while models took turns for the memory; its model does not give way
    /// before it is admitted in that turn.
    pub promise: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ModelSched {
    pub limits: ModelLimits,
    pub residency: Residency,
    /// True once `limits.bytes` is a measured figure.
    pub measured: bool,
    pub in_flight: u32,
    pub queue: VecDeque<Waiter>,
    pub last_used: Instant,
    /// Admits nothing new: it must empty so another model can take its room.
    pub closed: bool,
    /// An admin asked for an unload: admit nothing, unload once idle.
    pub unload_requested: bool,
    /// Removed by a config reload: serves what it has, then unloads for good.
    pub retired: bool,
    pub load_count: u32,
    pub failures: u32,
    pub last_load: Option<Duration>,
    /// Where it is (or is being) loaded, when there are GPUs.
    pub placement: Option<Placement>,
    /// MiB per GPU measured after the load (NVML), replacing the plan's figures.
    pub gpu_measured: Option<Vec<(u32, u64)>>,
    pub(super) load_started: Option<Instant>,
    /// Evicted for a swap that has not finished loading: a request for this
    /// model now means the eviction came too early (see `linger`).
    pub(super) watching_comeback: bool,
    /// Whether it lingers when idle (see `linger`): true until an eviction
    /// shows otherwise.
    pub(super) lingers: bool,
    /// When its current load finished (its quantum counts from there).
    pub(super) loaded_at: Option<Instant>,
    /// Its turns for the memory so far (one per load) and how many requests
    /// the current one admitted while another model waited (`turns.rs`).
    pub(super) turn: u64,
    pub(super) turn_admitted: usize,
    /// Typical time a request holds a slot (see `overload.rs`).
    pub service: Option<Duration>,
    /// When each request now holding a slot was admitted, oldest first.
    pub(super) admitted_at: VecDeque<Instant>,
    /// What sleeping would cost this load (`sleep.rs`), set when it loads.
    pub sleep_cost: Result<u64, String>,
    /// Asleep (chosen to sleep at its eviction): the pinned host bytes it
    /// holds. A load wakes it.
    pub asleep: Option<u64>,
    /// Loaded: the pinned copy it kept from an earlier sleep (0 if none).
    pub pinned_awake: u64,
    /// An admin unload came while it was unloading to sleep: what it keeps
    /// is released once the unload is done.
    pub(super) release_when_unloaded: bool,
}

impl ModelSched {
    pub(super) fn busy(&self) -> bool {
        self.in_flight > 0 || !self.queue.is_empty()
    }
    /// What it holds under `placement`: the plan's figures (measured ones
    /// when known) when something is offloaded, else all in host memory.
    fn holding_with(&self, placement: Option<&Placement>) -> Holding {
        match placement {
            Some(p) if p.kind != PlacementKind::CpuOnly => {
                let planned = Holding::of_placement(p);
                Holding { host_bytes: planned.host_bytes, gpu_mib: self.gpu_measured.clone().unwrap_or(planned.gpu_mib) }
            }
            _ => Holding { host_bytes: self.limits.bytes, gpu_mib: Vec::new() },
        }
    }

    /// Its state's name in the API: a residency, or `sleeping`.
    pub fn state_name(&self) -> &'static str {
        match (&self.residency, self.asleep) {
            (Residency::Unloaded, Some(_)) => "sleeping",
            (r, _) => r.name(),
        }
    }

    /// Unloaded (or unloading) to make room for a swap still loading.
    pub(super) fn evicted(&self) -> bool {
        self.watching_comeback
    }

    pub(super) fn oldest_wait(&self) -> Option<Instant> {
        self.queue.front().map(|w| w.since)
    }
    /// How long an idle model is kept before it may be evicted for another:
    /// as long as it took to load (ski rental: idling that long costs no
    /// more than the reload we might save), but only while lingering has paid
    /// off. It has when, the last time this model was evicted, a request for
    /// it came back before the swap that evicted it had finished loading
    /// (interleaved traffic: keeping it would have served that request
    /// without a reload). When its requests only come after the other
    /// model's (a client alternating models, one request at a time),
    /// lingering only makes the waiting request wait, and it stops.
    /// max_wait still bounds everyone's wait.
    pub(super) fn linger(&self) -> Duration {
        if self.lingers {
            self.last_load.unwrap_or_default()
        } else {
            Duration::ZERO
        }
    }
}

/// Server-wide knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedLimits {
    /// Host memory the models may hold (all of a model without GPUs; the
    /// part a placement leaves on the CPU with them). GPUs are budgeted per
    /// GPU from their free memory (`SchedState::gpus`).
    pub budget_bytes: u64,
    pub max_loaded: Option<usize>,
    pub max_wait: Duration,
    /// Per-model queue bound; beyond it requests get 429.
    pub max_queue: usize,
    /// A request expected to wait longer than this gets 429 (see
    /// `overload.rs`); `None`: no bound on the expected wait.
    pub max_queue_wait: Option<Duration>,
    pub policy: Policy,
    /// First retry delay after a failed load; doubles per failure (max 64x).
    pub retry_backoff: Duration,
    /// How much evicted models may keep asleep (`sleep.rs`).
    pub sleep: super::sleep::SleepLimits,
    /// Requests load the model they name; off (`--no-models-autoload`),
    /// only an explicit load does (see `SchedState::serves_without_load`).
    pub autoload: bool,
    /// A server of one model answers requests naming any model, as
    /// llama-server (OpenAI-only clients send `gpt-4o-mini`); see
    /// `Snapshot::resolve`.
    pub any_model_name: bool,
}

/// What the owner task must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Admit { model: usize, ticket: Ticket },
    Load { model: usize },
    Unload { model: usize },
    /// Before its `Unload`: the model sleeps instead of unloading for good.
    Sleep { model: usize },
    /// A sleeping model gives back what it keeps (room for another sleeper,
    /// an admin unload, a retirement).
    DropSleeper { model: usize },
    Fail { model: usize, ticket: Ticket, reason: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnqueueError {
    #[error("the queue of model `{model}` is full ({max} waiting)")]
    QueueFull { model: String, max: usize },
    #[error("model `{model}` failed to load ({reason}); retrying in {retry_in_s}s")]
    BackingOff { model: String, reason: String, retry_in_s: u64 },
    #[error("a request for model `{model}` would wait about {expected_s}s, past the server's bound of {limit_s}s ({flag})")]
    WaitTooLong { model: String, expected_s: u64, limit_s: u64, retry_after_s: u64, flag: &'static str },
    #[error("the next turns of model `{model}` for the memory it shares with other models are full; retry in {retry_after_s}s")]
    TurnsFull { model: String, retry_after_s: u64 },
    #[error("model `{model}` has {waiting} requests waiting on other models' turns, {ahead} other models waiting for their first turn before it, and no time per request measured yet to promise a wait; retry in a second")]
    NotMeasured { model: String, waiting: usize, ahead: usize },
}

#[derive(Debug, Clone)]
pub struct SchedState {
    pub models: Vec<ModelSched>,
    pub limits: SchedLimits,
    /// Evictions made to give another model room.
    pub swaps: u64,
    /// How much longer than expected admitted requests waited, on average
    /// (overload.rs): expected waits are multiplied by it.
    pub wait_calibration: f64,
    /// The model that evictions are under way for: it loads next, even if by
    /// then an evicted model's waiter is older.
    pub(super) swap_for: Option<usize>,
    next_ticket: Ticket,
    /// GPU memory our models may use, per GPU, as if none were loaded (see
    /// `pools::baseline`); empty on a machine without GPUs.
    pub gpus: Vec<GpuInfo>,
}

impl SchedState {
    pub fn new(models: Vec<ModelLimits>, limits: SchedLimits, now: Instant) -> Self {
        let mut state = Self { models: Vec::new(), limits, swaps: 0, wait_calibration: 1.0, swap_for: None, next_ticket: 1, gpus: Vec::new() };
        for model in models {
            state.add_model(model, now);
        }
        state
    }

    /// Registers a model (config reload); returns its index.
    pub fn add_model(&mut self, limits: ModelLimits, now: Instant) -> usize {
        self.models.push(ModelSched {
            limits,
            residency: Residency::Unloaded,
            measured: false,
            in_flight: 0,
            queue: VecDeque::new(),
            last_used: now,
            closed: false,
            unload_requested: false,
            retired: false,
            load_count: 0,
            failures: 0,
            last_load: None,
            placement: None,
            gpu_measured: None,
            load_started: None,
            watching_comeback: false,
            lingers: true,
            loaded_at: None,
            turn: 0,
            turn_admitted: 0,
            service: None,
            admitted_at: VecDeque::new(),
            sleep_cost: Err("not loaded".into()),
            asleep: None,
            pinned_awake: 0,
            release_when_unloaded: false,
        });
        self.models.len() - 1
    }

    /// Removes a model (config reload): queued and in-flight requests finish,
    /// then it unloads and takes no part in decisions again.
    pub fn retire(&mut self, model: usize) {
        self.models[model].retired = true;
    }

    /// Whether a request may be queued for `model` without asking for a load
    /// that only an explicit one may start (`autoload` off): it is loading or
    /// loaded, or asleep keeping its weights (a wake is not a load).
    pub fn serves_without_load(&self, model: usize) -> bool {
        let m = &self.models[model];
        self.limits.autoload
            || matches!(m.residency, Residency::Loading | Residency::Loaded)
            || m.asleep.is_some_and(|bytes| bytes > 0)
    }

    /// A request for `model` arrives. It waits in the model's queue until
    /// `poll` admits it.
    pub fn enqueue(&mut self, model: usize, now: Instant) -> Result<Ticket, EnqueueError> {
        let max_queue = self.limits.max_queue;
        let expectation = self.expectation(model, now);
        let (expected, promise) = (expectation.wait, expectation.promise);
        let too_long = self.wait_too_long(model, expectation, now);
        let m = &mut self.models[model];
        if let Residency::Failed { reason, retry_at } = &m.residency {
            if *retry_at > now {
                return Err(EnqueueError::BackingOff {
                    model: m.limits.name.clone(),
                    reason: reason.clone(),
                    retry_in_s: (*retry_at - now).as_secs().max(1),
                });
            }
        }
        if m.queue.len() >= max_queue {
            return Err(EnqueueError::QueueFull { model: m.limits.name.clone(), max: max_queue });
        }
        if let Some(refusal) = too_long {
            return Err(refusal);
        }
        if m.watching_comeback {
            m.watching_comeback = false;
            m.lingers = true;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        m.queue.push_back(Waiter { ticket, since: now, expected, promise });
        Ok(ticket)
    }

    /// A queued request went away before admission.
    pub fn cancel(&mut self, model: usize, ticket: Ticket) -> bool {
        let queue = &mut self.models[model].queue;
        let before = queue.len();
        queue.retain(|w| w.ticket != ticket);
        queue.len() != before
    }

    /// An admitted request finished (its permit was dropped).
    pub fn release(&mut self, model: usize, now: Instant) {
        let m = &mut self.models[model];
        m.in_flight = m.in_flight.saturating_sub(1);
        m.last_used = now;
        // Pairing releases with admissions oldest-first keeps the sum of
        // the samples right whatever order requests finish in.
        if let Some(admitted) = m.admitted_at.pop_front() {
            m.record_service(now.saturating_duration_since(admitted));
        }
    }

    /// A load ended. On success `measured_bytes` replaces the estimate; on
    /// failure every waiter fails and the model backs off.
    pub fn load_done(&mut self, model: usize, result: Result<Option<u64>, String>, now: Instant) -> Vec<Action> {
        let backoff = self.limits.retry_backoff;
        // The swap is over: models it evicted that nobody asked for meanwhile
        // stop lingering.
        for (i, other) in self.models.iter_mut().enumerate() {
            if i != model && other.watching_comeback {
                other.watching_comeback = false;
                other.lingers = false;
            }
        }
        let m = &mut self.models[model];
        m.last_load = m.load_started.take().map(|t| now.saturating_duration_since(t));
        match result {
            Ok(measured) => {
                // A host measurement says nothing about what went to a GPU.
                let offloaded = m.placement.as_ref().is_some_and(|p| p.kind != PlacementKind::CpuOnly);
                if let Some(bytes) = measured.filter(|_| !offloaded) {
                    m.limits.bytes = bytes;
                    m.measured = true;
                }
                m.residency = Residency::Loaded;
                m.loaded_at = Some(now);
                m.load_count += 1;
                m.failures = 0;
                m.last_used = now;
                Vec::new()
            }
            Err(reason) => {
                let factor = 1u32 << m.failures.min(6);
                m.failures += 1;
                m.placement = None;
                m.gpu_measured = None;
                m.residency = Residency::Failed { reason: reason.clone(), retry_at: now + backoff * factor };
                m.queue
                    .drain(..)
                    .map(|w| Action::Fail { model, ticket: w.ticket, reason: reason.clone() })
                    .collect()
            }
        }
    }

    /// What a finished load measured on each GPU (NVML's free memory before
    /// and after). Each GPU keeps the smaller of the measured and the planned
    /// figure: the measurement can include memory the model does not free on
    /// unload (the process's CUDA context on the first load), and counting
    /// less than the model holds only makes later decisions more cautious
    /// (the baseline adds back what our models hold).
    pub fn gpu_measured(&mut self, model: usize, mib: Vec<(u32, u64)>) {
        let m = &mut self.models[model];
        if m.placement.as_ref().is_some_and(|p| p.use_fit_params) {
            // llama.cpp's fitter chose the GPUs: only the measurement knows.
            m.gpu_measured = Some(mib.into_iter().filter(|(_, got)| *got > 0).collect());
            return;
        }
        let planned = m.placement.as_ref().map(Holding::of_placement).unwrap_or_default().gpu_mib;
        let kept = planned
            .iter()
            .map(|&(index, plan)| (index, mib.iter().find(|(i, _)| *i == index).map_or(plan, |&(_, got)| got.min(plan))))
            .collect();
        m.gpu_measured = Some(kept);
    }

    /// The unload finished; `slept`: the engine kept its weights asleep
    /// (an engine that could not sleep, say the pinned copy failed, did
    /// not). Returns the release of a sleeper an admin unload asked for
    /// meanwhile.
    pub fn unload_done(&mut self, model: usize, slept: bool) -> Vec<Action> {
        let m = &mut self.models[model];
        if !slept {
            m.asleep = None;
        }
        let release = std::mem::take(&mut m.release_when_unloaded);
        m.residency = Residency::Unloaded;
        m.pinned_awake = 0;
        m.loaded_at = None;
        m.admitted_at.clear();
        m.placement = None;
        m.gpu_measured = None;
        m.closed = false;
        m.unload_requested = false;
        if release {
            return self.drop_sleeper(model);
        }
        Vec::new()
    }

    /// Releases what a sleeping model keeps (an admin unload of a model
    /// that is not loaded); nothing when it is not asleep.
    pub fn drop_sleeper(&mut self, model: usize) -> Vec<Action> {
        let m = &mut self.models[model];
        if m.residency == Residency::Unloading && m.asleep.is_some() {
            m.release_when_unloaded = true;
            return Vec::new();
        }
        if m.residency != Residency::Unloaded || m.asleep.is_none() {
            return Vec::new();
        }
        let at = m.last_used;
        let decision = super::decide::Decision { steps: vec![super::decide::Step::DropSleeper { model }] };
        self.apply(&decision, at)
    }

    /// An admin unload: the model admits nothing new and is unloaded as soon
    /// as its sequences in flight finish. Its queued requests stay queued.
    pub fn request_unload(&mut self, model: usize) {
        if self.models[model].residency == Residency::Loaded {
            self.models[model].unload_requested = true;
        }
    }

    /// Host bytes held by models that are loaded, loading or unloading.
    pub fn used_bytes(&self) -> u64 {
        (0..self.models.len()).filter(|&i| self.models[i].residency.occupies_memory()).map(|i| self.holding(i).host_bytes).sum()
    }

    /// What model `i` holds (or will hold) while resident: its placement's
    /// figures (measured ones when known) with GPUs, else all in host memory.
    pub fn holding(&self, i: usize) -> Holding {
        let m = &self.models[i];
        m.holding_with(m.placement.as_ref())
    }

    /// Takes a fresh GPU snapshot (`live_counts_ours`: NVML, whose free figure
    /// already excludes our loaded models). Ignored while a load or unload
    /// runs, when the figures are in flux; the owner refreshes again before
    /// the next load (see `wants_gpu_refresh`).
    pub fn set_gpus(&mut self, live: &[GpuInfo], live_counts_ours: bool) {
        if self.swap_in_progress() {
            return;
        }
        let held: Vec<Holding> = (0..self.models.len())
            .filter(|&i| self.models[i].residency == Residency::Loaded)
            .map(|i| self.holding(i))
            .collect();
        self.gpus = pools::baseline(live, &held, live_counts_ours);
    }

    /// A GPU snapshot is due (when the machine has GPU sources at all: the
    /// owner decides that): nothing is loading or unloading, and some model
    /// waits to be loaded.
    pub fn wants_gpu_refresh(&self, now: Instant) -> bool {
        !self.swap_in_progress() && self.swap_target(now).is_some()
    }

    pub(super) fn swap_in_progress(&self) -> bool {
        self.models.iter().any(|m| matches!(m.residency, Residency::Loading | Residency::Unloading))
    }

    /// When the next time-based decision is due after `now`: a waiter
    /// reaching max_wait, an idle model outliving its reload time or a busy
    /// one its quantum while someone waits, or a ttl. Deadlines already past are left to events
    /// (a release or a finished load), so the owner never spins.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let someone_waits = self.swap_target(now).is_some();
        let waits = self
            .models
            .iter()
            .filter(|m| !matches!(m.residency, Residency::Loaded | Residency::Loading))
            .filter_map(|m| m.oldest_wait().map(|since| since + self.patience(m)));
        let lingers = self
            .models
            .iter()
            .filter(|m| someone_waits && m.residency == Residency::Loaded && !m.busy())
            .map(|m| m.last_used + m.linger());
        let ttls = self
            .models
            .iter()
            .filter(|m| (m.residency == Residency::Loaded && !m.busy()) || (m.residency == Residency::Unloaded && m.asleep.is_some()))
            .filter_map(|m| m.limits.ttl.map(|ttl| m.last_used + ttl));
        let quanta = self.models.iter().filter(|_| someone_waits).filter_map(|m| m.quantum_end(now, self.limits.max_wait));
        waits.chain(lingers).chain(ttls).chain(quanta).filter(|&t| t > now).min()
    }

    /// The model that should be loaded next, if any: the one whose oldest
    /// waiter is oldest (cache-aware), or the one the global head waits for
    /// (fifo: the same rule, as the head is the oldest waiter of all).
    /// The model whose file is worth reading ahead now: the one evictions
    /// are under way for, or the target while blockers drain for it.
    pub(super) fn next_load(&self, now: Instant) -> Option<usize> {
        let evicting_or_draining = self.swap_for.is_some() || self.models.iter().any(|m| m.closed);
        evicting_or_draining.then(|| self.swap_target(now)).flatten()
    }

    pub(super) fn swap_target(&self, now: Instant) -> Option<usize> {
        if let Some(i) = self.swap_for.filter(|&i| !self.models[i].queue.is_empty()) {
            return Some(i);
        }
        self.models
            .iter()
            .enumerate()
            .filter(|(_, m)| match &m.residency {
                Residency::Unloaded => true,
                Residency::Failed { retry_at, .. } => *retry_at <= now,
                _ => false,
            })
            .filter_map(|(i, m)| m.oldest_wait().map(|t| (t, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// Whether `target` fits once `evicted` are gone: `Some(placement)` (the
    /// GPU plan, `None` without GPUs) or `None`. Exclusive models fit only
    /// alone; host memory and every GPU must have room, except that a model
    /// too big for the budget may still run alone. `ideal` is the target's
    /// placement on GPUs free of our models (`ideal_placement`).
    pub(super) fn fit(&self, target: usize, evicted: &[usize], ideal: Option<&Placement>) -> Option<Option<Placement>> {
        let others: Vec<usize> = (0..self.models.len())
            .filter(|&i| i != target && self.models[i].residency == Residency::Loaded && !evicted.contains(&i))
            .collect();
        let t = &self.models[target];
        let exclusive = t.limits.exclusive || others.iter().any(|&i| self.models[i].limits.exclusive);
        if exclusive && !others.is_empty() {
            return None;
        }
        let held: Vec<Holding> = others.iter().map(|&i| self.holding(i)).collect();
        let placement = match (&t.limits.gpu, ideal) {
            (Some(demand), Some(ideal)) => {
                let refs: Vec<&Holding> = held.iter().collect();
                Some(pools::place(&self.gpus, &refs, demand, ideal)?)
            }
            _ => None,
        };
        let host_need = t.holding_with(placement.as_ref()).host_bytes;
        let host_used: u64 = held.iter().map(|h| h.host_bytes).sum();
        (others.is_empty() || host_used + host_need <= self.limits.budget_bytes).then_some(placement)
    }

    /// Where `target` goes on GPUs free of our models (`None`: no GPUs, or
    /// no footprint to place). An error (a `devices` entry that does not
    /// exist, say) means it cannot load at all.
    pub(super) fn ideal_placement(&self, target: usize) -> Result<Option<Placement>, String> {
        match (&self.models[target].limits.gpu, self.gpus.is_empty()) {
            (Some(demand), false) => pools::ideal(&self.gpus, demand).map(Some).map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    }

    /// The model of the oldest waiter overall.
    pub(super) fn head_model(&self) -> Option<usize> {
        self.models
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.oldest_wait().map(|t| (t, i)))
            .min()
            .map(|(_, i)| i)
    }
}
