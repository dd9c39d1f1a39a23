//! The swap decision as one pure function. `SchedState::decide(now)` reads
//! the state and returns a [`Decision`]: the steps of this poll, in order
//! (unloads for a ttl, an admin or a retirement, admissions, then at most one swap step:
//! close blockers, evict, load with a placement, or fail a load that cannot
//! start). `SchedState::apply` replays those steps and returns the actions for
//! the owner task; it makes no choice of its own. `poll` is the two together.
//!
//! Each phase sees the state the earlier steps leave (the swap step sees the
//! queues after admissions), so `decide` works on a scratch copy of the
//! state, through the same `step` that `apply` uses.

use std::time::Instant;

use super::policy::{choose_evictions, Policy, Resident};
use super::sleep::{self, Evictee, Sleeper};
use super::state::{Action, Residency, SchedState, Ticket};
use crate::gpu::Placement;

/// Why a model is unloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// Idle past its ttl.
    Ttl,
    /// An admin asked.
    Requested,
    /// A config reload removed it and its work is done.
    Retired,
    /// Evicted to make room for the swap target.
    Evicted,
}

/// One step of a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Unload { model: usize, why: UnloadReason },
    /// Right before its eviction's `Unload`: the model sleeps, holding
    /// `pinned_bytes` of host memory (`sleep.rs` chose it).
    Sleep { model: usize, pinned_bytes: u64 },
    /// A sleeping model gives back what it keeps.
    DropSleeper { model: usize },
    /// The waiter at the front of `model`'s queue gets a slot.
    Admit { model: usize, ticket: Ticket },
    /// Every model takes new admissions again.
    ReopenAll,
    /// Exactly these models admit nothing new: they must drain so the swap
    /// target can have their room.
    Close { models: Vec<usize> },
    /// The model evictions are under way for (it loads next).
    SwapFor { model: Option<usize> },
    Load { model: usize, placement: Option<Placement> },
    /// The target cannot load at all (say, its options name a missing GPU):
    /// it backs off and `tickets`, its waiters, fail with `reason`.
    FailLoad { model: usize, reason: String, tickets: Vec<Ticket> },
}

/// Everything one poll does, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub steps: Vec<Step>,
}

impl Decision {
    pub fn admits(&self) -> Vec<(usize, Ticket)> {
        self.steps.iter().filter_map(|s| if let Step::Admit { model, ticket } = s { Some((*model, *ticket)) } else { None }).collect()
    }
    pub fn unloads(&self) -> Vec<(usize, UnloadReason)> {
        self.steps.iter().filter_map(|s| if let Step::Unload { model, why } = s { Some((*model, *why)) } else { None }).collect()
    }
    pub fn load(&self) -> Option<(usize, Option<&Placement>)> {
        self.steps.iter().find_map(|s| if let Step::Load { model, placement } = s { Some((*model, placement.as_ref())) } else { None })
    }
    /// The models closed to new admissions by this poll, if it closes any.
    pub fn blockers(&self) -> Option<&[usize]> {
        self.steps.iter().find_map(|s| if let Step::Close { models } = s { Some(&models[..]) } else { None })
    }
    /// The swap target this poll sets, if it sets one (`Some(None)`: cleared).
    pub fn swap_for(&self) -> Option<Option<usize>> {
        self.steps.iter().find_map(|s| if let Step::SwapFor { model } = s { Some(*model) } else { None })
    }
    /// The load that cannot start, with the tickets that fail with it.
    pub fn failed_load(&self) -> Option<(usize, &[Ticket])> {
        self.steps.iter().find_map(|s| if let Step::FailLoad { model, tickets, .. } = s { Some((*model, &tickets[..])) } else { None })
    }
}

impl SchedState {
    /// What this poll does; reads `self` only.
    pub fn decide(&self, now: Instant) -> Decision {
        let mut scratch = self.clone();
        let mut steps = Vec::new();
        scratch.run_phases(now, &mut steps);
        Decision { steps }
    }

    /// Carries out `decision` (from `decide` on this same state).
    pub fn apply(&mut self, decision: &Decision, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for step in &decision.steps {
            self.step(step, now, &mut actions);
        }
        actions
    }

    /// Decides what happens next and does it.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let decision = self.decide(now);
        self.apply(&decision, now)
    }

    /// The one place a step changes the state.
    fn step(&mut self, step: &Step, now: Instant, actions: &mut Vec<Action>) {
        match step {
            Step::Unload { model, why } => {
                let m = &mut self.models[*model];
                m.residency = Residency::Unloading;
                if *why != UnloadReason::Evicted {
                    m.asleep = None;
                }
                if *why == UnloadReason::Evicted {
                    m.closed = false;
                    m.watching_comeback = true;
                    self.swaps += 1;
                }
                actions.push(Action::Unload { model: *model });
            }
            Step::Sleep { model, pinned_bytes } => {
                self.models[*model].asleep = Some(*pinned_bytes);
                actions.push(Action::Sleep { model: *model });
            }
            Step::DropSleeper { model } => {
                self.models[*model].asleep = None;
                actions.push(Action::DropSleeper { model: *model });
            }
            Step::Admit { model, ticket } => {
                if let Some(w) = self.models[*model].queue.iter().find(|w| w.ticket == *ticket).cloned() {
                    self.calibrate(w.expected, now.saturating_duration_since(w.since));
                }
                // A place of its turn, when others wait for the memory (turns.rs).
                let contended = self.takes_turns(*model);
                let m = &mut self.models[*model];
                m.turn_admitted += usize::from(contended);
                m.queue.retain(|w| w.ticket != *ticket);
                m.in_flight += 1;
                m.last_used = now;
                m.admitted_at.push_back(now);
                actions.push(Action::Admit { model: *model, ticket: *ticket });
            }
            Step::ReopenAll => self.models.iter_mut().for_each(|m| m.closed = false),
            Step::Close { models } => {
                for (i, m) in self.models.iter_mut().enumerate() {
                    m.closed = models.contains(&i);
                }
            }
            Step::SwapFor { model } => self.swap_for = *model,
            Step::Load { model, placement } => {
                let m = &mut self.models[*model];
                m.placement = placement.clone();
                m.gpu_measured = None;
                // Loading a sleeping model wakes it.
                m.asleep = None;
                m.residency = Residency::Loading;
                m.load_started = Some(now);
                // Its turn starts, and so does a new one for every model that
                // stays loaded beside it (turns.rs).
                for (i, o) in self.models.iter_mut().enumerate() {
                    if i == *model || o.residency == Residency::Loaded {
                        o.turn += 1;
                        o.turn_admitted = 0;
                    }
                }
                actions.push(Action::Load { model: *model });
            }
            Step::FailLoad { model, reason, .. } => {
                // A sleeper that cannot load gives back what it keeps.
                if self.models[*model].asleep.take().is_some() {
                    actions.push(Action::DropSleeper { model: *model });
                }
                // `load_done` fails exactly the queued `tickets`.
                self.models[*model].load_started = Some(now);
                actions.extend(self.load_done(*model, Err(reason.clone()), now));
            }
        }
    }

    /// Applies and records one step (on the scratch copy in `decide`).
    fn record(&mut self, step: Step, now: Instant, steps: &mut Vec<Step>) {
        self.step(&step, now, &mut Vec::new());
        steps.push(step);
    }

    fn run_phases(&mut self, now: Instant, steps: &mut Vec<Step>) {
        self.expire_ttls(now, steps);
        self.unload_requested(now, steps);
        // Admit before planning a swap: a model that just loaded serves its
        // waiters before anything can evict it (no load/unload ping-pong).
        match self.limits.policy {
            Policy::CacheAware => self.admit_resident(now, steps),
            Policy::Fifo => self.admit_in_arrival_order(now, steps),
        }
        self.plan_swap(now, steps);
    }

    fn expire_ttls(&mut self, now: Instant, steps: &mut Vec<Step>) {
        for i in 0..self.models.len() {
            let m = &self.models[i];
            let expired = m.limits.ttl.is_some_and(|ttl| now >= m.last_used + ttl);
            if m.residency == Residency::Loaded && !m.busy() && expired {
                self.record(Step::Unload { model: i, why: UnloadReason::Ttl }, now, steps);
            } else if m.residency == Residency::Unloaded && m.asleep.is_some() && expired {
                // A ttl ends a sleep too.
                self.record(Step::DropSleeper { model: i }, now, steps);
            }
        }
    }

    fn unload_requested(&mut self, now: Instant, steps: &mut Vec<Step>) {
        for i in 0..self.models.len() {
            let m = &self.models[i];
            let retired_idle = m.retired && !m.busy();
            if (m.unload_requested || retired_idle) && m.residency == Residency::Loaded && m.in_flight == 0 {
                let why = if m.unload_requested { UnloadReason::Requested } else { UnloadReason::Retired };
                self.record(Step::Unload { model: i, why }, now, steps);
            } else if m.retired && m.asleep.is_some() && m.residency == Residency::Unloaded {
                self.record(Step::DropSleeper { model: i }, now, steps);
            }
        }
    }

    fn admit_resident(&mut self, now: Instant, steps: &mut Vec<Step>) {
        for i in 0..self.models.len() {
            loop {
                let m = &self.models[i];
                if m.residency != Residency::Loaded || m.closed || m.unload_requested || m.in_flight >= m.limits.slots {
                    break;
                }
                let Some(w) = m.queue.front() else { break };
                let ticket = w.ticket;
                self.record(Step::Admit { model: i, ticket }, now, steps);
            }
        }
    }

    /// Admits waiters strictly in arrival order; the first that cannot start
    /// (its model is not resident or has no free slot) blocks the rest.
    fn admit_in_arrival_order(&mut self, now: Instant, steps: &mut Vec<Step>) {
        loop {
            let Some(i) = self.head_model() else { return };
            let m = &self.models[i];
            if m.residency != Residency::Loaded || m.unload_requested || m.in_flight >= m.limits.slots {
                return;
            }
            let Some(w) = m.queue.front() else { return };
            let ticket = w.ticket;
            self.record(Step::Admit { model: i, ticket }, now, steps);
        }
    }

    fn plan_swap(&mut self, now: Instant, steps: &mut Vec<Step>) {
        // One swap step at a time: a load or unload in progress settles first.
        if self.swap_in_progress() {
            return;
        }
        let Some(target) = self.swap_target(now) else {
            self.record(Step::ReopenAll, now, steps);
            return;
        };
        // Under fifo a resident model is only the head's if the head is its.
        if self.limits.policy == Policy::Fifo && self.head_model() != Some(target) {
            return;
        }
        let ideal = match self.ideal_placement(target) {
            Ok(ideal) => ideal,
            Err(reason) => {
                let tickets = self.models[target].queue.iter().map(|w| w.ticket).collect();
                self.record(Step::FailLoad { model: target, reason, tickets }, now, steps);
                return;
            }
        };
        let residents: Vec<Resident> = self
            .models
            .iter()
            .enumerate()
            .filter(|(_, m)| m.residency == Residency::Loaded)
            .map(|(i, m)| Resident {
                model: i,
                busy: m.busy() || now.saturating_duration_since(m.last_used) < m.linger(),
                last_used: m.last_used,
                reload_ms: m.last_load.map_or(u64::MAX, |d| d.as_millis() as u64),
            })
            .collect();
        let count_room = self.limits.max_loaded.is_none_or(|max| residents.len() < max);
        let fits = |evicted: &[usize]| self.fit(target, evicted, ideal.as_ref()).is_some();

        if let Some(evict) = choose_evictions(&residents, count_room, false, fits) {
            let mut chosen = vec![Step::ReopenAll];
            if evict.is_empty() {
                let placement = self.fit(target, &[], ideal.as_ref()).flatten();
                chosen.extend([Step::SwapFor { model: None }, Step::Load { model: target, placement }]);
            } else {
                chosen.push(Step::SwapFor { model: Some(target) });
                chosen.extend(self.evictions(&evict, target));
            }
            chosen.into_iter().for_each(|s| self.record(s, now, steps));
            return;
        }
        // Room only by evicting busy models.
        let oldest = self.models[target].oldest_wait().unwrap_or(now);
        let patience = self.patience(&self.models[target]);
        if self.limits.policy == Policy::CacheAware && now.saturating_duration_since(oldest) < patience {
            self.record(Step::ReopenAll, now, steps);
            return;
        }
        // A model loaded for a swap serves its quantum and the requests
        // promised its turn first (overload.rs, turns.rs).
        let closable: Vec<Resident> = residents.into_iter().filter(|r| !r.busy || self.may_close(r.model, now)).collect();
        let Some(evict) = choose_evictions(&closable, count_room, true, fits) else {
            return;
        };
        let all_idle = evict.iter().all(|&i| self.models[i].in_flight == 0);
        // Close exactly this poll's blockers: one dropped from the set since
        // an earlier poll takes work again.
        self.record(Step::Close { models: evict.clone() }, now, steps);
        // Unload only when every blocker can go: a partial eviction frees
        // memory nobody can use yet.
        if all_idle {
            self.record(Step::SwapFor { model: Some(target) }, now, steps);
            for step in self.evictions(&evict, target) {
                self.record(step, now, steps);
            }
        }
    }

    /// The steps that evict `evict` for `target`: sleepers dropped for room
    /// first, then each evictee, preceded by `Sleep` when it sleeps
    /// (`sleep::plan`). A sleeping target is about to wake: it is never
    /// dropped for its own evictees, and its pinned copy stays counted.
    fn evictions(&self, evict: &[usize], target: usize) -> Vec<Step> {
        let sleepers: Vec<Sleeper> = self
            .models
            .iter()
            .enumerate()
            .filter(|(i, m)| m.residency == Residency::Unloaded && *i != target)
            .filter_map(|(i, m)| m.asleep.map(|pinned_bytes| Sleeper { model: i, pinned_bytes, last_used: m.last_used }))
            .collect();
        let evictees: Vec<Evictee> = evict
            .iter()
            .map(|&i| Evictee { model: i, cost: self.models[i].sleep_cost.clone(), last_used: self.models[i].last_used })
            .collect();
        // Pinned copies kept by awake models that once slept (not the evictees').
        let held_awake = self
            .models
            .iter()
            .enumerate()
            .filter(|(i, m)| m.residency.occupies_memory() && !evict.contains(i))
            .map(|(_, m)| m.pinned_awake)
            .sum::<u64>()
            + self.models[target].asleep.unwrap_or(0);
        let plan = sleep::plan(self.limits.sleep, held_awake, &sleepers, &evictees);
        let mut steps: Vec<Step> = plan.drop.iter().map(|&model| Step::DropSleeper { model }).collect();
        for &model in evict {
            if let Some(&(_, pinned_bytes)) = plan.sleep.iter().find(|(m, _)| *m == model) {
                steps.push(Step::Sleep { model, pinned_bytes });
            }
            steps.push(Step::Unload { model, why: UnloadReason::Evicted });
        }
        steps
    }
}
