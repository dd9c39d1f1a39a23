//! Context checkpoints of sliding-window models, as pure decisions.
//!
//! A sliding-window layer (Gemma 2/3, gpt-oss, Cohere 2...) keeps only the
//! last `n_swa` positions of a sequence. Once a slot's window has moved on,
//! its cache can be continued, but not cut back to a point the window has
//! left: the positions a token at that point attends to are gone. A
//! checkpoint is the window's state (llama.cpp's partial sequence state)
//! saved when a read reached exactly `len` tokens: cutting the full-attention
//! layers back to `len` and restoring it resumes the sequence at `len`.
//!
//! The decisions here: how much of a windowed cache a prompt can keep
//! ([`cut`]), where a prompt's read pauses to take checkpoints ([`plan`]),
//! and which checkpoint goes when a slot holds too many ([`to_drop`]).
//! Each checkpoint costs about the window's KV (all sliding layers, `n_swa`
//! positions): see README "Prompt cache".

/// Fewest tokens a checkpoint must hold: re-reading fewer costs about what
/// restoring a window does.
pub const MIN_CHECKPOINT: usize = 64;

/// Checkpoints a slot keeps unless `--ctx-checkpoints` says otherwise.
pub const DEFAULT_PER_SLOT: usize = 8;

/// A sliding-window cache as [`cut`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<'a> {
    /// Positions a sliding layer attends to (`{arch}.attention.sliding_window`).
    pub n_swa: usize,
    /// The lowest position the sliding layers still hold (llama.cpp's
    /// `seq_pos_min`; every position from it up is held).
    pub floor: usize,
    /// Lengths of the checkpoints held, ascending.
    pub checkpoints: &'a [usize],
}

/// How a cache serves a prompt sharing some of its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Keep this many tokens as they are (drop the rest, if any).
    Keep(usize),
    /// Cut back to the checkpoint of this length and restore its window.
    Checkpoint(usize),
    /// Nothing reusable: read the prompt from the start.
    Nothing,
}

impl Cut {
    /// The tokens the prompt reuses.
    pub fn tokens(self) -> usize {
        match self {
            Cut::Keep(n) | Cut::Checkpoint(n) => n,
            Cut::Nothing => 0,
        }
    }
}

/// Whether the next token at position `at` sees every position it attends
/// to when the sliding layers hold `floor..at`: it attends to the `n_swa`
/// positions up to itself, `at + 1 - n_swa..=at`.
pub fn window_covers(floor: usize, n_swa: usize, at: usize) -> bool {
    floor == 0 || floor + n_swa <= at + 1
}

/// How a cache of `held` tokens serves a prompt sharing `common` of them
/// (`common` already leaves the prompt's last token to be read again).
/// `window`: `None` for a cache that can be cut anywhere.
pub fn cut(window: Option<&Window<'_>>, held: usize, common: usize) -> Cut {
    let Some(w) = window else {
        return if common > 0 { Cut::Keep(common) } else { Cut::Nothing };
    };
    if common == 0 {
        return Cut::Nothing;
    }
    if common == held || window_covers(w.floor, w.n_swa, common) {
        return Cut::Keep(common);
    }
    match w.checkpoints.iter().rev().find(|&&len| len <= common && len > 0) {
        Some(&len) => Cut::Checkpoint(len),
        None => Cut::Nothing,
    }
}

/// The lowest position a saved whole-sequence state of `held` tokens holds
/// in its sliding layers: llama.cpp saves only the cells the last position
/// still attends to.
pub fn saved_floor(held: usize, n_swa: usize) -> usize {
    held.saturating_sub(n_swa)
}

/// Where a read of a `len`-token prompt, starting at `from` (tokens already
/// held), takes checkpoints, ascending: at each hint (where a later prompt
/// is likely to leave this one: the start of the last user message, or the
/// point where an earlier prompt already left it) and one token before the
/// prompt's end (the same prompt again, or a follow-up that continues the
/// prompt but not the answer, resumes there and reads that token again).
/// Points before `from`, within [`MIN_CHECKPOINT`] of the start, or just
/// above a point already checkpointed (`held`) are skipped. The read pauses
/// at each point, so that the window is saved at exactly that length; a
/// point at `from` itself is taken before reading on.
pub fn plan(len: usize, from: usize, hints: &[usize], held: &[usize]) -> Vec<usize> {
    let mut points: Vec<usize> = hints.iter().copied().filter(|&h| h < len).chain(std::iter::once(len.saturating_sub(1))).collect();
    points.sort_unstable();
    points.dedup();
    let near = |a: usize, b: usize| a.abs_diff(b) < MIN_CHECKPOINT;
    points.retain(|&p| p >= from && p >= MIN_CHECKPOINT && !held.iter().any(|&h| near(h, p) && h <= p));
    points
}

/// Which checkpoint a slot drops when it holds more than `max` (lengths
/// ascending): the one closest above the one before it (the first counts
/// from 0), so the checkpoints that remain stay spread over the sequence;
/// the longest is never dropped (the latest prompt's end). Ties drop the
/// shorter. `None` when within `max`.
pub fn to_drop(lens: &[usize], max: usize) -> Option<usize> {
    if lens.len() <= max.max(1) {
        return None;
    }
    let last = lens.len() - 1;
    (0..last).min_by_key(|&i| lens[i] - if i == 0 { 0 } else { lens[i - 1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(floor: usize, checkpoints: &[usize]) -> Window<'_> {
        Window { n_swa: 512, floor, checkpoints }
    }

    #[test]
    fn a_cache_without_a_window_is_cut_anywhere() {
        assert_eq!(cut(None, 2000, 1500), Cut::Keep(1500));
        assert_eq!(cut(None, 2000, 0), Cut::Nothing);
    }

    #[test]
    fn a_windowed_cache_is_continued_whole_or_cut_where_the_window_still_covers() {
        // 2000 tokens held, the window holds 1400.. (not yet overwritten).
        assert_eq!(cut(Some(&w(1400, &[])), 2000, 2000), Cut::Keep(2000), "continued whole");
        assert_eq!(cut(Some(&w(1400, &[])), 2000, 1999), Cut::Keep(1999), "a resend: position 1999 sees 1488..");
        assert_eq!(cut(Some(&w(1400, &[])), 2000, 1911), Cut::Keep(1911), "sees 1400.. exactly");
        assert_eq!(cut(Some(&w(1400, &[])), 2000, 1910), Cut::Nothing, "would need 1399");
        // A window that never moved (short sequence) covers any cut.
        assert_eq!(cut(Some(&w(0, &[])), 300, 10), Cut::Keep(10));
    }

    #[test]
    fn below_the_window_the_nearest_checkpoint_at_or_before_the_divergence_serves() {
        let checkpoints = [700, 1748, 1990];
        assert_eq!(cut(Some(&w(1500, &checkpoints)), 2000, 1760), Cut::Checkpoint(1748));
        assert_eq!(cut(Some(&w(1500, &checkpoints)), 2000, 1748), Cut::Checkpoint(1748), "a checkpoint at the divergence itself");
        assert_eq!(cut(Some(&w(1500, &checkpoints)), 2000, 1747), Cut::Checkpoint(700));
        assert_eq!(cut(Some(&w(1500, &checkpoints)), 2000, 699), Cut::Nothing);
        assert_eq!(Cut::Checkpoint(700).tokens(), 700);
    }

    #[test]
    fn a_saved_state_resumes_at_its_end_or_one_token_before() {
        // llama.cpp saves the cells position 1999 attends to: 1488..=1999.
        let floor = saved_floor(2000, 512);
        assert_eq!(floor, 1488);
        assert_eq!(cut(Some(&w(floor, &[])), 2000, 1999), Cut::Keep(1999), "the same prompt again");
        assert_eq!(cut(Some(&w(floor, &[])), 2000, 1998), Cut::Nothing);
        assert_eq!(saved_floor(300, 512), 0);
    }

    #[test]
    fn a_read_pauses_at_its_hints_and_one_token_before_its_end() {
        assert_eq!(plan(2000, 0, &[1748], &[]), vec![1748, 1999]);
        assert_eq!(plan(2000, 0, &[], &[]), vec![1999]);
        // Hints already read, past the end, or too early are skipped.
        assert_eq!(plan(2000, 1748, &[1748, 30, 2500], &[1748]), vec![1999]);
        assert_eq!(plan(40, 0, &[], &[]), Vec::<usize>::new(), "too short to be worth one");
        // Two hints close together: both kept (each may be where a prompt leaves).
        assert_eq!(plan(2000, 0, &[1700, 1748], &[]), vec![1700, 1748, 1999]);
        // A hint where the read starts is taken at once, unless held already.
        assert_eq!(plan(2000, 1748, &[1748], &[]), vec![1748, 1999]);
        // The same prompt again, reusing all but its last token: taken at once.
        assert_eq!(plan(2000, 1999, &[], &[]), vec![1999]);
        assert_eq!(plan(2000, 1999, &[], &[1999]), Vec::<usize>::new());
        // A point just above one already held adds nothing.
        assert_eq!(plan(2000, 1740, &[1750], &[1740]), vec![1999]);
    }

    #[test]
    fn past_the_cap_the_densest_checkpoint_goes_and_the_latest_stays() {
        assert_eq!(to_drop(&[100, 200], 2), None);
        assert_eq!(to_drop(&[1748, 2000, 2100], 2), Some(1), "2000 sits 252 above 1748; 1748 sits 1748 above 0");
        assert_eq!(to_drop(&[500, 1000, 1500], 2), Some(0), "ties drop the shorter");
        assert_eq!(to_drop(&[100, 5000], 1), Some(0), "never the longest");
    }
}
