//! Which sequence slot a new request takes, as a pure function. Each slot's
//! KV cache holds the tokens of its last request: a prefix cache for the next
//! one (a chat resends the whole conversation; agents resend long system
//! prompts). Taking a slot keeps the prefix it shares with the new prompt and
//! drops the rest of its cache, so the choice decides whose cache survives.
//!
//! The rule, among free slots: the one whose cache the prompt continues (it
//! reuses at least half of what the slot holds) with the longest reuse;
//! else an empty slot; else the least recently used one. Ties go to the
//! least recently used. An unrelated prompt therefore takes an empty or
//! stale slot instead of overwriting the slot that holds a long prefix (a
//! shared BOS token is no reason to take it), and a follow-up goes back to
//! its own slot. What a slot drops is saved in the host KV cache first.

use super::checkpoints::{cut, Window};

/// A slot as the chooser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCache<'a, T> {
    /// No request runs in it.
    pub free: bool,
    /// The tokens its KV cache holds, from position 0.
    pub cached: &'a [T],
    /// When it last took a request (any increasing counter); 0 = never.
    pub last_used: u64,
    /// A sliding-window cache (`--swa-full` off): how far it can be cut
    /// back (see `checkpoints::cut`). `None`: any cut works.
    pub window: Option<Window<'a>>,
}

/// The chosen slot and how many of its cached tokens the request reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub slot: usize,
    /// Tokens of the prompt already in the slot's cache (never the whole
    /// prompt: the last prompt token is decoded again for its logits).
    pub reuse: usize,
}

/// The longest common prefix of two token lists.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How many of `cached` a request for `prompt` can reuse: the shared prefix,
/// less the last prompt token (its logits start generation).
pub fn reusable<T: PartialEq>(cached: &[T], prompt: &[T]) -> usize {
    common_prefix(cached, prompt).min(prompt.len().saturating_sub(1))
}

/// What a slot can reuse for `prompt`, given how it may be cut back.
pub fn slot_reuse<T: PartialEq>(slot: &SlotCache<'_, T>, prompt: &[T]) -> usize {
    cut(slot.window.as_ref(), slot.cached.len(), reusable(slot.cached, prompt)).tokens()
}

/// The free slot for `prompt` (see the module doc); `None` when all are busy.
pub fn choose_slot<T: PartialEq>(slots: &[SlotCache<'_, T>], prompt: &[T]) -> Option<Choice> {
    // Rank: 2 = continues its cache, 1 = empty, 0 = anything else.
    let ranked = slots.iter().enumerate().filter(|(_, s)| s.free).map(|(slot, s)| {
        let reuse = slot_reuse(s, prompt);
        let rank = if reuse > 0 && reuse * 2 >= s.cached.len() {
            2
        } else if s.cached.is_empty() {
            1
        } else {
            0
        };
        // Reuse orders only slots that are continued: a token or two shared
        // with a stale cache is no reason to prefer it over an older one.
        let continued = if rank == 2 { reuse } else { 0 };
        (Choice { slot, reuse }, (rank, continued), s.last_used)
    });
    // Best rank, then the longest continued reuse, then the least recently used.
    ranked.min_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2))).map(|(choice, _, _)| choice)
}

/// Prompt tokens a request must still have to read before it waits for a
/// slot reading the same prompt and copies that slot's KV instead. With a
/// cache per slot the copy moves the slot's whole buffer, which costs about
/// what decoding a few prompt tokens does.
pub const MIN_SHARED_PREFILL: usize = 32;

/// Whether a request whose slot already holds `reuse` tokens of its
/// `prompt_len`-token prompt should share the prompt another slot is
/// reading (the `n` choices of one request: one reads, the others copy its
/// KV when it is done) rather than read it itself.
pub fn shares_prefill(prompt_len: usize, reuse: usize) -> bool {
    prompt_len.saturating_sub(reuse) >= MIN_SHARED_PREFILL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(cached: &[u32], last_used: u64) -> SlotCache<'_, u32> {
        SlotCache { free: true, cached, last_used, window: None }
    }

    fn seq(from: u32, n: u32) -> Vec<u32> {
        (from..from + n).collect()
    }

    #[test]
    fn an_unrelated_prompt_takes_an_empty_slot_not_the_one_with_a_long_prefix() {
        // Both prompts start with the same BOS token (0).
        let long: Vec<u32> = std::iter::once(0).chain(seq(100, 700)).collect();
        let unrelated: Vec<u32> = std::iter::once(0).chain(seq(5000, 700)).collect();
        let slots = [slot(&long, 1), slot(&[], 0), slot(&[], 0), slot(&[], 0)];
        let choice = choose_slot(&slots, &unrelated).unwrap();
        assert_ne!(choice.slot, 0);
        assert_eq!(choice.reuse, 0);
    }

    #[test]
    fn a_follow_up_goes_back_to_the_slot_holding_its_prefix() {
        let first = seq(0, 700);
        let longer = seq(0, 720);
        let other = seq(9000, 50);
        let slots = [slot(&other, 3), slot(&first, 2), slot(&[], 0)];
        assert_eq!(choose_slot(&slots, &longer), Some(Choice { slot: 1, reuse: 700 }));
    }

    #[test]
    fn the_same_prompt_again_reuses_all_but_its_last_token() {
        let p = seq(0, 700);
        let mut extended = p.clone();
        extended.extend(seq(800, 20));
        let slots = [slot(&extended, 1), slot(&[], 0)];
        assert_eq!(choose_slot(&slots, &p), Some(Choice { slot: 0, reuse: 699 }));
    }

    #[test]
    fn a_branch_reuses_the_shared_part() {
        let mut a = seq(0, 600);
        a.extend(seq(1000, 30));
        let mut b = seq(0, 600);
        b.extend(seq(2000, 30));
        let slots = [slot(&[], 0), slot(&a, 5)];
        assert_eq!(choose_slot(&slots, &b), Some(Choice { slot: 1, reuse: 600 }));
    }

    #[test]
    fn busy_slots_are_never_chosen() {
        let p = seq(0, 10);
        let slots = [SlotCache { free: false, cached: &p[..], last_used: 1, window: None }, slot(&[], 0)];
        assert_eq!(choose_slot(&slots, &p), Some(Choice { slot: 1, reuse: 0 }));
        let all_busy = [SlotCache { free: false, cached: &p[..], last_used: 1, window: None }];
        assert_eq!(choose_slot(&all_busy, &p), None);
    }

    #[test]
    fn ties_go_to_the_least_recently_used_slot() {
        let a = seq(100, 5);
        let b = seq(200, 5);
        let c = seq(300, 5);
        let slots = [slot(&a, 7), slot(&b, 3), slot(&c, 9)];
        assert_eq!(choose_slot(&slots, &seq(0, 4)).unwrap().slot, 1);
        let empties = [slot(&[], 4), slot(&[], 2), slot(&[], 8)];
        assert_eq!(choose_slot(&empties, &seq(0, 4)).unwrap().slot, 1);
    }

    #[test]
    fn with_every_slot_holding_an_unrelated_cache_the_least_recently_used_goes() {
        let big = seq(100, 900);
        let small = seq(200, 40);
        let slots = [slot(&big, 1), slot(&small, 2)];
        assert_eq!(choose_slot(&slots, &seq(0, 4)).unwrap().slot, 0);
        // A cache that shares only a token or two (BOS) is not continued.
        let mut p = vec![0u32];
        p.extend(seq(5000, 700));
        let mut older = vec![0u32];
        older.extend(seq(7000, 705));
        let mut newer = vec![0u32];
        newer.extend(seq(9000, 700));
        let slots = [slot(&newer, 9), slot(&older, 2)];
        assert_eq!(choose_slot(&slots, &p), Some(Choice { slot: 1, reuse: 1 }));
        // Sharing two tokens with the newer cache instead of one changes nothing.
        let mut newer2 = vec![0u32, 5000];
        newer2.extend(seq(9000, 700));
        let slots = [slot(&newer2, 9), slot(&older, 2)];
        assert_eq!(choose_slot(&slots, &p).unwrap().slot, 1);
    }

    #[test]
    fn a_prompt_sharing_a_long_system_prompt_takes_that_slot() {
        let mut conversation = seq(0, 1500);
        conversation.extend(seq(3000, 500));
        let mut newcomer = seq(0, 1500);
        newcomer.extend(seq(8000, 40));
        let empty: [u32; 0] = [];
        let slots = [slot(&empty, 0), slot(&conversation, 4)];
        assert_eq!(choose_slot(&slots, &newcomer), Some(Choice { slot: 1, reuse: 1500 }));
    }

    #[test]
    fn a_windowed_cache_that_cannot_serve_the_prompt_loses_to_an_empty_slot() {
        // 600 prompt tokens (checkpoint), then 10 generated ones; the window
        // has moved past the start.
        let held = seq(0, 610);
        let checkpoints = [600];
        let windowed = SlotCache { free: true, cached: &held[..], last_used: 1, window: Some(Window { n_swa: 64, floor: 546, checkpoints: &checkpoints }) };
        let mut follow_up = seq(0, 600);
        follow_up.extend(seq(5000, 20));
        assert_eq!(slot_reuse(&windowed, &follow_up), 600, "cut back to the checkpoint");
        let shorter = seq(0, 500);
        assert_eq!(slot_reuse(&windowed, &shorter), 0, "below the window and every checkpoint");
        let empty: [u32; 0] = [];
        let slots = [windowed, slot(&empty, 0)];
        assert_eq!(choose_slot(&slots, &shorter), Some(Choice { slot: 1, reuse: 0 }));
    }

    #[test]
    fn a_prompt_is_shared_when_enough_of_it_is_left_to_read() {
        assert!(shares_prefill(100, 0));
        assert!(shares_prefill(MIN_SHARED_PREFILL, 0));
        assert!(!shares_prefill(MIN_SHARED_PREFILL - 1, 0));
        // The slot holds most of the prompt already: reading the rest is cheaper.
        assert!(!shares_prefill(100, 90));
        assert!(shares_prefill(100, 100 - MIN_SHARED_PREFILL));
        assert!(!shares_prefill(10, 20));
    }
}
