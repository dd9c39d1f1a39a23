//! A model ready to serve: its engine and its chat template, and the one
//! place that chooses the template (`--chat-template-file`, else the GGUF's,
//! else a built-in chosen by architecture).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Engine, EngineError, EngineFactory, ModelInfo};
use crate::gpu::Placement;
use crate::template::{ChatTemplate, RenderRequest, TemplateError};
use crate::types::{ModelSpec, Progress};

/// Where a model's chat template came from, for `/props` and the logs.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateOrigin {
    File(PathBuf),
    Gguf,
    /// Built in: named by `--chat-template`, or chosen by architecture when
    /// the GGUF has none.
    BuiltIn(&'static str),
    /// The Jinja source given as `--chat-template` (or `chat_template`).
    Given,
}

impl TemplateOrigin {
    /// `file:PATH`, `gguf` or `builtin:NAME`, as `/props` shows it.
    pub fn label(&self) -> String {
        match self {
            TemplateOrigin::File(p) => format!("file:{}", p.display()),
            TemplateOrigin::Gguf => "gguf".to_string(),
            TemplateOrigin::BuiltIn(name) => format!("builtin:{name}"),
            TemplateOrigin::Given => "chat-template".to_string(),
        }
    }
}

/// A model ready to serve.
pub struct LoadedModel {
    pub engine: Arc<dyn Engine>,
    pub template: ChatTemplate,
    pub template_source: String,
    pub template_origin: TemplateOrigin,
    /// How this model writes tool calls, as its template shows.
    pub tool_format: crate::tools::ToolFormat,
    /// The template renders a `tools` list itself.
    pub template_knows_tools: bool,
    /// The tool format's marks that are one token in this vocabulary
    /// (written out as text when the output is parsed).
    pub tool_marks: Vec<super::TokenId>,
    /// The template knows `<think>`: a thinking model.
    pub thinks: bool,
    /// The special token the tokenizer appends to a text (BERT's SEP, an
    /// EOS for last-token pooling), if any.
    pub closing_token: Option<super::TokenId>,
    /// Set by [`LoadedModel::cancel_all`]: no generation starts after it.
    /// The lock orders a start against a cancel (a request still tokenizing
    /// when a forced unload comes must not start on the model afterwards).
    cancelled: parking_lot::Mutex<bool>,
}

impl LoadedModel {
    /// Starts a generation, unless the model was cancelled (`Stopped`).
    pub fn generate(&self, request: super::GenerationRequest) -> Result<super::EventReceiver, EngineError> {
        let cancelled = self.cancelled.lock();
        if *cancelled {
            return Err(EngineError::Stopped);
        }
        self.engine.generate(request)
    }

    /// Starts several generations together (see `Engine::generate_many`),
    /// unless the model was cancelled (`Stopped`).
    pub fn generate_many(&self, requests: Vec<super::GenerationRequest>) -> Result<Vec<super::EventReceiver>, EngineError> {
        let cancelled = self.cancelled.lock();
        if *cancelled {
            return Err(EngineError::Stopped);
        }
        self.engine.generate_many(requests)
    }

    /// Queues an embedding, unless the model was cancelled (`Stopped`).
    pub fn embed(&self, inputs: Vec<Vec<super::TokenId>>) -> Result<super::embed::EmbedReceiver, EngineError> {
        let cancelled = self.cancelled.lock();
        if *cancelled {
            return Err(EngineError::Stopped);
        }
        self.engine.embed(inputs)
    }

    /// Ends every running and queued generation, and refuses new ones (a
    /// forced unload, shutdown).
    pub fn cancel_all(&self) {
        let mut cancelled = self.cancelled.lock();
        *cancelled = true;
        self.engine.cancel_all();
    }
}

impl LoadedModel {
    /// Renders a conversation with this model's chat template (including the
    /// template's own `raise_exception`).
    pub fn render_chat(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        kwargs: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, TemplateError> {
        let request = RenderRequest { messages, add_generation_prompt, tools, extra: kwargs, now: None };
        self.template.render(&request)
    }

    /// The part of `rendered` (these messages rendered with the generation
    /// prompt) before the content of the last user message: where a later
    /// request that shares the conversation but asks something else leaves
    /// this prompt. Found by rendering again with that content replaced by
    /// a mark; `None` when there is no user message or the template renders
    /// what comes before it differently then.
    pub fn before_last_user_content<'r>(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&serde_json::Value>,
        kwargs: Option<&serde_json::Map<String, serde_json::Value>>,
        rendered: &'r str,
    ) -> Option<&'r str> {
        const MARK: &str = "\u{E000}vram-llm:content\u{E001}";
        let last = messages.iter().rposition(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("user"))?;
        let mut marked = messages.to_vec();
        marked[last]["content"] = serde_json::Value::String(MARK.to_string());
        let text = self.render_chat(&marked, true, tools, kwargs).ok()?;
        let at = text.find(MARK)?;
        rendered.get(..at).filter(|before| *before == &text[..at])
    }
}

/// Loads one model and its chat template (blocking: call off the runtime).
pub fn load_one(
    factory: &dyn EngineFactory,
    spec: &ModelSpec,
    placement: Option<&Placement>,
    progress: Progress,
) -> Result<LoadedModel, EngineError> {
    // Read the template file before the (slow) load so a typo fails fast.
    let file_template = match &spec.chat_template_file {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .map_err(|e| EngineError::Template(format!("cannot read chat template file {}: {e}", path.display())))?,
            path.clone(),
        )),
        None => None,
    };
    let given = file_template.map(|(source, path)| (source, TemplateOrigin::File(path))).or_else(|| spec.chat_template.as_deref().map(given_template));
    let engine = factory.load(spec, placement, progress)?;
    let (source, origin) = choose_template(given, engine.info());
    let info = engine.info();
    let template = ChatTemplate::new(&source, &info.bos_token, &info.eos_token)
        .map_err(|e| EngineError::Template(format!("chat template of model `{}` ({origin:?}): {e}", spec.id)))?;
    let tool_format = crate::tools::ToolFormat::detect(&source);
    Ok(LoadedModel {
        tool_marks: single_token_marks(&*engine, tool_format),
        thinks: source.contains("<think>"),
        closing_token: closing_token(&*engine),
        engine,
        template,
        tool_format,
        template_knows_tools: source.contains("tools"),
        template_source: source,
        template_origin: origin,
        cancelled: Default::default(),
    })
}

/// The format's marks that are one token in this model's vocabulary.
fn single_token_marks(engine: &dyn Engine, format: crate::tools::ToolFormat) -> Vec<super::TokenId> {
    format
        .markers()
        .iter()
        .filter_map(|m| match engine.tokenize(m, false).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
        .collect()
}

/// What "a" gains at its end when the tokenizer adds its special tokens.
fn closing_token(engine: &dyn Engine) -> Option<super::TokenId> {
    let (with, without) = (engine.tokenize("a", true), engine.tokenize("a", false));
    (with.len() > without.len() && with.last() != without.last()).then(|| with.last().copied()).flatten()
}

/// Built-in templates, used when neither a file nor the GGUF provides one.
pub const GEMMA3_TEMPLATE: &str = include_str!("../../config/templates/gemma3.jinja");
pub const CHATML_TEMPLATE: &str = include_str!("../../config/templates/chatml.jinja");

/// The built-in templates `--chat-template` may name, with llama-server's
/// names for them.
const NAMED_TEMPLATES: [(&str, &str); 6] = [
    ("chatml", CHATML_TEMPLATE),
    ("gemma", GEMMA3_TEMPLATE),
    ("gemma3", GEMMA3_TEMPLATE),
    ("llama3", include_str!("../../config/templates/llama3.jinja")),
    ("command-r", include_str!("../../config/templates/command-r.jinja")),
    ("phi3", include_str!("../../config/templates/phi3.jinja")),
];

/// `--chat-template VALUE` as llama-server reads it: a built-in's name, else
/// the Jinja source itself.
pub fn given_template(value: &str) -> (String, TemplateOrigin) {
    match NAMED_TEMPLATES.iter().find(|(name, _)| *name == value) {
        Some((name, source)) => (source.to_string(), TemplateOrigin::BuiltIn(name)),
        None => (value.to_string(), TemplateOrigin::Given),
    }
}

/// The one place that decides a model's chat template: `--chat-template-file`
/// or `--chat-template` (`given`), else the GGUF's `tokenizer.chat_template`,
/// else a built-in chosen by the architecture (Gemma 3 for `gemma3`, ChatML
/// otherwise).
pub fn choose_template(given: Option<(String, TemplateOrigin)>, info: &ModelInfo) -> (String, TemplateOrigin) {
    if let Some(given) = given {
        return given;
    }
    if let Some(source) = info.chat_template.as_ref().filter(|s| !s.trim().is_empty()) {
        return (source.clone(), TemplateOrigin::Gguf);
    }
    match info.architecture.as_deref() {
        Some(arch) if arch.starts_with("gemma") => (GEMMA3_TEMPLATE.to_string(), TemplateOrigin::BuiltIn("gemma3")),
        _ => (CHATML_TEMPLATE.to_string(), TemplateOrigin::BuiltIn("chatml")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(arch: Option<&str>, template: Option<&str>) -> ModelInfo {
        ModelInfo {
            n_ctx_slot: 1,
            n_ctx_train: 1,
            parallel: 1,
            n_params: 0,
            size_bytes: 0,
            n_vocab: 1,
            bos_token: String::new(),
            eos_token: String::new(),
            add_bos: false,
            architecture: arch.map(str::to_string),
            chat_template: template.map(str::to_string),
            n_embd: 1,
            n_ctx_embed: 1,
            fim: None,
            bos_id: None,
            n_swa: 0,
            draft: None,
        }
    }

    #[test]
    fn named_templates_render_as_llama_servers_built_ins() {
        // The prompts llama.cpp's own server tests expect for these names.
        let messages = [serde_json::json!({"role": "system", "content": "You are a test."}), serde_json::json!({"role": "user", "content": "Hi there"})];
        let render = |name: &str| {
            let (source, _) = given_template(name);
            let req = crate::template::RenderRequest { messages: &messages, add_generation_prompt: true, ..Default::default() };
            crate::template::ChatTemplate::new(&source, "", "").unwrap().render(&req).unwrap()
        };
        assert_eq!(
            render("command-r"),
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a test.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        );
        assert_eq!(
            render("llama3"),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are a test.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(render("phi3"), "<|system|>\nYou are a test.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\n");
        for (name, _) in NAMED_TEMPLATES {
            assert!(!render(name).is_empty(), "{name}");
        }
    }

    #[test]
    fn template_file_beats_gguf_beats_builtin() {
        let file = Some(("F".to_string(), TemplateOrigin::File(PathBuf::from("t.jinja"))));
        assert_eq!(choose_template(file, &info(None, Some("G"))).0, "F");
        // `--chat-template`: a built-in's name, else the Jinja itself; both beat the GGUF's.
        let named = choose_template(Some(given_template("llama3")), &info(None, Some("G")));
        assert!(named.0.contains("<|start_header_id|>") && named.1 == TemplateOrigin::BuiltIn("llama3"), "{named:?}");
        assert_eq!(choose_template(Some(given_template("{{ 'x' }}")), &info(None, Some("G"))), ("{{ 'x' }}".to_string(), TemplateOrigin::Given));
        assert_eq!(choose_template(None, &info(Some("gemma3"), Some("G"))).1, TemplateOrigin::Gguf);
        assert_eq!(choose_template(None, &info(Some("gemma3"), None)).1, TemplateOrigin::BuiltIn("gemma3"));
        assert_eq!(choose_template(None, &info(Some("llama"), None)).1, TemplateOrigin::BuiltIn("chatml"));
    }
}
