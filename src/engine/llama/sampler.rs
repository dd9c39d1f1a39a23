//! The sampler for one request: llama.cpp's sampler chain, plus a grammar
//! kept beside it (not in it) when the output is constrained.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::engine::SamplingParams;

/// A JSON schema as a GBNF grammar (root rule `root`), by llama.cpp's own
/// converter (`common/json-schema-to-grammar.cpp`). Needs no model.
pub fn json_schema_grammar(schema: &serde_json::Value) -> Result<String, String> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|_| {
        "llama.cpp's converter rejected it (unsupported keyword or malformed schema)".to_string()
    })
}

/// The grammar sampler for a GBNF `grammar` (root rule `root`).
fn grammar_sampler(model: &LlamaModel, grammar: &str) -> Result<LlamaSampler, String> {
    LlamaSampler::grammar(model, grammar, "root").map_err(|e| format!("grammar does not parse: {e}"))
}

/// Whether `grammar` parses against `model`'s vocabulary.
pub(super) fn grammar_parses(model: &LlamaModel, grammar: &str) -> Result<(), String> {
    grammar_sampler(model, grammar).map(drop)
}

/// `token`'s log-probability under the raw `logits` (log-softmax over the
/// whole vocabulary) and the `top` most likely tokens, most likely first.
/// `bytes` is the token's own text; `bytes_of` gives the alternatives'.
pub(super) fn token_logprob(
    logits: &[f32],
    token: LlamaToken,
    bytes: Vec<u8>,
    top: usize,
    bytes_of: impl Fn(LlamaToken) -> Vec<u8>,
) -> crate::engine::TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max as f64 + logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln();
    let logprob = |t: usize| (logits[t] as f64 - log_sum) as f32;
    let mut best: Vec<usize> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (t, &l) in logits.iter().enumerate() {
            if best.len() < top || l > logits[best[best.len() - 1]] {
                let at = best.partition_point(|&b| logits[b] >= l);
                best.insert(at, t);
                best.truncate(top);
            }
        }
    }
    let id = |t: usize| LlamaToken(t as i32);
    crate::engine::TokenLogprob {
        token: token.0 as crate::engine::TokenId,
        bytes,
        logprob: logprob(token.0 as usize),
        top: best.into_iter().map(|t| (t as crate::engine::TokenId, bytes_of(id(t)), logprob(t))).collect(),
    }
}

/// A request's sampler. With a grammar, the token the chain picks is checked
/// against the grammar alone first (one candidate, cheap); only when the
/// grammar rejects it is the grammar applied to the whole vocabulary and the
/// chain run again, as llama.cpp's `common_sampler_sample` does.
pub(super) struct RequestSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl RequestSampler {
    pub(super) fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            // `sample` applies the chain and accepts the token.
            return self.chain.sample(ctx, idx);
        };
        let mut all = ctx.token_data_array_ith(idx);
        all.apply_sampler(&mut self.chain);
        let picked = all.selected_token();
        if let Some(token) = picked {
            let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
            one.apply_sampler(grammar);
            if one.data[0].logit().is_finite() {
                self.chain.accept(token);
                grammar.accept(token);
                return token;
            }
        }
        let mut all = ctx.token_data_array_ith(idx);
        all.apply_sampler(grammar);
        all.apply_sampler(&mut self.chain);
        // The grammar always leaves a token (end of generation once complete).
        let token = all.selected_token().unwrap_or_else(|| all.data[0].id());
        self.chain.accept(token);
        grammar.accept(token);
        token
    }
}

/// Builds the sampler in llama.cpp's usual order: bias, penalties, DRY,
/// truncation (top-k, typical, top-p, min-p, XTC), temperature, then the pick
/// (greedy at temperature 0; Mirostat replaces truncation and the pick).
/// `eog` are the model's end-of-generation tokens, banned by `ignore_eos`.
pub(super) fn build_sampler(
    p: &SamplingParams,
    model: &LlamaModel,
    n_ctx_slot: u32,
    eog: &[LlamaToken],
    prompt: &[LlamaToken],
) -> Result<RequestSampler, String> {
    let n_vocab = model.n_vocab();
    // Truncation always leaves at least one candidate.
    let keep = (p.min_keep as usize).max(1);
    let mut biases: Vec<LlamaLogitBias> =
        p.logit_bias.iter().map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t as i32), b)).collect();
    if p.ignore_eos {
        biases.extend(eog.iter().map(|&t| LlamaLogitBias::new(t, f32::NEG_INFINITY)));
    }
    let mut chain = Vec::new();
    if !biases.is_empty() {
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
    let dry = p.dry_multiplier > 0.0;
    if dry {
        let last_n = if p.dry_penalty_last_n < 0 { n_ctx_slot as i32 } else { p.dry_penalty_last_n };
        chain.push(LlamaSampler::dry(
            model,
            p.dry_multiplier,
            p.dry_base,
            p.dry_allowed_length,
            last_n,
            p.dry_sequence_breakers.iter().map(String::as_str),
        ));
    }
    let seed = p.seed.unwrap_or(u32::MAX);
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else if p.mirostat == 1 {
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::mirostat(n_vocab, seed, p.mirostat_tau, p.mirostat_eta, 100));
    } else if p.mirostat == 2 {
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::mirostat_v2(seed, p.mirostat_tau, p.mirostat_eta));
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.typical_p < 1.0 {
            chain.push(LlamaSampler::typical(p.typical_p, keep));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, keep));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, keep));
        }
        if p.xtc_probability > 0.0 {
            chain.push(LlamaSampler::xtc(p.xtc_probability, p.xtc_threshold, keep, seed));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(seed));
    }
    let mut chain = LlamaSampler::chain_simple(chain);
    if penalties || dry {
        // Penalties and DRY look back over the prompt too, as llama-server's do.
        let look_back = if dry { n_ctx_slot as usize } else { p.penalty_last_n.max(0) as usize };
        chain.accept_many(&prompt[prompt.len().saturating_sub(look_back)..]);
    }
    let grammar = p.grammar.as_deref().map(|g| grammar_sampler(model, g)).transpose()?;
    Ok(RequestSampler { chain, grammar })
}
