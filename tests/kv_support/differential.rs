//! The cache differential test's workload: a seeded random mix of what
//! reuses KV (shared and branching prefixes shorter and longer than the
//! 512-token window, conversations that go on, `n` > 1 choices, more
//! requests than slots, clients that leave, swaps between two models that
//! share the host KV cache, restarts that leave only the KV directory),
//! every answer checked against a fresh context (`super::deviation`).

use std::path::PathBuf;

use vram_llm::engine::llama::reference::Reference;
use vram_llm::engine::llama::LlamaEngine;
use vram_llm::engine::{Engine, GenerationRequest};

use super::*;

/// A small, fast, seeded generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What a run covered and the worst disagreement it saw.
#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    /// Answers served from reused KV (a slot's, a copied prompt's or a
    /// restored one's): `cached_tokens` > 0.
    pub reused: usize,
    /// Saved sequences found for a prompt, and of those read from disk.
    pub restores: u64,
    pub disk_restores: u64,
    pub swaps: usize,
    pub restarts: usize,
    pub left_early: usize,
    pub worst: Deviation,
    /// Each answer over the tolerances: what it was and how far off.
    pub failures: Vec<String>,
}

/// The two layouts the workload swaps between (two models as far as the
/// host cache is concerned: their states never restore into each other).
fn shapes(store: SharedKvStore) -> [Shape; 2] {
    [Shape { parallel: 3, ctx_size: 2048, store: Some(store.clone()) }, Shape { parallel: 2, ctx_size: 2048, store: Some(store) }]
}

/// Runs `requests` requests of the workload seeded `seed`; answers whose
/// deviation passes `margin` or `logprob` are reported as failures.
pub fn run_workload(seed: u64, requests: usize, margin: f32, logprob: f32) -> Report {
    let dir: PathBuf = std::env::temp_dir().join(format!("vram-llm-kv-diff-{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reference = Reference::load(&test_model(), 2).expect("reference model");
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut store_now = store(96, Some(&dir));
    let mut which = 0;
    let mut engine = load(&shapes(store_now.clone())[which]);
    // Prefix families: short (within the window) and long (past it).
    let families: Vec<String> = (0..4).map(|f| text(seed * 31 + f, if f % 2 == 0 { 120 } else { 650 })).collect();
    // Conversations so far: prompt text that later requests continue.
    let mut conversations: Vec<Vec<u32>> = Vec::new();
    let check = |served: &Served, report: &mut Report| {
        report.requests += 1;
        report.reused += usize::from(served.cached > 0);
        let d = deviation(&reference, served);
        tracing::info!(request = report.requests, prompt = served.prompt.len(), cached = served.cached, margin = d.margin, logprob = d.logprob, "differential: checked");
        report.worst = report.worst.max(d);
        if d.margin >= margin || d.logprob >= logprob {
            report.failures.push(format!("request {} ({} prompt tokens, {} cached): {d:?}", report.requests, served.prompt.len(), served.cached));
        }
    };
    while report.requests < requests {
        let roll = rng.below(100);
        if roll < 6 {
            // A swap to the other model (its slots are saved on unload).
            drop(engine);
            which = 1 - which;
            engine = load(&shapes(store_now.clone())[which]);
            report.swaps += 1;
            continue;
        }
        if roll < 9 {
            // A restart: only the directory survives.
            drop(engine);
            store_now.flush();
            let usage = store_now.usage();
            report.restores += usage.found;
            report.disk_restores += usage.found_on_disk;
            store_now = store(96, Some(&dir));
            engine = load(&shapes(store_now.clone())[which]);
            report.restarts += 1;
            continue;
        }
        if roll < 40 {
            // Several at once: `n` choices of one prompt and others beside
            // them, more than the slots hold.
            let shared = pick(&mut rng, &engine, &families, &conversations);
            let n = 2 + rng.below(2);
            // The choices of one request share its max_tokens; short
            // answers (a label, a yes/no) are common.
            let max_tokens = if rng.chance(50) { 1 } else { 2 + rng.below(6) as u32 };
            let mut batch: Vec<GenerationRequest> = (0..n).map(|_| greedy(shared.clone(), max_tokens)).collect();
            for _ in 0..1 + rng.below(3) {
                let p = pick(&mut rng, &engine, &families, &conversations);
                batch.push(greedy(p, 1 + rng.below(6) as u32));
            }
            let prompts: Vec<Vec<u32>> = batch.iter().map(|r| r.prompt.clone()).collect();
            let receivers = engine.generate_many(batch).expect("queued");
            let mut chosen = None;
            for (i, (p, rx)) in prompts.iter().zip(receivers).enumerate() {
                let served = collect(p, rx);
                check(&served, &mut report);
                if i == 0 {
                    chosen = Some(served);
                } else {
                    remember(&mut conversations, &served);
                }
            }
            // The user goes on with the first choice.
            let chosen = chosen.expect("n >= 2");
            let mut p = chosen.prompt.clone();
            p.extend(&chosen.tokens);
            let more = text(rng.next(), 10 + rng.below(60));
            p.extend(engine.tokenize(&format!("\n{more}"), false));
            let served = run(&engine, &p, 1 + rng.below(8) as u32);
            check(&served, &mut report);
            remember(&mut conversations, &served);
        } else if roll < 48 {
            // A client that leaves: at once, or after its first token.
            let p = pick(&mut rng, &engine, &families, &conversations);
            let mut rx = engine.generate(greedy(p, 32)).expect("queued");
            if rng.chance(50) {
                let _ = rx.blocking_recv();
            }
            drop(rx);
            report.left_early += 1;
        } else {
            let p = pick(&mut rng, &engine, &families, &conversations);
            let served = run(&engine, &p, 1 + rng.below(8) as u32);
            check(&served, &mut report);
            remember(&mut conversations, &served);
        }
    }
    drop(engine);
    store_now.flush();
    let usage = store_now.usage();
    report.restores += usage.found;
    report.disk_restores += usage.found_on_disk;
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// Keeps a served prompt and its answer as a conversation to go on with.
fn remember(conversations: &mut Vec<Vec<u32>>, served: &Served) {
    let mut c = served.prompt.clone();
    c.extend(&served.tokens);
    conversations.push(c);
    if conversations.len() > 12 {
        conversations.remove(0);
    }
}

/// A prompt of the workload: a conversation going on (or sent again as it
/// was), or a family's prefix and something of its own.
fn pick(rng: &mut Rng, engine: &LlamaEngine, families: &[String], conversations: &[Vec<u32>]) -> Vec<u32> {
    if !conversations.is_empty() && rng.chance(45) {
        // The latest conversation most often (a user going on with the
        // answer just given), else any.
        let at = if rng.chance(50) { conversations.len() - 1 } else { rng.below(conversations.len()) };
        let mut p = conversations[at].clone();
        if rng.chance(80) {
            let more = text(rng.next(), 10 + rng.below(120));
            p.extend(engine.tokenize(&format!("\n{more}"), false));
        }
        p.truncate(1900);
        p
    } else {
        let family = &families[rng.below(families.len())];
        let own = text(rng.next(), 5 + rng.below(200));
        engine.tokenize(&format!("{family}\n{own}"), true)
    }
}
