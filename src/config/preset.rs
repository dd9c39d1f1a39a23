//! llama-server's `--models-preset FILE`: an INI file, one `[section]` per
//! model (the section is its name), each key a llama-server flag without its
//! dashes (`hf-repo = owner/repo:Q`, `model = path`, `ctx-size = 4096`...).
//! Each section becomes a `[[models]]` entry, so it is checked and built as
//! one; a key with no `[[models]]` counterpart is refused, naming it.

use std::path::Path;

use serde::Deserialize;

use super::file::ModelSection;

/// llama-server's key (dashes, or its short flag) -> our `[[models]]` key.
const KEYS: &[(&[&str], &str)] = &[
    (&["model", "m"], "path"),
    (&["hf-repo", "hf", "hfr"], "hf"),
    (&["hf-file", "hff"], "hf_file"),
    (&["model-url", "mu"], "url"),
    (&["alias", "a"], "aliases"),
    (&["tags"], "tags"),
    (&["ctx-size", "c"], "ctx_size"),
    (&["parallel", "np"], "parallel"),
    (&["kv-unified", "kvu"], "kv_unified"),
    (&["n-gpu-layers", "ngl", "gpu-layers"], "n_gpu_layers"),
    (&["swa-full"], "swa_full"),
    (&["chat-template"], "chat_template"),
    (&["chat-template-file"], "chat_template_file"),
    (&["cache-type-k", "ctk"], "cache_type_k"),
    (&["cache-type-v", "ctv"], "cache_type_v"),
    (&["ubatch-size", "ub"], "ubatch_size"),
    (&["threads-batch", "tb"], "threads_batch"),
    (&["pooling"], "pooling"),
    (&["embeddings", "embedding"], "embeddings_only"),
    (&["spec-type"], "spec_type"),
    (&["spec-draft-n-max"], "spec_draft_n_max"),
    (&["spec-draft-n-min"], "spec_draft_n_min"),
    (&["spec-ngram-simple-size-n"], "spec_ngram_simple_size_n"),
    (&["spec-draft-p-min"], "spec_draft_p_min"),
    (&["model-draft", "md"], "draft"),
];

/// The models of a preset file, as `[[models]]` entries.
pub fn read(path: &Path) -> Result<Vec<ModelSection>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--models-preset {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("--models-preset {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<ModelSection>, String> {
    let mut sections: Vec<(String, toml::Table)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let mut table = toml::Table::new();
            table.insert("name".into(), toml::Value::String(name.trim().to_string()));
            sections.push((name.trim().to_string(), table));
            continue;
        }
        let at = format!("line {}", n + 1);
        let (key, value) = line.split_once('=').ok_or_else(|| format!("{at}: expected `key = value` or `[model name]`"))?;
        let (key, value) = (key.trim().trim_start_matches('-'), value.trim().trim_matches('"'));
        let Some((_, table)) = sections.last_mut() else { return Err(format!("{at}: `{key}` comes before any `[model name]` section")) };
        let ours = KEYS.iter().find(|(names, _)| names.contains(&key)).map(|(_, ours)| *ours).ok_or_else(|| {
            let known: Vec<&str> = KEYS.iter().map(|(names, _)| names[0]).collect();
            format!("{at}: `{key}` is not a per-model setting vram-llm takes (it takes {})", known.join(", "))
        })?;
        table.insert(ours.to_string(), typed(ours, value));
    }
    sections
        .into_iter()
        .map(|(name, table)| ModelSection::deserialize(toml::Value::Table(table)).map_err(|e| format!("[{name}]: {e}")))
        .collect()
}

/// INI values are text: numbers and switches as TOML would type them.
fn typed(key: &str, value: &str) -> toml::Value {
    if matches!(key, "aliases" | "tags") {
        return toml::Value::Array(value.split(',').map(|v| toml::Value::String(v.trim().to_string())).filter(|v| v.as_str() != Some("")).collect());
    }
    match value {
        "true" | "on" | "1" if matches!(key, "kv_unified" | "swa_full" | "embeddings_only") => toml::Value::Boolean(true),
        "false" | "off" | "0" if matches!(key, "kv_unified" | "swa_full" | "embeddings_only") => toml::Value::Boolean(false),
        _ if key == "spec_draft_p_min" => value.parse::<f64>().map(toml::Value::Float).unwrap_or_else(|_| toml::Value::String(value.to_string())),
        _ if matches!(key, "draft" | "path" | "hf" | "hf_file" | "url" | "chat_template" | "chat_template_file") => toml::Value::String(value.to_string()),
        _ => value.parse::<i64>().map(toml::Value::Integer).unwrap_or_else(|_| toml::Value::String(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_become_model_entries_with_llama_servers_keys() {
        let models = parse("; a comment\n[model-a]\nhf-repo = org/a-GGUF:Q8_0\nc = 4096\nalias = x, y\n\n[b]\n--model = /m/b.gguf\nkv-unified = on\n").unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!((models[0].name.as_str(), models[0].hf.as_deref(), models[0].ctx_size), ("model-a", Some("org/a-GGUF:Q8_0"), Some(4096)));
        assert_eq!(models[0].aliases, vec!["x", "y"]);
        assert_eq!((models[1].path.as_deref(), models[1].kv_unified), (Some(Path::new("/m/b.gguf")), Some(true)));
    }

    #[test]
    fn a_draft_model_and_its_floor_are_preset_keys() {
        let models = parse("[m]\nmodel = /m/big.gguf\nmodel-draft = 2\nspec-draft-p-min = 0.5\n").unwrap();
        assert_eq!(models[0].draft.as_deref(), Some("2"), "a draft's name stays text, even a number");
        assert_eq!(models[0].spec_draft_p_min, Some(0.5));
    }

    #[test]
    fn an_unknown_key_or_a_key_without_section_is_named() {
        let e = parse("[m]\nspec-draft-hf = org/d\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("spec-draft-hf") && e.contains("hf-repo"), "{e}");
        assert!(parse("model = x.gguf\n").unwrap_err().contains("before any"));
        assert!(parse("[m]\nctx-size = lots\n").unwrap_err().contains("[m]"));
    }
}
