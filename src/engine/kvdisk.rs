//! The host KV cache's directory (`--kv-cache-dir`): saved sequence states
//! kept as files, so a conversation's cache outlives a restart of the
//! server. One file per saved sequence, bounded by a byte budget, least
//! recently used first out (a file's modification time is its last use, so
//! the order survives restarts too).
//!
//! A file restores only under the key it was saved with, and the key names
//! the model file's identity (path, size, modification time, a content
//! fingerprint; `weights::LoadedFile` in the llama engine) and the
//! context layout: a model file replaced in place never gets an old state.
//! Every file carries a CRC-32 of its payload; one that does not match (a
//! crash mid-write, a truncated copy) is deleted, never handed to llama.cpp.
//!
//! File layout: the magic `VLKV\x01\0\0\0`, a little-endian u32 header
//! length, a JSON header (key, tokens, flags, payload length, CRC-32), the
//! payload.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::kvstore::PrefixStore;

const MAGIC: &[u8; 8] = b"VLKV\x01\0\0\0";
const EXTENSION: &str = "vlkv";
/// Headers longer than this are not ours (a token list of a million tokens
/// fits).
const MAX_HEADER: usize = 16 << 20;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Header {
    key: String,
    tokens: Vec<u32>,
    flags: u32,
    len: u64,
    crc32: u32,
}

/// A saved sequence found in the directory for a prompt.
#[derive(Debug)]
pub struct OnDisk {
    pub tokens: Arc<Vec<u32>>,
    pub path: Arc<PathBuf>,
    /// How many leading prompt tokens it holds.
    pub shared: usize,
}

/// The directory and an index of its files' headers.
#[derive(Debug)]
pub struct KvDir {
    dir: PathBuf,
    index: Mutex<PrefixStore<PathBuf>>,
}

impl KvDir {
    /// Opens (creates) `dir` and indexes the files already there, oldest
    /// use first; files beyond `budget_bytes`, unreadable headers and
    /// leftovers of interrupted writes are deleted.
    pub fn open(dir: &Path, budget_bytes: usize) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create the KV cache directory {}: {e}", dir.display()))?;
        let listing = fs::read_dir(dir).map_err(|e| format!("cannot read the KV cache directory {}: {e}", dir.display()))?;
        let mut found = Vec::new();
        for entry in listing.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let used = entry.metadata().and_then(|m| m.modified()).ok();
            match read_header(&path) {
                Some((header, size)) => found.push((used, header, path, size)),
                None => {
                    tracing::warn!(file = %path.display(), "not a saved KV state; deleted");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(used, ..)| *used);
        let mut index = PrefixStore::new(budget_bytes);
        for (_, header, path, size) in found {
            for gone in index.insert(&header.key, header.tokens, path, size as usize) {
                let _ = fs::remove_file(&*gone);
            }
        }
        if !index.is_empty() {
            tracing::info!(dir = %dir.display(), states = index.len(), mib = index.used_bytes() >> 20, "saved KV states found");
        }
        Ok(Self { dir: dir.to_path_buf(), index: Mutex::new(index) })
    }

    pub fn len(&self) -> usize {
        self.index.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn used_bytes(&self) -> usize {
        self.index.lock().used_bytes()
    }

    /// Whether a file for `tokens` under `key` would add anything.
    pub fn worth_writing(&self, key: &str, tokens: &[u32]) -> bool {
        self.index.lock().worth_saving(key, tokens)
    }

    /// Writes a saved sequence (to a temporary name, then renamed, so a
    /// reader never sees half a file) and indexes it; the files it extends
    /// and the least recently used beyond the budget are deleted.
    pub fn write(&self, key: &str, tokens: &[u32], flags: u32, payload: &[u8]) -> std::io::Result<()> {
        if !self.worth_writing(key, tokens) {
            return Ok(());
        }
        let header = Header {
            key: key.to_string(),
            tokens: tokens.to_vec(),
            flags,
            len: payload.len() as u64,
            crc32: crc32fast::hash(payload),
        };
        let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let name = format!("{:016x}.{EXTENSION}", name_hash(key, tokens));
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut file = std::io::BufWriter::new(fs::File::create(&tmp)?);
            file.write_all(MAGIC)?;
            file.write_all(&(header.len() as u32).to_le_bytes())?;
            file.write_all(&header)?;
            file.write_all(payload)?;
            file.flush()?;
        }
        fs::rename(&tmp, &path)?;
        let size = (MAGIC.len() + 4 + header.len() + payload.len()) as usize;
        for gone in self.index.lock().insert(key, tokens.to_vec(), path, size) {
            let _ = fs::remove_file(&*gone);
        }
        Ok(())
    }

    /// The file sharing the longest prefix with `prompt` under `key`, if it
    /// shares more than `at_least` tokens.
    pub fn best(&self, key: &str, prompt: &[u32], at_least: usize) -> Option<OnDisk> {
        let found = self.index.lock().best(key, prompt, at_least)?;
        Some(OnDisk { tokens: found.tokens, path: found.blob, shared: found.shared })
    }

    /// Reads a file `best` found: its flags and payload, after checking that
    /// it still holds `tokens` under `key` and its checksum matches. A file
    /// that does not is deleted and forgotten.
    pub fn read(&self, key: &str, found: &OnDisk) -> Option<(u32, Vec<u8>)> {
        match read_file(&found.path, key, &found.tokens) {
            Ok(read) => {
                // Its modification time is its last use.
                if let Ok(file) = fs::File::options().write(true).open(&*found.path) {
                    let _ = file.set_modified(std::time::SystemTime::now());
                }
                Some(read)
            }
            Err(why) => {
                tracing::warn!(file = %found.path.display(), "saved KV state unusable ({why}); deleted");
                self.forget(key, &found.tokens);
                let _ = fs::remove_file(&*found.path);
                None
            }
        }
    }

    /// Deletes the file of a saved sequence (it failed to restore).
    pub fn forget(&self, key: &str, tokens: &[u32]) {
        for gone in self.index.lock().forget(key, tokens) {
            let _ = fs::remove_file(&*gone);
        }
    }
}

/// A file name for a key and token list (FNV-1a, 64 bits): the same
/// sequence saved again replaces its file.
fn name_hash(key: &str, tokens: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = key.bytes().chain(tokens.iter().flat_map(|t| t.to_le_bytes()));
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The header of a file and the file's size, if it is one of ours.
fn read_header(path: &Path) -> Option<(Header, u64)> {
    let mut file = fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let header = header_of(&mut file).ok()?;
    (size >= header.len).then_some((header, size))
}

fn header_of(file: &mut impl Read) -> Result<Header, String> {
    let mut start = [0u8; 12];
    file.read_exact(&mut start).map_err(|e| format!("short file: {e}"))?;
    if &start[..8] != MAGIC {
        return Err("wrong magic".into());
    }
    let len = u32::from_le_bytes(start[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err("header too long".into());
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).map_err(|e| format!("short header: {e}"))?;
    serde_json::from_slice(&header).map_err(|e| format!("bad header: {e}"))
}

fn read_file(path: &Path, key: &str, tokens: &[u32]) -> Result<(u32, Vec<u8>), String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    // The size of the file we read, not of whatever the path names later.
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut file = std::io::BufReader::new(file);
    let header = header_of(&mut file)?;
    if header.key != key || header.tokens != tokens {
        return Err("another sequence".into());
    }
    // Only whole-sequence states are saved (flags 0); the flags are outside
    // the checksum, so anything else is refused rather than trusted.
    if header.flags != 0 {
        return Err(format!("unexpected state flags {}", header.flags));
    }
    if header.len > size {
        return Err(format!("the header says {} payload bytes but the file has {size}", header.len));
    }
    let mut payload = Vec::with_capacity(header.len as usize);
    file.read_to_end(&mut payload).map_err(|e| e.to_string())?;
    if payload.len() as u64 != header.len {
        return Err(format!("{} payload bytes, header says {}", payload.len(), header.len));
    }
    if crc32fast::hash(&payload) != header.crc32 {
        return Err("checksum mismatch".into());
    }
    Ok((header.flags, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("vram-llm-kvdisk-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn seq(from: u32, n: u32) -> Vec<u32> {
        (from..from + n).collect()
    }

    fn files(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_saved_state_is_found_again_after_reopening() {
        let tmp = TempDir::new("reopen");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 50), 0, b"fifty").unwrap();
        dir.write("m", &seq(0, 80), 0, b"eighty").unwrap();
        assert_eq!(dir.len(), 1, "the longer save replaced the shorter");
        assert_eq!(files(&tmp.0), 1);
        drop(dir);

        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        let prompt = seq(0, 90);
        let found = dir.best("m", &prompt, 0).unwrap();
        assert_eq!(found.shared, 80);
        assert_eq!(dir.read("m", &found), Some((0, b"eighty".to_vec())));
        assert!(dir.best("other model", &prompt, 0).is_none());
        assert!(dir.best("m", &prompt, 80).is_none(), "must share more than asked");
    }

    #[test]
    fn a_corrupted_file_is_deleted_not_restored() {
        let tmp = TempDir::new("corrupt");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 40), 0, b"the payload").unwrap();
        let path = fs::read_dir(&tmp.0).unwrap().next().unwrap().unwrap().path();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let found = dir.best("m", &seq(0, 41), 0).unwrap();
        assert_eq!(dir.read("m", &found), None);
        assert!(dir.is_empty());
        assert_eq!(files(&tmp.0), 0);
        // Flags other than a whole sequence's are not trusted either.
        dir.write("m", &seq(500, 40), 2, b"partial").unwrap();
        let found = dir.best("m", &seq(500, 41), 0).unwrap();
        assert_eq!(dir.read("m", &found), None);
    }

    #[test]
    fn foreign_and_half_written_files_are_handled_on_open() {
        let tmp = TempDir::new("foreign");
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join("notes.txt"), b"the user's").unwrap();
        fs::write(tmp.0.join("0000000000000001.vlkv"), b"VLKV garbage").unwrap();
        fs::write(tmp.0.join(".0000000000000002.vlkv.tmp"), b"interrupted").unwrap();
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        assert!(dir.is_empty());
        assert!(tmp.0.join("notes.txt").exists(), "not ours: left alone");
        assert_eq!(files(&tmp.0), 1);
    }

    #[test]
    fn the_budget_deletes_the_least_recently_used_files() {
        let tmp = TempDir::new("budget");
        let payload = vec![7u8; 1000];
        // Room for two files (a file is its payload plus a header).
        let dir = KvDir::open(&tmp.0, 2 * 1000 + 2 * 400).unwrap();
        dir.write("m", &seq(0, 40), 0, &payload).unwrap();
        dir.write("m", &seq(100, 40), 0, &payload).unwrap();
        let a = dir.best("m", &seq(0, 41), 0).expect("a");
        assert!(dir.read("m", &a).is_some());
        dir.write("m", &seq(200, 40), 0, &payload).unwrap();
        assert!(dir.best("m", &seq(100, 41), 0).is_none(), "b was the least recently used");
        assert!(dir.best("m", &seq(0, 41), 0).is_some());
        assert_eq!(files(&tmp.0), 2);
        drop(dir);
        // Reopened with room for one: the most recently written stays.
        let dir = KvDir::open(&tmp.0, 1000 + 400).unwrap();
        assert_eq!(dir.len(), 1);
        assert_eq!(files(&tmp.0), 1);
    }
}
