//! Where jinja2 and minijinja disagree: the `iterable`/`sequence` tests,
//! `trim`, and printing values the way Python's `str()` and `repr()` do.

use std::fmt::Write as _;

use minijinja::value::ValueKind;
use minijinja::{Error, Output, State, Value};

/// Name under which the single template lives inside the environment; it


// ---------------------------------------------------------------------------
// Tests whose minijinja versions disagree with jinja2's on some types.
// ---------------------------------------------------------------------------

/// jinja2: `iter(x)` succeeds. `None` and numbers are not iterable (minijinja
/// iterates `none` as empty, so `tools is iterable and tools|length > 0`
/// would fail on `tools=None`); undefined is (it iterates as empty).
pub(super) fn is_iterable(v: &Value) -> bool {
    match v.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Invalid => false,
        ValueKind::Undefined => true,
        _ => v.try_iter().is_ok(),
    }
}

/// jinja2: has `len()` and `[]`, which includes strings and dicts (templates
/// write `x is sequence and x is not string` for that reason) and undefined.
pub(super) fn is_sequence(v: &Value) -> bool {
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
pub(super) fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
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
pub(super) fn trim(value: &Value, chars: Option<&str>) -> Value {
    let text = py_str(value);
    let trimmed = match chars {
        Some(chars) => text.trim_matches(|c| chars.contains(c)),
        None => text.trim(),
    };
    Value::from(trimmed)
}

/// Python `str(value)`: strings unquoted, everything else as `repr`.
pub(super) fn py_str(value: &Value) -> String {
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
pub(super) fn py_repr(out: &mut String, value: &Value) {
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
pub(super) fn push_py_str_literal(out: &mut String, s: &str) {
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
pub(super) fn push_number(out: &mut String, value: &Value) {
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
pub(super) fn py_float_repr(f: f64) -> String {
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
