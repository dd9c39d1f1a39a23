//! Reading a model file ahead of its load: once the scheduler knows which
//! model loads next (it evicts for it, or waits for others to drain), the
//! kernel is asked to read the file into the page cache in the background
//! (`posix_fadvise(WILLNEED)`), so the load itself does not wait on the disk.

use std::path::Path;

/// Asks the kernel to read `path` ahead. Best effort: errors are logged at
/// debug level and otherwise ignored. Blocking (opens the file): call it
/// off the async runtime.
pub fn read_ahead(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!(path = %path.display(), "no read-ahead: {e}");
            return;
        }
    };
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        tracing::debug!(path = %path.display(), rc, "posix_fadvise(WILLNEED) failed");
    } else {
        tracing::debug!(path = %path.display(), "reading ahead");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reading_ahead_a_missing_or_real_file_never_fails() {
        super::read_ahead(std::path::Path::new("/definitely/not/here.gguf"));
        let file = std::env::temp_dir().join(format!("vram-llm-readahead-{}", std::process::id()));
        std::fs::write(&file, b"some bytes").unwrap();
        super::read_ahead(&file);
        let _ = std::fs::remove_file(&file);
    }
}
