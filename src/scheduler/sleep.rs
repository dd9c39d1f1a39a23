//! Who sleeps, who is dropped: one pure decision, taken when evictions are
//! chosen (`decide.rs` calls it; its tests are below).
//!
//! A model evicted for a swap may *sleep* instead of unloading for good: it
//! keeps its `llama_model` and wakes with only a new context (and, on a GPU,
//! one copy of its weights back from pinned host memory). What sleeping
//! costs depends on the device, and the engine says it once per load
//! (`Engine::sleep_cost`):
//!
//! - on the CPU, nothing: the weights are the mapped GGUF file, page cache the
//!   kernel may reclaim (`Ok(0)`);
//! - on one GPU, the weights' bytes in pinned host memory, which is not
//!   swappable: they count against `--sleep-mib` (`Ok(bytes)`);
//! - a load that cannot sleep (partial offload, several GPUs, no sleep shim,
//!   `--sleep-mib 0`) says why (`Err(reason)`) and unloads as before.
//!
//! Waking needs no decision of its own: loading a sleeping model wakes it.

use std::time::Instant;

/// How much sleeping the scheduler allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepLimits {
    /// Pinned host bytes all sleeping models may hold together.
    pub budget_bytes: u64,
    /// Sleeping models at most, whatever they cost (each keeps a model's
    /// metadata and file mapping).
    pub max_sleepers: usize,
}

impl Default for SleepLimits {
    fn default() -> Self {
        Self { budget_bytes: 0, max_sleepers: 8 }
    }
}

/// A model asleep now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sleeper {
    pub model: usize,
    pub pinned_bytes: u64,
    pub last_used: Instant,
}

/// A model being evicted, and what sleeping would cost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evictee {
    pub model: usize,
    pub cost: Result<u64, String>,
    pub last_used: Instant,
}

/// The outcome: evictees that sleep (with their pinned bytes), sleepers
/// dropped to make room, evictees that unload for good (with the reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SleepPlan {
    pub sleep: Vec<(usize, u64)>,
    pub drop: Vec<usize>,
    pub unload: Vec<(usize, String)>,
}

/// Decides for `evicted` given the `sleepers` already asleep and the pinned
/// bytes that awake models still hold (`held_awake`: a model that slept
/// keeps its pinned copy after waking, so its next sleep is only a
/// release). The most recently used evictee chooses first. An evictee sleeps if its cost fits
/// the budget next to the sleepers, after dropping sleepers used less
/// recently than it (oldest first); a sleeper more recent than the evictee
/// is never dropped for it.
pub fn plan(limits: SleepLimits, held_awake: u64, sleepers: &[Sleeper], evicted: &[Evictee]) -> SleepPlan {
    let limits = SleepLimits { budget_bytes: limits.budget_bytes.saturating_sub(held_awake), ..limits };
    let mut asleep: Vec<Sleeper> = sleepers.to_vec();
    asleep.sort_by_key(|s| s.last_used);
    let mut order: Vec<&Evictee> = evicted.iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.last_used));
    let mut out = SleepPlan::default();
    for e in order {
        let cost = match &e.cost {
            Ok(cost) => *cost,
            Err(reason) => {
                out.unload.push((e.model, reason.clone()));
                continue;
            }
        };
        if cost > limits.budget_bytes {
            out.unload.push((e.model, format!("its {} MiB exceed the sleep budget of {} MiB", cost >> 20, limits.budget_bytes >> 20)));
            continue;
        }
        // The sleepers older than this evictee, oldest first, are what may go.
        let held = |a: &[Sleeper]| a.iter().map(|s| s.pinned_bytes).sum::<u64>();
        let droppable = asleep.iter().take_while(|s| s.last_used < e.last_used).count();
        let mut n_drop = 0;
        while n_drop <= droppable {
            let rest = &asleep[n_drop..];
            if held(rest) + cost <= limits.budget_bytes && rest.len() < limits.max_sleepers {
                break;
            }
            n_drop += 1;
        }
        if n_drop > droppable {
            out.unload.push((e.model, "the sleeping models used more recently fill the sleep budget".into()));
            continue;
        }
        out.drop.extend(asleep.drain(..n_drop).map(|s| s.model));
        out.sleep.push((e.model, cost));
        let at = asleep.partition_point(|s| s.last_used <= e.last_used);
        asleep.insert(at, Sleeper { model: e.model, pinned_bytes: cost, last_used: e.last_used });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GIB: u64 = 1 << 30;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn limits(gib: u64) -> SleepLimits {
        SleepLimits { budget_bytes: gib * GIB, max_sleepers: 8 }
    }

    #[test]
    fn cpu_weights_always_sleep_even_without_a_budget() {
        let t0 = Instant::now();
        let p = plan(limits(0), 0, &[], &[Evictee { model: 1, cost: Ok(0), last_used: t0 }]);
        assert_eq!(p, SleepPlan { sleep: vec![(1, 0)], ..Default::default() });
    }

    #[test]
    fn a_load_that_cannot_sleep_unloads_with_its_reason() {
        let t0 = Instant::now();
        let p = plan(limits(64), 0, &[], &[Evictee { model: 2, cost: Err("partial offload".into()), last_used: t0 }]);
        assert_eq!(p.unload, vec![(2, "partial offload".to_string())]);
        assert!(p.sleep.is_empty() && p.drop.is_empty());
    }

    #[test]
    fn a_gpu_model_sleeps_within_the_budget_and_unloads_beyond_it() {
        let t0 = Instant::now();
        let fits = plan(limits(8), 0, &[], &[Evictee { model: 0, cost: Ok(5 * GIB), last_used: t0 }]);
        assert_eq!(fits.sleep, vec![(0, 5 * GIB)]);
        let too_big = plan(limits(4), 0, &[], &[Evictee { model: 0, cost: Ok(5 * GIB), last_used: t0 }]);
        assert_eq!(too_big.unload.len(), 1);
        assert!(too_big.unload[0].1.contains("exceed the sleep budget"), "{:?}", too_big.unload);
    }

    #[test]
    fn older_sleepers_are_dropped_oldest_first_to_make_room() {
        let t0 = Instant::now();
        let sleepers = [
            Sleeper { model: 1, pinned_bytes: 4 * GIB, last_used: at(t0, 20) },
            Sleeper { model: 2, pinned_bytes: 4 * GIB, last_used: at(t0, 10) },
        ];
        let p = plan(limits(10), 0, &sleepers, &[Evictee { model: 3, cost: Ok(5 * GIB), last_used: at(t0, 30) }]);
        assert_eq!(p.drop, vec![2], "only the oldest goes: 4 + 5 fit in 10");
        assert_eq!(p.sleep, vec![(3, 5 * GIB)]);
    }

    #[test]
    fn a_more_recent_sleeper_is_never_dropped_for_an_older_evictee() {
        let t0 = Instant::now();
        let sleepers = [Sleeper { model: 1, pinned_bytes: 6 * GIB, last_used: at(t0, 50) }];
        let p = plan(limits(10), 0, &sleepers, &[Evictee { model: 2, cost: Ok(6 * GIB), last_used: at(t0, 40) }]);
        assert!(p.drop.is_empty() && p.sleep.is_empty());
        assert_eq!(p.unload.len(), 1);
    }

    #[test]
    fn the_most_recent_evictee_chooses_first_and_later_ones_see_its_bytes() {
        let t0 = Instant::now();
        let evicted = [
            Evictee { model: 1, cost: Ok(6 * GIB), last_used: at(t0, 10) },
            Evictee { model: 2, cost: Ok(6 * GIB), last_used: at(t0, 20) },
        ];
        let p = plan(limits(10), 0, &[], &evicted);
        assert_eq!(p.sleep, vec![(2, 6 * GIB)]);
        assert_eq!(p.unload.iter().map(|u| u.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn the_count_of_sleepers_is_bounded_even_when_they_cost_nothing() {
        let t0 = Instant::now();
        let sleepers: Vec<Sleeper> = (0..2).map(|i| Sleeper { model: i, pinned_bytes: 0, last_used: at(t0, i as u64) }).collect();
        let l = SleepLimits { budget_bytes: 0, max_sleepers: 2 };
        let p = plan(l, 0, &sleepers, &[Evictee { model: 5, cost: Ok(0), last_used: at(t0, 9) }]);
        assert_eq!((p.drop, p.sleep), (vec![0], vec![(5, 0)]));
    }

    #[test]
    fn no_room_with_max_sleepers_zero() {
        let t0 = Instant::now();
        let l = SleepLimits { budget_bytes: 8 * GIB, max_sleepers: 0 };
        let p = plan(l, 0, &[], &[Evictee { model: 0, cost: Ok(0), last_used: t0 }]);
        assert!(p.sleep.is_empty());
        assert_eq!(p.unload.len(), 1);
    }

    #[test]
    fn pinned_copies_of_awake_models_take_their_share_of_the_budget() {
        let t0 = Instant::now();
        let e = [Evictee { model: 0, cost: Ok(6 * GIB), last_used: t0 }];
        assert_eq!(plan(limits(10), 0, &[], &e).sleep, vec![(0, 6 * GIB)]);
        let p = plan(limits(10), 5 * GIB, &[], &e);
        assert!(p.sleep.is_empty() && p.unload.len() == 1, "{p:?}");
    }
}
