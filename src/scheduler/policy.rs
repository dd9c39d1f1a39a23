//! Pure scheduling decisions over a snapshot. Nothing here logs, sleeps or
//! touches a model: `state.rs` calls these and turns them into actions.

use std::time::Instant;

/// How the scheduler orders work across models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Keep serving resident models; swap when room can be made from idle
    /// models, or when the oldest waiter of another model passed `max_wait`.
    #[default]
    CacheAware,
    /// Strict arrival order: the head of the global queue decides, and a swap
    /// happens whenever it needs a model that is not resident.
    Fifo,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cache-aware" => Ok(Policy::CacheAware),
            "fifo" => Ok(Policy::Fifo),
            other => Err(format!("unknown policy `{other}` (expected cache-aware or fifo)")),
        }
    }
}

/// What the eviction choice needs to know about one resident model.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    pub model: usize,
    /// Sequences in flight or requests queued.
    pub busy: bool,
    pub last_used: Instant,
    /// Measured (or estimated) time to load it again, in milliseconds.
    pub reload_ms: u64,
}

/// Picks models to unload so that the waiting model fits (`fits(evicted)`
/// says whether it does once those are gone) and, when `count_room` is
/// false, one model-count slot frees up. Idle models only unless
/// `allow_busy`. Order: idle before busy, least recently used first, then the
/// cheapest to reload; evictions that the others make unnecessary (a model on
/// a GPU the newcomer does not use, say) are dropped again. `None` when even
/// evicting every allowed candidate is not enough.
pub fn choose_evictions(
    residents: &[Resident],
    count_room: bool,
    allow_busy: bool,
    fits: impl Fn(&[usize]) -> bool,
) -> Option<Vec<usize>> {
    let enough = |evicted: &[usize]| (count_room || !evicted.is_empty()) && fits(evicted);
    if enough(&[]) {
        return Some(Vec::new());
    }
    let mut candidates: Vec<&Resident> = residents.iter().filter(|r| allow_busy || !r.busy).collect();
    candidates.sort_by_key(|r| (r.busy, r.last_used, r.reload_ms));
    let mut chosen = Vec::new();
    for r in candidates {
        chosen.push(r.model);
        if enough(&chosen) {
            break;
        }
    }
    if !enough(&chosen) {
        return None;
    }
    // Keep the most preferred evictions: try dropping the last chosen first.
    for i in (0..chosen.len()).rev() {
        let mut fewer = chosen.clone();
        fewer.remove(i);
        if enough(&fewer) {
            chosen = fewer;
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(model: usize, busy: bool, age_s: u64, reload_ms: u64, t0: Instant) -> Resident {
        Resident { model, busy, last_used: t0 + Duration::from_secs(100 - age_s), reload_ms }
    }

    /// One pool: `free` bytes free, `sizes[i]` held by model `i`, `need` wanted.
    fn bytes(free: u64, sizes: &[u64], need: u64) -> impl Fn(&[usize]) -> bool + '_ {
        move |evicted: &[usize]| free + evicted.iter().map(|&i| sizes[i]).sum::<u64>() >= need
    }

    #[test]
    fn nothing_is_evicted_when_it_already_fits() {
        let t0 = Instant::now();
        assert_eq!(choose_evictions(&[r(0, false, 5, 1, t0)], true, false, bytes(50, &[10], 40)), Some(vec![]));
    }

    #[test]
    fn least_recently_used_idle_model_goes_first() {
        let t0 = Instant::now();
        let rs = [r(0, false, 5, 1, t0), r(1, false, 50, 1, t0), r(2, false, 20, 1, t0)];
        let sizes = [10, 10, 10];
        assert_eq!(choose_evictions(&rs, true, false, bytes(0, &sizes, 10)), Some(vec![1]));
        assert_eq!(choose_evictions(&rs, true, false, bytes(0, &sizes, 20)), Some(vec![1, 2]));
    }

    #[test]
    fn cheapest_to_reload_breaks_ties() {
        let t0 = Instant::now();
        let rs = [r(0, false, 5, 900, t0), r(1, false, 5, 100, t0)];
        assert_eq!(choose_evictions(&rs, true, false, bytes(0, &[10, 10], 10)), Some(vec![1]));
    }

    #[test]
    fn busy_models_are_not_evicted_unless_allowed() {
        let t0 = Instant::now();
        let rs = [r(0, true, 50, 1, t0), r(1, false, 5, 1, t0)];
        assert_eq!(choose_evictions(&rs, true, false, bytes(0, &[10, 10], 20)), None);
        assert_eq!(choose_evictions(&rs, true, true, bytes(0, &[10, 10], 20)), Some(vec![1, 0]));
    }

    #[test]
    fn a_full_model_count_forces_one_eviction_even_with_bytes_free() {
        let t0 = Instant::now();
        let rs = [r(0, false, 5, 1, t0)];
        assert_eq!(choose_evictions(&rs, false, false, bytes(1000, &[10], 10)), Some(vec![0]));
    }

    #[test]
    fn evictions_that_do_not_help_are_dropped() {
        // Model 0 (oldest) sits on another GPU: evicting it frees nothing the
        // newcomer can use, so only model 1 goes.
        let t0 = Instant::now();
        let rs = [r(0, false, 50, 1, t0), r(1, false, 5, 1, t0)];
        let on_the_right_gpu = |evicted: &[usize]| evicted.contains(&1);
        assert_eq!(choose_evictions(&rs, true, false, on_the_right_gpu), Some(vec![1]));
        // A small LRU model that a big eviction makes unnecessary stays.
        let sizes = [10, 100];
        assert_eq!(choose_evictions(&rs, true, false, bytes(0, &sizes, 100)), Some(vec![1]));
    }
}
