//! Answers in the Responses API's shapes: the response object and its output
//! items (`reasoning`, `message` with `output_text`, `function_call`), and
//! the stream's typed events, each with its `sequence_number`
//! (`response.created`, `.in_progress`, `.output_item.added`/`.done`,
//! `.content_part.added`/`.done`, `.output_text.delta`/`.done`,
//! `.reasoning_text.delta`/`.done`, `.function_call_arguments.delta`/`.done`,
//! then `response.completed`, or `response.incomplete` at the token limit).
//! Pure: the handler feeds it parsed output.

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use crate::engine::{FinishReason, Usage};
use crate::tools::{StreamDelta, ToolCall};

fn id(prefix: &str) -> String {
    crate::api::generate::response_id(prefix).replacen('-', "_", 1)
}

/// What every response object repeats: its id, time, model and the
/// request's settings.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    /// The request's echoed fields (`instructions`, `tools`, `text`, ...).
    pub echo: Map<String, Value>,
}

impl Meta {
    pub fn new(model: String, req: &Value) -> Self {
        let mut echo = Map::new();
        for (key, default) in [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("temperature", Value::Null),
            ("top_p", Value::Null),
            ("tools", json!([])),
            ("tool_choice", json!("auto")),
            ("parallel_tool_calls", json!(true)),
            ("text", json!({"format": {"type": "text"}})),
            ("reasoning", Value::Null),
            ("metadata", json!({})),
        ] {
            echo.insert(key.into(), req.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default));
        }
        Self { id: id("resp"), created_at: crate::types::unix_now(), model, echo }
    }

    /// The response object in a state.
    pub fn response(&self, status: &str, output: Vec<Value>, usage: Option<&Usage>, incomplete: bool) -> Value {
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.model, "output": output, "error": null, "store": false,
            "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "usage": usage.map_or(Value::Null, usage_json),
        });
        if let Some(obj) = r.as_object_mut() {
            obj.extend(self.echo.clone());
        }
        r
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "completed" { json!([text_part(text)]) } else { json!([]) };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_item(id: &str, text: &str, done: bool) -> Value {
    let content = if done { json!([{"type": "reasoning_text", "text": text}]) } else { json!([]) };
    json!({"type": "reasoning", "id": id, "summary": [], "content": content})
}

fn call_item(call: &ToolCall, status: &str, arguments: &str) -> (String, Value) {
    let item_id = id("fc");
    let item = json!({"type": "function_call", "id": item_id, "call_id": id("call"), "name": call.name, "arguments": arguments, "status": status});
    (item_id, item)
}

/// The whole answer's output items: reasoning, message, then calls.
pub fn output(parsed: StreamDelta) -> Vec<Value> {
    let mut out = Vec::new();
    if !parsed.reasoning.is_empty() {
        out.push(reasoning_item(&id("rs"), &parsed.reasoning, true));
    }
    if !parsed.content.is_empty() || parsed.calls.is_empty() {
        out.push(message_item(&id("msg"), &parsed.content, "completed"));
    }
    out.extend(parsed.calls.iter().map(|(_, c)| call_item(c, "completed", &c.arguments).1));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
}

/// The item being written: its kind, id, position and text so far.
#[derive(Debug)]
struct Open {
    kind: Kind,
    id: String,
    text: String,
}

/// The events of one streamed response, as deltas arrive.
pub struct Stream {
    meta: Meta,
    seq: u64,
    done: Vec<Value>,
    open: Option<Open>,
    /// llama-server's `timings_per_token`: text deltas carry the timings so far.
    pub timings: Option<(crate::api::generate::Live, crate::api::reqlog::RequestLog)>,
}

impl Stream {
    pub fn new(meta: Meta) -> Self {
        Self { meta, seq: 0, done: Vec::new(), open: None, timings: None }
    }

    /// llama-server's `return_progress`: `response.in_progress` with the
    /// prompt's read so far.
    pub fn progress(&mut self, p: &crate::engine::PromptProgress) -> Bytes {
        let r = self.meta.response("in_progress", Vec::new(), None, false);
        let fields = json!({"response": r, "prompt_progress": crate::api::generate::progress_value(p),
            "timings": crate::api::generate::progress_timings(p)});
        self.event("response.in_progress", fields)
    }

    fn event(&mut self, kind: &str, mut fields: Value) -> Bytes {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {fields}\n\n"))
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Bytes> {
        let r = self.meta.response("in_progress", Vec::new(), None, false);
        vec![self.event("response.created", json!({"response": r})), self.event("response.in_progress", json!({"response": r}))]
    }

    fn index(&self) -> usize {
        self.done.len()
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        let at = self.index();
        let item = match open.kind {
            Kind::Message => {
                let fields = json!({"item_id": open.id, "output_index": at, "content_index": 0});
                let mut text = fields.clone();
                text["text"] = json!(open.text);
                text["logprobs"] = json!([]);
                out.push(self.event("response.output_text.done", text));
                let mut part = fields;
                part["part"] = text_part(&open.text);
                out.push(self.event("response.content_part.done", part));
                message_item(&open.id, &open.text, "completed")
            }
            Kind::Reasoning => {
                out.push(self.event("response.reasoning_text.done", json!({"item_id": open.id, "output_index": at, "content_index": 0, "text": open.text})));
                reasoning_item(&open.id, &open.text, true)
            }
        };
        out.push(self.event("response.output_item.done", json!({"output_index": at, "item": item})));
        self.done.push(item);
    }

    fn ensure(&mut self, kind: Kind, out: &mut Vec<Bytes>) {
        if self.open.as_ref().is_some_and(|o| o.kind == kind) {
            return;
        }
        self.close(out);
        let at = self.index();
        let item_id = id(if kind == Kind::Message { "msg" } else { "rs" });
        let item = match kind {
            Kind::Message => message_item(&item_id, "", "in_progress"),
            Kind::Reasoning => reasoning_item(&item_id, "", false),
        };
        out.push(self.event("response.output_item.added", json!({"output_index": at, "item": item})));
        if kind == Kind::Message {
            out.push(self.event("response.content_part.added", json!({"item_id": item_id, "output_index": at, "content_index": 0, "part": text_part("")})));
        }
        self.open = Some(Open { kind, id: item_id, text: String::new() });
    }

    /// The events for one piece of parsed output.
    pub fn delta(&mut self, d: StreamDelta) -> Vec<Bytes> {
        let mut out = Vec::new();
        for (kind, text, event) in [(Kind::Reasoning, d.reasoning, "response.reasoning_text.delta"), (Kind::Message, d.content, "response.output_text.delta")] {
            if text.is_empty() {
                continue;
            }
            self.ensure(kind, &mut out);
            let at = self.index();
            let item_id = {
                let open = self.open.as_mut().expect("ensured");
                open.text.push_str(&text);
                open.id.clone()
            };
            let mut fields = json!({"item_id": item_id, "output_index": at, "content_index": 0, "delta": text});
            if kind == Kind::Message {
                fields["logprobs"] = json!([]);
                if let Some((live, log)) = &self.timings {
                    fields["timings"] = live.timings(log);
                }
            }
            out.push(self.event(event, fields));
        }
        for (_, call) in &d.calls {
            self.close(&mut out);
            let at = self.index();
            let (item_id, mut item) = call_item(call, "in_progress", "");
            out.push(self.event("response.output_item.added", json!({"output_index": at, "item": item})));
            out.push(self.event("response.function_call_arguments.delta", json!({"item_id": item_id, "output_index": at, "delta": call.arguments})));
            out.push(self.event("response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": at, "arguments": call.arguments, "name": call.name})));
            item["arguments"] = json!(call.arguments);
            item["status"] = json!("completed");
            out.push(self.event("response.output_item.done", json!({"output_index": at, "item": item})));
            self.done.push(item);
        }
        out
    }

    /// The last events: the open item closed (an empty message when
    /// nothing was said), then `response.completed` (or `.incomplete`).
    pub fn finish(&mut self, finish: FinishReason, u: &Usage) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done.is_empty() && self.open.is_none() {
            self.ensure(Kind::Message, &mut out);
        }
        self.close(&mut out);
        let incomplete = finish == FinishReason::Length;
        let (status, kind) = if incomplete { ("incomplete", "response.incomplete") } else { ("completed", "response.completed") };
        let r = self.meta.response(status, self.done.clone(), Some(u), incomplete);
        out.push(self.event(kind, json!({"response": r})));
        out
    }

}

/// An error in the stream: an `error` event with the envelope's fields (it
/// ends the stream; its `sequence_number` is not the stream's count, which
/// the framing cannot see).
pub fn error_event(e: &crate::api::error::ApiError) -> Bytes {
    let body = e.body().error;
    let fields = json!({"type": "error", "code": body.code, "message": body.message, "param": body.param, "sequence_number": 0});
    Bytes::from(format!("event: error\ndata: {fields}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::sse::named_events as events;

    const USAGE: Usage = Usage { prompt_tokens: 10, completion_tokens: 4, cached_tokens: 3, draft_tokens: 0, draft_accepted: 0 };

    fn delta(content: &str, reasoning: &str, calls: Vec<ToolCall>) -> StreamDelta {
        StreamDelta { content: content.into(), reasoning: reasoning.into(), calls: calls.into_iter().enumerate().collect() }
    }

    #[test]
    fn a_stream_numbers_its_events_and_ends_with_the_whole_response() {
        let meta = Meta::new("m".into(), &json!({"instructions": "Be brief.", "max_output_tokens": 9}));
        let mut s = Stream::new(meta);
        let mut frames = s.start();
        frames.extend(s.delta(delta("", "think", vec![])));
        frames.extend(s.delta(delta("Hel", "", vec![])));
        frames.extend(s.delta(delta("lo", "", vec![])));
        frames.extend(s.delta(delta("", "", vec![ToolCall { name: "f".into(), arguments: "{}".into() }])));
        frames.extend(s.finish(FinishReason::Stop, &USAGE));
        let e = events(&frames);
        let seq: Vec<u64> = e.iter().map(|v| v["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(seq, (0..e.len() as u64).collect::<Vec<_>>());
        let kinds: Vec<&str> = e.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["response.created", "response.in_progress", "response.output_item.added", "response.reasoning_text.delta",
            "response.reasoning_text.done", "response.output_item.done", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done", "response.completed"]);
        let done = &e[17]["response"];
        assert_eq!((done["status"].clone(), done["instructions"].clone(), done["max_output_tokens"].clone()), (json!("completed"), json!("Be brief."), json!(9)));
        let items: Vec<&str> = done["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(items, ["reasoning", "message", "function_call"]);
        assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(e[10]["text"], "Hello");
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 3);
    }

    #[test]
    fn the_token_limit_makes_an_incomplete_response() {
        let mut s = Stream::new(Meta::new("m".into(), &json!({})));
        let e = events(&s.finish(FinishReason::Length, &USAGE));
        let last = e.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(last["response"]["output"][0]["type"], "message", "an empty answer is still one message");
    }

    #[test]
    fn a_whole_answer_lists_its_items() {
        let out = output(delta("Sure.", "", vec![ToolCall { name: "f".into(), arguments: "{\"a\":1}".into() }]));
        assert_eq!(out[0]["content"][0], json!({"type": "output_text", "text": "Sure.", "annotations": [], "logprobs": []}));
        assert_eq!((out[1]["name"].clone(), out[1]["arguments"].clone()), (json!("f"), json!("{\"a\":1}")));
        assert!(out[1]["call_id"].as_str().unwrap().starts_with("call_"));
    }
}
