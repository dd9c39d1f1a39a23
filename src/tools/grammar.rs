//! The GBNF grammar that makes a model answer with tool calls in its own
//! format (`tool_choice` `required` or a named function), or, for models
//! without a format, with the generic JSON answer. Each tool's arguments
//! follow its parameters' JSON schema, converted by the caller's converter
//! (llama.cpp's `json_schema_to_grammar`) and renamed so that several
//! converted schemas live in one grammar.

use serde_json::Value;

use super::{ToolFormat, ToolSpec};

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The model decides (OpenAI's default when tools are given).
    Auto,
    /// At least one call, to any tool.
    Required,
    /// One call to this tool.
    Named(String),
}

/// The grammar for `choice`, or `None` when the output is left free (`Auto`
/// on a model with a format of its own). `to_gbnf` turns a JSON schema into
/// a grammar whose start rule is `root`. `parallel`: more than one call
/// may be made.
pub fn call_grammar(
    format: ToolFormat,
    tools: &[ToolSpec],
    choice: &Choice,
    parallel: bool,
    to_gbnf: &dyn Fn(&Value) -> Result<String, String>,
) -> Result<Option<String>, String> {
    if *choice == Choice::Auto && format != ToolFormat::Generic {
        return Ok(None);
    }
    let chosen: Vec<&ToolSpec> = match choice {
        Choice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
        _ => tools.iter().collect(),
    };
    if chosen.is_empty() {
        return Err("no tool to call".into());
    }
    // One call when the format or the request allows no more.
    let parallel = parallel && !matches!(choice, Choice::Named(_)) && !matches!(format, ToolFormat::Llama3 | ToolFormat::Harmony);
    let mut rules = String::new();
    let mut alternatives = Vec::new();
    for (i, tool) in chosen.iter().enumerate() {
        let prefix = format!("t{i}-");
        let args = if format == ToolFormat::QwenXml {
            xml_parameters(&tool.parameters, &prefix)
        } else {
            let gbnf = to_gbnf(&tool.parameters).map_err(|e| format!("tool `{}`: parameters: {e}", tool.name))?;
            rename_rules(&gbnf, &prefix)
        };
        rules.push_str(&args);
        rules.push('\n');
        alternatives.push(call(format, &tool.name, &format!("{prefix}root")));
    }
    let calls = |open: &str, sep: &str, close: &str| {
        let more = if parallel { format!("({} tc-call)*", lit(sep)) } else { String::new() };
        format!("{} tc-call {more} {}", lit(open), lit(close)).trim().to_string()
    };
    let root = match format {
        ToolFormat::Hermes | ToolFormat::QwenXml => calls("<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>"),
        ToolFormat::Llama3 | ToolFormat::Harmony => "tc-call".to_string(),
        ToolFormat::MistralArgs => calls("[TOOL_CALLS]", "[TOOL_CALLS]", ""),
        ToolFormat::MistralJson => calls("[TOOL_CALLS][", ", ", "]"),
        ToolFormat::Granite => calls("<|tool_call|>[", ", ", "]"),
        ToolFormat::CommandR7b => calls("<|START_ACTION|>[", ", ", "]<|END_ACTION|>"),
        ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => calls("<｜tool▁calls▁begin｜>", "\n", "<｜tool▁calls▁end｜>"),
        ToolFormat::FunctionaryV31 => calls("", "", ""),
        ToolFormat::FunctionaryV32 => calls("", ">>>", ""),
        ToolFormat::Generic => {
            let call = if parallel { calls("{\"tool_calls\": [", ", ", "]}") } else { calls("{\"tool_call\": ", "", "}") };
            match choice {
                Choice::Auto => format!("({call}) | {} tc-string {}", lit("{\"response\": "), lit("}")),
                _ => call,
            }
        }
    };
    Ok(Some(format!(
        "root ::= {root}\ntc-call ::= {}\n{STRING_RULE}\n{rules}",
        alternatives.join(" | ")
    )))
}

/// A JSON string, for the generic format's `response`.
const STRING_RULE: &str = r#"tc-string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"""#;

/// One call to `name` in `format`, its arguments by rule `args`.
fn call(format: ToolFormat, name: &str, args: &str) -> String {
    let json_name = serde_json::to_string(name).unwrap_or_default();
    let object = |name_key: &str, args_key: &str| {
        format!("{} {args} {}", lit(&format!("{{\"{name_key}\": {json_name}, \"{args_key}\": ")), lit("}"))
    };
    match format {
        ToolFormat::Hermes | ToolFormat::MistralJson | ToolFormat::Granite | ToolFormat::Generic => object("name", "arguments"),
        ToolFormat::Llama3 => object("name", "parameters"),
        ToolFormat::CommandR7b => format!(
            "{} [0-9]+ {} {args} {}",
            lit("{\"tool_call_id\": \""),
            lit(&format!("\", \"tool_name\": {json_name}, \"parameters\": ")),
            lit("}")
        ),
        ToolFormat::QwenXml => format!("{} {args} {}", lit(&format!("<function={name}>\n")), lit("</function>")),
        ToolFormat::MistralArgs => format!("{} {args}", lit(&format!("{name}[ARGS]"))),
        ToolFormat::DeepSeekR1 => format!(
            "{} {args} {}",
            lit(&format!("<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n")),
            lit("\n```<｜tool▁call▁end｜>")
        ),
        ToolFormat::DeepSeekV31 => {
            format!("{} {args} {}", lit(&format!("<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>")), lit("<｜tool▁call▁end｜>"))
        }
        ToolFormat::FunctionaryV31 => format!("{} {args} {}", lit(&format!("<function={name}>")), lit("</function>")),
        ToolFormat::FunctionaryV32 => format!("{} {args}", lit(&format!("{name}\n"))),
        ToolFormat::Harmony => {
            format!("{} {args}", lit(&format!("<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>")))
        }
    }
}

/// Qwen3-Coder's arguments: `<parameter=K>\nVALUE\n</parameter>\n` for the
/// schema's properties, any number in any order; values are free text.
fn xml_parameters(parameters: &Value, prefix: &str) -> String {
    let names: Vec<String> = parameters
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(|k| lit(k)).collect())
        .unwrap_or_default();
    let name = if names.is_empty() { "[^>\\n]+".to_string() } else { format!("({})", names.join(" | ")) };
    format!(
        "{prefix}root ::= ( \"<parameter=\" {name} \">\\n\" {prefix}text \"\\n</parameter>\\n\" )*\n{prefix}text ::= ( [^<] | \"<\" [^/] )*"
    )
}

/// `s` as a GBNF string literal (nothing for "").
fn lit(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every rule name in `gbnf` (definitions and references) with `prefix`
/// before it; literals, character classes, repetition counts and comments
/// are left alone.
fn rename_rules(gbnf: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(gbnf.len() * 2);
    let mut chars = gbnf.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' => {
                let close = if c == '"' { '"' } else { ']' };
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == close {
                        break;
                    }
                }
            }
            '{' | '#' => {
                let close = if c == '{' { '}' } else { '\n' };
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == close {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() => {
                out.push_str(prefix);
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '-' || d == '_') {
                        break;
                    }
                    out.push(d);
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(super) fn rename_for_test(gbnf: &str, prefix: &str) -> String {
    rename_rules(gbnf, prefix)
}
