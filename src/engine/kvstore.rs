//! The host-memory KV cache: sequence states saved when a slot is about to
//! be reused for another prompt or its model is unloaded, so that a later
//! request sharing a saved prefix restores it instead of prefilling it again
//! (a conversation's turn 2 after its model was swapped out and back; a long
//! system prompt after four other conversations took every slot).
//!
//! One store serves every model, bounded by a byte budget, least recently
//! used entries leave first. Entries are keyed by the model file and the
//! context shape (a saved state only restores into an identical layout).
//! This file holds the bookkeeping only, generic over the saved blob; the
//! llama.cpp worker saves and restores the states.

use std::sync::Arc;

use super::slots::common_prefix;

/// What a saved state can be restored into: the model file (path, size,
/// modification time) and the context layout it was saved from.
pub type StoreKey = String;

/// How many leading tokens of a prompt a saved sequence serves, given the
/// sequence's length, the lengths of the checkpoints saved with it and the
/// tokens it shares with the prompt (sliding-window models serve less than
/// they share: see `checkpoints::cut`).
pub type Usable<'a> = &'a dyn Fn(usize, &[usize], usize) -> usize;

/// Every shared token is usable (models without a sliding window).
pub fn all_shared(_held: usize, _marks: &[usize], shared: usize) -> usize {
    shared
}

/// One saved sequence.
#[derive(Debug)]
struct Entry<B> {
    key: StoreKey,
    tokens: Arc<Vec<u32>>,
    /// Lengths of the checkpoints saved with it, ascending.
    marks: Vec<usize>,
    blob: Arc<B>,
    bytes: usize,
    last_used: u64,
}

/// A restorable prefix found for a prompt.
#[derive(Debug)]
pub struct Found<B> {
    /// The saved sequence's tokens (the KV cache holds exactly these).
    pub tokens: Arc<Vec<u32>>,
    pub blob: Arc<B>,
    /// How many leading prompt tokens it serves (see [`Usable`]).
    pub shared: usize,
}

/// Saved sequences, least recently used first out.
#[derive(Debug)]
pub struct PrefixStore<B> {
    budget: usize,
    used: usize,
    entries: Vec<Entry<B>>,
    clock: u64,
}

impl<B> PrefixStore<B> {
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget: budget_bytes, used: 0, entries: Vec::new(), clock: 0 }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether saving `tokens` under `key` would add anything: false when an
    /// entry already holds them (or more).
    pub fn worth_saving(&self, key: &str, tokens: &[u32]) -> bool {
        self.enabled() && !self.entries.iter().any(|e| e.key == key && e.tokens.starts_with(tokens))
    }

    /// Saves a sequence. Entries it extends (same key, their tokens a prefix
    /// of these) are dropped; then least recently used entries until it fits.
    /// A blob larger than the whole budget, or already held, is not kept.
    /// Returns the blobs that left (the new one among them when not kept),
    /// for a caller that must release what they stand for (a file).
    pub fn insert(&mut self, key: &str, tokens: Vec<u32>, marks: Vec<usize>, blob: impl Into<Arc<B>>, bytes: usize) -> Vec<Arc<B>> {
        let blob = blob.into();
        if bytes > self.budget || !self.worth_saving(key, &tokens) {
            return vec![blob];
        }
        let mut gone = self.remove_where(|e| e.key == key && tokens.starts_with(&e.tokens));
        while self.used + bytes > self.budget {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i) else {
                break;
            };
            let entry = self.entries.swap_remove(oldest);
            self.used -= entry.bytes;
            gone.push(entry.blob);
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.push(Entry { key: key.to_string(), tokens: Arc::new(tokens), marks, blob, bytes, last_used: self.clock });
        gone
    }

    /// The saved sequence serving the longest prefix of `prompt` under
    /// `key`, as `usable` counts it, if that is more than `at_least` tokens.
    /// Marks it used.
    pub fn best(&mut self, key: &str, prompt: &[u32], at_least: usize, usable: Usable<'_>) -> Option<Found<B>> {
        let (index, shared) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.key == key)
            .map(|(i, e)| (i, usable(e.tokens.len(), &e.marks, common_prefix(&e.tokens, prompt))))
            .max_by_key(|&(_, shared)| shared)?;
        if shared <= at_least {
            return None;
        }
        self.clock += 1;
        let e = &mut self.entries[index];
        e.last_used = self.clock;
        Some(Found { tokens: e.tokens.clone(), blob: e.blob.clone(), shared })
    }

    /// The checkpoint lengths saved with a sequence.
    pub fn marks(&self, key: &str, tokens: &[u32]) -> Vec<usize> {
        self.entries.iter().find(|e| e.key == key && *e.tokens == tokens).map(|e| e.marks.clone()).unwrap_or_default()
    }

    /// Forgets a saved sequence that failed to restore; returns its blob.
    pub fn forget(&mut self, key: &str, tokens: &[u32]) -> Vec<Arc<B>> {
        self.remove_where(|e| e.key == key && *e.tokens == tokens)
    }

    fn remove_where(&mut self, gone: impl Fn(&Entry<B>) -> bool) -> Vec<Arc<B>> {
        let (dropped, kept) = std::mem::take(&mut self.entries).into_iter().partition::<Vec<_>, _>(|e| gone(e));
        self.entries = kept;
        self.used -= dropped.iter().map(|e| e.bytes).sum::<usize>();
        dropped.into_iter().map(|e| e.blob).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(from: u32, n: u32) -> Vec<u32> {
        (from..from + n).collect()
    }

    #[test]
    fn the_longest_saved_prefix_of_the_same_model_is_found() {
        let mut s = PrefixStore::new(1000);
        s.insert("m", seq(0, 50), vec![], "short", 10);
        s.insert("m", seq(1000, 80), vec![], "other", 10);
        s.insert("n", seq(0, 90), vec![], "other model", 10);
        let mut prompt = seq(0, 60);
        prompt.push(7);
        let found = s.best("m", &prompt, 0, &all_shared).unwrap();
        assert_eq!((*found.blob, found.shared), ("short", 50));
        assert!(s.best("m", &seq(5000, 10), 0, &all_shared).is_none(), "nothing shared");
        assert!(s.best("m", &prompt, 50, &all_shared).is_none(), "must share more than asked");
        assert!(s.best("x", &prompt, 0, &all_shared).is_none(), "another key");
    }

    #[test]
    fn a_longer_save_of_the_same_sequence_replaces_the_shorter_one() {
        let mut s = PrefixStore::new(1000);
        s.insert("m", seq(0, 50), vec![], 1, 10);
        s.insert("m", seq(0, 80), vec![], 2, 16);
        assert_eq!(s.len(), 1);
        assert_eq!(s.used_bytes(), 16);
        assert!(!s.worth_saving("m", &seq(0, 60)), "already held by the longer one");
        s.insert("m", seq(0, 60), vec![], 3, 12);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_entries() {
        let mut s = PrefixStore::<&str>::new(30);
        s.insert("m", seq(0, 10), vec![], "a", 10);
        s.insert("m", seq(100, 10), vec![], "b", 10);
        s.insert("n", seq(200, 10), vec![], "c", 10);
        assert!(s.best("m", &seq(0, 11), 0, &all_shared).is_some(), "a used again");
        s.insert("m", seq(300, 10), vec![], "d", 10);
        assert!(s.best("m", &seq(100, 11), 0, &all_shared).is_none(), "b was the least recently used");
        assert!(s.best("m", &seq(0, 11), 0, &all_shared).is_some());
        assert_eq!(s.used_bytes(), 30);
        s.insert("m", seq(400, 10), vec![], "too big", 31);
        assert!(s.best("m", &seq(400, 11), 0, &all_shared).is_none());
    }

    #[test]
    fn insert_returns_every_blob_that_left() {
        let mut s = PrefixStore::<&str>::new(20);
        assert!(s.insert("m", seq(0, 10), vec![], "a", 10).is_empty());
        assert_eq!(s.insert("m", seq(0, 20), vec![], "a longer", 10).iter().map(|b| **b).collect::<Vec<_>>(), ["a"]);
        assert!(s.insert("m", seq(100, 10), vec![], "b", 10).is_empty());
        assert_eq!(s.insert("m", seq(200, 10), vec![], "c", 10).iter().map(|b| **b).collect::<Vec<_>>(), ["a longer"]);
        assert_eq!(s.insert("m", seq(200, 5), vec![], "held", 5).iter().map(|b| **b).collect::<Vec<_>>(), ["held"], "not kept");
        assert_eq!(s.forget("m", &seq(100, 10)).iter().map(|b| **b).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn the_entry_that_serves_the_most_wins_not_the_one_sharing_the_most() {
        let mut s = PrefixStore::new(1000);
        // Shares 80 tokens but (say) serves only its checkpoint at 20.
        s.insert("m", seq(0, 100), vec![20], "long", 10);
        let mut short = seq(0, 60);
        short.push(5555);
        s.insert("m", short, vec![], "short", 10);
        // Serves what it shares when cut by at most one token, else its
        // best checkpoint (the shape of a windowed cache).
        let usable = |held: usize, marks: &[usize], shared: usize| {
            if shared + 1 >= held {
                shared
            } else {
                marks.iter().copied().filter(|&m| m <= shared).max().unwrap_or(0)
            }
        };
        let mut prompt = seq(0, 80);
        prompt.push(9999);
        let found = s.best("m", &prompt, 0, &usable).unwrap();
        assert_eq!((*found.blob, found.shared), ("short", 60));
        assert_eq!(s.marks("m", &seq(0, 100)), vec![20]);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let mut s = PrefixStore::new(0);
        assert!(!s.enabled());
        s.insert("m", seq(0, 10), vec![], (), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn a_blob_that_failed_to_restore_is_forgotten() {
        let mut s = PrefixStore::new(100);
        s.insert("m", seq(0, 10), vec![], (), 5);
        s.forget("m", &seq(0, 10));
        assert!(s.is_empty());
        assert_eq!(s.used_bytes(), 0);
    }
}
