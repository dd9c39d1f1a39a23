//! Tests of `validate` (moved out of validate.rs, which neared 600 lines).

mod requests {
    use super::super::*;
    use crate::api::extract::parse_json;
    use serde_json::json;

    fn chat_req(v: Value) -> Result<ValidChat, ApiError> {
        // The fields table runs in `parse_json`, validation after it.
        let req: ChatCompletionRequest = parse_json(v.to_string().as_bytes())?;
        chat(req, 1000, &Defaults::default())
    }

    fn param_of(e: ApiError) -> String {
        e.body().error.param.unwrap_or_default()
    }

    #[test]
    fn minimal_chat_uses_server_defaults() {
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}]})).unwrap();
        assert_eq!(v.sampling.params, SamplingParams::default());
        assert_eq!(v.sampling.max_tokens, None);
        assert!(!v.sampling.stream);
        assert_eq!(v.messages, vec![json!({"role":"user","content":"Hi"})]);
    }

    #[test]
    fn speculative_fields_are_llama_servers_and_checked() {
        let v = chat_req(json!({"messages":[{"role":"user","content":"x"}],
            "speculative.type":"ngram-simple","speculative.n_max":8,"speculative.n_min":2,"speculative.ngram_size_n":4,"speculative.p_min":0.5}))
        .unwrap();
        let want = crate::types::SpecRequest { kind: Some(crate::types::SpecType::NgramSimple), n_max: Some(8), n_min: Some(2), size_n: Some(4), p_min: Some(0.5) };
        assert_eq!(v.sampling.speculative, want);
        let bad = [
            (json!({"speculative.type":"ngram-mod"}), "speculative.type"),
            (json!({"speculative.n_max":-1}), "speculative.n_max"),
            (json!({"speculative.n_min":1000}), "speculative.n_min"),
            (json!({"speculative.ngram_size_n":0}), "speculative.ngram_size_n"),
            (json!({"speculative.p_min":2.0}), "speculative.p_min"),
        ];
        for (fields, name) in bad {
            let mut body = json!({"messages":[{"role":"user","content":"x"}]});
            body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
            assert_eq!(param_of(chat_req(body).unwrap_err()), name);
        }
    }

    #[test]
    fn text_parts_are_joined_into_one_string() {
        let v = chat_req(json!({"messages":[{"role":"user","content":[
            {"type":"text","text":"a"},{"type":"text","text":"b"}]}]}))
        .unwrap();
        assert_eq!(v.messages[0]["content"], "a\nb");
    }

    #[test]
    fn image_parts_are_rejected_naming_the_part() {
        let e = chat_req(json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}))
            .unwrap_err();
        assert!(e.to_string().contains("projector"), "{e}");
        assert_eq!(param_of(e), "messages[0].content[0].type");
    }

    #[test]
    fn empty_messages_are_rejected() {
        assert_eq!(param_of(chat_req(json!({"messages":[]})).unwrap_err()), "messages");
    }

    #[test]
    fn missing_role_is_rejected() {
        assert_eq!(param_of(chat_req(json!({"messages":[{"content":"x"}]})).unwrap_err()), "messages[0].role");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 0.0}), "top_p"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_completion_tokens": -3}), "max_completion_tokens"),
            (json!({"top_k": -1}), "top_k"),
            (json!({"min_p": 2}), "min_p"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"frequency_penalty": -2.5}), "frequency_penalty"),
            (json!({"repeat_penalty": 0}), "repeat_penalty"),
            (json!({"seed": -2}), "seed"),
            (json!({"n": 17}), "n"),
            (json!({"logit_bias": {"5000": 1}}), "logit_bias"),
            (json!({"logit_bias": [[1]]}), "logit_bias[0]"),
            (json!({"logit_bias": 5}), "logit_bias"),
            (json!({"logit_bias": {"5": true}}), "logit_bias"),
            (json!({"logit_bias": {"5": 101}}), "logit_bias"),
            (json!({"stop": ["a","b","c","d","e"]}), "stop"),
            (json!({"logprobs": 3}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
            (json!({"response_format": {"type": "xml"}}), "response_format.type"),
            (json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema.schema"),
            (json!({"json_schema": 5}), "json_schema"),
            (json!({"grammar": "x", "json_schema": {}}), "json_schema"),
            (json!({"mirostat": 3}), "mirostat"),
            (json!({"typical_p": 0}), "typical_p"),
            (json!({"dry_penalty_last_n": -2}), "dry_penalty_last_n"),
            (json!({"dry_sequence_breakers": [""]}), "dry_sequence_breakers"),
        ];
        for (extra, field) in cases {
            let mut body = json!({"messages":[{"role":"user","content":"Hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = chat_req(body.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(param_of(e), field, "{body}");
        }
    }

    #[test]
    fn accepted_values_are_carried_over() {
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],
            "temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,"seed":7,"stop":"END",
            "max_tokens":5,"logit_bias":{"12":-100},"stream":true,"stream_options":{"include_usage":true}}))
        .unwrap();
        let s = v.sampling;
        assert_eq!(s.params.temperature, 0.0);
        assert_eq!(s.params.top_k, 3);
        assert_eq!(s.params.seed, Some(7));
        assert_eq!(s.params.logit_bias, vec![(12, -100.0)]);
        assert_eq!(s.stop, vec!["END".to_string()]);
        assert_eq!(s.max_tokens, Some(5));
        assert!(s.stream && s.include_usage);
    }

    #[test]
    fn constraints_become_one_grammar() {
        let object = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"json_object"}})).unwrap();
        assert!(object.sampling.params.grammar.as_deref().is_some_and(|g| g.contains("root ::=")));
        assert_eq!(object.sampling.grammar_field, "response_format");
        let schema = json!({"type":"object","properties":{"a":{"enum":["x","y"]}},"required":["a"]});
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":schema}}})).unwrap();
        assert!(v.sampling.params.grammar.as_deref().is_some_and(|g| g.contains("\\\"x\\\"")), "{:?}", v.sampling.params.grammar);
        let gbnf = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"grammar":"root ::= \"a\""})).unwrap();
        assert_eq!(gbnf.sampling.params.grammar.as_deref(), Some("root ::= \"a\""));
        assert_eq!(gbnf.sampling.grammar_field, "grammar");
        let both = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"grammar":"root ::= \"a\"","response_format":{"type":"json_object"}}));
        assert_eq!(param_of(both.unwrap_err()), "response_format");
        let text = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"text"}})).unwrap();
        assert_eq!(text.sampling.params.grammar, None);
    }

    #[test]
    fn the_llguidance_engine_takes_json_schemas_and_leaves_gbnf_alone() {
        let defaults = Defaults { json_schema_engine: JsonSchemaEngine::Llguidance, ..Defaults::default() };
        let req = |v: Value| chat(parse_json(v.to_string().as_bytes()).unwrap(), 1000, &defaults);
        let schema = json!({"type":"object","properties":{"a":{"enum":["x","y"]}},"required":["a"]});
        let format = json!({"messages":[{"role":"user","content":"Hi"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":schema}}});
        let field = json!({"messages":[{"role":"user","content":"Hi"}],"json_schema":schema});
        let gbnf = req(json!({"messages":[{"role":"user","content":"Hi"}],"grammar":"root ::= \"a\""})).unwrap();
        assert_eq!(gbnf.sampling.params.grammar.as_deref(), Some("root ::= \"a\""), "GBNF stays llama.cpp's");
        if cfg!(feature = "llguidance") {
            for (body, from) in [(format, "response_format"), (field, "json_schema")] {
                let v = req(body).unwrap();
                assert_eq!(v.sampling.params.grammar, Some(crate::engine::json_schema_lark(&schema).unwrap()));
                assert!(v.sampling.params.grammar.as_deref().is_some_and(|g| g.starts_with("%llguidance {}\nstart: %json {")));
                assert_eq!(v.sampling.grammar_field, from);
            }
        } else {
            // Config refuses the engine in such a build; were it to get here, a 400.
            assert_eq!(param_of(req(field).unwrap_err()), "json_schema");
        }
    }

    #[test]
    fn logprobs_in_each_endpoint_s_shape() {
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"logprobs":true,"top_logprobs":3})).unwrap();
        assert_eq!(v.sampling.logprobs, Some(3));
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"logprobs":false})).unwrap();
        assert_eq!(v.sampling.logprobs, None);
        let parse = |body: &str| completion(parse_json(body.as_bytes()).unwrap(), 10, &Defaults::default());
        assert_eq!(parse(r#"{"prompt":"x","logprobs":2}"#).unwrap().sampling.logprobs, Some(2));
        assert_eq!(parse(r#"{"prompt":"x","logprobs":0}"#).unwrap().sampling.logprobs, Some(0));
        assert_eq!(param_of(parse(r#"{"prompt":"x","logprobs":6}"#).unwrap_err()), "logprobs");
        // llama-server's `n_probs` asks the same, on both endpoints.
        assert_eq!(parse(r#"{"prompt":"x","n_probs":12}"#).unwrap().sampling.logprobs, Some(12));
        assert_eq!(parse(r#"{"prompt":"x","n_probs":0}"#).unwrap().sampling.logprobs, None);
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"n_probs":4})).unwrap();
        assert_eq!(v.sampling.logprobs, Some(4));
        assert_eq!(param_of(parse(r#"{"prompt":"x","n_probs":21}"#).unwrap_err()), "n_probs");
        assert_eq!(param_of(parse(r#"{"prompt":"x","n_probs":2,"logprobs":2}"#).unwrap_err()), "n_probs");
    }

    #[test]
    fn tool_choice_none_leaves_the_tools_out() {
        let tools = json!([{"type":"function","function":{"name":"f"}}]);
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"tools":tools,"tool_choice":"none"})).unwrap();
        assert_eq!(v.tools, None);
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"tools":tools,"tool_choice":"auto"})).unwrap();
        let t = v.tools.unwrap();
        assert_eq!((t.descriptions, t.choice, t.parallel), (tools, crate::tools::Choice::Auto, true));
        assert_eq!(t.specs[0].parameters, json!({"type": "object", "properties": {}}));
    }

    #[test]
    fn tool_requests_are_checked_naming_the_field() {
        let msgs = json!([{"role":"user","content":"Hi"}]);
        let tools = json!([{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]);
        let req = |extra: Value| {
            let mut body = json!({"messages": msgs});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            chat_req(body)
        };
        let named = req(json!({"tools": tools, "tool_choice": {"type":"function","function":{"name":"f"}}, "parallel_tool_calls": false}));
        let t = named.unwrap().tools.unwrap();
        assert_eq!((t.choice, t.parallel), (crate::tools::Choice::Named("f".into()), false));
        for (extra, field) in [
            (json!({"tool_choice": "required"}), "tool_choice"),
            (json!({"tools": tools, "tool_choice": {"type":"function","function":{"name":"g"}}}), "tool_choice"),
            (json!({"tools": tools, "tool_choice": "always"}), "tool_choice"),
            (json!({"tools": [{"type":"function","function":{"name":"bad name"}}]}), "tools[0].function.name"),
            (json!({"tools": [{"type":"retrieval"}]}), "tools[0].type"),
            (json!({"tools": [{"type":"function","function":{"name":"f","parameters":"x"}}]}), "tools[0].function.parameters"),
            (json!({"tools": [{"function":{"name":"f"}}, {"function":{"name":"f"}}]}), "tools[1].function.name"),
            (json!({"tools": {"name": "f"}}), "tools"),
            (json!({"tools": tools, "parallel_tool_calls": "yes"}), "parallel_tool_calls"),
        ] {
            assert_eq!(param_of(req(extra.clone()).unwrap_err()), field, "{extra}");
        }
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let v = chat_req(json!({"messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"max_completion_tokens":9})).unwrap();
        assert_eq!(v.sampling.max_tokens, Some(9));
    }

    #[test]
    fn completion_prompt_lists_and_n_make_the_choices() {
        let parse = |body: &str| completion(parse_json(body.as_bytes()).unwrap(), 10, &Defaults::default());
        assert_eq!(parse(r#"{"prompt":["x"]}"#).unwrap().prompts, vec![Prompt::Text("x".into())]);
        let two = parse(r#"{"prompt":["x","y"],"n":3}"#).unwrap();
        assert_eq!((two.prompts.len(), two.sampling.n), (2, 3));
        assert_eq!(parse(r#"{"prompt":"x"}"#).unwrap().sampling.n, 1);
        for (body, field) in [
            (r#"{"prompt":"x","n":0}"#, "n"),
            (r#"{"prompt":"x","n":17}"#, "n"),
            (r#"{"prompt":["a","b","c"],"n":6}"#, "prompt"),
            (r#"{"prompt":[[1],[]]}"#, "prompt[1]"),
            (r#"{"prompt":[]}"#, "prompt"),
        ] {
            assert_eq!(param_of(parse(body).unwrap_err()), field, "{body}");
        }
        // Endpoints that answer one sequence say so.
        let mut listed = parse(r#"{"prompt":["x","y"]}"#).unwrap();
        assert_eq!(param_of(listed.one_prompt("/completion").unwrap_err()), "prompt");
        let mut many = parse(r#"{"prompt":"x","n":2}"#).unwrap();
        assert_eq!(param_of(many.one_prompt("/completion").unwrap_err()), "n");
    }

    #[test]
    fn token_id_prompts_are_checked_against_the_vocabulary() {
        let parse = |body: &str| completion(parse_json(body.as_bytes()).unwrap(), 10, &Defaults::default());
        assert_eq!(parse(r#"{"prompt":[1,2,3],"echo":true}"#).unwrap().prompts, vec![Prompt::Tokens(vec![1, 2, 3])]);
        assert!(parse(r#"{"prompt":[1],"echo":true}"#).unwrap().echo);
        assert_eq!(parse(r#"{"prompt":[[4,5]]}"#).unwrap().prompts, vec![Prompt::Tokens(vec![4, 5])]);
        assert_eq!(param_of(parse(r#"{"prompt":[1,10]}"#).unwrap_err()), "prompt[1]");
        assert_eq!(parse(r#"{"prompt":[[1],[2]]}"#).unwrap().prompts.len(), 2);
        assert_eq!(param_of(parse(r#"{"prompt":[]}"#).unwrap_err()), "prompt");
    }

    #[test]
    fn token_ids_outside_the_vocabulary_are_rejected() {
        assert_eq!(token_ids("tokens", &[1, 2], 10).unwrap(), vec![1, 2]);
        assert_eq!(param_of(token_ids("tokens", &[1, 10], 10).unwrap_err()), "tokens[1]");
        assert_eq!(param_of(token_ids("tokens", &[-1], 10).unwrap_err()), "tokens[0]");
    }
}

mod defaults {
    use super::super::*;
    use crate::api::extract::parse_json;

    #[test]
    fn model_defaults_fill_only_missing_fields() {
        let defaults = Defaults {
            sampling: SamplingParams { temperature: 0.1, top_k: 7, ..SamplingParams::default() },
            max_tokens: Some(33),
            ..Defaults::default()
        };
        let req: CompletionRequest = parse_json(br#"{"prompt":"x","top_k":3}"#).unwrap();
        let v = completion(req, 10, &defaults).unwrap();
        assert_eq!(v.sampling.params.temperature, 0.1);
        assert_eq!(v.sampling.params.top_k, 3);
        assert_eq!(v.sampling.max_tokens, Some(33));
    }

    #[test]
    fn the_servers_seed_is_the_default_and_minus_one_asks_for_a_random_one() {
        let defaults = Defaults { sampling: SamplingParams { seed: Some(42), ..SamplingParams::default() }, ..Defaults::default() };
        for (body, want) in [(r#"{"prompt":"x"}"#, Some(42)), (r#"{"prompt":"x","seed":7}"#, Some(7)), (r#"{"prompt":"x","seed":-1}"#, None)] {
            let req: CompletionRequest = parse_json(body.as_bytes()).unwrap();
            assert_eq!(completion(req, 10, &defaults).unwrap().sampling.params.seed, want, "{body}");
        }
    }

    #[test]
    fn the_servers_n_predict_is_the_default_a_request_may_raise() {
        // As llama-server: `--n-predict` fills in for a request without a
        // limit (or with -1); a request's own limit wins, larger or not.
        let defaults = Defaults { max_tokens: Some(16), ..Defaults::default() };
        for (body, want) in [
            (r#"{"prompt":"x"}"#, 16),
            (r#"{"prompt":"x","max_tokens":8}"#, 8),
            (r#"{"prompt":"x","n_predict":100}"#, 100),
            (r#"{"prompt":"x","n_predict":-1}"#, 16),
        ] {
            let req: CompletionRequest = parse_json(body.as_bytes()).unwrap();
            assert_eq!(completion(req, 10, &defaults).unwrap().sampling.max_tokens, Some(want), "{body}");
        }
        let chat = chat_with(r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":99}"#, &defaults);
        assert_eq!(chat.sampling.max_tokens, Some(99));
    }

    fn chat_with(body: &str, defaults: &Defaults) -> ValidChat {
        chat(parse_json(body.as_bytes()).unwrap(), 10, defaults).unwrap()
    }

    #[test]
    fn the_servers_reasoning_switch_applies_unless_the_request_says() {
        use crate::types::{Reasoning, ReasoningFormat};
        let plain = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let off = Defaults { reasoning: Reasoning::Off, reasoning_format: ReasoningFormat::None, ..Defaults::default() };
        let v = chat_with(plain, &off);
        assert_eq!(v.template_kwargs.unwrap()["enable_thinking"], false);
        assert!(!v.split_reasoning);
        // The request's own choices win.
        let asks = r#"{"messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"enable_thinking":true,"x":1},"reasoning_format":"deepseek"}"#;
        let v = chat_with(asks, &off);
        let kwargs = v.template_kwargs.unwrap();
        assert_eq!((kwargs["enable_thinking"].clone(), kwargs["x"].clone()), (true.into(), 1.into()));
        assert!(v.split_reasoning);
        let on = Defaults { reasoning: Reasoning::On, ..Defaults::default() };
        assert_eq!(chat_with(plain, &on).template_kwargs.unwrap()["enable_thinking"], true);
        // auto, llama-server's default: thinking on where the template can
        // think, and reasoning split out.
        let v = chat_with(plain, &Defaults::default());
        assert_eq!(v.template_kwargs.unwrap()["enable_thinking"], true);
        assert!(v.split_reasoning);
    }
}

#[test]
fn logit_bias_takes_llama_servers_forms() {
    use serde_json::json;
    let (ids, texts) = super::logit_bias(json!({"12": -100, "Hello": false, "7": 2.5}), 100).unwrap();
    assert_eq!(ids, vec![(12, -100.0), (7, 2.5)]);
    assert_eq!(texts, vec![("Hello".to_string(), f32::NEG_INFINITY)]);
    let (ids, texts) = super::logit_bias(json!([[12, 1], ["Hi", -3], [5, false]]), 100).unwrap();
    assert_eq!(ids, vec![(12, 1.0), (5, f32::NEG_INFINITY)]);
    assert_eq!(texts, vec![("Hi".to_string(), -3.0)]);
    assert!(super::logit_bias(json!([[500, 1]]), 100).is_err(), "ids stay below the vocabulary");
}

mod turn_end {
    use super::super::*;
    use serde_json::json;

    fn msgs(roles: &[&str]) -> Vec<Value> {
        roles.iter().map(|r| json!({"role": r, "content": "x"})).collect()
    }

    #[test]
    fn a_trailing_assistant_message_is_continued_as_llama_server_prefills() {
        assert_eq!(turn_end(&msgs(&["user"]), None, None).unwrap(), TurnEnd::Open);
        assert_eq!(turn_end(&msgs(&["user", "assistant"]), None, None).unwrap(), TurnEnd::Continue);
        assert_eq!(turn_end(&msgs(&["user", "assistant"]), None, Some(true)).unwrap(), TurnEnd::Continue);
        assert_eq!(turn_end(&msgs(&["user", "assistant"]), Some(false), Some(true)).unwrap(), TurnEnd::Continue);
        // Opting out: a new turn, or none.
        assert_eq!(turn_end(&msgs(&["user", "assistant"]), None, Some(false)).unwrap(), TurnEnd::Open);
        assert_eq!(turn_end(&msgs(&["user", "assistant"]), Some(true), None).unwrap(), TurnEnd::Open);
        assert_eq!(turn_end(&msgs(&["user"]), Some(false), None).unwrap(), TurnEnd::Closed);
        // A tool call is not continued.
        let call = vec![json!({"role": "user", "content": "x"}), json!({"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]})];
        assert_eq!(turn_end(&call, None, None).unwrap(), TurnEnd::Open);
    }

    #[test]
    fn contradictions_are_400s_naming_the_field() {
        let param = |e: ApiError| match e {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        };
        assert_eq!(param(turn_end(&msgs(&["user", "assistant"]), Some(true), Some(true)).unwrap_err()), "continue_final_message");
        assert_eq!(param(turn_end(&msgs(&["user"]), None, Some(true)).unwrap_err()), "continue_final_message");
        assert_eq!(param(turn_end(&msgs(&["user", "assistant", "assistant"]), None, None).unwrap_err()), "messages");
    }
}
