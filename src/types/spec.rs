//! Speculative decoding's settings: which kind a model uses
//! (`--spec-type`), its sizes, a request's own, and the draft model that
//! drafts for a model (`engine::spec` and `engine::llama::drafter` use them).

use std::path::PathBuf;

/// Which self-speculation a model uses (llama-server's `--spec-type`;
/// `engine::spec` drafts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SpecType {
    /// No speculation.
    #[default]
    None,
    /// Find the last `--spec-ngram-simple-size-n` tokens earlier in the
    /// prompt or output and draft what followed them.
    NgramSimple,
    /// A smaller model of the same vocabulary (`--model-draft`, a model's
    /// `draft` key) drafts greedily, stopping where its top token's
    /// probability falls below `--spec-draft-p-min`.
    DraftSimple,
}

/// llama-server's default lookup length for `ngram-simple`.
pub const DEFAULT_SIZE_N: u32 = 12;
/// The longest n-gram draft: the longest llama-server's n-gram types draft
/// (`ngram-mod`'s 64; `ngram-simple` stops at 48). Each decode reads all the
/// weights once and a drafted token costs little more than a token of a
/// prompt, so a long accepted draft pays; `Pace` and the lookup's support
/// keep drafts short until the text has shown it repeats.
pub const DEFAULT_N_MAX: u32 = 64;

/// llama-server's longest draft of a draft model (`--spec-draft-n-max`).
pub const DEFAULT_DRAFT_N_MAX: u32 = 3;
/// llama-server's `--spec-draft-p-min`: a draft model's token below this
/// probability ends its draft (0: greedy drafts go on to `n_max`).
pub const DEFAULT_P_MIN: f32 = 0.0;

/// A model's speculation settings (`--spec-type`, `--spec-draft-n-max`,
/// `--spec-draft-n-min`, `--spec-draft-p-min`, `--spec-ngram-simple-size-n`;
/// config keys of the same names with `_`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpecConfig {
    pub kind: SpecType,
    /// Longest draft (`None`: [`DEFAULT_N_MAX`], [`DEFAULT_DRAFT_N_MAX`]
    /// for a draft model).
    pub n_max: Option<u32>,
    /// Drafts shorter than this are not tried (`None`: 0).
    pub n_min: Option<u32>,
    /// Tokens the lookup matches (`None`: [`DEFAULT_SIZE_N`]).
    pub size_n: Option<u32>,
    /// A draft model's least probability to go on drafting (`None`:
    /// [`DEFAULT_P_MIN`]).
    pub p_min: Option<f32>,
}

/// The model that drafts for another (`--model-draft`, a `[[models]]`
/// entry's `draft`): its file, and the name it was given by (a registered
/// model's, or the file's stem). `optional`: given for every model
/// (`--model-draft`) or chosen by `auto`, so a model it cannot draft for
/// loads without it (logged) instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftModel {
    pub id: String,
    pub path: PathBuf,
    pub optional: bool,
    /// `auto`'s other choices, largest first (`path` is the largest): at
    /// load, the first of `path` and these whose weights are in use in the
    /// process drafts, sharing them; none in use: `path` loads.
    pub others: Vec<PathBuf>,
}

impl DraftModel {
    /// The files that may draft, in order of preference.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.path).chain(&self.others).cloned().collect()
    }
}

/// A request's own speculation settings (llama-server's `speculative.type`,
/// `speculative.n_max`, `speculative.n_min`, `speculative.ngram_size_n`,
/// `speculative.p_min`); each one given wins over the model's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpecRequest {
    pub kind: Option<SpecType>,
    pub n_max: Option<u32>,
    pub n_min: Option<u32>,
    pub size_n: Option<u32>,
    pub p_min: Option<f32>,
}

impl SpecConfig {
    /// The model's settings with a request's on top.
    pub fn with(self, r: SpecRequest) -> SpecConfig {
        SpecConfig {
            kind: r.kind.unwrap_or(self.kind),
            n_max: r.n_max.or(self.n_max),
            n_min: r.n_min.or(self.n_min),
            size_n: r.size_n.or(self.size_n),
            p_min: r.p_min.or(self.p_min),
        }
    }

    pub fn enabled(&self) -> bool {
        self.kind != SpecType::None && self.n_max() > 0
    }
    pub fn n_max(&self) -> usize {
        let default = if self.kind == SpecType::DraftSimple { DEFAULT_DRAFT_N_MAX } else { DEFAULT_N_MAX };
        self.n_max.unwrap_or(default) as usize
    }
    pub fn p_min(&self) -> f32 {
        self.p_min.unwrap_or(DEFAULT_P_MIN)
    }
    /// The rule a draft model's `p_min` keeps, as the flag, the config key
    /// and the request field give it: a probability.
    pub fn check_p_min(p: f64) -> Result<(), &'static str> {
        if (0.0..=1.0).contains(&p) {
            Ok(())
        } else {
            Err("must be between 0 and 1")
        }
    }
    pub fn n_min(&self) -> usize {
        self.n_min.unwrap_or(0) as usize
    }
    pub fn size_n(&self) -> usize {
        self.size_n.unwrap_or(DEFAULT_SIZE_N).max(1) as usize
    }
}
