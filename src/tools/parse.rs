//! One parser per tool-call format. Each reads a model's output (whole, or
//! as far as it has streamed) into content, reasoning and complete calls.
//! While the output is still growing (`!at_end`), content stops before a
//! possible call mark, and an unfinished call is not returned.

use serde_json::Value;

use super::{Parsed, Think, ToolCall, ToolFormat};

/// Where the content starts once the thinking is over (decided: the block
/// closed, or the output did not open one), as a byte offset into `text`.
pub(super) fn content_start(think: Think, text: &str) -> Option<usize> {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let after_close = |from: usize| text[from..].find(CLOSE).map(|at| from + at + CLOSE.len());
    match think {
        Think::Off => Some(0),
        Think::Open => after_close(0),
        Think::Tagged => {
            let lead = text.len() - text.trim_start().len();
            let trimmed = &text[lead..];
            if trimmed.starts_with(OPEN) {
                after_close(lead + OPEN.len())
            } else if OPEN.starts_with(trimmed) {
                None
            } else {
                Some(0)
            }
        }
    }
}

/// The reasoning at the start of `text` and the rest. While the output
/// grows, a possible `</think>` (or `<think>`) at the end is held back.
pub(super) fn split_think(think: Think, text: &str, at_end: bool) -> (&str, &str) {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let inside = match think {
        Think::Off => return ("", text),
        Think::Open => text,
        Think::Tagged => {
            let trimmed = text.trim_start();
            match trimmed.strip_prefix(OPEN) {
                Some(inside) => inside,
                None if !at_end && OPEN.starts_with(trimmed) => return ("", ""),
                None => return ("", text),
            }
        }
    };
    match inside.find(CLOSE) {
        Some(end) => (&inside[..end], &inside[end + CLOSE.len()..]),
        // A model that never closes its thinking: all of it is reasoning.
        None => (safe(inside, &[CLOSE], at_end), ""),
    }
}

pub(super) fn parse(format: ToolFormat, text: &str, at_end: bool) -> Parsed {
    let mut out = Parsed::default();
    match format {
        ToolFormat::Hermes => tagged(&mut out, text, at_end, "<tool_call>", "</tool_call>", json_call),
        ToolFormat::QwenXml => tagged(&mut out, text, at_end, "<tool_call>", "</tool_call>", xml_call),
        ToolFormat::FunctionaryV31 => tagged(&mut out, text, at_end, "<function=", "</function>", named_json_call),
        ToolFormat::Granite => marked_list(&mut out, text, at_end, "<|tool_call|>"),
        ToolFormat::MistralJson => marked_list(&mut out, text, at_end, "[TOOL_CALLS]"),
        ToolFormat::MistralArgs => mistral_args(&mut out, text, at_end),
        ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => deepseek(&mut out, text, at_end),
        ToolFormat::CommandR7b => command_r7b(&mut out, text, at_end),
        ToolFormat::Harmony => harmony(&mut out, text, at_end),
        ToolFormat::FunctionaryV32 => functionary_v32(&mut out, text, at_end),
        ToolFormat::Llama3 => whole_json(&mut out, text, at_end, Some("<|python_tag|>")),
        ToolFormat::Generic => whole_json(&mut out, text, at_end, None),
    }
    out
}

/// `text` without a tail that may be the start of one of `marks` (while
/// the output still grows); all of it at the end.
fn safe<'a>(text: &'a str, marks: &[&str], at_end: bool) -> &'a str {
    if at_end {
        return text;
    }
    let mut cut = text.len();
    for mark in marks {
        for len in (1..mark.len()).rev() {
            if mark.is_char_boundary(len) && text.ends_with(&mark[..len]) {
                cut = cut.min(text.len() - len);
                break;
            }
        }
    }
    &text[..cut]
}

/// The JSON value at the start of `s` (after whitespace) and the bytes it
/// took; `None` if `s` does not start with a complete value.
fn json_prefix(s: &str) -> Option<(Value, usize)> {
    let mut values = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

/// A call object: `{"name": …, "arguments" | "parameters": …}` (also with
/// the call under `function`, as some models write it).
fn call_of(v: &Value) -> Option<ToolCall> {
    let v = v.get("function").filter(|f| f.is_object()).unwrap_or(v);
    let name = v.get("name").or_else(|| v.get("tool_name"))?.as_str()?;
    let args = v.get("arguments").or_else(|| v.get("parameters")).unwrap_or(&Value::Null);
    (!name.trim().is_empty()).then(|| ToolCall::new(name, args))
}

/// `{"name": …, "arguments": …}` and nothing else but whitespace.
fn json_call(body: &str) -> Option<ToolCall> {
    let (value, used) = json_prefix(body)?;
    body[used..].trim().is_empty().then_some(())?;
    call_of(&value)
}

/// `NAME>{…}` (what follows `<function=`).
fn named_json_call(body: &str) -> Option<ToolCall> {
    let (name, args) = body.split_once('>')?;
    let args = args.trim();
    let value = if args.is_empty() { Value::Null } else { serde_json::from_str(args).ok()? };
    (!name.trim().is_empty()).then(|| ToolCall::new(name, &value))
}

/// `<function=NAME><parameter=K>V</parameter>…</function>`, each value JSON
/// when it parses as JSON that is not a string, else the text.
fn xml_call(body: &str) -> Option<ToolCall> {
    let rest = body.trim().strip_prefix("<function=")?;
    let (name, mut rest) = rest.split_once('>')?;
    let mut args = serde_json::Map::new();
    while let Some(at) = rest.find("<parameter=") {
        let (key, after) = rest[at + "<parameter=".len()..].split_once('>')?;
        let end = after.find("</parameter>")?;
        let raw = after[..end].strip_prefix('\n').unwrap_or(&after[..end]);
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(v) if !v.is_string() => v,
            _ => Value::String(raw.to_string()),
        };
        args.insert(key.trim().to_string(), value);
        rest = &after[end + "</parameter>".len()..];
    }
    rest.trim().strip_prefix("</function>")?;
    Some(ToolCall::new(name, &Value::Object(args)))
}

/// Calls between `open` and `close` marks, text around them.
fn tagged(out: &mut Parsed, text: &str, at_end: bool, open: &str, close: &str, call: fn(&str) -> Option<ToolCall>) {
    let mut rest = text;
    loop {
        let Some(at) = rest.find(open) else {
            out.content.push_str(safe(rest, &[open], at_end));
            return;
        };
        out.content.push_str(&rest[..at]);
        let body = &rest[at + open.len()..];
        match body.find(close) {
            Some(end) => {
                match call(&body[..end]) {
                    Some(c) => out.calls.push(c),
                    None => out.content.push_str(&rest[at..at + open.len() + end + close.len()]),
                }
                rest = &body[end + close.len()..];
            }
            None => {
                if at_end {
                    // A call cut off by the end of generation (its closing
                    // mark is often the end-of-turn token).
                    match call(body) {
                        Some(c) => out.calls.push(c),
                        None => out.content.push_str(&rest[at..]),
                    }
                }
                return;
            }
        }
    }
}

/// `MARK[{call}, …]`: text before the mark, then a JSON list of calls.
fn marked_list(out: &mut Parsed, text: &str, at_end: bool, mark: &str) {
    let Some(at) = text.find(mark) else {
        out.content.push_str(safe(text, &[mark], at_end));
        return;
    };
    out.content.push_str(&text[..at]);
    let after = &text[at + mark.len()..];
    match json_prefix(after) {
        Some((Value::Array(items), used)) => {
            out.calls.extend(items.iter().filter_map(call_of));
            out.content.push_str(safe(&after[used..], &[mark], at_end));
        }
        Some((item @ Value::Object(_), used)) => {
            out.calls.extend(call_of(&item));
            out.content.push_str(safe(&after[used..], &[mark], at_end));
        }
        _ if at_end => out.content.push_str(&text[at..]),
        _ => {}
    }
}

/// `[TOOL_CALLS]NAME[ARGS]{…}`, repeated (with or without a mark each).
fn mistral_args(out: &mut Parsed, text: &str, at_end: bool) {
    const MARK: &str = "[TOOL_CALLS]";
    let Some(at) = text.find(MARK) else {
        out.content.push_str(safe(text, &[MARK], at_end));
        return;
    };
    out.content.push_str(&text[..at]);
    let mut rest = &text[at + MARK.len()..];
    while let Some((name, after)) = rest.split_once("[ARGS]") {
        let Some((args, used)) = json_prefix(after) else { break };
        // Mistral Small 3.2 may write the call's id: `NAME[CALL_ID]ID[ARGS]`.
        let name = name.split("[CALL_ID]").next().unwrap_or(name);
        out.calls.push(ToolCall::new(name, &args));
        rest = after[used..].trim_start();
        rest = rest.strip_prefix(MARK).unwrap_or(rest);
        if rest.trim().is_empty() {
            return;
        }
    }
    if at_end && !rest.trim().is_empty() {
        out.content.push_str(rest);
    }
}

/// DeepSeek R1 and V3.1: calls between `<｜tool▁call▁begin｜>` and
/// `<｜tool▁call▁end｜>`, inside `<｜tool▁calls▁begin｜>…<｜tool▁calls▁end｜>`.
fn deepseek(out: &mut Parsed, text: &str, at_end: bool) {
    const ALL: &str = "<｜tool▁calls▁begin｜>";
    const ALL_END: &str = "<｜tool▁calls▁end｜>";
    const BEGIN: &str = "<｜tool▁call▁begin｜>";
    const END: &str = "<｜tool▁call▁end｜>";
    let start = [ALL, BEGIN].iter().filter_map(|m| text.find(m)).min();
    let Some(at) = start else {
        out.content.push_str(safe(text, &[ALL, BEGIN], at_end));
        return;
    };
    out.content.push_str(&text[..at]);
    let mut rest = text[at..].strip_prefix(ALL).unwrap_or(&text[at..]);
    while let Some(body) = rest.trim_start().strip_prefix(BEGIN) {
        let (call_text, after) = match body.find(END) {
            Some(end) => (&body[..end], &body[end + END.len()..]),
            None if at_end => (body, ""),
            None => return,
        };
        if let Some(call) = deepseek_call(call_text) {
            out.calls.push(call);
        }
        rest = after;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix(ALL_END).unwrap_or(rest);
    out.content.push_str(safe(rest, &[BEGIN, ALL_END], at_end));
}

/// `function<｜tool▁sep｜>NAME\n```json\n{…}\n```` (R1) or
/// `NAME<｜tool▁sep｜>{…}` (V3.1).
fn deepseek_call(call: &str) -> Option<ToolCall> {
    let (head, tail) = call.split_once("<｜tool▁sep｜>")?;
    if let Some(fence) = tail.find("```") {
        let name = tail[..fence].trim();
        let body = &tail[fence + 3..];
        let body = body.strip_prefix("json").unwrap_or(body);
        let body = body.rfind("```").map_or(body, |end| &body[..end]);
        let args: Value = serde_json::from_str(body.trim()).ok()?;
        return Some(ToolCall::new(name, &args));
    }
    let args: Value = serde_json::from_str(tail.trim()).ok()?;
    Some(ToolCall::new(head, &args))
}

/// Command R7B: thinking, actions (a JSON list of calls) and the response,
/// each between its marks; text outside them is content.
fn command_r7b(out: &mut Parsed, text: &str, at_end: bool) {
    const MARKS: [(&str, &str); 3] = [
        ("<|START_THINKING|>", "<|END_THINKING|>"),
        ("<|START_ACTION|>", "<|END_ACTION|>"),
        ("<|START_RESPONSE|>", "<|END_RESPONSE|>"),
    ];
    let opens: Vec<&str> = MARKS.iter().map(|m| m.0).collect();
    let mut rest = text;
    loop {
        let next = MARKS.iter().enumerate().filter_map(|(i, m)| rest.find(m.0).map(|at| (at, i))).min();
        let Some((at, kind)) = next else {
            out.content.push_str(safe(rest, &opens, at_end));
            return;
        };
        out.content.push_str(&rest[..at]);
        let (open, close) = MARKS[kind];
        let body = &rest[at + open.len()..];
        let (inner, closed) = match body.find(close) {
            Some(end) => (&body[..end], true),
            None => (body, false),
        };
        match kind {
            0 => out.reasoning.push_str(if closed { inner } else { safe(inner, &[close], at_end) }),
            1 if closed || at_end => {
                if let Some((Value::Array(items), _)) = json_prefix(inner) {
                    out.calls.extend(items.iter().filter_map(call_of));
                }
            }
            1 => {}
            _ => out.content.push_str(if closed { inner } else { safe(inner, &[close], at_end) }),
        }
        if !closed {
            return;
        }
        rest = &body[inner.len() + close.len()..];
    }
}

/// gpt-oss (Harmony): messages `<|channel|>C [to=R] …<|message|>BODY`, each
/// ended by `<|end|>`, `<|call|>`, `<|return|>` or the end of generation;
/// later ones start with `<|start|>assistant`. `analysis` is reasoning, a
/// message to `functions.NAME` is a call, the rest is content.
fn harmony(out: &mut Parsed, text: &str, at_end: bool) {
    const ENDS: [&str; 3] = ["<|end|>", "<|call|>", "<|return|>"];
    let mut messages = text.split("<|start|>").peekable();
    while let Some(message) = messages.next() {
        let last = messages.peek().is_none();
        let Some((header, body)) = message.split_once("<|message|>") else {
            if last && at_end && !message.contains("<|channel|>") {
                // No Harmony at all: plain text.
                out.content.push_str(message.trim_start_matches("assistant"));
            }
            continue;
        };
        let end = ENDS.iter().filter_map(|e| body.find(e)).min();
        let complete = end.is_some() || !last || at_end;
        let body = end.map_or(body, |e| &body[..e]);
        let channel = header.split("<|channel|>").nth(1).map(|c| c.split([' ', '<']).next().unwrap_or("")).unwrap_or("");
        let recipient = header.split("to=").nth(1).map(|r| r.split([' ', '<']).next().unwrap_or(""));
        let shown = if complete { body } else { safe(body, &ENDS, false) };
        match recipient.and_then(|r| r.strip_prefix("functions.")) {
            Some(name) if complete => {
                let args = serde_json::from_str(body.trim()).unwrap_or_else(|_| Value::String(body.trim().to_string()));
                out.calls.push(ToolCall::new(name, &args));
            }
            Some(_) => {}
            None if channel == "analysis" => out.reasoning.push_str(shown),
            None => out.content.push_str(shown),
        }
    }
}

/// Functionary v3.2: `>>>NAME\n{…}` calls and `>>>all\ntext` content (the
/// generation prompt ends with the first `>>>`).
fn functionary_v32(out: &mut Parsed, text: &str, at_end: bool) {
    let text = text.strip_prefix(">>>").unwrap_or(text);
    let mut segments = text.split(">>>").peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let Some((name, body)) = segment.split_once('\n') else {
            if at_end && last && !segment.trim().is_empty() && segment.trim() != "all" {
                out.content.push_str(segment);
            }
            continue;
        };
        if name.trim() == "all" {
            out.content.push_str(if last { safe(body, &[">>>"], at_end) } else { body });
        } else if let Some((args, _)) = json_prefix(body) {
            out.calls.push(ToolCall::new(name, &args));
        } else if at_end {
            out.content.push_str(segment);
        }
    }
}

/// The whole answer is one JSON value: Llama 3.x's call object (after an
/// optional `<|python_tag|>`), or the generic format's `{"tool_call": …}`,
/// `{"tool_calls": […]}` or `{"response": "…"}`. Anything else is content.
/// An answer that starts like JSON is held back until it ends, except the
/// calls of a `tool_calls` list, each sent once complete (and kept when
/// the list is cut off by the token limit).
fn whole_json(out: &mut Parsed, text: &str, at_end: bool, tag: Option<&str>) {
    let trimmed = text.trim_start();
    let body = tag.and_then(|t| trimmed.strip_prefix(t)).unwrap_or(trimmed).trim_start();
    let may_be_call = body.is_empty() || body.starts_with('{') || tag.is_some_and(|t| t.starts_with(body));
    if !may_be_call {
        out.content.push_str(text);
        return;
    }
    let listed = if tag.is_none() { listed_calls(body) } else { Vec::new() };
    if !at_end {
        out.calls = listed;
        return;
    }
    let value = json_prefix(body).filter(|(_, used)| body[*used..].trim().is_empty()).map(|(v, _)| v);
    let calls: Vec<ToolCall> = match &value {
        Some(v) if v.get("tool_calls").is_some() => {
            v["tool_calls"].as_array().map(|a| a.iter().filter_map(call_of).collect()).unwrap_or_default()
        }
        Some(v) if v.get("tool_call").is_some() => call_of(&v["tool_call"]).into_iter().collect(),
        Some(v) if tag.is_some() => call_of(v).into_iter().collect(),
        Some(_) => Vec::new(),
        None => listed,
    };
    if !calls.is_empty() {
        out.calls = calls;
    } else if let Some(response) = value.as_ref().and_then(|v| v.get("response")).and_then(Value::as_str) {
        out.content.push_str(response);
    } else {
        out.content.push_str(text);
    }
}

/// The complete calls at the start of `{"tool_calls": [call, call, …`.
fn listed_calls(body: &str) -> Vec<ToolCall> {
    let open = body
        .strip_prefix('{')
        .map(str::trim_start)
        .and_then(|s| s.strip_prefix("\"tool_calls\""))
        .map(str::trim_start)
        .and_then(|s| s.strip_prefix(':'))
        .map(str::trim_start)
        .and_then(|s| s.strip_prefix('['));
    let Some(mut rest) = open else { return Vec::new() };
    let mut calls = Vec::new();
    while let Some((item, used)) = json_prefix(rest) {
        calls.extend(call_of(&item));
        rest = rest[used..].trim_start();
        match rest.strip_prefix(',') {
            Some(more) => rest = more,
            None => break,
        }
    }
    calls
}
