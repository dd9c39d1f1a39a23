//! Weights kept after an eviction ("sleep"): on the CPU, llama.cpp maps the
//! GGUF file and its tensors point into the mapping, so a model's weights are
//! page cache the kernel may reclaim, not memory we hold. Keeping the mapped
//! `LlamaModel` of a model evicted for a swap makes its next load cost only
//! the context. Only CPU-only loads are kept (weights on a GPU are VRAM that
//! another model needs); admin and ttl unloads release everything.
//! Also here: the file identity that keys what outlives a load.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use parking_lot::Mutex;

use super::mapguard::MapGuard;

/// A loaded `LlamaModel` and the watch on its file mappings (mapguard.rs),
/// which must live exactly as long as the mapping.
pub struct Weights {
    pub model: LlamaModel,
    pub guard: MapGuard,
    /// llguidance's view of the vocabulary, built on the first
    /// `%llguidance` grammar and kept with the weights.
    pub llg: super::llg::Vocab,
}

impl std::ops::Deref for Weights {
    type Target = LlamaModel;
    fn deref(&self) -> &LlamaModel {
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

#[cfg(test)]
mod tests {
    use super::*;

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
