//! Prompt-processing progress (llama-server's `return_progress`): one event
//! when a request takes its slot (what the cache already holds), and, when
//! the request asked, one after each decode that read part of its prompt.

use std::time::Instant;

use super::recover::Before;
use super::worker::Slot;
use crate::engine::{EventSender, GenerationEvent, PromptProgress};

/// The first event of every request: the cache already holds `cache` of its
/// `total` prompt tokens (the API layer times the answer with it).
pub(super) fn started(tx: &EventSender, total: usize, cache: usize) {
    let (total, cache) = (total as u32, cache.min(total) as u32);
    let _ = tx.send(GenerationEvent::Progress(PromptProgress { total, cache, processed: cache, time_ms: 0.0 }));
}

/// After a decode: each slot that read part of its prompt in it and asked
/// for progress hears how far it got and how long it took since it started.
pub(super) fn after_decode(slots: &[Slot], before: &[Before], now: Instant) {
    for b in before.iter().filter(|b| b.pending.is_none()) {
        let slot = &slots[b.slot];
        let Some(active) = &slot.active else { continue };
        let Some(since) = active.progress_since else { continue };
        let total = active.prompt.len();
        let _ = active.tx.send(GenerationEvent::Progress(PromptProgress {
            total: total as u32,
            cache: active.cached_tokens,
            processed: slot.cached.len().min(total) as u32,
            time_ms: now.saturating_duration_since(since).as_secs_f64() * 1e3,
        }));
    }
}
