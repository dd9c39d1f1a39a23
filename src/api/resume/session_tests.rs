use futures_util::StreamExt;

use super::*;

async fn drain(s: impl Stream<Item = Result<Bytes, std::convert::Infallible>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = std::pin::pin!(s);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn a_reader_gets_every_byte_from_its_offset_then_the_live_ones() {
    let sessions = Sessions::default();
    let ticket = sessions.begin("c");
    let session = sessions.go_live("c", ticket).unwrap();
    session.append(b"data: 1\n\n");
    let early = sessions.read("c", 0).unwrap();
    let late = sessions.read("c", 6).unwrap();
    let early = tokio::spawn(drain(early));
    let late = tokio::spawn(drain(late));
    session.append(b"data: 2\n\n");
    session.finish();
    assert_eq!(early.await.unwrap(), b"data: 1\n\ndata: 2\n\n");
    assert_eq!(late.await.unwrap(), b"1\n\ndata: 2\n\n");
    assert!(!session.append(b"after"), "a finished session takes no more bytes");
    let info = sessions.lookup(&["c".into()]);
    assert_eq!(info.len(), 1);
    assert!(info[0].is_done);
    assert_eq!(info[0].total_bytes, 18);
}

#[tokio::test]
async fn bytes_past_the_cap_drop_from_the_front_and_their_offsets_are_lost() {
    let session = Session::new("c".into(), 8);
    session.append(b"0123456789");
    session.finish();
    assert_eq!(session.info().total_bytes, 10);
    assert_eq!(session.clone().read_from(1).err(), Some(ReadError::OffsetLost { first_kept: 2 }));
    assert_eq!(drain(session.read_from(2).unwrap()).await, b"23456789");
}

#[tokio::test]
async fn a_pending_request_answers_pending_and_a_stop_forgets_it() {
    let sessions = Sessions::default();
    let ticket = sessions.begin("c");
    assert_eq!(sessions.read("c", 0).err(), Some(ReadError::Pending));
    assert!(sessions.stop("c"));
    assert_eq!(sessions.read("c", 0).err(), Some(ReadError::Unknown));
    assert!(sessions.go_live("c", ticket).is_none(), "a stopped request never goes live");
    assert!(!sessions.stop("c"), "stopping twice finds nothing");
}

#[tokio::test]
async fn a_new_request_on_the_same_id_ends_the_old_stream_and_aborts_its_task() {
    let sessions = Sessions::default();
    let first = sessions.begin("c");
    let task = tokio::spawn(std::future::pending::<()>());
    assert!(sessions.attach("c", first, task.abort_handle()));
    let old = sessions.go_live("c", first).unwrap();
    let reader = tokio::spawn(drain(sessions.read("c", 0).unwrap()));
    let second = sessions.begin("c");
    assert!(task.await.unwrap_err().is_cancelled(), "the old request is cancelled");
    assert_eq!(reader.await.unwrap(), b"", "its reader ends");
    assert!(!old.append(b"late"));
    assert!(sessions.go_live("c", first).is_none());
    assert!(sessions.go_live("c", second).is_some());
    sessions.forget("c", first);
    assert!(sessions.read("c", 0).is_ok(), "an old ticket cannot free the id");
}

#[tokio::test(start_paused = true)]
async fn a_finished_session_is_readable_until_the_ttl_passes() {
    let sessions = Sessions::default();
    let ticket = sessions.begin("c");
    sessions.go_live("c", ticket).unwrap().finish();
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(sessions.read("c", 0).is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(sessions.read("c", 0).err(), Some(ReadError::Unknown));
}

#[test]
fn a_lookup_matches_the_id_and_its_per_model_variants_only() {
    assert!(matches_asked("conv", "conv"));
    assert!(matches_asked("conv", "conv::org/model:Q8_0"));
    assert!(!matches_asked("conv", "conversation"));
    assert!(!matches_asked("conv", "conv:x"));
    assert!(!matches_asked("", "conv"));
}
