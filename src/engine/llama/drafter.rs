//! A draft model (`--spec-type draft-simple`): a smaller model of the same
//! vocabulary loaded in the target's worker (or its weights shared, when a
//! model or another draft already uses that file), with a context of its own (a
//! sequence per slot, every position kept so that what the target rejected
//! can be cut anywhere). To draft for a slot it brings its sequence up to
//! the slot's tokens (only what changed since its last draft is decoded),
//! then proposes its most likely token, one decode per token, while that
//! token's probability stays at or above `p_min`. The target verifies the
//! draft as any other (speculate.rs): the draft model changes the speed,
//! never the output.

use std::sync::Arc;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::weights::Weights;
use super::*;
use crate::engine::spec::{vocab_mismatch, VocabFacts};

pub(super) struct Drafter<'m> {
    ctx: LlamaContext<'m>,
    /// The watch on its weights' file mappings: once a read found the file
    /// cut short (mapguard.rs), it drafts nothing more (its logits would
    /// come from zero pages: the output stays right, every draft wasted).
    mappings: &'m super::mapguard::MapGuard,
    /// Whether the fault was logged.
    faulted: bool,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Positions a sequence holds.
    n_ctx: usize,
    /// Tokens whose KV each sequence (a slot's) holds.
    cached: Vec<Vec<LlamaToken>>,
    /// The model's vocabulary size: the draft's may be larger (by up to
    /// `VOCAB_SIZE_SLACK`), and tokens past it are never drafted.
    n_vocab: usize,
    /// Whether drafting pays for this model (`engine::spec::Payoff`), and
    /// the tokens catching up read since the step began (a long read is a
    /// prompt's, left out of the payoff).
    pub(super) payoff: crate::engine::spec::Payoff,
    pub(super) read: usize,
}

/// A draft model's weights, before its context is made.
pub(super) struct Loaded {
    weights: Arc<Weights>,
    params: llama_cpp_2::context::params::LlamaContextParams,
    n_ctx: usize,
    n_vocab: usize,
    path: std::path::PathBuf,
    /// Shared with a model or draft already in use (`LoadOptions::live_weights`).
    pub(super) shared: bool,
    /// Its entry among the weights in use when it loaded its own.
    _live: Option<super::weights::Live<Weights>>,
}

impl Loaded {
    /// Its weights and what its context added to this process since
    /// `before` (resident bytes). Shared weights count too: the model that
    /// loaded them may unload first, and they then live as long as this.
    pub(super) fn bytes(&self, before: u64) -> u64 {
        self.weights.model.size() + super::worker::resident_bytes().saturating_sub(before)
    }

    /// What the model's facts say of its draft (`ModelInfo::draft`).
    pub(super) fn in_use(&self) -> crate::engine::DraftInUse {
        crate::engine::DraftInUse { path: self.path.display().to_string(), shared: self.shared }
    }
}

/// Loads the draft model of `options` (its `draft`), checked against the
/// model: a draft it cannot use fails the load, or with an optional draft
/// (`--model-draft`, `auto`) is left out with a warning. On the CPU, the
/// first of its files whose weights are in use in the process (a model's,
/// another model's draft's) is shared, not loaded again; with none (or
/// none that can draft), the first loads. GPU weights are not shared: the
/// scheduler counts each model's GPU memory where it planned it, and a
/// share would sit on another model's devices and outlive its unload.
pub(super) fn load(options: &LoadOptions, target: &LlamaModel) -> Result<Option<Loaded>, String> {
    let Some((files, optional)) = &options.draft else { return Ok(None) };
    let Some(first) = files.first() else { return Ok(None) };
    if target.is_recurrent() || target.is_hybrid() {
        tracing::warn!(model = %options.path.display(), draft = %first.display(), "no draft model: this model's memory (recurrent or hybrid) cannot drop rejected drafts");
        return Ok(None);
    }
    let options_for = |path: &std::path::PathBuf| LoadOptions {
        path: path.clone(),
        // Whole on the model's main GPU where the scheduler placed the model
        // on GPUs (its estimate counts the draft as the model's own; not
        // checked on a GPU yet), on the CPU where it placed it there.
        gpu: options.gpu.as_ref().map(|g| crate::engine::GpuParams {
            devices: g.devices.first().copied().into_iter().collect(),
            split_mode: crate::gpu::SplitMode::None,
            n_gpu_layers: u32::MAX,
            tensor_split: Vec::new(),
            whole: true,
        }),
        fit: None,
        n_gpu_layers: options.n_gpu_layers,
        kv_store: None,
        kept_weights: None,
        sleep_gpu: false,
        // Drafts are cut back anywhere: keep every position of a window.
        swa_full: true,
        draft: None,
        live_weights: None,
        ..options.clone()
    };
    // Shared only between CPU loads (see above).
    let live = options.live_weights.as_ref().filter(|_| super::cpu_only(&options_for(first)));
    // The files in use first, in order, then the first file loaded.
    let mut tries: Vec<(&std::path::PathBuf, Option<Arc<Weights>>)> = live.map_or_else(Vec::new, |live| {
        files.iter().filter_map(|path| super::weights::live_key(path).and_then(|key| live.get(&key)).map(|w| (path, Some(w)))).collect()
    });
    if !tries.iter().any(|(path, _)| *path == first) {
        tries.push((first, None));
    }
    let mut refused = Vec::new();
    for (path, shared) in tries {
        let draft_options = options_for(path);
        let is_shared = shared.is_some();
        let described = match shared {
            Some(weights) => super::load::describe(weights, &draft_options),
            None => super::load::load_model(&draft_options, Arc::new(|_| {}), None),
        };
        let (weights, info, params) = match described {
            Ok(described) => described,
            // Another candidate may still do.
            Err(e) if is_shared => {
                refused.push(format!("{}: {e}", path.display()));
                continue;
            }
            Err(e) => return Err(format!("draft model {}: {e}", path.display())),
        };
        let why = if weights.model.is_recurrent() || weights.model.is_hybrid() {
            Some("its memory (recurrent or hybrid) cannot drop rejected drafts".to_string())
        } else {
            mismatch(target, &weights.model).map(|why| format!("{why} (a draft model needs the model's vocabulary)"))
        };
        if let Some(why) = why {
            refused.push(format!("{}: {why}", path.display()));
            continue;
        }
        tracing::info!(model = %options.path.display(), draft = %path.display(), shared = is_shared, "draft model ready (shared: its weights were in use already)");
        let entry = live.filter(|_| !is_shared).zip(super::weights::live_key(path)).map(|(live, key)| live.add(key, &weights));
        return Ok(Some(Loaded { weights, params, n_ctx: info.n_ctx_slot as usize, n_vocab: target.n_vocab().max(0) as usize, path: path.clone(), shared: is_shared, _live: entry }));
    }
    let why = refused.join("; ");
    if *optional {
        tracing::warn!(model = %options.path.display(), "no draft model for this model: {why}");
        return Ok(None);
    }
    Err(format!("no draft model can draft for {}: {why}", options.path.display()))
}

fn facts(m: &LlamaModel) -> VocabFacts {
    let v = m.vocab();
    VocabFacts {
        kind: format!("{:?}", v.vocab_type()),
        n_vocab: m.n_vocab().max(0) as u32,
        bos: v.bos().0,
        eos: v.eos().0,
        add_bos: v.should_add_bos(),
        add_eos: v.should_add_eos(),
    }
}

fn mismatch(target: &LlamaModel, draft: &LlamaModel) -> Option<String> {
    let (tv, dv) = (target.vocab(), draft.vocab());
    let text = |v: &llama_cpp_2::vocab::LlamaVocab<'_>, id: u32| v.text(LlamaToken(id as i32)).map(|s| s.to_bytes().to_vec()).unwrap_or_default();
    vocab_mismatch(&facts(target), &facts(draft), |id| (text(&tv, id), text(&dv, id)))
}

impl<'m> Drafter<'m> {
    /// The draft model's context, a sequence per slot (`None` without a
    /// draft model).
    pub(super) fn start(loaded: Option<&'m Loaded>, parallel: usize) -> Result<Option<Self>, String> {
        let Some(Loaded { weights, params, n_ctx, n_vocab, path, .. }) = loaded else { return Ok(None) };
        let ctx = weights.model.new_context(backend()?, params.clone()).map_err(|e| format!("draft model {}: cannot create its context: {e}", path.display()))?;
        let n_batch = ctx.n_batch() as usize;
        Ok(Some(Self { ctx, mappings: &weights.guard, faulted: false, batch: LlamaBatch::new(n_batch, 1), n_batch, n_ctx: *n_ctx, cached: vec![Vec::new(); parallel], n_vocab: *n_vocab, payoff: Default::default(), read: 0 }))
    }

    /// Up to `max` tokens to follow `history` (a slot's tokens, its pending
    /// one last) in sequence `seq`; fewer where the draft model is unsure
    /// (`p_min`), none where a decode fails (its sequence starts over).
    pub(super) fn draft(&mut self, seq: usize, history: &[LlamaToken], max: usize, p_min: f32) -> Vec<LlamaToken> {
        let mut out = Vec::new();
        // Its own context may be shorter than the model's.
        let max = max.min(self.n_ctx.saturating_sub(history.len() + 1));
        if max == 0 || history.is_empty() || seq >= self.cached.len() {
            return out;
        }
        if self.mappings.faulted() {
            if !std::mem::replace(&mut self.faulted, true) {
                tracing::warn!("the draft model's file was cut short under its weights: no more drafts until the model reloads");
            }
            return out;
        }
        if self.catch_up(seq, history).is_err() {
            self.forget(seq);
            return out;
        }
        loop {
            let logits = self.ctx.get_logits_ith(self.batch.n_tokens() - 1);
            let (token, p) = top(&logits[..self.n_vocab.min(logits.len())]);
            if p < p_min {
                break;
            }
            out.push(token);
            if out.len() >= max {
                break;
            }
            let pos = self.cached[seq].len() as i32;
            self.batch.clear();
            if self.batch.add(token, pos, &[seq as i32], true).is_err() || self.ctx.decode(&mut self.batch).is_err() {
                self.forget(seq);
                break;
            }
            self.cached[seq].push(token);
        }
        out
    }

    /// Makes sequence `seq` hold `history` and leaves the logits of its last
    /// token as the batch's last.
    fn catch_up(&mut self, seq: usize, history: &[LlamaToken]) -> Result<(), ()> {
        let cached = &mut self.cached[seq];
        let mut keep = cached.iter().zip(history).take_while(|(a, b)| a == b).count();
        // The last token is decoded again for its logits.
        keep = keep.min(history.len() - 1);
        if keep < cached.len() {
            if self.ctx.kv_cache_seq_rm(seq as i32, Some(keep as u32), None).is_err() {
                self.ctx.kv_cache_seq_rm(seq as i32, None, None).map_err(|_| ())?;
                keep = 0;
            }
            self.cached[seq].truncate(keep);
        }
        let mut from = keep;
        while from < history.len() {
            let to = history.len().min(from + self.n_batch);
            self.batch.clear();
            for (pos, &token) in history.iter().enumerate().take(to).skip(from) {
                self.batch.add(token, pos as i32, &[seq as i32], pos + 1 == history.len()).map_err(|_| ())?;
            }
            self.ctx.decode(&mut self.batch).map_err(|_| ())?;
            self.read += to - from;
            self.cached[seq].extend_from_slice(&history[from..to]);
            from = to;
        }
        Ok(())
    }

    /// Empties sequence `seq` (it is read again at its next draft).
    fn forget(&mut self, seq: usize) {
        let _ = self.ctx.kv_cache_seq_rm(seq as i32, None, None);
        self.cached[seq].clear();
    }
}

/// How many of the most likely tokens a draft token's probability is
/// taken among (renormalized), as llama-server's draft sampler (top-k 10).
const TOP_K: usize = 10;

/// The most likely token of `logits` and its probability among the
/// [`TOP_K`] most likely.
fn top(logits: &[f32]) -> (LlamaToken, f32) {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(TOP_K + 1);
    for (i, &v) in logits.iter().enumerate() {
        if best.len() < TOP_K || v > best[best.len() - 1].0 {
            let at = best.partition_point(|&(b, _)| b >= v);
            best.insert(at, (v, i));
            best.truncate(TOP_K);
        }
    }
    let Some(&(max, token)) = best.first() else { return (LlamaToken(0), 0.0) };
    let sum: f32 = best.iter().map(|&(v, _)| (v - max).exp()).sum();
    (LlamaToken(token as i32), if sum > 0.0 { 1.0 / sum } else { 0.0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_top_token_and_its_probability_among_the_ten_likeliest() {
        let (t, p) = super::top(&[0.0, 2.0, 0.0]);
        assert_eq!(t.0, 1);
        let e2 = 2f32.exp();
        assert!((p - e2 / (e2 + 2.0)).abs() < 1e-6);
        // 1000 unlikely tokens beyond the ten likeliest do not count.
        let mut logits = vec![-50.0; 1000];
        logits[7] = 3.0;
        for v in logits.iter_mut().skip(100).take(9) {
            *v = 0.0;
        }
        let (t, p) = super::top(&logits);
        assert_eq!(t.0, 7);
        let e3 = 3f32.exp();
        assert!((p - e3 / (e3 + 9.0)).abs() < 1e-6, "{p}");
    }
}
