//! The slots' prefix caches beyond the KV cells themselves: how much of a
//! slot a new prompt keeps (and cutting it there), the checkpoints of
//! sliding-window models (`engine::checkpoints` decides, this file takes and
//! restores them), and the host KV cache (save what a slot drops, restore a
//! saved sequence that serves more of the prompt).

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::token::LlamaToken;

use super::saved::{Checkpoint, SavedSeq};
use super::worker::{Slot, Worker, MIN_SAVED_TOKENS};
use crate::engine::checkpoints::{self, saved_floor, Cut, Window};
use crate::engine::slots::{common_prefix, reusable};

impl Worker<'_> {
    /// How slot `s` may be cut back: `None` when anywhere.
    pub(super) fn window_of<'s>(&self, s: &'s Slot) -> Option<Window<'s>> {
        (self.n_swa > 0).then(|| Window { n_swa: self.n_swa, floor: self.ctx.kv_cache_seq_pos_min(s.seq).max(0) as usize, checkpoints: &s.marks })
    }

    /// Cuts slot `i` to what `prompt` can keep of it: its shared prefix when
    /// the cache allows that cut, else its nearest checkpoint, else nothing.
    /// Returns the tokens kept.
    pub(super) fn cut_for(&mut self, i: usize, prompt: &[LlamaToken]) -> usize {
        let slot = &self.slots[i];
        let (seq, held) = (slot.seq, slot.cached.len());
        let window = self.window_of(slot);
        let common = reusable(&slot.cached, prompt);
        let cut = checkpoints::cut(window.as_ref(), held, common);
        tracing::debug!(seq, held, common, floor = window.map(|w| w.floor), ?cut, "cut for a prompt");
        let kept = match cut {
            Cut::Keep(n) if n == held => n,
            Cut::Keep(n) => match self.ctx.kv_cache_seq_rm(seq, Some(n as u32), None) {
                Ok(()) => n,
                // Recurrent memories cannot drop a tail.
                Err(_) => 0,
            },
            Cut::Checkpoint(len) => self.rewind(i, len),
            Cut::Nothing => 0,
        };
        if kept == 0 {
            let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
        }
        let slot = &mut self.slots[i];
        slot.cached.truncate(kept);
        slot.drop_checkpoints_past(kept);
        kept
    }

    /// Cuts slot `i` back to its checkpoint of `len` tokens: the
    /// full-attention layers drop the rest, the window is restored as it was
    /// at `len`. Returns `len`, or 0 when that failed.
    fn rewind(&mut self, i: usize, len: usize) -> usize {
        let slot = &self.slots[i];
        let seq = slot.seq;
        if !slot.state_writable() {
            return 0;
        }
        let Some(at) = slot.marks.iter().position(|&m| m == len) else { return 0 };
        if self.ctx.kv_cache_seq_rm(seq, Some(len as u32), None).is_err() {
            return 0;
        }
        match self.ctx.state_seq_set(&self.slots[i].checkpoints[at].state, seq) {
            Ok(()) if self.ctx.kv_cache_seq_pos_max(seq) + 1 == len as i32 => {
                tracing::debug!(seq, tokens = len, "cut back to a checkpoint");
                len
            }
            Ok(()) => {
                tracing::warn!(seq, tokens = len, "a checkpoint restored to other positions; reading the prompt afresh");
                0
            }
            Err(e) => {
                tracing::warn!(seq, "restoring a checkpoint failed: {e}");
                0
            }
        }
    }

    /// Where slot `i`'s read of a `len`-token prompt, from what the slot
    /// holds now, takes checkpoints (`checkpoints::plan`); none without a
    /// window or with `--ctx-checkpoints 0`.
    pub(super) fn plan_checkpoints(&self, i: usize, len: usize, hints: &[usize]) -> Vec<usize> {
        if self.n_swa == 0 || self.max_checkpoints == 0 {
            return Vec::new();
        }
        let slot = &self.slots[i];
        checkpoints::plan(len, slot.cached.len(), hints, &slot.marks)
    }

    /// Takes a checkpoint of slot `i` as it is now (it holds exactly the
    /// tokens it has read), dropping one beyond `--ctx-checkpoints`.
    pub(super) fn take_checkpoint(&mut self, i: usize) {
        let slot = &self.slots[i];
        if !slot.state_readable() {
            return;
        }
        let len = slot.cached.len();
        match self.ctx.state_seq_get(slot.seq, LlamaStateSeqFlags::PARTIAL_ONLY) {
            Ok(state) => {
                tracing::debug!(seq = slot.seq, tokens = len, bytes = state.byte_len(), "took a checkpoint");
                let max = self.max_checkpoints;
                self.slots[i].add_checkpoint(Checkpoint { len, state: std::sync::Arc::new(state) }, max);
            }
            Err(e) => tracing::debug!(seq = slot.seq, "no checkpoint: {e}"),
        }
    }

    /// Before slot `i` takes `prompt` (reusing `reuse` of what it holds):
    /// saves what the slot would drop, and restores a saved sequence that
    /// serves more of the prompt, if the host cache has one. Returns where
    /// the restored sequence leaves the prompt (a point worth a checkpoint).
    pub(super) fn from_host_cache(&mut self, i: usize, prompt: &[u32], reuse: usize) -> Option<usize> {
        let (store, key) = self.store.clone()?;
        let n_swa = self.n_swa;
        let last = prompt.len().saturating_sub(1);
        let usable = move |held: usize, marks: &[usize], shared: usize| {
            let window = (n_swa > 0).then(|| Window { n_swa, floor: saved_floor(held, n_swa), checkpoints: marks });
            checkpoints::cut(window.as_ref(), held, shared.min(last)).tokens()
        };
        let found = store.best(&key, prompt, reuse + MIN_SAVED_TOKENS, &usable);
        if found.is_some() || self.slots[i].cached.len() >= reuse + MIN_SAVED_TOKENS {
            self.save_slot(i);
        }
        // A restore writes the slot's tensors at once: never while a KV copy
        // from or into the slot waits for the next decode (see `PendingCopy`).
        if !self.slots[i].state_writable() {
            return None;
        }
        let found = found?;
        let seq = self.slots[i].seq;
        let held = found.tokens.len();
        let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
        let restored = match self.ctx.state_seq_set(&found.blob.whole, seq) {
            Ok(()) => self.covers(seq, held),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = restored {
            tracing::warn!(seq, tokens = held, "a saved sequence did not restore ({why}); forgotten, reading the prompt instead");
            store.forget(&key, &found.tokens);
            self.empty_slot(i);
            return None;
        }
        tracing::debug!(seq, tokens = held, serves = found.shared, "restored a sequence from the host KV cache");
        let slot = &mut self.slots[i];
        slot.cached = found.tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
        slot.set_checkpoints(found.blob.checkpoints.clone());
        slot.restored = Some(found.tokens.clone());
        Some(common_prefix(&found.tokens, prompt))
    }

    /// Whether sequence `seq` now holds the `held` tokens a restore must:
    /// it ends at position `held - 1` and, with a window, the sliding layers
    /// still hold every position the next token attends to. (A recurrent
    /// memory holds only its last position; its minimum says nothing.)
    fn covers(&self, seq: i32, held: usize) -> Result<(), String> {
        let (min, max) = (self.ctx.kv_cache_seq_pos_min(seq), self.ctx.kv_cache_seq_pos_max(seq));
        let window_ok = self.n_swa == 0 || (min >= 0 && checkpoints::window_covers(min as usize, self.n_swa, held));
        if max + 1 != held as i32 || !window_ok {
            return Err(format!("it holds positions {min}..={max}, not the {held} tokens it was saved with"));
        }
        Ok(())
    }

    /// Saves slot `i`'s sequence and its checkpoints in the host cache,
    /// unless it holds little or the cache already has it.
    pub(super) fn save_slot(&self, i: usize) {
        let Some((store, key)) = &self.store else { return };
        let slot = &self.slots[i];
        if slot.cached.len() < MIN_SAVED_TOKENS || slot.shifted || !slot.state_readable() {
            return;
        }
        let tokens: Vec<u32> = slot.cached.iter().map(|t| t.0 as u32).collect();
        if !store.worth_saving(key, &tokens) {
            return;
        }
        match self.ctx.state_seq_get(slot.seq, LlamaStateSeqFlags::empty()) {
            Ok(whole) => {
                let saved = SavedSeq { held: tokens.len(), whole, checkpoints: slot.checkpoints.clone() };
                let bytes = saved.bytes();
                tracing::debug!(seq = slot.seq, tokens = tokens.len(), checkpoints = saved.checkpoints.len(), bytes, "saved a sequence to the host KV cache");
                store.insert(key, tokens, saved, bytes);
            }
            Err(e) => tracing::warn!(seq = slot.seq, "saving a sequence failed: {e}"),
        }
    }

    /// Forgets the saved sequence slot `i` was restored from (a decode on
    /// it failed, or its cells did not match).
    pub(super) fn forget_restored(&mut self, i: usize) {
        if let (Some(tokens), Some((store, key))) = (self.slots[i].restored.take(), &self.store) {
            tracing::warn!(seq = self.slots[i].seq, tokens = tokens.len(), "forgetting a saved sequence that failed after its restore");
            store.forget(key, &tokens);
        }
    }
}

/// A slot's checkpoints and their lengths (`marks`, what the pure
/// decisions read) change only here, together.
impl Slot {
    pub(super) fn set_checkpoints(&mut self, checkpoints: Vec<Checkpoint>) {
        self.marks = checkpoints.iter().map(|c| c.len).collect();
        self.checkpoints = checkpoints;
    }

    /// Adds a checkpoint at the sequence's end (replacing any of that length
    /// or more), then drops one while more than `max` are held.
    fn add_checkpoint(&mut self, checkpoint: Checkpoint, max: usize) {
        self.drop_checkpoints_past(checkpoint.len.saturating_sub(1));
        self.marks.push(checkpoint.len);
        self.checkpoints.push(checkpoint);
        while let Some(at) = checkpoints::to_drop(&self.marks, max) {
            self.checkpoints.remove(at);
            self.marks.remove(at);
        }
    }

    /// Drops the checkpoints of more than `len` tokens (the sequence no
    /// longer holds them).
    pub(super) fn drop_checkpoints_past(&mut self, len: usize) {
        let keep = self.marks.iter().take_while(|&&m| m <= len).count();
        self.checkpoints.truncate(keep);
        self.marks.truncate(keep);
    }

    pub(super) fn clear_checkpoints(&mut self) {
        self.checkpoints.clear();
        self.marks.clear();
    }
}
