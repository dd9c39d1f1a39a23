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

/// Prompts of one family: a long shared prefix, then a long question of
/// their own, so that reading one moves the sliding window (512 positions
/// on the test model) past where the next one leaves it.
struct Family {
    prompts: Vec<Vec<u32>>,
    /// Where they part: the tokens every prompt shares.
    shared: usize,
}

fn family(engine: &dyn Engine, seed: u64, n: usize) -> Family {
    let prefix = text(seed, 550);
    let prompts: Vec<Vec<u32>> = (0..n as u64).map(|i| tokens(engine, &format!("{prefix}\nQuestion {}: {}", i + 1, text(seed * 100 + i, 600)))).collect();
    let shared = prompts.windows(2).map(|w| vscommon(&w[0], &w[1])).min().unwrap();
    Family { prompts, shared }
}

fn vscommon(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn assert_fresh(reference: &Reference, served: &Served, what: &str) {
    let d = deviation(reference, served);
    assert!(d.margin < MARGIN_TOLERANCE && d.logprob < LOGPROB_TOLERANCE, "{what}: served tokens disagree with a fresh context: {d:?}");
}

/// The rows, on one slot of a sliding-window model: a long shared
/// prefix then a different question each time. The first prompt marks
/// where its last message starts (as chat requests do): the second and
/// third resume there; the same prompt sent again resumes one token before
/// its end. A family without marks learns where prompts part from the
/// second one, and the third resumes there.
#[test]
fn a_long_shared_prefix_is_reused_on_a_sliding_window_model() {
    logs();
    let engine = load(&Shape { parallel: 1, ctx_size: 2048, store: None });
    let reference = Reference::load(&test_model(), 2).expect("reference model");
    let f = family(&engine, 7, 3);
    assert!(f.prompts[0].len() > f.shared + 600, "each question must move the window past the shared prefix: {} of {}", f.shared, f.prompts[0].len());
    let mut first = greedy(f.prompts[0].clone(), 4);
    first.branch_points = vec![f.shared as u32];
    assert_eq!(run_with(&engine, first).cached, 0);
    for p in &f.prompts[1..] {
        let served = run(&engine, p, 4);
        assert_eq!(served.cached as usize, f.shared, "resumed at the mark");
        assert_fresh(&reference, &served, "after the mark");
    }
    let again = run(&engine, &f.prompts[2], 4);
    assert_eq!(again.cached as usize, f.prompts[2].len() - 1, "the same prompt again");
    assert_fresh(&reference, &again, "the same prompt again");

    let g = family(&engine, 8, 3);
    run(&engine, &g.prompts[0], 4);
    let second = run(&engine, &g.prompts[1], 4);
    assert!((second.cached as usize) < g.shared, "nothing marked where they part yet: {}", second.cached);
    let third = run(&engine, &g.prompts[2], 4);
    assert_eq!(third.cached as usize, g.shared, "resumed where the second left the first");
    assert_fresh(&reference, &third, "where prompts parted before");
}
