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
    let limits = SchedLimits {
        budget_bytes: 150 * MIB,
        max_loaded: None,
        max_wait: Duration::from_secs(10),
        max_queue: 8,
        policy: Policy::CacheAware,
        retry_backoff: Duration::from_secs(2),
    };
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
    s.unload_done(0);
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
