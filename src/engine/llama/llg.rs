//! llguidance (the `llguidance` feature): JSON schemas as llguidance grammar
//! text, one parser factory per model vocabulary, and the matcher a request
//! samples with. A grammar is llguidance's when it starts with `%llguidance`
//! (llama.cpp's convention, Lark syntax); any other grammar is GBNF.
//! Without the feature such grammars are refused with a clear reason.

/// What marks a grammar as llguidance's (as in llama.cpp's `common/sampling.cpp`).
pub const MARK: &str = "%llguidance";

/// Whether `grammar` is llguidance grammar text rather than GBNF.
pub fn is_llguidance(grammar: &str) -> bool {
    grammar.starts_with(MARK)
}

/// The whitespace llguidance allows between JSON tokens, unless a schema's
/// own `x-guidance` says otherwise: llama.cpp's GBNF rule (`space ::= | " " |
/// "\n" [ \t]{0,20}`). llguidance's default (`[ \t\n\r]+`, unbounded) let
/// a sampling model write whitespace until `max_tokens`.
const WHITESPACE: &str = "( |\n[ \t]{0,20})";

/// A JSON schema as llguidance grammar text, as llama.cpp writes it
/// (`%llguidance {}` then `start: %json <schema>`), whitespace bounded as
/// above. The schema is compiled once here against a one-byte vocabulary,
/// so a schema llguidance refuses is an error before any model loads.
pub fn json_schema_lark(schema: &serde_json::Value) -> Result<String, String> {
    let mut schema = schema.clone();
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_pattern": WHITESPACE}));
    }
    let text = format!("{MARK} {{}}\nstart: %json {schema}");
    imp::check_without_model(&text)?;
    Ok(text)
}

#[cfg(feature = "llguidance")]
pub use imp::{Constraint, Vocab};

#[cfg(not(feature = "llguidance"))]
pub use imp::{Vocab, MISSING};

#[cfg(feature = "llguidance")]
mod imp {
    use std::sync::{Arc, OnceLock};

    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::sampling::LlamaSampler;
    use llguidance::api::TopLevelGrammar;
    use llguidance::{Matcher, ParserFactory};
    use toktrie::SimpleVob;

    fn factory(env: &toktrie::TokEnv) -> Result<ParserFactory, String> {
        let mut factory = ParserFactory::new_simple(env).map_err(|e| format!("llguidance: {e}"))?;
        // Warnings and errors come back as values; nothing on stderr.
        factory.quiet();
        Ok(factory)
    }

    fn parse(factory: &ParserFactory, grammar: &str) -> Result<Matcher, String> {
        let matcher = Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(grammar.to_string())));
        match matcher.get_error() {
            Some(e) => Err(format!("llguidance refused it: {e}")),
            None => Ok(matcher),
        }
    }

    pub(super) fn check_without_model(grammar: &str) -> Result<(), String> {
        static BYTES: OnceLock<Result<ParserFactory, String>> = OnceLock::new();
        let factory = BYTES.get_or_init(|| factory(&toktrie::ApproximateTokEnv::single_byte_env()));
        parse(factory.as_ref().map_err(Clone::clone)?, grammar).map(drop)
    }

    /// llguidance's view of one model's vocabulary (its token trie and
    /// parser factory), built on the first llguidance grammar: walking a
    /// large vocabulary takes a while (Gemma 3's 262k tokens), so it is
    /// built once per loaded model and shared by its requests.
    #[derive(Default)]
    pub struct Vocab {
        factory: OnceLock<Result<Arc<ParserFactory>, String>>,
    }

    impl Vocab {
        /// A fresh constraint for `grammar` (llguidance's Lark text).
        pub fn constraint(&self, model: &LlamaModel, grammar: &str) -> Result<Constraint, String> {
            let factory = self.factory.get_or_init(|| {
                let started = std::time::Instant::now();
                let built = factory(&LlamaSampler::llguidance_tok_env(model)).map(Arc::new);
                tracing::info!(ms = started.elapsed().as_millis() as u64, n_vocab = model.n_vocab(), "llguidance vocabulary built");
                built
            });
            let factory = factory.as_ref().map_err(Clone::clone)?;
            let eos = factory.tok_env().tok_trie().eos_token_set();
            Ok(Constraint { matcher: parse(factory, grammar)?, eos })
        }
    }

    /// One request's llguidance state: the matcher and the model's
    /// end-of-generation tokens (what is left once the grammar is done).
    pub struct Constraint {
        matcher: Matcher,
        eos: SimpleVob,
    }

    impl Constraint {
        /// Whether `token` may come next: its bytes are walked through the
        /// parser, no mask is computed.
        pub fn allows(&mut self, token: u32) -> bool {
            self.matcher.validate_tokens(&[token]).is_ok_and(|n| n == 1)
        }

        /// Which tokens may come next (the whole vocabulary's mask). Once
        /// the grammar is complete, or if the matcher failed, only the
        /// end-of-generation tokens.
        pub fn allowed(&mut self) -> impl Fn(u32) -> bool {
            let mask = self.matcher.compute_mask_or_eos().unwrap_or_else(|e| {
                tracing::warn!("llguidance failed ({e}); ending the generation");
                self.eos.clone()
            });
            move |t| mask.is_allowed(t)
        }

        pub fn accept(&mut self, token: u32) {
            // A finished matcher takes no more tokens: the end-of-generation
            // token after it would put the matcher in an error state.
            if !self.matcher.is_stopped() {
                let _ = self.matcher.consume_token(token);
            }
        }
    }
}

#[cfg(not(feature = "llguidance"))]
mod imp {
    pub const MISSING: &str =
        "`%llguidance` grammars need a vram-llm built with `--features llguidance`; this one was built without it";

    pub(super) fn check_without_model(_grammar: &str) -> Result<(), String> {
        Err(MISSING.into())
    }

    /// Without the feature there is nothing to build per model.
    #[derive(Default)]
    pub struct Vocab;
}

#[cfg(all(test, feature = "llguidance"))]
mod tests {
    use super::*;

    #[test]
    fn a_schema_becomes_llama_cpps_llguidance_text() {
        let schema = serde_json::json!({"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]});
        let text = json_schema_lark(&schema).unwrap();
        assert!(is_llguidance(&text));
        let mut bounded = schema.clone();
        bounded["x-guidance"] = serde_json::json!({"whitespace_pattern": WHITESPACE});
        assert_eq!(text, format!("%llguidance {{}}\nstart: %json {bounded}"));
        let own = serde_json::json!({"type": "object", "x-guidance": {"whitespace_flexible": false}});
        assert_eq!(json_schema_lark(&own).unwrap(), format!("%llguidance {{}}\nstart: %json {own}"), "a schema's own options win");
    }

    #[test]
    fn a_schema_llguidance_refuses_is_an_error_without_a_model() {
        let e = json_schema_lark(&serde_json::json!({"type": "no-such-type"})).unwrap_err();
        assert!(e.contains("llguidance"), "{e}");
    }

    #[test]
    fn gbnf_is_not_llguidance() {
        assert!(!is_llguidance("root ::= \"a\""));
        assert!(!is_llguidance(" %llguidance {}"));
    }
}

#[cfg(all(test, not(feature = "llguidance")))]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_llguidance_schemas_are_refused_with_the_reason() {
        let e = json_schema_lark(&serde_json::json!({"type": "object"})).unwrap_err();
        assert!(e.contains("--features llguidance"), "{e}");
    }
}
