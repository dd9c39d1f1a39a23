//! Cached KV is never handed across requests, and is reused whenever it can
//! be (issue 29): the real engine, checked against a fresh context.

mod kv_support;

use kv_support::*;
use vram_llm::engine::llama::reference::Reference;
use vram_llm::engine::Engine;

/// Tokens of `text` as the test model reads a prompt (BOS first).
fn tokens(engine: &dyn Engine, text: &str) -> Vec<u32> {
    engine.tokenize(text, true)
}

/// The follower of an `n = 2` request gets its prompt's KV by a copy that
/// llama.cpp performs at the next decode. A request restored from the host
/// cache into the reader's slot before that decode used to overwrite the
/// data being copied: the follower's slot then held another conversation's
/// KV under this prompt's tokens, and the next request reusing it read it.
/// The order is fixed by queueing all three at once: the two choices take
/// both slots, the third waits and then takes the reader's slot.
#[test]
fn a_restore_into_the_reader_slot_never_reaches_the_follower() {
    let shape = Shape { parallel: 2, ctx_size: 2048, store: Some(store(512, None)) };
    let engine = load(&shape);
    let x = tokens(&engine, &text(1, 300));
    // Warm the host cache: X, then two others push X out of the slots.
    for seed in [1, 2, 3] {
        run(&engine, &tokens(&engine, &text(seed, 300)), 1);
    }
    let p = tokens(&engine, &format!("The secret word is pomegranate. {}", text(4, 500)));
    let mut x_more = x.clone();
    x_more.extend(engine.tokenize(" And then", false));
    let mut receivers = engine
        .generate_many(vec![greedy(p.clone(), 1), greedy(p.clone(), 1), greedy(x_more.clone(), 1)])
        .expect("queued")
        .into_iter();
    let (a, b, c) = (receivers.next().unwrap(), receivers.next().unwrap(), receivers.next().unwrap());
    collect(&p, a);
    collect(&p, b);
    collect(&x_more, c);
    // P again: it continues the follower's slot, which claims to hold P.
    let again = run(&engine, &p, 8);
    assert!(again.cached as usize >= p.len() - 1, "the follower's slot was not reused: cached {}", again.cached);
    let reference = Reference::load(&test_model(), 2).expect("reference model");
    let d = deviation(&reference, &again);
    eprintln!("deviation of the reused slot: {d:?}");
    assert!(d.margin < MARGIN_TOLERANCE && d.logprob < LOGPROB_TOLERANCE, "served from another conversation's KV: {d:?}");
}

/// How far a served token may fall below the fresh context's greedy pick,
/// and how far its log-probability may move, when the KV it was decoded
/// from is legitimately reused (other batch shapes round differently).
const MARGIN_TOLERANCE: f32 = 1.0;
const LOGPROB_TOLERANCE: f32 = 1.0;
