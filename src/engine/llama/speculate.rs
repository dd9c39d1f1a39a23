//! Sampling a slot after a decode, with speculative drafts (`engine::spec`
//! decides them): the slot's pending token was decoded with up to `n`
//! drafted tokens after it, each with logits. Position 0 is sampled as
//! without a draft; while the sampled token equals the drafted one, that
//! drafted token's KV (computed in the same decode) is the right one and the
//! next position is sampled too. The first token that differs becomes the
//! pending token, and the KV of the drafted tokens after the last accepted
//! one is removed. Every emitted token is one draw of the request's own
//! sampler from the model's logits, in order, so the output (greedy or
//! sampled, with a grammar or not) is what it would be without drafts.

use llama_cpp_2::token::LlamaToken;

use super::worker::Worker;
use crate::engine::spec::ngram_simple;
use crate::types::SpecType;
use crate::engine::{EventSender, FinishReason, GenerationEvent, Usage};

/// A finished request's last events, sent once the freed slots are published.
pub(super) type Finished = (EventSender, String, GenerationEvent);

impl Worker<'_> {
    /// Drafts slot `i`'s next tokens into its `draft` and returns how many:
    /// none when speculation is off, the pace says wait, or nothing repeats.
    /// An n-gram draft is as long as the pace allows, or as the repeat it
    /// continues has lasted when that is longer (`Pace::limit`).
    /// A draft never reaches past the request's `max_tokens` or the slot's
    /// context (a step with a draft never shifts the context).
    pub(super) fn plan_draft(&mut self, i: usize) -> usize {
        let n_ctx_slot = self.n_ctx_slot;
        let can_draft = self.can_draft;
        let slot = &mut self.slots[i];
        let Some(active) = slot.active.as_mut() else { return 0 };
        let spec = active.spec;
        active.draft.clear();
        let Some(pending) = active.pending.filter(|_| can_draft && spec.enabled()) else { return 0 };
        let mut cap = spec.n_max().min(n_ctx_slot.saturating_sub(slot.cached.len() + 3));
        if let Some(max) = active.max_tokens {
            cap = cap.min(max.saturating_sub(active.generated).saturating_sub(1) as usize);
        }
        let limit = active.pace.limit(cap, 0, spec.n_min());
        if limit == 0 || cap < spec.n_min() {
            return 0;
        }
        match spec.kind {
            SpecType::DraftSimple => {
                let Some(drafter) = self.drafter.as_mut().filter(|d| d.payoff.drafting()) else { return 0 };
                slot.cached.push(pending);
                let draft = drafter.draft(slot.seq as usize, &slot.cached, limit, spec.p_min());
                slot.cached.pop();
                active.draft = draft;
            }
            _ => {
                active.history.clear();
                active.history.extend(slot.cached.iter().map(|t| t.0 as u32));
                active.history.push(pending.0 as u32);
                let found = ngram_simple(&active.history, spec.size_n(), cap);
                let take = found.draft.len().min(active.pace.limit(cap, found.support, spec.n_min()));
                active.draft = found.draft[..take].iter().map(|&t| LlamaToken(t as i32)).collect();
            }
        }
        if active.draft.len() < spec.n_min().max(1) {
            active.draft.clear();
            return 0;
        }
        active.draft.len()
    }

    /// A step begins: when it may draft with the draft model, its start, so
    /// that `timed_step_ended` can tell the payoff what it gave.
    pub(super) fn timed_step(&mut self) -> Option<std::time::Instant> {
        self.emitted = 0;
        let drafter = self.drafter.as_mut()?;
        drafter.read = 0;
        let drafting = self.slots.iter().filter_map(|s| s.active.as_ref()).any(|a| a.spec.kind == SpecType::DraftSimple && a.pending.is_some());
        drafting.then(std::time::Instant::now)
    }

    /// The step that began at `started` emitted `self.emitted` tokens;
    /// steps that also read a prompt are left out (see `Payoff`): the
    /// model's, or one the draft model read to catch up (its first draft
    /// for a request, after a context shift or a pause).
    pub(super) fn timed_step_ended(&mut self, started: Option<std::time::Instant>, read_prompt: bool) {
        /// A catch-up longer than this read a prompt.
        const LONG_READ: usize = 64;
        let (Some(started), Some(drafter)) = (started, self.drafter.as_mut()) else { return };
        if read_prompt || self.emitted == 0 || drafter.read > LONG_READ {
            return;
        }
        let was = drafter.payoff.drafting();
        drafter.payoff.record(self.emitted, started.elapsed().as_secs_f64());
        if was != drafter.payoff.drafting() {
            let (with, without) = drafter.payoff.rates();
            tracing::debug!(drafting = drafter.payoff.drafting(), ?with, ?without, "draft model payoff: tokens per second with and without drafts");
        }
    }

    /// Samples slot `i` after a decode that gave it logits (see the module
    /// notes); a request that ends is added to `finished`.
    pub(super) fn sample_slot(&mut self, i: usize, finished: &mut Vec<Finished>) {
        let n_ctx_slot = self.n_ctx_slot;
        let shift_keep = self.shift_keep;
        let vocab = self.model.vocab();
        let slot = &mut self.slots[i];
        let Some(active) = slot.active.as_mut() else { return };
        let n_max = active.spec.n_max();
        let Some(idx) = active.logits_at.take() else { return };
        let draft = std::mem::take(&mut active.draft);
        // The drafted tokens' KV is in the cache; `cached` lists each once accepted.
        let base = slot.cached.len() - draft.len();
        slot.cached.truncate(base);
        let mut outcome = None;
        let mut gone = false;
        for j in 0..=draft.len() {
            let at = idx + j as i32;
            let post = active.logprobs.and_then(|(n, post)| post.then_some(n as usize));
            let (token, post) = active.sampler.sample(&self.ctx, at, post);
            active.pace.generated();
            self.emitted += 1;
            if vocab.is_eog(token) {
                outcome = Some(FinishReason::Stop);
                break;
            }
            active.generated += 1;
            let keep_special = &active.keep_special;
            let piece_of = |t| {
                let mut bytes = Vec::new();
                vocab.token_to_piece_into(t, &mut bytes, keep_special.contains(&t), None);
                bytes
            };
            let piece = piece_of(token);
            if let Some((top, _)) = active.logprobs {
                let lp = match post {
                    Some(post) => super::sampler::post_logprob(post, token, piece.clone(), piece_of),
                    None => super::sampler::token_logprob(self.ctx.get_logits_ith(at), token, piece.clone(), top as usize, piece_of),
                };
                let _ = active.tx.send(GenerationEvent::Logprob(lp));
            }
            let pushed = active.text.push(&piece);
            if !pushed.text.is_empty() && active.tx.send(GenerationEvent::Text(pushed.text)).is_err() {
                gone = true;
                break;
            }
            if let Some(index) = pushed.stopped {
                outcome = Some(FinishReason::StopSequence(index.min(u16::MAX as usize) as u16));
                break;
            }
            if active.max_tokens.is_some_and(|m| active.generated >= m)
                || (slot.cached.len() + 1 >= n_ctx_slot
                    && !super::shift::make_room(&mut self.ctx, slot.seq, &mut slot.cached, &mut slot.checkpoints, &mut slot.marks, &mut slot.shifted, shift_keep.filter(|_| active.max_tokens.is_some())))
            {
                outcome = Some(FinishReason::Length);
                break;
            }
            if draft.get(j) == Some(&token) {
                // Its KV is already there: go on to the next position.
                slot.cached.push(token);
                continue;
            }
            active.pending = Some(token);
            break;
        }
        let accepted = slot.cached.len() - base;
        // The rejected drafts' KV (a shift never happens in a step with a
        // draft: `plan_draft` keeps it clear of the context's end).
        let removed = accepted == draft.len() || self.ctx.kv_cache_seq_rm(slot.seq, Some(slot.cached.len() as u32), None).is_ok();
        if !draft.is_empty() {
            active.pace.drafted(draft.len(), accepted, n_max);
            active.drafted.drafted += draft.len() as u32;
            active.drafted.accepted += accepted as u32;
            crate::metrics::global().llamacpp.drafted(draft.len(), accepted);
        }
        if !removed {
            // A memory that cannot drop a tail (the init check should have
            // kept drafts off it): the sequence is no longer what it says.
            self.can_draft = false;
            self.reset_slot(i, "its memory cannot remove rejected drafted tokens");
            return;
        }
        let slot = &mut self.slots[i];
        if gone {
            slot.active = None;
            return;
        }
        let Some(finish_reason) = outcome else { return };
        if let Some(mut done) = slot.active.take() {
            // Text held back as a possible stop-string start is real output.
            let rest = done.text.finish();
            let usage = Usage {
                prompt_tokens: done.prompt.len() as u32,
                completion_tokens: done.generated,
                cached_tokens: done.cached_tokens,
                draft_tokens: done.drafted.drafted,
                draft_accepted: done.drafted.accepted,
            };
            finished.push((done.tx, rest, GenerationEvent::Done { finish_reason, usage }));
        }
    }
}
