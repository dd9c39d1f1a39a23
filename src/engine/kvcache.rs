//! The host KV cache every model's worker shares: saved sequence states in
//! memory ([`PrefixStore`], `--kv-cache-mib`) and, with `--kv-cache-dir`, in
//! a directory ([`KvDir`]) that outlives the process. A state saved to
//! memory is written to the directory behind the worker's back (a writer
//! thread), so saving never waits on the disk; a lookup that finds a longer
//! prefix on disk than in memory reads the file and keeps it in memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

use super::kvdisk::{KvDir, Part, ReadPart};
use super::kvstore::{Found, PrefixStore, Usable};

/// A saved state that can live in a file.
pub trait Persist: Send + Sync + Sized + 'static {
    /// What goes to the file: the whole sequence, then its checkpoints
    /// (see `kvdisk::Part`).
    fn parts(&self) -> Vec<Part<'_>>;
    /// Rebuilds a state from a file whose checksum matched.
    fn from_parts(parts: Vec<ReadPart>) -> Self;
}

/// The checkpoint lengths among a saved state's parts.
fn marks<B: Persist>(blob: &B) -> Vec<usize> {
    blob.parts().iter().skip(1).map(|p| p.tokens).collect()
}

fn payload_len<B: Persist>(blob: &B) -> usize {
    blob.parts().iter().map(|p| p.bytes.len()).sum()
}

struct Write<B> {
    key: String,
    tokens: Vec<u32>,
    blob: Arc<B>,
}

/// What the host KV cache holds (for /admin/status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct KvCacheUsage {
    pub memory_states: usize,
    pub memory_mib: u64,
    pub disk_states: usize,
    pub disk_mib: u64,
    /// Lookups that found a saved sequence serving a prompt, and how many
    /// of those read it from the directory.
    pub found: u64,
    pub found_on_disk: u64,
}

pub struct HostKvCache<B> {
    mem: Mutex<PrefixStore<B>>,
    disk: Option<Arc<KvDir>>,
    writer: Mutex<Option<(mpsc::Sender<Write<B>>, std::thread::JoinHandle<()>)>>,
    /// Bytes queued for the writer, bounded by `pending_max`: a disk slower
    /// than the saves skips writes rather than holding evicted states.
    pending: Arc<AtomicUsize>,
    pending_max: usize,
    found: AtomicU64,
    found_on_disk: AtomicU64,
}

impl<B> std::fmt::Debug for HostKvCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKvCache").field("disk", &self.disk).finish_non_exhaustive()
    }
}

impl<B: Persist> HostKvCache<B> {
    /// A cache of `memory_bytes` in memory, plus `disk` when given.
    pub fn new(memory_bytes: usize, disk: Option<KvDir>) -> Self {
        let disk = disk.map(Arc::new);
        let pending = Arc::new(AtomicUsize::new(0));
        let writer = disk.clone().map(|dir| {
            let (tx, rx) = mpsc::channel::<Write<B>>();
            let pending = pending.clone();
            let thread = std::thread::Builder::new()
                .name("kv-cache-writer".into())
                .spawn(move || {
                    for w in rx {
                        let bytes = payload_len(&*w.blob);
                        if let Err(e) = dir.write(&w.key, &w.tokens, &w.blob.parts()) {
                            tracing::warn!("writing a saved KV state failed: {e}");
                        }
                        pending.fetch_sub(bytes, Ordering::AcqRel);
                    }
                })
                .expect("spawn the KV cache writer");
            (tx, thread)
        });
        Self {
            mem: Mutex::new(PrefixStore::new(memory_bytes)),
            disk,
            writer: Mutex::new(writer),
            pending,
            pending_max: memory_bytes.max(64 << 20),
            found: Default::default(),
            found_on_disk: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.mem.lock().enabled() || self.disk.is_some()
    }

    /// Whether saving `tokens` under `key` would add anything.
    pub fn worth_saving(&self, key: &str, tokens: &[u32]) -> bool {
        self.mem.lock().worth_saving(key, tokens) || self.disk.as_ref().is_some_and(|d| d.worth_writing(key, tokens))
    }

    /// Saves a sequence in memory and queues it for the directory.
    pub fn insert(&self, key: &str, tokens: Vec<u32>, blob: B, bytes: usize) {
        let blob = Arc::new(blob);
        if self.disk.as_ref().is_some_and(|d| d.worth_writing(key, &tokens)) {
            self.queue_write(key, &tokens, blob.clone());
        }
        self.mem.lock().insert(key, tokens, marks(&*blob), blob, bytes);
    }

    fn queue_write(&self, key: &str, tokens: &[u32], blob: Arc<B>) {
        let bytes = payload_len(&*blob);
        // One state is always accepted, however large; more wait their turn
        // only up to the bound.
        let pending = self.pending.load(Ordering::Acquire);
        if pending > 0 && pending + bytes > self.pending_max {
            tracing::debug!(bytes, "the KV cache directory is behind; this state is kept in memory only");
            return;
        }
        let writer = self.writer.lock();
        let Some((tx, _)) = writer.as_ref() else { return };
        self.pending.fetch_add(bytes, Ordering::AcqRel);
        if tx.send(Write { key: key.to_string(), tokens: tokens.to_vec(), blob }).is_err() {
            self.pending.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The saved sequence serving the longest prefix of `prompt` under
    /// `key` (as `usable` counts it), from memory or, when the directory has
    /// a longer one, from its file; only if it serves more than `at_least`
    /// tokens.
    pub fn best(&self, key: &str, prompt: &[u32], at_least: usize, usable: Usable<'_>) -> Option<Found<B>> {
        let found = self.lookup(key, prompt, at_least, usable);
        if found.is_some() {
            self.found.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn lookup(&self, key: &str, prompt: &[u32], at_least: usize, usable: Usable<'_>) -> Option<Found<B>> {
        let in_memory = self.mem.lock().best(key, prompt, at_least, usable);
        let Some(disk) = &self.disk else { return in_memory };
        let floor = in_memory.as_ref().map_or(at_least, |f| f.shared.max(at_least));
        let Some(on_disk) = disk.best(key, prompt, floor, usable) else { return in_memory };
        let Some(parts) = disk.read(key, &on_disk) else { return in_memory };
        let bytes = parts.iter().map(|p| p.bytes.len()).sum();
        let blob = Arc::new(B::from_parts(parts));
        tracing::debug!(tokens = on_disk.shared, bytes, "read a saved KV state from the directory");
        self.found_on_disk.fetch_add(1, Ordering::Relaxed);
        self.mem.lock().insert(key, on_disk.tokens.to_vec(), marks(&*blob), blob.clone(), bytes);
        Some(Found { tokens: on_disk.tokens, blob, shared: on_disk.shared })
    }

    /// Forgets a saved sequence that failed to restore, in memory and on disk.
    pub fn forget(&self, key: &str, tokens: &[u32]) {
        self.mem.lock().forget(key, tokens);
        if let Some(disk) = &self.disk {
            disk.forget(key, tokens);
        }
    }

    /// Waits until every queued state is in the directory; later saves stay
    /// in memory only. Called once every model has unloaded, at shutdown.
    pub fn flush(&self) {
        let Some((tx, thread)) = self.writer.lock().take() else { return };
        drop(tx);
        let _ = thread.join();
    }

    pub fn usage(&self) -> KvCacheUsage {
        let mem = self.mem.lock();
        KvCacheUsage {
            memory_states: mem.len(),
            memory_mib: (mem.used_bytes() >> 20) as u64,
            disk_states: self.disk.as_ref().map_or(0, |d| d.len()),
            disk_mib: self.disk.as_ref().map_or(0, |d| (d.used_bytes() >> 20) as u64),
            found: self.found.load(Ordering::Relaxed),
            found_on_disk: self.found_on_disk.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::kvdisk::WHOLE;
    use crate::engine::kvstore::all_shared;

    /// A whole sequence of `.0` tokens saved as `.1`.
    #[derive(Debug, PartialEq)]
    struct Blob(usize, Vec<u8>);

    impl Persist for Blob {
        fn parts(&self) -> Vec<Part<'_>> {
            vec![Part { flags: WHOLE, tokens: self.0, bytes: &self.1 }]
        }
        fn from_parts(parts: Vec<ReadPart>) -> Self {
            Blob(parts[0].tokens, parts[0].bytes.clone())
        }
    }

    fn seq(from: u32, n: u32) -> Vec<u32> {
        (from..from + n).collect()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vram-llm-kvcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_state_saved_before_a_restart_is_restored_after_it() {
        let dir = temp_dir("restart");
        let cache = HostKvCache::<Blob>::new(1 << 20, Some(KvDir::open(&dir, 1 << 20).unwrap()));
        cache.insert("m", seq(0, 60), Blob(60, b"state".to_vec()), 5);
        cache.flush();
        drop(cache);

        let cache = HostKvCache::<Blob>::new(1 << 20, Some(KvDir::open(&dir, 1 << 20).unwrap()));
        assert_eq!(cache.usage().memory_states, 0);
        assert_eq!(cache.usage().disk_states, 1);
        let found = cache.best("m", &seq(0, 70), 32, &all_shared).expect("found on disk");
        assert_eq!((found.shared, &*found.blob), (60, &Blob(60, b"state".to_vec())));
        assert_eq!(cache.usage().memory_states, 1, "kept in memory once read");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_is_asked_first_and_the_disk_only_for_a_longer_prefix() {
        let dir = temp_dir("longer");
        let cache = HostKvCache::<Blob>::new(1 << 20, Some(KvDir::open(&dir, 1 << 20).unwrap()));
        cache.insert("m", seq(0, 80), Blob(80, b"long".to_vec()), 4);
        cache.flush();
        // Memory loses the long one; a shorter one stays in memory only.
        cache.forget_in_memory("m", &seq(0, 80));
        cache.insert("m", seq(0, 40), Blob(40, b"short".to_vec()), 5);
        let mut branch = seq(0, 40);
        branch.push(999);
        assert_eq!(&*cache.best("m", &branch, 0, &all_shared).unwrap().blob, &Blob(40, b"short".to_vec()), "the disk has nothing longer");
        assert_eq!(cache.usage().memory_states, 1, "nothing read from the disk");
        assert_eq!(&*cache.best("m", &seq(0, 90), 0, &all_shared).unwrap().blob, &Blob(80, b"long".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_directory_only_memory_is_used() {
        let cache = HostKvCache::<Blob>::new(100, None);
        cache.insert("m", seq(0, 40), Blob(40, vec![1]), 1);
        assert!(cache.best("m", &seq(0, 41), 0, &all_shared).is_some());
        cache.forget("m", &seq(0, 40));
        assert!(cache.best("m", &seq(0, 41), 0, &all_shared).is_none());
        assert!(!HostKvCache::<Blob>::new(0, None).enabled());
    }

    impl<B: Persist> HostKvCache<B> {
        fn forget_in_memory(&self, key: &str, tokens: &[u32]) {
            self.mem.lock().forget(key, tokens);
        }
    }
}
