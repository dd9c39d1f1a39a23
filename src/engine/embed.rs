//! Embeddings: the plain types the engine answers with and the pure
//! decisions behind them (which pooling, how long an input may be, how a
//! request's inputs share decodes, the unit norm). The llama.cpp side is in
//! `llama/embed.rs`; the HTTP side in `api/embeddings.rs`.

use std::ops::Range;

use tokio::sync::oneshot;

use crate::types::Pooling;

/// Why an embedding request did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedError {
    /// The engine could not compute it (a decode error, an input it cannot take).
    Failed(String),
    /// Ended on purpose: the model is being unloaded.
    Cancelled(String),
}

/// One unit-norm vector per input, in input order.
pub type Embeddings = Result<Vec<Vec<f32>>, EmbedError>;
/// Receives a request's embeddings; dropping it abandons the request (the
/// engine notices before its next decode).
pub type EmbedReceiver = oneshot::Receiver<Embeddings>;
pub type EmbedSender = oneshot::Sender<Embeddings>;

/// Sequences one embedding decode holds at most: a request's inputs share
/// decodes up to this many (and up to the context's tokens).
pub const EMBED_SEQS: u32 = 32;

/// llama.cpp's default micro-batch, the limit llama-server puts on an
/// embedding input (`--ubatch-size` raises it).
pub const DEFAULT_EMBED_TOKENS: u32 = 512;

/// Tokens the embedding context holds, and so the most one input may have:
/// a pooled input must be decoded in one micro-batch (llama.cpp pools per
/// micro-batch, and aborts on a non-causal model's longer input), so the
/// limit is the micro-batch, as in llama-server, and never above the
/// request slot's context.
pub fn context_tokens(n_ctx_slot: u32, ubatch_size: Option<u32>) -> u32 {
    ubatch_size.unwrap_or(DEFAULT_EMBED_TOKENS).min(n_ctx_slot).max(1)
}

/// The pooling an embedding uses: the configured one, else the GGUF's
/// `{arch}.pooling_type` when it names one that gives a vector per input
/// (1 mean, 2 cls, 3 last), else mean. A decoder model's GGUF says none
/// (0) or nothing; llama-server then answers a vector per token, and only
/// with `--pooling` one per input. We always answer one per input, so mean
/// is the default there.
pub fn choose_pooling(configured: Option<Pooling>, gguf: Option<i64>) -> Pooling {
    configured.unwrap_or(match gguf {
        Some(2) => Pooling::Cls,
        Some(3) => Pooling::Last,
        _ => Pooling::Mean,
    })
}

/// Scales `v` to unit Euclidean length, as OpenAI's embeddings are and as
/// llama-server's `embd_normalize` 2 (its default) does. A zero vector
/// stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// The first group of inputs from `start` that share one decode: as many
/// consecutive inputs as fit `max_tokens` and `max_seqs`, at least one.
pub fn next_group(lengths: &[usize], start: usize, max_tokens: usize, max_seqs: usize) -> Range<usize> {
    let mut end = start;
    let mut tokens = 0;
    while end < lengths.len() && end - start < max_seqs.max(1) {
        if end > start && tokens + lengths[end] > max_tokens {
            break;
        }
        tokens += lengths[end];
        end += 1;
    }
    start..end
}

/// An embedding answered at once: for engines that compute none, and for
/// requests refused before they reach a worker.
pub fn answered(result: Embeddings) -> EmbedReceiver {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(result);
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_fits_one_micro_batch_and_the_slot() {
        assert_eq!(context_tokens(4096, None), 512);
        assert_eq!(context_tokens(4096, Some(2048)), 2048);
        assert_eq!(context_tokens(256, Some(2048)), 256);
    }

    #[test]
    fn pooling_is_configured_else_the_ggufs_else_mean() {
        assert_eq!(choose_pooling(Some(Pooling::Last), Some(2)), Pooling::Last);
        assert_eq!(choose_pooling(None, Some(1)), Pooling::Mean);
        assert_eq!(choose_pooling(None, Some(2)), Pooling::Cls);
        assert_eq!(choose_pooling(None, Some(3)), Pooling::Last);
        // none (a decoder model), rank (a reranker), unspecified, absent
        for gguf in [Some(0), Some(4), Some(-1), None] {
            assert_eq!(choose_pooling(None, gguf), Pooling::Mean, "{gguf:?}");
        }
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
    }

    #[test]
    fn groups_fill_the_tokens_and_the_sequences() {
        let lengths = [3, 4, 2, 5, 1];
        assert_eq!(next_group(&lengths, 0, 9, 8), 0..3);
        assert_eq!(next_group(&lengths, 3, 9, 8), 3..5);
        assert_eq!(next_group(&lengths, 0, 100, 2), 0..2);
        // An input alone over the limit still forms a group (the worker refuses it).
        assert_eq!(next_group(&[10, 1], 0, 5, 8), 0..1);
        assert_eq!(next_group(&lengths, 5, 9, 8), 5..5);
    }
}
