//! Memory-mapped weights and a model file changed under them.
//!
//! On the CPU llama.cpp maps the GGUF file (read-only, shared): the weights
//! are the file's pages. Truncating the file in place (`cp new.gguf
//! model.gguf` opens it with O_TRUNC) turns every later read past the new end
//! into a SIGBUS, whose default action kills the whole server. Two ways out:
//! copy the weights at load (`--no-mmap`: nothing can fault, but every load
//! reads the whole file and an evicted model keeps nothing, so swaps get
//! slower), or catch the fault where it happens. `--no-mmap` stays an option;
//! by default a SIGBUS handler scoped to our weight mappings does the rest:
//!
//! - A fault inside a registered mapping: the handler maps zero pages over
//!   the rest of that mapping (the faulting read, and every later one, reads
//!   zeros instead of faulting) and flags the mapping. The model's worker sees
//!   the flag after its step, fails its generations ("the model file changed
//!   on disk"), and the scheduler unloads the model; the next request loads
//!   the file again, or fails cleanly while it is still broken.
//! - A fault anywhere else: the previous handler is put back and the read
//!   faults again into it (Rust's own handler, then the default action), so
//!   a real bus error still stops the process as before.
//!
//! The handler uses atomics, `mmap` and `sigaction` only (system calls; not
//! on POSIX's async-signal-safe list in name, but plain syscalls on Linux).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings watched at once (each loaded or kept model's file has a few).
const SLOTS: usize = 64;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    /// The end of this slot's mapping when it holds `addr`.
    fn end_if_holding(&self, addr: usize) -> Option<usize> {
        let (start, end) = (self.start.load(Ordering::Acquire), self.end.load(Ordering::Acquire));
        (start != 0 && addr >= start && addr < end).then_some(end)
    }
}

/// Whether a live `MapGuard` watches `addr` (for tests of what drops first).
#[cfg(test)]
pub(super) fn watching(addr: usize) -> bool {
    REGISTRY.iter().any(|slot| slot.end_if_holding(addr).is_some())
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
static mut PREVIOUS: Option<libc::sigaction> = None;

/// The address ranges of `path`'s mappings in this process, from
/// /proc/self/maps (empty where that cannot be read).
pub fn mappings_of(path: &Path) -> Vec<(usize, usize)> {
    let Ok(path) = std::fs::canonicalize(path) else { return Vec::new() };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return Vec::new() };
    let wanted = path.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode   pathname
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let name = fields.nth(4)?.trim_start();
            (name == wanted).then_some(())?;
            let (start, end) = range.split_once('-')?;
            Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
        })
        .collect()
}

/// Watches some mappings for as long as it lives.
#[derive(Debug, Default)]
pub struct MapGuard {
    slots: Vec<usize>,
}

impl MapGuard {
    /// Watches `ranges` (the mappings a load added). Slots run out only with
    /// dozens of models mapped at once; the rest then go unwatched.
    pub fn watch(ranges: &[(usize, usize)]) -> Self {
        if ranges.is_empty() {
            return Self::default();
        }
        install();
        let mut slots = Vec::new();
        for &(start, end) in ranges {
            let free = REGISTRY.iter().position(|s| {
                s.end.load(Ordering::Acquire) == 0 && s.start.compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire).is_ok()
            });
            let Some(i) = free else {
                tracing::warn!("too many mapped model files to watch for truncation; one is unwatched");
                break;
            };
            REGISTRY[i].faulted.store(false, Ordering::Release);
            REGISTRY[i].end.store(end, Ordering::Release);
            slots.push(i);
        }
        Self { slots }
    }

    /// True once a read of a watched mapping found its file shorter.
    pub fn faulted(&self) -> bool {
        self.slots.iter().any(|&i| REGISTRY[i].faulted.load(Ordering::Acquire))
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        for &i in &self.slots {
            REGISTRY[i].end.store(0, Ordering::Release);
            REGISTRY[i].start.store(0, Ordering::Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf and sigaction with valid pointers; PREVIOUS is
        // written once here, before the handler can run.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
                PREVIOUS = Some(previous);
            }
        }
    });
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    let mut handled = false;
    for slot in &REGISTRY {
        let Some(end) = slot.end_if_holding(addr) else { continue };
        let from = addr & !(page - 1);
        // SAFETY: replaces part of a read-only file mapping we registered
        // with anonymous zero pages at the same addresses.
        let mapped = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            handled = true;
        }
    }
    if !handled {
        // Not ours: the previous handler takes this fault when the read runs again.
        // SAFETY: PREVIOUS was set before this handler was installed.
        unsafe {
            #[allow(static_mut_refs)]
            match &PREVIOUS {
                Some(previous) => libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()),
                None => libc::signal(libc::SIGBUS, libc::SIG_DFL) as libc::c_int,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_read_past_the_end_of_a_truncated_mapped_file_reads_zeros_and_is_flagged() {
        let dir = std::env::temp_dir().join(format!("vram-llm-mapguard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weights.bin");
        let page = 4096 * 4;
        std::fs::File::create(&path).unwrap().write_all(&vec![7u8; page * 2]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a fresh read-only shared mapping of a file we own.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), page * 2, libc::PROT_READ, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&file), 0)
        };
        assert_ne!(base, libc::MAP_FAILED);
        let ranges = mappings_of(&path);
        assert_eq!(ranges, vec![(base as usize, base as usize + page * 2)]);
        let guard = MapGuard::watch(&ranges);
        let read = |offset: usize| unsafe { std::ptr::read_volatile((base as *const u8).add(offset)) };
        assert_eq!(read(page + 1), 7);
        assert!(!guard.faulted());

        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(page as u64).unwrap();
        // Before, this read killed the process with SIGBUS.
        assert_eq!(read(page + 1), 0);
        assert!(guard.faulted());
        assert_eq!(read(1), 7, "the part still in the file is untouched");

        drop(guard);
        // SAFETY: unmapping what this test mapped.
        unsafe { libc::munmap(base, page * 2) };
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
