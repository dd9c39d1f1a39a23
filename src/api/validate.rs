//! Wire requests -> validated values ("parse, don't validate"). Every error
//! names the field at fault. Handlers call this once, before they acquire a
//! model (so a bad request never causes a load or a swap); nothing here
//! touches a model: the vocabulary size for token ids comes from the GGUF
//! header. Sampling ranges come from the one table in `types`.

use serde_json::{Map, Value};

use super::error::{invalid, ApiError};
use super::openai::{ChatCompletionRequest, CompletionRequest, SamplingFields, StopField};
use crate::types::{Defaults, JsonSchemaEngine, Reasoning, ReasoningFormat, SamplingField, SamplingParams, TokenId};

/// At most this many stop strings, as OpenAI allows.
pub const MAX_STOP_STRINGS: usize = 4;

/// At most this many sequences per request (`n` times the prompts): each
/// takes a slot of the model, the rest wait for one.
pub const MAX_CHOICES: usize = 16;

/// The sampling part of a request after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    pub params: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// The field `params.grammar` came from, for errors.
    pub grammar_field: &'static str,
    /// Report log-probabilities with this many alternatives per token.
    pub logprobs: Option<u32>,
    /// ... taken after the samplers (llama-server's `post_sampling_probs`).
    pub post_sampling_probs: bool,
    /// A stream reports the prompt's read (llama-server's `return_progress`).
    pub return_progress: bool,
    /// Each streamed chunk carries the timings so far (`timings_per_token`).
    pub timings_per_token: bool,
    /// llama-server's `speculative.*` fields.
    pub speculative: crate::types::SpecRequest,
    /// Special tokens the output writes as text (tool-call marks).
    pub keep_special: Vec<TokenId>,
    /// Choices per prompt (`n`).
    pub n: u32,
    /// Reuse cached KV of the prompt (llama-server's `cache_prompt`).
    pub cache_prompt: bool,
    /// `logit_bias` entries keyed by text: every token of the text gets the
    /// bias once the model's tokenizer is at hand (`against_model`).
    pub logit_bias_text: Vec<(String, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidChat {
    pub model: Option<String>,
    /// Messages ready for the chat template: text parts joined into strings.
    pub messages: Vec<Value>,
    /// `None`: the model is told of no tools.
    pub tools: Option<super::tool_calls::ValidTools>,
    pub template_kwargs: Option<Map<String, Value>>,
    /// `reasoning_format` is not "none": a thinking model's `<think>` block
    /// goes to `reasoning_content`.
    pub split_reasoning: bool,
    pub sampling: ValidSampling,
    /// How the prompt ends (see `turn_end`).
    pub end: TurnEnd,
    /// Answer with llama-server's `__verbose` (the rendered prompt).
    pub verbose: bool,
}

/// How a chat prompt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    /// The template opens the assistant's turn (`add_generation_prompt`).
    Open,
    /// The prompt ends after the last message (`add_generation_prompt: false`).
    Closed,
    /// The last message is the assistant's beginning: the prompt opens the
    /// assistant's turn and ends with that text, and the answer continues it
    /// (llama-server's prefill, vLLM's `continue_final_message`).
    Continue,
}

/// llama-server's rule: a trailing assistant message is continued unless
/// `continue_final_message: false` says otherwise; `continue_final_message:
/// true` needs a trailing assistant message and no `add_generation_prompt:
/// true`; two trailing assistant messages cannot be continued; a message
/// with tool calls is not continued.
pub fn turn_end(messages: &[Value], add_generation_prompt: Option<bool>, continue_final: Option<bool>) -> Result<TurnEnd, ApiError> {
    let role = |m: Option<&Value>| m.and_then(|m| m["role"].as_str()).unwrap_or_default().to_string();
    let last = messages.last();
    let continuable = role(last) == "assistant" && last.is_some_and(|m| m.get("tool_calls").is_none_or(Value::is_null));
    let field = "continue_final_message";
    match continue_final {
        Some(true) if add_generation_prompt == Some(true) => {
            Err(invalid(field, "`add_generation_prompt` and `continue_final_message` cannot both be true"))
        }
        Some(true) if !continuable => Err(invalid(field, "`continue_final_message` needs a last message from the assistant without tool calls")),
        Some(true) => Ok(TurnEnd::Continue),
        None if continuable && add_generation_prompt.is_none() => {
            if role(messages.len().checked_sub(2).and_then(|i| messages.get(i))) == "assistant" {
                return Err(invalid("messages", "two assistant messages end `messages`: only one can be continued"));
            }
            Ok(TurnEnd::Continue)
        }
        _ if add_generation_prompt == Some(false) => Ok(TurnEnd::Closed),
        _ => Ok(TurnEnd::Open),
    }
}

/// A prompt as the client gave it: text to tokenize, or token ids (checked
/// against the GGUF header's vocabulary here, the loaded model's in `start`).
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<TokenId>),
    /// Ids and text in one prompt (llama-server's mixed list), read in order.
    Mixed(Vec<Prompt>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompletion {
    pub model: Option<String>,
    /// One or more (a list of prompts: one choice per prompt and `n`).
    pub prompts: Vec<Prompt>,
    /// `echo`: the answer starts with the prompt.
    pub echo: bool,
    /// Fill in the middle between each prompt and this (not empty).
    pub suffix: Option<String>,
    /// `/completion` answers only these fields (paths such as `a/b`).
    pub response_fields: Vec<String>,
    pub sampling: ValidSampling,
}

pub fn chat(req: ChatCompletionRequest, n_vocab: u32, defaults: &Defaults) -> Result<ValidChat, ApiError> {
    if req.messages.is_empty() {
        return Err(invalid("messages", "`messages` must contain at least one message"));
    }
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let format_grammar = match &req.response_format {
        Some(format) => response_format(format, defaults.json_schema_engine)?,
        None => None,
    };
    let logprobs = with_n_probs(chat_logprobs(&req.sampling)?, &req.sampling)?;
    let mut sampling = sampling(req.sampling, n_vocab, defaults)?;
    sampling.logprobs = logprobs;
    if let Some(grammar) = format_grammar {
        if sampling.params.grammar.is_some() {
            return Err(invalid("response_format", "give one of `response_format`, `grammar` and `json_schema`, not several"));
        }
        sampling.params.grammar = Some(grammar);
        sampling.grammar_field = "response_format";
    }
    let tools = super::tool_calls::validate(req.tools, req.tool_choice, req.parallel_tool_calls)?;
    let split_reasoning = match req.reasoning_format.as_ref().map(|v| v.as_str()) {
        None => defaults.reasoning_format != ReasoningFormat::None,
        Some(Some("auto" | "deepseek")) => true,
        Some(Some("none")) => false,
        Some(_) => return Err(invalid("reasoning_format", "`reasoning_format` must be \"auto\", \"deepseek\" or \"none\"")),
    };
    let template_kwargs = with_reasoning(req.chat_template_kwargs, defaults.reasoning);
    let end = turn_end(&messages, req.add_generation_prompt, req.continue_final_message)?;
    if let Some(m) = req.max_completion_tokens {
        sampling.max_tokens = Some(positive_u32("max_completion_tokens", m)?);
    }
    Ok(ValidChat {
        verbose: req.verbose.unwrap_or(false),
        model: req.model,
        messages,
        tools,
        template_kwargs,
        split_reasoning,
        sampling,
        end,
    })
}

/// The template's variables with the server's `--reasoning` applied:
/// `enable_thinking` is true for `on` and `auto` (llama-server's default:
/// templates that can think open their thinking block), false for `off`,
/// unless the request set it.
fn with_reasoning(kwargs: Option<Map<String, Value>>, reasoning: Reasoning) -> Option<Map<String, Value>> {
    let enable = match reasoning {
        Reasoning::Auto | Reasoning::On => true,
        Reasoning::Off => false,
    };
    let mut kwargs = kwargs.unwrap_or_default();
    kwargs.entry("enable_thinking").or_insert(Value::Bool(enable));
    Some(kwargs)
}

impl ValidCompletion {
    /// The prompt of an endpoint that answers one sequence (llama-server's
    /// `/completion`, Ollama's raw generate): a list or `n` > 1 is a 400.
    pub fn one_prompt(&mut self, endpoint: &str) -> Result<Prompt, ApiError> {
        if self.sampling.n != 1 {
            return Err(invalid("n", format!("{endpoint} answers one sequence; use /v1/completions for `n` > 1")));
        }
        if self.prompts.len() != 1 {
            return Err(invalid("prompt", format!("{endpoint} streams one prompt; send a list of prompts without `stream`, or use /v1/completions")));
        }
        if self.suffix.is_some() {
            return Err(invalid("suffix", format!("{endpoint} does not take `suffix`; use /v1/completions")));
        }
        Ok(self.prompts.remove(0))
    }
}

pub fn completion(req: CompletionRequest, n_vocab: u32, defaults: &Defaults) -> Result<ValidCompletion, ApiError> {
    let prompts = super::prompt_list::prompts(req.prompt, n_vocab)?;
    let logprobs = with_n_probs(completion_logprobs(&req.sampling)?, &req.sampling)?;
    let mut sampling = sampling(req.sampling, n_vocab, defaults)?;
    sampling.logprobs = logprobs;
    if prompts.len() * sampling.n as usize > MAX_CHOICES {
        return Err(invalid(
            "prompt",
            format!("{} prompts times `n` = {} make {} sequences; at most {MAX_CHOICES} per request", prompts.len(), sampling.n, prompts.len() * sampling.n as usize),
        ));
    }
    let suffix = req.suffix.filter(|s| !s.is_empty());
    let response_fields = req.response_fields.unwrap_or_default();
    Ok(ValidCompletion { model: req.model, prompts, echo: req.echo.unwrap_or(false), suffix, response_fields, sampling })
}

/// Validates one chat message and normalizes its content to a string.
fn message(index: usize, mut m: Map<String, Value>) -> Result<Value, ApiError> {
    let field = |name: &str| format!("messages[{index}].{name}");
    match m.get("role") {
        Some(Value::String(r)) if !r.is_empty() => {}
        Some(_) => return Err(invalid(field("role"), format!("`{}` must be a non-empty string", field("role")))),
        None => return Err(invalid(field("role"), format!("`{}` is required", field("role")))),
    }
    let content = match m.remove("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(invalid(
                            field(&format!("content[{j}].text")),
                            format!("`{}` must be a string", field(&format!("content[{j}].text"))),
                        ))
                    }
                    (Some(kind @ ("image_url" | "input_image" | "image" | "input_audio" | "audio" | "file")), _) => {
                        return Err(invalid(
                            field(&format!("content[{j}].type")),
                            format!("content part type `{kind}` needs a multimodal projector, which no model here has (vision and audio are not served); send `text` parts"),
                        ))
                    }
                    (Some(other), _) => {
                        return Err(invalid(
                            field(&format!("content[{j}].type")),
                            format!("content part type `{other}` is not supported; only `text` is"),
                        ))
                    }
                    (None, _) => {
                        return Err(invalid(
                            field(&format!("content[{j}].type")),
                            format!("`{}` is required", field(&format!("content[{j}].type"))),
                        ))
                    }
                }
            }
            Value::String(texts.join("\n"))
        }
        Some(_) => {
            return Err(invalid(
                field("content"),
                format!("`{}` must be a string or an array of text parts", field("content")),
            ))
        }
    };
    m.insert("content".into(), content);
    Ok(Value::Object(m))
}

fn sampling(f: SamplingFields, n_vocab: u32, model_defaults: &Defaults) -> Result<ValidSampling, ApiError> {
    let defaults = &model_defaults.sampling;
    let has_schema = f.json_schema.as_ref().is_some_and(|v| !v.is_null());
    let speculative = super::speculative::fields(&f)?;
    let temperature = ranged(SamplingField::Temperature, f.temperature)?.map_or(defaults.temperature, |v| v as f32);
    let top_p = ranged(SamplingField::TopP, f.top_p)?.map_or(defaults.top_p, |v| v as f32);
    let top_k = ranged(SamplingField::TopK, f.top_k.map(|k| k as f64))?.map_or(defaults.top_k, |v| v as i32);
    let min_p = ranged(SamplingField::MinP, f.min_p)?.map_or(defaults.min_p, |v| v as f32);
    let seed = match f.seed {
        // llama-server's -1: a random seed.
        Some(-1) => None,
        Some(s) if !(0..=u32::MAX as i64).contains(&s) => {
            return Err(invalid("seed", format!("`seed` must be between 0 and {} (got {s})", u32::MAX)))
        }
        Some(s) => Some(s as u32),
        // The model's or the server's (`--seed`) default.
        None => defaults.seed,
    };
    let presence_penalty =
        ranged(SamplingField::PresencePenalty, f.presence_penalty)?.map_or(defaults.presence_penalty, |v| v as f32);
    let frequency_penalty =
        ranged(SamplingField::FrequencyPenalty, f.frequency_penalty)?.map_or(defaults.frequency_penalty, |v| v as f32);
    let repeat_penalty = ranged(SamplingField::RepeatPenalty, f.repeat_penalty)?.map_or(defaults.repeat_penalty, |v| v as f32);
    let penalty_last_n =
        ranged(SamplingField::RepeatLastN, f.repeat_last_n.map(|n| n as f64))?.map_or(defaults.penalty_last_n, |v| v as i32);
    let (logit_bias, logit_bias_text) = logit_bias(f.logit_bias.unwrap_or(Value::Null), n_vocab)?;
    let max_tokens = match (f.max_tokens, f.n_predict) {
        (Some(m), _) => Some(positive_u32("max_tokens", m)?),
        // llama-server: -1 = the server's default (`--n-predict`, unlimited when unset).
        (None, Some(n)) if n < 0 => model_defaults.max_tokens,
        (None, Some(n)) => Some(positive_u32("n_predict", n)?),
        (None, None) => model_defaults.max_tokens,
    };
    let stop = match f.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(list)) => list,
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(invalid("stop", format!("`stop` may hold at most {MAX_STOP_STRINGS} strings (got {})", stop.len())));
    }
    let include_usage = f.stream_options.map(|o| o.include_usage).unwrap_or(false);
    Ok(ValidSampling {
        params: SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p,
            seed,
            presence_penalty,
            frequency_penalty,
            repeat_penalty,
            penalty_last_n,
            logit_bias,
            typical_p: ranged(SamplingField::TypicalP, f.typical_p)?.map_or(defaults.typical_p, |v| v as f32),
            min_keep: ranged(SamplingField::MinKeep, f.min_keep)?.map_or(defaults.min_keep, |v| v as u32),
            mirostat: ranged(SamplingField::Mirostat, f.mirostat)?.map_or(defaults.mirostat, |v| v as u8),
            mirostat_tau: ranged(SamplingField::MirostatTau, f.mirostat_tau)?.map_or(defaults.mirostat_tau, |v| v as f32),
            mirostat_eta: ranged(SamplingField::MirostatEta, f.mirostat_eta)?.map_or(defaults.mirostat_eta, |v| v as f32),
            dry_multiplier: ranged(SamplingField::DryMultiplier, f.dry_multiplier)?.map_or(defaults.dry_multiplier, |v| v as f32),
            dry_base: ranged(SamplingField::DryBase, f.dry_base)?.map_or(defaults.dry_base, |v| v as f32),
            dry_allowed_length: ranged(SamplingField::DryAllowedLength, f.dry_allowed_length)?
                .map_or(defaults.dry_allowed_length, |v| v as i32),
            dry_penalty_last_n: ranged(SamplingField::DryPenaltyLastN, f.dry_penalty_last_n)?
                .map_or(defaults.dry_penalty_last_n, |v| v as i32),
            dry_sequence_breakers: sequence_breakers(f.dry_sequence_breakers)?.unwrap_or_else(|| defaults.dry_sequence_breakers.clone()),
            xtc_probability: ranged(SamplingField::XtcProbability, f.xtc_probability)?.map_or(defaults.xtc_probability, |v| v as f32),
            xtc_threshold: ranged(SamplingField::XtcThreshold, f.xtc_threshold)?.map_or(defaults.xtc_threshold, |v| v as f32),
            ignore_eos: f.ignore_eos.unwrap_or(defaults.ignore_eos),
            grammar: constraint(f.grammar, f.json_schema, model_defaults.json_schema_engine)?,
        },
        max_tokens,
        stop,
        stream: f.stream,
        include_usage,
        grammar_field: if has_schema { "json_schema" } else { "grammar" },
        logprobs: None,
        keep_special: Vec::new(),
        logit_bias_text,
        cache_prompt: f.cache_prompt.unwrap_or(true),
        post_sampling_probs: f.post_sampling_probs.unwrap_or(false),
        return_progress: f.return_progress.unwrap_or(false),
        timings_per_token: f.timings_per_token.unwrap_or(false),
        speculative,
        n: match f.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as u32,
            Some(n) => return Err(invalid("n", format!("`n` must be between 1 and {MAX_CHOICES} (got {n})"))),
        },
    })
}

/// Chat's `logprobs` (a boolean) and `top_logprobs` (0..=20, only with it).
fn chat_logprobs(f: &SamplingFields) -> Result<Option<u32>, ApiError> {
    let on = match &f.logprobs {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("logprobs", "`logprobs` must be true or false")),
    };
    match f.top_logprobs {
        Some(n) if !(0..=20).contains(&n) => Err(invalid("top_logprobs", format!("`top_logprobs` must be between 0 and 20 (got {n})"))),
        Some(n) if n > 0 && !on => Err(invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`")),
        top => Ok(on.then_some(top.unwrap_or(0) as u32)),
    }
}

/// Completions' `logprobs`: how many alternatives per token (0..=5); absent
/// or null: none at all.
fn completion_logprobs(f: &SamplingFields) -> Result<Option<u32>, ApiError> {
    match &f.logprobs {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= 5 => Ok(Some(n as u32)),
            _ => Err(invalid("logprobs", format!("`logprobs` must be an integer between 0 and 5 (got {v})"))),
        },
    }
}

/// llama-server's `n_probs` (0..=20): log-probabilities with that many
/// alternatives, as `logprobs` asks on the OpenAI endpoints; one of the two.
fn with_n_probs(logprobs: Option<u32>, f: &SamplingFields) -> Result<Option<u32>, ApiError> {
    match f.n_probs {
        None | Some(0) => Ok(logprobs),
        Some(n) if !(0..=20).contains(&n) => Err(invalid("n_probs", format!("`n_probs` must be between 0 and 20 (got {n})"))),
        Some(_) if logprobs.is_some() => Err(invalid("n_probs", "give `logprobs` or `n_probs`, not both")),
        Some(n) => Ok(Some(n as u32)),
    }
}

/// llama-server's constraint fields: `grammar` (GBNF, root rule `root`; or
/// llguidance's text after `%llguidance`, with that feature) or
/// `json_schema` (turned into the engine's grammar here, so a bad schema is a
/// 400 before any model loads). A grammar is parsed against the vocabulary
/// once the model is loaded (`Engine::check_grammar`).
fn constraint(grammar: Option<String>, schema: Option<Value>, engine: JsonSchemaEngine) -> Result<Option<String>, ApiError> {
    match (grammar, schema) {
        (Some(_), Some(_)) => Err(invalid("json_schema", "give `grammar` or `json_schema`, not both")),
        (Some(g), None) if g.trim().is_empty() => Ok(None),
        (Some(g), None) => Ok(Some(g)),
        (None, Some(schema)) => schema_grammar("json_schema", &schema, engine).map(Some),
        (None, None) => Ok(None),
    }
}

/// OpenAI's `response_format`: `text`, `json_object` (any JSON object) or
/// `json_schema` (`{"json_schema": {"name", "schema", "strict"}}`), all
/// enforced while sampling.
fn response_format(format: &Value, engine: JsonSchemaEngine) -> Result<Option<String>, ApiError> {
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => schema_grammar("response_format", &serde_json::json!({"type": "object"}), engine).map(Some),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| invalid("response_format.json_schema.schema", "`response_format.json_schema.schema` is required"))?;
            schema_grammar("response_format.json_schema.schema", schema, engine).map(Some)
        }
        Some(other) => Err(invalid(
            "response_format.type",
            format!("response_format type `{other}` is not one of `text`, `json_object`, `json_schema`"),
        )),
        None => Err(invalid("response_format.type", "`response_format.type` is required")),
    }
}

/// A JSON schema as the grammar of the model's JSON-schema engine.
fn schema_grammar(field: &str, schema: &Value, engine: JsonSchemaEngine) -> Result<String, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(invalid(field, format!("`{field}` must be a JSON schema object")));
    }
    let grammar = match engine {
        JsonSchemaEngine::Llama => crate::engine::json_schema_grammar(schema),
        JsonSchemaEngine::Llguidance => crate::engine::json_schema_lark(schema),
    };
    grammar.map_err(|e| invalid(field, format!("`{field}` cannot be turned into a grammar: {e}")))
}

fn sequence_breakers(list: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    match list {
        Some(l) if l.iter().any(|s| s.is_empty() || s.contains('\0')) => Err(invalid(
            "dry_sequence_breakers",
            "`dry_sequence_breakers` must hold non-empty strings without NUL",
        )),
        other => Ok(other),
    }
}

/// A value checked against the sampling range table, or `None` if absent.
fn ranged(field: SamplingField, value: Option<f64>) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) => field.check(v).map(|()| Some(v)).map_err(|rule| {
            let name = field.name();
            invalid(name, format!("`{name}` {rule} (got {v})"))
        }),
        None => Ok(None),
    }
}

fn positive_u32(name: &str, value: i64) -> Result<u32, ApiError> {
    if (1..=u32::MAX as i64).contains(&value) {
        Ok(value as u32)
    } else {
        Err(invalid(name, format!("`{name}` must be at least 1 (got {value})")))
    }
}

/// `logit_bias` in OpenAI's form (`{"token id": bias}`) and llama-server's
/// (keys that are text, a list of `[token id or text, bias]` pairs, `false`
/// for a bias that bans the token): biases by token id, and by text (each
/// of the text's tokens, resolved once the model is loaded).
pub(super) fn logit_bias(value: Value, n_vocab: u32) -> Result<(Vec<(TokenId, f32)>, Vec<(String, f32)>), ApiError> {
    let entries: Vec<(Value, Value)> = match value {
        Value::Null => Vec::new(),
        Value::Object(map) => map.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, pair)| match pair {
                Value::Array(p) if p.len() == 2 => Ok((p[0].clone(), p[1].clone())),
                _ => Err(invalid(format!("logit_bias[{i}]"), "`logit_bias` list entries are [token id or text, bias] pairs")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("logit_bias", "`logit_bias` must be an object of token ids to biases, or a list of [token, bias] pairs")),
    };
    let (mut by_id, mut by_text) = (Vec::new(), Vec::new());
    for (key, bias) in entries {
        let name = match &key {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let bias = match bias {
            Value::Bool(false) => f32::NEG_INFINITY,
            Value::Number(n) if n.as_f64().is_some_and(|b| (-100.0..=100.0).contains(&b)) => n.as_f64().unwrap_or_default() as f32,
            other => return Err(invalid("logit_bias", format!("`logit_bias` for `{name}` must be between -100 and 100, or false to ban it (got {other})"))),
        };
        let id = match &key {
            Value::Number(n) => Some(n.as_u64().ok_or_else(|| invalid("logit_bias", format!("`logit_bias` key `{name}` is not a token id")))?),
            Value::String(s) => s.parse::<u64>().ok(),
            _ => return Err(invalid("logit_bias", format!("`logit_bias` key `{name}` must be a token id or a text"))),
        };
        match id {
            Some(id) if id < n_vocab as u64 => by_id.push((id as TokenId, bias)),
            Some(_) => return Err(invalid("logit_bias", format!("`logit_bias` key `{name}` is not a token id below {n_vocab}"))),
            None => by_text.push((name, bias)),
        }
    }
    Ok((by_id, by_text))
}

/// The guard once the model is loaded: `logit_bias` ids against the real
/// vocabulary (validation ran against the GGUF header's, which a model with an
/// unreadable header does not have; an out-of-range id would crash llama.cpp),
/// and a grammar against the model's tokens (the field it came from is named).
/// The grammar is checked on a blocking thread: the first llguidance grammar
/// of a model builds its token trie (1.5 s for a 262k vocabulary).
pub async fn against_model(sampling: &mut ValidSampling, engine: &std::sync::Arc<dyn crate::engine::Engine>) -> Result<(), ApiError> {
    for (text, bias) in std::mem::take(&mut sampling.logit_bias_text) {
        let tokens = engine.tokenize_with(&text, false, false);
        sampling.params.logit_bias.extend(tokens.into_iter().map(|t| (t, bias)));
    }
    let n_vocab = engine.info().n_vocab;
    if let Some((t, _)) = sampling.params.logit_bias.iter().find(|(t, _)| *t >= n_vocab) {
        return Err(invalid("logit_bias", format!("`logit_bias` key `{t}` is not a token id below {n_vocab}")));
    }
    let Some(grammar) = sampling.params.grammar.clone() else { return Ok(()) };
    let engine = engine.clone();
    let checked = tokio::task::spawn_blocking(move || engine.check_grammar(&grammar))
        .await
        .unwrap_or_else(|e| Err(format!("the grammar check failed: {e}")));
    checked.map_err(|e| invalid(sampling.grammar_field, format!("`{}`: {e}", sampling.grammar_field)))
}

/// Token ids from a client (`/detokenize`), checked against the vocabulary:
/// an out-of-range id would crash llama.cpp.
pub fn token_ids<T: Copy + Into<i64>>(field: &str, tokens: &[T], n_vocab: u32) -> Result<Vec<TokenId>, ApiError> {
    tokens.iter().enumerate().map(|(i, &t)| token_id(&format!("{field}[{i}]"), t.into(), n_vocab)).collect()
}

/// One token id, checked as `token_ids` checks each; `at` names it.
pub fn token_id(at: &str, t: i64, n_vocab: u32) -> Result<TokenId, ApiError> {
    match (0..n_vocab as i64).contains(&t) {
        true => Ok(t as TokenId),
        false => Err(invalid(at, format!("token id {t} is outside the vocabulary (0..{n_vocab})"))),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
