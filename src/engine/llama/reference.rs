//! A fresh context's view of a token sequence: the oracle of the cache
//! differential test (tests/kv_cache.rs). A served answer came from KV
//! that slots, the host cache, the KV directory and shared prompts handed
//! on; here the same prompt and answer are read again in a context that
//! holds nothing else, and each answer token is scored as that context
//! sees it. Not used by the server.

use std::path::Path;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::engine::TokenId;

/// How a fresh context sees one answer token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The token the fresh context would pick greedily, and its log-probability.
    pub top: TokenId,
    pub top_logprob: f32,
    /// The served token's log-probability in the fresh context.
    pub logprob: f32,
}

impl Scored {
    /// How far below the fresh context's greedy pick the served token was
    /// (0 when it is that pick).
    pub fn margin(&self) -> f32 {
        self.top_logprob - self.logprob
    }
}

/// A model loaded for scoring (CPU, its own weights).
pub struct Reference {
    model: LlamaModel,
    threads: i32,
}

impl Reference {
    pub fn load(path: &Path, threads: u32) -> Result<Self, String> {
        let backend = super::backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default().with_n_gpu_layers(0)).map_err(|e| e.to_string())?;
        Ok(Self { model, threads: threads.max(1) as i32 })
    }

    /// Reads `prompt` then `answer` in a new context and scores each answer
    /// token against the logits before it.
    pub fn score(&self, prompt: &[TokenId], answer: &[TokenId]) -> Result<Vec<Scored>, String> {
        self.score_split(prompt, answer, &[])
    }

    /// [`Self::score`] with the reading also cut at `splits` (token
    /// positions): the same tokens in other batches, which llama.cpp's
    /// kernels round differently. What that alone moves is the noise any
    /// reuse of KV computed in other batches carries.
    pub fn score_split(&self, prompt: &[TokenId], answer: &[TokenId], splits: &[usize]) -> Result<Vec<Scored>, String> {
        if prompt.is_empty() {
            return Err("empty prompt".into());
        }
        let all: Vec<LlamaToken> = prompt.iter().chain(answer).map(|&t| LlamaToken(t as i32)).collect();
        let n_ctx = (all.len() as u32 + 16).next_multiple_of(256);
        let n_batch = 512u32;
        let params = LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = self.model.new_context(super::backend()?, params).map_err(|e| e.to_string())?;
        let n_vocab = self.model.n_vocab() as usize;
        // Logits are wanted from the last prompt token on: each predicts the next.
        let first_scored = prompt.len() - 1;
        let mut scored = Vec::with_capacity(answer.len());
        let mut batch = LlamaBatch::new(n_batch as usize, 1);
        let mut bounds: Vec<usize> = splits.iter().copied().filter(|&s| s > 0 && s < all.len()).collect();
        let mut at = 0;
        while at < all.len() {
            let next = bounds.iter().copied().filter(|&b| b > at).min().unwrap_or(all.len()).min(at + n_batch as usize);
            bounds.push(next);
            at = next;
        }
        bounds.sort_unstable();
        bounds.dedup();
        let chunks = bounds.iter().scan(0, |from, &to| {
            let chunk = (*from, &all[*from..to]);
            *from = to;
            Some(chunk)
        });
        for (start, chunk) in chunks {
            batch.clear();
            for (i, &token) in chunk.iter().enumerate() {
                let pos = start + i;
                let wanted = pos >= first_scored && pos + 1 < all.len();
                batch.add(token, pos as i32, &[0], wanted).map_err(|e| e.to_string())?;
            }
            ctx.decode(&mut batch).map_err(|e| e.to_string())?;
            for (i, _) in chunk.iter().enumerate() {
                let pos = start + i;
                if pos < first_scored || pos + 1 >= all.len() {
                    continue;
                }
                let logits = ctx.get_logits_ith(i as i32);
                scored.push(score_one(&logits[..n_vocab], all[pos + 1].0 as usize));
            }
        }
        Ok(scored)
    }
}

/// The log-softmax view of `logits` for `actual`.
fn score_one(logits: &[f32], actual: usize) -> Scored {
    let (top, max) = logits.iter().copied().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, l)| if l > best.1 { (i, l) } else { best });
    let log_sum = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    Scored { top: top as TokenId, top_logprob: max - log_sum, logprob: logits[actual] - log_sum }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greedy_pick_has_no_margin_and_another_token_its_gap() {
        let s = score_one(&[0.0, 2.0, 1.0], 1);
        assert_eq!(s.top, 1);
        assert_eq!(s.margin(), 0.0);
        let s = score_one(&[0.0, 2.0, 1.0], 2);
        assert!((s.margin() - 1.0).abs() < 1e-6);
        assert!(s.logprob < 0.0);
    }
}
