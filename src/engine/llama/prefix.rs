//! The slots' prefix caches beyond the KV itself: the host KV cache (restore
//! before a slot takes a prompt, save when it is dropped) and the prompt
//! checkpoints of sliding-window models (cut a slot back to its prompt).

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::token::LlamaToken;

use super::worker::{Slot, Worker, MIN_SAVED_TOKENS};

impl Worker<'_> {
    /// Before slot `i` takes `prompt` (reusing `reuse` cached tokens): saves
    /// what the slot would drop, and restores a longer saved prefix of the
    /// prompt if the host cache has one. Returns the tokens reused.
    pub(super) fn from_host_cache(&mut self, i: usize, prompt: &[u32], reuse: usize) -> usize {
        let Some((store, key)) = &self.store else { return reuse };
        // A restore writes the slot's tensors at once: never while a KV copy
        // from or into the slot waits for the next decode (see `PendingCopy`).
        if !self.slots[i].state_writable() {
            return reuse;
        }
        let found = store.best(key, prompt, reuse + MIN_SAVED_TOKENS);
        if found.is_some() || self.slots[i].cached.len() >= reuse + MIN_SAVED_TOKENS {
            // What goes beyond the prompt checkpoint is lost anyway: save the
            // sequence as of its prompt, which a follow-up can continue.
            if self.slots[i].checkpoint.as_ref().is_some_and(|(len, _)| reuse <= *len) {
                self.rewind_to_prompt(i);
            }
            self.save_slot(i);
        }
        let Some(found) = found else { return reuse };
        let seq = self.slots[i].seq;
        let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
        match self.ctx.state_seq_set(&found.blob, seq) {
            Ok(()) => {
                tracing::debug!(seq, tokens = found.shared, "restored a prefix from the host KV cache");
                self.slots[i].cached = found.tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
                self.slots[i].checkpoint = None;
                found.shared.min(prompt.len().saturating_sub(1))
            }
            Err(e) => {
                tracing::warn!(seq, "restoring a saved prefix failed ({e}); prefilling instead");
                if let Some((store, key)) = &self.store {
                    store.forget(key, &found.tokens);
                }
                let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
                self.slots[i].cached.clear();
                0
            }
        }
    }

    /// How slot `s` may be cut back (see `SlotCache::cut_only_to`).
    pub(super) fn cut_only_to(&self, s: &Slot) -> Option<usize> {
        let windowed = self.windowed && self.ctx.kv_cache_seq_pos_min(s.seq) > 0;
        windowed.then(|| s.checkpoint.as_ref().map_or(0, |(len, _)| *len))
    }

    /// Cuts slot `i` back to its prompt checkpoint when the new request keeps
    /// at least that much (`reuse`): the full-attention layers drop the tail,
    /// the window is restored as it was when the prompt was read. Returns
    /// the tokens kept (0: no usable checkpoint, prefill afresh).
    pub(super) fn rewind(&mut self, i: usize, reuse: usize) -> usize {
        let seq = self.slots[i].seq;
        if !self.slots[i].state_writable() {
            return 0;
        }
        let Some((len, state)) = self.slots[i].checkpoint.as_ref().filter(|(len, _)| *len <= reuse) else { return 0 };
        let len = *len;
        if self.ctx.kv_cache_seq_rm(seq, Some(len as u32), None).is_err() {
            return 0;
        }
        match self.ctx.state_seq_set(state, seq) {
            Ok(()) => len,
            Err(e) => {
                tracing::warn!(seq, "restoring a prompt checkpoint failed: {e}");
                0
            }
        }
    }

    /// Cuts slot `i` back to its prompt checkpoint before its cache is saved
    /// and dropped: a follow-up of that prompt (not of the generated text,
    /// which completions do not resend) can then continue the saved state.
    pub(super) fn rewind_to_prompt(&mut self, i: usize) {
        let held = self.slots[i].cached.len();
        let Some(prompt_end) = self.slots[i].checkpoint.as_ref().map(|(len, _)| *len) else { return };
        if prompt_end < held && self.rewind(i, prompt_end) == prompt_end {
            self.slots[i].cached.truncate(prompt_end);
        }
    }

    /// After slot `i` read its whole prompt: keep the window's state (the
    /// partial state, sliding-window layers only) for a later rewind.
    pub(super) fn take_checkpoint(&mut self, i: usize) {
        let slot = &self.slots[i];
        match self.ctx.state_seq_get(slot.seq, LlamaStateSeqFlags::PARTIAL_ONLY) {
            Ok(state) => self.slots[i].checkpoint = Some((self.slots[i].cached.len(), state)),
            Err(e) => tracing::debug!(seq = slot.seq, "no prompt checkpoint: {e}"),
        }
    }

    /// Saves slot `i`'s sequence in the host cache, unless it holds little
    /// or the cache already has it.
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
            Ok(state) => {
                let bytes = state.byte_len();
                tracing::debug!(seq = slot.seq, tokens = tokens.len(), bytes, "saved a sequence to the host KV cache");
                store.insert(key, tokens, state, bytes);
            }
            Err(e) => tracing::warn!(seq = slot.seq, "saving a sequence failed: {e}"),
        }
    }
}
