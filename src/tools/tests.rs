use serde_json::{json, Value};

use super::*;

fn call(name: &str, args: Value) -> ToolCall {
    ToolCall { name: name.into(), arguments: args.to_string() }
}

fn spec(format: ToolFormat, single: bool) -> OutputSpec {
    OutputSpec { tools: Some(format), think: Think::Off, single }
}

fn final_of(format: ToolFormat, text: &str, single: bool) -> Parsed {
    parse_final(spec(format, single), text)
}

fn stream_of(format: ToolFormat, single: bool) -> Streaming {
    Streaming::new(spec(format, single))
}

fn weather() -> ToolCall {
    call("get_weather", json!({"city": "Paris", "unit": "celsius"}))
}

/// Recorded outputs, one per format: (format, output, content, calls).
fn recorded() -> Vec<(ToolFormat, &'static str, &'static str, Vec<ToolCall>)> {
    let two = vec![weather(), call("get_time", json!({"tz": "CET"}))];
    vec![
        (
            ToolFormat::Hermes,
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>",
            "Let me check.",
            two.clone(),
        ),
        (
            ToolFormat::QwenXml,
            "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Llama3,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Llama3,
            "<|python_tag|>{\"type\": \"function\", \"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::MistralArgs,
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"unit\": \"celsius\"}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"CET\"}",
            "",
            two.clone(),
        ),
        (
            ToolFormat::MistralJson,
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}, \"id\": \"abcDEF123\"}]",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Harmony,
            "<|channel|>analysis<|message|>The user wants the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\", \"unit\": \"celsius\"}",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::DeepSeekR1,
            "I will look it up.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "I will look it up.",
            vec![weather()],
        ),
        (
            ToolFormat::DeepSeekV31,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\", \"unit\": \"celsius\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz\": \"CET\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            two.clone(),
        ),
        (
            ToolFormat::FunctionaryV31,
            "<function=get_weather>{\"city\": \"Paris\", \"unit\": \"celsius\"}</function>",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::FunctionaryV32,
            "all\nChecking both.>>>get_weather\n{\"city\": \"Paris\", \"unit\": \"celsius\"}>>>get_time\n{\"tz\": \"CET\"}",
            "Checking both.",
            two.clone(),
        ),
        (
            ToolFormat::CommandR7b,
            "<|START_THINKING|>I need the weather tool.<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n]<|END_ACTION|>",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Granite,
            "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}]",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Generic,
            "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}, {\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}]}",
            "",
            two,
        ),
        (
            ToolFormat::Generic,
            "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}}",
            "",
            vec![weather()],
        ),
        (ToolFormat::Generic, "{\"response\": \"It is sunny.\"}", "It is sunny.", vec![]),
    ]
}

#[test]
fn every_format_parses_its_recorded_output() {
    for (format, output, content, calls) in recorded() {
        let parsed = final_of(format, output, false);
        assert_eq!(parsed.calls, calls, "{format:?}: {output}");
        assert_eq!(parsed.content, content, "{format:?}: {output}");
    }
}

#[test]
fn streamed_pieces_add_up_to_the_whole_parse() {
    for (format, output, content, calls) in recorded() {
        // One character at a time: every mark is split at every place.
        let mut stream = stream_of(format, false);
        let (mut got_content, mut got_calls) = (String::new(), Vec::new());
        let mut pieces: Vec<StreamDelta> = output.chars().map(|c| stream.push(&c.to_string())).collect();
        pieces.push(stream.finish());
        for d in pieces {
            got_content.push_str(&d.content);
            for (i, c) in d.calls {
                assert_eq!(i, got_calls.len(), "{format:?}: indices count up");
                got_calls.push(c);
            }
        }
        assert_eq!(got_calls, calls, "{format:?}");
        assert_eq!(got_content, content, "{format:?}");
    }
}

#[test]
fn a_mark_is_not_sent_as_content_before_it_is_complete() {
    let mut stream = stream_of(ToolFormat::Hermes, false);
    assert_eq!(stream.push("Sure. <tool").content, "Sure.");
    assert_eq!(stream.push("_call>\n{\"name\": \"f\", \"arguments\": {}}").content, "");
    let d = stream.push("\n</tool_call>");
    assert_eq!(d.calls, vec![(0, call("f", json!({})))]);
    // Text that only looked like a mark is content after all.
    let mut stream = stream_of(ToolFormat::Hermes, false);
    assert_eq!(stream.push("a <tool").content, "a");
    assert_eq!(stream.push("box> b").content, " <toolbox> b");
}

#[test]
fn a_call_cut_off_by_the_end_of_generation_still_counts() {
    // The closing mark is often the end-of-turn token, which is not text.
    let parsed = final_of(ToolFormat::Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}", false);
    assert_eq!(parsed.calls, vec![call("f", json!({"x": 1}))]);
}

#[test]
fn listed_calls_cut_off_by_the_token_limit_are_kept() {
    let text = "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"x\": 1}}, {\"name\": \"g\", \"argu";
    assert_eq!(final_of(ToolFormat::Generic, text, false).calls, vec![call("f", json!({"x": 1}))]);
    // And each is streamed once complete.
    let mut stream = stream_of(ToolFormat::Generic, false);
    let first = stream.push(&text[..text.find(", {\"name\": \"g").unwrap() + 1]);
    assert_eq!(first.calls, vec![(0, call("f", json!({"x": 1})))]);
}

#[test]
fn malformed_calls_are_content_not_lost() {
    let text = "<tool_call>\nnot json\n</tool_call>";
    let parsed = final_of(ToolFormat::Hermes, text, false);
    assert!(parsed.calls.is_empty());
    assert_eq!(parsed.content, text);
    assert_eq!(final_of(ToolFormat::Llama3, "{\"oops\": ", false).content, "{\"oops\":");
    assert_eq!(final_of(ToolFormat::Generic, "Hello there", false).content, "Hello there");
}

#[test]
fn single_call_keeps_the_first() {
    let (_, output, _, _) = recorded().remove(0);
    let parsed = final_of(ToolFormat::Hermes, output, true);
    assert_eq!(parsed.calls, vec![weather()]);
}

#[test]
fn reasoning_is_split_out_where_the_format_marks_it() {
    let (_, output, _, _) = recorded().into_iter().find(|r| r.0 == ToolFormat::Harmony).unwrap();
    assert_eq!(final_of(ToolFormat::Harmony, output, false).reasoning, "The user wants the weather.");
    let answer = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Four.";
    let parsed = final_of(ToolFormat::Harmony, answer, false);
    assert_eq!((parsed.reasoning.as_str(), parsed.content.as_str()), ("Easy.", "Four."));
}

#[test]
fn thinking_is_split_out_streamed_or_not() {
    let plain = |think| OutputSpec { tools: None, think, single: false };
    let text = "<think>\nThe user greets me.\n</think>\n\nHello!";
    let parsed = parse_final(plain(Think::Tagged), text);
    assert_eq!((parsed.reasoning.as_str(), parsed.content.as_str()), ("The user greets me.", "Hello!"));
    // The prompt opened the block (DeepSeek R1's generation prompt ends with `<think>\n`).
    let parsed = parse_final(plain(Think::Open), "Easy.</think>Four.");
    assert_eq!((parsed.reasoning.as_str(), parsed.content.as_str()), ("Easy.", "Four."));
    // No block at all: content; never closed: all reasoning.
    assert_eq!(parse_final(plain(Think::Tagged), "Hi").content, "Hi");
    assert_eq!(parse_final(plain(Think::Open), "Hmm, let me").reasoning, "Hmm, let me");
    // Streamed one character at a time: the same split, no tag leaks.
    let with_call = "<think>Need weather.</think>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
    for (spec, text) in [(plain(Think::Tagged), text), (OutputSpec { tools: Some(ToolFormat::Hermes), think: Think::Tagged, single: false }, with_call)] {
        let whole = parse_final(spec, text);
        let mut stream = Streaming::new(spec);
        let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), Vec::new());
        let mut deltas: Vec<StreamDelta> = text.chars().map(|c| stream.push(&c.to_string())).collect();
        deltas.push(stream.finish());
        for d in deltas {
            reasoning.push_str(&d.reasoning);
            content.push_str(&d.content);
            calls.extend(d.calls.into_iter().map(|(_, c)| c));
        }
        assert_eq!((reasoning, content, calls), (whole.reasoning, whole.content, whole.calls), "{text}");
    }
}

/// Every fixture template with a known format, and the format it teaches.
const TEMPLATES: &[(&str, ToolFormat)] = &[
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", ToolFormat::Hermes),
    ("Qwen-Qwen2.5-7B-Instruct", ToolFormat::Hermes),
    ("Qwen-QwQ-32B", ToolFormat::Hermes),
    ("Qwen3-Coder", ToolFormat::QwenXml),
    ("meta-llama-Llama-3.1-8B-Instruct", ToolFormat::Llama3),
    ("meta-llama-Llama-3.2-3B-Instruct", ToolFormat::Llama3),
    ("Mistral-Small-3.2-24B-Instruct-2506", ToolFormat::MistralArgs),
    ("unsloth-mistral-Devstral-Small-2507", ToolFormat::MistralArgs),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ToolFormat::DeepSeekR1),
    ("deepseek-ai-DeepSeek-V3.1", ToolFormat::DeepSeekV31),
    ("meetkai-functionary-medium-v3.1", ToolFormat::FunctionaryV31),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", ToolFormat::CommandR7b),
    ("ibm-granite-granite-3.3-2B-Instruct", ToolFormat::Granite),
    ("google-gemma-2-2b-it", ToolFormat::Generic),
];

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/chat-templates/{name}.jinja", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn formats_are_detected_from_real_templates() {
    for (name, format) in TEMPLATES {
        assert_eq!(ToolFormat::detect(&fixture(name)), *format, "{name}");
    }
    assert_eq!(ToolFormat::detect("{{ '<|start|>assistant<|channel|>final<|message|>' }}"), ToolFormat::Harmony);
    let gemma = std::fs::read_to_string(format!("{}/config/templates/gemma3.jinja", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(ToolFormat::detect(&gemma), ToolFormat::Generic);
}

/// What a template renders for a past call is what its model writes: the
/// assistant turn (the render with the call, minus the render up to the
/// generation prompt) parses back into the same call.
#[test]
fn a_call_rendered_by_its_template_parses_back() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}]);
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let assistant = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call00000", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]});
    let mut checked = 0;
    for (name, format) in TEMPLATES.iter().filter(|t| t.1 != ToolFormat::Generic) {
        let template = crate::template::ChatTemplate::new(&fixture(name), "<s>", "</s>").unwrap();
        let render = |messages: &[Value], generation: bool| {
            let messages = prepare_messages(*format, true, messages, None, None, true);
            let req = crate::template::RenderRequest {
                messages: &messages,
                add_generation_prompt: generation,
                tools: Some(&tools),
                ..Default::default()
            };
            template.render(&req)
        };
        let (prompt, full) = match (render(std::slice::from_ref(&user), true), render(&[user.clone(), assistant.clone()], false)) {
            (Ok(p), Ok(f)) => (p, f),
            (p, f) => panic!("{name}: does not render: {:?} {:?}", p.err(), f.err()),
        };
        let Some(turn) = full.strip_prefix(prompt.as_str()) else { continue };
        // The end-of-turn token ends a generation; it is not in its text.
        let ends = ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "</s>", "<｜end▁of▁sentence｜>", "<|END_OF_TURN_TOKEN|>", "<|end_of_text|>"];
        let turn = ends.iter().filter_map(|e| turn.find(e)).min().map_or(turn, |at| &turn[..at]);
        if turn.trim().is_empty() {
            continue; // Granite 3.3 renders past calls as their content only.
        }
        let parsed = final_of(*format, turn, false);
        assert_eq!(parsed.calls, vec![weather()], "{name}: {turn:?}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} templates rendered a call after their generation prompt");
}

#[test]
fn grammars_wrap_each_tools_schema_in_the_format() {
    let tools = vec![
        ToolSpec { name: "get_weather".into(), parameters: json!({"type": "object"}) },
        ToolSpec { name: "get_time".into(), parameters: json!({"type": "object"}) },
    ];
    let fake = |_: &Value| Ok("root ::= object\nobject ::= \"{\" space \"}\"\nspace ::= \" \"?".to_string());
    let g = call_grammar(ToolFormat::Hermes, &tools, &Choice::Required, true, &fake).unwrap().unwrap();
    assert!(g.starts_with("root ::= \"<tool_call>\\n\" tc-call (\"\\n</tool_call>\\n<tool_call>\\n\" tc-call)* \"\\n</tool_call>\""), "{g}");
    assert!(g.contains("t0-root ::= t0-object\nt0-object ::= \"{\" t0-space \"}\""), "{g}");
    assert!(g.contains("\"{\\\"name\\\": \\\"get_time\\\", \\\"arguments\\\": \" t1-root \"}\""), "{g}");
    // A named function: only it, once.
    let g = call_grammar(ToolFormat::Hermes, &tools, &Choice::Named("get_time".into()), true, &fake).unwrap().unwrap();
    assert!(!g.contains("get_weather") && !g.lines().next().unwrap().contains(")*"), "{g}");
    // Auto leaves a model with its own format free; the generic format may answer.
    assert_eq!(call_grammar(ToolFormat::Hermes, &tools, &Choice::Auto, true, &fake).unwrap(), None);
    let g = call_grammar(ToolFormat::Generic, &tools, &Choice::Auto, false, &fake).unwrap().unwrap();
    assert!(g.contains("\"{\\\"tool_call\\\": \"") && g.contains("\"{\\\"response\\\": \" tc-string"), "{g}");
    let err = call_grammar(ToolFormat::Hermes, &tools, &Choice::Required, true, &|_: &Value| Err("bad".into())).unwrap_err();
    assert!(err.contains("get_weather"), "{err}");
}

#[test]
fn renaming_leaves_literals_classes_and_counts_alone() {
    let g = "root ::= \"a b\" [a-z] x{2,3} # note word\nx ::= \"\\\"q\" [\\]y]";
    assert_eq!(grammar::rename_for_test(g, "p-"), "p-root ::= \"a b\" [a-z] p-x{2,3} # note word\np-x ::= \"\\\"q\" [\\]y]");
}

#[test]
fn generic_prompts_describe_tools_and_replay_calls_as_json() {
    let tools = vec![ToolSpec { name: "f".into(), parameters: json!({"type": "object"}) }];
    let descriptions = json!([{"type": "function", "function": {"name": "f"}}]);
    let messages = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Go"}),
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}),
        json!({"role": "tool", "tool_call_id": "c1", "content": "42"}),
    ];
    let out = prepare_messages(ToolFormat::Generic, false, &messages, Some(&tools), Some(&descriptions), false);
    assert_eq!(out.len(), 4);
    let system = out[0]["content"].as_str().unwrap();
    assert!(system.starts_with("Be brief.\n\nYou can call these tools (f)"), "{system}");
    assert_eq!(out[2]["content"], json!({"tool_call": {"name": "f", "arguments": {"x": 1}}}).to_string());
    assert!(out[2].get("tool_calls").is_none());
    assert_eq!(out[3], json!({"role": "user", "content": json!({"tool_response": {"tool": "f", "content": "42"}}).to_string()}));
    // Past calls are prepared without tools too (a final turn with `tool_choice: "none"`).
    let out = prepare_messages(ToolFormat::Hermes, true, &messages, None, None, true);
    assert_eq!(out[2]["tool_calls"][0]["function"]["arguments"], json!({"x": 1}));
    let out = prepare_messages(ToolFormat::Generic, false, &messages, None, None, true);
    assert_eq!(out[3]["role"], "user");
    assert_eq!(out[0]["content"], "Be brief.");
    // A template that renders tools itself gets the arguments as a mapping.
    let out = prepare_messages(ToolFormat::Hermes, true, &messages, Some(&tools), Some(&descriptions), true);
    assert_eq!(out[2]["tool_calls"][0]["function"]["arguments"], json!({"x": 1}));
    assert_eq!(out[3]["role"], "tool");
}
