//! Speculative decoding's decisions, pure: what a slot drafts (an n-gram
//! lookup in its own tokens, llama-server's `ngram-simple`) and how long its
//! next draft may be (`Pace`). The worker adds the draft beside the slot's
//! pending token in one batched decode, samples each position in order with
//! the request's own sampler and keeps drafted tokens while they equal what
//! was sampled (llama/speculate.rs): a draft that depends only on the tokens
//! so far changes neither greedy output nor the sampled distribution, since
//! every emitted token is still one draw of the sampler from the target's
//! logits.

/// What `ngram_simple` found: the tokens to draft and how far back the
/// history agrees with the place they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup<'a> {
    pub draft: &'a [u32],
    /// Tokens before the draft that equal those before the pending one's
    /// successor, the pending one last (at least `size_n` with a draft, at
    /// most the `max` asked for): a text that has repeated this long
    /// likely goes on repeating (see `Pace::limit`).
    pub support: usize,
}

/// llama-server's `ngram-simple`: the most recent earlier place where the
/// last `size_n` tokens of `history` (the pending token last) occur, and up
/// to `max` of the tokens that followed them there. Empty when there is none,
/// or when fewer than `size_n` tokens follow it before the pending token.
pub fn ngram_simple(history: &[u32], size_n: usize, max: usize) -> Lookup<'_> {
    let none = Lookup { draft: &[], support: 0 };
    let len = history.len();
    if size_n == 0 || max == 0 || len <= size_n {
        return none;
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
                return none;
            }
            let before = history[..start].iter().rev().zip(history[..len - size_n].iter().rev());
            let support = size_n + before.take(max.saturating_sub(size_n)).take_while(|(a, b)| a == b).count();
            return Lookup { draft: &history[from..len.min(from + max)], support: support.min(max) };
        }
    }
    none
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
    /// The longest draft this step, of at most `n_max` (0: do not draft):
    /// the pace's length, or the lookup's `support` where that is longer (a
    /// text repeated for 40 tokens is drafted 40 ahead at once, not 16,
    /// then 32: each decode of a draft reads all the weights once), and at
    /// least `n_min` (shorter drafts are not tried, and a pace cut below it
    /// can then grow again).
    pub fn limit(&self, n_max: usize, support: usize, n_min: usize) -> usize {
        if self.paused > 0 {
            0
        } else {
            self.len.max(support).max(n_min).min(n_max)
        }
    }

    /// After a draft of `drafted` tokens, of which the first `accepted` were
    /// what the model sampled.
    pub fn drafted(&mut self, drafted: usize, accepted: usize, n_max: usize) {
        if drafted == 0 {
            return;
        }
        if accepted >= drafted {
            self.len = (self.len.max(drafted) * 2).min(n_max.max(1));
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

/// Whether a draft model pays for its model, decided from what the worker
/// measured: the tokens per second of its decode steps with drafts and
/// without. Steps run in phases of [`PHASE_STEPS`] in one mode; after each,
/// the mode with the higher rate (a moving average over phases) runs next,
/// and now and then one phase runs the other mode, so a draft model that
/// stopped paying (or started to) is noticed: after [`EXPLORE_EVERY`]
/// phases, and, each time such a try confirms the choice, twice as many
/// phases later (at most [`EXPLORE_MAX`]); a try that changes the choice
/// starts over at [`EXPLORE_EVERY`]. A try costs more than its phase: the
/// draft model first reads what the slots hold (a whole prompt where it
/// drafted for another request last), so a draft model that does not pay
/// is tried less and less often. Steps that read a prompt are not counted
/// (prefill is the same work either way); the worker leaves them out. The
/// rates are of the whole step, however many slots generate in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payoff {
    with: Option<f64>,
    without: Option<f64>,
    drafting: bool,
    /// This phase so far: steps, tokens emitted, seconds.
    steps: u32,
    tokens: u64,
    secs: f64,
    /// Whether this phase tries the mode that measured slower.
    trying: bool,
    /// Phases between tries, and phases left before the next.
    gap: u32,
    next_try: u32,
}

pub const PHASE_STEPS: u32 = 16;
pub const EXPLORE_EVERY: u32 = 8;
pub const EXPLORE_MAX: u32 = 128;

impl Default for Payoff {
    fn default() -> Self {
        Self { with: None, without: None, drafting: true, steps: 0, tokens: 0, secs: 0.0, trying: false, gap: EXPLORE_EVERY, next_try: EXPLORE_EVERY }
    }
}

impl Payoff {
    /// Whether slots draft in this step.
    pub fn drafting(&self) -> bool {
        self.drafting
    }

    /// One decode step that only generated (no prompt read): `tokens`
    /// emitted in `secs`.
    pub fn record(&mut self, tokens: u64, secs: f64) {
        self.steps += 1;
        self.tokens += tokens;
        self.secs += secs;
        if self.steps < PHASE_STEPS {
            return;
        }
        let rate = self.tokens as f64 / self.secs.max(1e-9);
        let avg = if self.drafting { &mut self.with } else { &mut self.without };
        *avg = Some(avg.map_or(rate, |a| 0.5 * a + 0.5 * rate));
        (self.steps, self.tokens, self.secs) = (0, 0, 0.0);
        self.drafting = match (self.with, self.without) {
            (_, None) => false,
            (None, _) => true,
            (Some(w), Some(wo)) => {
                let better = w >= wo;
                if std::mem::take(&mut self.trying) {
                    // The mode tried lost again: try it less often; it won
                    // (the choice flips): start over at `EXPLORE_EVERY`.
                    self.gap = if self.drafting != better { (self.gap * 2).min(EXPLORE_MAX) } else { EXPLORE_EVERY };
                    self.next_try = self.gap;
                    better
                } else if self.next_try <= 1 {
                    self.trying = true;
                    !better
                } else {
                    self.next_try -= 1;
                    better
                }
            }
        };
    }

    /// Tokens per second measured with drafts and without (`None`: not yet).
    pub fn rates(&self) -> (Option<f64>, Option<f64>) {
        (self.with, self.without)
    }
}

/// What a draft model must share with its target, llama-server's rule
/// (`common_speculative_are_compatible`): the tokenizer kind, BOS/EOS and
/// whether they are added, a vocabulary size within
/// [`VOCAB_SIZE_SLACK`], and the same text for every token both have from
/// id [`VOCAB_CHECK_FROM`] on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabFacts {
    pub kind: String,
    pub n_vocab: u32,
    pub bos: i32,
    pub eos: i32,
    pub add_bos: bool,
    pub add_eos: bool,
}

pub const VOCAB_SIZE_SLACK: u32 = 128;
pub const VOCAB_CHECK_FROM: u32 = 5;

/// Why `draft` cannot draft for `target` (`None`: it can). `text(id)` gives
/// token `id`'s text in the target's and the draft's vocabulary.
pub fn vocab_mismatch(target: &VocabFacts, draft: &VocabFacts, text: impl Fn(u32) -> (Vec<u8>, Vec<u8>)) -> Option<String> {
    if target.kind != draft.kind {
        return Some(format!("its tokenizer is {}, the model's {}", draft.kind, target.kind));
    }
    if (target.bos, target.add_bos, target.eos, target.add_eos) != (draft.bos, draft.add_bos, draft.eos, draft.add_eos) {
        return Some(format!(
            "its BOS/EOS tokens differ (BOS {} added {}, EOS {} added {}; the model's BOS {} added {}, EOS {} added {})",
            draft.bos, draft.add_bos, draft.eos, draft.add_eos, target.bos, target.add_bos, target.eos, target.add_eos
        ));
    }
    if target.n_vocab.abs_diff(draft.n_vocab) > VOCAB_SIZE_SLACK {
        return Some(format!("its vocabulary has {} tokens, the model's {}", draft.n_vocab, target.n_vocab));
    }
    for id in VOCAB_CHECK_FROM..target.n_vocab.min(draft.n_vocab) {
        let (t, d) = text(id);
        if t != d {
            return Some(format!(
                "token {id} is {:?} in it, {:?} in the model",
                String::from_utf8_lossy(&d),
                String::from_utf8_lossy(&t)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `phases` phases where a step emits `tokens` in `secs` when
    /// drafting and 1 token in 1 s when not; returns the modes run.
    fn phases(p: &mut Payoff, n: usize, with: (u64, f64)) -> Vec<bool> {
        let mut modes = Vec::new();
        for _ in 0..n {
            modes.push(p.drafting());
            for _ in 0..PHASE_STEPS {
                let (tokens, secs) = if p.drafting() { with } else { (1, 1.0) };
                p.record(tokens, secs);
            }
        }
        modes
    }

    #[test]
    fn a_draft_model_that_does_not_pay_is_left_out_and_tried_less_and_less_often() {
        // Drafting: 3 tokens in 4 s (0.75 tok/s) against 1 tok/s without.
        let mut p = Payoff::default();
        let modes = phases(&mut p, 60, (3, 4.0));
        // Drafts first, then one phase without to compare, then without,
        // but for tries 8, 16 and 32 phases apart.
        assert_eq!(&modes[..3], &[true, false, false]);
        let tries: Vec<usize> = (1..modes.len()).filter(|&i| modes[i]).collect();
        assert_eq!(tries, [9, 26, 59], "{modes:?}");
        assert!(p.rates().0.unwrap() < p.rates().1.unwrap());
        // Never further apart than EXPLORE_MAX phases.
        let mut p = Payoff::default();
        let modes = phases(&mut p, 600, (3, 4.0));
        let tries: Vec<usize> = (1..modes.len()).filter(|&i| modes[i]).collect();
        assert!(tries.windows(2).all(|w| w[1] - w[0] <= EXPLORE_MAX as usize + 1), "{tries:?}");
        assert_eq!(tries.windows(2).last().map(|w| w[1] - w[0]), Some(EXPLORE_MAX as usize + 1), "{tries:?}");
    }

    #[test]
    fn a_draft_model_that_pays_keeps_drafting() {
        let mut p = Payoff::default();
        let modes = phases(&mut p, 17, (3, 1.5));
        assert_eq!(&modes[..3], &[true, false, true]);
        assert_eq!(modes.iter().filter(|&&m| !m).count(), 2, "one to measure, one try (the next is 16 phases later): {modes:?}");
        // It stops paying (the text turned hard to guess): left out.
        let modes = phases(&mut p, 6, (1, 2.0));
        assert!(!modes[5], "{modes:?}");
    }

    #[test]
    fn a_draft_vocabulary_must_match_the_models_as_llama_server_checks_it() {
        let t = VocabFacts { kind: "SPM".into(), n_vocab: 1000, bos: 1, eos: 2, add_bos: true, add_eos: false };
        let same = |id: u32| (format!("t{id}").into_bytes(), format!("t{id}").into_bytes());
        assert_eq!(vocab_mismatch(&t, &t.clone(), same), None);
        // Up to 128 tokens more or fewer, and other texts below id 5, pass.
        let bigger = VocabFacts { n_vocab: 1128, ..t.clone() };
        assert_eq!(vocab_mismatch(&t, &bigger, |id| if id < 5 { (b"a".to_vec(), b"b".to_vec()) } else { same(id) }), None);
        let e = vocab_mismatch(&t, &VocabFacts { n_vocab: 1129, ..t.clone() }, same).unwrap();
        assert!(e.contains("1129") && e.contains("1000"), "{e}");
        let e = vocab_mismatch(&t, &VocabFacts { kind: "BPE".into(), ..t.clone() }, same).unwrap();
        assert!(e.contains("BPE") && e.contains("SPM"), "{e}");
        assert!(vocab_mismatch(&t, &VocabFacts { eos: 3, ..t.clone() }, same).unwrap().contains("EOS"));
        assert!(vocab_mismatch(&t, &VocabFacts { add_bos: false, ..t.clone() }, same).is_some());
        let e = vocab_mismatch(&t, &t.clone(), |id| if id == 700 { (b"cat".to_vec(), b"dog".to_vec()) } else { same(id) }).unwrap();
        assert!(e.contains("token 700") && e.contains("dog") && e.contains("cat"), "{e}");
    }

    #[test]
    fn the_lookup_drafts_what_followed_the_last_tokens_before() {
        // "a b c d e" then "x a b" -> after "a b" came "c d e".
        let h = [1, 2, 3, 4, 5, 9, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 8).draft, &[3, 4, 5, 9, 1, 2]);
        assert_eq!(ngram_simple(&h, 2, 2).draft, &[3, 4]);
        // The latest earlier occurrence wins.
        let h = [1, 2, 7, 1, 2, 8, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 1).draft, &[8]);
        // No earlier occurrence, or too short a history: nothing.
        assert!(ngram_simple(&[1, 2, 3, 4], 2, 8).draft.is_empty());
        assert!(ngram_simple(&[1, 2], 2, 8).draft.is_empty());
        assert!(ngram_simple(&[1, 2, 1, 2], 2, 0).draft.is_empty());
        // The latest match leaves fewer than size_n tokens: nothing.
        assert!(ngram_simple(&[5, 5, 5, 5], 2, 8).draft.is_empty());
        assert!(ngram_simple(&[1, 2, 1, 2], 2, 8).draft.is_empty());
        assert_eq!(ngram_simple(&[1, 2, 3, 1, 2], 2, 8).draft, &[3, 1, 2]);
    }

    #[test]
    fn the_lookup_tells_how_far_back_the_repeat_goes() {
        // "5 6 1 2 | 3 4 9 | 5 6 1 2": the match "1 2" is preceded by "5 6"
        // in both places, so four tokens agree; the draft is "3 4 9 5 6 1 2".
        let h = [5, 6, 1, 2, 3, 4, 9, 5, 6, 1, 2];
        let found = ngram_simple(&h, 2, 16);
        assert_eq!(found.draft, &[3, 4, 9, 5, 6, 1, 2]);
        assert_eq!(found.support, 4);
        // Only the n-gram itself agrees: support is size_n.
        let h = [7, 1, 2, 3, 4, 9, 8, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 16).support, 2);
        // Never more than asked for (it is a draft length), nothing without a draft.
        let h = [5, 6, 1, 2, 3, 4, 9, 5, 6, 1, 2];
        assert_eq!(ngram_simple(&h, 2, 3).support, 3);
        assert_eq!(ngram_simple(&[1, 2, 3, 4], 2, 8).support, 0);
        // A whole copied text: everything since the start of the first copy agrees.
        let doc: Vec<u32> = (100..160).collect();
        let mut h = doc.clone();
        h.push(1);
        h.extend(&doc[..20]);
        assert_eq!(ngram_simple(&h, 4, 48).support, 20);
        assert_eq!(&ngram_simple(&h, 4, 48).draft[..40], &doc[20..]);
    }

    #[test]
    fn a_long_repeat_drafts_past_the_pace_but_not_past_n_max_or_a_pause() {
        let mut p = Pace::default();
        assert_eq!(p.limit(48, 12, 0), 16, "a short support leaves the pace's length");
        assert_eq!(p.limit(48, 40, 0), 40);
        assert_eq!(p.limit(32, 40, 0), 32);
        p.drafted(40, 40, 128);
        assert_eq!(p.limit(128, 0, 0), 80, "a whole draft doubles the longer of the two");
        p.drafted(8, 0, 48);
        p.drafted(8, 0, 48);
        assert_eq!(p.limit(48, 48, 0), 0, "a paused slot drafts nothing however long the repeat");
        assert_eq!(p.limit(48, 0, 4), 0, "nor at n_min");
        let mut p = Pace::default();
        p.drafted(16, 0, 48);
        assert_eq!(p.limit(48, 0, 12), 12, "a pace cut below n_min drafts n_min");
    }

    #[test]
    fn whole_drafts_lengthen_the_next_and_cut_ones_shorten_it() {
        let mut p = Pace::default();
        assert_eq!(p.limit(48, 0, 0), 16);
        assert_eq!(p.limit(8, 0, 0), 8, "a lower n_max caps it");
        p.drafted(16, 16, 48);
        assert_eq!(p.limit(48, 0, 0), 32);
        p.drafted(32, 32, 48);
        assert_eq!(p.limit(48, 0, 0), 48, "never past n_max");
        p.drafted(48, 3, 48);
        assert_eq!(p.limit(48, 0, 0), 24);
        p.drafted(24, 20, 48);
        assert_eq!(p.limit(48, 0, 0), 21, "at least one more than was accepted");
    }

    #[test]
    fn drafts_that_keep_failing_pause_drafting_for_longer_each_time() {
        let mut p = Pace::default();
        p.drafted(16, 0, 48);
        assert_eq!(p.limit(48, 0, 0), 8, "one miss halves the length only");
        p.drafted(8, 0, 48);
        assert_eq!(p.limit(48, 0, 0), 0, "two in a row pause");
        for _ in 0..7 {
            p.generated();
        }
        assert_eq!(p.limit(48, 0, 0), 0);
        p.generated();
        assert_eq!(p.limit(48, 0, 0), 4, "8 tokens later it drafts again");
        p.drafted(4, 0, 48);
        for _ in 0..15 {
            p.generated();
        }
        assert_eq!(p.limit(48, 0, 0), 0, "the next pause is twice as long");
        p.generated();
        assert_eq!(p.limit(48, 0, 0), 2);
        p.drafted(2, 2, 48);
        assert_eq!(p.limit(48, 0, 0), 4, "an accepted draft ends the misses");
        // Pauses never grow past MAX_PAUSE.
        let mut p = Pace::default();
        for _ in 0..20 {
            p.drafted(1, 0, 48);
        }
        for _ in 0..MAX_PAUSE {
            p.generated();
        }
        assert_eq!(p.limit(48, 0, 0), 1);
        // An empty draft changes nothing.
        let before = p;
        p.drafted(0, 0, 48);
        assert_eq!(p, before);
    }
}
