//! Rendering tests: transformers' behaviour, template by template feature.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;

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
        include_str!("../../config/templates/gemma3.jinja"),
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
    // Unlike Google's own template, ours does not insist that roles
    // alternate: a tool result beside a user's text (Anthropic's blocks) or
    // two user messages in a row are ordinary conversations.
    let out = tmpl
        .render(&RenderRequest {
            messages: &messages,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out, "<bos><start_of_turn>user\na<end_of_turn>\n<start_of_turn>user\nb<end_of_turn>\n");
}

#[test]
fn developer_messages_are_system_messages_unless_the_template_knows_the_role() {
    let source = "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}";
    let messages = [json!({"role": "developer", "content": "Be brief"}), json!({"role": "user", "content": "Hi"})];
    assert_eq!(render_with(source, &messages, None).unwrap(), "system:Be brief;user:Hi;");
    let knows = "{% for m in messages %}{% if m.role == 'developer' %}D{% endif %}{{ m.role }};{% endfor %}";
    assert_eq!(render_with(knows, &messages, None).unwrap(), "Ddeveloper;user;");
}

#[test]
fn date_string_and_datetime_are_today_by_the_injected_clock() {
    // Both as llama-server gives them (Llama 3.x, Firefunction v2).
    assert_eq!(render_str("{{ date_string }}|{{ datetime }}").unwrap(), "21 Nov 2026|Nov 21 2026");
}

#[test]
fn lists_in_a_namespace_change_in_place_as_in_python() {
    let source = "{% set ns = namespace(ids=[], n=0) %}{% set _ = ns.ids.append('a') %}{% set _ = ns.ids.append('b') %}\
                  {{ ns.ids.pop(0) }}|{{ ns.ids|length }}|{% for i in ns.ids %}{{ i }}{% endfor %}|{{ ns.ids[0] }}|{{ 'yes' if ns.ids else 'no' }}\
                  {% set _ = ns.ids.pop() %}|{{ 'yes' if ns.ids else 'no' }}";
    assert_eq!(render_str(source).unwrap(), "a|1|b|b|yes|no");
    let err = render_str("{% set ns = namespace(ids=[]) %}{{ ns.ids.pop(0) }}").unwrap_err();
    assert!(err.to_string().contains("pop index out of range"), "{err}");
}

/// Kimi K2 queues tool-call ids with `append` and answers each tool result
/// with `pop(0)`.
#[test]
fn kimi_k2_renders_a_tool_call_round_trip() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat-templates/Kimi-K2-Instruct.jinja")).unwrap();
    let messages = [
        json!({"role": "user", "content": "Weather in Paris?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        json!({"role": "tool", "tool_call_id": "x", "content": "sunny"}),
    ];
    let prompt = render_with(&source, &messages, None).unwrap();
    assert!(prompt.contains("<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\":\"Paris\"}"), "{prompt}");
    assert!(prompt.contains("## Return of functions.get_weather:0\nsunny"), "{prompt}");
}

/// Firefunction v2 appends an undeclared `functions` to a string: it gets the
/// tools as JSON ("" without tools) and today's date in `datetime`.
#[test]
fn firefunction_v2_renders_its_functions_and_date() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat-templates/fireworks-ai-llama-3-firefunction-v2.jinja")).unwrap();
    let messages = [json!({"role": "user", "content": "What is today?"})];
    let prompt = render_with(&source, &messages, None).unwrap();
    assert!(prompt.contains("Available functions as JSON spec:\n\nToday is Nov 21 2026."), "{prompt}");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let prompt = render_with(&source, &messages, Some(&tools)).unwrap();
    assert!(prompt.contains("Available functions as JSON spec:\n[\n  {\n    \"name\": \"get_weather\""), "{prompt}");
    assert!(prompt.contains("Today is Nov 21 2026."), "{prompt}");
    // A template that sets `functions` itself is left alone.
    assert_eq!(render_str("{% set functions = 'own' %}{{ functions }}").unwrap(), "own");
}
