//! Answers in the Messages API's shapes: the whole message, and the stream's
//! named events (`message_start`, `content_block_start`/`_delta`/`_stop` per
//! text, thinking or tool_use block, `message_delta` with the stop reason and
//! usage, `message_stop`). Pure: the handler feeds it parsed output.

use axum::body::Bytes;
use serde_json::{json, Value};

use crate::engine::{FinishReason, Usage};
use crate::tools::{StreamDelta, ToolCall};

/// An event as the Messages API streams it: its type named twice.
pub fn event(value: &Value) -> Bytes {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("error");
    Bytes::from(format!("event: {kind}\ndata: {value}\n\n"))
}

/// `toolu_...`, unique enough.
fn tool_id() -> String {
    crate::api::generate::response_id("toolu").replacen('-', "_", 1)
}

/// Anthropic's `stop_reason` and `stop_sequence`.
pub fn stop_reason(finish: FinishReason, stops: &[String], called: bool) -> (&'static str, Value) {
    match finish {
        FinishReason::Length => ("max_tokens", Value::Null),
        _ if called => ("tool_use", Value::Null),
        FinishReason::StopSequence(i) => ("stop_sequence", stops.get(usize::from(i)).map_or(Value::Null, |s| json!(s))),
        FinishReason::Stop => ("end_turn", Value::Null),
    }
}

/// `usage`: prompt tokens read from the cache are `cache_read_input_tokens`,
/// the rest `input_tokens`.
pub fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens),
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": u.completion_tokens,
    })
}

fn tool_use(call: &ToolCall) -> Value {
    let input = serde_json::from_str::<Value>(&call.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
    json!({"type": "tool_use", "id": tool_id(), "name": call.name, "input": input})
}

/// The whole message: thinking, text, then tool_use blocks.
pub fn message(id: &str, model: &str, parsed: StreamDelta, finish: FinishReason, stops: &[String], u: &Usage) -> Value {
    let mut content = Vec::new();
    if !parsed.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": parsed.reasoning, "signature": ""}));
    }
    if !parsed.content.is_empty() || parsed.calls.is_empty() {
        content.push(json!({"type": "text", "text": parsed.content}));
    }
    content.extend(parsed.calls.iter().map(|(_, c)| tool_use(c)));
    let (reason, sequence) = stop_reason(finish, stops, !parsed.calls.is_empty());
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": reason, "stop_sequence": sequence, "usage": usage(u),
    })
}

/// The stream's first event; `input_tokens` is the whole prompt (how much
/// of it came from the cache is known when the answer ends).
pub fn start(id: &str, model: &str, prompt_tokens: usize) -> Bytes {
    let usage = json!({"input_tokens": prompt_tokens, "output_tokens": 0});
    event(&json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": usage,
    }}))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// The content blocks of one streamed message, as deltas arrive.
#[derive(Debug, Default)]
pub struct Blocks {
    /// The request's stop strings (the stop reason names the one that hit).
    stops: Vec<String>,
    open: Option<Open>,
    /// Index of the next block.
    next: usize,
    called: bool,
}

impl Blocks {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, ..Self::default() }
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            out.push(event(&json!({"type": "content_block_stop", "index": self.next - 1})));
        }
    }

    fn ensure(&mut self, kind: Open, out: &mut Vec<Bytes>) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let block = match kind {
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        out.push(event(&json!({"type": "content_block_start", "index": self.next, "content_block": block})));
        self.open = Some(kind);
        self.next += 1;
    }

    /// The events for one piece of parsed output.
    pub fn delta(&mut self, d: StreamDelta) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !d.reasoning.is_empty() {
            self.ensure(Open::Thinking, &mut out);
            out.push(event(&json!({"type": "content_block_delta", "index": self.next - 1,
                "delta": {"type": "thinking_delta", "thinking": d.reasoning}})));
        }
        if !d.content.is_empty() {
            self.ensure(Open::Text, &mut out);
            out.push(event(&json!({"type": "content_block_delta", "index": self.next - 1,
                "delta": {"type": "text_delta", "text": d.content}})));
        }
        for (_, call) in &d.calls {
            self.close(&mut out);
            let mut block = tool_use(call);
            let input = std::mem::replace(&mut block["input"], json!({}));
            out.push(event(&json!({"type": "content_block_start", "index": self.next, "content_block": block})));
            out.push(event(&json!({"type": "content_block_delta", "index": self.next,
                "delta": {"type": "input_json_delta", "partial_json": input.to_string()}})));
            out.push(event(&json!({"type": "content_block_stop", "index": self.next})));
            self.next += 1;
            self.called = true;
        }
        out
    }

    /// The last events: the open block closed (an empty text block when
    /// nothing was said), the stop reason and usage, `message_stop`.
    pub fn finish(&mut self, finish: FinishReason, u: &Usage) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.next == 0 {
            self.ensure(Open::Text, &mut out);
        }
        self.close(&mut out);
        let (reason, sequence) = stop_reason(finish, &self.stops, self.called);
        out.push(event(&json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage(u)})));
        out.push(event(&json!({"type": "message_stop"})));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::sse::named_events as events;

    fn delta(content: &str, reasoning: &str, calls: Vec<ToolCall>) -> StreamDelta {
        StreamDelta { content: content.into(), reasoning: reasoning.into(), calls: calls.into_iter().enumerate().collect() }
    }

    const USAGE: Usage = Usage { prompt_tokens: 10, completion_tokens: 4, cached_tokens: 3, draft_tokens: 0, draft_accepted: 0 };

    #[test]
    fn a_stream_opens_and_closes_each_block_in_order() {
        let mut b = Blocks::default();
        let mut frames = b.delta(delta("", "hmm", vec![]));
        frames.extend(b.delta(delta("Hi", "", vec![])));
        frames.extend(b.delta(delta(" there", "", vec![])));
        frames.extend(b.delta(delta("", "", vec![ToolCall { name: "f".into(), arguments: "{\"a\":1}".into() }])));
        frames.extend(b.finish(FinishReason::Stop, &USAGE));
        let e = events(&frames);
        let kinds: Vec<&str> = e.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["content_block_start", "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta",
            "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
        assert_eq!((e[0]["index"].clone(), e[0]["content_block"]["type"].clone()), (json!(0), json!("thinking")));
        assert_eq!(e[5]["delta"], json!({"type": "text_delta", "text": " there"}));
        assert_eq!((e[7]["index"].clone(), e[7]["content_block"]["name"].clone(), e[7]["content_block"]["input"].clone()), (json!(2), json!("f"), json!({})));
        assert_eq!(e[8]["delta"], json!({"type": "input_json_delta", "partial_json": "{\"a\":1}"}));
        assert_eq!(e[10]["delta"]["stop_reason"], "tool_use");
        assert_eq!(e[10]["usage"], json!({"input_tokens": 7, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0, "output_tokens": 4}));
    }

    #[test]
    fn an_empty_answer_still_has_one_text_block() {
        let e = events(&Blocks::default().finish(FinishReason::Length, &USAGE));
        assert_eq!(e[0]["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(e[2]["delta"]["stop_reason"], "max_tokens");
    }

    #[test]
    fn stop_reasons_name_the_stop_sequence() {
        let stops = vec!["A".to_string(), "END".to_string()];
        assert_eq!(stop_reason(FinishReason::StopSequence(1), &stops, false), ("stop_sequence", json!("END")));
        assert_eq!(stop_reason(FinishReason::Stop, &stops, false), ("end_turn", Value::Null));
        assert_eq!(stop_reason(FinishReason::Stop, &stops, true).0, "tool_use");
        assert_eq!(stop_reason(FinishReason::Length, &stops, true).0, "max_tokens");
    }

    #[test]
    fn a_whole_message_lists_thinking_text_and_calls() {
        let m = message("msg_1", "m", delta("Sure.", "why", vec![ToolCall { name: "f".into(), arguments: "not json".into() }]), FinishReason::Stop, &[], &USAGE);
        let kinds: Vec<&str> = m["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["thinking", "text", "tool_use"]);
        assert_eq!(m["content"][2]["input"], json!({}), "arguments that are not an object give an empty input");
        assert!(m["content"][2]["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!((m["stop_reason"].clone(), m["type"].clone()), (json!("tool_use"), json!("message")));
    }
}
