//! The worker thread: owns the `LlamaContext`, takes commands, admits
//! requests into sequence slots (longest cached prefix first), and runs one
//! step at a time: `plan_step` decides the batch, this file fills it,
//! decodes and samples.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use super::saved::Checkpoint;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::engine::text::TextStream;
use crate::engine::{EventSender, GenerationEvent, GenerationRequest, LoadTimings, ModelInfo};

use super::fork::PendingCopy;
use super::recover::Before;
use super::sampler::build_sampler;
use crate::engine::slots::{choose_slot, reusable, Choice, SlotCache};
use crate::engine::step::{plan_step, Part, SlotView};
use super::*;

/// Why generations fail once the model's file was cut short under it.
pub(crate) const FILE_CHANGED: &str =
    "the model file was truncated or overwritten on disk while loaded (replace model files with a rename, not in place); the model is reloaded for the next request";

pub(super) fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

pub(super) type Ready = Result<(Arc<weights::Weights>, ModelInfo, u64, LoadTimings), String>;

/// This process's resident memory in bytes (Linux; 0 elsewhere).
pub(super) fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub(super) fn worker_main(
    options: LoadOptions,
    identity: String,
    reused: Option<Arc<weights::Weights>>,
    progress: crate::types::Progress,
    ready: std_mpsc::Sender<Ready>,
    commands: std_mpsc::Receiver<Command>,
    stats: Arc<Stats>,
) {
    let started = std::time::Instant::now();
    let loaded = match load_model(&options, progress, reused) {
        Ok(loaded) => loaded,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            return;
        }
    };
    let (model, mut info, ctx_params) = loaded;
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // The draft model (if any) loads with the model and counts in its memory.
    let draft = match super::drafter::load(&options, &model.model) {
        Ok(draft) => draft,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    info.draft = draft.as_ref().map(|d| d.in_use());
    let weights_ms = started.elapsed().as_millis() as u64;
    let before = resident_bytes();
    let context_started = std::time::Instant::now();
    let pooling = crate::engine::embed::choose_pooling(options.knobs.pooling, super::embed::gguf_pooling(&model));
    let embedder = super::embed::Embedder::new(super::embed::embed_params(&ctx_params, info.n_ctx_embed, pooling), info.n_ctx_embed, info.n_vocab);
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot create context: {e}")));
            return;
        }
    };
    tracing::info!(
        model = %options.path.display(),
        n_ctx_slot = info.n_ctx_slot,
        parallel = info.parallel,
        n_batch = ctx.n_batch(),
        "model loaded"
    );
    let context_bytes = resident_bytes().saturating_sub(before);
    let before_draft = resident_bytes();
    let drafter = match super::drafter::Drafter::start(draft.as_ref(), info.parallel as usize) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // The draft model's weights and context count as this model's.
    let context_bytes = context_bytes + draft.as_ref().map_or(0, |d| d.bytes(before_draft));
    let timings = LoadTimings { weights_ms, context_ms: context_started.elapsed().as_millis() as u64 };
    let store = options.kv_store.clone().map(|store| (store, super::saved::store_key(&identity, &info, &options)));
    let n_swa = info.n_swa as usize;
    let shift_keep = super::shift::keep(options.knobs.context_shift, &ctx, &info);
    let max_checkpoints = options.knobs.ctx_checkpoints.map_or(crate::engine::checkpoints::DEFAULT_PER_SLOT, |n| n as usize);
    let mut worker = Worker::new(&model, ctx, &info, stats, store, (n_swa, max_checkpoints), shift_keep, embedder);
    worker.spec = options.knobs.spec;
    worker.drafter = drafter;
    if worker.spec.enabled() && !worker.can_draft {
        tracing::warn!(model = %options.path.display(), "speculative decoding is off for this model: its memory (recurrent or hybrid) cannot drop rejected drafts");
    }
    worker.publish_stats();
    if ready.send(Ok((model.clone(), info, context_bytes, timings))).is_err() {
        return;
    }
    worker.run(&commands);
    // Unloading: what the slots hold outlives the model in the host cache,
    // with its checkpoints (a follow-up of a windowed sequence's prompt,
    // not of its answer, resumes from the one at the prompt's end); nothing
    // computed after the file vanished under the weights is kept.
    if !worker.mappings.faulted() {
        for i in 0..worker.slots.len() {
            worker.save_slot(i);
        }
    }
}

/// Fewer cached tokens than this are not worth a save or a restore.
pub(super) const MIN_SAVED_TOKENS: usize = 32;

/// One request occupying a sequence slot.
pub(super) struct Active {
    pub(super) tx: EventSender,
    pub(super) prompt: Vec<LlamaToken>,
    pub(super) sampler: super::sampler::RequestSampler,
    pub(super) text: TextStream,
    pub(super) max_tokens: Option<u32>,
    /// Alternatives to report with each token's log-probability, and
    /// whether it is the chain's (post-sampling) probability.
    pub(super) logprobs: Option<(u32, bool)>,
    /// Special tokens written out as text.
    pub(super) keep_special: Vec<LlamaToken>,
    pub(super) generated: u32,
    /// Prompt tokens found in the slot's cache (not decoded again).
    pub(super) cached_tokens: u32,
    /// `return_progress`: when it took its slot (see `progress.rs`).
    pub(super) progress_since: Option<std::time::Instant>,
    /// Sampled but not yet decoded; `None` while the prompt is prefilling.
    pub(super) pending: Option<LlamaToken>,
    /// Index of this sequence's logits in the batch just decoded.
    pub(super) logits_at: Option<i32>,
    /// Waits for the slot at this index, which reads the same prompt, to
    /// copy its KV here (see `fork.rs`).
    pub(super) follows: Option<usize>,
    /// Sliding-window models: where the prompt's read takes checkpoints
    /// (`checkpoints::plan`), ascending; each is dropped once taken.
    pub(super) checkpoint_at: Vec<usize>,
    /// Speculative decoding (speculate.rs): this step's drafted tokens, how
    /// long the next draft may be, what was drafted and accepted so far, and
    /// a buffer for the tokens the lookup searches.
    pub(super) draft: Vec<LlamaToken>,
    pub(super) pace: crate::engine::spec::Pace,
    pub(super) drafted: crate::engine::spec::DraftCounts,
    pub(super) history: Vec<u32>,
    /// The model's speculation settings with the request's on top.
    pub(super) spec: crate::types::SpecConfig,
}

pub(super) struct Slot {
    pub(super) seq: i32,
    /// Tokens whose KV entries this slot's sequence holds: a prefix cache for
    /// the next request (multi-turn chats resend the whole conversation).
    pub(super) cached: Vec<LlamaToken>,
    pub(super) active: Option<Active>,
    /// The worker's `uses` count when this slot last took a request.
    pub(super) last_used: u64,
    /// Sliding-window models without `--swa-full`: the window's state at
    /// points of the sequence, shortest first, so a later prompt that leaves
    /// it there can cut it back (see `prefix.rs`); `marks` are their lengths.
    pub(super) checkpoints: Vec<Checkpoint>,
    pub(super) marks: Vec<usize>,
    /// The saved sequence this slot's KV was restored from, until a decode
    /// on it succeeds: forgotten if one fails.
    pub(super) restored: Option<Arc<Vec<u32>>>,
    /// A context shift dropped part of this slot: its tokens no longer match
    /// their KV entries, so it is cleared before reuse (see `shift`).
    pub(super) shifted: bool,
    /// A KV copy from or into this slot waits in llama.cpp for the next
    /// decode (see `fork.rs`): until then its state is not written (nor
    /// read, for the copy's destination).
    pub(super) copy: PendingCopy,
}

pub(super) struct Worker<'m> {
    pub(super) model: &'m LlamaModel,
    /// Says when the model's file was truncated under its mapping.
    mappings: &'m super::mapguard::MapGuard,
    /// llguidance's view of the vocabulary (`%llguidance` grammars).
    llg: &'m super::llg::Vocab,
    /// The model's end-of-generation tokens (`Weights::eog`).
    weights: &'m weights::Weights,
    pub(super) ctx: LlamaContext<'m>,
    pub(super) slots: Vec<Slot>,
    pub(super) queue: VecDeque<(GenerationRequest, EventSender)>,
    pub(super) batch: LlamaBatch<'static>,
    pub(super) n_batch: usize,
    pub(super) n_ctx_slot: usize,
    pub(super) stats: Arc<Stats>,
    /// Requests admitted so far (orders slots by last use).
    pub(super) uses: u64,
    /// Positions the sliding-window layers keep (`--swa-full` off); 0 when
    /// there is no window. Checkpoints make a windowed cache cuttable.
    pub(super) n_swa: usize,
    /// Checkpoints a slot keeps (`--ctx-checkpoints`).
    pub(super) max_checkpoints: usize,
    /// The host KV cache and this model's key in it.
    pub(super) store: Option<(crate::engine::SharedKvStore, String)>,
    /// `--context-shift` on a memory that can shift: the tokens kept (BOS).
    pub(super) shift_keep: Option<usize>,
    /// Embedding requests and their context (see `embed.rs`).
    embedder: super::embed::Embedder<'m>,
    /// Speculative decoding's settings (`--spec-type`, see speculate.rs),
    /// and whether the memory can drop rejected drafts (not recurrent or
    /// hybrid models, whose state cannot be cut back to a position).
    pub(super) spec: crate::types::SpecConfig,
    pub(super) can_draft: bool,
    /// The draft model (`draft-simple`), when the model has one, and the
    /// tokens the current step emitted (for its payoff).
    pub(super) drafter: Option<super::drafter::Drafter<'m>>,
    pub(super) emitted: u64,
}

impl<'m> Worker<'m> {
    fn new(
        weights: &'m weights::Weights,
        ctx: LlamaContext<'m>,
        info: &ModelInfo,
        stats: Arc<Stats>,
        store: Option<(crate::engine::SharedKvStore, String)>,
        (n_swa, max_checkpoints): (usize, usize),
        shift_keep: Option<usize>,
        embedder: super::embed::Embedder<'m>,
    ) -> Self {
        let n_batch = ctx.n_batch() as usize;
        let slots = (0..info.parallel as i32)
            .map(|seq| Slot {
                seq,
                cached: Vec::new(),
                active: None,
                last_used: 0,
                checkpoints: Vec::new(),
                marks: Vec::new(),
                restored: None,
                shifted: false,
                copy: PendingCopy::None,
            })
            .collect();
        Self {
            model: &weights.model,
            mappings: &weights.guard,
            llg: &weights.llg,
            weights,
            ctx,
            slots,
            queue: VecDeque::new(),
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_ctx_slot: info.n_ctx_slot as usize,
            stats,
            uses: 0,
            n_swa,
            max_checkpoints,
            store,
            shift_keep,
            embedder,
            spec: Default::default(),
            can_draft: !(weights.model.is_recurrent() || weights.model.is_hybrid()),
            drafter: None,
            emitted: 0,
        }
    }

    fn run(&mut self, commands: &std_mpsc::Receiver<Command>) {
        loop {
            let idle = self.queue.is_empty() && self.slots.iter().all(|s| s.active.is_none()) && self.embedder.is_idle();
            if idle {
                match commands.recv() {
                    Ok(cmd) => {
                        if !self.accept(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.accept(cmd) {
                            return;
                        }
                    }
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.drop_cancelled();
            if self.mappings.faulted() {
                // Zero pages replaced the file's vanished part (mapguard.rs):
                // nothing this model computes now is right. The scheduler
                // unloads it once these requests are gone.
                self.cancel_all(FILE_CHANGED);
                continue;
            }
            self.admit();
            self.step();
            self.embedder.step(self.model);
            self.publish_stats();
        }
    }

    /// Takes one command; false means shut down.
    fn accept(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate(requests) => {
                self.queue.extend(requests);
                true
            }
            Command::Embed(inputs, tx) => {
                self.embedder.push(inputs, tx);
                true
            }
            Command::CancelAll => {
                self.cancel_all("cancelled: the model is being unloaded");
                true
            }
            Command::Shutdown => {
                self.cancel_all("the server is shutting down");
                false
            }
        }
    }

    /// Ends every running and pending generation on purpose (an unload or
    /// shutdown, not an engine failure).
    fn cancel_all(&mut self, reason: &str) {
        let mut cancelled: Vec<EventSender> = self.slots.iter_mut().filter_map(|s| s.active.take()).map(|a| a.tx).collect();
        cancelled.extend(self.queue.drain(..).map(|(_, tx)| tx));
        self.embedder.cancel_all(reason);
        self.publish_stats();
        for tx in cancelled {
            let _ = tx.send(GenerationEvent::Cancelled(reason.to_string()));
        }
    }

    pub(super) fn publish_stats(&self) {
        let busy = self.slots.iter().filter(|s| s.active.is_some()).count() as u32;
        self.stats.busy.store(busy, Ordering::Relaxed);
        self.stats.queued.store(self.queue.len() as u32, Ordering::Relaxed);
        *self.stats.slots.lock() = self
            .slots
            .iter()
            .enumerate()
            .map(|(id, s)| crate::engine::SlotView { id: id as u32, is_processing: s.active.is_some(), n_cached: s.cached.len() as u32 })
            .collect();
    }

    /// Frees the slots of clients that went away (their receiver was dropped).
    fn drop_cancelled(&mut self) {
        self.queue.retain(|(_, tx)| !tx.is_closed());
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                tracing::debug!(seq = slot.seq, "client went away; freeing slot");
                slot.active = None;
            }
        }
    }

    /// Moves queued requests into free slots, preferring the slot whose cached
    /// tokens share the longest prefix with the prompt.
    fn admit(&mut self) {
        self.clear_shifted();
        while !self.queue.is_empty() {
            let Some((req, tx)) = self.queue.pop_front() else { break };
            if req.prompt.is_empty() || req.prompt.len() >= self.n_ctx_slot {
                // The HTTP layer rejects these; this guards llama.cpp against them.
                let _ = tx.send(GenerationEvent::Failed(format!(
                    "prompt of {} tokens does not fit a context of {}",
                    req.prompt.len(),
                    self.n_ctx_slot
                )));
                continue;
            }
            let prompt: Vec<LlamaToken> = req.prompt.iter().map(|&t| LlamaToken(t as i32)).collect();
            let views: Vec<SlotCache<'_, LlamaToken>> = self
                .slots
                .iter()
                .map(|s| SlotCache {
                    free: s.active.is_none(),
                    cached: &s.cached,
                    last_used: s.last_used,
                    window: self.window_of(s),
                })
                .collect();
            // Without the cache, the slot an unrelated prompt would take.
            let key: &[LlamaToken] = if req.cache_prompt { &prompt } else { &[] };
            let Some(Choice { slot: i, reuse }) = choose_slot(&views, key) else {
                self.queue.push_front((req, tx));
                break;
            };
            let model = self.model;
            let eog: &[LlamaToken] = if req.sampling.ignore_eos { self.weights.eog() } else { &[] };
            let sampler = match build_sampler(&req.sampling, model, self.llg, self.n_ctx_slot as u32, eog, &prompt) {
                Ok(sampler) => sampler,
                Err(e) => {
                    let _ = tx.send(GenerationEvent::Failed(e));
                    continue;
                }
            };
            self.uses += 1;
            self.slots[i].last_used = self.uses;
            // Another slot reading this very prompt (the `n` choices of a
            // request): wait for it and copy its KV, unless reading is cheap.
            let follows = if req.cache_prompt { self.prompt_reader(&prompt, reuse) } else { None };
            // Where this prompt leaves what the slot (or a saved sequence)
            // held is where the next one may leave it too: a checkpoint there.
            let mut hints: Vec<usize> = req.branch_points.iter().map(|&p| p as usize).collect();
            self.slots[i].restored = None;
            if !req.cache_prompt {
                if self.slots[i].cached.len() >= MIN_SAVED_TOKENS {
                    self.save_slot(i);
                }
            } else if follows.is_none() {
                hints.push(reusable(&self.slots[i].cached, &prompt));
                hints.extend(self.from_host_cache(i, &req.prompt, reuse));
            } else if self.slots[i].cached.len() >= reuse + MIN_SAVED_TOKENS {
                // The shared prompt's KV replaces what the slot holds.
                self.save_slot(i);
            }
            let reuse = self.cut_for(i, if req.cache_prompt { &prompt } else { &[] });
            let checkpoint_at = if follows.is_some() { Vec::new() } else { self.plan_checkpoints(i, prompt.len(), &hints) };
            super::progress::started(&tx, prompt.len(), reuse);
            self.slots[i].active = Some(Active {
                tx,
                prompt,
                sampler,
                text: TextStream::new(req.stop),
                max_tokens: req.max_tokens,
                logprobs: req.logprobs.map(|n| (n, req.post_sampling_probs)),
                keep_special: req.keep_special.iter().map(|&t| LlamaToken(t as i32)).collect(),
                generated: 0,
                cached_tokens: reuse as u32,
                progress_since: req.return_progress.then(std::time::Instant::now),
                pending: None,
                logits_at: None,
                follows,
                checkpoint_at,
                draft: Vec::new(),
                pace: Default::default(),
                drafted: Default::default(),
                history: Vec::new(),
                spec: self.spec.with(req.speculative),
            });
            self.checkpoints_due(i);
        }
    }

    /// Decodes the batch `plan_step` chose and samples every sequence that
    /// produced logits.
    fn step(&mut self) {
        self.orphan_followers();
        self.check_slots();
        let started = self.timed_step();
        let drafts: Vec<usize> = (0..self.slots.len()).map(|i| self.plan_draft(i)).collect();
        let views: Vec<SlotView> = self
            .slots
            .iter()
            .zip(drafts)
            .map(|(slot, drafts)| match &slot.active {
                Some(a) if a.follows.is_some() => SlotView::Idle,
                Some(a) if a.pending.is_some() => SlotView::Generate { drafts },
                Some(a) if a.generated == 0 => {
                    let len = a.prompt.len();
                    SlotView::Prefill { done: slot.cached.len(), until: a.checkpoint_at.first().copied().unwrap_or(len).min(len), len }
                }
                _ => SlotView::Idle,
            })
            .collect();
        // No per-slot prefill cap beyond the batch itself.
        let plan = plan_step(&views, self.n_batch, self.n_batch);
        let read_prompt = plan.iter().any(|p| matches!(p, Part::Prompt { .. }));
        self.batch.clear();
        for slot in &mut self.slots {
            if let Some(active) = slot.active.as_mut() {
                active.logits_at = None;
            }
        }
        // What each slot in the batch held before it, to undo a failed decode.
        let mut before: Vec<Before> = Vec::new();
        for part in plan {
            match part {
                Part::Pending { slot: i, drafts } => {
                    let slot = &mut self.slots[i];
                    let Some(active) = slot.active.as_mut() else { continue };
                    let Some(token) = active.pending.take() else { continue };
                    let pos = slot.cached.len() as i32;
                    active.logits_at = Some(self.batch.n_tokens());
                    if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                        // Cannot happen: the plan stays within n_batch. Put the token back.
                        active.pending = Some(token);
                        active.logits_at = None;
                        continue;
                    }
                    before.push(Before { slot: i, held: slot.cached.len(), pending: Some(token) });
                    slot.cached.push(token);
                    // The draft the plan took, each with logits (see speculate.rs).
                    active.draft.truncate(drafts);
                    for (j, &d) in active.draft.iter().enumerate() {
                        if self.batch.add(d, pos + 1 + j as i32, &[slot.seq], true).is_err() {
                            active.draft.truncate(j);
                            break;
                        }
                        slot.cached.push(d);
                    }
                }
                Part::Prompt { slot: i, from, to, logits } => {
                    let slot = &mut self.slots[i];
                    let Some(active) = slot.active.as_mut() else { continue };
                    before.push(Before { slot: i, held: slot.cached.len(), pending: None });
                    for at in from..to {
                        let last = logits && at + 1 == to;
                        if last {
                            active.logits_at = Some(self.batch.n_tokens());
                        }
                        let _ = self.batch.add(active.prompt[at], at as i32, &[slot.seq], last);
                        slot.cached.push(active.prompt[at]);
                    }
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            self.decode_failed(&format!("decode failed: {e}"), &before);
            return;
        }
        crate::metrics::global().llamacpp.decoded(before.len());
        super::progress::after_decode(&self.slots, &before, std::time::Instant::now());
        // The decode performed every pending KV copy first.
        for slot in &mut self.slots {
            slot.copy = PendingCopy::None;
        }
        for b in &before {
            self.slots[b.slot].restored = None;
            self.checkpoints_due(b.slot);
        }
        if self.mappings.faulted() {
            // The file vanished under this decode (mapguard.rs): what it
            // computed is neither sent nor kept.
            self.cancel_all(FILE_CHANGED);
            for i in 0..self.slots.len() {
                self.empty_slot(i);
            }
            return;
        }
        self.fork_followers();
        // Final events go out after the freed slots are published, so a client
        // that sees its answer also sees its slot free in `slot_stats`.
        let mut finished: Vec<super::speculate::Finished> = Vec::new();
        for i in 0..self.slots.len() {
            self.sample_slot(i, &mut finished);
        }
        if !finished.is_empty() {
            self.publish_stats();
        }
        for (tx, rest, done) in finished {
            if !rest.is_empty() {
                let _ = tx.send(GenerationEvent::Text(rest));
            }
            let _ = tx.send(done);
        }
        self.timed_step_ended(started, read_prompt);
    }
}
