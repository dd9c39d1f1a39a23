//! llama-server's per-request `speculative.*` fields, checked: a type this
//! server has (`none`, `ngram-simple`, `draft-simple`), draft lengths
//! 0..=256, a lookup of 1..=64 tokens, a draft model's `p_min` in 0..=1.

use super::error::{invalid, ApiError};
use super::openai::SamplingFields;
use crate::types::{SpecConfig, SpecRequest, SpecType};

pub(super) fn fields(f: &SamplingFields) -> Result<SpecRequest, ApiError> {
    let count = |name: &'static str, v: Option<i64>, range: std::ops::RangeInclusive<i64>| match v {
        Some(n) if !range.contains(&n) => Err(invalid(name, format!("`{name}` must be between {} and {} (got {n})", range.start(), range.end()))),
        v => Ok(v.map(|n| n as u32)),
    };
    let p_min = match f.speculative_p_min.map(|p| (p, SpecConfig::check_p_min(p))) {
        Some((_, Err(rule))) => return Err(invalid("speculative.p_min", format!("`speculative.p_min` {rule}"))),
        p => p.map(|(p, _)| p as f32),
    };
    // The names `--spec-type` takes (the enum's own), exactly.
    let kind = match f.speculative_type.as_deref() {
        None => None,
        Some(name) => Some(<SpecType as clap::ValueEnum>::from_str(name, false).map_err(|_| {
            invalid("speculative.type", format!("`speculative.type` `{name}` is not available here: `ngram-simple`, `draft-simple` or `none`"))
        })?),
    };
    Ok(SpecRequest {
        kind,
        n_max: count("speculative.n_max", f.speculative_n_max, 0..=256)?,
        n_min: count("speculative.n_min", f.speculative_n_min, 0..=256)?,
        size_n: count("speculative.ngram_size_n", f.speculative_ngram_size_n, 1..=64)?,
        p_min,
    })
}
