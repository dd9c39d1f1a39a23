//! Requests with several choices (`n` > 1, a list of prompts): one
//! generation per choice, run side by side in the model's slots, answered
//! as one response with `choices[i].index`. The `n` choices of a prompt are
//! queued together: the engine reads the prompt once and copies its KV to
//! the other choices' slots.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::future::try_join_all;

use super::error::ApiError;
use super::generate::{collect, pump, sse_framing, Collected, Framing, Started};
use crate::engine::{FinishReason, TokenLogprob, Usage};

/// The sampling of choice `i`: with a seed, each choice gets its own
/// (`seed + i`), so choices differ and a request is still reproducible.
pub fn sampling_for(sampling: &super::validate::ValidSampling, i: u32) -> super::validate::ValidSampling {
    let mut s = sampling.clone();
    s.params.seed = s.params.seed.map(|seed| seed.wrapping_add(i));
    s
}

/// Starts the `n` choices of one prompt (choice `i` sampled as
/// [`sampling_for`] says): tokenized once and queued together, so the
/// engine reads the prompt once and copies its KV to the other choices.
/// `branch`: the start of a text prompt where a later prompt is likely to
/// leave it (see `GenerationRequest::branch_points`).
pub async fn start_choices(
    model: &Arc<crate::engine::loaded::LoadedModel>,
    prompt: super::validate::Prompt,
    branch: Option<String>,
    sampling: &super::validate::ValidSampling,
    prompt_param: &str,
    log: &super::reqlog::RequestLog,
) -> Result<Vec<Started>, ApiError> {
    let tokens = super::generate::prompt_tokens(model, prompt, prompt_param).await?;
    // Only a hint: a request whose hint cannot be had goes on without it.
    let branch_points = match branch {
        Some(before) => super::generate::branch_point(model, before, &tokens).await.ok().into_iter().collect(),
        None => Vec::new(),
    };
    let request = |i| crate::engine::GenerationRequest { branch_points: branch_points.clone(), ..super::generate::request(tokens.clone(), &sampling_for(sampling, i)) };
    let requests = (0..sampling.n).map(request).collect();
    let receivers = model.generate_many(requests)?;
    Ok(receivers.into_iter().map(|events| Started { events, log: log.clone(), prompt_tokens: tokens.len(), progress: None, live: super::generate::Live::new(tokens.len()) }).collect())
}

/// Every choice's whole output, in order.
pub async fn collect_all(started: Vec<Started>) -> Result<Vec<Collected>, ApiError> {
    try_join_all(started.into_iter().map(collect)).await
}

/// The request's usage: each prompt counted once (the first of its `n`
/// choices), every choice's completion.
pub fn total_usage(usages: &[Usage], n: usize) -> Usage {
    let mut total = Usage::default();
    for (i, u) in usages.iter().enumerate() {
        if i % n.max(1) == 0 {
            total.prompt_tokens += u.prompt_tokens;
            total.cached_tokens += u.cached_tokens;
        }
        total.completion_tokens += u.completion_tokens;
        total.draft_tokens += u.draft_tokens;
        total.draft_accepted += u.draft_accepted;
    }
    total
}

/// Streams several generations as one SSE response: `prologue`, then each
/// choice's frames as they come (from its own framers), then `end` given
/// the total usage (unless a choice failed), then `data: [DONE]`. `permit` is held to the end.
pub fn stream_many<T, F>(
    choices: Vec<(Started, T, F)>,
    n: usize,
    permit: crate::scheduler::Permit,
    prologue: Vec<Bytes>,
    end: impl FnOnce(Usage) -> Vec<Bytes> + Send + 'static,
) -> axum::response::Response
where
    T: FnMut(String, &[TokenLogprob]) -> Bytes + Send + 'static,
    F: FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static,
{
    let (tx, response) = super::sse::channel_response();
    tokio::spawn(async move {
        let _permit = permit;
        for frame in prologue {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        let count = choices.len();
        // A choice's usage, once it finished (a failed one never does).
        let usages = Arc::new(parking_lot::Mutex::new(vec![None; count]));
        let framing = Arc::new(Framing { error: sse_framing().error, end: None });
        let tasks: Vec<_> = choices
            .into_iter()
            .enumerate()
            .map(|(i, (started, text, finish))| {
                let (tx, usages, framing) = (tx.clone(), usages.clone(), framing.clone());
                tokio::spawn(async move {
                    let finish = move |reason, usage: Usage| {
                        usages.lock()[i] = Some(usage);
                        finish(reason, usage)
                    };
                    pump(&tx, started, text, finish, &framing).await;
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        // After a failed choice (its error frame sent) no usage chunk
        // claims a complete answer; the stream still ends as streams do.
        let finished: Option<Vec<Usage>> = usages.lock().iter().copied().collect();
        let usage_frames = finished.map(|all| end(total_usage(&all, n))).unwrap_or_default();
        for frame in usage_frames.into_iter().chain(sse_framing().end) {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_counts_once_however_many_choices_it_has() {
        let u = |p, c| Usage { prompt_tokens: p, completion_tokens: c, ..Usage::default() };
        // Two prompts (5 and 7 tokens), n = 2.
        let total = total_usage(&[u(5, 1), u(5, 2), u(7, 3), u(7, 4)], 2);
        assert_eq!((total.prompt_tokens, total.completion_tokens), (12, 10));
        assert_eq!(total_usage(&[u(5, 1)], 1).prompt_tokens, 5);
    }
}
