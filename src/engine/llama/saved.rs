//! What a slot keeps of its sequence beyond the KV cells, and what the host
//! KV cache keeps of a slot: the whole sequence state and the checkpoints
//! of its sliding-window layers (`engine::checkpoints`), which also go into
//! the KV cache directory as the parts of one file.

use std::sync::Arc;

use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};

use crate::engine::kvdisk::{Part, ReadPart, PARTIAL, WHOLE};

/// Saved states restore only into the same model file (`identity`, see
/// `weights::LoadedFile::identity`) and context layout.
pub(super) fn store_key(identity: &str, info: &crate::engine::ModelInfo, options: &super::LoadOptions) -> String {
    let k = &options.knobs;
    format!(
        "{identity}|ctx={}|seqs={}|swa_full={}|k={}|v={}|fa={:?}",
        info.n_ctx_slot,
        info.parallel,
        options.swa_full,
        k.cache_type_k.name(),
        k.cache_type_v.name(),
        k.flash_attn
    )
}

/// The sliding-window layers' state when a sequence held exactly `len`
/// tokens (llama.cpp's partial sequence state). Shared, not copied, between
/// a slot and the saved sequences it went into.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub len: usize,
    pub state: Arc<SeqState>,
}

/// A sequence saved in the host KV cache.
#[derive(Debug)]
pub struct SavedSeq {
    /// The tokens the sequence holds.
    pub held: usize,
    pub whole: SeqState,
    /// Shortest first; each within the sequence.
    pub checkpoints: Vec<Checkpoint>,
}

impl SavedSeq {
    pub fn bytes(&self) -> usize {
        self.whole.byte_len() + self.checkpoints.iter().map(|c| c.state.byte_len()).sum::<usize>()
    }
}

impl crate::engine::kvcache::Persist for SavedSeq {
    fn parts(&self) -> Vec<Part<'_>> {
        let whole = Part { flags: WHOLE, tokens: self.held, bytes: self.whole.as_bytes() };
        std::iter::once(whole)
            .chain(self.checkpoints.iter().map(|c| Part { flags: PARTIAL, tokens: c.len, bytes: c.state.as_bytes() }))
            .collect()
    }

    fn from_parts(parts: Vec<ReadPart>) -> Self {
        let held = parts.first().map_or(0, |p| p.tokens);
        let mut parts = parts.into_iter();
        // SAFETY (both): the directory hands back only parts whose CRC-32
        // (over the header and every part) matches what was written from
        // states `as_bytes` produced, with the flags they were captured with:
        // the first whole (0), the others partial (PARTIAL_ONLY).
        let whole = parts.next().map(|p| unsafe { SeqState::from_saved_bytes(p.bytes, LlamaStateSeqFlags::empty()) });
        let checkpoints = parts
            .map(|p| Checkpoint { len: p.tokens, state: Arc::new(unsafe { SeqState::from_saved_bytes(p.bytes, LlamaStateSeqFlags::PARTIAL_ONLY) }) })
            .collect();
        Self { held, whole: whole.expect("the directory checks the first part is there"), checkpoints }
    }
}
