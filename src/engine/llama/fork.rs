//! The `n` choices of one request share their prompt: they are queued
//! together (`Command::Generate` with several requests), the first one
//! admitted reads the prompt, and each other one waits in its own slot
//! (a follower) until the reading is done. Then the reader's sequence is
//! copied into the follower's (`llama_memory_seq_cp`, whole sequences: the
//! one copy that every memory supports, sliding-window and recurrent
//! included) and the follower samples its first token from the same logits.
//!
//! With a KV stream per slot (our setting) llama.cpp copies the buffer at
//! the start of the next decode; until then the follower's slot holds
//! cell metadata without the data behind it, and the reader's slot holds
//! the data the copy will take (`PendingCopy`): neither is restored into
//! (a restore writes tensors at once), and the follower is not saved.

use llama_cpp_2::token::LlamaToken;

use super::worker::{Active, Slot, Worker};
use crate::engine::slots::shares_prefill;

impl Active {
    /// Reading exactly `prompt` itself (admitted, not yet sampling, not
    /// waiting on another slot): a slot others can share it from.
    fn reads(&self, prompt: &[LlamaToken]) -> bool {
        self.follows.is_none() && self.generated == 0 && self.pending.is_none() && self.prompt == prompt
    }
}

impl Worker<'_> {
    /// The slot that is reading exactly `prompt` (admitted, not yet
    /// sampling), if a request for it should wait and share it rather than
    /// read it itself, its own slot holding `reuse` of it.
    pub(super) fn prompt_reader(&self, prompt: &[LlamaToken], reuse: usize) -> Option<usize> {
        if !shares_prefill(prompt.len(), reuse) {
            return None;
        }
        self.slots.iter().position(|s| s.active.as_ref().is_some_and(|a| a.reads(prompt)))
    }

    /// Followers whose reader is gone (its client left, it failed) read
    /// their prompt themselves.
    pub(super) fn orphan_followers(&mut self) {
        for f in 0..self.slots.len() {
            let Some(reader) = self.slots[f].active.as_ref().and_then(|a| a.follows) else { continue };
            let still = match (&self.slots[reader].active, &self.slots[f].active) {
                (Some(r), Some(a)) => r.reads(&a.prompt),
                _ => false,
            };
            if !still {
                let len = self.slots[f].active.as_ref().map_or(0, |a| a.prompt.len());
                let plan = self.plan_checkpoints(f, len, &[]);
                if let Some(a) = self.slots[f].active.as_mut() {
                    a.follows = None;
                    a.checkpoint_at = plan;
                }
            }
        }
    }

    /// After a decode: every reader that just read the last token of its
    /// prompt hands its sequence to its followers, which then sample from
    /// its logits.
    pub(super) fn fork_followers(&mut self) {
        for r in 0..self.slots.len() {
            let Some(reader) = self.slots[r].active.as_ref() else { continue };
            let (Some(at), true) = (reader.logits_at, reader.generated == 0) else { continue };
            let (src, cached) = (self.slots[r].seq, self.slots[r].cached.clone());
            for f in 0..self.slots.len() {
                if self.slots[f].active.as_ref().and_then(|a| a.follows) != Some(r) {
                    continue;
                }
                let dst = self.slots[f].seq;
                let _ = self.ctx.kv_cache_seq_rm(dst, None, None);
                if self.ctx.kv_cache_seq_cp(src, dst, None, None).is_err() {
                    continue;
                }
                let slot = &mut self.slots[f];
                slot.cached = cached.clone();
                slot.clear_checkpoints();
                slot.restored = None;
                slot.copy = PendingCopy::Into;
                if let Some(a) = slot.active.as_mut() {
                    a.follows = None;
                    a.logits_at = Some(at);
                    a.cached_tokens = a.prompt.len() as u32;
                }
                tracing::debug!(from = src, to = dst, tokens = cached.len(), "shared a prompt's KV");
                self.slots[r].copy = PendingCopy::From;
            }
        }
    }
}

/// A slot's part in a KV copy llama.cpp performs at the next decode. With a
/// KV stream per slot, `llama_memory_seq_cp` moves the cell metadata at once
/// and the data at the next decode: until then, writing the source's tensors
/// (a state restore) would change what the destination receives, and the
/// destination's tensors do not hold its cells' data yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingCopy {
    None,
    /// The source of a pending copy: readable, not writable.
    From,
    /// The destination of a pending copy: neither readable nor writable.
    Into,
}

impl Slot {
    /// Whether a state may be restored into this slot now.
    pub(super) fn state_writable(&self) -> bool {
        self.copy == PendingCopy::None
    }

    /// Whether this slot's state may be read (saved) now.
    pub(super) fn state_readable(&self) -> bool {
        self.copy != PendingCopy::Into
    }
}
