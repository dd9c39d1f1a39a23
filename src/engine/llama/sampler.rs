//! The sampler for one request: llama.cpp's sampler chain, plus a grammar
//! kept beside it (not in it) when the output is constrained: llama.cpp's
//! GBNF sampler, or llguidance's matcher for `%llguidance` grammars (llg.rs).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use super::llg;
use crate::engine::SamplingParams;

/// A JSON schema as a GBNF grammar (root rule `root`), by llama.cpp's own
/// converter (`common/json-schema-to-grammar.cpp`). Needs no model.
pub fn json_schema_grammar(schema: &serde_json::Value) -> Result<String, String> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|_| {
        "llama.cpp's converter rejected it (unsupported keyword or malformed schema)".to_string()
    })
}

/// What checks and restricts the chain's picks: llama.cpp's grammar sampler
/// for GBNF (root rule `root`), llguidance's matcher for `%llguidance` text.
enum Grammar {
    Gbnf(LlamaSampler),
    #[cfg(feature = "llguidance")]
    Llg(Box<llg::Constraint>),
}

fn grammar(model: &LlamaModel, vocab: &llg::Vocab, grammar: &str) -> Result<Grammar, String> {
    if llg::is_llguidance(grammar) {
        #[cfg(feature = "llguidance")]
        return vocab.constraint(model, grammar).map(|c| Grammar::Llg(Box::new(c)));
        #[cfg(not(feature = "llguidance"))]
        {
            let _ = vocab;
            return Err(llg::MISSING.to_string());
        }
    }
    LlamaSampler::grammar(model, grammar, "root")
        .map(Grammar::Gbnf)
        .map_err(|e| format!("grammar does not parse: {e}"))
}

/// Whether `grammar` parses against `model`'s vocabulary.
pub(super) fn grammar_parses(model: &LlamaModel, vocab: &llg::Vocab, text: &str) -> Result<(), String> {
    grammar(model, vocab, text).map(drop)
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

/// [`PostProbs`] as a [`crate::engine::TokenLogprob`] (natural logs).
pub(super) fn post_logprob(
    post: PostProbs,
    token: LlamaToken,
    bytes: Vec<u8>,
    bytes_of: impl Fn(LlamaToken) -> Vec<u8>,
) -> crate::engine::TokenLogprob {
    // A picked token always had a probability; the floor keeps JSON finite.
    let ln = |p: f32| p.max(f32::MIN_POSITIVE).ln();
    crate::engine::TokenLogprob {
        token: token.0 as crate::engine::TokenId,
        bytes,
        logprob: ln(post.token_p),
        top: post.top.into_iter().map(|(t, p)| (t.0 as crate::engine::TokenId, bytes_of(t), ln(p))).collect(),
    }
}

impl Grammar {
    /// Whether the grammar allows `token` next (the chain's pick alone).
    fn allows(&mut self, token: LlamaToken) -> bool {
        match self {
            Grammar::Gbnf(sampler) => {
                let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
                one.apply_sampler(sampler);
                one.data[0].logit().is_finite()
            }
            #[cfg(feature = "llguidance")]
            Grammar::Llg(c) => c.allows(token.0 as u32),
        }
    }

    /// Sets every token the grammar forbids to -inf.
    fn restrict(&mut self, all: &mut LlamaTokenDataArray) {
        match self {
            Grammar::Gbnf(sampler) => all.apply_sampler(sampler),
            #[cfg(feature = "llguidance")]
            Grammar::Llg(c) => {
                let allowed = c.allowed();
                for t in all.data.iter_mut() {
                    if !allowed(t.id().0 as u32) {
                        t.set_logit(f32::NEG_INFINITY);
                    }
                }
            }
        }
    }

    fn accept(&mut self, token: LlamaToken) {
        match self {
            Grammar::Gbnf(sampler) => sampler.accept(token),
            #[cfg(feature = "llguidance")]
            Grammar::Llg(c) => c.accept(token.0 as u32),
        }
    }
}

/// A request's sampler. With a grammar, the token the chain picks is checked
/// against the grammar alone first (one candidate, cheap); only when the
/// grammar rejects it is the grammar applied to the whole vocabulary and the
/// chain run again, as llama.cpp's `common_sampler_sample` does.
pub(super) struct RequestSampler {
    chain: LlamaSampler,
    grammar: Option<Grammar>,
    cost: GrammarCost,
}

/// Where a grammar's time went in one request (logged at debug level when
/// the request ends): tokens sampled, picks refused (each cost a
/// whole-vocabulary pass), and the time in checks, passes and accepts.
#[derive(Default)]
struct GrammarCost {
    tokens: u32,
    refused: u32,
    check: std::time::Duration,
    restrict: std::time::Duration,
    accept: std::time::Duration,
}

impl Drop for RequestSampler {
    fn drop(&mut self) {
        let Some(grammar) = &self.grammar else { return };
        let c = &self.cost;
        let kind = match grammar {
            Grammar::Gbnf(_) => "gbnf",
            #[cfg(feature = "llguidance")]
            Grammar::Llg(_) => "llguidance",
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            kind,
            tokens = c.tokens,
            refused = c.refused,
            check_ms = ms(c.check),
            restrict_ms = ms(c.restrict),
            accept_ms = ms(c.accept),
            "grammar cost"
        );
    }
}

/// The probabilities the sampler chain left at one step (llama-server's
/// `post_sampling_probs`): the picked token's, and the `top` most likely
/// candidates with a probability above 0, most likely first.
pub(super) struct PostProbs {
    pub token_p: f32,
    pub top: Vec<(LlamaToken, f32)>,
}

/// A softmax over the candidates the chain kept, at the logits it left them
/// (temperature applied, truncated ones gone, refused ones at -inf): the
/// distribution the pick was drawn from.
fn post_probs(all: &LlamaTokenDataArray, token: LlamaToken, top: usize) -> PostProbs {
    let max = all.data.iter().map(|d| d.logit()).fold(f32::NEG_INFINITY, f32::max);
    let weight = |l: f32| if max.is_finite() { ((l - max) as f64).exp() } else { 0.0 };
    let sum: f64 = all.data.iter().map(|d| weight(d.logit())).sum();
    let prob = |l: f32| if sum > 0.0 { (weight(l) / sum) as f32 } else { 0.0 };
    let mut probs: Vec<(LlamaToken, f32)> = all.data.iter().map(|d| (d.id(), prob(d.logit()))).filter(|(_, p)| *p > 0.0).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let token_p = probs.iter().find(|(t, _)| *t == token).map_or(0.0, |(_, p)| *p);
    probs.truncate(top);
    PostProbs { token_p, top: probs }
}

impl RequestSampler {
    /// Picks the next token and accepts it; `post` asks for the
    /// probabilities the chain left (that many alternatives).
    pub(super) fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32, post: Option<usize>) -> (LlamaToken, Option<PostProbs>) {
        let Some(grammar) = self.grammar.as_mut() else {
            let Some(top) = post else {
                // `sample` applies the chain and accepts the token.
                return (self.chain.sample(ctx, idx), None);
            };
            let mut all = ctx.token_data_array_ith(idx);
            all.apply_sampler(&mut self.chain);
            let token = all.selected_token().unwrap_or_else(|| all.data[0].id());
            self.chain.accept(token);
            return (token, Some(post_probs(&all, token, top)));
        };
        let cost = &mut self.cost;
        cost.tokens += 1;
        let mut all = ctx.token_data_array_ith(idx);
        all.apply_sampler(&mut self.chain);
        if let Some(token) = all.selected_token() {
            let started = std::time::Instant::now();
            let allowed = grammar.allows(token);
            cost.check += started.elapsed();
            if allowed {
                self.chain.accept(token);
                let started = std::time::Instant::now();
                grammar.accept(token);
                cost.accept += started.elapsed();
                return (token, post.map(|top| post_probs(&all, token, top)));
            }
        }
        cost.refused += 1;
        let mut all = ctx.token_data_array_ith(idx);
        let started = std::time::Instant::now();
        grammar.restrict(&mut all);
        cost.restrict += started.elapsed();
        all.apply_sampler(&mut self.chain);
        // The grammar always leaves a token (end of generation once complete).
        let token = all.selected_token().unwrap_or_else(|| all.data[0].id());
        self.chain.accept(token);
        let started = std::time::Instant::now();
        grammar.accept(token);
        cost.accept += started.elapsed();
        (token, post.map(|top| post_probs(&all, token, top)))
    }
}

/// Builds the sampler in llama.cpp's usual order: bias, penalties, DRY,
/// truncation (top-k, typical, top-p, min-p, XTC), temperature, then the pick
/// (greedy at temperature 0; Mirostat replaces truncation and the pick).
/// `eog` are the model's end-of-generation tokens, banned by `ignore_eos`.
pub(super) fn build_sampler(
    p: &SamplingParams,
    model: &LlamaModel,
    vocab: &llg::Vocab,
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
    let grammar = p.grammar.as_deref().map(|g| grammar(model, vocab, g)).transpose()?;
    Ok(RequestSampler { chain, grammar, cost: GrammarCost::default() })
}
