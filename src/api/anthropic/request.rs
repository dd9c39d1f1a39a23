//! An Anthropic Messages request as the OpenAI chat body the one internal
//! path takes (validation, template, tools, sampling). Pure: unit-tested
//! below; errors name the Anthropic field.
//!
//! - `system` (a string or text blocks) becomes the first message.
//! - A user turn's `tool_result` blocks become `tool` messages (in order,
//!   before the turn's text); an assistant turn's `tool_use` blocks become
//!   `tool_calls`, its `thinking` blocks `reasoning_content`.
//! - `tools` (custom tools: `name`, `description`, `input_schema`) become
//!   functions; `tool_choice` `auto`/`any`/`tool`/`none` maps onto
//!   OpenAI's, `disable_parallel_tool_use` onto `parallel_tool_calls`.
//! - `thinking` `enabled`/`adaptive`/`between_tools`/`disabled` sets the
//!   template's `enable_thinking`; `output_config.effort` its
//!   `reasoning_effort` (`xhigh` and `max` are `high`), and
//!   `output_config.format` (a JSON schema) is enforced while sampling, as
//!   OpenAI's `response_format`.
//! - `stop_sequences`, `temperature`, `top_p`, `top_k` (no longer in the
//!   SDK's signature; sent as extra fields), `max_tokens`, `stream` keep
//!   their meaning. Fields about Anthropic's service (`metadata`,
//!   `service_tier`, `cache_control`, `container`, `diagnostics`,
//!   `inference_geo`, `speed`, `user_profile_id`, `workspace_id`) are
//!   accepted and have no effect (our prompt cache needs no markers).
//!   Images and documents, server tools and any other field are refused
//!   with 400 naming it.

use serde_json::{json, Map, Value};

use crate::api::error::{invalid, ApiError};

/// Fields we take (the rest are refused).
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",
];

/// Fields about Anthropic's service: accepted, no effect here.
const IGNORED: &[&str] =
    &["metadata", "service_tier", "cache_control", "container", "diagnostics", "inference_geo", "speed", "user_profile_id", "workspace_id"];

/// The OpenAI chat body for `req` (a Messages request, or with `count` a
/// count_tokens request, which has no `max_tokens`).
pub fn to_openai(req: &Value, count: bool) -> Result<Map<String, Value>, ApiError> {
    let Some(obj) = req.as_object() else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str()) && !IGNORED.contains(&k.as_str())) {
        return Err(invalid(unknown.as_str(), format!("`{unknown}`: this field is not supported")));
    }
    let mut body = Map::new();
    crate::api::chat::translated_model(obj, &mut body)?;
    match obj.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {
            body.insert("max_tokens".into(), v.clone());
        }
        None if count => {}
        Some(_) => return Err(invalid("max_tokens", "`max_tokens` must be an integer of at least 1")),
        None => return Err(invalid("max_tokens", "`max_tokens`: field required")),
    }
    let mut messages = Vec::new();
    if let Some(system) = obj.get("system") {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(Value::Array(turns)) = obj.get("messages") else {
        return Err(invalid("messages", "`messages`: a list of messages is required"));
    };
    for (i, turn) in turns.iter().enumerate() {
        messages.extend(message(turn, &format!("messages[{i}]"))?);
    }
    body.insert("messages".into(), Value::Array(messages));
    for (theirs, ours) in [("stop_sequences", "stop"), ("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")] {
        if let Some(v) = obj.get(theirs).filter(|v| !v.is_null()) {
            body.insert(ours.into(), v.clone());
        }
    }
    if let Some(stream) = obj.get("stream").filter(|v| !v.is_null()) {
        body.insert("stream".into(), stream.clone());
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        body.insert("tools".into(), self::tools(tools)?);
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice(choice)?;
        body.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    let mut kwargs = Map::new();
    if let Some(thinking) = obj.get("thinking").filter(|v| !v.is_null()) {
        let enable = match thinking.get("type").and_then(Value::as_str) {
            Some("enabled" | "adaptive" | "between_tools") => true,
            Some("disabled") => false,
            _ => return Err(invalid("thinking.type", "`thinking.type` must be \"enabled\", \"adaptive\", \"between_tools\" or \"disabled\"")),
        };
        kwargs.insert("enable_thinking".into(), json!(enable));
    }
    if let Some(config) = obj.get("output_config").filter(|v| !v.is_null()) {
        output_config(config, &mut body, &mut kwargs)?;
    }
    if !kwargs.is_empty() {
        body.insert("chat_template_kwargs".into(), Value::Object(kwargs));
    }
    Ok(body)
}

/// `output_config`: `effort` for the template, `format` as `response_format`.
fn output_config(config: &Value, body: &mut Map<String, Value>, kwargs: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(config) = config.as_object() else {
        return Err(invalid("output_config", "`output_config` must be an object"));
    };
    for (key, value) in config.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            "effort" => {
                let level = match value.as_str() {
                    Some(l @ ("low" | "medium" | "high")) => l,
                    Some("xhigh" | "max") => "high",
                    _ => return Err(invalid("output_config.effort", "`output_config.effort` must be low, medium, high, xhigh or max")),
                };
                kwargs.insert("reasoning_effort".into(), json!(level));
            }
            "format" => {
                let schema = match (value.get("type").and_then(Value::as_str), value.get("schema")) {
                    (Some("json_schema"), Some(schema)) => schema.clone(),
                    _ => return Err(invalid("output_config.format", "`output_config.format` must be {\"type\": \"json_schema\", \"schema\": {...}}")),
                };
                body.insert("response_format".into(), json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}));
            }
            other => return Err(invalid(format!("output_config.{other}"), format!("`output_config.{other}` is not supported"))),
        }
    }
    Ok(())
}

/// A string, or a list of text blocks, as one text (`system`, a tool result).
fn text_of(value: &Value, at: &str) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(block.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
                    other => return Err(unsupported_block(other, &format!("{at}[{i}]"))),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(invalid(at, format!("`{at}` must be a string or a list of text blocks"))),
    }
}

fn unsupported_block(kind: Option<&str>, at: &str) -> ApiError {
    match kind {
        Some(k @ ("image" | "document")) => invalid(at, format!("`{at}`: {k} blocks are not supported: this server serves text models")),
        Some(k) => invalid(at, format!("`{at}`: content blocks of type `{k}` are not supported here")),
        None => invalid(at, format!("`{at}`: a content block needs a `type`")),
    }
}

/// One Anthropic message as one or more OpenAI messages.
fn message(turn: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let role = turn.get("role").and_then(Value::as_str);
    let content = turn.get("content").ok_or_else(|| invalid(format!("{at}.content"), format!("`{at}.content` is required")))?;
    match role {
        Some("user") => user(content, at),
        Some("assistant") => assistant(content, at).map(|m| vec![m]),
        _ => Err(invalid(format!("{at}.role"), format!("`{at}.role` must be \"user\" or \"assistant\""))),
    }
}

fn user(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let blocks = match content {
        Value::String(s) => return Ok(vec![json!({"role": "user", "content": s})]),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(format!("{at}.content"), format!("`{at}.content` must be a string or a list of blocks"))),
    };
    let mut out = Vec::new();
    let mut text = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let here = format!("{at}.content[{i}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push(block.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
            Some("tool_result") => {
                let id = block.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| invalid(format!("{here}.tool_use_id"), format!("`{here}.tool_use_id` is required")))?;
                let mut result = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, &format!("{here}.content"))?,
                };
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    result = format!("Error: {result}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
            }
            other => return Err(unsupported_block(other, &here)),
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(json!({"role": "user", "content": text.join("\n")}));
    }
    Ok(out)
}

fn assistant(content: &Value, at: &str) -> Result<Value, ApiError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(format!("{at}.content"), format!("`{at}.content` must be a string or a list of blocks"))),
    };
    let (mut text, mut thinking, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for (i, block) in blocks.iter().enumerate() {
        let here = format!("{at}.content[{i}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push(block.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
            Some("thinking") => thinking.push(block.get("thinking").and_then(Value::as_str).unwrap_or_default().to_string()),
            Some("redacted_thinking") => {}
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("{here}.name"), format!("`{here}.name` is required")))?;
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
            }
            other => return Err(unsupported_block(other, &here)),
        }
    }
    let mut m = json!({"role": "assistant", "content": text.join("\n")});
    if !thinking.is_empty() {
        m["reasoning_content"] = json!(thinking.join("\n"));
    }
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

fn tools(tools: &Value) -> Result<Value, ApiError> {
    let Value::Array(list) = tools else {
        return Err(invalid("tools", "`tools` must be a list"));
    };
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
            return Err(invalid(format!("{at}.type"), format!("`{at}`: server tools (`{kind}`) are not available here; give custom tools (name, description, input_schema)")));
        }
        let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.name"), format!("`{at}.name` is required")))?;
        let schema = tool.get("input_schema").cloned().ok_or_else(|| invalid(format!("{at}.input_schema"), format!("`{at}.input_schema` is required")))?;
        let mut function = json!({"name": name, "parameters": schema});
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            function["description"] = json!(d);
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// OpenAI's `tool_choice`, and `parallel_tool_calls` when the request set
/// `disable_parallel_tool_use`.
fn tool_choice(choice: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|d| !d);
    let ours = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| invalid("tool_choice.name", "`tool_choice.name` is required with type \"tool\""))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("tool_choice.type", "`tool_choice.type` must be \"auto\", \"any\", \"tool\" or \"none\"")),
    };
    Ok((ours, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn a_plain_request_maps_field_by_field() {
        let req = json!({"model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "Hi"}], "stop_sequences": ["\n\n"], "temperature": 0,
            "top_k": 5, "stream": true, "metadata": {"user_id": "u"}});
        let body = Value::Object(to_openai(&req, false).unwrap());
        assert_eq!(body["messages"], json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]));
        let mut service = req.clone();
        for k in IGNORED {
            service[*k] = json!(null);
        }
        assert_eq!(Value::Object(to_openai(&service, false).unwrap()), body, "service fields change nothing");
        assert_eq!((body["max_tokens"].clone(), body["stop"].clone(), body["top_k"].clone()), (json!(64), json!(["\n\n"]), json!(5)));
        assert_eq!((body["temperature"].clone(), body["stream"].clone()), (json!(0), json!(true)));
        assert!(body.get("metadata").is_none());
    }

    #[test]
    fn a_tool_round_trip_becomes_calls_and_tool_messages() {
        let req = json!({"model": "m", "max_tokens": 8, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "use the tool", "signature": "x"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18 C"}]},
                {"type": "text", "text": "Thanks"}]}],
            "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}});
        let body = Value::Object(to_openai(&req, false).unwrap());
        let m = &body["messages"];
        assert_eq!(m[1]["tool_calls"][0]["function"], json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"}));
        assert_eq!((m[1]["content"].clone(), m[1]["reasoning_content"].clone()), (json!("Checking."), json!("use the tool")));
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"}));
        assert_eq!(m[3], json!({"role": "user", "content": "Thanks"}));
        assert_eq!(body["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!((body["tool_choice"].clone(), body["parallel_tool_calls"].clone()), (json!("required"), json!(false)));
    }

    #[test]
    fn thinking_sets_the_templates_switch() {
        let mut req = json!({"model": "m", "max_tokens": 8, "messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}});
        assert_eq!(to_openai(&req, false).unwrap()["chat_template_kwargs"], json!({"enable_thinking": true}));
        req["thinking"] = json!({"type": "disabled"});
        assert_eq!(to_openai(&req, false).unwrap()["chat_template_kwargs"], json!({"enable_thinking": false}));
        req["thinking"] = json!({"type": "adaptive"});
        req["output_config"] = json!({"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}});
        let body = to_openai(&req, false).unwrap();
        assert_eq!(body["chat_template_kwargs"], json!({"enable_thinking": true, "reasoning_effort": "high"}));
        assert_eq!(body["response_format"], json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}));
    }

    #[test]
    fn what_we_cannot_serve_is_refused_naming_the_field() {
        let base = json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            param(to_openai(&r, false).unwrap_err())
        };
        let image = json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]);
        assert_eq!(with("messages", image), Some("messages[0].content[0]".into()));
        assert_eq!(with("model", json!(7)), Some("model".into()));
        let unnamed = to_openai(&json!({"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}), true).unwrap();
        assert!(unnamed.get("model").is_none(), "no model: the chat path decides (one model serves it)");
        assert_eq!(with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])), Some("tools[0].type".into()));
        assert_eq!(with("mcp_servers", json!([])), Some("mcp_servers".into()));
        assert_eq!(with("tool_choice", json!({"type": "sometimes"})), Some("tool_choice.type".into()));
        assert_eq!(with("max_tokens", json!(0)), Some("max_tokens".into()));
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(param(to_openai(&no_max, false).unwrap_err()), Some("max_tokens".into()));
        assert!(to_openai(&no_max, true).is_ok(), "count_tokens has no max_tokens");
        let bad_role = json!([{"role": "system", "content": "x"}]);
        assert_eq!(with("messages", bad_role), Some("messages[0].role".into()));
    }
}
