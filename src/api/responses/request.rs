//! An OpenAI Responses request as the chat body the one internal path takes.
//! Pure: unit-tested below; errors name the Responses field.
//!
//! - `instructions` becomes the first (system) message; `input` is a string
//!   (one user message) or a list of items: messages (`role` user, system,
//!   developer, assistant; content a string or `input_text`/`output_text`
//!   parts), `function_call` items (assistant `tool_calls`) and
//!   `function_call_output` items (`tool` messages). `reasoning` items are
//!   skipped; images and files are refused.
//! - `tools` (type `function`: name, description, parameters), `tool_choice`,
//!   `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`,
//!   `stream` keep their meaning; `text.format` (`json_schema`,
//!   `json_object`) is enforced while sampling; `reasoning.effort` sets the
//!   template's `reasoning_effort`.
//! - Stateless: `store` is accepted (nothing is stored; the answer says
//!   `store: false`), `previous_response_id`, `conversation` and
//!   `background` are refused with 400; `metadata`, `user`, `truncation`,
//!   `service_tier`, `include`, `prompt_cache_key`, `safety_identifier` are
//!   accepted and change nothing.

use serde_json::{json, Map, Value};

use crate::api::error::{invalid, ApiError};

const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "store",
    "timings_per_token",
    "return_progress",
];

/// Accepted, no effect here.
const IGNORED: &[&str] = &[
    "metadata",
    "user",
    "truncation",
    "service_tier",
    "include",
    "prompt_cache_key",
    "safety_identifier",
    "stream_options",
];

/// Refused: they need state this server does not keep.
const STATEFUL: &[&str] = &["previous_response_id", "conversation", "background"];

/// The chat body for a Responses request.
pub fn to_chat(req: &Value) -> Result<Map<String, Value>, ApiError> {
    let Some(obj) = req.as_object() else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    for (key, value) in obj {
        if value.is_null() || value == &json!(false) && key == "background" {
            continue;
        }
        if STATEFUL.contains(&key.as_str()) {
            return Err(invalid(key.as_str(), format!("`{key}`: this server keeps no responses; send the whole conversation in `input`")));
        }
        if !FIELDS.contains(&key.as_str()) && !IGNORED.contains(&key.as_str()) {
            return Err(invalid(key.as_str(), format!("`{key}`: this field is not supported")));
        }
    }
    let mut body = Map::new();
    crate::api::chat::translated_model(obj, &mut body)?;
    let mut messages = Vec::new();
    if let Some(Value::String(text)) = obj.get("instructions") {
        messages.push(json!({"role": "system", "content": text}));
    }
    match obj.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                item_into(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        _ => return Err(invalid("input", "`input` must be a string or a list of items")),
    }
    body.insert("messages".into(), Value::Array(messages));
    let same = ["temperature", "top_p", "stream", "parallel_tool_calls", "timings_per_token", "return_progress"].map(|k| (k, k));
    for (theirs, ours) in std::iter::once(("max_output_tokens", "max_tokens")).chain(same) {
        if let Some(v) = obj.get(theirs).filter(|v| !v.is_null()) {
            body.insert(ours.into(), v.clone());
        }
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        body.insert("tools".into(), self::tools(tools)?);
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        body.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")).filter(|v| !v.is_null()) {
        if let Some(rf) = response_format(format)? {
            body.insert("response_format".into(), rf);
        }
    }
    if let Some(effort) = obj.get("reasoning").and_then(|r| r.get("effort")).filter(|v| !v.is_null()) {
        let level = match effort.as_str() {
            Some(l @ ("low" | "medium" | "high")) => l,
            Some("minimal") => "low",
            Some("xhigh") => "high",
            _ => return Err(invalid("reasoning.effort", "`reasoning.effort` must be minimal, low, medium, high or xhigh")),
        };
        body.insert("chat_template_kwargs".into(), json!({"reasoning_effort": level}));
    }
    Ok(body)
}

/// The text of a message's content: a string or text parts.
fn content_text(content: &Value, at: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => out.push(part.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
                    Some(k @ ("input_image" | "input_file" | "input_audio")) => {
                        return Err(invalid(format!("{at}[{i}]"), format!("`{at}[{i}]`: {k} is not supported: this server serves text models")))
                    }
                    other => return Err(invalid(format!("{at}[{i}]"), format!("`{at}[{i}]`: parts of type `{}` are not supported", other.unwrap_or("?")))),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(invalid(at, format!("`{at}` must be a string or a list of parts"))),
    }
}

fn item_into(item: &Value, at: &str, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("developer" | "system") => "system",
                Some(r @ ("user" | "assistant")) => r,
                _ => return Err(invalid(format!("{at}.role"), format!("`{at}.role` must be user, assistant, system or developer"))),
            };
            let content = item.get("content").ok_or_else(|| invalid(format!("{at}.content"), format!("`{at}.content` is required")))?;
            messages.push(json!({"role": role, "content": content_text(content, &format!("{at}.content"))?}));
        }
        "function_call" => {
            let name = item.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.name"), format!("`{at}.name` is required")))?;
            let id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
            let arguments = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
            // Consecutive calls belong to one assistant turn.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    last["tool_calls"].as_array_mut().expect("a list").push(call);
                }
                _ => messages.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.call_id"), format!("`{at}.call_id` is required")))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => content_text(other, &format!("{at}.output"))?,
                None => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        "reasoning" => {}
        other => return Err(invalid(format!("{at}.type"), format!("`{at}`: items of type `{other}` are not supported"))),
    }
    Ok(())
}

fn tools(tools: &Value) -> Result<Value, ApiError> {
    let Value::Array(list) = tools else {
        return Err(invalid("tools", "`tools` must be a list"));
    };
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(k) => return Err(invalid(format!("{at}.type"), format!("`{at}`: built-in tools (`{k}`) are not available here; give function tools"))),
            None => return Err(invalid(format!("{at}.type"), format!("`{at}.type` is required"))),
        }
        let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.name"), format!("`{at}.name` is required")))?;
        let mut function = json!({"name": name, "parameters": tool.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            function["description"] = json!(d);
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(s) if ["auto", "required", "none"].contains(&s.as_str()) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| invalid("tool_choice.name", "`tool_choice.name` is required"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(invalid("tool_choice", "`tool_choice` must be \"auto\", \"required\", \"none\" or {\"type\": \"function\", \"name\": ...}")),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let schema = format.get("schema").cloned().ok_or_else(|| invalid("text.format.schema", "`text.format.schema` is required"))?;
            let name = format.get("name").and_then(Value::as_str).unwrap_or("output");
            Ok(Some(json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}})))
        }
        _ => Err(invalid("text.format.type", "`text.format.type` must be text, json_object or json_schema")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn a_string_input_with_instructions_is_two_messages() {
        let body = Value::Object(to_chat(&json!({"model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 16,
            "temperature": 0, "store": true, "metadata": {"a": "b"}})).unwrap());
        assert_eq!(body["messages"], json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]));
        assert_eq!((body["max_tokens"].clone(), body["temperature"].clone()), (json!(16), json!(0)));
        assert!(body.get("store").is_none() && body.get("metadata").is_none());
    }

    #[test]
    fn items_with_a_call_and_its_output_become_a_tool_round_trip() {
        let body = Value::Object(to_chat(&json!({"model": "m", "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C"}],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"}, "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}}})).unwrap());
        let m = &body["messages"];
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[1], json!({"role": "user", "content": "Weather?"}));
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2, "consecutive calls are one turn");
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "call_1", "content": "18 C"}));
        assert_eq!(body["tool_choice"], json!({"type": "function", "function": {"name": "weather"}}));
        assert_eq!(body["response_format"]["json_schema"]["name"], "w");
    }

    #[test]
    fn state_and_what_we_cannot_serve_are_refused_naming_the_field() {
        let base = json!({"model": "m", "input": "x"});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            param(to_chat(&r).unwrap_err())
        };
        assert_eq!(with("previous_response_id", json!("resp_1")), Some("previous_response_id".into()));
        assert_eq!(with("background", json!(true)), Some("background".into()));
        assert_eq!(with("tools", json!([{"type": "web_search"}])), Some("tools[0].type".into()));
        assert_eq!(with("input", json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])), Some("input[0].content[0]".into()));
        assert_eq!(with("modalities", json!(["text"])), Some("modalities".into()));
        assert!(to_chat(&json!({"model": "m", "input": "x", "background": false})).is_ok());
        assert!(to_chat(&json!({"input": "x", "timings_per_token": true, "return_progress": true})).is_ok(), "llama-server's, as on chat");
        assert_eq!(with("model", json!(7)), Some("model".into()));
        assert!(to_chat(&json!({"input": "x"})).unwrap().get("model").is_none(), "the chat path decides");
    }
}
