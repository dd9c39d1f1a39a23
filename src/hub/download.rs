//! Downloads into the Hugging Face cache, laid out as huggingface_hub and
//! llama.cpp lay it out (`blobs/<sha256>`, `snapshots/<commit>/<file>` a
//! link to it, `refs/main`), so a file any of them fetched is never fetched
//! again. A file is written to `blobs/<sha256>.incomplete` (huggingface_hub's
//! name, so either can resume the other's), resumed with a range request
//! after a dropped connection or a restart, checked against the hub's size
//! and SHA-256, and only then renamed into place: a half or corrupt file is
//! never served. `.locks/` (huggingface_hub's) keeps two downloaders of one
//! file from writing it at once.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::names::{self, RepoTag};
use super::remote::{self, Hub, Listing, RemoteFile};

/// How many times a dropped transfer is resumed before giving up.
pub const ATTEMPTS: u32 = 6;
/// Room left on the disk beyond the file, so a download never fills it.
const SPARE_BYTES: u64 = 64 << 20;

/// A file's progress, reported as its bytes arrive.
#[derive(Debug, Clone)]
pub struct Progress {
    pub file: String,
    pub done: u64,
    pub total: Option<u64>,
}

pub type OnProgress = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The model `wanted` names (or its `file`), downloaded into `cache` unless
/// it is there (no request is made then); its path (the first part of a
/// split model). `offline` downloads nothing.
pub async fn fetch_model(hub: &Hub, cache: &Path, wanted: &RepoTag, file: Option<&str>, offline: bool, on: &OnProgress) -> Result<PathBuf, String> {
    if let Some(path) = super::cache::find(cache, wanted, file) {
        // Whoever put it there (llama.cpp, huggingface_hub, an earlier run).
        return Ok(path);
    }
    if offline {
        return Err(format!("`{}`: not in the Hugging Face cache ({}) and --offline downloads nothing", wanted.name(), cache.display()));
    }
    let listing = hub.listing(&wanted.repo, "main").await?;
    let first = choose(&listing, wanted, file)?;
    let mut paths = Vec::new();
    for part in names::split_parts(&first) {
        let remote = listing
            .files
            .iter()
            .find(|f| f.name == part)
            .ok_or_else(|| format!("`{}`: split part `{part}` is missing from the repository", wanted.repo))?;
        paths.push(fetch_file(hub, cache, &listing, remote, on).await?);
    }
    Ok(paths.swap_remove(0))
}

/// A GGUF at a plain `https://` (or `http://`) URL, downloaded unless it is
/// there: `<cache>/urls/<16 hex of the URL's sha256>-<file name>`. The size
/// comes from the server (a HEAD); there is no hash to check it against.
pub async fn fetch_url(hub: &Hub, cache: &Path, url: &str, offline: bool, on: &OnProgress) -> Result<PathBuf, String> {
    let (key, name) = url_parts(url)?;
    let dest = url_dest(cache, url)?;
    if dest.is_file() {
        return Ok(dest);
    }
    if offline {
        return Err(format!("`{url}`: not downloaded yet ({}) and --offline downloads nothing", dest.display()));
    }
    // The hub's token is for the hub: never sent to another server.
    let hub = &Hub { token: None, ..hub.clone() };
    let head = hub.http.head(url).send().await.map_err(|e| format!("`{url}`: cannot reach it ({e})"))?;
    let head = remote::check(head, false).await.map_err(|e| format!("`{url}`: {e}"))?;
    let size = head.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let file = RemoteFile { name, size, blob_id: None, lfs: None };
    let _lock = lock(&cache.join(".locks").join("urls").join(format!("{key}.lock"))).await?;
    if !dest.is_file() {
        download(hub, url, &format!("`{url}`"), &file, &dest, on).await?;
    }
    Ok(dest)
}

/// Where `fetch_url` keeps `url`'s file.
pub fn url_dest(cache: &Path, url: &str) -> Result<PathBuf, String> {
    let (key, name) = url_parts(url)?;
    Ok(cache.join("urls").join(format!("{key}-{name}")))
}

/// A URL's key (16 hex of its sha256) and its file's name (the last path
/// segment, no query); an error for what is not an http(s) URL.
pub fn url_parts(url: &str) -> Result<(String, String), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("`{url}`: only https:// and http:// URLs are downloaded"));
    }
    let name = parsed.path_segments().and_then(|mut s| s.next_back()).filter(|n| !n.is_empty()).unwrap_or("model.gguf");
    let key: String = Sha256::digest(url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok((key, name.to_string()))
}

/// The file of the listing that `wanted` (or `file`) names.
pub fn choose(listing: &Listing, wanted: &RepoTag, file: Option<&str>) -> Result<String, String> {
    let names: Vec<&str> = listing.files.iter().map(|f| f.name.as_str()).collect();
    if let Some(file) = file {
        return names.contains(&file).then(|| file.to_string()).ok_or_else(|| format!("`{}` has no file `{file}`", wanted.repo));
    }
    match names::pick_model(&names, &wanted.tag) {
        Some(i) => Ok(names[i].to_string()),
        None => {
            let tags = names::quant_tags(&names);
            let offers = if tags.is_empty() { "no GGUF model file at all".to_string() } else { format!("these quants: {}", tags.join(", ")) };
            let what = if wanted.tag.is_empty() { "a GGUF model file".to_string() } else { format!("a `{}` model file", wanted.tag) };
            Err(format!("`{}` has no {what}; it offers {offers}", wanted.repo))
        }
    }
}

/// One file of a listing, downloaded unless cached; its snapshot path.
pub async fn fetch_file(hub: &Hub, cache: &Path, listing: &Listing, file: &RemoteFile, on: &OnProgress) -> Result<PathBuf, String> {
    let repo_dir = cache.join(names::repo_folder(&listing.repo));
    let snapshot = repo_dir.join("snapshots").join(&listing.commit).join(&file.name);
    let blob_name = file.blob_name().ok_or_else(|| format!("`{}` file `{}`: the hub lists no id for it", listing.repo, file.name))?;
    let blob = repo_dir.join("blobs").join(blob_name);
    let size_ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| file.expected_size().is_none_or(|s| m.len() == s));
    if !(snapshot.is_file() && size_ok(&snapshot)) {
        let lock_path = cache.join(".locks").join(names::repo_folder(&listing.repo)).join(format!("{blob_name}.lock"));
        let _lock = lock(&lock_path).await?;
        if !size_ok(&blob) {
            let url = hub.file_url(&listing.repo, &listing.commit, &file.name);
            download(hub, &url, &format!("`{}` file `{}`", listing.repo, file.name), file, &blob, on).await?;
        }
        link(&blob, &snapshot).map_err(|e| format!("cannot link {} to its blob: {e}", snapshot.display()))?;
    }
    write_ref(&repo_dir, &listing.commit).map_err(|e| format!("cannot write {}/refs/main: {e}", repo_dir.display()))?;
    Ok(snapshot)
}

/// The bytes of `file` (at `url`) into `blob`, through `blob.incomplete`;
/// `what` names it in errors.
async fn download(hub: &Hub, url: &str, what: &str, file: &RemoteFile, blob: &Path, on: &OnProgress) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{what}: {e}");
    let dir = blob.parent().expect("a blob is in blobs/");
    std::fs::create_dir_all(dir).map_err(io)?;
    let temp = PathBuf::from(format!("{}.incomplete", blob.display()));
    let mut out = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&temp).map_err(io)?;
    let total = file.expected_size();
    let mut hashed = Hashed::default();
    let mut failures = 0;
    // Large files over several connections, when the server takes ranges
    // (a fresh file, or one they began); else the loop, over one.
    let have = out.metadata().map_err(io)?.len();
    let parallel = match total.filter(|&t| t >= super::parallel::MIN_BYTES) {
        Some(size) if have == 0 || super::parallel::parts_path(&temp).exists() => {
            check_space(dir, size.saturating_sub(have)).map_err(|e| format!("{what}: {e}"))?;
            super::parallel::fetch(hub, url, &temp, size, &file.name, on).await.map_err(|e| format!("{what}: {e}"))?
        }
        _ => false,
    };
    while !parallel {
        let have = out.metadata().map_err(io)?.len();
        if total.is_some_and(|t| have > t) {
            out.set_len(0).map_err(io)?;
            continue;
        }
        if let Some(total) = total {
            check_space(dir, total - have).map_err(|e| format!("{what}: {e}"))?;
        }
        if total == Some(have) {
            break;
        }
        match transfer(hub, url, &mut out, have, &mut hashed, file, on).await {
            Ok(Transfer::Complete) => break,
            Ok(Transfer::Restart) => {
                out.set_len(0).map_err(io)?;
                hashed = Hashed::default();
            }
            Err(Fatal(e)) => return Err(format!("{what}: {e}")),
            Err(Retry(e)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(format!("{what}: {e} ({ATTEMPTS} tries; run again to resume from the {} bytes kept)", out.metadata().map_or(0, |m| m.len())));
                }
                tracing::warn!("{what}: {e}; resuming (try {}/{ATTEMPTS})", failures + 1);
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    }
    let len = out.metadata().map_err(io)?.len();
    if let Some(want) = total.filter(|&t| t != len) {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("{what}: {len} bytes arrived, the hub lists {want}; the file was removed"));
    }
    if let Some(lfs) = &file.lfs {
        let got = hashed.finish(&mut out).map_err(io)?;
        if !got.eq_ignore_ascii_case(&lfs.sha256) {
            let _ = std::fs::remove_file(&temp);
            return Err(format!("{what}: sha256 {got} does not match the hub's sha256 {}; the file was removed", lfs.sha256));
        }
    }
    out.sync_all().map_err(io)?;
    std::fs::rename(&temp, blob).map_err(io)
}

enum Transfer {
    Complete,
    /// The server sent the whole file again: start over.
    Restart,
}

enum Failure {
    Fatal(String),
    Retry(String),
}
use Failure::{Fatal, Retry};

/// One request for the bytes from `have` on, appended to `out`.
async fn transfer(hub: &Hub, url: &str, out: &mut std::fs::File, have: u64, hashed: &mut Hashed, file: &RemoteFile, on: &OnProgress) -> Result<Transfer, Failure> {
    let mut req = hub.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| Retry(format!("cannot reach {url}: {e}")))?;
    let status = resp.status().as_u16();
    if status == 416 {
        return Ok(Transfer::Restart);
    }
    let resp = remote::check(resp, hub.token.is_some()).await.map_err(|e| {
        if status >= 500 {
            Retry(e)
        } else {
            Fatal(e)
        }
    })?;
    if have > 0 && status != 206 {
        return Ok(Transfer::Restart);
    }
    out.seek(SeekFrom::Start(have)).map_err(|e| Fatal(e.to_string()))?;
    let mut done = have;
    let mut body = resp.bytes_stream();
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                buffered.flush().map_err(|e| Fatal(e.to_string()))?;
                return Err(Retry(format!("the transfer broke after {done} bytes: {e}")));
            }
        };
        buffered.write_all(&chunk).map_err(|e| Fatal(e.to_string()))?;
        hashed.update(done, &chunk);
        done += chunk.len() as u64;
        on(&Progress { file: file.name.clone(), done, total: file.expected_size() });
    }
    buffered.flush().map_err(|e| Fatal(e.to_string()))?;
    match file.expected_size() {
        Some(total) if done < total => Err(Retry(format!("the transfer ended after {done} of {total} bytes"))),
        _ => Ok(Transfer::Complete),
    }
}

/// A SHA-256 over the file's first `upto` bytes, fed as they arrive; bytes
/// kept from an earlier run are read back once, at the end.
#[derive(Default)]
struct Hashed {
    hasher: Sha256,
    /// Bytes hashed so far, all from the start of the file.
    upto: u64,
    /// Where the streamed bytes of this run began, when not at `upto`.
    gap: Option<u64>,
}

impl Hashed {
    fn update(&mut self, at: u64, bytes: &[u8]) {
        if self.gap.is_none() && at == self.upto {
            self.hasher.update(bytes);
            self.upto += bytes.len() as u64;
        } else if self.gap.is_none() {
            self.gap = Some(at);
        }
    }

    /// The digest of the whole file (read again when the stream did not
    /// cover it from byte 0).
    fn finish(self, file: &mut std::fs::File) -> std::io::Result<String> {
        let digest = if self.gap.is_none() && self.upto == file.metadata()?.len() {
            self.hasher.finalize()
        } else {
            let mut hasher = Sha256::new();
            file.seek(SeekFrom::Start(0))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hasher.finalize()
        };
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Refuses early when the disk cannot take `needed` more bytes.
fn check_space(dir: &Path, needed: u64) -> Result<(), String> {
    let Some(free) = free_bytes(dir) else { return Ok(()) };
    if free < needed + SPARE_BYTES {
        return Err(format!("{} needs {} MiB more but the disk holding it has {} MiB free", dir.display(), needed >> 20, free >> 20));
    }
    Ok(())
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct statvfs fills.
    (unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// An exclusive lock on `path` (created), held until the guard drops.
async fn lock(path: &Path) -> Result<std::fs::File, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(path.parent().expect("a lock is in .locks/")).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(file)
    })
    .await
    .map_err(|e| format!("lock task: {e}"))?
}

/// `snapshot` as a relative link to `blob` (replacing what was there).
fn link(blob: &Path, snapshot: &Path) -> std::io::Result<()> {
    let parent = snapshot.parent().expect("a snapshot file has a folder");
    std::fs::create_dir_all(parent)?;
    let repo_dir = blob.parent().and_then(Path::parent).expect("blobs/ is in the repository folder");
    let depth = parent.strip_prefix(repo_dir).map(|p| p.components().count()).unwrap_or(2);
    let target = Path::new(&"../".repeat(depth)).join("blobs").join(blob.file_name().expect("a blob has a name"));
    let _ = std::fs::remove_file(snapshot);
    std::os::unix::fs::symlink(target, snapshot)
}

fn write_ref(repo_dir: &Path, commit: &str) -> std::io::Result<()> {
    let refs = repo_dir.join("refs");
    std::fs::create_dir_all(&refs)?;
    if std::fs::read_to_string(refs.join("main")).is_ok_and(|t| t.trim() == commit) {
        return Ok(());
    }
    let temp = refs.join(format!("main.{}.tmp", std::process::id()));
    std::fs::write(&temp, commit)?;
    std::fs::rename(temp, refs.join("main"))
}
