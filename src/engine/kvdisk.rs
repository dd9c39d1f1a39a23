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
//! Every file ends with a CRC-32 of everything before it (header and
//! payload): one that does not match (a crash mid-write, a truncated or
//! edited copy, one file's payload under another's header) is deleted,
//! never handed to llama.cpp. A file that cannot be read for a passing
//! reason (no descriptor free, an I/O error) is kept for the next lookup.
//!
//! File layout: the magic `VLKV\x02\0\0\0`, a little-endian u32 header
//! length, a JSON header (key, tokens, and each saved part's flags, length
//! in tokens and in bytes), the parts, the CRC-32. The parts: the whole
//! sequence (flags 0), then its checkpoints (flags 1, llama.cpp's
//! `PARTIAL_ONLY`: the sliding-window state at that many tokens), shortest
//! first. Files of the first layout (`VLKV\x01`) are not read (deleted at
//! open).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::kvstore::{PrefixStore, Usable};

const MAGIC: &[u8; 8] = b"VLKV\x02\0\0\0";
const EXTENSION: &str = "vlkv";
/// Headers longer than this are not ours (a token list of a million tokens
/// fits).
const MAX_HEADER: usize = 16 << 20;
/// The flags of a whole sequence's state and of a checkpoint's.
pub const WHOLE: u32 = 0;
pub const PARTIAL: u32 = 1;

/// One part of a saved sequence as it goes to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    /// [`WHOLE`] for the first part, [`PARTIAL`] for a checkpoint.
    pub flags: u32,
    /// The tokens the part holds (a checkpoint: the length it was taken at).
    pub tokens: usize,
    pub bytes: &'a [u8],
}

/// A part read back from a file whose checksum matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPart {
    pub flags: u32,
    pub tokens: usize,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Header {
    key: String,
    tokens: Vec<u32>,
    parts: Vec<PartHeader>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PartHeader {
    flags: u32,
    tokens: usize,
    len: u64,
}

impl Header {
    /// The checkpoint lengths, if the parts are what we write: one whole
    /// sequence of `tokens`, then checkpoints within it, ascending.
    fn marks(&self) -> Result<Vec<usize>, String> {
        let Some((whole, checkpoints)) = self.parts.split_first() else { return Err("no parts".into()) };
        if whole.flags != WHOLE || whole.tokens != self.tokens.len() {
            return Err(format!("the first part is not the whole sequence (flags {}, {} tokens)", whole.flags, whole.tokens));
        }
        let marks: Vec<usize> = checkpoints.iter().map(|p| p.tokens).collect();
        if checkpoints.iter().any(|p| p.flags != PARTIAL) || marks.windows(2).any(|w| w[0] >= w[1]) || marks.last().is_some_and(|&m| m > self.tokens.len()) {
            return Err("checkpoints out of order or of unexpected flags".into());
        }
        Ok(marks)
    }

    fn payload_len(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }
}

/// A saved sequence found in the directory for a prompt.
#[derive(Debug)]
pub struct OnDisk {
    pub tokens: Arc<Vec<u32>>,
    pub path: Arc<PathBuf>,
    /// How many leading prompt tokens it serves.
    pub shared: usize,
}

/// The directory and an index of its files' headers.
#[derive(Debug)]
pub struct KvDir {
    dir: PathBuf,
    index: Mutex<PrefixStore<PathBuf>>,
}

/// Why a file was not read.
#[derive(Debug, PartialEq)]
enum Unread {
    /// It is not there any more.
    Gone,
    /// A passing failure (descriptors, I/O): the file stays.
    Passing(String),
    /// It is not a state we can trust: the file goes.
    Bad(String),
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
                Ok((header, marks, size)) => found.push((used, header, marks, path, size)),
                Err(Unread::Bad(why)) => {
                    tracing::warn!(file = %path.display(), "not a saved KV state ({why}); deleted");
                    let _ = fs::remove_file(&path);
                }
                Err(why) => tracing::warn!(file = %path.display(), "saved KV state not indexed now: {why:?}"),
            }
        }
        found.sort_by_key(|(used, ..)| *used);
        let mut index = PrefixStore::new(budget_bytes);
        for (_, header, marks, path, size) in found {
            for gone in index.insert(&header.key, header.tokens, marks, path, size as usize) {
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
    /// and the least recently used beyond the budget are deleted. `parts`:
    /// the whole sequence first, then its checkpoints, shortest first.
    pub fn write(&self, key: &str, tokens: &[u32], parts: &[Part<'_>]) -> std::io::Result<()> {
        if !self.worth_writing(key, tokens) {
            return Ok(());
        }
        let header = Header {
            key: key.to_string(),
            tokens: tokens.to_vec(),
            parts: parts.iter().map(|p| PartHeader { flags: p.flags, tokens: p.tokens, len: p.bytes.len() as u64 }).collect(),
        };
        let marks = header.marks().map_err(std::io::Error::other)?;
        let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let name = format!("{:016x}.{EXTENSION}", name_hash(key, tokens));
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| -> std::io::Result<usize> {
            let mut file = Checksummed::new(std::io::BufWriter::new(fs::File::create(&tmp)?));
            file.write_all(MAGIC)?;
            file.write_all(&(header.len() as u32).to_le_bytes())?;
            file.write_all(&header)?;
            for part in parts {
                file.write_all(part.bytes)?;
            }
            let crc = file.crc.clone().finalize();
            file.write_all(&crc.to_le_bytes())?;
            file.inner.flush()?;
            Ok(file.written)
        })();
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                // A full disk, say: no half file is left behind.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &path)?;
        for gone in self.index.lock().insert(key, tokens.to_vec(), marks, path, size) {
            let _ = fs::remove_file(&*gone);
        }
        Ok(())
    }

    /// The file serving the longest prefix of `prompt` under `key` (as
    /// `usable` counts it), if more than `at_least` tokens.
    pub fn best(&self, key: &str, prompt: &[u32], at_least: usize, usable: Usable<'_>) -> Option<OnDisk> {
        let found = self.index.lock().best(key, prompt, at_least, usable)?;
        Some(OnDisk { tokens: found.tokens, path: found.blob, shared: found.shared })
    }

    /// Reads a file `best` found: its parts, after checking that it still
    /// holds `tokens` under `key` and its checksum matches. A file that
    /// does not is deleted and forgotten; one that cannot be read now (no
    /// descriptor free, an I/O error) stays for the next lookup.
    pub fn read(&self, key: &str, found: &OnDisk) -> Option<Vec<ReadPart>> {
        match read_file(&found.path, key, &found.tokens) {
            Ok(read) => {
                // Its modification time is its last use.
                if let Ok(file) = fs::File::options().write(true).open(&*found.path) {
                    let _ = file.set_modified(std::time::SystemTime::now());
                }
                Some(read)
            }
            Err(Unread::Passing(why)) => {
                tracing::warn!(file = %found.path.display(), "saved KV state not readable now ({why}); kept");
                None
            }
            Err(Unread::Gone) => {
                self.index.lock().forget(key, &found.tokens);
                None
            }
            Err(Unread::Bad(why)) => {
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

/// A writer that keeps a CRC-32 of what went through it.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: usize,
}

impl<W: Write> Checksummed<W> {
    fn new(inner: W) -> Self {
        Self { inner, crc: crc32fast::Hasher::new(), written: 0 }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

/// An I/O error that says nothing about the file's contents.
fn passing(e: std::io::Error) -> Unread {
    match e.kind() {
        std::io::ErrorKind::NotFound => Unread::Gone,
        std::io::ErrorKind::UnexpectedEof => Unread::Bad(format!("short file: {e}")),
        _ => Unread::Passing(e.to_string()),
    }
}

/// The header of a file, its checkpoint lengths and the file's size, if it
/// is one of ours (the checksum is checked when the file is read).
fn read_header(path: &Path) -> Result<(Header, Vec<usize>, u64), Unread> {
    let mut file = fs::File::open(path).map_err(passing)?;
    let size = file.metadata().map_err(passing)?.len();
    let (header, header_len) = header_of(&mut file)?;
    let marks = header.marks().map_err(Unread::Bad)?;
    let expected = (MAGIC.len() + 4 + header_len) as u64 + header.payload_len() + 4;
    if size != expected {
        return Err(Unread::Bad(format!("{size} bytes, the header says {expected}")));
    }
    Ok((header, marks, size))
}

/// The header and its length in bytes.
fn header_of(file: &mut impl Read) -> Result<(Header, usize), Unread> {
    let mut start = [0u8; 12];
    file.read_exact(&mut start).map_err(passing)?;
    if &start[..8] != MAGIC {
        return Err(Unread::Bad("wrong magic (another layout or not ours)".into()));
    }
    let len = u32::from_le_bytes(start[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err(Unread::Bad("header too long".into()));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).map_err(passing)?;
    let header = serde_json::from_slice(&header).map_err(|e| Unread::Bad(format!("bad header: {e}")))?;
    Ok((header, len))
}

fn read_file(path: &Path, key: &str, tokens: &[u32]) -> Result<Vec<ReadPart>, Unread> {
    let mut bytes = Vec::new();
    fs::File::open(path).map_err(passing)?.read_to_end(&mut bytes).map_err(passing)?;
    let Some(body_len) = bytes.len().checked_sub(4) else { return Err(Unread::Bad("short file".into())) };
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(Unread::Bad("checksum mismatch".into()));
    }
    let mut reader = body;
    let (header, header_len) = header_of(&mut reader)?;
    if header.key != key || header.tokens != tokens {
        return Err(Unread::Bad("another sequence".into()));
    }
    header.marks().map_err(Unread::Bad)?;
    if header.payload_len() != (body.len() - MAGIC.len() - 4 - header_len) as u64 {
        return Err(Unread::Bad("the payload is not the length the header says".into()));
    }
    let mut at = MAGIC.len() + 4 + header_len;
    Ok(header
        .parts
        .iter()
        .map(|p| {
            let part = ReadPart { flags: p.flags, tokens: p.tokens, bytes: body[at..at + p.len as usize].to_vec() };
            at += p.len as usize;
            part
        })
        .collect())
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

    fn whole(tokens: usize, bytes: &[u8]) -> Vec<Part<'_>> {
        vec![Part { flags: WHOLE, tokens, bytes }]
    }

    fn all(_held: usize, _marks: &[usize], shared: usize) -> usize {
        shared
    }

    fn the_file(dir: &Path) -> PathBuf {
        fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()
    }

    #[test]
    fn a_saved_state_is_found_again_after_reopening() {
        let tmp = TempDir::new("reopen");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 50), &whole(50, b"fifty")).unwrap();
        dir.write("m", &seq(0, 80), &whole(80, b"eighty")).unwrap();
        assert_eq!(dir.len(), 1, "the longer save replaced the shorter");
        assert_eq!(files(&tmp.0), 1);
        drop(dir);

        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        let prompt = seq(0, 90);
        let found = dir.best("m", &prompt, 0, &all).unwrap();
        assert_eq!(found.shared, 80);
        assert_eq!(dir.read("m", &found), Some(vec![ReadPart { flags: WHOLE, tokens: 80, bytes: b"eighty".to_vec() }]));
        assert!(dir.best("other model", &prompt, 0, &all).is_none());
        assert!(dir.best("m", &prompt, 80, &all).is_none(), "must share more than asked");
    }

    #[test]
    fn checkpoints_are_saved_with_their_sequence_and_indexed_again_after_reopening() {
        let tmp = TempDir::new("checkpoints");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        let parts = [
            Part { flags: WHOLE, tokens: 90, bytes: b"whole" },
            Part { flags: PARTIAL, tokens: 40, bytes: b"at forty" },
            Part { flags: PARTIAL, tokens: 70, bytes: b"at seventy" },
        ];
        dir.write("m", &seq(0, 90), &parts).unwrap();
        drop(dir);
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        // Serves only up to the checkpoint below where the prompt leaves it.
        let usable = |_held: usize, marks: &[usize], shared: usize| marks.iter().copied().filter(|&m| m <= shared).max().unwrap_or(0);
        let mut prompt = seq(0, 60);
        prompt.push(5000);
        let found = dir.best("m", &prompt, 0, &usable).unwrap();
        assert_eq!(found.shared, 40);
        let read = dir.read("m", &found).unwrap();
        assert_eq!(read.iter().map(|p| (p.flags, p.tokens, p.bytes.as_slice())).collect::<Vec<_>>(), [(WHOLE, 90, &b"whole"[..]), (PARTIAL, 40, b"at forty"), (PARTIAL, 70, b"at seventy")]);
        // Parts out of order are refused at write.
        let bad = [Part { flags: WHOLE, tokens: 90, bytes: b"w" }, Part { flags: PARTIAL, tokens: 95, bytes: b"p" }];
        assert!(dir.write("m", &seq(500, 90), &bad).is_err());
    }

    #[test]
    fn a_corrupted_file_is_deleted_not_restored() {
        let tmp = TempDir::new("corrupt");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 40), &whole(40, b"the payload")).unwrap();
        let path = the_file(&tmp.0);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 6;
        bytes[at] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let found = dir.best("m", &seq(0, 41), 0, &all).unwrap();
        assert_eq!(dir.read("m", &found), None);
        assert!(dir.is_empty());
        assert_eq!(files(&tmp.0), 0);
    }

    #[test]
    fn one_sequences_payload_under_another_sequences_header_is_caught() {
        // Same length, so sizes match: only a checksum over the header and
        // the payload together tells.
        let tmp = TempDir::new("swapped");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 40), &whole(40, b"AAAA")).unwrap();
        let a = fs::read(the_file(&tmp.0)).unwrap();
        fs::remove_file(the_file(&tmp.0)).unwrap();
        dir.forget("m", &seq(0, 40));
        dir.write("m", &seq(100, 40), &whole(40, b"BBBB")).unwrap();
        let b_path = the_file(&tmp.0);
        let mut b = fs::read(&b_path).unwrap();
        // B's header, A's payload and A's checksum (which covered A's payload).
        let n = b.len();
        b[n - 8..].copy_from_slice(&a[a.len() - 8..]);
        fs::write(&b_path, &b).unwrap();
        let found = dir.best("m", &seq(100, 41), 0, &all).unwrap();
        assert_eq!(dir.read("m", &found), None);
        assert_eq!(files(&tmp.0), 0);
    }

    #[test]
    fn a_file_that_cannot_be_read_now_is_kept() {
        let tmp = TempDir::new("passing");
        let dir = KvDir::open(&tmp.0, 1 << 20).unwrap();
        dir.write("m", &seq(0, 40), &whole(40, b"state")).unwrap();
        let path = the_file(&tmp.0);
        // A directory where the file was: opening works, reading fails
        // with an I/O error that says nothing about the saved state.
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let found = dir.best("m", &seq(0, 41), 0, &all).unwrap();
        assert_eq!(dir.read("m", &found), None);
        assert_eq!(dir.len(), 1, "still indexed");
        fs::remove_dir(&path).unwrap();
        fs::write(&path, saved).unwrap();
        let found = dir.best("m", &seq(0, 41), 0, &all).unwrap();
        assert!(dir.read("m", &found).is_some(), "read once it is readable again");
        // The kinds of error: running out of descriptors passes, a short file does not.
        assert!(matches!(passing(std::io::Error::from_raw_os_error(libc::EMFILE)), Unread::Passing(_)));
        assert!(matches!(passing(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)), Unread::Bad(_)));
        assert_eq!(passing(std::io::Error::from(std::io::ErrorKind::NotFound)), Unread::Gone);
    }

    #[test]
    fn foreign_old_and_half_written_files_are_handled_on_open() {
        let tmp = TempDir::new("foreign");
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join("notes.txt"), b"the user's").unwrap();
        fs::write(tmp.0.join("0000000000000001.vlkv"), b"VLKV garbage").unwrap();
        fs::write(tmp.0.join("0000000000000003.vlkv"), b"VLKV\x01\0\0\0\x02\0\0\0{}").unwrap();
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
        dir.write("m", &seq(0, 40), &whole(40, &payload)).unwrap();
        dir.write("m", &seq(100, 40), &whole(40, &payload)).unwrap();
        let a = dir.best("m", &seq(0, 41), 0, &all).expect("a");
        assert!(dir.read("m", &a).is_some());
        dir.write("m", &seq(200, 40), &whole(40, &payload)).unwrap();
        assert!(dir.best("m", &seq(100, 41), 0, &all).is_none(), "b was the least recently used");
        assert!(dir.best("m", &seq(0, 41), 0, &all).is_some());
        assert_eq!(files(&tmp.0), 2);
        drop(dir);
        // Reopened with room for one: the most recently written stays.
        let dir = KvDir::open(&tmp.0, 1000 + 400).unwrap();
        assert_eq!(dir.len(), 1);
        assert_eq!(files(&tmp.0), 1);
    }
}
