//! A completion's `prompt` in every form llama-server takes: a string, token
//! ids, `{"prompt_string": ...}`, a list of those (one answer each), and a
//! mixed list of ids and strings (one prompt, read piece by piece).

use serde_json::Value;

use super::error::{invalid, ApiError};
use super::openai::PromptField;
use super::validate::{token_id, token_ids, Prompt};

/// The prompts `field` holds, their token ids checked against `n_vocab`.
pub fn prompts(field: PromptField, n_vocab: u32) -> Result<Vec<Prompt>, ApiError> {
    let list = match field {
        PromptField::One(text) => return non_empty(vec![Prompt::Text(text)], "prompt"),
        PromptField::Tokens(ids) => return non_empty(vec![Prompt::Tokens(token_ids("prompt", &ids, n_vocab)?)], "prompt"),
        PromptField::Object(o) => return non_empty(vec![object(Value::Object(o), "prompt")?], "prompt"),
        PromptField::List(list) => list,
    };
    if list.is_empty() {
        return Err(invalid("prompt", "the prompt is empty"));
    }
    // Ids beside strings at the top level: one prompt in pieces.
    if list.iter().any(Value::is_number) {
        return non_empty(vec![mixed(&list, "prompt", n_vocab)?], "prompt");
    }
    let prompts = list.into_iter().enumerate().map(|(i, item)| one(item, &format!("prompt[{i}]"), n_vocab)).collect::<Result<Vec<_>, _>>()?;
    Ok(prompts)
}

fn non_empty(prompts: Vec<Prompt>, at: &str) -> Result<Vec<Prompt>, ApiError> {
    match prompts.iter().any(is_empty) {
        true => Err(invalid(at, "the prompt is empty")),
        false => Ok(prompts),
    }
}

fn is_empty(p: &Prompt) -> bool {
    match p {
        Prompt::Text(t) => t.is_empty(),
        Prompt::Tokens(ids) => ids.is_empty(),
        Prompt::Mixed(pieces) => pieces.iter().all(is_empty),
    }
}

/// One prompt of a list: a string, ids, ids and strings, or an object.
fn one(item: Value, at: &str, n_vocab: u32) -> Result<Prompt, ApiError> {
    let prompt = match item {
        Value::String(text) => Prompt::Text(text),
        Value::Array(parts) => mixed(&parts, at, n_vocab)?,
        Value::Object(_) => object(item, at)?,
        _ => return Err(invalid(at, format!("`{at}` must be a string, token ids or {{\"prompt_string\": ...}}"))),
    };
    if is_empty(&prompt) {
        return Err(invalid(at, "the prompt is empty"));
    }
    Ok(prompt)
}

/// Token ids and strings in one prompt (all ids: plain token ids).
fn mixed(parts: &[Value], at: &str, n_vocab: u32) -> Result<Prompt, ApiError> {
    let mut pieces: Vec<Prompt> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match part {
            Value::Number(n) => {
                let id = n.as_i64().ok_or_else(|| invalid(format!("{at}[{i}]"), format!("`{at}[{i}]`: a token id must be an integer")))?;
                let id = token_id(&format!("{at}[{i}]"), id, n_vocab)?;
                match pieces.last_mut() {
                    Some(Prompt::Tokens(ids)) => ids.push(id),
                    _ => pieces.push(Prompt::Tokens(vec![id])),
                }
            }
            Value::String(text) => pieces.push(Prompt::Text(text.clone())),
            _ => return Err(invalid(format!("{at}[{i}]"), format!("`{at}[{i}]` must be a token id or a string"))),
        }
    }
    Ok(match pieces.len() {
        1 => pieces.remove(0),
        _ => Prompt::Mixed(pieces),
    })
}

/// llama-server's `{"prompt_string": ..., "multimodal_data": [...]}`.
fn object(item: Value, at: &str) -> Result<Prompt, ApiError> {
    let Value::Object(o) = item else { unreachable!("called with objects") };
    if o.get("multimodal_data").is_some_and(|m| !m.is_null()) {
        return Err(invalid(format!("{at}.multimodal_data"), format!("`{at}.multimodal_data`: images and audio are not supported: this server serves text models")));
    }
    if let Some(key) = o.keys().find(|k| !matches!(k.as_str(), "prompt_string" | "multimodal_data")) {
        return Err(invalid(format!("{at}.{key}"), format!("`{at}.{key}`: unknown field (a prompt object holds `prompt_string`)")));
    }
    match o.get("prompt_string") {
        Some(Value::String(text)) => Ok(Prompt::Text(text.clone())),
        _ => Err(invalid(format!("{at}.prompt_string"), format!("`{at}.prompt_string` must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Vec<Prompt>, ApiError> {
        prompts(serde_json::from_value(v).unwrap(), 100)
    }

    fn param(e: ApiError) -> Option<String> {
        match e {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_form_llama_server_takes() {
        use Prompt::*;
        assert_eq!(parse(json!("a")).unwrap(), [Text("a".into())]);
        assert_eq!(parse(json!([1, 2])).unwrap(), [Tokens(vec![1, 2])]);
        assert_eq!(parse(json!({"prompt_string": "a"})).unwrap(), [Text("a".into())]);
        assert_eq!(parse(json!(["a", "b"])).unwrap(), [Text("a".into()), Text("b".into())]);
        assert_eq!(parse(json!([[1, 2], "b", {"prompt_string": "c"}])).unwrap(), [Tokens(vec![1, 2]), Text("b".into()), Text("c".into())]);
        assert_eq!(parse(json!([1, "x", 2, 3])).unwrap(), [Mixed(vec![Tokens(vec![1]), Text("x".into()), Tokens(vec![2, 3])])]);
        assert_eq!(parse(json!([[1, "x"]])).unwrap(), [Mixed(vec![Tokens(vec![1]), Text("x".into())])]);
    }

    #[test]
    fn what_cannot_be_a_prompt_is_named() {
        assert_eq!(param(parse(json!([])).unwrap_err()).as_deref(), Some("prompt"));
        assert_eq!(param(parse(json!(["a", ""])).unwrap_err()).as_deref(), Some("prompt[1]"));
        assert_eq!(param(parse(json!([[1, 500]])).unwrap_err()).as_deref(), Some("prompt[0][1]"));
        assert_eq!(param(parse(json!([true])).unwrap_err()).as_deref(), Some("prompt[0]"));
        assert_eq!(param(parse(json!({"prompt_string": "a", "multimodal_data": ["x"]})).unwrap_err()).as_deref(), Some("prompt.multimodal_data"));
        assert_eq!(param(parse(json!({"text": "a"})).unwrap_err()).as_deref(), Some("prompt.text"));
    }
}
