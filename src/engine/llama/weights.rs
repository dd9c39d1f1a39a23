//! Weights kept after an eviction ("sleep"): on the CPU, llama.cpp maps the
//! GGUF file and its tensors point into the mapping, so a model's weights are
//! page cache the kernel may reclaim, not memory we hold. Keeping the mapped
//! `LlamaModel` of a model evicted for a swap makes its next load cost only
//! the context. Only CPU-only loads are kept (weights on a GPU are VRAM that
//! another model needs); admin and ttl unloads release everything.
//! Also here: the file identity that keys what outlives a load, and how a
//! saved sequence state goes into the KV cache directory.

use std::sync::Arc;

use llama_cpp_2::context::session::SeqState;
use llama_cpp_2::model::LlamaModel;
use parking_lot::Mutex;

use super::mapguard::MapGuard;

/// A loaded `LlamaModel` and the watch on its file mappings (mapguard.rs),
/// which must not outlive the mapping. `M` is the model; other types stand
/// in for it only in the test of the drop order.
///
/// The field order matters: fields drop in declaration order, so the guard
/// goes first and stops claiming the file's address range before the model
/// unmaps it. The other way round, the range would stay registered after
/// the unmap, and a SIGBUS in whatever is mapped there next would be
/// papered over with zero pages instead of reaching its own handler. `llg`
/// keeps its own copy of the vocabulary (nothing borrowed from the model),
/// so it may drop before the model.
pub struct Weights<M = LlamaModel> {
    pub guard: MapGuard,
    /// llguidance's view of the vocabulary, built on the first
    /// `%llguidance` grammar and kept with the weights.
    pub llg: super::llg::Vocab,
    pub model: M,
}

impl<M> std::ops::Deref for Weights<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.model
    }
}

/// Kept models by key (file identity and load parameters), most recent last.
pub struct KeptWeights<T> {
    kept: Mutex<Vec<(String, Arc<T>)>>,
    max: usize,
}

impl<T> std::fmt::Debug for KeptWeights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.kept.lock().iter().map(|(k, _)| k.clone()).collect();
        f.debug_struct("KeptWeights").field("kept", &keys).field("max", &self.max).finish()
    }
}

impl<T> KeptWeights<T> {
    pub fn new(max: usize) -> Self {
        Self { kept: Mutex::new(Vec::new()), max }
    }

    /// Takes the weights kept under `key`, if any.
    pub fn take(&self, key: &str) -> Option<Arc<T>> {
        let mut kept = self.kept.lock();
        let at = kept.iter().position(|(k, _)| k == key)?;
        Some(kept.remove(at).1)
    }

    /// Keeps `weights` under `key`; the oldest go beyond `max`.
    pub fn keep(&self, key: String, weights: Arc<T>) {
        let mut kept = self.kept.lock();
        kept.retain(|(k, _)| *k != key);
        kept.push((key, weights));
        while kept.len() > self.max {
            kept.remove(0);
        }
    }

    /// Drops everything kept under `key` (the model is unloaded for good).
    pub fn release(&self, key: &str) {
        self.kept.lock().retain(|(k, _)| k != key);
    }

    pub fn len(&self) -> usize {
        self.kept.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A model file's identity on disk (path, size, modification time): the key
/// of its kept weights and part of its saved KV states' key, so a file
/// replaced in place is read again and its old states are never restored.
pub fn file_identity(path: &std::path::Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    format!("{}|{}|{}", path.display(), meta.map_or(0, |m| m.len()), modified.map_or(0, |d| d.as_nanos()))
}

/// llama.cpp's sequence states in the KV cache directory.
impl crate::engine::kvcache::Persist for llama_cpp_2::context::session::SeqState {
    fn flags(&self) -> u32 {
        SeqState::flags(self).bits()
    }

    fn payload(&self) -> &[u8] {
        self.as_bytes()
    }

    fn from_file(flags: u32, payload: Vec<u8>) -> Self {
        // SAFETY: the directory hands back only payloads whose CRC-32 matches
        // the one written with a state that `as_bytes` produced, and only
        // whole-sequence states (flags 0, the only ones saved).
        unsafe { SeqState::from_saved_bytes(payload, llama_cpp_2::context::session::LlamaStateSeqFlags::from_bits(flags)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::engine::llama::mapguard;

    #[test]
    fn kept_weights_are_taken_once_and_the_oldest_leave_first() {
        let kept = KeptWeights::new(2);
        kept.keep("a".into(), Arc::new(1));
        kept.keep("b".into(), Arc::new(2));
        kept.keep("c".into(), Arc::new(3));
        assert!(kept.take("a").is_none(), "a was the oldest");
        assert_eq!(kept.take("b").as_deref(), Some(&2));
        assert!(kept.take("b").is_none(), "taken once");
        kept.release("c");
        assert!(kept.is_empty());
    }

    #[test]
    fn the_guard_stops_watching_before_the_model_unmaps() {
        /// Stands in for the model: notes, when dropped (unmapping), whether
        /// its range was still watched.
        struct Mapped {
            at: usize,
            watched_at_unmap: Arc<AtomicBool>,
        }
        impl Drop for Mapped {
            fn drop(&mut self) {
                self.watched_at_unmap.store(mapguard::watching(self.at), Ordering::SeqCst);
            }
        }
        let range = vec![0u8; 4096];
        let at = range.as_ptr() as usize;
        let watched_at_unmap = Arc::new(AtomicBool::new(true));
        let weights = Weights {
            guard: MapGuard::watch(&[(at, at + range.len())]),
            llg: Default::default(),
            model: Mapped { at, watched_at_unmap: watched_at_unmap.clone() },
        };
        assert!(mapguard::watching(at));
        drop(weights);
        // Before, the model was declared (so dropped) first, while its range was still watched.
        assert!(!watched_at_unmap.load(Ordering::SeqCst));
    }

    #[test]
    fn a_file_replaced_in_place_gets_another_key() {
        let dir = std::env::temp_dir().join(format!("vram-llm-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.gguf");
        std::fs::write(&file, b"one").unwrap();
        let first = file_identity(&file);
        std::fs::write(&file, b"three").unwrap();
        assert_ne!(first, file_identity(&file), "size changed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
