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
//! - **Turns keep their promises** (`turns.rs`). A request that arrives
//!   while models take turns is promised a turn of its model by places (a
//!   turn admits what its quantum serves); its model does not give way
//!   before it is admitted. Ending a turn by its quantum alone stranded the
//!   requests the estimate had placed in it for a whole cycle of the others
//!   (the one-minute tail of issue 28).
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
//!   service time; when models take turns for the memory, it waits for the
//!   turn it is promised: the current one, or the end of the current one
//!   (or, not resident, its turn for the memory: see `turn_of`), a drain,
//!   the others' turns (a load, a quantum, a drain each) and its load, a
//!   whole cycle more for each turn after that, and the batches ahead of it
//!   in its turn. A model not measured
//!   yet borrows the others' mean service time; before any request finished
//!   anywhere there is no estimate, and a model waiting on others' turns
//!   queues at most two batches of its slots, and at least four requests
//!   (`COLD_QUEUE`, `COLD_QUEUE_MIN`), and nothing while two other models
//!   wait for the memory before it (`COLD_TURNS_AHEAD`): a cold start
//!   under load otherwise queued every client at once, the longest waits of
//!   a soak. What the model misses is corrected by
//!   measurement: the average ratio of waited to expected time of admitted
//!   requests (1x to 4x) multiplies every expectation.

use std::time::{Duration, Instant};

use super::state::{EnqueueError, ModelSched, Residency, SchedState};

/// What a request should expect when it comes (before calibration).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Expectation {
    /// Its wait for a slot.
    pub wait: Duration,
    /// While models take turns and it is not promised the current one:
    /// how long until its model's next turn starts.
    pub next_turn: Duration,
    /// The turn of its model it is promised, while models take turns
    /// (`takes_turns`; turns.rs).
    pub promise: Option<u64>,
}

/// Expected waits shorter than this do not move the calibration.
const CALIBRATE_FROM: Duration = Duration::from_secs(1);
/// Weight of the newest admitted request in the calibration.
const CALIBRATION_WEIGHT: f64 = 0.2;

/// Before any time per request is measured, a model waiting on other
/// models' turns queues at most this many batches of its slots, and never
/// fewer than `COLD_QUEUE_MIN` requests (a one-slot model still takes a
/// small burst, as llama-server's router queues it).
pub(super) const COLD_QUEUE: usize = 2;
pub(super) const COLD_QUEUE_MIN: usize = 4;
/// Before any time per request is measured, a model waiting on others'
/// turns queues nothing while this many other models wait for the memory
/// before it (eight cold models queued their two batches each at once, and
/// the last waited seven turns).
const COLD_TURNS_AHEAD: usize = 2;

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

    /// How long it is served after a load before busy work can be closed.
    pub(super) fn quantum(&self, max_wait: Duration) -> Duration {
        self.quantum_at(max_wait, self.service.unwrap_or_default())
    }

    /// Its quantum at `service` per request (its own, or a guess while it
    /// has none measured): `QUANTUM_SWAPS` times what swapping to it and
    /// away again costs (its load, and a drain of about one request).
    pub(super) fn quantum_at(&self, max_wait: Duration, service: Duration) -> Duration {
        ((self.last_load.unwrap_or_default() + service) * QUANTUM_SWAPS).min(max_wait / 2)
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
        self.expectation(model, now).wait
    }

    /// What a request for `model` arriving now should expect, before
    /// calibration (see the module notes).
    pub(super) fn expectation(&self, model: usize, now: Instant) -> Expectation {
        let m = &self.models[model];
        // A model not measured yet borrows the others' typical service time.
        let prior = self.service_prior();
        // While models take turns: the turn it is promised and the requests
        // ahead of it there (turns.rs).
        let max_wait = self.limits.max_wait;
        let open = self.turn_open(model, now);
        let place = self.takes_turns(model).then(|| m.next_place(m.turn_places(max_wait, m.service.or(prior)), open));
        let promise = place.map(|(turn, _)| turn);
        let Some(service) = m.service.or(prior) else { return Expectation { promise, ..Expectation::default() } };
        let slots = m.limits.slots.max(1) as usize;
        // Serving time of `ahead` requests beyond the free slots, spread over the slots.
        let spread = |ahead: usize| service.mul_f64(ahead as f64 / slots as f64);
        let before_it = (m.queue.len() + m.in_flight as usize + 1).saturating_sub(slots);
        let within = |wait| Expectation { wait, next_turn: Duration::ZERO, promise };
        let Some((turn, ahead)) = place else { return within(spread(before_it)) };
        // Its load (what is left of it), then its queue, when no other
        // model is busy or it is promised its current turn.
        if !self.contended(model) || (turn == m.turn && open) {
            return within(m.load_left(now) + spread(before_it));
        }
        // A later turn: its current turn ends and drains, or it waits for
        // the memory (`turn_of`); the others each load, serve their turn and
        // drain; it loads. Then a whole cycle for each turn after the next,
        // and the batches ahead of it in its turn. A model not measured yet
        // counts at the others' mean service time.
        let others_turns: Duration = self.models.iter().enumerate().filter(|&(i, o)| i != model && o.busy()).map(|(_, o)| o.turn_length(max_wait, prior)).sum();
        let load = m.last_load.unwrap_or_default();
        let next_turn = match m.residency {
            Residency::Loaded => m.turn_left(now, max_wait, service, open) + service + others_turns + load,
            Residency::Loading => m.loading_left(now, max_wait, prior) + service + others_turns + load,
            _ => self.turn_of(model, now) + load,
        };
        let cycle = m.turn_length(max_wait, Some(service)) + others_turns;
        let later = turn.saturating_sub(m.turn + 1) as u32;
        Expectation { wait: next_turn + cycle * later + spread((ahead + 1).saturating_sub(slots)), next_turn, promise }
    }

    /// The mean service time of the models measured so far.
    pub(super) fn service_prior(&self) -> Option<Duration> {
        let known: Vec<Duration> = self.models.iter().filter_map(|m| m.service).collect();
        (!known.is_empty()).then(|| known.iter().sum::<Duration>() / known.len() as u32)
    }

    /// How long until a model that is not resident gets the memory: while
    /// others are busy, its oldest waiter's patience (max_wait less its load
    /// time) and their turns must run out, they drain, and every model whose
    /// waiters are older loads first and takes a whole turn.
    fn turn_of(&self, model: usize, now: Instant) -> Duration {
        let m = &self.models[model];
        let max_wait = self.limits.max_wait;
        let prior = self.service_prior();
        let oldest = m.oldest_wait().unwrap_or(now);
        let mut holders_busy = false;
        let mut holders_left = Duration::ZERO;
        let mut drain = Duration::ZERO;
        let mut ahead = Duration::ZERO;
        let others = self.models.iter().enumerate().filter(|&(i, o)| i != model && o.busy());
        for (i, o) in others {
            let service = o.service.or(prior).unwrap_or_default();
            match o.residency {
                // Gives way once its quantum is over and its promises kept.
                Residency::Loaded => {
                    holders_busy = true;
                    drain = drain.max(service);
                    holders_left = holders_left.max(o.turn_left(now, max_wait, service, self.turn_open(i, now)));
                }
                // A swap under way: it loads, then takes its turn.
                Residency::Loading => {
                    holders_busy = true;
                    drain = drain.max(service);
                    holders_left = holders_left.max(o.loading_left(now, max_wait, prior));
                }
                // Waiting longer than this model's waiters: it goes first.
                _ if o.oldest_wait().is_some_and(|t| t < oldest) => {
                    ahead += o.turn_length(max_wait, prior);
                }
                _ => {}
            }
        }
        // Busy holders give way when this model's patience runs out (max_wait
        // less its load time), and not before their quanta end and the
        // requests promised their turns are admitted.
        let patience_left = if holders_busy { (oldest + self.patience(m)).saturating_duration_since(now) } else { Duration::ZERO };
        patience_left.max(holders_left) + drain + ahead
    }

    /// How many other models wait for the memory (not loaded nor loading)
    /// with waiters older than `model`'s oldest (all of them, when `model`
    /// has none yet).
    fn waiting_ahead(&self, model: usize, now: Instant) -> usize {
        let oldest = self.models[model].oldest_wait();
        self.waiting_for_memory(model).filter(|&(_, t)| oldest.map_or(t <= now, |mine| t < mine)).count()
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

    /// The refusal for a request for `model` whose uncalibrated expectation
    /// is `raw`, if its wait (calibrated) passes the bound that applies or
    /// it would be promised a turn after its model's next (see the module
    /// notes). No `max_queue_wait`: no admission by expected wait.
    pub(super) fn wait_too_long(&self, model: usize, raw: Expectation, now: Instant) -> Option<EnqueueError> {
        let queue_limit = self.limits.max_queue_wait?;
        let m = &self.models[model];
        let promise = raw.promise;
        let takes_turns = promise.is_some();
        // Nothing measured yet (a cold start under load): no estimate, so a
        // model waiting on others' turns queues at most two batches of its
        // slots rather than every client at once, and nothing while two
        // other models wait for the memory before it.
        let waiting = m.queue.len() + m.in_flight as usize;
        let cold_cap = (COLD_QUEUE * m.limits.slots.max(1) as usize).max(COLD_QUEUE_MIN);
        let service = m.service.or_else(|| self.service_prior());
        if takes_turns && service.is_none() {
            let ahead = self.waiting_ahead(model, now);
            if waiting >= cold_cap || ahead >= COLD_TURNS_AHEAD {
                return Some(EnqueueError::NotMeasured { model: m.limits.name.clone(), waiting, ahead });
            }
        }
        let (limit, flag) = match takes_turns && self.wait_bound() <= queue_limit {
            true => (self.wait_bound(), "twice --max-wait"),
            false => (queue_limit, "--max-queue-wait"),
        };
        let mut expected = raw.wait.mul_f64(self.wait_calibration);
        if takes_turns {
            // Its first token, not its slot: one service time in hand (at
            // most a quarter of max_wait) for a holder's long request in the
            // drain and its own prompt after admission.
            expected += service.unwrap_or_default().min(self.limits.max_wait / 4);
        }
        let seconds = |d: Duration| d.as_secs_f64().ceil().max(1.0) as u64;
        // Only the current and the next turn are promised (turns.rs): past
        // them, retry when the next turn starts.
        if promise.is_some_and(|t| t > m.turn + 1) && self.contended(model) {
            return Some(EnqueueError::TurnsFull { model: m.limits.name.clone(), retry_after_s: seconds(raw.next_turn) });
        }
        (expected > limit).then(|| EnqueueError::WaitTooLong {
            model: m.limits.name.clone(),
            expected_s: expected.as_secs_f64().ceil() as u64,
            limit_s: limit.as_secs_f64().ceil() as u64,
            retry_after_s: seconds(expected - limit),
            flag,
        })
    }

    /// Whether a busy resident `model` may be closed now for another
    /// model's waiter: its quantum is over and the requests promised its
    /// turn are admitted (fifo has neither).
    pub(super) fn may_close(&self, model: usize, now: Instant) -> bool {
        self.limits.policy == super::Policy::Fifo || (self.models[model].quantum_end(now, self.limits.max_wait).is_none() && self.promises_kept(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::state::{Action, ModelLimits, SchedLimits};
    use crate::scheduler::state_tests::{limits, model};
    use crate::scheduler::{Policy, Step};

    const S: Duration = Duration::from_secs(1);

    /// Models a (0) and b (1), 100 MiB each, memory for one; 2 slots each.
    fn one_room(policy: Policy, max_queue_wait: Option<Duration>, t0: Instant) -> SchedState {
        let limits = SchedLimits { max_queue_wait, ..limits(150, policy) };
        SchedState::new(vec![model("a", 100, 2), model("b", 100, 2)], limits, t0)
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
    fn a_model_loaded_for_a_swap_serves_its_quantum_and_its_promised_requests_before_it_is_closed() {
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
        // a's two queued requests came while it was not resident: they were
        // promised its turn (turns.rs), and a closes once they are admitted.
        assert!(s.models[0].queue.iter().all(|w| w.promise == Some(1)));
        assert!(!closes_a(&s, end));
        s.release(0, end);
        s.release(0, end);
        let admitted = s.poll(end).iter().filter(|a| matches!(a, Action::Admit { model: 0, .. })).count();
        assert_eq!((admitted, s.models[0].promised_now()), (2, 0), "both promised requests admitted");
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
        let mut s = one_room(Policy::CacheAware, Some(5 * S), t0);
        let loaded = a_loaded_while_b_waits(&mut s, t0, S);
        // Unmeasured: nothing is refused.
        assert_eq!(s.expected_wait(0, loaded), Duration::ZERO);
        s.models[0].service = Some(2 * S);
        // a: 2 in flight, 2 queued; a new one has 3 ahead beyond the 2
        // slots: 3 s of serving, within a's turn (its places: 2 slots, and 2
        // more per 2 s of its 5 s quantum: 6; 4 taken).
        assert_eq!(s.expected_wait(0, loaded), 3 * S);
        assert!(s.enqueue(0, loaded).is_ok());
        // Waiting on b's turn too, its first token is counted: a service time
        // (2 s) in hand: 5 s, within --max-queue-wait. The next has 4 ahead:
        // 6 s, 1 s more.
        match s.enqueue(0, loaded) {
            Err(EnqueueError::WaitTooLong { expected_s: 6, limit_s: 5, retry_after_s: 1, flag: "--max-queue-wait", .. }) => {}
            other => panic!("{other:?}"),
        }
        // b, not resident while a is busy: its waiter (since t0) gets the
        // memory at max_wait less b's load time, then a's drain (2 s) and
        // b's load; its one request ahead beyond b's 2 slots fits b's first
        // turn.
        s.models[1].service = Some(S);
        s.models[1].last_load = Some(S);
        assert_eq!(loaded, t0 + S);
        // (b's waiter came 1 ms after t0.)
        assert_eq!(s.expected_wait(1, loaded), (8 + 2 + 1) * S + Duration::from_millis(1));
    }

    #[test]
    fn waits_on_other_models_turns_are_bounded_by_their_turns_and_a_queue_alone_by_max_queue_wait() {
        let t0 = Instant::now();
        // a alone, resident, 2 slots busy, 2 s per request: a long queue of
        // its own is not a turn-taking wait; 30 requests ahead (30 s) pass.
        let mut s = a_resident_with_one_in_flight(t0);
        s.models[0].service = Some(2 * S);
        for _ in 0..31 {
            s.enqueue(0, t0).unwrap();
        }
        assert!(!s.takes_turns(0) && s.expected_wait(0, t0) > 20 * S);
        assert!(s.enqueue(0, t0).is_ok_and(|t| !s.models[0].queue.iter().any(|w| w.ticket == t && w.promise.is_some())));
        // b needs the memory while a is busy: its wait is a's turn (patience
        // 10 s) + a's drain (2 s) + b's load: 12 s is within 20 s.
        s.models[1].service = Some(2 * S);
        assert!(s.takes_turns(1));
        assert_eq!(s.expected_wait(1, t0), 12 * S);
        assert!(s.enqueue(1, t0).is_ok());
        // b's next turn has 6 places (2 slots, 2 more per 2 s of its 5 s
        // quantum); the 6th starts 4 s into it, 18 s with a service time in
        // hand. The 7th would wait for the turn after: refused.
        let refused = (0..40).find_map(|_| s.enqueue(1, t0).err());
        assert!(matches!(refused, Some(EnqueueError::TurnsFull { .. })), "{refused:?}");
        assert_eq!(s.models[1].queue.len(), 6);
    }

    #[test]
    fn before_anything_is_measured_a_model_waiting_on_others_queues_two_batches() {
        let t0 = Instant::now();
        // a resident and busy; b (2 slots) waits for the memory; nothing measured.
        let mut s = a_resident_with_one_in_flight(t0);
        for _ in 0..4 {
            s.enqueue(1, t0).unwrap();
        }
        assert!(matches!(s.enqueue(1, t0), Err(EnqueueError::NotMeasured { waiting: 4, ahead: 0, .. })));
        // a's requests may wait out b's turn too (b waits for the memory):
        // a takes 1 in flight + 3 queued.
        for _ in 0..3 {
            s.enqueue(0, t0).unwrap();
        }
        assert!(matches!(s.enqueue(0, t0), Err(EnqueueError::NotMeasured { waiting: 4, ahead: 0, .. })));
        // Once a time per request is known, the estimate decides again.
        s.models[0].service = Some(S / 10);
        assert!(s.enqueue(1, t0).is_ok());
    }

    #[test]
    fn before_anything_is_measured_a_model_queues_nothing_behind_two_models_waiting_for_the_memory() {
        let t0 = Instant::now();
        let mut s = a_resident_with_one_in_flight(t0);
        for name in ["c", "d"] {
            let limits = s.models[1].limits.clone();
            s.add_model(ModelLimits { name: name.into(), ..limits }, t0);
        }
        // b waits first, then c (one model ahead), then d (two ahead): refused.
        s.enqueue(1, t0).unwrap();
        s.enqueue(2, t0 + S).unwrap();
        match s.enqueue(3, t0 + 2 * S) {
            Err(EnqueueError::NotMeasured { waiting: 0, ahead: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // c's next request still counts only b ahead of its own waiter.
        assert!(s.enqueue(2, t0 + 2 * S).is_ok());
        // Measured, the estimate decides again.
        s.models[0].service = Some(S / 10);
        assert!(s.enqueue(3, t0 + 2 * S).is_ok());
    }

    #[test]
    fn a_one_slot_model_still_queues_a_small_burst_before_anything_is_measured() {
        let t0 = Instant::now();
        let mut s = a_resident_with_one_in_flight(t0);
        s.models[1].limits.slots = 1;
        for _ in 0..COLD_QUEUE_MIN {
            s.enqueue(1, t0).unwrap();
        }
        assert!(matches!(s.enqueue(1, t0), Err(EnqueueError::NotMeasured { waiting: 4, ahead: 0, .. })));
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
}
