//! Embeddings on the worker thread: a second context on the same weights,
//! created on the first embedding request, with embeddings on and the
//! model's pooling (`engine::embed::choose_pooling`). The worker calls
//! `step` once per loop, between generation steps: each call decodes one
//! batch of the oldest request's inputs (several inputs share a batch as
//! distinct sequences), so generations and embeddings interleave.

use std::collections::VecDeque;
use std::num::NonZeroU32;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::engine::embed::{next_group, normalize, EmbedError, EmbedSender, EMBED_SEQS};
use crate::engine::TokenId;
use crate::types::Pooling;

/// One request: its inputs and the vectors computed so far.
struct Job {
    inputs: Vec<Vec<TokenId>>,
    done: Vec<Vec<f32>>,
    tx: EmbedSender,
}

pub(super) struct Embedder<'m> {
    /// For the context, created on first use.
    params: LlamaContextParams,
    ctx: Option<LlamaContext<'m>>,
    batch: LlamaBatch<'static>,
    /// Tokens one decode (and one input) may hold.
    n_tokens: usize,
    n_vocab: u32,
    jobs: VecDeque<Job>,
}

/// The generation context's parameters, reshaped for embeddings: every
/// sequence of a decode in one micro-batch (pooling is per micro-batch),
/// one KV stream shared by the decode's sequences, which are cleared after it.
pub(super) fn embed_params(base: &LlamaContextParams, n_tokens: u32, pooling: Pooling) -> LlamaContextParams {
    base.clone()
        .with_n_ctx(NonZeroU32::new(n_tokens))
        .with_n_batch(n_tokens)
        .with_n_ubatch(n_tokens)
        .with_n_seq_max(EMBED_SEQS.min(n_tokens))
        .with_kv_unified(true)
        .with_embeddings(true)
        .with_pooling_type(match pooling {
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
            Pooling::None => LlamaPoolingType::None,
        })
}

/// `{arch}.pooling_type` from the GGUF, if it has one.
pub(super) fn gguf_pooling(model: &LlamaModel) -> Option<i64> {
    let arch = model.meta_val_str("general.architecture").ok()?;
    model.meta_val_str(&format!("{arch}.pooling_type")).ok()?.trim().parse().ok()
}

impl<'m> Embedder<'m> {
    pub(super) fn new(params: LlamaContextParams, n_tokens: u32, n_vocab: u32) -> Self {
        Self { params, ctx: None, batch: LlamaBatch::new(n_tokens as usize, 1), n_tokens: n_tokens as usize, n_vocab, jobs: VecDeque::new() }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    pub(super) fn push(&mut self, inputs: Vec<Vec<TokenId>>, tx: EmbedSender) {
        self.jobs.push_back(Job { done: Vec::with_capacity(inputs.len()), inputs, tx });
    }

    /// Ends every queued request with `reason` (an unload or shutdown).
    pub(super) fn cancel_all(&mut self, reason: &str) {
        for job in self.jobs.drain(..) {
            let _ = job.tx.send(Err(EmbedError::Cancelled(reason.to_string())));
        }
    }

    /// Decodes the next batch of the oldest request; answers it once its
    /// last input is done.
    pub(super) fn step(&mut self, model: &'m LlamaModel) {
        let Some(job) = self.jobs.front() else { return };
        if job.tx.is_closed() {
            self.jobs.pop_front();
            return;
        }
        match self.decode_next(model) {
            Ok(()) => {
                if self.jobs.front().is_some_and(|j| j.done.len() == j.inputs.len()) {
                    if let Some(job) = self.jobs.pop_front() {
                        let _ = job.tx.send(Ok(job.done));
                    }
                }
            }
            Err(message) => {
                tracing::error!("embedding failed: {message}");
                if let Some(job) = self.jobs.pop_front() {
                    let _ = job.tx.send(Err(EmbedError::Failed(message)));
                }
            }
        }
    }

    fn decode_next(&mut self, model: &'m LlamaModel) -> Result<(), String> {
        if self.ctx.is_none() {
            let backend = super::backend()?;
            let ctx = model.new_context(backend, self.params.clone()).map_err(|e| format!("cannot create the embeddings context: {e}"))?;
            tracing::info!(n_ctx = self.n_tokens, pooling = ?self.params.pooling_type(), "embeddings context created");
            self.ctx = Some(ctx);
        }
        let (Some(ctx), Some(job)) = (self.ctx.as_mut(), self.jobs.front_mut()) else { return Ok(()) };
        let lengths: Vec<usize> = job.inputs.iter().map(Vec::len).collect();
        let seqs = self.params.n_seq_max() as usize;
        let group = next_group(&lengths, job.done.len(), self.n_tokens, seqs);
        // The HTTP layer refuses these; this guards llama.cpp, which aborts on them.
        for input in &job.inputs[group.clone()] {
            if input.is_empty() || input.len() > self.n_tokens {
                return Err(format!("an input of {} tokens does not fit the embeddings context of {}", input.len(), self.n_tokens));
            }
            if input.iter().any(|&t| t >= self.n_vocab) {
                return Err("an input holds a token id outside the vocabulary".into());
            }
        }
        ctx.clear_kv_cache();
        self.batch.clear();
        for (seq, input) in job.inputs[group.clone()].iter().enumerate() {
            for (pos, &token) in input.iter().enumerate() {
                self.batch
                    // Every token is an output: llama.cpp pools them all (and warns otherwise).
                    .add(LlamaToken(token as i32), pos as i32, &[seq as i32], true)
                    .map_err(|e| e.to_string())?;
            }
        }
        ctx.decode(&mut self.batch).map_err(|e| format!("decode failed: {e}"))?;
        if self.params.pooling_type() == LlamaPoolingType::None {
            // A vector per token, the input's rows one after another, as
            // llama-server leaves them (unnormalized).
            let mut at = 0;
            for input in &job.inputs[group.clone()] {
                let mut rows = Vec::new();
                for i in at..at + input.len() {
                    rows.extend_from_slice(ctx.embeddings_ith(i as i32).map_err(|e| e.to_string())?);
                }
                at += input.len();
                job.done.push(rows);
            }
            return Ok(());
        }
        for seq in 0..group.len() {
            let mut vector = ctx.embeddings_seq_ith(seq as i32).map_err(|e| e.to_string())?.to_vec();
            normalize(&mut vector);
            job.done.push(vector);
        }
        Ok(())
    }
}
