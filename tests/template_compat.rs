//! Renders every chat template in `tests/fixtures/chat-templates/` on every
//! conversation of its `expected.json` and compares with the prompts that
//! Hugging Face transformers (Python jinja2) produced.
//!
//! Every case must be byte-identical, or raise where the reference raised,
//! unless it is listed in [`KNOWN_DIFFERENCES`]. A listed case that starts
//! matching fails the test too, so the list stays honest.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vram_llm::template::{ChatTemplate, RenderRequest, TemplateError};

/// (template file, case, reason) for cases known not to match the reference.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// transformers passes no `date_string`, so a template that cannot ask the
/// clock (`strftime_now`, as Llama 3.2's does) prints its fallback, "26 Jul
/// 2024" (Llama 3.1); we pass today's date, as llama-server does
/// (`template::tests::date_string_is_today_by_the_injected_clock`). For such
/// templates the comparison gives the fallback explicitly.
fn transformers_variables() -> serde_json::Map<String, serde_json::Value> {
    let mut vars = serde_json::Map::new();
    vars.insert("date_string".into(), "26 Jul 2024".into());
    vars
}

/// The reference prompts of `date_dependent` templates were rendered on
/// 2026-11-21; render with that date so they compare byte for byte.
fn reference_date() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_219_200) // 2026-11-21T00:00:00Z
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat-templates")
}

#[test]
fn chat_templates_match_transformers() {
    let dir = fixtures();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("read expected.json"),
    )
    .expect("parse expected.json");
    let cases = expected["cases"].as_object().expect("cases");
    let bos = expected["bos_token"].as_str().expect("bos_token");
    let eos = expected["eos_token"].as_str().expect("eos_token");
    let templates = expected["templates"].as_object().expect("templates");

    let (mut identical, mut total) = (0, 0);
    let mut failures = Vec::new();
    let mut known_seen = Vec::new();
    for (file, entry) in templates {
        let source = std::fs::read_to_string(dir.join(file)).expect("read template");
        let compiled = ChatTemplate::new(&source, bos, eos);
        if let Some(reason) = entry.get("compile_error") {
            // The reference's jinja2 rejected these (they use transformers'
            // `{% generation %}` tag, which its renderer lacked); compiling
            // them is not wrong, so only report what happens.
            let ours = match &compiled {
                Err(e) => e.to_string(),
                Ok(t) => {
                    let rendered = cases.values().filter(|spec| {
                        let messages = spec["messages"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or(&[]);
                        let add_generation_prompt =
                            spec["add_generation_prompt"].as_bool().unwrap_or(false);
                        t.render(&RenderRequest {
                            messages,
                            add_generation_prompt,
                            ..Default::default()
                        })
                        .is_ok()
                    });
                    format!(
                        "compiles, renders {} of {} cases",
                        rendered.count(),
                        cases.len()
                    )
                }
            };
            println!("{file}: jinja2 compile error ({reason}); ours: {ours}");
            continue;
        }
        let transformers_variables = transformers_variables();
        for (case, spec) in cases {
            let Some(want) = entry.get(case) else {
                continue;
            };
            total += 1;
            let messages = spec["messages"].as_array().expect("messages");
            let got = compiled.as_ref().map_err(|e| e.to_string()).and_then(|t| {
                t.render(&RenderRequest {
                    messages,
                    add_generation_prompt: spec["add_generation_prompt"].as_bool().unwrap_or(false),
                    now: Some(reference_date()),
                    extra: (!source.contains("strftime_now")).then_some(&transformers_variables),
                    ..Default::default()
                })
                .map_err(|e| match e {
                    TemplateError::Raised(msg) => format!("TemplateError: {msg}"),
                    other => other.to_string(),
                })
            });
            let outcome = match (want, &got) {
                (serde_json::Value::String(w), Ok(g)) if w == g => Ok(()),
                (serde_json::Value::Object(w), Err(g))
                    if w.get("error").and_then(|e| e.as_str()) == Some(g.as_str()) =>
                {
                    Ok(())
                }
                _ => Err(format!("expected {want}\n     got {got:?}")),
            };
            let known = KNOWN_DIFFERENCES
                .iter()
                .find(|(f, c, _)| f == file && c == case);
            match (outcome, known) {
                (Ok(()), None) => identical += 1,
                (Ok(()), Some(_)) => failures.push(format!(
                    "{file} / {case}: listed in KNOWN_DIFFERENCES but now matches; remove it"
                )),
                (Err(diff), None) => failures.push(format!("{file} / {case}: {diff}")),
                (Err(_), Some(k)) => known_seen.push(*k),
            }
        }
    }
    for (file, case, reason) in &known_seen {
        println!("known difference: {file} / {case}: {reason}");
    }
    println!("template compatibility: {identical} of {total} identical");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        known_seen.len(),
        KNOWN_DIFFERENCES.len(),
        "KNOWN_DIFFERENCES names cases that do not exist"
    );
}

/// llama-server's `--reasoning` on these templates (its tests/unit/
/// test_template.py): `enable_thinking: true` (`on`, and `auto`, the
/// default) leaves the thinking block open where the template opens one,
/// `false` (`off`) closes it.
#[test]
fn thinking_templates_open_or_close_their_block_as_llama_server() {
    let cases = [
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", true, "<think>\n"),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", false, "<think>\n</think>"),
        ("Qwen-QwQ-32B.jinja", true, "<|im_start|>assistant\n<think>\n"),
        ("Qwen-QwQ-32B.jinja", false, "<|im_start|>assistant\n<think>\n</think>"),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", true, "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", false, "<|CHATBOT_TOKEN|><|START_THINKING|><|END_THINKING|>"),
    ];
    let messages = [serde_json::json!({"role": "user", "content": "What is today?"})];
    for (file, thinking, end) in cases {
        let source = std::fs::read_to_string(fixtures().join(file)).expect("read template");
        let template = ChatTemplate::new(&source, "<s>", "</s>").expect("compile");
        let mut extra = serde_json::Map::new();
        extra.insert("enable_thinking".into(), thinking.into());
        let prompt = template
            .render(&RenderRequest { messages: &messages, add_generation_prompt: true, extra: Some(&extra), ..Default::default() })
            .expect("render");
        assert!(prompt.ends_with(end), "{file} thinking={thinking}: {prompt:?} should end with {end:?}");
    }
}
