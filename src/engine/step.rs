//! What one engine step decodes, as a pure function: `plan_step` looks at
//! each sequence slot and returns the parts of the next batch. The llama.cpp
//! worker only carries the plan out (fills the batch, decodes, samples), so
//! the batching rules are tested here without a model.
//!
//! The rules: the pending token of every generating sequence first (one token
//! each keeps their latency flat), then their drafts (speculative decoding,
//! `spec.rs`) in slot order, cut to the room left, then prompt chunks in slot
//! order in the room left, each at most `prefill_cap` tokens and never past the point
//! where its read pauses for a checkpoint; never more than `n_batch`
//! tokens in all (a larger batch aborts llama.cpp). A slot asks for logits
//! when its part ends its prompt, or for its pending token and each drafted one.

/// A slot as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotView {
    /// No request, or one with nothing to decode now.
    Idle,
    /// Reading its prompt: `done` of `len` tokens are in the KV cache, and
    /// this step reads no further than `until` (a checkpoint is taken there).
    Prefill { done: usize, until: usize, len: usize },
    /// Generating: one sampled token waits to be decoded, and `drafts`
    /// drafted tokens could follow it.
    Generate { drafts: usize },
}

/// What one slot puts in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Its pending token and the first `drafts` of its draft (logits
    /// wanted for each).
    Pending { slot: usize, drafts: usize },
    /// Prompt tokens `from..to`; logits wanted when `to` ends the prompt.
    Prompt { slot: usize, from: usize, to: usize, logits: bool },
}

impl Part {
    pub fn tokens(&self) -> usize {
        match *self {
            Part::Pending { drafts, .. } => 1 + drafts,
            Part::Prompt { from, to, .. } => to - from,
        }
    }
}

/// The next batch, in the order its tokens are added.
pub fn plan_step(slots: &[SlotView], n_batch: usize, prefill_cap: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut used = 0;
    for (slot, view) in slots.iter().enumerate() {
        if matches!(view, SlotView::Generate { .. }) && used < n_batch {
            parts.push(Part::Pending { slot, drafts: 0 });
            used += 1;
        }
    }
    for part in parts.iter_mut() {
        let Part::Pending { slot, drafts } = part else { continue };
        let SlotView::Generate { drafts: wanted } = slots[*slot] else { continue };
        *drafts = wanted.min(n_batch - used);
        used += *drafts;
    }
    for (slot, view) in slots.iter().enumerate() {
        let SlotView::Prefill { done, until, len } = *view else { continue };
        let take = (until.min(len) - done.min(until.min(len))).min(n_batch - used).min(prefill_cap);
        if take == 0 {
            continue;
        }
        parts.push(Part::Prompt { slot, from: done, to: done + take, logits: done + take == len });
        used += take;
    }
    parts
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
