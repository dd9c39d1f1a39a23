//! The one table of request fields for `/v1/chat/completions` and
//! `/v1/completions`, and what we do with each: honour it, accept it because it
//! does not change what the model produces, or answer 400 naming it when it
//! would change the output and we do not implement it (unless it holds its
//! neutral value, e.g. `n: 1`, `logprobs: false`). A field in no row is
//! answered 400 too, as OpenAI does: a misspelt `max_token` must not pass for a
//! request without a limit. `null` counts as absent everywhere.
//! docs/api.md renders this table; a test keeps them in step.

use serde_json::{Map, Value};

use super::error::{invalid, ApiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

/// What a field does here.
#[derive(Debug, Clone, Copy)]
pub enum Use {
    /// Parsed, checked and applied.
    Honoured,
    /// Accepted; it does not change what the model produces.
    NoEffect,
    /// Would change the output; not implemented. Allowed only at its neutral value.
    Unsupported { neutral: fn(&Value) -> bool, neutral_text: &'static str },
}

/// Which endpoints take a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Both,
    Chat,
    Completion,
}

pub struct Field {
    pub name: &'static str,
    pub on: On,
    pub what: Use,
}

const fn field(name: &'static str, on: On, what: Use) -> Field {
    Field { name, on, what }
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}
fn is_one(v: &Value) -> bool {
    v.as_f64() == Some(1.0)
}
fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0) || is_false(v)
}
fn is_text_only(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(|m| m == "text"))
}
fn is_minus_one(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x <= 0.0)
}
fn never(_: &Value) -> bool {
    false
}

use On::*;
use Use::*;

const fn unsupported(neutral: fn(&Value) -> bool, neutral_text: &'static str) -> Use {
    Unsupported { neutral, neutral_text }
}

/// Every field we know, OpenAI's first, then llama-server's.
pub const FIELDS: &[Field] = &[
    // Both endpoints, OpenAI.
    field("model", Both, Honoured),
    field("max_tokens", Both, Honoured),
    field("temperature", Both, Honoured),
    field("top_p", Both, Honoured),
    field("seed", Both, Honoured),
    field("stop", Both, Honoured),
    field("presence_penalty", Both, Honoured),
    field("frequency_penalty", Both, Honoured),
    field("logit_bias", Both, Honoured),
    field("stream", Both, Honoured),
    field("stream_options", Both, Honoured),
    field("n", Both, Honoured),
    field("logprobs", Both, Honoured),
    field("user", Both, NoEffect),
    // Chat, OpenAI.
    field("messages", Chat, Honoured),
    field("max_completion_tokens", Chat, Honoured),
    field("response_format", Chat, Honoured),
    field("tools", Chat, Honoured),
    field("tool_choice", Chat, Honoured),
    field("parallel_tool_calls", Chat, Honoured),
    field("top_logprobs", Chat, Honoured),
    field("modalities", Chat, unsupported(is_text_only, "[\"text\"]")),
    field("audio", Chat, unsupported(never, "absent")),
    field("functions", Chat, unsupported(never, "absent (use `tools`)")),
    field("function_call", Chat, unsupported(never, "absent (use `tool_choice`)")),
    field("reasoning_effort", Chat, unsupported(never, "absent")),
    field("verbosity", Chat, unsupported(never, "absent")),
    field("web_search_options", Chat, unsupported(never, "absent")),
    field("prediction", Chat, NoEffect),
    field("metadata", Chat, NoEffect),
    field("store", Chat, NoEffect),
    field("service_tier", Chat, NoEffect),
    field("prompt_cache_key", Chat, NoEffect),
    field("safety_identifier", Chat, NoEffect),
    // Completions, OpenAI.
    field("prompt", Completion, Honoured),
    field("echo", Completion, Honoured),
    field("suffix", Completion, Honoured),
    field("response_fields", Completion, Honoured),
    field("best_of", Completion, unsupported(is_one, "1")),
    // llama-server's, both endpoints.
    field("chat_template_kwargs", Chat, Honoured),
    field("n_predict", Both, Honoured),
    field("top_k", Both, Honoured),
    field("min_p", Both, Honoured),
    field("repeat_penalty", Both, Honoured),
    field("repeat_last_n", Both, Honoured),
    field("typical_p", Both, Honoured),
    field("min_keep", Both, Honoured),
    field("mirostat", Both, Honoured),
    field("mirostat_tau", Both, Honoured),
    field("mirostat_eta", Both, Honoured),
    field("dry_multiplier", Both, Honoured),
    field("dry_base", Both, Honoured),
    field("dry_allowed_length", Both, Honoured),
    field("dry_penalty_last_n", Both, Honoured),
    field("dry_sequence_breakers", Both, Honoured),
    field("xtc_probability", Both, Honoured),
    field("xtc_threshold", Both, Honoured),
    field("ignore_eos", Both, Honoured),
    field("grammar", Both, Honoured),
    field("json_schema", Both, Honoured),
    field("cache_prompt", Both, Honoured),
    field("id_slot", Both, NoEffect),
    field("timings_per_token", Both, Honoured),
    field("return_progress", Both, Honoured),
    field("n_probs", Both, Honoured),
    field("post_sampling_probs", Both, Honoured),
    field("speculative.type", Both, Honoured),
    field("speculative.n_max", Both, Honoured),
    field("speculative.n_min", Both, Honoured),
    field("speculative.ngram_size_n", Both, Honoured),
    field("speculative.p_min", Both, Honoured),
    field("n_keep", Both, unsupported(is_zero, "0")),
    field("t_max_predict_ms", Both, unsupported(is_zero, "0")),
    field("dynatemp_range", Both, unsupported(is_zero, "0")),
    field("dynatemp_exponent", Both, unsupported(is_one, "1")),
    field("top_n_sigma", Both, unsupported(is_minus_one, "-1")),
    field("samplers", Both, unsupported(never, "absent")),
    field("return_tokens", Both, unsupported(is_false, "false")),
    field("reasoning_format", Chat, Honoured),
    field("add_generation_prompt", Chat, Honoured),
    field("continue_final_message", Chat, Honoured),
    field("verbose", Chat, Honoured),
];

/// The row for `name` on `endpoint`, if any.
pub fn lookup(endpoint: Endpoint, name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| {
        f.name == name
            && match (f.on, endpoint) {
                (Both, _) | (Chat, Endpoint::Chat) | (Completion, Endpoint::Completion) => true,
                _ => false,
            }
    })
}

/// Checks every top-level field of a request body against the table.
pub fn check(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in body {
        if value.is_null() {
            continue;
        }
        match lookup(endpoint, name) {
            None => {
                return Err(invalid(
                    name.as_str(),
                    format!("unknown field `{name}` for {}; see docs/api.md for the fields we take", endpoint.path()),
                ))
            }
            Some(Field { what: Unsupported { neutral, neutral_text }, .. }) if !neutral(value) => {
                return Err(invalid(
                    name.as_str(),
                    format!("`{name}` is not supported by this server (only {neutral_text} is accepted)"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn param(e: ApiError) -> String {
        e.body().error.param.unwrap_or_default()
    }

    #[test]
    fn names_are_unique_per_endpoint() {
        for endpoint in [Endpoint::Chat, Endpoint::Completion] {
            let mut names: Vec<_> = FIELDS.iter().filter(|f| lookup(endpoint, f.name).is_some()).map(|f| f.name).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{endpoint:?}");
        }
    }

    /// docs/api.md's table lists every field, in order, with what we do.
    #[test]
    fn the_docs_table_is_this_table() {
        let doc = include_str!("../../docs/api.md");
        let rows: Vec<(String, String, String)> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                (cells[0].trim_end_matches('`').to_string(), cells[1].to_string(), cells[2].to_string())
            })
            .collect();
        let want: Vec<(String, String, String)> = FIELDS
            .iter()
            .map(|f| {
                let on = match f.on {
                    Both => "both",
                    Chat => "chat",
                    Completion => "completions",
                };
                let what = match f.what {
                    Honoured => "honoured".to_string(),
                    NoEffect => "accepted, no effect on the output".to_string(),
                    Unsupported { neutral_text, .. } => format!("400 unless {neutral_text}"),
                };
                (f.name.to_string(), on.to_string(), what)
            })
            .collect();
        assert_eq!(rows, want);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = check(Endpoint::Chat, &body(json!({"messages": [], "max_token": 5}))).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(param(e.clone()), "max_token");
        assert!(e.to_string().contains("unknown field"), "{e}");
        // A chat-only field on completions is unknown there.
        assert_eq!(param(check(Endpoint::Completion, &body(json!({"messages": []}))).unwrap_err()), "messages");
    }

    #[test]
    fn unsupported_fields_pass_only_at_their_neutral_value() {
        let neutral = json!({"n": 1, "tool_choice": "auto",
            "modalities": ["text"], "n_probs": 0, "user": "u", "metadata": {"a": "b"}, "store": false,
            "audio": null, "parallel_tool_calls": true});
        check(Endpoint::Chat, &body(neutral)).unwrap();
        for (k, v) in [
            ("modalities", json!(["text", "audio"])),
            ("audio", json!({"voice": "x"})), ("n_keep", json!(4)), ("samplers", json!(["top_k"]))]
        {
            let e = check(Endpoint::Chat, &body(json!({ k: v }))).unwrap_err();
            assert_eq!(param(e.clone()), k);
            assert!(e.to_string().contains("not supported"), "{e}");
        }
        check(Endpoint::Completion, &body(json!({"echo": true, "suffix": "", "best_of": 1}))).unwrap();
        for (k, v) in [("best_of", json!(2))] {
            assert_eq!(param(check(Endpoint::Completion, &body(json!({ k: v }))).unwrap_err()), k);
        }
    }
}
