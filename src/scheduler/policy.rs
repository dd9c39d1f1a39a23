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
    pub bytes: u64,
    /// Sequences in flight or requests queued.
    pub busy: bool,
    pub last_used: Instant,
    /// Measured (or estimated) time to load it again, in milliseconds.
    pub reload_ms: u64,
}

/// Picks models to unload so that `need` bytes (and one model-count slot when
/// `need_count`) become free. Idle models only unless `allow_busy`. Order:
/// least recently used first; among equally old ones, the cheapest to reload.
/// Returns `None` when even evicting every allowed candidate is not enough.
pub fn choose_evictions(
    residents: &[Resident],
    free_bytes: u64,
    need: u64,
    count_room: bool,
    allow_busy: bool,
) -> Option<Vec<usize>> {
    if free_bytes >= need && count_room {
        return Some(Vec::new());
    }
    let mut candidates: Vec<&Resident> = residents.iter().filter(|r| allow_busy || !r.busy).collect();
    // Idle before busy, then LRU, then cheapest reload.
    candidates.sort_by_key(|r| (r.busy, r.last_used, r.reload_ms));
    let mut freed = free_bytes;
    let mut chosen = Vec::new();
    let mut room = count_room;
    for r in candidates {
        if freed >= need && room {
            break;
        }
        freed += r.bytes;
        room = true;
        chosen.push(r.model);
    }
    (freed >= need && room).then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(model: usize, bytes: u64, busy: bool, age_s: u64, reload_ms: u64, t0: Instant) -> Resident {
        Resident { model, bytes, busy, last_used: t0 + Duration::from_secs(100 - age_s), reload_ms }
    }

    #[test]
    fn nothing_is_evicted_when_it_already_fits() {
        let t0 = Instant::now();
        assert_eq!(choose_evictions(&[r(0, 10, false, 5, 1, t0)], 50, 40, true, false), Some(vec![]));
    }

    #[test]
    fn least_recently_used_idle_model_goes_first() {
        let t0 = Instant::now();
        let rs = [r(0, 10, false, 5, 1, t0), r(1, 10, false, 50, 1, t0), r(2, 10, false, 20, 1, t0)];
        assert_eq!(choose_evictions(&rs, 0, 10, true, false), Some(vec![1]));
        assert_eq!(choose_evictions(&rs, 0, 20, true, false), Some(vec![1, 2]));
    }

    #[test]
    fn cheapest_to_reload_breaks_ties() {
        let t0 = Instant::now();
        let rs = [r(0, 10, false, 5, 900, t0), r(1, 10, false, 5, 100, t0)];
        assert_eq!(choose_evictions(&rs, 0, 10, true, false), Some(vec![1]));
    }

    #[test]
    fn busy_models_are_not_evicted_unless_allowed() {
        let t0 = Instant::now();
        let rs = [r(0, 10, true, 50, 1, t0), r(1, 10, false, 5, 1, t0)];
        assert_eq!(choose_evictions(&rs, 0, 20, true, false), None);
        assert_eq!(choose_evictions(&rs, 0, 20, true, true), Some(vec![1, 0]));
    }

    #[test]
    fn a_full_model_count_forces_one_eviction_even_with_bytes_free() {
        let t0 = Instant::now();
        let rs = [r(0, 10, false, 5, 1, t0)];
        assert_eq!(choose_evictions(&rs, 1000, 10, false, false), Some(vec![0]));
    }
}
