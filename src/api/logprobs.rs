//! Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content`
//! (one object per token, with its bytes and alternatives) and legacy
//! completions' parallel lists (`tokens`, `token_logprobs`, `top_logprobs`,
//! `text_offset`).

use serde_json::{json, Map, Value};

use crate::engine::TokenLogprob;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}`.
pub fn chat(tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(_, bytes, lp)| json!({"token": text(bytes), "logprob": lp, "bytes": bytes}))
                .collect();
            json!({"token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Completions: parallel lists; `text_offset` counts characters of the
/// answer's text from `offset` (the length of what came before: an echoed
/// prompt, earlier chunks). Also returns the offset after these tokens.
pub fn completion(tokens: &[TokenLogprob], offset: usize) -> (Value, usize) {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(at);
        at += text(&t.bytes).chars().count();
    }
    let top: Vec<Value> = tokens
        .iter()
        .map(|t| Value::Object(t.top.iter().map(|(_, bytes, lp)| (text(bytes), json!(lp))).collect::<Map<_, _>>()))
        .collect();
    let value = json!({
        "tokens": tokens.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    });
    (value, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(piece: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob { token: 1, bytes: piece.as_bytes().to_vec(), logprob, top: vec![(1, piece.as_bytes().to_vec(), logprob), (2, b"x".to_vec(), -3.0)] }
    }

    #[test]
    fn both_shapes() {
        let tokens = [lp("Hel", -0.5), lp("lo", -0.25)];
        let c = chat(&tokens);
        assert_eq!(c["content"][1]["token"], "lo");
        assert_eq!(c["content"][0]["bytes"], json!([72, 101, 108]));
        assert_eq!(c["content"][0]["top_logprobs"][1], json!({"token": "x", "logprob": -3.0, "bytes": [120]}));
        let (t, end) = completion(&tokens, 4);
        assert_eq!(t["tokens"], json!(["Hel", "lo"]));
        assert_eq!(t["token_logprobs"], json!([-0.5, -0.25]));
        assert_eq!(t["text_offset"], json!([4, 7]));
        assert_eq!(t["top_logprobs"][0], json!({"Hel": -0.5, "x": -3.0}));
        assert_eq!(end, 9);
    }
}
