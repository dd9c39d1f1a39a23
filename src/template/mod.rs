//! Chat-template rendering that matches Hugging Face `transformers`.
//!
//! Model authors ship their prompt format as a Jinja template
//! (`tokenizer.chat_template`). The reference renderer is transformers'
//! `apply_chat_template`, which uses Python `jinja2` with a specific setup:
//! a sandboxed environment with `trim_blocks` and `lstrip_blocks`, the
//! `loopcontrols` extension, the globals `raise_exception(msg)` and
//! `strftime_now(fmt)`, and its own `tojson` filter. Templates are written
//! and tested against that setup, so a prompt that differs by one byte is a
//! prompt the model was not trained on.
//!
//! This module reproduces that setup with `minijinja`:
//!
//! * Python string/dict methods (`.strip()`, `.items()`, `.get()`, …) come
//!   from `minijinja_contrib::pycompat`.
//! * `tojson` is replaced because minijinja's version HTML-escapes `<`, `>`,
//!   `&` and `'` and uses compact separators; transformers' version is
//!   `json.dumps(x, ensure_ascii=False, indent=…, separators=…, sort_keys=…)`.
//! * Printed values (`{{ x }}` and `|string`) use Python's `str()`: `True`,
//!   `None`, `1e+16`, `['a', 'b']` rather than minijinja's `true`, `none`, …
//! * The `iterable`, `sequence` and `number` tests and the `trim` filter
//!   follow jinja2 where minijinja's answers differ (`none is iterable`…).
//! * transformers' `{% generation %}` block tag is accepted.
//! * `raise_exception` surfaces the template's own message as
//!   [`TemplateError::Raised`], so callers can report it to the client.
//!
//! Known gaps (no minijinja hook): the `~` operator and `|join` print floats
//! beyond 1e16 or below 1e-4 and lists in minijinja's spelling
//! (`10000000000000000.0`, `["a"]`); `for x in none` iterates nothing where
//! jinja2 raises; `"x"|safe + y` does not HTML-escape `y` as jinja2's
//! `Markup` does; lists are immutable, so `.append()`/`.pop()` fail (as
//! they do in transformers' immutable sandbox).
//!
//! Dictionaries keep insertion order (as Python dicts do) only when
//! `serde_json/preserve_order` and `minijinja/preserve_order` are enabled.
//!
//! Files: this one (the environment, [`ChatTemplate`], errors),
//! `python_compat.rs`, `tojson.rs`, `strftime.rs`.

mod python_compat;
mod pylist;
mod strftime;
mod tojson;

use python_compat::*;
use strftime::*;
use tojson::*;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// `at` as an RFC 3339 UTC timestamp (`2026-11-29T23:10:00Z`), as Ollama's
/// API writes times.
pub fn rfc3339_utc(at: SystemTime) -> String {
    strftime("%Y-%m-%dT%H:%M:%SZ", at)
}

/// Name under which the single template lives inside the environment; it
/// also appears in error locations ("in chat_template:12").
const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja (as understood by minijinja).
    #[error("chat template does not compile: {0}")]
    Compile(String),
    /// The template called `raise_exception(msg)`: it rejects this
    /// conversation (for example a system message on a model without one).
    /// The text is the template's message, verbatim.
    #[error("{0}")]
    Raised(String),
    /// Any other failure while rendering (type error, unsupported feature…).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// Inputs of one render, mirroring the arguments transformers passes to the
/// template.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderRequest<'a> {
    /// The conversation, one JSON object per message (`role`, `content`, …).
    pub messages: &'a [serde_json::Value],
    /// Append the header that opens the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool (function) definitions, as the OpenAI `tools` array.
    pub tools: Option<&'a serde_json::Value>,
    /// Extra template variables (`chat_template_kwargs`, e.g.
    /// `enable_thinking`). They may override `bos_token`/`eos_token`, as in
    /// transformers, but not `messages`, `tools` or `add_generation_prompt`.
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Clock used by `strftime_now`; `None` means the current time. Tests
    /// fix it so that date-stamped prompts are reproducible.
    pub now: Option<SystemTime>,
}

/// A compiled chat template together with the special tokens it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The template mentions a `developer` role; otherwise such messages are
    /// rendered as `system`, as OpenAI does for models without one.
    knows_developer: bool,
    /// The template reads a `functions` variable it never sets (Firefunction
    /// v2: its deployments pass the tools there as a JSON string).
    reads_functions: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are exposed to the
    /// template as variables of the same names, as transformers does.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // jinja2 settings used by transformers.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        // jinja2's default `Undefined`: printing gives "", iterating gives
        // nothing, `is defined` is false, but attribute access fails.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        // Prompts are not HTML.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("namespace", pylist::namespace);
        env.add_function("strftime_now", |fmt: &str| strftime(fmt, SystemTime::now()));
        env.add_filter("tojson", tojson);
        // Tests and filters where minijinja's answer differs from jinja2's.
        env.add_test("iterable", is_iterable);
        env.add_test("sequence", is_sequence);
        // Python's bool is a Number.
        env.add_test("number", |v: &Value| {
            matches!(v.kind(), ValueKind::Number | ValueKind::Bool)
        });
        env.add_filter("string", |v: &Value| Value::from(py_str(v)));
        env.add_filter("trim", trim);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        let reads_functions = env
            .get_template(TEMPLATE_NAME)
            .map(|t| t.undeclared_variables(false).contains("functions"))
            .unwrap_or(false);
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            knows_developer: source.contains("developer"),
            reads_functions,
        })
    }

    /// Renders the prompt for `req`.
    pub fn render(&self, req: &RenderRequest<'_>) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        // llama-server gives every template these two: Llama 3.x's print
        // `date_string` in their system header (their own fallback is a fixed
        // 2024 date), Firefunction v2 needs `datetime`.
        let now = req.now.unwrap_or_else(SystemTime::now);
        ctx.insert("date_string".into(), Value::from(strftime("%d %b %Y", now)));
        ctx.insert("datetime".into(), Value::from(strftime("%b %d %Y", now)));
        if let Some(now) = req.now {
            // Shadows the global of the same name for this render only.
            let f = move |fmt: &str| strftime(fmt, now);
            ctx.insert("strftime_now".into(), Value::from_function(f));
        }
        if self.reads_functions {
            // Firefunction v2 appends `functions` to its system text; llama.cpp's
            // Jinja lets the missing variable pass as "" and the model never sees
            // its tools. Here it gets them, as Fireworks' own server passes them.
            ctx.insert("functions".into(), Value::from(functions_json(req.tools)));
        }
        for (k, v) in req.extra.into_iter().flatten() {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        // transformers always passes these, as None when absent, so
        // `tools is defined` is true even without tools.
        let is_developer = |m: &serde_json::Value| m.get("role").and_then(|r| r.as_str()) == Some("developer");
        if !self.knows_developer && req.messages.iter().any(is_developer) {
            let mapped: Vec<serde_json::Value> = req
                .messages
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if is_developer(&m) {
                        m["role"] = "system".into();
                    }
                    m
                })
                .collect();
            ctx.insert("messages".into(), Value::from_serialize(&mapped));
        } else {
            ctx.insert("messages".into(), Value::from_serialize(req.messages));
        }
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(req.add_generation_prompt),
        );
        ctx.insert(
            "tools".into(),
            req.tools.map_or(Value::from(()), Value::from_serialize),
        );
        ctx.insert("documents".into(), Value::from(()));

        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        tmpl.render(Value::from(ctx))
            .map_err(|e| match raised_message(&e) {
                Some(msg) => TemplateError::Raised(msg.to_owned()),
                None => TemplateError::Render(describe(&e)),
            })
    }
}

/// The `function` objects of an OpenAI `tools` array as one JSON string
/// ("" without tools).
fn functions_json(tools: Option<&serde_json::Value>) -> String {
    let Some(serde_json::Value::Array(tools)) = tools else {
        return String::new();
    };
    let functions: Vec<&serde_json::Value> =
        tools.iter().map(|t| t.get("function").unwrap_or(t)).collect();
    serde_json::to_string_pretty(&functions).unwrap_or_default()
}

/// transformers registers a `{% generation %}…{% endgeneration %}` block
/// tag (it marks assistant text for training masks and renders its body
/// unchanged). minijinja has no custom tags, so the pair becomes
/// `{% if true %}…{% endif %}`: another block tag, so `trim_blocks`,
/// `lstrip_blocks` and `-` markers act on the surrounding whitespace alike.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let Some(end) = tag.find("%}") else {
            rest = tag;
            break;
        };
        let inner = &tag[2..end];
        let body = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+'])
            .trim();
        let replacement = match body {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(keyword) => {
                out.push_str("{%");
                out.push_str(&inner.replacen(body, keyword, 1));
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The error raised by the template's `raise_exception(msg)`, attached as
/// the source of the minijinja error so it can be recognised afterwards.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(msg)`: abort rendering with the template's message.
fn raise_exception(msg: Value) -> Result<Value, Error> {
    let msg = py_str(&msg);
    Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(RaisedException(msg)))
}

/// Finds a `raise_exception` message anywhere in the error's source chain
/// (errors from macros and includes wrap the original one).
fn raised_message(err: &Error) -> Option<&str> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Some(&raised.0);
        }
        cur = e.source();
    }
    None
}

/// One-line description of a minijinja error including its causes.
fn describe(err: &Error) -> String {
    let mut text = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        let _ = write!(text, ": {e}");
        cur = e.source();
    }
    text
}

#[cfg(test)]
mod tests;
