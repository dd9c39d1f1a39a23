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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{from_args, Kwargs, Rest, ValueKind};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value,
};

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
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders the prompt for `req`.
    pub fn render(&self, req: &RenderRequest<'_>) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        if let Some(now) = req.now {
            // Shadows the global of the same name for this render only.
            let f = move |fmt: &str| strftime(fmt, now);
            ctx.insert("strftime_now".into(), Value::from_function(f));
        }
        for (k, v) in req.extra.into_iter().flatten() {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        // transformers always passes these, as None when absent, so
        // `tools is defined` is true even without tools.
        ctx.insert("messages".into(), Value::from_serialize(req.messages));
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

// ---------------------------------------------------------------------------
// Tests whose minijinja versions disagree with jinja2's on some types.
// ---------------------------------------------------------------------------

/// jinja2: `iter(x)` succeeds. `None` and numbers are not iterable (minijinja
/// iterates `none` as empty, so `tools is iterable and tools|length > 0`
/// would fail on `tools=None`); undefined is (it iterates as empty).
fn is_iterable(v: &Value) -> bool {
    match v.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Invalid => false,
        ValueKind::Undefined => true,
        _ => v.try_iter().is_ok(),
    }
}

/// jinja2: has `len()` and `[]`, which includes strings and dicts (templates
/// write `x is sequence and x is not string` for that reason) and undefined.
fn is_sequence(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::Seq
            | ValueKind::String
            | ValueKind::Map
            | ValueKind::Bytes
            | ValueKind::Undefined
    )
}

// ---------------------------------------------------------------------------
// Printing values the way Python's str() does.
// ---------------------------------------------------------------------------

/// Output formatter: `{{ x }}` prints `str(x)` as jinja2 would.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            out.write_str(&py_str(value)).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// jinja2's `trim(value, chars=None)`: `str(value).strip(chars)`. Unlike
/// minijinja's, it accepts any value (`message.content|trim` on a list of
/// parts prints the list as Python would).
fn trim(value: &Value, chars: Option<&str>) -> Value {
    let text = py_str(value);
    let trimmed = match chars {
        Some(chars) => text.trim_matches(|c| chars.contains(c)),
        None => text.trim(),
    };
    Value::from(trimmed)
}

/// Python `str(value)`: strings unquoted, everything else as `repr`.
fn py_str(value: &Value) -> String {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String => s.to_owned(),
        _ => {
            let mut out = String::new();
            py_repr(&mut out, value);
            out
        }
    }
}

/// Python `repr(value)` for the types JSON data and templates produce.
fn py_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => push_number(out, value),
        ValueKind::String => push_py_str_literal(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, &item);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, &key);
                out.push_str(": ");
                py_repr(out, &value.get_item(&key).unwrap_or_default());
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's string `repr`: single quotes unless the text contains a single
/// quote and no double quote.
fn push_py_str_literal(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Integers as digits, floats as Python's `repr(float)`.
fn push_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
    } else {
        match f64::try_from(value.clone()) {
            Ok(f) => out.push_str(&py_float_repr(f)),
            Err(_) => {
                let _ = write!(out, "{value}");
            }
        }
    }
}

/// Python `repr(f)` (which `json.dumps` also uses): the shortest digits that
/// round-trip, in positional notation for exponents -4..16 and scientific
/// notation (`1e+16`, `1.5e-07`) outside that range.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` yields the shortest round-trip digits, e.g. "-1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(mantissa);
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

// ---------------------------------------------------------------------------
// tojson
// ---------------------------------------------------------------------------

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, i.e. Python `json.dumps` with those arguments.
///
/// minijinja's builtin differs in ways that change prompts: it escapes
/// `<`, `>`, `&` and `'` as `\u003c`… (for HTML safety) and separates items
/// with "," instead of ", ".
fn tojson(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    // minijinja functions take at most five typed arguments, so the
    // positional ones are unpacked here.
    type Args = (
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Kwargs,
    );
    let (ensure_ascii, indent, separators, sort_keys, kwargs): Args = from_args(&args)?;
    let arg = |positional: Option<Value>, name: &str| -> Result<Value, Error> {
        match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Ok(v),
            None => Ok(positional.unwrap_or_default()),
        }
    };
    let ensure_ascii = arg(ensure_ascii, "ensure_ascii")?.is_true();
    let indent = arg(indent, "indent")?;
    let separators = arg(separators, "separators")?;
    let sort_keys = arg(sort_keys, "sort_keys")?.is_true();
    kwargs.assert_all_used()?;

    let indent = match indent.kind() {
        ValueKind::None | ValueKind::Undefined => None,
        ValueKind::String => Some(indent.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => {
            let n = i64::try_from(indent.clone())?;
            Some(" ".repeat(usize::try_from(n).unwrap_or(0)))
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be an integer or a string",
            ))
        }
    };
    // json.dumps defaults: (", ", ": "), or ("," , ": ") when indenting.
    let (item_sep, key_sep) = match separators.kind() {
        ValueKind::None | ValueKind::Undefined => {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        }
        _ => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (py_str(a), py_str(b)),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
    };
    let opts = JsonOptions {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonOptions {
    /// Line break plus indentation before an item at `depth`, when indenting.
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }
}

fn not_serializable(value: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {} is not JSON serializable", value.kind()),
    )
}

/// Serialises `value` exactly as Python's `json.dumps` would.
fn write_json(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone())?;
                // json.dumps spells non-finite floats like JavaScript.
                out.push_str(&match py_float_repr(f).as_str() {
                    "nan" => "NaN".to_owned(),
                    "inf" => "Infinity".to_owned(),
                    "-inf" => "-Infinity".to_owned(),
                    other => other.to_owned(),
                });
            }
        }
        ValueKind::String => {
            write_json_str(out, value.as_str().unwrap_or_default(), opts.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                opts.newline(out, depth + 1);
                write_json(out, item, opts, depth + 1)?;
            }
            opts.newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                opts.newline(out, depth + 1);
                write_json_str(out, key, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                write_json(out, item, opts, depth + 1)?;
            }
            opts.newline(out, depth);
            out.push('}');
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

/// Dict keys as `json.dumps` converts them: strings as-is, numbers, booleans
/// and None by their JSON spelling.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool | ValueKind::Number => {
            let mut s = String::new();
            write_json(
                &mut s,
                key,
                &JsonOptions {
                    ensure_ascii: false,
                    indent: None,
                    item_sep: String::new(),
                    key_sep: String::new(),
                    sort_keys: false,
                },
                0,
            )?;
            Ok(s)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

/// A JSON string literal with Python's escaping: `"`, `\` and control
/// characters always; everything outside printable ASCII too when
/// `ensure_ascii` is set (as UTF-16 `\uXXXX` units).
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// strftime_now
// ---------------------------------------------------------------------------

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `strftime_now(fmt)`: formats `now` (in UTC) with the common C `strftime`
/// codes. transformers uses the server's local time; a server's local zone
/// is usually UTC, and std offers no portable time-zone lookup. Unknown
/// codes are copied through unchanged, as glibc does.
fn strftime(fmt: &str, now: SystemTime) -> String {
    let secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match code {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:2}"),
            'j' => write!(out, "{day_of_year:03}"),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{:02}", (hour + 11) % 12 + 1),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'B' => write!(out, "{month_name}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'A' => write!(out, "{}", WEEKDAYS[weekday]),
            'a' => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            'u' => write!(out, "{}", weekday + 1),
            'w' => write!(out, "{}", (weekday + 1) % 7),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    /// Renders `source` on a single user message, no tools, fixed clock.
    fn render_str(source: &str) -> Result<String, TemplateError> {
        render_with(source, &[json!({"role": "user", "content": "Hi"})], None)
    }

    fn render_with(
        source: &str,
        messages: &[serde_json::Value],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        ChatTemplate::new(source, "<s>", "</s>")?.render(&RenderRequest {
            messages,
            add_generation_prompt: true,
            tools,
            extra: None,
            now: Some(UNIX_EPOCH + Duration::from_secs(1_795_219_200)), // 2026-11-21
        })
    }

    #[test]
    fn chat_template_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let out = render_str(
            r#"{{ {"b": 1.0, "a": [1, "x<&'>é\n"], "c": none, "d": true, "e": {}}|tojson }}"#,
        );
        assert_eq!(
            out.unwrap(),
            r#"{"b": 1.0, "a": [1, "x<&'>é\n"], "c": null, "d": true, "e": {}}"#
        );
    }

    #[test]
    fn tojson_options() {
        let out = render_str(r#"{{ {"b": [1, {}], "a": []}|tojson(indent=2) }}"#).unwrap();
        assert_eq!(out, "{\n  \"b\": [\n    1,\n    {}\n  ],\n  \"a\": []\n}");
        let out =
            render_str(r#"{{ {"b": 1, "a": 2}|tojson(sort_keys=true, separators=(",", ":")) }}"#);
        assert_eq!(out.unwrap(), r#"{"a":2,"b":1}"#);
        let out = render_str(r#"{{ "é😀"|tojson(ensure_ascii=true) }}"#).unwrap();
        assert_eq!(out, r#""\u00e9\ud83d\ude00""#);
    }

    #[test]
    fn tojson_keeps_input_key_order() {
        // Needs serde_json/preserve_order and minijinja/preserve_order.
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"zeta": 1, "alpha": 2}}}]);
        let out = render_with("{{ tools[0].function|tojson }}", &[], Some(&tools)).unwrap();
        assert_eq!(
            out,
            r#"{"name": "f", "parameters": {"zeta": 1, "alpha": 2}}"#
        );
    }

    #[test]
    fn floats_print_like_python() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (2.5e300, "2.5e+300"),
        ] {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
        let out = render_str(r#"{{ 1e16|tojson }} {{ 2.0 }} {{ [1.5, none, true, "it's"] }}"#);
        assert_eq!(out.unwrap(), r#"1e+16 2.0 [1.5, None, True, "it's"]"#);
    }

    #[test]
    fn raise_exception_gives_the_template_message() {
        let err = render_str("{{ raise_exception('System role not supported') }}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::Raised(m) if m == "System role not supported"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "System role not supported");
        // Also from inside a macro.
        let err = render_str("{% macro f() %}{{ raise_exception('boom') }}{% endmacro %}{{ f() }}")
            .unwrap_err();
        assert!(
            matches!(&err, TemplateError::Raised(m) if m == "boom"),
            "{err:?}"
        );
    }

    #[test]
    fn other_failures_are_render_errors() {
        let err = render_str("{{ messages[0].content.nope.deeper }}").unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
        let err = ChatTemplate::new("{% if %}", "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Compile(_)), "{err:?}");
    }

    #[test]
    fn python_string_and_dict_methods() {
        let out = render_str(
            "{{ '  x  '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'a,b'.split(',') }}|\
             {% for k, v in {'z': 1, 'a': 2}.items() %}{{ k }}{{ v }}{% endfor %}|{{ {'a': 1}.get('b', 0) }}",
        );
        assert_eq!(out.unwrap(), "x|True|['a', 'b']|z1a2|0");
    }

    #[test]
    fn trim_blocks_and_lstrip_blocks() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render_str(src).unwrap(), "[Hi]\n");
        // The final newline of the template is dropped, as jinja2 does.
        assert_eq!(render_str("x\n").unwrap(), "x");
    }

    #[test]
    fn undefined_behaves_like_jinja2() {
        assert_eq!(
            render_str("[{{ missing }}]{{ missing is defined }}").unwrap(),
            "[]False"
        );
        assert!(render_str("{{ missing.attr }}").is_err());
        // transformers passes tools=None when there are none.
        let out = render_str("{{ tools is defined }} {{ tools is none }} {{ tools is iterable }}");
        assert_eq!(out.unwrap(), "True True False");
    }

    #[test]
    fn strftime_now_uses_the_injected_clock() {
        let out =
            render_str("{{ strftime_now('%Y-%m-%d|%d %b %Y|%B %d, %Y|%A %a %j %H:%M:%S %y %%') }}");
        assert_eq!(
            out.unwrap(),
            "2026-11-21|21 Nov 2026|November 21, 2026|Saturday Sat 325 00:00:00 26 %"
        );
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-719_468, -1, 0, 59, 11_016, 20_513, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn generation_block_renders_its_body() {
        let src = "{%- for m in messages -%}\n  {%- generation -%}\n{{ m.content }}\n  {%- endgeneration -%}\n{% endfor %}";
        assert_eq!(render_str(src).unwrap(), "Hi");
        assert_eq!(
            rewrite_generation_tags("{% generation %}a{%+ endgeneration -%}"),
            "{% if true %}a{%+ endif -%}"
        );
    }

    #[test]
    fn extra_variables_reach_the_template() {
        let tmpl =
            ChatTemplate::new("{{ enable_thinking }} {{ bos_token }}", "<s>", "</s>").unwrap();
        let extra = json!({"enable_thinking": false, "messages": "ignored"});
        let out = tmpl.render(&RenderRequest {
            extra: extra.as_object(),
            ..Default::default()
        });
        assert_eq!(out.unwrap(), "False <s>");
    }

    #[test]
    fn gemma3_template() {
        let tmpl = ChatTemplate::new(
            include_str!("../config/templates/gemma3.jinja"),
            "<bos>",
            "<eos>",
        )
        .unwrap();
        let messages = [
            json!({"role": "system", "content": "You are a helpful assistant."}),
            json!({"role": "user", "content": "What is 2+2?"}),
        ];
        let req = RenderRequest {
            messages: &messages,
            add_generation_prompt: true,
            ..Default::default()
        };
        assert_eq!(
            tmpl.render(&req).unwrap(),
            "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
        );

        let messages = [
            json!({"role": "system", "content": [{"type": "text", "text": "Be brief."}]}),
            json!({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe. "}]}),
            json!({"role": "assistant", "content": "A cat."}),
        ];
        let req = RenderRequest {
            messages: &messages,
            ..Default::default()
        };
        assert_eq!(
            tmpl.render(&req).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>Describe.<end_of_turn>\n<start_of_turn>model\nA cat.<end_of_turn>\n"
        );

        let messages = [
            json!({"role": "user", "content": "a"}),
            json!({"role": "user", "content": "b"}),
        ];
        let err = tmpl
            .render(&RenderRequest {
                messages: &messages,
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Conversation roles must alternate user/assistant/user/assistant/..."
        );
    }
}
