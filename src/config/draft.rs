//! Which model drafts for which (speculative decoding with a draft model):
//! `--model-draft PATH` for every model, a `[[models]]` entry's `draft` key
//! (another entry's name or alias, a GGUF path, or `auto`), resolved once
//! every model is registered.
//!
//! `auto` pairs a model with the other registered models that can draft
//! for it: on disk, able to generate, the same vocabulary as far as the
//! GGUF headers tell (tokenizer, its pre-tokenizer, vocabulary size, BOS
//! and EOS ids; the token texts are compared when the pair loads), and at
//! most a quarter of its weights (a draft that costs more than that per
//! token rarely pays). When the model loads, the largest of them already
//! loaded in the process (as a model, or as another model's draft) drafts,
//! sharing its weights; with none loaded, the largest loads with the model
//! (drafter.rs). None found: the model drafts with nothing (logged).
//! A draft given for every model (`--model-draft`) or chosen by `auto` is
//! optional: a model it cannot draft for (another vocabulary, a memory that
//! cannot drop a tail) loads without it, logged; one a `[[models]]` entry
//! names fails that model's load, naming why.

use std::path::Path;

use crate::types::{DraftModel, ModelSpec, SpecType};

/// The name `auto` takes in a `draft` key.
pub const AUTO: &str = "auto";

/// A draft's weights are at most this fraction of its target's for `auto`.
const AUTO_MAX_SHARE: u64 = 4;

/// A `draft` key as given: resolved by [`resolve`] once every model is known
/// (`id` holds what was written, `path` where it would be as a file).
/// `optional` for `--model-draft`, which is every model's.
pub fn given(value: &str, dir: &Path, optional: bool) -> DraftModel {
    DraftModel { id: value.to_string(), path: dir.join(value), optional, others: Vec::new() }
}

/// The vocabulary as a GGUF header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabSig {
    pub tokenizer: Option<String>,
    pub pre: Option<String>,
    pub n_vocab: Option<u64>,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
}

/// What `auto` weighs of one registered model.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub sig: VocabSig,
    pub weight_bytes: u64,
    pub generates: bool,
}

fn candidate(path: &Path) -> Option<Candidate> {
    let h = crate::gguf::read_header(path).ok()?;
    let text = |k: &str| h.get_str(k).map(str::to_string);
    Some(Candidate {
        sig: VocabSig {
            tokenizer: text("tokenizer.ggml.model"),
            pre: text("tokenizer.ggml.pre"),
            n_vocab: h.n_vocab(),
            bos: h.get_u64("tokenizer.ggml.bos_token_id"),
            eos: h.get_u64("tokenizer.ggml.eos_token_id"),
        },
        weight_bytes: h.weight_bytes(),
        generates: h.generates(),
    })
}

/// `auto`'s choices for `target` among `others` (indices into `others`):
/// those that share its vocabulary and have at most a quarter of its
/// weights, largest first; equal sizes in their order.
pub fn ranked(target: &Candidate, others: &[Option<Candidate>]) -> Vec<usize> {
    let mut fit: Vec<(usize, u64)> = others
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
        .filter(|(_, c)| c.generates && c.sig == target.sig && c.sig.n_vocab.is_some() && c.weight_bytes.saturating_mul(AUTO_MAX_SHARE) <= target.weight_bytes)
        .map(|(i, c)| (i, c.weight_bytes))
        .collect();
    fit.sort_by_key(|&(_, w)| std::cmp::Reverse(w));
    fit.into_iter().map(|(i, _)| i).collect()
}

/// Turns every model's `draft` into a file: a registered model's name or
/// alias, a path, or `auto`. `at[i]` names where model `i` was declared.
/// A model with a draft and no `spec_type` of its own drafts with it.
pub fn resolve(specs: &mut [ModelSpec], at: &[String]) -> Result<(), String> {
    let mut candidates: Option<Vec<Option<Candidate>>> = None;
    for i in 0..specs.len() {
        let Some(asked) = specs[i].draft.clone() else { continue };
        let found = if asked.id == AUTO {
            let all = candidates.get_or_insert_with(|| specs.iter().map(|s| s.fetch.is_none().then(|| candidate(&s.path)).flatten()).collect());
            let Some(target) = all[i].clone() else {
                specs[i].draft = None;
                continue;
            };
            let mut others = all.clone();
            others[i] = None;
            let ranked = ranked(&target, &others);
            match ranked.first() {
                Some(&j) => DraftModel { id: specs[j].id.clone(), path: specs[j].path.clone(), optional: true, others: ranked[1..].iter().map(|&k| specs[k].path.clone()).collect() },
                None => {
                    tracing::info!(model = %specs[i].id, "draft = \"auto\": no other registered model shares its vocabulary with at most a quarter of its weights; it drafts with nothing");
                    specs[i].draft = None;
                    continue;
                }
            }
        } else if let Some(j) = specs.iter().position(|s| s.id == asked.id || s.aliases.contains(&asked.id)) {
            if specs[j].fetch.is_some() {
                return Err(format!(
                    "{}: draft `{}` is a model downloaded on its first request; a draft model must be on disk (`vram-llm pull` it first)",
                    at[i], asked.id
                ));
            }
            DraftModel { id: specs[j].id.clone(), path: specs[j].path.clone(), optional: asked.optional, others: Vec::new() }
        } else if asked.path.is_file() {
            let id = asked.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            DraftModel { id, path: asked.path.clone(), optional: asked.optional, others: Vec::new() }
        } else {
            return Err(format!(
                "{}: draft `{}`: no registered model has that name and `{}` is no file (give a model's name, a GGUF path, or `auto`)",
                at[i],
                asked.id,
                asked.path.display()
            ));
        };
        specs[i].draft = Some(found);
        if specs[i].knobs.spec.kind == SpecType::None {
            specs[i].knobs.spec.kind = SpecType::DraftSimple;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(tokenizer: &str, n: u64) -> VocabSig {
        VocabSig { tokenizer: Some(tokenizer.into()), pre: Some("default".into()), n_vocab: Some(n), bos: Some(1), eos: Some(2) }
    }
    fn c(tokenizer: &str, n: u64, gib: u64) -> Option<Candidate> {
        Some(Candidate { sig: sig(tokenizer, n), weight_bytes: gib << 30, generates: true })
    }

    #[test]
    fn auto_ranks_the_models_of_the_same_vocabulary_at_most_a_quarter_of_the_size_largest_first() {
        let target = c("llama", 32000, 16).unwrap();
        // 8 GiB: too big (a half); 4 and 1 GiB fit; another vocabulary never.
        let others = [c("llama", 32000, 8), c("llama", 32000, 1), c("llama", 32000, 4), c("gpt2", 32000, 2), None];
        assert_eq!(ranked(&target, &others), [2, 1]);
        // Vocabulary size, BOS or an encoder rule a candidate out.
        let mut bos = c("llama", 32000, 4).unwrap();
        bos.sig.bos = Some(0);
        let mut encoder = c("llama", 32000, 4).unwrap();
        encoder.generates = false;
        let others = [c("llama", 32001, 1), Some(bos), Some(encoder)];
        assert!(ranked(&target, &others).is_empty());
        // Equal sizes: in their order.
        assert_eq!(ranked(&target, &[c("llama", 32000, 2), c("llama", 32000, 2)]), [0, 1]);
        assert!(ranked(&target, &[]).is_empty());
    }

    fn spec(id: &str, path: &str) -> ModelSpec {
        ModelSpec::new(id, path)
    }

    #[test]
    fn a_draft_names_a_model_an_alias_or_a_file_and_turns_draft_simple_on() {
        let dir = std::env::temp_dir().join(format!("vram-llm-draft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("small.gguf");
        std::fs::write(&file, b"x").unwrap();
        let at: Vec<String> = (0..4).map(|i| format!("models[{i}]")).collect();
        let mut specs = vec![spec("big", "/m/big.gguf"), spec("tiny", "/m/tiny.gguf"), spec("other", "/m/o.gguf"), spec("x", "/m/x.gguf")];
        specs[1].aliases = vec!["t".into()];
        specs[0].draft = Some(given("t", &dir, false));
        specs[2].draft = Some(given("small.gguf", &dir, false));
        specs[3].draft = Some(given("tiny", &dir, false));
        specs[3].knobs.spec.kind = SpecType::NgramSimple;
        resolve(&mut specs, &at).unwrap();
        assert_eq!(specs[0].draft, Some(DraftModel { id: "tiny".into(), path: "/m/tiny.gguf".into(), optional: false, others: Vec::new() }));
        assert_eq!(specs[0].knobs.spec.kind, SpecType::DraftSimple);
        assert_eq!(specs[2].draft, Some(DraftModel { id: "small".into(), path: file.clone(), optional: false, others: Vec::new() }));
        assert_eq!(specs[3].knobs.spec.kind, SpecType::NgramSimple, "a spec_type given stays");
        assert_eq!(specs[1].draft, None);

        let mut specs = vec![spec("big", "/m/big.gguf")];
        specs[0].draft = Some(given("nope", &dir, false));
        let e = resolve(&mut specs, &at).unwrap_err();
        assert!(e.contains("models[0]") && e.contains("`nope`") && e.contains("auto"), "{e}");
        // `auto` with nothing readable: no draft, no error.
        specs[0].draft = Some(given(AUTO, &dir, false));
        resolve(&mut specs, &at).unwrap();
        assert_eq!(specs[0].draft, None);
        assert_eq!(specs[0].knobs.spec.kind, SpecType::None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
