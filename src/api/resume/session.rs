//! The stream sessions behind llama-server's resumable streams: each
//! conversation id holds at most one session, either pending (its request
//! waits for a model or a slot) or live (the stream's bytes, kept in a
//! capped buffer any number of readers drain from any offset). A finished
//! session stays readable for `TTL`; a stopped one goes at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a finished stream can be read again (llama-server's 300 s).
pub const TTL: Duration = Duration::from_secs(300);
/// The bytes a session keeps; older ones are dropped from the front.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Sessions kept at once; past it the oldest finished one goes first.
pub const MAX_SESSIONS: usize = 1024;

/// One stream's bytes, shared by its producer and its readers.
pub struct Session {
    pub conversation_id: String,
    /// Unix seconds.
    pub started_at: u64,
    buffer: Mutex<Buffer>,
    /// Bumped on every append and at the end, so readers wake.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Bytes dropped from the front to keep the cap.
    dropped: usize,
    /// No more bytes will come (finished, stopped or replaced).
    done: bool,
    /// When it finished: unix seconds (reported) and the instant (expiry).
    completed: Option<(u64, Instant)>,
    cap: usize,
}

/// What `lookup` reports of a session (llama-server's fields).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionInfo {
    pub conversation_id: String,
    pub is_done: bool,
    pub total_bytes: usize,
    pub started_at: u64,
    /// 0 while it runs.
    pub completed_at: u64,
}

/// Why a read cannot start.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No session for the id (never started, stopped, or expired).
    Unknown,
    /// Its request has not started streaming yet.
    Pending,
    /// The offset fell off the front of the buffer.
    OffsetLost { first_kept: usize },
}

impl Session {
    fn new(conversation_id: String, cap: usize) -> Arc<Session> {
        let (changed, _) = watch::channel(0);
        let buffer = Mutex::new(Buffer { cap, ..Buffer::default() });
        Arc::new(Session { conversation_id, started_at: crate::types::unix_now(), buffer, changed })
    }

    /// Appends the stream's next bytes; false once the session is done.
    pub fn append(&self, data: &[u8]) -> bool {
        {
            let mut b = self.buffer.lock();
            if b.done {
                return false;
            }
            b.bytes.extend_from_slice(data);
            let over = b.bytes.len().saturating_sub(b.cap);
            if over > 0 {
                b.bytes.drain(..over);
                b.dropped += over;
            }
        }
        self.changed.send_modify(|v| *v += 1);
        true
    }

    /// No more bytes: readers finish once they have read everything.
    pub fn finish(&self) {
        {
            let mut b = self.buffer.lock();
            if b.done {
                return;
            }
            b.done = true;
            b.completed = Some((crate::types::unix_now(), Instant::now()));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn info(&self) -> SessionInfo {
        let b = self.buffer.lock();
        SessionInfo {
            conversation_id: self.conversation_id.clone(),
            is_done: b.done,
            total_bytes: b.dropped + b.bytes.len(),
            started_at: self.started_at,
            completed_at: b.completed.map_or(0, |(unix, _)| unix),
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.buffer.lock().completed.is_some_and(|(_, at)| now.duration_since(at) >= TTL)
    }

    fn finished_at(&self) -> Option<Instant> {
        self.buffer.lock().completed.map(|(_, at)| at)
    }

    /// The bytes from `from` on, then each new one as it comes, until the
    /// session is done (or bytes past the reader's offset are dropped).
    pub fn read_from(self: Arc<Self>, from: usize) -> Result<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send, ReadError> {
        let first_kept = self.buffer.lock().dropped;
        if from < first_kept {
            return Err(ReadError::OffsetLost { first_kept });
        }
        let rx = self.changed.subscribe();
        Ok(futures_util::stream::unfold((self, from, rx), |(session, mut offset, mut rx)| async move {
            loop {
                rx.borrow_and_update();
                let next = {
                    let b = session.buffer.lock();
                    if offset < b.dropped {
                        return None;
                    }
                    let local = offset - b.dropped;
                    if local < b.bytes.len() {
                        Some(Bytes::copy_from_slice(&b.bytes[local..]))
                    } else if b.done {
                        return None;
                    } else {
                        None
                    }
                };
                if let Some(chunk) = next {
                    offset += chunk.len();
                    return Some((Ok(chunk), (session, offset, rx)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        }))
    }
}

enum Slot {
    /// The request waits for its model or a slot; aborting the task
    /// cancels it.
    Pending,
    Live(Arc<Session>),
}

struct Entry {
    /// Which request holds the id (a new one replaces an old one).
    ticket: u64,
    slot: Slot,
    /// The task that runs the request and copies its stream.
    task: Option<AbortHandle>,
}

impl Entry {
    /// Stops its request and ends its session for every reader.
    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Slot::Live(session) = self.slot {
            session.finish();
        }
    }
}

/// Every conversation's session. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<String, Entry>,
    next_ticket: u64,
}

impl Registry {
    /// Drops what expired and, past `MAX_SESSIONS`, the oldest finished.
    fn collect(&mut self, now: Instant) {
        self.entries.retain(|_, e| !matches!(&e.slot, Slot::Live(s) if s.expired(now)));
        while self.entries.len() >= MAX_SESSIONS {
            let oldest = self
                .entries
                .iter()
                .filter_map(|(id, e)| match &e.slot {
                    Slot::Live(s) => s.finished_at().map(|at| (at, id.clone())),
                    Slot::Pending => None,
                })
                .min();
            match oldest {
                Some((_, id)) => {
                    self.entries.remove(&id);
                }
                None => break,
            }
        }
    }
}

impl Sessions {
    /// A new request holds the id: the request that held it before is
    /// stopped. Returns its ticket.
    pub fn begin(&self, conversation_id: &str) -> u64 {
        let mut r = self.inner.lock();
        r.collect(Instant::now());
        r.next_ticket += 1;
        let ticket = r.next_ticket;
        let old = r.entries.insert(conversation_id.to_string(), Entry { ticket, slot: Slot::Pending, task: None });
        drop(r);
        if let Some(old) = old {
            old.stop();
        }
        ticket
    }

    /// The task running the request of `ticket` (aborted by a stop).
    /// False if the request no longer holds the id (stopped meanwhile).
    pub fn attach(&self, conversation_id: &str, ticket: u64, task: AbortHandle) -> bool {
        let mut r = self.inner.lock();
        match r.entries.get_mut(conversation_id) {
            Some(e) if e.ticket == ticket => {
                e.task = Some(task);
                true
            }
            _ => false,
        }
    }

    /// The request's stream starts: a live session, or `None` if the
    /// request no longer holds the id.
    pub fn go_live(&self, conversation_id: &str, ticket: u64) -> Option<Arc<Session>> {
        let mut r = self.inner.lock();
        let e = r.entries.get_mut(conversation_id).filter(|e| e.ticket == ticket)?;
        let session = Session::new(conversation_id.to_string(), MAX_BYTES);
        e.slot = Slot::Live(session.clone());
        Some(session)
    }

    /// The request answered without a stream (an error, say): the id is free.
    pub fn forget(&self, conversation_id: &str, ticket: u64) {
        let mut r = self.inner.lock();
        if r.entries.get(conversation_id).is_some_and(|e| e.ticket == ticket) {
            r.entries.remove(conversation_id);
        }
    }

    /// A reader for the id's stream from byte `from`.
    pub fn read(&self, conversation_id: &str, from: usize) -> Result<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send, ReadError> {
        let session = {
            let mut r = self.inner.lock();
            r.collect(Instant::now());
            match r.entries.get(conversation_id).map(|e| &e.slot) {
                None => return Err(ReadError::Unknown),
                Some(Slot::Pending) => return Err(ReadError::Pending),
                Some(Slot::Live(s)) => s.clone(),
            }
        };
        session.read_from(from)
    }

    /// The user's stop: cancels the request (waiting or generating) and
    /// forgets its session. False if the id held nothing.
    pub fn stop(&self, conversation_id: &str) -> bool {
        let entry = self.inner.lock().entries.remove(conversation_id);
        entry.map(Entry::stop).is_some()
    }

    /// The sessions of the ids asked for: each id matches itself and every
    /// `<id>::<model>` (llama-server's per-model variant). Never lists ids
    /// nobody asked about.
    pub fn lookup(&self, ids: &[String]) -> Vec<SessionInfo> {
        let mut r = self.inner.lock();
        r.collect(Instant::now());
        let mut found: Vec<SessionInfo> = r
            .entries
            .iter()
            .filter(|(id, _)| ids.iter().any(|asked| matches_asked(asked, id)))
            .map(|(id, e)| match &e.slot {
                Slot::Live(s) => s.info(),
                Slot::Pending => SessionInfo {
                    conversation_id: id.clone(),
                    is_done: false,
                    total_bytes: 0,
                    started_at: 0,
                    completed_at: 0,
                },
            })
            .collect();
        found.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
        found
    }
}

/// Does a lookup for `asked` cover the session `id`?
pub fn matches_asked(asked: &str, id: &str) -> bool {
    !asked.is_empty() && (id == asked || id.strip_prefix(asked).is_some_and(|rest| rest.starts_with("::")))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
