//! Wire types of the OpenAI API (and llama-server's helpers), nothing else.
//! Requests are deliberately loose (numbers as f64/i64, messages as JSON maps)
//! so that `validate.rs` can say exactly which field is wrong and why.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `stop` may be one string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A request body type. Those that embed [`SamplingFields`] fill them from
/// the same JSON object here: serde's `flatten` would lose the field path
/// in error messages.
pub trait WireRequest: serde::de::DeserializeOwned {
    /// Requests whose fields are checked against the table in `fields`.
    const FIELDS: Option<super::fields::Endpoint> = None;

    fn sampling_mut(&mut self) -> Option<&mut SamplingFields> {
        None
    }
}

impl WireRequest for ChatCompletionRequest {
    const FIELDS: Option<super::fields::Endpoint> = Some(super::fields::Endpoint::Chat);

    fn sampling_mut(&mut self) -> Option<&mut SamplingFields> {
        Some(&mut self.sampling)
    }
}

impl WireRequest for CompletionRequest {
    const FIELDS: Option<super::fields::Endpoint> = Some(super::fields::Endpoint::Completion);

    fn sampling_mut(&mut self) -> Option<&mut SamplingFields> {
        Some(&mut self.sampling)
    }
}

impl WireRequest for TokenizeRequest {}
impl WireRequest for DetokenizeRequest {}
impl WireRequest for ApplyTemplateRequest {}

/// Sampling fields shared by chat and text completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    /// OpenAI's object of token ids, or llama-server's forms (see `validate::logit_bias`).
    pub logit_bias: Option<Value>,
    pub n: Option<i64>,
    pub max_tokens: Option<i64>,
    /// llama-server's name for max_tokens.
    pub n_predict: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Chat: a boolean; completions: how many alternatives (0..=5).
    pub logprobs: Option<Value>,
    /// Chat: alternatives per token (0..=20), with `logprobs: true`.
    pub top_logprobs: Option<i64>,
    /// llama-server's: log-probabilities with this many alternatives per
    /// token (0..=20), as `logprobs` on the OpenAI endpoints.
    pub n_probs: Option<i64>,
    /// llama-server's: the probabilities after the samplers, not the raw ones.
    pub post_sampling_probs: Option<bool>,
    /// llama-server's: streams carry `prompt_progress` events while the
    /// prompt is read.
    pub return_progress: Option<bool>,
    /// llama-server's: every streamed chunk carries the `timings` so far.
    pub timings_per_token: Option<bool>,
    /// llama-server's per-request speculative decoding (keys with a dot).
    #[serde(rename = "speculative.type")]
    pub speculative_type: Option<String>,
    #[serde(rename = "speculative.n_max")]
    pub speculative_n_max: Option<i64>,
    #[serde(rename = "speculative.n_min")]
    pub speculative_n_min: Option<i64>,
    #[serde(rename = "speculative.p_min")]
    pub speculative_p_min: Option<f64>,
    #[serde(rename = "speculative.ngram_size_n")]
    pub speculative_ngram_size_n: Option<i64>,
    // llama-server's samplers (see `types::SamplingParams`).
    pub typical_p: Option<f64>,
    pub min_keep: Option<f64>,
    pub mirostat: Option<f64>,
    pub mirostat_tau: Option<f64>,
    pub mirostat_eta: Option<f64>,
    pub dry_multiplier: Option<f64>,
    pub dry_base: Option<f64>,
    pub dry_allowed_length: Option<f64>,
    pub dry_penalty_last_n: Option<f64>,
    pub dry_sequence_breakers: Option<Vec<String>>,
    pub xtc_probability: Option<f64>,
    pub xtc_threshold: Option<f64>,
    pub ignore_eos: Option<bool>,
    /// llama-server's: `false` reads the whole prompt again (no cache reuse).
    pub cache_prompt: Option<bool>,
    /// llama-server's constraints: a GBNF grammar, or a JSON schema.
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<Map<String, Value>>,
    pub max_completion_tokens: Option<i64>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<Value>,
    pub response_format: Option<Value>,
    /// Extra variables for the chat template (as in llama-server and vLLM).
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// llama-server's: "none" leaves a `<think>` block in the content.
    pub reasoning_format: Option<Value>,
    /// llama-server's and vLLM's: see `validate::turn_end`.
    pub add_generation_prompt: Option<bool>,
    pub continue_final_message: Option<bool>,
    /// llama-server's: answer with `__verbose` (the rendered prompt).
    pub verbose: Option<bool>,
    /// Filled by the extractor from the same JSON object (see `WireRequest`).
    #[serde(skip)]
    pub sampling: SamplingFields,
}

/// `prompt`: a string, token ids, llama-server's `{"prompt_string": ...}`,
/// or a list (see `prompt_list`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Tokens(Vec<i64>),
    Object(Map<String, Value>),
    List(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptField,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    /// llama-server's (`/completion`): the answer's fields to keep, as paths.
    pub response_fields: Option<Vec<String>>,
    /// Filled by the extractor from the same JSON object (see `WireRequest`).
    #[serde(skip)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageOut {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default)]
    pub prompt_tokens_details: PromptTokensDetails,
}

/// OpenAI's breakdown of the prompt tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV entries came from a cache (not decoded).
    pub cached_tokens: u32,
}

impl From<crate::engine::Usage> for UsageOut {
    fn from(u: crate::engine::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: u.cached_tokens },
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// `null` when the answer is only tool calls, as OpenAI sends it.
    pub content: Option<String>,
    /// Thinking the model's format marks as such (gpt-oss's analysis channel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<Value>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: UsageOut,
    pub system_fingerprint: String,
    /// llama-server's `timings` (prompt and generation speed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Value>,
    /// llama-server's `__verbose` (with `--verbose`): the rendered prompt.
    #[serde(rename = "__verbose", skip_serializing_if = "Option::is_none")]
    pub verbose: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// `""` goes out as null, as llama-server sends the role chunk's: clients
    /// that check each piece of content is not empty skip nulls.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "empty_as_null")]
    pub content: Option<String>,
    /// Thinking (gpt-oss's analysis channel), and swap progress ("loading
    /// model X: 40%") with --notify-swaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// A complete call per delta (`index`, `id`, `type`, `function`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    /// Present (null) on content chunks only when usage was requested, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
    /// llama-server's `timings`, on the chunk that finishes a choice (and
    /// on progress chunks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Value>,
    /// llama-server's `prompt_progress` (`return_progress`), on a chunk
    /// without choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_progress: Option<Value>,
    pub system_fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOut>,
    pub system_fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelMeta {
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub n_params: u64,
    pub size: u64,
    pub n_vocab: u32,
    pub parallel: u32,
    /// The draft model it loaded with: its file, and whether it shares the
    /// weights of a model (or another's draft) in use already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<crate::engine::DraftInUse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Every name the model answers to, its id first (llama-server lists
    /// each `--alias`).
    pub aliases: Vec<String>,
    /// llama-server's `--tags` (`tags` in the config).
    pub tags: Vec<String>,
    pub state: &'static str,
    /// llama-server's router status: `{"value": "loaded"|"loading"|
    /// "sleeping"|"unloaded", "args": []}` (+ `"failed": true`).
    pub status: serde_json::Value,
    /// Asleep: the pinned host bytes it keeps (0: a CPU model's mapped file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleeping_bytes: Option<u64>,
    /// A hub model (`[[models]] hf`) not downloaded yet: `false`; it
    /// downloads on its first request (`state` is `downloading` meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded: Option<bool>,
    /// The model that drafts for this one (speculative decoding): its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// Percent done of a load or download under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<ModelMeta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    /// Special-token text is read as the special token (llama-server's default).
    pub parse_special: Option<bool>,
    #[serde(default)]
    pub with_pieces: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApplyTemplateRequest {
    pub model: Option<String>,
    pub messages: Vec<Map<String, Value>>,
    pub add_generation_prompt: Option<bool>,
    pub continue_final_message: Option<bool>,
    pub tools: Option<Value>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
}

fn empty_as_null<S: serde::Serializer>(content: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match content.as_deref() {
        None | Some("") => s.serialize_none(),
        Some(text) => s.serialize_str(text),
    }
}
