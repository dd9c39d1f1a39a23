//! Cached KV is never handed across requests, and is reused whenever it can
//! be (issue 29): the real engine, checked against a fresh context.

mod common;
mod kv_support;

use kv_support::*;
use vram_llm::engine::llama::reference::Reference;
use vram_llm::engine::kvdisk::KvDir;
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

/// A conversation pushed out of its slot is saved with its checkpoints, in
/// memory and in the KV cache directory: a prompt that leaves it at a
/// checkpoint resumes there after a restore, after a swap (the model
/// unloaded and loaded again) and after a restart (the directory alone);
/// the same prompt sent again resumes one token before its end.
#[test]
fn saved_sequences_resume_at_their_checkpoints_after_swaps_and_restarts() {
    logs();
    let dir = std::env::temp_dir().join(format!("vram-llm-kv-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reference = Reference::load(&test_model(), 2).expect("reference model");
    let shape = Shape { parallel: 1, ctx_size: 2048, store: Some(store(256, Some(&dir))) };
    let engine = load(&shape);
    let f = family(&engine, 11, 4);
    let mut first = greedy(f.prompts[0].clone(), 4);
    first.branch_points = vec![f.shared as u32];
    run_with(&engine, first);
    // An unrelated prompt takes the only slot: the conversation is saved.
    run(&engine, &tokens(&engine, &text(99, 300)), 1);
    let restored = run(&engine, &f.prompts[1], 4);
    assert_eq!(restored.cached as usize, f.shared, "restored, then cut back to the checkpoint at the mark");
    assert_fresh(&reference, &restored, "restored from memory");
    // A swap: the engine unloads (saving its slot) and loads again.
    drop(engine);
    let engine = load(&shape);
    let again = run(&engine, &f.prompts[1], 4);
    assert_eq!(again.cached as usize, f.prompts[1].len() - 1, "the same prompt after a swap");
    assert_fresh(&reference, &again, "the same prompt after a swap");
    drop(engine);
    // A restart: a new cache over the same directory, nothing in memory.
    if let Some(store) = &shape.store {
        store.flush();
    }
    let shape = Shape { store: Some(store(256, Some(&dir))), ..shape };
    let engine = load(&shape);
    let from_disk = run(&engine, &f.prompts[2], 4);
    assert_eq!(from_disk.cached as usize, f.shared, "read from the directory, cut back to the mark");
    assert_fresh(&reference, &from_disk, "restored from the directory");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The header of a KV cache directory file: its key and tokens.
fn header(path: &std::path::Path) -> (String, Vec<u32>) {
    let bytes = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[12..12 + len]).unwrap();
    let tokens = header["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    (header["key"].as_str().unwrap().to_string(), tokens)
}

/// A saved file whose state does not hold what its header says (here one
/// sequence's state under another's header, with a checksum that matches:
/// what a bad copy or a bug could write) is caught when restored: the
/// sequence's positions do not cover the saved tokens. The file is
/// forgotten, the request reads its prompt and answers as a fresh context
/// does, and a request beside it in the other slot is untouched.
#[test]
fn a_saved_state_that_does_not_match_its_tokens_is_forgotten_not_served() {
    use vram_llm::engine::kvdisk::{Part, WHOLE};
    logs();
    let dir = std::env::temp_dir().join(format!("vram-llm-kv-cache-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reference = Reference::load(&test_model(), 2).expect("reference model");
    let shape = Shape { parallel: 2, ctx_size: 2048, store: Some(store(256, Some(&dir))) };
    let engine = load(&shape);
    let a = tokens(&engine, &text(21, 300));
    let b = tokens(&engine, &text(22, 500));
    for p in [&a, &b, &tokens(&engine, &text(23, 100)), &tokens(&engine, &text(25, 100))] {
        run(&engine, p, 2);
    }
    drop(engine);
    shape.store.as_ref().unwrap().flush();
    // B's file, rewritten with A's state under B's key and tokens.
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let file_of = |p: &[u32]| files.iter().find(|f| header(f).1.starts_with(p)).cloned().expect("saved");
    let (key, b_tokens) = header(&file_of(&b));
    let kv = KvDir::open(&dir, 1 << 30).unwrap();
    let all = |_: usize, _: &[usize], shared: usize| shared;
    let a_found = kv.best(&header(&file_of(&a)).0, &header(&file_of(&a)).1, 0, &all).unwrap();
    let a_parts = kv.read(&key, &a_found).unwrap();
    // A write skips a sequence already held: B's file goes first.
    kv.forget(&key, &b_tokens);
    kv.write(&key, &b_tokens, &[Part { flags: WHOLE, tokens: b_tokens.len(), bytes: &a_parts[0].bytes }]).unwrap();
    drop(kv);

    let shape = Shape { store: Some(store(256, Some(&dir))), ..shape };
    let engine = load(&shape);
    let mut b_more = b.clone();
    b_more.extend(engine.tokenize(" And then the", false));
    let beside = tokens(&engine, &text(24, 200));
    let mut receivers = engine.generate_many(vec![greedy(b_more.clone(), 4), greedy(beside.clone(), 4)]).unwrap().into_iter();
    let served = collect(&b_more, receivers.next().unwrap());
    let neighbour = collect(&beside, receivers.next().unwrap());
    assert!(served.cached < 32, "the bad state was not used: cached {}", served.cached);
    assert_fresh(&reference, &served, "after a bad saved state");
    assert_fresh(&reference, &neighbour, "the request beside it");
    drop(engine);
    shape.store.as_ref().unwrap().flush();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| header(&e.unwrap().path()).1).collect();
    assert!(!left.contains(&b_tokens), "the bad file was forgotten");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The safety net for the whole class: a seeded random workload (see
/// kv_support/differential.rs) where every answer must agree with a fresh
/// context. A short run here; `scripts/dev kv-diff` runs a long one
/// (VRAM_LLM_KV_DIFF_REQUESTS, VRAM_LLM_KV_DIFF_SEED).
#[test]
fn served_answers_agree_with_a_fresh_context_under_a_random_workload() {
    logs();
    let requests = std::env::var("VRAM_LLM_KV_DIFF_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let seed = std::env::var("VRAM_LLM_KV_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let report = differential::run_workload(seed, requests, MARGIN_TOLERANCE, LOGPROB_TOLERANCE);
    eprintln!("kv differential, seed {seed}: {report:?}");
    // With VRAM_LLM_TEST_SPEC_TYPE, how many of the answers' tokens came from drafts.
    let metrics = vram_llm::metrics::global().llamacpp.render(Default::default());
    let spec: Vec<&str> = metrics.lines().filter(|l| l.starts_with("llamacpp:spec_decode_num_")).collect();
    eprintln!("kv differential, drafts: {spec:?}");
    assert!(report.failures.is_empty(), "answers that a fresh context disagrees with: {:#?}", report.failures);
    assert!(report.reused > 0 && report.restores > 0, "the workload reused nothing: {report:?}");
}

/// llama-server's `cache_prompt: false`: the prompt is read again from the
/// start, so the answer is the fresh context's, token for token, even where
/// the slot held the whole prompt (a reused prefix rounds differently).
#[test]
fn cache_prompt_false_reads_the_whole_prompt_again() {
    let engine = load(&Shape { parallel: 1, ctx_size: 1024, store: Some(store(64, None)) });
    let p = tokens(&engine, &text(7, 200));
    let first = run(&engine, &p, 8);
    let reused = run(&engine, &p, 8);
    assert!(reused.cached as usize >= p.len() - 1, "the slot's prefix was not reused: {}", reused.cached);
    let fresh = run_with(&engine, vram_llm::engine::GenerationRequest { cache_prompt: false, ..greedy(p.clone(), 8) });
    assert_eq!(fresh.cached, 0, "cache_prompt false reused {} tokens", fresh.cached);
    assert_eq!((fresh.tokens, fresh.logprobs), (first.tokens, first.logprobs), "a fresh read gives the first read's answer");
}
