//! Connection hygiene (issue 14, item 3): idle and slow connections are
//! closed, and past --max-connections a connection gets a 503 envelope
//! instead of holding a file descriptor the server needs; past the refusals
//! in flight, it is closed unread (issue 29).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fake_spec, fake_state, roomy_limits, serve_limited, FakeFactory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vram_llm::server::conn::{ConnLimits, Refusals};

/// Long enough that nothing in these tests waits on it by accident.
const NEVER: Duration = Duration::from_secs(600);
/// Bounds the wait for the server to act, so a broken build fails rather than hangs.
const BOUND: Duration = Duration::from_secs(60);

async fn server(limits: ConnLimits) -> String {
    let state = fake_state(vec![fake_spec("fake")], Arc::new(FakeFactory::new("ok")), roomy_limits(), 1 << 20, true);
    serve_limited(state, limits).await
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection; returns what came.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut out)).await.expect("the server closed the connection").ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let base = server(ConnLimits { max_connections: 8, header_timeout: Duration::from_millis(300), refusals: Refusals::default() }).await;
    let mut silent = TcpStream::connect(addr(&base)).await.unwrap();
    // Before, this connection stayed open for as long as the client liked.
    assert_eq!(read_to_close(&mut silent).await, "");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let base = server(ConnLimits { max_connections: 8, header_timeout: Duration::from_secs(2), refusals: Refusals::default() }).await;
    let mut conn = TcpStream::connect(addr(&base)).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503_envelope_until_one_closes() {
    let base = server(ConnLimits { max_connections: 2, header_timeout: NEVER, refusals: Refusals::default() }).await;
    let held: Vec<TcpStream> = vec![TcpStream::connect(addr(&base)).await.unwrap(), TcpStream::connect(addr(&base)).await.unwrap()];
    // Connections are accepted in order, so these two hold both places.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let refused = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("connection limit (2)"), "{body}");

    drop(held);
    // Once the server has seen them close, a new connection is served.
    let served = tokio::time::timeout(BOUND, async {
        loop {
            let status = client.get(format!("{base}/health")).send().await.unwrap().status();
            if status == 200 {
                return;
            }
            assert_eq!(status, 503);
            tokio::task::yield_now().await;
        }
    });
    served.await.expect("a place was freed");
}

/// Sends a request on a new connection; returns what came back before the
/// server closed it (nothing when it was closed unread).
async fn request_once(base: &str) -> String {
    let mut conn = TcpStream::connect(addr(base)).await.unwrap();
    // The server may have closed it already: then the write fails or the read is reset.
    let _ = conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    read_to_close(&mut conn).await
}

#[tokio::test]
async fn past_the_refusals_in_flight_a_connection_is_closed_unread_until_one_ends() {
    let refusals = Refusals { at_once: 2, read: NEVER };
    let base = server(ConnLimits { max_connections: 1, header_timeout: NEVER, refusals }).await;
    // Accepted in order: the first is served, the next two are refused and
    // hold both refusal slots by saying nothing.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&base)).await.unwrap());
    }
    let dropped = || vram_llm::metrics::global().connections.with_label_values(&["dropped"]).get();
    let dropped_before = dropped();
    // Before, this one was read and answered too: every refusal held a
    // descriptor for up to a second, however many came.
    assert_eq!(request_once(&base).await, "", "closed without a byte");
    assert!(dropped() > dropped_before, "counted as dropped");

    drop(held.split_off(1));
    // Once the server has seen the refusals close, a refusal is answered again.
    let answer = tokio::time::timeout(BOUND, async {
        loop {
            let answer = request_once(&base).await;
            if !answer.is_empty() {
                return answer;
            }
            tokio::task::yield_now().await;
        }
    });
    let answer = answer.await.expect("a refusal slot was freed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    drop(held);
}

#[tokio::test]
async fn a_request_body_that_stalls_fails_and_frees_the_connection() {
    let base = server(ConnLimits { max_connections: 8, header_timeout: Duration::from_secs(1), refusals: Refusals::default() }).await;
    let mut conn = TcpStream::connect(addr(&base)).await.unwrap();
    let head = "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"prompt\":";
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("cannot read request body"), "{answer}");
}

/// `--host 127.0.0.1,::1`: one server on several listeners, one cap over all.
#[tokio::test]
async fn several_listeners_share_one_server_and_one_cap() {
    let state = fake_state(vec![fake_spec("fake")], Arc::new(FakeFactory::new("ok")), roomy_limits(), 1 << 20, true);
    let (a, b) = (tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let limits = ConnLimits { max_connections: 2, header_timeout: NEVER, refusals: Refusals::default() };
    tokio::spawn(vram_llm::server::conn::serve(vec![a, b], vram_llm::api::router(state), limits, std::future::pending()));
    // One kept-alive connection served through each listener: both places taken.
    let mut held = Vec::new();
    for addr in [a_addr, b_addr] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(BOUND, conn.read(&mut buf)).await.expect("an answer").unwrap();
            assert!(n > 0, "closed early through {addr}");
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"), "{addr}");
        held.push(conn);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let refused = tokio::time::timeout(BOUND, client.get(format!("http://{a_addr}/health")).send()).await.unwrap().unwrap();
    assert_eq!(refused.status(), 503, "the cap counts both listeners' connections");
}
