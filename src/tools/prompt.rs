//! The conversation as a template needs it when tools are involved.
//!
//! Templates render past calls from `tool_calls[].function.arguments` as a
//! mapping (`|tojson`, `|items`), as transformers documents, while OpenAI
//! clients send a JSON string: strings that hold a JSON object become one.
//! A template that knows nothing of tools (the generic format) gets the
//! tools described in its system message, past calls as the JSON answers
//! the model was asked for, and tool results as user turns.

use serde_json::{json, Map, Value};

use super::{ToolFormat, ToolSpec};

/// `messages` ready for a template whose format is `format`;
/// `template_knows_tools`: the template renders `tools` itself (and past
/// calls and results). `tools` are those the model is told about (none with
/// `tool_choice: "none"`, or when the output is held to the request's own
/// schema); past calls are prepared either way.
pub fn prepare_messages(
    format: ToolFormat,
    template_knows_tools: bool,
    messages: &[Value],
    tools: Option<&[ToolSpec]>,
    descriptions: Option<&Value>,
    parallel: bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = messages.iter().map(arguments_as_objects).collect();
    if format != ToolFormat::Generic {
        return out;
    }
    if !template_knows_tools {
        out = generic_turns(out, parallel);
    }
    // The answer is held to the generic JSON: say so even to a template that
    // renders the tools in a syntax of its own.
    if let (Some(tools), Some(descriptions)) = (tools.filter(|t| !t.is_empty()), descriptions) {
        let note = generic_instructions(tools, descriptions, parallel);
        match out.first_mut() {
            Some(first) if first.get("role").and_then(Value::as_str) == Some("system") => {
                let content = first.get("content").and_then(Value::as_str).unwrap_or("");
                first["content"] = Value::String(if content.is_empty() { note } else { format!("{content}\n\n{note}") });
            }
            _ => out.insert(0, json!({"role": "system", "content": note})),
        }
    }
    out
}

/// An assistant message's `tool_calls[].function.arguments` as a mapping
/// when it is a string holding a JSON object.
fn arguments_as_objects(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for call in calls {
            let Some(args) = call.get_mut("function").and_then(|f| f.get_mut("arguments")) else { continue };
            if let Some(parsed) = args.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()).filter(Value::is_object) {
                *args = parsed;
            }
        }
    }
    message
}

/// Past calls as the generic JSON answer; tool results as user turns (one
/// turn for results in a row, so roles still alternate).
fn generic_turns(messages: Vec<Value>, parallel: bool) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    let mut names: Map<String, Value> = Map::new();
    for mut m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(calls) = m.as_object_mut().and_then(|o| o.remove("tool_calls")).and_then(|c| c.as_array().cloned()) {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let f = c.get("function").unwrap_or(c);
                    if let (Some(id), Some(name)) = (c.get("id").and_then(Value::as_str), f.get("name")) {
                        names.insert(id.to_string(), name.clone());
                    }
                    json!({"name": f.get("name"), "arguments": f.get("arguments")})
                })
                .collect();
            let answer = match calls.as_slice() {
                [one] if !parallel => json!({"tool_call": one}),
                _ => json!({"tool_calls": calls}),
            };
            m["content"] = Value::String(answer.to_string());
        }
        if role == "tool" {
            let name = m.get("tool_call_id").and_then(Value::as_str).and_then(|id| names.get(id)).cloned();
            let result = json!({"tool_response": {"tool": name, "content": m.get("content")}}).to_string();
            match out.last_mut() {
                Some(prev) if prev.get("from_tool").is_some() => {
                    let text = format!("{}\n{result}", prev["content"].as_str().unwrap_or(""));
                    prev["content"] = Value::String(text);
                }
                _ => out.push(json!({"role": "user", "content": result, "from_tool": true})),
            }
            continue;
        }
        out.push(m);
    }
    for m in &mut out {
        if let Some(o) = m.as_object_mut() {
            o.remove("from_tool");
        }
    }
    out
}

/// The system note that tells a model without a tool format how to call.
fn generic_instructions(tools: &[ToolSpec], descriptions: &Value, parallel: bool) -> String {
    let call = r#"{"name": "<tool name>", "arguments": {<arguments>}}"#;
    let shape = if parallel { format!(r#"{{"tool_calls": [{call}, ...]}}"#) } else { format!(r#"{{"tool_call": {call}}}"#) };
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    format!(
        "You can call these tools ({}):\n{}\n\nAnswer with one JSON object: {shape} to call tools, or {{\"response\": \"<your answer>\"}} to answer directly.",
        names.join(", "),
        serde_json::to_string_pretty(descriptions).unwrap_or_default()
    )
}
