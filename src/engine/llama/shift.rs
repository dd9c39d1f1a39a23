//! Context shift (`--context-shift`): a generation that fills its slot's
//! context goes on after the older half of the slot is dropped, as
//! llama-server's option does. The first `keep` tokens (BOS) stay; of the
//! rest, the first half leaves the KV cache and the second half moves down
//! to follow them. The slot's tokens then no longer match what their KV
//! entries saw, so the worker clears the slot when that generation ends
//! (no prefix reuse, no save to the host cache).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

/// How many tokens a shift drops from a slot holding `held`, keeping `keep`.
pub(super) fn discard_count(held: usize, keep: usize) -> usize {
    held.saturating_sub(keep) / 2
}

/// Shifts sequence `seq` (holding `cached`) in place; returns the tokens
/// dropped, or why it could not.
pub(super) fn shift(ctx: &mut LlamaContext, seq: i32, cached: &mut Vec<LlamaToken>, keep: usize) -> Result<usize, String> {
    let held = cached.len();
    let keep = keep.min(held);
    let discard = discard_count(held, keep);
    if discard == 0 {
        return Err(format!("nothing to drop (holding {held}, keeping {keep})"));
    }
    let (from, to) = (keep as u32, (keep + discard) as u32);
    ctx.kv_cache_seq_rm(seq, Some(from), Some(to)).map_err(|e| e.to_string())?;
    ctx.kv_cache_seq_add(seq, Some(to), None, -(discard as i32)).map_err(|e| e.to_string())?;
    cached.drain(keep..keep + discard);
    Ok(discard)
}

#[cfg(test)]
mod tests {
    use super::discard_count;

    #[test]
    fn a_shift_drops_half_of_what_follows_the_kept_tokens() {
        assert_eq!(discard_count(64, 1), 31);
        assert_eq!(discard_count(64, 0), 32);
        assert_eq!(discard_count(3, 1), 1);
        assert_eq!(discard_count(1, 1), 0);
        assert_eq!(discard_count(0, 1), 0);
    }
}

/// The tokens a shift keeps, when `--context-shift` is on and the context's
/// memory can shift (`None`: slots that fill up end with `length`).
pub(super) fn keep(enabled: bool, ctx: &LlamaContext, info: &crate::engine::ModelInfo) -> Option<usize> {
    if !enabled {
        return None;
    }
    if !ctx.kv_cache_can_shift() {
        tracing::warn!("--context-shift: this model's memory cannot shift positions; full slots end with `length`");
        return None;
    }
    Some(usize::from(info.add_bos))
}

/// In the decode loop, for a slot whose context is full: shifts it when
/// `keep` allows, marking it `shifted` and dropping its checkpoints.
/// False when the generation must end instead.
pub(super) fn make_room(
    ctx: &mut LlamaContext,
    seq: i32,
    cached: &mut Vec<LlamaToken>,
    checkpoints: &mut Vec<super::saved::Checkpoint>,
    marks: &mut Vec<usize>,
    shifted: &mut bool,
    keep: Option<usize>,
) -> bool {
    let Some(keep) = keep else { return false };
    match shift(ctx, seq, cached, keep) {
        Ok(dropped) => {
            tracing::debug!(seq, dropped, held = cached.len(), "context shift");
            checkpoints.clear();
            marks.clear();
            *shifted = true;
            true
        }
        Err(e) => {
            tracing::warn!(seq, "context shift failed, ending with `length`: {e}");
            false
        }
    }
}

impl super::worker::Worker<'_> {
    /// Idle slots that were shifted are emptied before any reuse: their
    /// tokens are not a prefix of what their KV entries hold.
    pub(super) fn clear_shifted(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.shifted && s.active.is_none()) {
            if let Err(e) = self.ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None) {
                tracing::warn!(seq = slot.seq, "clearing a shifted slot failed: {e}");
            }
            slot.cached.clear();
            slot.shifted = false;
        }
    }
}
