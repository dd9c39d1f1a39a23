//! The scheduler state machine driven event by event: no threads, no sleeps;
//! time is a value the test moves forward.

use std::time::{Duration, Instant};

use super::policy::Policy;
use super::state::*;

const MIB: u64 = 1 << 20;

pub(super) fn model(name: &str, mib: u64, slots: u32) -> ModelLimits {
    ModelLimits { name: name.into(), bytes: mib * MIB, slots, exclusive: false, ttl: None, gpu: None }
}

/// The scheduler's limits the tests start from: `budget_mib` of memory,
/// `--max-wait 10s`, 64 waiting per model, no admission by expected wait.
pub(super) fn limits(budget_mib: u64, policy: Policy) -> SchedLimits {
    SchedLimits {
        budget_bytes: budget_mib * MIB,
        max_loaded: None,
        max_wait: Duration::from_secs(10),
        max_queue: 64,
        max_queue_wait: None,
        policy,
        retry_backoff: Duration::from_secs(2),
        sleep: Default::default(),
        autoload: true,
        any_model_name: false,
    }
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn admitted(actions: &[Action]) -> Vec<(usize, Ticket)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Admit { model, ticket } => Some((*model, *ticket)),
            _ => None,
        })
        .collect()
}

/// Loads `model` to completion at `now` (Load action expected first).
fn load(s: &mut SchedState, model: usize, now: Instant) -> Vec<Action> {
    let actions = s.poll(now);
    assert!(actions.contains(&Action::Load { model }), "{actions:?}");
    s.load_done(model, Ok(None), now);
    s.poll(now)
}

#[test]
fn admits_up_to_its_slots_and_queues_the_rest() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 100, 2)], limits(1000, Policy::CacheAware), t0);
    for _ in 0..3 {
        s.enqueue(0, t0).unwrap();
    }
    let actions = load(&mut s, 0, t0);
    assert_eq!(admitted(&actions), vec![(0, 1), (0, 2)]);
    assert_eq!(s.models[0].queue.len(), 1);
    s.release(0, t0);
    assert_eq!(admitted(&s.poll(t0)), vec![(0, 3)]);
}

#[test]
fn concurrent_requests_join_one_load() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 100, 4)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }]);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    assert_eq!(s.poll(t0), vec![], "no second load while loading");
    s.load_done(0, Ok(Some(120 * MIB)), t0);
    assert_eq!(admitted(&s.poll(t0)).len(), 3);
    assert_eq!(s.models[0].limits.bytes, 120 * MIB, "measured size replaces the estimate");
    assert_eq!(s.models[0].load_count, 1);
}

#[test]
fn two_models_that_fit_stay_loaded_together() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 400, 1), model("b", 400, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.enqueue(1, t0).unwrap();
    load(&mut s, 1, t0);
    assert_eq!(s.models[0].residency, Residency::Loaded);
    assert_eq!(s.models[1].residency, Residency::Loaded);
    assert_eq!(s.swaps, 0);
}

#[test]
fn idle_model_is_evicted_to_make_room_least_recently_used_first() {
    let t0 = Instant::now();
    let mut s = SchedState::new(
        vec![model("a", 400, 1), model("b", 400, 1), model("c", 400, 1)],
        limits(800, Policy::CacheAware),
        t0,
    );
    for (m, at) in [(0, 0), (1, 1)] {
        s.enqueue(m, secs(t0, at)).unwrap();
        load(&mut s, m, secs(t0, at));
        s.release(m, secs(t0, at));
    }
    s.enqueue(2, secs(t0, 2)).unwrap();
    assert_eq!(s.poll(secs(t0, 2)), vec![Action::Unload { model: 0 }], "a was used longest ago");
    s.unload_done(0, true);
    load(&mut s, 2, secs(t0, 2));
    assert_eq!(s.swaps, 1);
}

#[test]
fn drains_resident_model_before_swapping() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0); // a is in flight
    s.enqueue(1, secs(t0, 1)).unwrap(); // b cannot fit while a is busy
    s.enqueue(0, secs(t0, 2)).unwrap(); // more work for the resident a
    assert_eq!(s.poll(secs(t0, 2)), vec![]);
    // a finishes its request; its queue is drained before any swap.
    s.release(0, secs(t0, 3));
    let actions = s.poll(secs(t0, 3));
    assert_eq!(admitted(&actions), vec![(0, 3)]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Unload { .. })));
    // a goes idle: now the swap happens.
    s.release(0, secs(t0, 4));
    assert_eq!(s.poll(secs(t0, 4)), vec![Action::Unload { model: 0 }]);
    s.unload_done(0, true);
    assert_eq!(admitted(&load(&mut s, 1, secs(t0, 4))), vec![(1, 2)]);
}

#[test]
fn max_wait_stops_admissions_to_the_blocker_then_swaps() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.enqueue(1, secs(t0, 1)).unwrap(); // b's waiter arrives at 1s
    assert_eq!(s.next_wakeup(secs(t0, 1)), Some(secs(t0, 11)), "the bound is a timer");
    // a keeps getting work and serving it before the bound.
    for k in 2..=10 {
        s.enqueue(0, secs(t0, k)).unwrap();
        s.release(0, secs(t0, k));
        assert_eq!(admitted(&s.poll(secs(t0, k))).len(), 1, "at {k}s a still drains");
    }
    // 11s: b's waiter has waited max_wait. a has one in flight and one queued.
    s.enqueue(0, secs(t0, 11)).unwrap();
    assert_eq!(s.poll(secs(t0, 11)), vec![], "a is busy: it must finish first");
    assert!(s.models[0].closed);
    s.release(0, secs(t0, 12));
    assert_eq!(s.poll(secs(t0, 12)), vec![Action::Unload { model: 0 }], "no new admission to a; swap");
    s.unload_done(0, true);
    assert_eq!(admitted(&load(&mut s, 1, secs(t0, 12))), vec![(1, 2)]);
    assert_eq!(s.models[0].queue.len(), 1, "a's late waiter waits for its turn");
}

#[test]
fn never_unloads_a_model_with_sequences_in_flight() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 2), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.enqueue(1, t0).unwrap();
    for k in [30, 60, 600] {
        assert_eq!(s.poll(secs(t0, k)), vec![], "two sequences still in flight at {k}s");
    }
    s.release(0, secs(t0, 601));
    assert_eq!(s.poll(secs(t0, 601)), vec![]);
    s.release(0, secs(t0, 602));
    assert_eq!(s.poll(secs(t0, 602)), vec![Action::Unload { model: 0 }]);
}

#[test]
fn failed_load_fails_waiters_backs_off_and_retries_later() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 100, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }]);
    let failed = s.load_done(0, Err("bad file".into()), t0);
    assert_eq!(failed.len(), 2);
    assert!(matches!(&failed[0], Action::Fail { reason, .. } if reason == "bad file"));
    assert_eq!(s.models[0].residency.name(), "failed");
    // During the backoff requests fail fast.
    assert!(matches!(s.enqueue(0, secs(t0, 1)), Err(EnqueueError::BackingOff { .. })));
    // After it, a request triggers a new load.
    s.enqueue(0, secs(t0, 2)).unwrap();
    assert_eq!(s.poll(secs(t0, 2)), vec![Action::Load { model: 0 }]);
    // A second failure doubles the backoff.
    s.load_done(0, Err("bad file".into()), secs(t0, 2));
    assert!(s.enqueue(0, secs(t0, 5)).is_err());
    assert!(s.enqueue(0, secs(t0, 6)).is_ok());
}

#[test]
fn idle_model_unloads_after_its_ttl() {
    let t0 = Instant::now();
    let mut m = model("a", 100, 1);
    m.ttl = Some(Duration::from_secs(30));
    let mut s = SchedState::new(vec![m], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.release(0, secs(t0, 5));
    assert_eq!(s.next_wakeup(secs(t0, 5)), Some(secs(t0, 35)));
    assert_eq!(s.poll(secs(t0, 34)), vec![]);
    assert_eq!(s.poll(secs(t0, 35)), vec![Action::Unload { model: 0 }]);
    assert_eq!(s.swaps, 0, "a ttl unload is not a swap");
}

#[test]
fn exclusive_model_evicts_all_others_and_keeps_them_out() {
    let t0 = Instant::now();
    let mut x = model("x", 100, 1);
    x.exclusive = true;
    let mut s = SchedState::new(vec![model("a", 100, 1), model("b", 100, 1), x], limits(1000, Policy::CacheAware), t0);
    for m in [0, 1] {
        s.enqueue(m, t0).unwrap();
        load(&mut s, m, t0);
        s.release(m, t0);
    }
    s.enqueue(2, secs(t0, 1)).unwrap();
    let actions = s.poll(secs(t0, 1));
    assert_eq!(actions, vec![Action::Unload { model: 0 }, Action::Unload { model: 1 }]);
    s.unload_done(0, true);
    s.unload_done(1, true);
    load(&mut s, 2, secs(t0, 1));
    s.release(2, secs(t0, 2));
    // a small model does not fit beside the exclusive one: x is swapped out.
    s.enqueue(0, secs(t0, 3)).unwrap();
    assert_eq!(s.poll(secs(t0, 3)), vec![Action::Unload { model: 2 }]);
}

#[test]
fn full_queue_is_rejected() {
    let t0 = Instant::now();
    let mut l = limits(1000, Policy::CacheAware);
    l.max_queue = 2;
    let mut s = SchedState::new(vec![model("a", 100, 1)], l, t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    assert!(matches!(s.enqueue(0, t0), Err(EnqueueError::QueueFull { max: 2, .. })));
}

#[test]
fn max_loaded_models_caps_residency_by_count() {
    let t0 = Instant::now();
    let mut l = limits(10_000, Policy::CacheAware);
    l.max_loaded = Some(1);
    let mut s = SchedState::new(vec![model("a", 100, 1), model("b", 100, 1)], l, t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.release(0, t0);
    s.enqueue(1, t0).unwrap();
    assert_eq!(s.poll(t0), vec![Action::Unload { model: 0 }]);
}

#[test]
fn cancelled_waiter_does_not_trigger_a_load() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    let t = s.enqueue(1, t0).unwrap();
    assert!(s.cancel(1, t));
    s.release(0, t0);
    assert_eq!(s.poll(secs(t0, 100)), vec![]);
}

/// Replays the same interleaved arrivals (a, b, a, b, ... one a second, each
/// request taking 3s on one of 4 slots) under both policies with a one-model
/// budget.
fn swaps_for(policy: Policy) -> u64 {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 4), model("b", 600, 4)], limits(1000, policy), t0);
    let mut in_flight: Vec<(usize, u64)> = Vec::new(); // (model, finishes at second)
    for second in 0..300u64 {
        let now = secs(t0, second);
        if second < 40 {
            s.enqueue((second % 2) as usize, now).unwrap();
        }
        in_flight.retain(|&(m, end)| {
            if end <= second {
                s.release(m, now);
                false
            } else {
                true
            }
        });
        // Loads and unloads complete within the same second in this replay.
        for _ in 0..4 {
            for action in s.poll(now) {
                match action {
                    Action::Admit { model, .. } => in_flight.push((model, second + 3)),
                    Action::Load { model } => {
                        s.load_done(model, Ok(None), now);
                    }
                    Action::Unload { model } => drop(s.unload_done(model, true)),
                    Action::Sleep { .. } | Action::DropSleeper { .. } => {}
                    Action::Fail { .. } => panic!("unexpected failure"),
                }
            }
        }
    }
    assert!(s.models.iter().all(|m| m.queue.is_empty()), "every request was served under {policy:?}: {:?}", s.models.iter().map(|m| (m.residency.clone(), m.in_flight, m.queue.len(), m.closed)).collect::<Vec<_>>());
    s.swaps
}

#[test]
fn cache_aware_swaps_far_less_than_fifo_on_interleaved_requests() {
    let fifo = swaps_for(Policy::Fifo);
    let cache_aware = swaps_for(Policy::CacheAware);
    eprintln!("interleaved replay: fifo {fifo} swaps, cache-aware {cache_aware} swaps");
    assert!(fifo >= 30, "fifo swaps on nearly every request: {fifo}");
    assert!(cache_aware * 3 <= fifo, "cache-aware {cache_aware} vs fifo {fifo}");
}

#[test]
fn admin_unload_waits_for_in_flight_work() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 100, 2)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.request_unload(0);
    s.enqueue(0, t0).unwrap();
    assert_eq!(s.poll(t0), vec![], "no admission, no unload while in flight");
    s.release(0, t0);
    assert_eq!(s.poll(t0), vec![Action::Unload { model: 0 }]);
    s.unload_done(0, true);
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }], "its queued request brings it back");
}

#[test]
fn a_freshly_loaded_model_serves_its_waiters_before_it_can_be_evicted() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(1, t0).unwrap();
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }]);
    // The load took longer than max_wait: b's waiter is overdue by now.
    let later = secs(t0, 30);
    s.load_done(0, Ok(None), later);
    let actions = s.poll(later);
    assert_eq!(admitted(&actions), vec![(0, 1)], "a serves its waiter first: {actions:?}");
    assert!(!actions.contains(&Action::Unload { model: 0 }));
    s.release(0, later);
    assert_eq!(s.poll(later), vec![Action::Unload { model: 0 }]);
}

#[test]
fn an_idle_model_lingers_for_its_reload_time_before_eviction() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }]);
    s.load_done(0, Ok(None), secs(t0, 2)); // the load took 2s
    s.poll(secs(t0, 2));
    s.release(0, secs(t0, 3));
    s.enqueue(1, secs(t0, 3)).unwrap();
    assert_eq!(s.poll(secs(t0, 4)), vec![], "a was used 1s ago; reloading it costs 2s");
    assert_eq!(s.next_wakeup(secs(t0, 4)), Some(secs(t0, 5)));
    assert_eq!(s.poll(secs(t0, 5)), vec![Action::Unload { model: 0 }]);
}

#[test]
fn past_deadlines_never_make_the_owner_spin() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.enqueue(1, t0).unwrap();
    // b is overdue but a is still in flight: only a release can help.
    assert_eq!(s.poll(secs(t0, 60)), vec![]);
    assert_eq!(s.next_wakeup(secs(t0, 60)), None);
}

#[test]
fn max_wait_counts_the_load_time_of_the_waiting_model() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 600, 1), model("b", 600, 1)], limits(1000, Policy::CacheAware), t0);
    // b was loaded once before and took 3s.
    s.enqueue(1, t0).unwrap();
    s.poll(t0);
    s.load_done(1, Ok(None), secs(t0, 3));
    s.poll(secs(t0, 3));
    s.release(1, secs(t0, 3));
    s.enqueue(0, secs(t0, 20)).unwrap();
    s.poll(secs(t0, 20)); // b idle long enough: swapped for a
    s.unload_done(1, true);
    s.load_done(0, Ok(None), secs(t0, 20));
    s.poll(secs(t0, 20)); // a in flight
    s.enqueue(1, secs(t0, 21)).unwrap();
    assert_eq!(s.next_wakeup(secs(t0, 21)), Some(secs(t0, 28)), "10s max_wait - 3s load");
    assert_eq!(s.poll(secs(t0, 27)), vec![]);
    assert_eq!(s.poll(secs(t0, 28)), vec![]);
    assert!(s.models[0].closed, "a stops taking work at 28s");
}

#[test]
fn a_retired_model_finishes_its_work_then_unloads() {
    let t0 = Instant::now();
    let mut s = SchedState::new(vec![model("a", 100, 1)], limits(1000, Policy::CacheAware), t0);
    s.enqueue(0, t0).unwrap();
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.retire(0);
    s.release(0, t0);
    assert_eq!(admitted(&s.poll(t0)).len(), 1, "its queued request is still served");
    s.release(0, t0);
    assert_eq!(s.poll(t0), vec![Action::Unload { model: 0 }]);
    let b = s.add_model(model("b", 100, 1), t0);
    assert_eq!(b, 1);
}

// ---- GPUs: the budget is per GPU, from each model's placement ----

use crate::gpu::{GpuInfo, ModelFootprint, PlacementKind, PlacementOptions};
use crate::scheduler::pools::GpuDemand;

fn gpu(index: u32, free_mib: u64) -> GpuInfo {
    GpuInfo { index, uuid: None, name: format!("GPU {index}"), total_mib: 24_576, free_mib, used_mib: 24_576 - free_mib, utilization: None }
}

/// A model of `layers` layers of `layer_mib` each, placed with the default
/// options (1 GiB reserve per GPU, most free GPU first).
fn gpu_model(name: &str, layers: usize, layer_mib: u64) -> ModelLimits {
    let footprint = ModelFootprint {
        layer_bytes: vec![layer_mib * MIB; layers],
        output_bytes: 0, input_bytes: 0,
        kv_bytes_per_layer: vec![0; layers],
        compute_bytes: 0,
    };
    ModelLimits {
        gpu: Some(GpuDemand { footprint, options: PlacementOptions::default() }),
        ..model(name, layers as u64 * layer_mib, 1)
    }
}

/// Two GPUs as a static list (free figures do not count our models).
fn on_gpus(models: Vec<ModelLimits>, free: &[u64], t0: Instant) -> SchedState {
    // Host budget far below any model: fully offloaded models hold nothing there.
    let mut s = SchedState::new(models, limits(10, Policy::CacheAware), t0);
    let gpus: Vec<GpuInfo> = free.iter().enumerate().map(|(i, f)| gpu(i as u32, *f)).collect();
    s.set_gpus(&gpus, false);
    s
}

fn devices(s: &SchedState, model: usize) -> Vec<u32> {
    s.models[model].placement.as_ref().expect("placed").devices.clone()
}

#[test]
fn two_models_that_fit_on_different_gpus_stay_loaded_together() {
    let t0 = Instant::now();
    // 15 000 MiB each; each GPU has 18 976 MiB usable: one model per GPU.
    let mut s = on_gpus(vec![gpu_model("a", 10, 1500), gpu_model("b", 10, 1500)], &[20_000, 20_000], t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    assert_eq!(devices(&s, 0), vec![0]);
    s.release(0, t0);
    s.enqueue(1, secs(t0, 1)).unwrap();
    assert_eq!(s.poll(secs(t0, 1)), vec![Action::Load { model: 1 }], "no eviction: GPU 1 is free");
    assert_eq!(devices(&s, 1), vec![1]);
    s.load_done(1, Ok(None), secs(t0, 1));
    s.poll(secs(t0, 1));
    assert_eq!(s.models[0].residency, Residency::Loaded);
    assert_eq!(s.models[1].residency, Residency::Loaded);
    assert_eq!(s.swaps, 0);
    assert_eq!(s.holding(1).gpu_mib, vec![(1, 15_000)]);
    assert_eq!(s.used_bytes(), 0, "nothing left in host memory");
}

/// a (15 000 MiB) loaded on GPU 0, b (5 000 MiB) on GPU 1, which has more
/// room left after a; both in flight. c (15 000 MiB) fits only on GPU 0.
fn a_on_gpu0_b_on_gpu1(t0: Instant) -> SchedState {
    let models = vec![gpu_model("a", 10, 1500), gpu_model("b", 10, 500), gpu_model("c", 10, 1500)];
    let mut s = on_gpus(models, &[20_000, 10_000], t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.enqueue(1, t0).unwrap();
    load(&mut s, 1, t0);
    s
}

#[test]
fn a_newcomer_evicts_only_the_model_on_the_gpu_it_needs() {
    let t0 = Instant::now();
    let mut s = a_on_gpu0_b_on_gpu1(t0);
    s.release(0, t0);
    s.release(1, secs(t0, 1)); // b used later than a, yet a must go
    assert_eq!((devices(&s, 0), devices(&s, 1)), (vec![0], vec![1]));
    s.enqueue(2, secs(t0, 5)).unwrap();
    assert_eq!(s.poll(secs(t0, 5)), vec![Action::Unload { model: 0 }]);
    s.unload_done(0, true);
    assert_eq!(s.poll(secs(t0, 5)), vec![Action::Load { model: 2 }]);
    assert_eq!(devices(&s, 2), vec![0]);
    assert_eq!(s.models[1].residency, Residency::Loaded, "b on GPU 1 was never in the way");
    assert_eq!(s.swaps, 1);
}

#[test]
fn evictions_on_a_gpu_nobody_needs_are_skipped_even_for_the_least_recently_used() {
    let t0 = Instant::now();
    let mut s = a_on_gpu0_b_on_gpu1(t0);
    s.release(1, t0); // b is now the least recently used
    s.release(0, secs(t0, 1));
    s.enqueue(2, secs(t0, 5)).unwrap();
    assert_eq!(s.poll(secs(t0, 5)), vec![Action::Unload { model: 0 }], "evicting b would free nothing c can use");
}

#[test]
fn a_live_snapshot_counts_our_models_once() {
    let t0 = Instant::now();
    let mut s = on_gpus(vec![gpu_model("a", 10, 1500), gpu_model("b", 10, 1500)], &[20_000, 20_000], t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    // NVML after a's load: GPU 0 shows what a took (measured 14 000 MiB).
    s.gpu_measured(0, vec![(0, 14_000)]);
    s.set_gpus(&[gpu(0, 6_000), gpu(1, 20_000)], true);
    assert_eq!(s.gpus[0].free_mib, 20_000, "free for our models = NVML free + what a holds");
    s.release(0, t0);
    s.enqueue(1, secs(t0, 1)).unwrap();
    assert_eq!(s.poll(secs(t0, 1)), vec![Action::Load { model: 1 }]);
    assert_eq!(devices(&s, 1), vec![1]);
}

#[test]
fn the_cpu_part_of_a_partial_offload_counts_against_the_host_budget() {
    let t0 = Instant::now();
    // 30 layers of 1 000 MiB on one GPU with 18 976 MiB usable: 18 on the
    // GPU, 12 000 MiB on the CPU. The host budget (16 000 MiB) holds one.
    let mut limits = limits(16_000, Policy::CacheAware);
    limits.max_wait = Duration::from_secs(1);
    let mut s = SchedState::new(vec![gpu_model("a", 30, 1000), gpu_model("b", 30, 1000)], limits, t0);
    s.set_gpus(&[gpu(0, 20_000)], false);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    let a = s.models[0].placement.clone().expect("placed");
    assert_eq!((a.kind, a.n_gpu_layers), (PlacementKind::PartialOffload, 19), "18 layers + the output head");
    assert_eq!(s.used_bytes(), a.cpu_mib * MIB);
    s.release(0, t0);
    s.enqueue(1, secs(t0, 5)).unwrap();
    assert_eq!(s.poll(secs(t0, 5)), vec![Action::Unload { model: 0 }]);
}

#[test]
fn placement_options_naming_a_missing_gpu_fail_the_waiters() {
    let t0 = Instant::now();
    let mut m = gpu_model("a", 10, 100);
    m.gpu.as_mut().unwrap().options.devices = Some(vec![7]);
    let mut s = on_gpus(vec![m], &[20_000], t0);
    let ticket = s.enqueue(0, t0).unwrap();
    let actions = s.poll(t0);
    assert!(matches!(&actions[..], [Action::Fail { model: 0, ticket: t, reason }] if *t == ticket && reason.contains("GPU 7")), "{actions:?}");
    assert!(matches!(s.models[0].residency, Residency::Failed { .. }));
}

#[test]
fn gpu_refresh_is_wanted_only_before_a_load_decision() {
    let t0 = Instant::now();
    let mut s = on_gpus(vec![gpu_model("a", 10, 100)], &[20_000], t0);
    assert!(!s.wants_gpu_refresh(t0), "nobody waits");
    s.enqueue(0, t0).unwrap();
    assert!(s.wants_gpu_refresh(t0));
    assert_eq!(s.poll(t0), vec![Action::Load { model: 0 }]);
    assert!(!s.wants_gpu_refresh(t0), "a load is running");
}

#[test]
fn a_measurement_never_counts_more_than_the_plan_except_for_llama_cpp_fits() {
    let t0 = Instant::now();
    let mut s = on_gpus(vec![gpu_model("a", 10, 1500)], &[20_000, 20_000], t0);
    s.enqueue(0, t0).unwrap();
    load(&mut s, 0, t0);
    s.gpu_measured(0, vec![(0, 15_300)]);
    assert_eq!(s.holding(0).gpu_mib, vec![(0, 15_000)], "the CUDA context is not the model's");
    s.gpu_measured(0, vec![(0, 12_000)]);
    assert_eq!(s.holding(0).gpu_mib, vec![(0, 12_000)], "a smaller real footprint is believed");
    s.models[0].placement.as_mut().unwrap().use_fit_params = true;
    s.gpu_measured(0, vec![(0, 9_000), (1, 7_000)]);
    assert_eq!(s.holding(0).gpu_mib, vec![(0, 9_000), (1, 7_000)], "llama.cpp's fitter chose the GPUs");
}
