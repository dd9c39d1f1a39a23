//! `plan_step` driven by a fake decoder: each step's plan is "decoded" by
//! advancing the slots as the worker would, no llama.cpp involved.

use super::*;

/// A request in a slot: its prompt length, tokens prefilled, tokens generated.
#[derive(Debug, Clone, Copy)]
struct FakeSeq {
    len: usize,
    done: usize,
    generated: usize,
    max_tokens: usize,
}

fn views(seqs: &[Option<FakeSeq>]) -> Vec<SlotView> {
    seqs.iter()
        .map(|s| match s {
            None => SlotView::Idle,
            Some(s) if s.done < s.len => SlotView::Prefill { done: s.done, until: s.len, len: s.len },
            Some(_) => SlotView::Generate { drafts: 0 },
        })
        .collect()
}

/// Decodes a plan: prompt parts advance `done`; a part with logits (or a
/// pending token) samples one token; a sequence at `max_tokens` frees its slot.
fn decode(seqs: &mut [Option<FakeSeq>], plan: &[Part]) {
    for part in plan {
        let (slot, sampled) = match *part {
            Part::Pending { slot, .. } => (slot, true),
            Part::Prompt { slot, to, logits, .. } => {
                seqs[slot].as_mut().expect("planned slot is busy").done = to;
                (slot, logits)
            }
        };
        if sampled {
            let s = seqs[slot].as_mut().expect("planned slot is busy");
            s.generated += 1;
            if s.generated >= s.max_tokens {
                seqs[slot] = None;
            }
        }
    }
}

#[test]
fn generating_tokens_come_first_then_prompt_chunks_in_the_room_left() {
    let slots = [SlotView::Prefill { done: 0, until: 700, len: 700 }, SlotView::Generate { drafts: 0 }, SlotView::Generate { drafts: 0 }];
    let plan = plan_step(&slots, 512, 512);
    assert_eq!(
        plan,
        vec![
            Part::Pending { slot: 1, drafts: 0 },
            Part::Pending { slot: 2, drafts: 0 },
            Part::Prompt { slot: 0, from: 0, to: 510, logits: false },
        ]
    );
}

#[test]
fn a_chunk_that_ends_the_prompt_asks_for_logits() {
    let plan = plan_step(&[SlotView::Prefill { done: 500, until: 700, len: 700 }], 512, 512);
    assert_eq!(plan, vec![Part::Prompt { slot: 0, from: 500, to: 700, logits: true }]);
}

#[test]
fn the_prefill_cap_bounds_one_slots_chunk() {
    let slots = [SlotView::Prefill { done: 0, until: 300, len: 300 }, SlotView::Prefill { done: 0, until: 300, len: 300 }];
    let plan = plan_step(&slots, 512, 128);
    assert_eq!(plan.iter().map(Part::tokens).collect::<Vec<_>>(), vec![128, 128]);
}

#[test]
fn idle_slots_and_an_empty_room_plan_nothing() {
    assert!(plan_step(&[SlotView::Idle, SlotView::Idle], 512, 512).is_empty());
    assert!(plan_step(&[], 512, 512).is_empty());
}

#[test]
fn three_prompts_prefill_within_n_batch_and_nobody_starves() {
    let n_batch = 512;
    let seq = |len| Some(FakeSeq { len, done: 0, generated: 0, max_tokens: 8 });
    let mut seqs = vec![seq(700), seq(5), seq(300)];
    let mut first_token_at = [None; 3];
    for step in 0..100 {
        let plan = plan_step(&views(&seqs), n_batch, n_batch);
        if plan.is_empty() {
            break;
        }
        assert!(plan.iter().map(Part::tokens).sum::<usize>() <= n_batch, "step {step}: {plan:?}");
        // Pending tokens always precede prompt chunks.
        let first_prompt = plan.iter().position(|p| matches!(p, Part::Prompt { .. })).unwrap_or(plan.len());
        assert!(plan[first_prompt..].iter().all(|p| matches!(p, Part::Prompt { .. })), "{plan:?}");
        decode(&mut seqs, &plan);
        for (i, s) in seqs.iter().enumerate() {
            if first_token_at[i].is_none() && s.map_or(true, |s| s.generated > 0) {
                first_token_at[i] = Some(step);
            }
        }
    }
    assert!(seqs.iter().all(Option::is_none), "every request finished: {seqs:?}");
    // 1005 prompt tokens fit two 512-token batches: all three start sampling
    // at the second step.
    assert_eq!(first_token_at, [Some(1), Some(1), Some(1)]);
}

#[test]
fn a_read_pauses_where_a_checkpoint_is_taken_without_asking_for_logits() {
    let slots = [SlotView::Prefill { done: 0, until: 300, len: 700 }, SlotView::Generate { drafts: 0 }];
    let plan = plan_step(&slots, 512, 512);
    assert_eq!(plan, vec![Part::Pending { slot: 1, drafts: 0 }, Part::Prompt { slot: 0, from: 0, to: 300, logits: false }]);
    // Paused exactly there: nothing to read until the checkpoint is taken.
    let paused = [SlotView::Prefill { done: 300, until: 300, len: 700 }];
    assert!(plan_step(&paused, 512, 512).is_empty());
}

#[test]
fn drafts_follow_every_pending_token_and_come_before_prompt_chunks() {
    let slots = [
        SlotView::Generate { drafts: 6 },
        SlotView::Prefill { done: 0, until: 700, len: 700 },
        SlotView::Generate { drafts: 3 },
    ];
    let plan = plan_step(&slots, 512, 512);
    assert_eq!(
        plan,
        vec![
            Part::Pending { slot: 0, drafts: 6 },
            Part::Pending { slot: 2, drafts: 3 },
            Part::Prompt { slot: 1, from: 0, to: 501, logits: false },
        ]
    );
    // Drafts are cut to the batch, in slot order, never a pending token.
    let plan = plan_step(&slots, 8, 8);
    assert_eq!(plan, vec![Part::Pending { slot: 0, drafts: 6 }, Part::Pending { slot: 2, drafts: 0 }]);
    assert_eq!(plan.iter().map(Part::tokens).sum::<usize>(), 8);
}
