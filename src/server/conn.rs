//! The HTTP listener: connection hygiene for the router.
//!
//! axum's `serve` gives no connection cap and no timer to hyper, so a client
//! that opens connections and sends nothing holds them (and their file
//! descriptors) forever. This loop uses hyper's own HTTP/1 connection with
//! its header-read timeout, which in hyper 1.x runs from the moment a
//! connection opens and again from each response until the next request's
//! headers are in: it bounds both slow headers and idle keep-alive
//! connections. A request body that stalls between chunks for the same time
//! fails (tower-http's body timeout). Past `max_connections`, a connection is
//! answered with a 503 in the OpenAI error envelope and closed; past
//! `Refusals::at_once` such answers in flight, it is closed unread.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::RequestBodyTimeoutLayer;

use axum::response::IntoResponse;

use crate::api::error::ApiError;
use crate::metrics;

/// How connections are bounded (`--max-connections`, `--header-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; more are refused with a 503.
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, counted from
    /// when it opens and from each response; also the longest pause allowed
    /// inside a request body.
    pub header_timeout: Duration,
    /// How connections past `max_connections` are answered.
    pub refusals: Refusals,
}

/// How connections past the cap are answered: each is read (so the client
/// sees the 503 rather than a reset), which holds its descriptor until its
/// request is in or `read` has passed. Only `at_once` are read together; one
/// more is closed at once, unread, so a burst cannot use up the descriptors
/// `RESERVED_FDS` keeps for model files and the KV cache directory.
#[derive(Debug, Clone, Copy)]
pub struct Refusals {
    /// Refusals in flight at once; connections past them are dropped.
    pub at_once: usize,
    /// Time a refused connection is given to send its request's headers.
    pub read: Duration,
}

impl Default for Refusals {
    /// Half of `RESERVED_FDS`: refusals never take more than half of the
    /// descriptors kept for everything but client connections. A client that
    /// sends its request at once is answered in well under a millisecond, so
    /// 32 slots still answer thousands of refusals a second; only clients that
    /// send nothing hold theirs for the whole second.
    fn default() -> Self {
        Self { at_once: (RESERVED_FDS / 2) as usize, read: Duration::from_secs(1) }
    }
}

/// At most one log line about refused connections per this long.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but client connections: model files,
/// the KV cache directory, NVML, logs.
const RESERVED_FDS: u64 = 64;

/// The connection cap that applies: the configured one, lowered to what the
/// open-files limit leaves once `RESERVED_FDS` are kept aside (a cap above
/// it would let idle connections exhaust the descriptors and lock every
/// client out). Returns the cap and, when lowered, why.
pub fn effective_max_connections(configured: usize, open_files_limit: Option<u64>) -> (usize, Option<String>) {
    let Some(limit) = open_files_limit else { return (configured, None) };
    let room = limit.saturating_sub(RESERVED_FDS).max(1);
    if (configured as u64) <= room {
        return (configured, None);
    }
    let capped = room as usize;
    (capped, Some(format!("--max-connections {configured} lowered to {capped}: the open-files limit is {limit} (raise it with `ulimit -n`)")))
}

/// Raises the soft open-files limit to the hard one, as servers do, and
/// returns the soft limit that then applies (None where unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read or write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open connections to finish (each closes
/// after its current response).
pub async fn serve(listeners: Vec<TcpListener>, app: Router, limits: ConnLimits, shutdown: impl Future<Output = ()> + Send) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.header_timeout));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(limits.refusals.at_once));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Header names go out in Title-Case, as llama-server (cpp-httplib) sends
    // them: clients that keep headers in a plain dict look them up that way.
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true).title_case_headers(true);
    let m = metrics::global();
    let mut shutdown = pin!(shutdown);
    let mut last_refusal_log = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_any(&listeners) => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Counted before the client can see its answer (or its close).
            let slot = refusing.clone().try_acquire_owned().ok();
            let outcome = if slot.is_some() { "refused" } else { "dropped" };
            m.connections.with_label_values(&[outcome]).inc();
            // One line per burst, not per connection (a flood would fill the log).
            if last_refusal_log.is_none_or(|at: std::time::Instant| at.elapsed() >= REFUSAL_LOG_EVERY) {
                last_refusal_log = Some(std::time::Instant::now());
                tracing::warn!(%peer, max = limits.max_connections, outcome, "connection refused: --max-connections reached (vram_llm_connections_total counts them)");
            }
            match slot {
                Some(slot) => {
                    tokio::spawn(refuse(stream, limits.max_connections, limits.refusals.read, slot));
                }
                None => drop(stream),
            }
            continue;
        };
        m.connections.with_label_values(&["served"]).inc();
        let service = TowerToHyperService::new(app.clone().into_service::<Incoming>());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = OpenConnection::count(&m.connections_open);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop((open, permit));
        });
    }
    drop(listeners);
    graceful.shutdown().await;
}

/// The next connection on any of the listeners (accept is cancel-safe).
async fn accept_any(listeners: &[TcpListener]) -> io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    futures_util::future::select_all(listeners.iter().map(|l| Box::pin(l.accept()))).await.0
}

/// One connection in `vram_llm_connections_open`: counted when made and
/// uncounted when dropped, so the gauge comes down however the connection's
/// task ends (a panicking handler unwinds through it).
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn count(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accept errors are per connection (the peer left) except running out of
/// descriptors, which would otherwise spin: wait a little then.
async fn accept_error(e: io::Error) {
    let out_of_fds = matches!(e.raw_os_error(), Some(code) if code == libc::EMFILE || code == libc::ENFILE);
    if out_of_fds {
        tracing::error!("accept: {e}; waiting for connections to close");
        tokio::time::sleep(Duration::from_millis(200)).await;
    } else {
        tracing::debug!("accept: {e}");
    }
}

/// Answers a connection past the cap through hyper, like any other: its
/// request is read (within `read`), answered with the 503 envelope and the
/// connection closed; then its refusal `slot` is free again.
async fn refuse(stream: TcpStream, max: usize, read: Duration, slot: OwnedSemaphorePermit) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(read).keep_alive(false).title_case_headers(true);
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
        Ok::<_, std::convert::Infallible>(ApiError::TooManyConnections { max }.into_response())
    });
    let _ = http.serve_connection(TokioIo::new(stream), service).await;
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(effective_max_connections(1024, None), (1024, None));
        assert_eq!(effective_max_connections(1024, Some(65536)), (1024, None));
        let (cap, why) = effective_max_connections(1024, Some(256));
        assert_eq!(cap, 192);
        assert!(why.unwrap().contains("open-files limit is 256"));
        assert_eq!(effective_max_connections(10, Some(16)).0, 1);
    }

    #[test]
    fn an_open_connection_is_uncounted_even_when_its_task_panics() {
        let gauge = prometheus::IntGauge::new("open", "test").unwrap();
        let task = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _open = OpenConnection::count(&gauge);
            assert_eq!(gauge.get(), 1);
            panic!("a handler panicked");
        }));
        assert!(task.is_err());
        // Before, the decrement after `conn.await` never ran and the gauge stayed at 1.
        assert_eq!(gauge.get(), 0);
    }
}
