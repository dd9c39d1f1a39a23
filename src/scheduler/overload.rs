//! Overload: when every model is always wanted and memory holds one.
//!
//! Three rules, all pure over the state:
//!
//! - **Quantum.** A model loaded for a swap is served for at least its
//!   quantum before busy work can close it for another model's waiter:
//!   `QUANTUM_SWAPS` times what a swap away from it costs (its load time plus
//!   one request's service time, the drain), capped at half of max_wait.
//!   Without it, the waiter of a third model has usually passed max_wait by
//!   the time the second model loads, and each load served little more than
//!   one batch of slots (4.2 to 4.3 requests per load on the 64-client
//!   soak, docs/reliability.md). A time slice proportional to the swap's cost bounds the time lost
//!   to swapping to about 1 / (1 + QUANTUM_SWAPS) of the total, as
//!   time-slicing multiplexers (llmux) do. Idle models are evicted at once as
//!   before: the quantum only protects work that is there.
//! - **Overdue waiters finish their model's turn.** A model closed for
//!   another's waiter still admits its own waiters that waited on the other
//!   models' turns (`Waiter::bounded`), have already waited `max_wait` and
//!   are older than the other models' waiters: ending the turn by the
//!   quantum alone stranded them for a whole cycle of the others, sometimes
//!   twice (the one-minute tail of issue 28). Requests
//!   that only queued behind their own model's work have no such share, so a
//!   model busy with a long queue of its own still gives way in time.
//! - **Admission by expected wait.** A request whose expected wait is longer
//!   than its bound gets 429 at once, with a Retry-After of the excess,
//!   instead of waiting for minutes. When it waits on other models' turns
//!   for the memory, the bound is twice `--max-wait` (max_wait until they
//!   give way, as long again for their drain and its load: what `--max-wait`
//!   promises). Admitting only within a share of it would refuse every
//!   first request for a model that is not resident while others are busy
//!   (its own turn alone is max_wait, a drain and a load); when it
//!   only queues behind its own model's work, the bound is `--max-queue-wait`
//!   (or the smaller of the two). The expectation follows the
//!   policy: the requests ahead of it (queued and in flight, beyond the free
//!   slots) take their serving time, spread over the slots at the measured
//!   service time; when models take turns for the memory, that time is
//!   served a quantum at a time, with the others' turns (a drain, a load, a
//!   quantum each) in between; a model that is not resident first waits for
//!   its turn (see `turn_of`), a drain and its load. A model not measured
//!   yet borrows the others' mean service time; before any request finished
//!   anywhere there is no estimate, and a model waiting on others' turns
//!   queues at most two batches of its slots, and at least four requests
//!   (`COLD_QUEUE`, `COLD_QUEUE_MIN`): a cold start
//!   under load otherwise queued every client at once, the longest waits of
//!   a soak. What the model misses is corrected by
//!   measurement: the average ratio of waited to expected time of admitted
//!   requests (1x to 4x) multiplies every expectation.

use std::time::{Duration, Instant};

use super::state::{EnqueueError, ModelSched, Residency, SchedState};

/// Time to serve `need` of work for a model that has `first` left of its
/// current turn, then serves `turn` at a time with `gap` between turns.
fn through_turns(need: Duration, first: Duration, turn: Duration, gap: Duration) -> Duration {
    if need <= first {
        return need;
    }
    let left = need - first;
    let turns = (left.as_secs_f64() / turn.as_secs_f64()).ceil().max(1.0) as u32;
    first + gap * turns + turn * (turns - 1) + (left - turn * (turns - 1))
}

/// Expected waits shorter than this do not move the calibration.
const CALIBRATE_FROM: Duration = Duration::from_secs(1);
/// Weight of the newest admitted request in the calibration.
const CALIBRATION_WEIGHT: f64 = 0.2;

/// Before any time per request is measured, a model waiting on other
/// models' turns queues at most this many batches of its slots, and never
/// fewer than `COLD_QUEUE_MIN` requests (a one-slot model still takes a
/// small burst, as llama-server's router queues it).
const COLD_QUEUE: usize = 2;
const COLD_QUEUE_MIN: usize = 4;

/// A quantum is this many times the cost of a swap.
pub const QUANTUM_SWAPS: u32 = 4;
/// Weight of the newest sample in the service-time average.
const SERVICE_WEIGHT: f64 = 0.2;
/// Admissions that ended this fast (a preload's permit, a request that
/// failed at once) say nothing about service time.
const MIN_SAMPLE: Duration = Duration::from_millis(1);

impl ModelSched {
    /// Folds one admitted-to-released time into the service-time average.
    pub(super) fn record_service(&mut self, sample: Duration) {
        if sample < MIN_SAMPLE {
            return;
        }
        self.service = Some(match self.service {
            None => sample,
            Some(avg) => avg.mul_f64(1.0 - SERVICE_WEIGHT) + sample.mul_f64(SERVICE_WEIGHT),
        });
    }

    /// What swapping to it and away again costs: its load plus a drain of
    /// about one request's service time.
    fn swap_cost(&self) -> Duration {
        self.last_load.unwrap_or_default() + self.service.unwrap_or_default()
    }

    /// How long it is served after a load before busy work can be closed.
    pub(super) fn quantum(&self, max_wait: Duration) -> Duration {
        (self.swap_cost() * QUANTUM_SWAPS).min(max_wait / 2)
    }

    /// One whole turn of it while models take turns: a load, a quantum, a drain.
    fn turn_length(&self, max_wait: Duration) -> Duration {
        self.quantum(max_wait) + self.swap_cost()
    }

    /// When its quantum ends, if it is loaded with work and the quantum is
    /// still running at `now`.
    pub(super) fn quantum_end(&self, now: Instant, max_wait: Duration) -> Option<Instant> {
        if self.residency != Residency::Loaded || !self.busy() {
            return None;
        }
        self.loaded_at.map(|at| at + self.quantum(max_wait)).filter(|&end| end > now)
    }
}

impl SchedState {
    /// What a request for `model` arriving now should expect to wait for a
    /// slot (see the module notes). Zero while nothing was measured.
    pub fn expected_wait(&self, model: usize, now: Instant) -> Duration {
        self.raw_expected_wait(model, now).mul_f64(self.wait_calibration)
    }

    /// Folds how long an admitted request waited against what the model
    /// said into `wait_calibration`. The model misses what it does not see
    /// (clients coming and going, drains shorter or longer than one request);
    /// the measured ratio corrects it, between 1x and 4x. Short expected
    /// waits say little about the ratio and are skipped.
    pub(super) fn calibrate(&mut self, expected: Duration, waited: Duration) {
        if expected < CALIBRATE_FROM {
            return;
        }
        let ratio = (waited.as_secs_f64() / expected.as_secs_f64()).clamp(1.0, 4.0);
        self.wait_calibration = (self.wait_calibration * (1.0 - CALIBRATION_WEIGHT) + ratio * CALIBRATION_WEIGHT).clamp(1.0, 4.0);
    }

    /// `expected_wait` before calibration: the model of the policy alone.
    pub(super) fn raw_expected_wait(&self, model: usize, now: Instant) -> Duration {
        let m = &self.models[model];
        // A model not measured yet borrows the others' typical service time.
        let Some(service) = m.service.or_else(|| self.service_prior()) else { return Duration::ZERO };
        let resident = m.residency == Residency::Loaded && !m.closed;
        let slots = m.limits.slots.max(1) as usize;
        let before_it = (m.queue.len() + m.in_flight as usize + 1).saturating_sub(slots);
        if resident && before_it == 0 {
            return Duration::ZERO;
        }
        // Serving time of the requests ahead, spread over the slots.
        let serving = service.mul_f64(before_it as f64 / slots as f64);
        if !self.takes_turns(model) {
            return serving;
        }
        let others: Vec<&ModelSched> = self.models.iter().enumerate().filter(|&(i, o)| i != model && o.busy()).map(|(_, o)| o).collect();
        // It is served a quantum at a time; between its turns, it drains
        // and the others each load, serve a quantum and drain, then it loads.
        let max_wait = self.limits.max_wait;
        let turn = m.quantum(max_wait).max(service);
        let load = m.last_load.unwrap_or_default();
        let others_turns: Duration = others.iter().map(|o| o.turn_length(max_wait)).sum();
        let gap = service + others_turns + load;
        if resident {
            let left = m.quantum_end(now, max_wait).map_or(Duration::ZERO, |end| end - now);
            through_turns(serving, left, turn, gap)
        } else {
            self.turn_of(model, now) + service + load + through_turns(serving, turn, turn, gap)
        }
    }

    /// The mean service time of the models measured so far.
    fn service_prior(&self) -> Option<Duration> {
        let known: Vec<Duration> = self.models.iter().filter_map(|m| m.service).collect();
        (!known.is_empty()).then(|| known.iter().sum::<Duration>() / known.len() as u32)
    }

    /// How long until a model that is not resident gets the memory: while
    /// others are busy, its oldest waiter's patience (max_wait less its load
    /// time) and their quanta must run out, and every model whose waiters
    /// are older loads first and serves its quantum, a drain and a load each.
    fn turn_of(&self, model: usize, now: Instant) -> Duration {
        let m = &self.models[model];
        let max_wait = self.limits.max_wait;
        let oldest = m.oldest_wait().unwrap_or(now);
        let mut holders_busy = false;
        let mut holders_left = Duration::ZERO;
        let mut ahead = Duration::ZERO;
        let others = self.models.iter().enumerate().filter(|&(i, o)| i != model && o.busy()).map(|(_, o)| o);
        for o in others {
            match o.residency {
                // Gives way once its quantum is over.
                Residency::Loaded => {
                    holders_busy = true;
                    holders_left = holders_left.max(o.quantum_end(now, max_wait).map_or(Duration::ZERO, |end| end - now));
                }
                // A swap under way: it loads, then serves its quantum.
                Residency::Loading => {
                    holders_busy = true;
                    holders_left = holders_left.max(o.last_load.unwrap_or_default() + o.quantum(max_wait));
                }
                // Waiting longer than this model's waiters: it goes first.
                _ if o.oldest_wait().is_some_and(|t| t < oldest) => {
                    ahead += o.turn_length(max_wait);
                }
                _ => {}
            }
        }
        // Busy holders give way when this model's patience runs out (max_wait
        // less its load time), and not before their quanta end.
        let patience_left = if holders_busy { (oldest + self.patience(m)).saturating_duration_since(now) } else { Duration::ZERO };
        patience_left.max(holders_left) + ahead
    }

    /// Whether a request for `model` arriving now waits on other models'
    /// turns for the memory (it is not resident, or another busy model is
    /// not), rather than only on its own model's queue.
    pub(super) fn takes_turns(&self, model: usize) -> bool {
        let m = &self.models[model];
        let resident = m.residency == Residency::Loaded && !m.closed;
        !resident || self.models.iter().enumerate().any(|(i, o)| i != model && o.busy() && o.residency != Residency::Loaded)
    }

    /// The longest wait promised to a request that waits on other models'
    /// turns: `max_wait` until they give way, as long again for their drain
    /// and its load.
    fn wait_bound(&self) -> Duration {
        self.limits.max_wait * 2
    }

    /// The refusal for a request for `model` whose uncalibrated expected
    /// wait is `raw`, if that (calibrated) passes the bound that applies
    /// (see the module notes); `takes_turns` is [`Self::takes_turns`] for
    /// it. No `max_queue_wait`: no admission by expected wait at all.
    pub(super) fn wait_too_long(&self, model: usize, raw: Duration, takes_turns: bool) -> Option<EnqueueError> {
        let queue_limit = self.limits.max_queue_wait?;
        let m = &self.models[model];
        // Nothing measured yet (a cold start under load): no estimate, so a
        // model waiting on others' turns queues at most two batches of its
        // slots rather than every client at once.
        let waiting = m.queue.len() + m.in_flight as usize;
        let cold_cap = (COLD_QUEUE * m.limits.slots.max(1) as usize).max(COLD_QUEUE_MIN);
        if takes_turns && m.service.or_else(|| self.service_prior()).is_none() && waiting >= cold_cap {
            return Some(EnqueueError::NotMeasured { model: m.limits.name.clone(), waiting });
        }
        let (limit, flag) = match takes_turns && self.wait_bound() <= queue_limit {
            true => (self.wait_bound(), "twice --max-wait"),
            false => (queue_limit, "--max-queue-wait"),
        };
        let expected = raw.mul_f64(self.wait_calibration);
        (expected > limit).then(|| EnqueueError::WaitTooLong {
            model: self.models[model].limits.name.clone(),
            expected_s: expected.as_secs_f64().ceil() as u64,
            limit_s: limit.as_secs_f64().ceil() as u64,
            retry_after_s: (expected - limit).as_secs_f64().ceil().max(1.0) as u64,
            flag,
        })
    }

    /// Whether `model`, closed for another model's waiter, still admits the
    /// waiter at its queue's front: one that waited on other models' turns,
    /// has already waited `max_wait` and is older than every waiter of a
    /// model that is not resident finishes this turn (see the notes). The
    /// age keeps the extension finite: what arrives later waits its turn.
    pub(super) fn overdue_front(&self, model: usize, now: Instant) -> bool {
        self.limits.policy == super::Policy::CacheAware && self.models[model].queue.front().is_some_and(|w| self.overdue(model, w.since, w.bounded, now))
    }

    /// See [`Self::overdue_front`]: a waiter of `model` since `since`.
    pub(super) fn overdue(&self, model: usize, since: Instant, bounded: bool, now: Instant) -> bool {
        let others_oldest = self
            .models
            .iter()
            .enumerate()
            .filter(|(i, o)| *i != model && o.residency != Residency::Loaded)
            .filter_map(|(_, o)| o.oldest_wait())
            .min();
        bounded && now.saturating_duration_since(since) >= self.limits.max_wait && others_oldest.is_none_or(|t| since < t)
    }

    /// Whether a busy resident `model` may be closed now for another
    /// model's waiter (fifo has no quantum).
    pub(super) fn may_close(&self, model: usize, now: Instant) -> bool {
        self.limits.policy == super::Policy::Fifo || self.models[model].quantum_end(now, self.limits.max_wait).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::state::{Action, ModelLimits, SchedLimits};
    use crate::scheduler::{Policy, Step};

    const MIB: u64 = 1 << 20;
    const S: Duration = Duration::from_secs(1);

    /// Models a (0) and b (1), 100 MiB each, memory for one; 2 slots each.
    fn one_room(policy: Policy, max_queue_wait: Option<Duration>, t0: Instant) -> SchedState {
        let model = |name: &str| ModelLimits { name: name.into(), bytes: 100 * MIB, slots: 2, exclusive: false, ttl: None, gpu: None };
        let limits = SchedLimits {
            budget_bytes: 150 * MIB,
            max_loaded: None,
            max_wait: 10 * S,
            max_queue: 64,
            max_queue_wait,
            policy,
            retry_backoff: 2 * S,
            sleep: Default::default(),
            autoload: true,
            any_model_name: false,
        };
        SchedState::new(vec![model("a"), model("b")], limits, t0)
    }

    /// a loads (taking `load`) while b's waiter already waits, as the third
    /// model's waiter does when every model is always wanted; a has more
    /// work than slots. Returns when a's load finished.
    fn a_loaded_while_b_waits(s: &mut SchedState, t0: Instant, load: Duration) -> Instant {
        for _ in 0..4 {
            s.enqueue(0, t0).unwrap();
        }
        s.enqueue(1, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(s.poll(t0 + Duration::from_millis(1)).len(), 1, "a loads first");
        let loaded = t0 + load;
        s.load_done(0, Ok(None), loaded);
        s.poll(loaded);
        loaded
    }

    /// a loaded at `t0` with one request in flight (admission by expected
    /// wait on, 120 s); b idle.
    fn a_resident_with_one_in_flight(t0: Instant) -> SchedState {
        let mut s = one_room(Policy::CacheAware, Some(120 * S), t0);
        s.enqueue(0, t0).unwrap();
        s.poll(t0);
        s.load_done(0, Ok(None), t0);
        s.poll(t0);
        s
    }

    fn closes_a(s: &SchedState, now: Instant) -> bool {
        s.decide(now).steps.iter().any(|step| matches!(step, Step::Close { models } if models == &vec![0]))
    }

    #[test]
    fn a_model_loaded_for_a_swap_serves_its_quantum_before_it_is_closed() {
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, None, t0);
        let loaded = a_loaded_while_b_waits(&mut s, t0, 9 * S);
        s.models[0].service = Some(S);
        // Quantum: 4 x (9 s load + 1 s service), capped at max_wait / 2.
        assert_eq!(s.models[0].quantum(s.limits.max_wait), 5 * S);
        // b's waiter is past max_wait at 10 s; a keeps serving until 9 + 5 s.
        let b_impatient = t0 + 11 * S;
        let end = loaded + 5 * S;
        assert!(b_impatient < end);
        assert!(!closes_a(&s, b_impatient));
        assert_eq!(s.next_wakeup(b_impatient), Some(end));
        assert!(closes_a(&s, end));
    }

    #[test]
    fn fifo_and_idle_models_get_no_quantum() {
        let t0 = Instant::now();
        let mut fifo = one_room(Policy::Fifo, None, t0);
        let loaded = a_loaded_while_b_waits(&mut fifo, t0, 3 * S);
        fifo.models[0].service = Some(S);
        assert!(fifo.may_close(0, loaded));

        let mut idle = one_room(Policy::CacheAware, None, t0);
        let loaded = a_loaded_while_b_waits(&mut idle, t0, 3 * S);
        idle.models[0].queue.clear();
        idle.models[0].in_flight = 0;
        assert_eq!(idle.models[0].quantum_end(loaded, idle.limits.max_wait), None);
    }

    #[test]
    fn service_time_is_the_average_slot_holding_time() {
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, None, t0);
        a_loaded_while_b_waits(&mut s, t0, S);
        // Two admitted at 1 s; they finish at 3 s and 5 s in either order.
        s.release(0, t0 + 3 * S);
        assert_eq!(s.models[0].service, Some(2 * S));
        s.release(0, t0 + 5 * S);
        assert_eq!(s.models[0].service, Some((2 * S).mul_f64(0.8) + (4 * S).mul_f64(0.2)));
    }

    #[test]
    fn a_request_expected_to_wait_too_long_is_refused_with_the_excess_as_retry_after() {
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, Some(3 * S), t0);
        let loaded = a_loaded_while_b_waits(&mut s, t0, S);
        // Unmeasured: nothing is refused.
        assert_eq!(s.expected_wait(0, loaded), Duration::ZERO);
        s.models[0].service = Some(2 * S);
        // a: 2 in flight, 2 queued; a new one has 3 ahead beyond the 2
        // slots: 3 s of serving. a's quantum (4 x (1 s load + 2 s service),
        // capped at 5 s) is running: all of it fits in this turn.
        assert_eq!(s.expected_wait(0, loaded), 3 * S);
        // 4 s into the quantum only 1 s is left: then a drains (2 s), b
        // takes its turn (unmeasured: no time), a loads again (its load took
        // 1 s less the 1 ms b's waiter came after t0) and serves the last 2 s.
        let late = loaded + 4 * S;
        let a_load = S - Duration::from_millis(1);
        assert_eq!(s.expected_wait(0, late), S + 2 * S + a_load + 2 * S);
        match s.enqueue(0, late) {
            Err(EnqueueError::WaitTooLong { expected_s: 6, limit_s: 3, retry_after_s: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
        // b, not resident while a is busy: its waiter (since t0) gets the
        // memory at max_wait less b's load time, then a drain and b's load;
        // its one request ahead beyond b's 2 slots fits b's first turn.
        s.models[1].service = Some(S);
        s.models[1].last_load = Some(S);
        assert_eq!(loaded, t0 + S);
        // (b's waiter came 1 ms after t0.)
        assert_eq!(s.expected_wait(1, loaded), (8 + 1 + 1) * S + Duration::from_millis(1));
    }

    #[test]
    fn an_overdue_waiter_of_a_closed_model_finishes_its_turn() {
        // a was loaded for a swap with work queued behind b's waiter; its
        // quantum (5 s) ends at 14 s, b's patience is long gone: a closes.
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, None, t0);
        let loaded = a_loaded_while_b_waits(&mut s, t0, 9 * S);
        s.models[0].service = Some(S);
        let end = loaded + 5 * S;
        // Two of a's requests came while b waited: they wait on b's turn.
        s.enqueue(0, loaded + S).unwrap();
        s.enqueue(0, loaded + 2 * S).unwrap();
        assert!(s.models[0].queue.iter().all(|w| w.bounded));
        s.poll(end);
        assert!(s.models[0].closed);
        // A slot frees at 14 s; the front (since 0 s, queued while a alone
        // was busy at first: not bounded) is not admitted...
        s.models[0].queue[0].bounded = false;
        s.release(0, end);
        assert!(s.poll(end).iter().all(|a| !matches!(a, Action::Admit { .. })));
        // ... a bounded one past max_wait is: it finishes a's turn.
        s.models[0].queue[0].bounded = true;
        assert!(matches!(s.poll(end)[..], [Action::Admit { model: 0, .. }]), "overdue: waited 14 s > 10 s");
        // The other one since 0 s is overdue too; the next (since 10 s) is
        // younger than b's waiter: it waits for b's turn, and no wakeup is
        // due for it.
        s.release(0, end);
        assert!(matches!(s.poll(end)[..], [Action::Admit { model: 0, .. }]));
        s.release(0, end);
        assert!(s.poll(end).iter().all(|a| !matches!(a, Action::Admit { .. })), "younger than b's waiter");
        assert_eq!(s.next_wakeup(end), None);
    }

    #[test]
    fn waits_on_other_models_turns_are_bounded_by_twice_max_wait_and_a_queue_alone_by_max_queue_wait() {
        let t0 = Instant::now();
        // a alone, resident, 2 slots busy, 2 s per request: a long queue of
        // its own is not a turn-taking wait; 30 requests ahead (30 s) pass.
        let mut s = a_resident_with_one_in_flight(t0);
        s.models[0].service = Some(2 * S);
        for _ in 0..31 {
            s.enqueue(0, t0).unwrap();
        }
        assert!(!s.takes_turns(0) && s.expected_wait(0, t0) > 20 * S);
        assert!(s.enqueue(0, t0).is_ok_and(|t| !s.models[0].queue.iter().any(|w| w.ticket == t && w.bounded)));
        // b needs the memory while a is busy: its wait is a's turn (patience
        // 10 s) + a's drain (2 s) + b's load: 12 s is within 20 s.
        s.models[1].service = Some(2 * S);
        assert!(s.takes_turns(1));
        assert_eq!(s.expected_wait(1, t0), 12 * S);
        assert!(s.enqueue(1, t0).is_ok());
        // b's queue past what its turns serve within 20 s is refused, naming the bound.
        let refused = (0..40).find_map(|_| s.enqueue(1, t0).err());
        match refused {
            Some(EnqueueError::WaitTooLong { flag: "twice --max-wait", limit_s: 20, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn before_anything_is_measured_a_model_waiting_on_others_queues_two_batches() {
        let t0 = Instant::now();
        // a resident and busy; b (2 slots) waits for the memory; nothing measured.
        let mut s = a_resident_with_one_in_flight(t0);
        for _ in 0..4 {
            s.enqueue(1, t0).unwrap();
        }
        assert!(matches!(s.enqueue(1, t0), Err(EnqueueError::NotMeasured { waiting: 4, .. })));
        // a's requests may wait out b's turn too (b waits for the memory):
        // a takes 1 in flight + 3 queued.
        for _ in 0..3 {
            s.enqueue(0, t0).unwrap();
        }
        assert!(matches!(s.enqueue(0, t0), Err(EnqueueError::NotMeasured { waiting: 4, .. })));
        // Once a time per request is known, the estimate decides again.
        s.models[0].service = Some(S / 10);
        assert!(s.enqueue(1, t0).is_ok());
    }

    #[test]
    fn a_one_slot_model_still_queues_a_small_burst_before_anything_is_measured() {
        let t0 = Instant::now();
        let mut s = a_resident_with_one_in_flight(t0);
        s.models[1].limits.slots = 1;
        for _ in 0..COLD_QUEUE_MIN {
            s.enqueue(1, t0).unwrap();
        }
        assert!(matches!(s.enqueue(1, t0), Err(EnqueueError::NotMeasured { waiting: 4, .. })));
    }

    #[test]
    fn a_request_during_a_swap_waits_for_the_loading_model_s_turn() {
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, None, t0);
        a_loaded_while_b_waits(&mut s, t0, S);
        s.models[0].service = Some(2 * S);
        // a is loading again (say, after a swap back) with its waiters.
        s.models[0].residency = Residency::Loading;
        // b, never measured, borrows a's 2 s. Its waiter (since t0) has 2 s
        // of patience left at 8 s; a still has its load (1 s, less 1 ms) and
        // its quantum (5 s) ahead; then a drain (2 s) and b's load (unknown).
        let a_load = S - Duration::from_millis(1);
        assert_eq!(s.expected_wait(1, t0 + 8 * S), a_load + 5 * S + 2 * S);
        // Earlier, b's patience is what it waits for.
        assert_eq!(s.expected_wait(1, t0 + S), 9 * S + Duration::from_millis(1) + 2 * S);
    }

    #[test]
    fn expectations_learn_from_what_admitted_requests_really_waited() {
        let t0 = Instant::now();
        let mut s = one_room(Policy::CacheAware, None, t0);
        let loaded = a_loaded_while_b_waits(&mut s, t0, S);
        s.models[0].service = Some(2 * S);
        let raw = s.expected_wait(0, loaded);
        for _ in 0..200 {
            s.calibrate(4 * S, 8 * S);
        }
        assert!((s.wait_calibration - 2.0).abs() < 0.01, "{}", s.wait_calibration);
        assert_eq!(s.expected_wait(0, loaded), raw.mul_f64(s.wait_calibration));
        // Shorter waits than expected never make it trust less than the model.
        for _ in 0..200 {
            s.calibrate(4 * S, S);
        }
        assert!(s.wait_calibration < 1.001, "{}", s.wait_calibration);
    }

    #[test]
    fn work_past_the_current_turn_waits_for_the_others_turns() {
        // 1 s left of this turn, 5 s turns, 7 s between turns.
        let (first, turn, gap) = (S, 5 * S, 7 * S);
        assert_eq!(through_turns(S / 2, first, turn, gap), S / 2);
        assert_eq!(through_turns(3 * S, first, turn, gap), S + gap + 2 * S);
        assert_eq!(through_turns(6 * S, first, turn, gap), S + gap + 5 * S);
        assert_eq!(through_turns(8 * S, first, turn, gap), S + gap + turn + gap + 2 * S);
    }
}
