//! Tool calls: which format a model writes them in, parsing its output into
//! calls (whole or while it streams), the grammar that forces a call, and
//! the conversation as the template needs it. Pure functions over text; the
//! HTTP layer (`api::tool_calls`) wires them into chat completions.
//!
//! A model learns one way to write a call, and its chat template shows it
//! (how past calls are rendered). [`ToolFormat::detect`] reads the template
//! source once per load; a template with no known format gets
//! [`ToolFormat::Generic`]: the tools are described in a system message and
//! the answer is constrained to JSON (`{"tool_call": …}` or
//! `{"response": …}`), as llama.cpp does for such models.
//!
//! Files: this one (formats, calls, streaming), `parse.rs` (one parser per
//! format), `grammar.rs` (GBNF that forces a call), `prompt.rs` (messages
//! for the template).

mod grammar;
mod parse;
mod prompt;

pub use grammar::{call_grammar, Choice};
pub use prompt::prepare_messages;

use serde_json::Value;

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Hermes 2 Pro, Qwen 2.5/3: `<tool_call>{"name":…, "arguments":…}</tool_call>`.
    Hermes,
    /// Qwen3-Coder: `<tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>`.
    QwenXml,
    /// Llama 3.x: a JSON object `{"name":…, "parameters":…}` as the whole answer.
    Llama3,
    /// Mistral Small 3.2, Devstral, Magistral: `[TOOL_CALLS]NAME[ARGS]{…}`.
    MistralArgs,
    /// Mistral Nemo and earlier: `[TOOL_CALLS][{"name":…, "arguments":…}]`.
    MistralJson,
    /// gpt-oss (Harmony): `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}`.
    Harmony,
    /// DeepSeek R1: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>`.
    DeepSeekR1,
    /// DeepSeek V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>`.
    DeepSeekV31,
    /// Functionary v3.1 (Llama 3.1): `<function=NAME>{…}</function>`.
    FunctionaryV31,
    /// Functionary v3.2: `>>>NAME\n{…}`, text under `>>>all`.
    FunctionaryV32,
    /// Command R7B: `<|START_ACTION|>[{"tool_name":…, "parameters":…}]<|END_ACTION|>`.
    CommandR7b,
    /// Granite 3.x: `<|tool_call|>[{"name":…, "arguments":…}]`.
    Granite,
    /// No native format: JSON answers, see the module documentation.
    Generic,
}

impl ToolFormat {
    /// The format a chat template teaches, from marks only that format's
    /// templates contain (most specific first).
    pub fn detect(template: &str) -> ToolFormat {
        let has = |s: &str| template.contains(s);
        if has("<|channel|>") {
            ToolFormat::Harmony
        } else if has("<｜tool▁calls▁begin｜>") {
            if has("```json") {
                ToolFormat::DeepSeekR1
            } else {
                ToolFormat::DeepSeekV31
            }
        } else if has("[TOOL_CALLS]") {
            if has("[ARGS]") {
                ToolFormat::MistralArgs
            } else {
                ToolFormat::MistralJson
            }
        } else if has("<|START_ACTION|>") {
            ToolFormat::CommandR7b
        } else if has(">>>all") {
            ToolFormat::FunctionaryV32
        } else if has("<function=") && has("<parameter=") {
            ToolFormat::QwenXml
        } else if has("<function=") {
            ToolFormat::FunctionaryV31
        } else if has("<tool_call>") {
            ToolFormat::Hermes
        } else if has("<|tool_call|>") {
            ToolFormat::Granite
        } else if has("<|python_tag|>") || (has("ipython") && has("\"parameters\"")) {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Lower-case name for logs and `/props`.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::QwenXml => "qwen3-coder",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::MistralArgs => "mistral",
            ToolFormat::MistralJson => "mistral-nemo",
            ToolFormat::Harmony => "harmony",
            ToolFormat::DeepSeekR1 => "deepseek-r1",
            ToolFormat::DeepSeekV31 => "deepseek-v3.1",
            ToolFormat::FunctionaryV31 => "functionary-v3.1",
            ToolFormat::FunctionaryV32 => "functionary-v3.2",
            ToolFormat::CommandR7b => "command-r7b",
            ToolFormat::Granite => "granite",
            ToolFormat::Generic => "generic",
        }
    }

    /// Text the format's calls are marked with. Many are special tokens,
    /// which a generation must write out as text for the parser to see them.
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &["<tool_call>", "</tool_call>"],
            ToolFormat::QwenXml => &["<tool_call>", "</tool_call>"],
            ToolFormat::Llama3 => &["<|python_tag|>"],
            ToolFormat::MistralArgs => &["[TOOL_CALLS]", "[ARGS]"],
            ToolFormat::MistralJson => &["[TOOL_CALLS]"],
            ToolFormat::Harmony => &["<|channel|>", "<|message|>", "<|constrain|>", "<|start|>", "<|end|>"],
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => {
                &["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"]
            }
            ToolFormat::FunctionaryV31 => &["<|python_tag|>"],
            ToolFormat::FunctionaryV32 => &[],
            ToolFormat::CommandR7b => &[
                "<|START_ACTION|>",
                "<|END_ACTION|>",
                "<|START_RESPONSE|>",
                "<|END_RESPONSE|>",
                "<|START_THINKING|>",
                "<|END_THINKING|>",
            ],
            ToolFormat::Granite => &["<|tool_call|>"],
            ToolFormat::Generic => &[],
        }
    }
}

/// A tool the request offers: its name and its parameters' JSON schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// `{"type": "object"}` when the request gave none.
    pub parameters: Value,
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as a JSON text (OpenAI's `function.arguments`): compact
    /// JSON when the model wrote valid JSON, else what it wrote.
    pub arguments: String,
}

impl ToolCall {
    fn new(name: &str, arguments: &Value) -> Self {
        let arguments = match arguments {
            // Some formats carry the arguments as a JSON string.
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) if v.is_object() => v.to_string(),
                _ => s.clone(),
            },
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        ToolCall { name: name.trim().to_string(), arguments }
    }
}

/// What a model's output holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The answer's text, outside any call.
    pub content: String,
    /// Text the model wrote in a thinking channel (Harmony's `analysis`,
    /// Command R7B's thinking block).
    pub reasoning: String,
    /// Complete calls, in order.
    pub calls: Vec<ToolCall>,
}

/// Parses `text`, a model's whole output (`at_end`) or the output so far:
/// then only complete calls are returned, and content stops before anything
/// that may still turn out to be part of a call.
pub fn parse(format: ToolFormat, text: &str, at_end: bool) -> Parsed {
    parse::parse(format, text, at_end)
}

/// Where a thinking model's reasoning is in its output (models whose
/// template knows `<think>`: DeepSeek R1, Qwen3, QwQ, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    /// Not split out: the model does not think, or `reasoning_format: "none"`.
    Off,
    /// A `<think>…</think>` block at the start of the output is reasoning.
    Tagged,
    /// The prompt opened `<think>`: the output is reasoning up to `</think>`.
    Open,
}

/// How a model's output is read: its tool-call format (`None`: plain text),
/// its thinking, and whether one call at most is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    pub tools: Option<ToolFormat>,
    pub think: Think,
    pub single: bool,
}

impl OutputSpec {
    /// Plain text: nothing to parse.
    pub fn is_plain(&self) -> bool {
        self.tools.is_none() && self.think == Think::Off
    }
}

/// [`parse`] after the reasoning is split off.
pub fn parse_output(spec: OutputSpec, text: &str, at_end: bool) -> Parsed {
    let (reasoning, rest) = parse::split_think(spec.think, text, at_end);
    let mut parsed = match spec.tools {
        Some(format) => parse(format, rest, at_end),
        None => Parsed { content: rest.to_string(), ..Parsed::default() },
    };
    if !reasoning.is_empty() {
        parsed.reasoning.insert_str(0, reasoning);
    }
    limit(parsed, spec.single)
}

/// One streamed message: what is new since the last [`Streaming::push`].
#[derive(Debug, Default, PartialEq)]
pub struct StreamDelta {
    pub content: String,
    pub reasoning: String,
    /// Calls completed since the last push, with their index in the message.
    pub calls: Vec<(usize, ToolCall)>,
}

impl StreamDelta {
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.reasoning.is_empty() && self.calls.is_empty()
    }
}

/// Turns a streamed output into deltas: each push parses the whole output so
/// far and sends what grew. Content is trimmed as the whole answer is
/// (leading and trailing whitespace held back), so the deltas add up to
/// exactly what [`parse`] gives at the end.
#[derive(Debug)]
pub struct Streaming {
    spec: OutputSpec,
    /// Without a tool format, once the thinking is over: where the content
    /// starts. Each push then only appends, instead of parsing it all again.
    settled: Option<usize>,
    text: String,
    sent_content: usize,
    sent_reasoning: usize,
    sent_calls: usize,
}

impl Streaming {
    pub fn new(spec: OutputSpec) -> Self {
        Streaming { spec, settled: None, text: String::new(), sent_content: 0, sent_reasoning: 0, sent_calls: 0 }
    }

    /// Adds a piece of output; returns what can be sent now.
    pub fn push(&mut self, piece: &str) -> StreamDelta {
        self.text.push_str(piece);
        self.delta(false)
    }

    /// The output ended: returns the rest.
    pub fn finish(&mut self) -> StreamDelta {
        self.delta(true)
    }

    /// Calls sent so far.
    pub fn calls_sent(&self) -> usize {
        self.sent_calls
    }

    fn delta(&mut self, at_end: bool) -> StreamDelta {
        if let Some(start) = self.settled {
            // Trimmed as the whole parse trims it (leading and trailing
            // whitespace), which costs only the whitespace.
            let all = self.text[start..].trim();
            let content = all.get(self.sent_content..).unwrap_or("").to_string();
            self.sent_content = self.sent_content.max(all.len());
            return StreamDelta { content, ..StreamDelta::default() };
        }
        if self.spec.tools.is_none() {
            self.settled = parse::content_start(self.spec.think, &self.text);
        }
        let parsed = parse_output(self.spec, &self.text, at_end);
        let grown = |all: &str, sent: &mut usize| {
            let all = all.trim();
            // A parse that takes back text already sent (it cannot, for
            // the formats here) sends nothing rather than contradict it.
            let new = all.get(*sent..).unwrap_or("").to_string();
            *sent = (*sent).max(all.len());
            new
        };
        let content = grown(&parsed.content, &mut self.sent_content);
        let reasoning = grown(&parsed.reasoning, &mut self.sent_reasoning);
        let calls: Vec<(usize, ToolCall)> = parsed.calls.into_iter().enumerate().skip(self.sent_calls).collect();
        self.sent_calls += calls.len();
        StreamDelta { content, reasoning, calls }
    }
}

/// The whole output, trimmed as streaming trims it.
pub fn parse_final(spec: OutputSpec, text: &str) -> Parsed {
    let mut parsed = parse_output(spec, text, true);
    parsed.content = parsed.content.trim().to_string();
    parsed.reasoning = parsed.reasoning.trim().to_string();
    parsed
}

fn limit(mut parsed: Parsed, single: bool) -> Parsed {
    if single {
        parsed.calls.truncate(1);
    }
    parsed
}

#[cfg(test)]
mod tests;
