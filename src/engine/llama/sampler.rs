//! The sampler chain for one request.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::engine::SamplingParams;

/// The sampler chain, in llama.cpp's usual order: bias, penalties, truncation,
/// temperature, then the pick (greedy at temperature 0).
pub(super) fn build_sampler(p: &SamplingParams, n_vocab: i32, prompt: &[LlamaToken]) -> LlamaSampler {
    let mut chain = Vec::new();
    if !p.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> =
            p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t as i32), b)).collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    let penalties = p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
    if penalties {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.penalty_last_n,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed.unwrap_or(u32::MAX)));
    }
    let mut sampler = LlamaSampler::chain_simple(chain);
    if penalties {
        // The penalties look back over the prompt too, as llama-server does.
        let tail = prompt.len().saturating_sub(p.penalty_last_n.max(0) as usize);
        sampler.accept_many(&prompt[tail..]);
    }
    sampler
}
