//! Speculative decoding's decisions, pure: what a slot drafts (an n-gram
//! lookup in its own tokens, llama-server's `ngram-simple`) and how long its
//! next draft may be (`Pace`). The worker adds the draft beside the slot's
//! pending token in one batched decode, samples each position in order with
//! the request's own sampler and keeps drafted tokens while they equal what
//! was sampled (llama/speculate.rs): a draft that depends only on the tokens
//! so far changes neither greedy output nor the sampled distribution, since
//! every emitted token is still one draw of the sampler from the target's
//! logits.

/// llama-server's `ngram-simple`: the most recent earlier place where the
/// last `size_n` tokens of `history` (the pending token last) occur, and up
/// to `max` of the tokens that followed them there. Empty when there is none,
/// or when fewer than `size_n` tokens follow it before the pending token.
pub fn ngram_simple(history: &[u32], size_n: usize, max: usize) -> &[u32] {
    let len = history.len();
    if size_n == 0 || max == 0 || len <= size_n {
        return &[];
    }
    let pattern = &history[len - size_n..];
    // Latest first; the occurrence at the end itself is not a match.
    for start in (0..len - size_n).rev() {
        if &history[start..start + size_n] == pattern {
            let from = start + size_n;
            // As llama-server: the latest match must leave `size_n` tokens
            // before the pending one, or nothing is drafted (a short period
            // is more often a stutter the model leaves than a loop).
            if len - 1 - from < size_n {
                return &[];
            }
            return &history[from..len.min(from + max)];
        }
    }
    &[]
}

/// How long a slot's next draft may be. It starts at `START` (16), doubles while
/// whole drafts are accepted and halves when one is cut short; after
/// `MISSES_TO_PAUSE` drafts in a row with nothing accepted the slot stops
/// drafting for a while (doubling each time, at most `MAX_PAUSE` tokens), so
/// an answer that does not repeat itself is not slowed by failed drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    len: usize,
    misses: u32,
    /// Tokens still to generate before drafting again.
    paused: u32,
}

const START: usize = 16;
const MISSES_TO_PAUSE: u32 = 2;
const MAX_PAUSE: u32 = 64;

impl Default for Pace {
    fn default() -> Self {
        Self { len: START, misses: 0, paused: 0 }
    }
}

impl Pace {
    /// The longest draft this step, of at most `n_max` (0: do not draft).
    pub fn limit(&self, n_max: usize) -> usize {
        if self.paused > 0 {
            0
        } else {
            self.len.min(n_max)
        }
    }

    /// After a draft of `drafted` tokens, of which the first `accepted` were
    /// what the model sampled.
    pub fn drafted(&mut self, drafted: usize, accepted: usize, n_max: usize) {
        if drafted == 0 {
            return;
        }
        if accepted >= drafted {
            self.len = (self.len * 2).min(n_max.max(1));
            self.misses = 0;
        } else if accepted == 0 {
            self.len = (self.len / 2).max(1);
            self.misses += 1;
            if self.misses >= MISSES_TO_PAUSE {
                self.paused = (1u32 << (self.misses - MISSES_TO_PAUSE + 3).min(6)).min(MAX_PAUSE);
            }
        } else {
            self.len = (self.len / 2).max(accepted + 1).min(n_max.max(1));
            self.misses = 0;
        }
    }

    /// One token generated (a paused slot comes closer to drafting again).
    pub fn generated(&mut self) {
        self.paused = self.paused.saturating_sub(1);
    }
}

/// Drafted and accepted tokens of one request (llama-server's `draft_n`
/// and `draft_n_accepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DraftCounts {
    pub drafted: u32,
    pub accepted: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_drafts_what_followed_the_last_tokens_before() {
        // "a b c d e" then "x a b" -> after "a b" came "c d e".
        let h = [1, 2, 3, 4, 5, 9, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 8), &[3, 4, 5, 9, 1, 2]);
        assert_eq!(ngram_simple(&h, 2, 2), &[3, 4]);
        // The latest earlier occurrence wins.
        let h = [1, 2, 7, 1, 2, 8, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 1), &[8]);
        // No earlier occurrence, or too short a history: nothing.
        assert!(ngram_simple(&[1, 2, 3, 4], 2, 8).is_empty());
        assert!(ngram_simple(&[1, 2], 2, 8).is_empty());
        assert!(ngram_simple(&[1, 2, 1, 2], 2, 0).is_empty());
        // The latest match leaves fewer than size_n tokens: nothing.
        assert!(ngram_simple(&[5, 5, 5, 5], 2, 8).is_empty());
        assert!(ngram_simple(&[1, 2, 1, 2], 2, 8).is_empty());
        assert_eq!(ngram_simple(&[1, 2, 3, 1, 2], 2, 8), &[3, 1, 2]);
    }

    #[test]
    fn whole_drafts_lengthen_the_next_and_cut_ones_shorten_it() {
        let mut p = Pace::default();
        assert_eq!(p.limit(48), 16);
        assert_eq!(p.limit(8), 8, "a lower n_max caps it");
        p.drafted(16, 16, 48);
        assert_eq!(p.limit(48), 32);
        p.drafted(32, 32, 48);
        assert_eq!(p.limit(48), 48, "never past n_max");
        p.drafted(48, 3, 48);
        assert_eq!(p.limit(48), 24);
        p.drafted(24, 20, 48);
        assert_eq!(p.limit(48), 21, "at least one more than was accepted");
    }

    #[test]
    fn drafts_that_keep_failing_pause_drafting_for_longer_each_time() {
        let mut p = Pace::default();
        p.drafted(16, 0, 48);
        assert_eq!(p.limit(48), 8, "one miss halves the length only");
        p.drafted(8, 0, 48);
        assert_eq!(p.limit(48), 0, "two in a row pause");
        for _ in 0..7 {
            p.generated();
        }
        assert_eq!(p.limit(48), 0);
        p.generated();
        assert_eq!(p.limit(48), 4, "8 tokens later it drafts again");
        p.drafted(4, 0, 48);
        for _ in 0..15 {
            p.generated();
        }
        assert_eq!(p.limit(48), 0, "the next pause is twice as long");
        p.generated();
        assert_eq!(p.limit(48), 2);
        p.drafted(2, 2, 48);
        assert_eq!(p.limit(48), 4, "an accepted draft ends the misses");
        // Pauses never grow past MAX_PAUSE.
        let mut p = Pace::default();
        for _ in 0..20 {
            p.drafted(1, 0, 48);
        }
        for _ in 0..MAX_PAUSE {
            p.generated();
        }
        assert_eq!(p.limit(48), 1);
        // An empty draft changes nothing.
        let before = p;
        p.drafted(0, 0, 48);
        assert_eq!(p, before);
    }
}
