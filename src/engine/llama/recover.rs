//! A slot whose KV cells do not match what it claims to hold (a saved
//! sequence that restored to other positions, a decode that failed on a
//! restored one) is emptied and its request reads its prompt afresh: one
//! slot's bad cache never fails its neighbours. Also here: taking the
//! checkpoints a read has reached.

use llama_cpp_2::token::LlamaToken;

use super::worker::Worker;
use crate::engine::checkpoints::window_covers;
use crate::engine::GenerationEvent;

/// A slot's state before a step added its tokens to the batch.
pub(super) struct Before {
    pub(super) slot: usize,
    /// Tokens it held.
    pub(super) held: usize,
    /// The sampled token the batch took from it.
    pub(super) pending: Option<LlamaToken>,
}

impl Worker<'_> {
    /// Before a step: every busy slot's sequence must end where its tokens
    /// do (llama.cpp refuses the whole batch otherwise), and its sliding
    /// window must still hold what the next token attends to. One that does
    /// not is emptied (see [`Self::reset_slot`]).
    pub(super) fn check_slots(&mut self) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(active) = slot.active.as_ref() else { continue };
            if active.follows.is_some() {
                continue;
            }
            let (first, last) = (self.ctx.kv_cache_seq_pos_min(slot.seq), self.ctx.kv_cache_seq_pos_max(slot.seq));
            let held = slot.cached.len();
            if last + 1 != held as i32 {
                let why = format!("its sequence ends at position {last} but it holds {held} tokens");
                self.reset_slot(i, &why);
            } else if self.n_swa > 0 && held > 0 && !window_covers(first.max(0) as usize, self.n_swa, held) {
                // A decode that failed part-way can have moved the window on.
                let why = format!("its window starts at position {first}, past what position {held} attends to");
                self.reset_slot(i, &why);
            }
        }
    }

    /// Empties slot `i` (forgetting the saved sequence it was restored
    /// from, if any): its request reads its prompt again from the start,
    /// or fails alone when it had already generated.
    pub(super) fn reset_slot(&mut self, i: usize, why: &str) {
        tracing::warn!(seq = self.slots[i].seq, "slot cache unusable ({why}); emptied");
        self.forget_restored(i);
        self.empty_slot(i);
        let slot = &mut self.slots[i];
        let Some(active) = slot.active.as_mut() else { return };
        if active.generated == 0 && active.pending.is_none() {
            active.cached_tokens = 0;
            active.logits_at = None;
            return;
        }
        if let Some(active) = slot.active.take() {
            let _ = active.tx.send(GenerationEvent::Failed(format!("the slot's KV cache was lost mid-generation ({why})")));
        }
        self.publish_stats();
    }

    /// A decode failed. When slots restored from the host cache were in
    /// the batch, they are the suspects: they are emptied (their saved
    /// sequences forgotten) and read their prompts again, and the others
    /// are put back as they were, to go on at the next step. Otherwise the
    /// batch's requests fail.
    pub(super) fn decode_failed(&mut self, message: &str, before: &[Before]) {
        let suspects: Vec<usize> = before.iter().map(|b| b.slot).filter(|&i| self.slots[i].restored.is_some()).collect();
        if suspects.is_empty() {
            self.fail_batch(message, before);
            return;
        }
        for b in before {
            let slot = &mut self.slots[b.slot];
            slot.cached.truncate(b.held);
            if let (Some(token), Some(active)) = (b.pending, slot.active.as_mut()) {
                active.pending = Some(token);
            }
            if let Some(active) = slot.active.as_mut() {
                active.logits_at = None;
            }
            let _ = self.ctx.kv_cache_seq_rm(slot.seq, Some(b.held as u32), None);
        }
        for i in suspects {
            self.reset_slot(i, message);
        }
    }

    /// Empties slot `i`: its sequence, its tokens, its checkpoints and where
    /// they were restored from.
    pub(super) fn empty_slot(&mut self, i: usize) {
        let _ = self.ctx.kv_cache_seq_rm(self.slots[i].seq, None, None);
        let slot = &mut self.slots[i];
        slot.cached.clear();
        slot.clear_checkpoints();
        slot.restored = None;
    }

    /// Takes the checkpoints slot `i`'s read has reached (its plan's points
    /// at the tokens it now holds); drops points it has passed.
    pub(super) fn checkpoints_due(&mut self, i: usize) {
        let held = self.slots[i].cached.len();
        let Some(active) = self.slots[i].active.as_mut() else { return };
        if active.generated > 0 || active.follows.is_some() {
            return;
        }
        active.checkpoint_at.retain(|&p| p >= held);
        if active.checkpoint_at.first() == Some(&held) {
            active.checkpoint_at.remove(0);
            self.take_checkpoint(i);
        }
    }

    /// A failed decode leaves the KV cache of this batch's sequences unknown:
    /// fail their requests and clear their caches. Slots not in the batch
    /// go on.
    pub(super) fn fail_batch(&mut self, message: &str, batch: &[Before]) {
        tracing::error!("{message}");
        let mut failed = Vec::new();
        for b in batch {
            failed.extend(self.slots[b.slot].active.take().map(|a| a.tx));
            self.empty_slot(b.slot);
        }
        self.publish_stats();
        for tx in failed {
            let _ = tx.send(GenerationEvent::Failed(message.to_string()));
        }
    }
}
