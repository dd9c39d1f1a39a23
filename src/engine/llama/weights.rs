//! Weights kept after an eviction: sleeping models (scheduler/sleep.rs). On
//! the CPU, llama.cpp maps the GGUF file and its tensors point into the
//! mapping, so a model's weights are page cache the kernel may reclaim, not
//! memory we hold: keeping the mapped `LlamaModel` makes its next load cost
//! only the context. On one GPU, the weights sleep in pinned host memory
//! (sleep.rs) and wake with one copy. Admin and ttl unloads release
//! everything.
//! Also here: the file identity that keys what outlives a load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The end-of-generation tokens (`ignore_eos` bans them): a scan of the
    /// whole vocabulary, made on the first request that needs it, not at load.
    pub eog: std::sync::OnceLock<Vec<llama_cpp_2::token::LlamaToken>>,
    pub model: M,
    /// The pool its GPU weights live in, when they can sleep (sleep.rs), else
    /// why not. After `model`: llama.cpp frees the pool's buffers first.
    pub sleep: Result<super::sleep::Pool, String>,
    /// Where the weights were placed (the GPU plan's devices and layers): a
    /// sleeping model wakes only for a load placed the same way.
    pub placed: String,
}

impl Weights {
    /// The model's end-of-generation tokens, found once.
    pub fn eog(&self) -> &[llama_cpp_2::token::LlamaToken] {
        self.eog.get_or_init(|| {
            let vocab = self.model.vocab();
            (0..self.model.n_vocab()).map(llama_cpp_2::token::LlamaToken).filter(|&t| vocab.is_eog(t)).collect()
        })
    }
}

impl<M> std::ops::Deref for Weights<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.model
    }
}

/// Sleeping models by key (the file's identity), most recent last. The
/// scheduler decides who sleeps and who is dropped (scheduler/sleep.rs);
/// this only holds them.
pub struct KeptWeights<T> {
    kept: Mutex<Vec<(String, Arc<T>)>>,
}

impl<T> std::fmt::Debug for KeptWeights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.kept.lock().iter().map(|(k, _)| k.clone()).collect();
        f.debug_struct("KeptWeights").field("kept", &keys).finish()
    }
}

impl<T> KeptWeights<T> {
    pub fn new() -> Self {
        Self { kept: Mutex::new(Vec::new()) }
    }

    /// Takes the weights kept under `key`, if any.
    pub fn take(&self, key: &str) -> Option<Arc<T>> {
        let mut kept = self.kept.lock();
        let at = kept.iter().position(|(k, _)| k == key)?;
        Some(kept.remove(at).1)
    }

    /// Keeps `weights` under `key`.
    pub fn keep(&self, key: String, weights: Arc<T>) {
        let mut kept = self.kept.lock();
        kept.retain(|(k, _)| *k != key);
        kept.push((key, weights));
    }

    /// The key of model `id`'s weights from the file whose identity is
    /// `identity` (two names for one file sleep apart, as the scheduler
    /// counts them).
    pub fn key(id: &str, identity: &str) -> String {
        format!("{id}\0{identity}")
    }

    /// Drops what is kept for model `id`, whatever its file's identity was
    /// then (the file may have changed since). The weights are freed after
    /// the lock is let go.
    pub fn release_model(&self, id: &str) {
        drop(self.take_model(id, ""));
    }

    /// Takes model `id`'s weights kept under `key`; anything else kept for
    /// `id` (an older identity of its file) is dropped, outside the lock.
    pub fn take_model(&self, id: &str, key: &str) -> Option<Arc<T>> {
        let prefix = format!("{id}\0");
        let mine: Vec<(String, Arc<T>)> = {
            let mut kept = self.kept.lock();
            let (mine, others) = std::mem::take(&mut *kept).into_iter().partition(|(k, _)| k.starts_with(&prefix));
            *kept = others;
            mine
        };
        mine.into_iter().find(|(k, _)| k == key).map(|(_, w)| w)
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

/// Weights in use right now, by file (`live_key`): every running model's
/// and every draft model's a model loaded. A draft model whose file is in
/// use already shares those weights instead of loading its own copy
/// (drafter.rs). Entries hold no weights (a `Weak`); each is removed when
/// its `Live` guard drops, which a model's engine does before its weights
/// may sleep, so sleeping weights are never shared.
pub struct LiveWeights<T> {
    live: Mutex<Vec<(u64, String, std::sync::Weak<T>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// One entry of `LiveWeights`, removed on drop.
pub struct Live<T> {
    of: Arc<LiveWeights<T>>,
    id: u64,
}

impl<T> Drop for Live<T> {
    fn drop(&mut self) {
        self.of.live.lock().retain(|(id, _, _)| *id != self.id);
    }
}

impl<T> LiveWeights<T> {
    pub fn new() -> Self {
        Self { live: Mutex::new(Vec::new()), next: Default::default() }
    }

    /// Names `weights` as in use under `key` until the guard drops.
    pub fn add(self: &Arc<Self>, key: String, weights: &Arc<T>) -> Live<T> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live.lock().push((id, key, Arc::downgrade(weights)));
        Live { of: self.clone(), id }
    }

    /// Weights in use under `key`, if any (a share: they live as long as
    /// the share, whatever happens to the model that loaded them).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.live.lock().iter().filter(|(_, k, _)| k == key).find_map(|(_, _, w)| w.upgrade())
    }

}

impl<T> std::fmt::Debug for LiveWeights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.live.lock().iter().map(|(_, k, _)| k.clone()).collect();
        f.debug_struct("LiveWeights").field("live", &keys).finish()
    }
}

impl<T> Default for LiveWeights<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The key of a file's weights among those in use: the file itself (its
/// device and inode, whatever path names it: `./m.gguf`, a link to it) as
/// it is now (size, modification and change times, which any write moves).
/// One `stat`; `None` when the file cannot be read.
pub fn live_key(path: &Path) -> Option<String> {
    let s = Stamp::of(path)?;
    Some(format!("{}:{}|{}|{}|{}.{}", s.dev, s.ino, s.len, s.modified_ns, s.changed_ns.0, s.changed_ns.1))
}

fn identity_at(path: &Path, stamp: Option<Stamp>) -> String {
    let (len, modified) = stamp.map_or((0, 0), |s| (s.len, s.modified_ns));
    let print = fingerprint(path, len).map_or_else(|_| "-".to_string(), |f| format!("{f:016x}"));
    format!("{}|{len}|{modified}|{print}", path.display())
}

/// What one `stat` says of a file: cheap enough to ask on every request.
/// Besides size and modification time (which `cp -p` and `rsync -t` copy),
/// the inode and the change time, which no copy can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: u128,
    dev: u64,
    ino: u64,
    changed_ns: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let modified_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        Some(Self { len: meta.len(), modified_ns, dev: meta.dev(), ino: meta.ino(), changed_ns: (meta.ctime(), meta.ctime_nsec()) })
    }

    fn same_size_and_time(&self, other: &Self) -> bool {
        (self.len, self.modified_ns) == (other.len, other.modified_ns)
    }
}

/// The start of a file read whole into its fingerprint: a GGUF file's header
/// and metadata, where another conversion or quantization differs.
const HEAD_BYTES: u64 = 64 << 10;
/// Blocks read at evenly spaced offsets through the rest (the tensors), the
/// last one ending at the file's end.
const SAMPLES: u64 = 8;
const SAMPLE_BYTES: u64 = 4 << 10;

/// CRC-32 of the head, then CRC-32 of the sampled blocks: 96 KiB read
/// whatever the file's size. Two files that differ only between the samples
/// look the same; those written by another tool or from another model do not.
fn fingerprint(path: &Path, len: u64) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut block = Vec::with_capacity(HEAD_BYTES as usize);
    read_block(&mut file, 0, HEAD_BYTES, &mut block)?;
    let head = crc32fast::hash(&block);
    let mut samples = crc32fast::Hasher::new();
    let span = len.saturating_sub(HEAD_BYTES + SAMPLE_BYTES);
    for i in 0..SAMPLES {
        read_block(&mut file, HEAD_BYTES + span * i / (SAMPLES - 1), SAMPLE_BYTES, &mut block)?;
        samples.update(&block);
    }
    Ok(u64::from(head) << 32 | u64::from(samples.finalize()))
}

/// Reads up to `len` bytes at `offset` into `into` (fewer at the file's end).
fn read_block(file: &mut std::fs::File, offset: u64, len: u64, into: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    into.clear();
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.take(len).read_to_end(into).map(drop)
}

/// A model file as it was when loaded, to tell when the file on disk is no
/// longer that one. Asked on every request (`Engine::stale`), so it costs one
/// `stat` while nothing changed; size or modification time changed means
/// another file; only when they match but the inode or change time do not
/// (a copy with `cp -p` or `rsync -t`, or only a `chmod`) is the fingerprint
/// read again, and a file found the same is not asked about again.
pub struct LoadedFile {
    path: PathBuf,
    identity: String,
    seen: Mutex<Option<Stamp>>,
}

impl LoadedFile {
    /// The file at `path` now (reads its fingerprint: 96 KiB, once a load).
    pub fn at(path: &Path) -> Self {
        let stamp = Stamp::of(path);
        Self { path: path.to_path_buf(), identity: identity_at(path, stamp), seen: Mutex::new(stamp) }
    }

    /// The file's identity: path, size, modification time and a fingerprint
    /// of its content. The key of its kept weights and part of its saved KV
    /// states' key, so a file replaced in place is read again and its old
    /// states are never restored, even when the new file has the old one's
    /// size and modification time (`cp -p`, `rsync -t`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the file on disk is no longer the one loaded.
    pub fn changed(&self) -> bool {
        let now = Stamp::of(&self.path);
        let mut seen = self.seen.lock();
        if now == *seen {
            return false;
        }
        let (Some(now), Some(seen_stamp)) = (now, *seen) else { return true };
        if !now.same_size_and_time(&seen_stamp) || identity_at(&self.path, Some(now)) != self.identity {
            return true;
        }
        *seen = Some(now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::engine::llama::mapguard;

    #[test]
    fn live_weights_are_shared_while_their_guard_lives() {
        let live = Arc::new(LiveWeights::new());
        let a = Arc::new(1u32);
        let guard = live.add("a".into(), &a);
        let shared = live.get("a").expect("in use");
        assert!(Arc::ptr_eq(&shared, &a));
        assert!(live.get("b").is_none());
        // The registry holds no weights: dropped by everyone, gone.
        drop((a, shared));
        assert!(live.get("a").is_none());
        // A guard dropped (the model stops, its weights may sleep): no
        // longer shared, though the weights are still held.
        let b = Arc::new(2u32);
        let guard_b = live.add("b".into(), &b);
        let share = live.get("b").expect("in use");
        drop(guard_b);
        assert!(live.get("b").is_none());
        assert_eq!(Arc::strong_count(&b), 2, "the share taken before the guard dropped still counts");
        drop(share);
        assert_eq!(Arc::strong_count(&b), 1);
        drop(guard);
        assert!(live.live.lock().is_empty());
    }

    #[test]
    fn kept_weights_are_taken_once_and_released_by_key_or_model() {
        let kept = KeptWeights::new();
        kept.keep(KeptWeights::<u8>::key("ab", "/m/a.gguf|1|2|ff"), Arc::new(1));
        kept.keep(KeptWeights::<u8>::key("b", "/m/a.gguf|1|2|ff"), Arc::new(2));
        kept.keep("c".into(), Arc::new(3));
        assert_eq!(kept.take(&KeptWeights::<u8>::key("b", "/m/a.gguf|1|2|ff")).as_deref(), Some(&2), "one file, two models");
        assert!(kept.take(&KeptWeights::<u8>::key("b", "/m/a.gguf|1|2|ff")).is_none(), "taken once");
        kept.release("c");
        kept.release_model("a");
        assert_eq!(kept.len(), 1, "model `a` is not model `ab`");
        kept.release_model("ab");
        assert!(kept.is_empty());
        // A changed file: the new identity finds nothing, and the old weights go.
        kept.keep(KeptWeights::<u8>::key("m", "/m.gguf|1|old"), Arc::new(7));
        assert!(kept.take_model("m", &KeptWeights::<u8>::key("m", "/m.gguf|2|new")).is_none());
        assert!(kept.is_empty());
        kept.keep(KeptWeights::<u8>::key("m", "/m.gguf|2|new"), Arc::new(8));
        assert_eq!(kept.take_model("m", &KeptWeights::<u8>::key("m", "/m.gguf|2|new")).as_deref(), Some(&8));
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
            eog: Default::default(),
            model: Mapped { at, watched_at_unmap: watched_at_unmap.clone() },
            sleep: Err("a test".into()),
            placed: String::new(),
        };
        assert!(mapguard::watching(at));
        drop(weights);
        // Before, the model was declared (so dropped) first, while its range was still watched.
        assert!(!watched_at_unmap.load(Ordering::SeqCst));
    }

    /// A model file's path in a fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vram-llm-weights-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("m.gguf")
    }

    fn clean_up(file: &Path) {
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }

    /// The modification time the copies below keep.
    const MODIFIED: std::time::Duration = std::time::Duration::from_secs(1_700_000_000);

    /// `len` bytes of `fill`, with `at` set to `mark`.
    fn content(len: usize, fill: u8, at: usize, mark: u8) -> Vec<u8> {
        let mut bytes = vec![fill; len];
        bytes[at] = mark;
        bytes
    }

    /// Writes `bytes` to `path` with the modification time `MODIFIED`, as
    /// `cp -p` and `rsync -t` do; through a rename when `renamed` (rsync).
    fn copy_in(path: &Path, bytes: &[u8], renamed: bool) {
        let target = if renamed { path.with_extension("partial") } else { path.to_path_buf() };
        std::fs::write(&target, bytes).unwrap();
        std::fs::File::options().write(true).open(&target).unwrap().set_modified(std::time::UNIX_EPOCH + MODIFIED).unwrap();
        if renamed {
            std::fs::rename(&target, path).unwrap();
        }
    }

    #[test]
    fn a_file_replaced_in_place_gets_another_key() {
        let file = scratch("size");
        std::fs::write(&file, b"one").unwrap();
        let first = LoadedFile::at(&file);
        std::fs::write(&file, b"three").unwrap();
        assert_ne!(first.identity(), LoadedFile::at(&file).identity(), "size changed");
        assert!(first.changed());
        clean_up(&file);
    }

    #[test]
    fn files_with_the_same_size_and_mtime_have_the_same_identity_only_with_the_same_content() {
        let (file, len) = (scratch("content"), 1 << 20);
        let original = content(len, 1, 0, 1);
        copy_in(&file, &original, false);
        let first = LoadedFile::at(&file).identity().to_string();
        // Another header (another conversion), then the same header and other tensors (the last sampled block).
        for other in [content(len, 1, 0, 2), content(len, 1, len - 1, 2)] {
            copy_in(&file, &other, false);
            // Before, path, size and modification time were the whole key, and these matched.
            assert_ne!(LoadedFile::at(&file).identity(), first, "other content");
        }
        copy_in(&file, &original, false);
        assert_eq!(LoadedFile::at(&file).identity(), first, "the same content");
        clean_up(&file);
    }

    #[test]
    fn a_loaded_file_has_changed_only_once_its_content_has() {
        let (file, len) = (scratch("changed"), 200 << 10);
        copy_in(&file, &content(len, 1, 0, 1), false);
        let loaded = LoadedFile::at(&file);
        assert!(!loaded.changed());
        // The same bytes copied over (another inode), then only a chmod: the same file.
        copy_in(&file, &content(len, 1, 0, 1), true);
        assert!(!loaded.changed(), "the same content");
        let mut permissions = std::fs::metadata(&file).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&file, permissions).unwrap();
        assert!(!loaded.changed(), "only the mode changed");
        // Another file with the old size and modification time (`rsync -t`).
        copy_in(&file, &content(len, 1, len - 1, 2), true);
        assert!(loaded.changed(), "other content");
        clean_up(&file);
    }
}
