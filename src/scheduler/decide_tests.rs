//! `decide` read as a value: it changes nothing, says everything a poll
//! does, and `apply` carries out exactly that.

use std::time::{Duration, Instant};

use super::decide::{Step, UnloadReason};
use super::policy::Policy;
use super::state::*;

const MIB: u64 = 1 << 20;

fn model(name: &str, mib: u64) -> ModelLimits {
    ModelLimits { name: name.into(), bytes: mib * MIB, slots: 1, exclusive: false, ttl: None, gpu: None }
}

fn one_model_room(models: Vec<ModelLimits>, t0: Instant) -> SchedState {
    let limits = SchedLimits { max_queue: 8, ..super::state_tests::limits(150, Policy::CacheAware) };
    SchedState::new(models, limits, t0)
}

/// `a` loaded (taking 1 s) and idle since `t0 + 1 s`, a request for `b` queued.
fn a_resident_b_waiting(t0: Instant) -> SchedState {
    let mut s = one_model_room(vec![model("a", 100), model("b", 100)], t0);
    s.enqueue(0, t0).unwrap();
    s.poll(t0);
    let t1 = t0 + Duration::from_secs(1);
    s.load_done(0, Ok(None), t1);
    s.poll(t1);
    s.release(0, t1);
    s.enqueue(1, t1).unwrap();
    s
}

#[test]
fn decide_changes_nothing_and_gives_the_same_answer_twice() {
    let t0 = Instant::now();
    let s = a_resident_b_waiting(t0);
    let later = t0 + Duration::from_secs(3);
    let before = format!("{s:?}");
    let first = s.decide(later);
    assert_eq!(first, s.decide(later));
    assert_eq!(before, format!("{s:?}"), "decide must not change the state");
}

#[test]
fn an_idle_model_within_its_linger_is_kept_and_then_evicted_for_the_waiter() {
    let t0 = Instant::now();
    let s = a_resident_b_waiting(t0);
    // a took 1 s to load and was used at t0 + 1 s: it lingers until t0 + 2 s.
    let lingering = s.decide(t0 + Duration::from_millis(1500));
    assert!(lingering.unloads().is_empty() && lingering.load().is_none(), "{lingering:?}");
    let evict = s.decide(t0 + Duration::from_secs(2));
    assert_eq!(evict.unloads(), vec![(0, UnloadReason::Evicted)]);
    assert!(evict.steps.contains(&Step::SwapFor { model: Some(1) }));
}

#[test]
fn apply_carries_out_the_decision_and_nothing_else() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    let now = t0 + Duration::from_secs(2);
    let decision = s.decide(now);
    let actions = s.apply(&decision, now);
    assert_eq!(actions, vec![Action::Unload { model: 0 }]);
    assert_eq!(s.models[0].residency, Residency::Unloading);
    assert_eq!(s.swaps, 1);
    s.unload_done(0, true);
    let load = s.decide(now);
    assert_eq!(load.load(), Some((1, None)), "no GPUs: no placement");
    assert_eq!(s.apply(&load, now), vec![Action::Load { model: 1 }]);
}

#[test]
fn admissions_come_before_the_swap_step_in_one_decision() {
    let t0 = Instant::now();
    let mut s = one_model_room(vec![model("a", 100), model("b", 100)], t0);
    s.enqueue(0, t0).unwrap();
    s.poll(t0);
    s.load_done(0, Ok(None), t0);
    s.enqueue(0, t0).unwrap();
    // a's first waiter is admitted; its second waits for the only slot.
    let decision = s.decide(t0);
    assert_eq!(decision.admits().len(), 1);
    assert!(decision.load().is_none() && decision.unloads().is_empty(), "{decision:?}");
}

#[test]
fn a_ttl_unload_is_a_step_with_its_reason() {
    let t0 = Instant::now();
    let mut a = model("a", 100);
    a.ttl = Some(Duration::from_secs(5));
    let mut s = one_model_room(vec![a], t0);
    s.enqueue(0, t0).unwrap();
    s.poll(t0);
    s.load_done(0, Ok(None), t0);
    s.poll(t0);
    s.release(0, t0);
    assert!(s.decide(t0 + Duration::from_secs(4)).unloads().is_empty());
    assert_eq!(s.decide(t0 + Duration::from_secs(5)).unloads(), vec![(0, UnloadReason::Ttl)]);
}

/// `a` loaded with two slots, both admitted (in flight).
fn a_serving_two(t0: Instant) -> SchedState {
    let mut a = model("a", 100);
    a.slots = 2;
    let mut s = one_model_room(vec![a, model("b", 100)], t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    s.poll(t0);
    s.load_done(0, Ok(None), t0);
    assert_eq!(s.poll(t0).len(), 2);
    s
}

#[test]
fn an_admin_unload_and_a_retirement_say_which_they_are() {
    let t0 = Instant::now();
    let mut s = a_serving_two(t0);
    s.request_unload(0);
    s.release(0, t0);
    assert!(s.decide(t0).unloads().is_empty(), "one sequence still in flight");
    s.release(0, t0);
    assert_eq!(s.decide(t0).unloads(), vec![(0, UnloadReason::Requested)]);

    let mut s = a_serving_two(t0);
    s.retire(0);
    s.release(0, t0);
    s.release(0, t0);
    assert_eq!(s.decide(t0).unloads(), vec![(0, UnloadReason::Retired)]);
}

#[test]
fn a_busy_blocker_past_max_wait_is_closed_then_evicted() {
    let t0 = Instant::now();
    let mut s = a_serving_two(t0);
    s.enqueue(1, t0).unwrap();
    let early = s.decide(t0 + Duration::from_secs(9));
    assert_eq!(early.blockers(), None, "b has not waited max_wait: {early:?}");
    let late = t0 + Duration::from_secs(10);
    let close = s.decide(late);
    assert_eq!(close.blockers(), Some(&[0][..]));
    assert_eq!(close.swap_for(), None, "a still serves: nothing is evicted yet");
    assert!(close.unloads().is_empty());
    s.apply(&close, late);
    assert!(s.models[0].closed);
    s.release(0, late);
    s.release(0, late);
    let evict = s.decide(late);
    assert_eq!(evict.swap_for(), Some(Some(1)));
    assert_eq!(evict.unloads(), vec![(0, UnloadReason::Evicted)]);
}

#[test]
fn a_load_that_cannot_start_names_the_tickets_that_fail() {
    use crate::gpu::{GpuInfo, ModelFootprint, PlacementOptions};
    use crate::scheduler::pools::GpuDemand;

    let t0 = Instant::now();
    let footprint =
        ModelFootprint { layer_bytes: vec![100 * MIB; 4], output_bytes: 0, input_bytes: 0, kv_bytes_per_layer: vec![0; 4], compute_bytes: 0 };
    let options = PlacementOptions { devices: Some(vec![7]), ..PlacementOptions::default() };
    let a = ModelLimits { gpu: Some(GpuDemand { footprint, options }), ..model("a", 400) };
    let mut s = one_model_room(vec![a], t0);
    let gpu = GpuInfo { index: 0, uuid: None, name: "GPU 0".into(), total_mib: 24_576, free_mib: 20_000, used_mib: 4_576, utilization: None };
    s.set_gpus(&[gpu], false);
    let first = s.enqueue(0, t0).unwrap();
    let second = s.enqueue(0, t0).unwrap();
    let decision = s.decide(t0);
    assert_eq!(decision.failed_load(), Some((0, &[first, second][..])));
    assert!(decision.load().is_none());
    let failed: Vec<Ticket> =
        s.apply(&decision, t0).iter().filter_map(|a| if let Action::Fail { ticket, .. } = a { Some(*ticket) } else { None }).collect();
    assert_eq!(failed, vec![first, second]);
    assert!(matches!(s.models[0].residency, Residency::Failed { .. }));
}

/// From `a_resident_b_waiting`: `a` is evicted after its linger, `b` loads
/// (1 s) and serves its request; returns the time `b` went idle.
fn swap_to_b(s: &mut SchedState, t0: Instant, a_comes_back_during_the_swap: bool) -> Instant {
    let t2 = t0 + Duration::from_secs(2);
    s.poll(t2); // evicts a
    s.unload_done(0, true);
    s.poll(t2); // loads b
    if a_comes_back_during_the_swap {
        s.enqueue(0, t2 + Duration::from_millis(500)).unwrap();
    }
    let t3 = t2 + Duration::from_secs(1);
    s.load_done(1, Ok(None), t3);
    s.poll(t3); // admits b's request
    s.release(1, t3);
    t3
}

#[test]
fn a_model_whose_requests_only_come_after_the_swap_stops_lingering() {
    // A client alternating a, b, a, ... one request at a time: a's next
    // request comes only after b has loaded and answered.
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    let t3 = swap_to_b(&mut s, t0, false);
    s.enqueue(0, t3).unwrap();
    s.poll(t3);
    // b lingers (it was never evicted yet); once evicted and a is loaded,
    // neither lingers: a request for b is no longer kept waiting.
    let t4 = t3 + Duration::from_secs(1);
    s.poll(t4);
    s.unload_done(1, true);
    s.poll(t4);
    let t5 = t4 + Duration::from_secs(1);
    s.load_done(0, Ok(None), t5);
    s.poll(t5);
    s.release(0, t5);
    s.enqueue(1, t5).unwrap();
    let at_once = s.decide(t5);
    assert_eq!(at_once.unloads(), vec![(0, UnloadReason::Evicted)], "a waited for nothing: {at_once:?}");
}

#[test]
fn a_model_asked_for_again_during_the_swap_keeps_lingering() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    let t3 = swap_to_b(&mut s, t0, true);
    // a's request (queued during b's load) brings a back; later b is wanted.
    let t3b = t3 + Duration::from_millis(1);
    s.poll(t3b);
    s.unload_done(1, true);
    s.poll(t3b);
    let t4 = t3b + Duration::from_secs(1);
    s.load_done(0, Ok(None), t4);
    s.poll(t4);
    s.release(0, t4);
    s.enqueue(1, t4).unwrap();
    let kept = s.decide(t4 + Duration::from_millis(500));
    assert!(kept.unloads().is_empty(), "a lingers its load time: {kept:?}");
    let evicted = s.decide(t4 + Duration::from_secs(1));
    assert_eq!(evicted.unloads(), vec![(0, UnloadReason::Evicted)]);
}

#[test]
fn the_next_load_is_known_once_evictions_or_draining_start_for_it() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    assert_eq!(s.next_load(t0 + Duration::from_millis(1500)), None, "a still lingers: nothing decided");
    let t2 = t0 + Duration::from_secs(2);
    s.poll(t2); // evicts a for b
    assert_eq!(s.next_load(t2), Some(1));
}

// Sleeping (sleep.rs decides; these check the steps decide records for it).

const GIB: u64 = 1 << 30;

#[test]
fn an_evicted_model_that_can_sleep_sleeps_and_loading_it_wakes_it() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].sleep_cost = Ok(0);
    let now = t0 + Duration::from_secs(2);
    let evict = s.decide(now);
    assert_eq!(s.apply(&evict, now), vec![Action::Sleep { model: 0 }, Action::Unload { model: 0 }], "{evict:?}");
    assert_eq!(s.models[0].state_name(), "unloading", "asleep once the unload is done");
    s.unload_done(0, true);
    assert_eq!((s.models[0].state_name(), s.models[0].asleep), ("sleeping", Some(0)));
    s.poll(now);
    s.load_done(1, Ok(None), now);
    s.poll(now);
    s.release(1, now);
    // A request for `a`: its load is the wake.
    let later = now + Duration::from_secs(5);
    s.enqueue(0, later).unwrap();
    let actions = s.poll(later);
    assert!(actions.contains(&Action::Unload { model: 1 }), "{actions:?}");
    assert_eq!(s.models[0].state_name(), "sleeping", "still asleep while b unloads");
    s.unload_done(1, true);
    assert_eq!(s.poll(later), vec![Action::Load { model: 0 }]);
    assert_eq!((s.models[0].state_name(), s.models[0].asleep), ("loading", None));
}

#[test]
fn a_model_that_cannot_sleep_unloads_as_before() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].sleep_cost = Err("partial offload".into());
    s.limits.sleep.budget_bytes = 100 * GIB;
    let now = t0 + Duration::from_secs(2);
    let evict = s.decide(now);
    assert_eq!(s.apply(&evict, now), vec![Action::Unload { model: 0 }]);
    s.unload_done(0, true);
    assert_eq!(s.models[0].state_name(), "unloaded");
}

/// Three models with room for one; each sleeps for 6 GiB, the budget holds one.
#[test]
fn a_new_sleeper_drops_an_older_one_when_the_budget_holds_only_one() {
    let t0 = Instant::now();
    let mut s = one_model_room(vec![model("a", 100), model("b", 100), model("c", 100)], t0);
    s.limits.sleep.budget_bytes = 10 * GIB;
    let mut now = t0;
    s.enqueue(0, now).unwrap();
    for (m, next) in [(0usize, 1usize), (1, 2)] {
        assert_eq!(s.poll(now), vec![Action::Load { model: m }]);
        s.load_done(m, Ok(None), now);
        s.models[m].sleep_cost = Ok(6 * GIB);
        s.poll(now);
        s.release(m, now);
        now += Duration::from_secs(10);
        s.enqueue(next, now).unwrap();
        let actions = s.poll(now);
        if m == 0 {
            assert_eq!(actions, vec![Action::Sleep { model: 0 }, Action::Unload { model: 0 }]);
        } else {
            assert_eq!(actions, vec![Action::DropSleeper { model: 0 }, Action::Sleep { model: 1 }, Action::Unload { model: 1 }]);
        }
        s.unload_done(m, true);
    }
    let asleep: Vec<_> = s.models.iter().map(|m| m.asleep).collect();
    assert_eq!(asleep, vec![None, Some(6 * GIB), None]);
}

#[test]
fn a_retired_or_admin_unloaded_sleeper_gives_back_what_it_keeps() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].sleep_cost = Ok(0);
    let now = t0 + Duration::from_secs(2);
    s.poll(now);
    s.unload_done(0, true);
    assert_eq!(s.drop_sleeper(0), vec![Action::DropSleeper { model: 0 }]);
    assert_eq!(s.models[0].state_name(), "unloaded");
    assert!(s.drop_sleeper(0).is_empty(), "nothing left to drop");
    // Asleep again, then removed by a config reload.
    s.models[0].asleep = Some(0);
    s.retire(0);
    assert!(s.poll(now).contains(&Action::DropSleeper { model: 0 }));
    assert_eq!(s.models[0].asleep, None);
}

#[test]
fn the_sleeping_target_is_never_dropped_for_its_own_evictee() {
    // a asleep (6 GiB), b loaded (6 GiB) and evicted for a: the budget of 10
    // GiB holds one; a wakes, keeping its copy, so b cannot sleep.
    let t0 = Instant::now();
    let mut s = one_model_room(vec![model("a", 100), model("b", 100)], t0);
    s.limits.sleep.budget_bytes = 10 * GIB;
    s.models[0].asleep = Some(6 * GIB);
    s.models[1].residency = Residency::Loaded;
    s.models[1].sleep_cost = Ok(6 * GIB);
    let later = t0 + Duration::from_secs(60);
    s.enqueue(0, later).unwrap();
    let actions = s.poll(later);
    assert_eq!(actions, vec![Action::Unload { model: 1 }], "no DropSleeper(a), no Sleep(b)");
    assert_eq!(s.models[0].asleep, Some(6 * GIB));
}

#[test]
fn an_engine_that_did_not_sleep_leaves_nothing_asleep() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].sleep_cost = Ok(4 * GIB);
    s.limits.sleep.budget_bytes = 8 * GIB;
    let now = t0 + Duration::from_secs(2);
    assert_eq!(s.poll(now), vec![Action::Sleep { model: 0 }, Action::Unload { model: 0 }]);
    assert!(s.unload_done(0, false).is_empty());
    assert_eq!((s.models[0].state_name(), s.models[0].asleep), ("unloaded", None));
}

#[test]
fn an_admin_unload_during_the_unload_to_sleep_releases_it_when_done() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].sleep_cost = Ok(0);
    let now = t0 + Duration::from_secs(2);
    s.poll(now);
    assert!(s.drop_sleeper(0).is_empty(), "still unloading: nothing to release yet");
    assert_eq!(s.unload_done(0, true), vec![Action::DropSleeper { model: 0 }]);
    assert_eq!(s.models[0].state_name(), "unloaded");
}

#[test]
fn a_ttl_ends_a_sleep_and_is_a_wakeup() {
    let t0 = Instant::now();
    let mut s = a_resident_b_waiting(t0);
    s.models[0].limits.ttl = Some(Duration::from_secs(30));
    s.models[0].sleep_cost = Ok(0);
    let now = t0 + Duration::from_secs(2);
    s.poll(now);
    s.unload_done(0, true);
    s.poll(now);
    s.load_done(1, Ok(None), now);
    s.poll(now);
    s.release(1, now);
    // a was last used at t0 + 1 s: its ttl ends at t0 + 31 s.
    assert_eq!(s.next_wakeup(now), Some(t0 + Duration::from_secs(31)));
    assert!(s.poll(t0 + Duration::from_secs(30)).is_empty());
    assert_eq!(s.poll(t0 + Duration::from_secs(31)), vec![Action::DropSleeper { model: 0 }]);
    assert_eq!(s.models[0].asleep, None);
}

#[test]
fn a_sleeper_that_cannot_load_gives_back_what_it_keeps() {
    let t0 = Instant::now();
    let mut s = one_model_room(vec![model("a", 100)], t0);
    s.models[0].asleep = Some(0);
    let step = Step::FailLoad { model: 0, reason: "no such GPU".into(), tickets: vec![] };
    let actions = s.apply(&super::decide::Decision { steps: vec![step] }, t0);
    assert_eq!(actions.first(), Some(&Action::DropSleeper { model: 0 }));
    assert_eq!(s.models[0].asleep, None);
}
