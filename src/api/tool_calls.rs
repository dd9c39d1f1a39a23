//! Tool calls in chat completions, around the pure parts in `crate::tools`:
//! the request's `tools`, `tool_choice` and `parallel_tool_calls` checked
//! before any load ([`validate`]); on the loaded model, the conversation
//! for its template, the grammar that forces a call and the marks its
//! output must keep as text ([`plan`]); the output as OpenAI's
//! `tool_calls` ([`call_json`]).

use serde_json::{json, Value};

use super::error::{invalid, ApiError};
use crate::engine::loaded::LoadedModel;
use crate::engine::TokenId;
use crate::tools::{Choice, ToolCall, ToolFormat, ToolSpec};

/// The tools part of a chat request after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTools {
    pub specs: Vec<ToolSpec>,
    /// The `tools` array as sent: what the template renders.
    pub descriptions: Value,
    pub choice: Choice,
    /// `parallel_tool_calls` (default true): more than one call per answer.
    pub parallel: bool,
}

/// `None`: no tools for the model (none given, an empty list, or
/// `tool_choice: "none"`).
pub fn validate(tools: Option<Value>, choice: Option<Value>, parallel: Option<Value>) -> Result<Option<ValidTools>, ApiError> {
    let parallel = match parallel {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("parallel_tool_calls", "`parallel_tool_calls` must be a boolean")),
    };
    let specs = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ref list)) => list.iter().enumerate().map(|(i, t)| spec(i, t)).collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tools", "`tools` must be an array of {\"type\": \"function\", \"function\": {...}}")),
    };
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|t| t.name == s.name) {
            return Err(invalid(format!("tools[{i}].function.name"), format!("two tools are named `{}`", s.name)));
        }
    }
    let choice = match choice {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) if s == "auto" => Choice::Auto,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "required" => Choice::Required,
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str).unwrap_or("function") == "function" => Choice::Named(name.to_string()),
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    if specs.is_empty() {
        return match choice {
            Choice::Auto => Ok(None),
            _ => Err(invalid("tool_choice", "`tool_choice` asks for a tool call but `tools` is empty or absent")),
        };
    }
    if let Choice::Named(name) = &choice {
        if !specs.iter().any(|t| &t.name == name) {
            return Err(invalid("tool_choice", format!("`tool_choice` names `{name}`, which is not among `tools`")));
        }
    }
    Ok(Some(ValidTools { specs, descriptions: tools.unwrap_or_default(), choice, parallel }))
}

/// One entry of `tools`: OpenAI's `{"type": "function", "function": {"name",
/// "description", "parameters", "strict"}}`.
fn spec(i: usize, tool: &Value) -> Result<ToolSpec, ApiError> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(invalid(format!("tools[{i}].type"), format!("tool type `{kind}` is not supported; only `function` is")));
    }
    let Some(function) = tool.get("function").filter(|f| f.is_object()) else {
        return Err(invalid(format!("tools[{i}].function"), format!("`tools[{i}].function` must be an object")));
    };
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let valid_name = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid_name {
        return Err(invalid(
            format!("tools[{i}].function.name"),
            format!("`tools[{i}].function.name` must be 1 to 64 letters, digits, `_`, `-` or `.`"),
        ));
    }
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(invalid(
                format!("tools[{i}].function.parameters"),
                format!("`tools[{i}].function.parameters` must be a JSON schema object"),
            ))
        }
    };
    Ok(ToolSpec { name: name.to_string(), parameters })
}

/// What a chat request on a loaded model needs for tools.
#[derive(Debug, Default)]
pub struct Plan {
    /// The output is parsed with this format (`None`: plain text).
    pub format: Option<ToolFormat>,
    /// At most one call.
    pub single: bool,
    /// The conversation for the template.
    pub messages: Vec<Value>,
    /// Forces the answer (`tool_choice` required or named; the generic format).
    pub grammar: Option<String>,
    /// Tokens the output writes as text (the format's marks).
    pub keep_special: Vec<TokenId>,
}

/// Prepares a request for `model`: `messages` as its template needs them,
/// the grammar `tools` calls for (an error if the request constrains the
/// output otherwise too: `constrained` names that field), and the format's
/// marks as tokens. gpt-oss's channels are parsed with or without tools.
pub fn plan(
    model: &LoadedModel,
    messages: &[Value],
    tools: Option<&ValidTools>,
    constrained: Option<&'static str>,
) -> Result<Plan, ApiError> {
    let format = model.tool_format;
    let prepare = |tools: Option<&ValidTools>| {
        let parallel = tools.is_none_or(|t| t.parallel);
        let (specs, descriptions) = (tools.map(|t| t.specs.as_slice()), tools.map(|t| &t.descriptions));
        crate::tools::prepare_messages(format, model.template_knows_tools, messages, specs, descriptions, parallel)
    };
    // The request's own schema holds the output of a model without a tool
    // format: it cannot call, and its answer is not the generic JSON.
    let tools = tools.filter(|t| !(format == ToolFormat::Generic && constrained.is_some() && t.choice == Choice::Auto));
    let Some(tools) = tools else {
        let parse = format == ToolFormat::Harmony;
        return Ok(Plan {
            format: parse.then_some(format),
            messages: prepare(None),
            keep_special: if parse { model.tool_marks.clone() } else { Vec::new() },
            ..Plan::default()
        });
    };
    let messages = prepare(Some(tools));
    let forced = tools.choice != Choice::Auto;
    let grammar = match constrained {
        Some(field) if forced => {
            return Err(invalid(field, format!("`{field}` cannot be combined with a `tool_choice` that forces a call")))
        }
        // The request's own constraint wins over the generic format's.
        Some(_) => None,
        None => crate::tools::call_grammar(format, &tools.specs, &tools.choice, tools.parallel, &crate::engine::json_schema_grammar)
            .map_err(|e| invalid("tools", format!("cannot constrain the call: {e}")))?,
    };
    Ok(Plan {
        format: Some(format),
        single: !tools.parallel || matches!(tools.choice, Choice::Named(_)),
        messages,
        grammar,
        keep_special: model.tool_marks.clone(),
    })
}

/// A call as OpenAI writes it, with a fresh id; `index` for stream deltas.
pub fn call_json(call: &ToolCall, index: Option<usize>) -> Value {
    let mut v = json!({
        "id": super::generate::response_id("call").replacen('-', "_", 1),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    });
    if let Some(i) = index {
        v["index"] = i.into();
    }
    v
}
