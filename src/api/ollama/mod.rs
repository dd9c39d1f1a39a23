//! Ollama's API (`/api/*`) for the clients that only speak it. Requests go
//! through the same model names, validation, scheduler and generation as the
//! OpenAI routes; answers take Ollama's shapes: NDJSON streams (streaming is
//! Ollama's default), `{"error": "..."}` bodies, `done_reason`, counts.
//!
//! Options: the sampling ones map onto ours (`num_predict` is `max_tokens`;
//! a negative one means "until the context is full"); the ones that only
//! size resources (`num_ctx`, `num_gpu`, `num_thread`, ...) are set per model
//! on the server and ignored here; any other (`tfs_z`, `penalize_newline`, ...)
//! would change the output and is refused with 400 naming it, as are
//! `think` on `/api/generate`, images, `context` and a per-request
//! `template`. `suffix` fills in the middle with the model's FIM tokens, on
//! the raw prompt. `/api/chat` takes `tools` and `think`. An empty `/api/generate` prompt loads the model
//! (`keep_alive: 0` unloads it), as Ollama does. `format` (`"json"` or a JSON
//! schema) is enforced while sampling, as on the OpenAI routes.

use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::error::{invalid, ApiError};
use crate::api::extract::parse_json;
use crate::api::generate::{collect, pump, start, Framing, Started};
use crate::api::openai::{ChatCompletionRequest, CompletionRequest, WireRequest};
use crate::api::reqlog::RequestLog;
use crate::api::{validate, AppState};

pub mod embed;
use crate::engine::{FinishReason, Usage};
use crate::scheduler::{ModelView, Snapshot};
use crate::template::rfc3339_utc;

/// Ollama option -> our request field.
const SAMPLING_OPTIONS: &[(&str, &str)] = &[
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("stop", "stop"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("repeat_penalty", "repeat_penalty"),
    ("repeat_last_n", "repeat_last_n"),
    ("num_predict", "max_tokens"),
    ("typical_p", "typical_p"),
    ("mirostat", "mirostat"),
    ("mirostat_tau", "mirostat_tau"),
    ("mirostat_eta", "mirostat_eta"),
];

/// Options that size resources; the server sets those per model.
const RESOURCE_OPTIONS: &[&str] =
    &["num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock", "numa", "low_vram", "vocab_only", "f16_kv", "num_keep"];

/// An error in Ollama's shape: `{"error": "message"}` with our status.
pub(super) struct OllamaError(pub(super) ApiError);

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut message = self.0.to_string();
        if let Some(param) = self.0.body().error.param {
            message = format!("{message} (field `{}`)", ollama_param(&param));
        }
        (self.0.status(), Json(json!({ "error": message }))).into_response()
    }
}

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

/// Our field name back to Ollama's (`max_tokens` is `options.num_predict`).
fn ollama_param(param: &str) -> String {
    if param == "json_schema" {
        return "format".to_string();
    }
    match SAMPLING_OPTIONS.iter().find(|(_, ours)| *ours == param) {
        Some((theirs, _)) => format!("options.{theirs}"),
        None => param.to_string(),
    }
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<Map<String, Value>>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    tools: Option<Value>,
    think: Option<Value>,
    #[allow(dead_code)]
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GenerateBody {
    model: String,
    prompt: Option<String>,
    system: Option<String>,
    raw: Option<bool>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    suffix: Option<String>,
    images: Option<Vec<Value>>,
    template: Option<String>,
    context: Option<Value>,
    think: Option<Value>,
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ShowBody {
    model: Option<String>,
    /// The older name of `model`.
    name: Option<String>,
}

impl WireRequest for ChatBody {}
impl WireRequest for GenerateBody {}
impl WireRequest for ShowBody {}

/// Ollama names carry a tag (`gemma:latest`); ours answer to the bare name.
pub(super) fn resolve<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a ModelView, ApiError> {
    let bare = name.strip_suffix(":latest").unwrap_or(name);
    Ok(snapshot.resolve(Some(bare))?)
}

/// The start of the OpenAI body built from an Ollama request: its `format`
/// as the JSON schema the output is held to (`"json"`: any JSON object), in
/// llama-server's `json_schema` field; and `think` for `/api/chat` (`chat`):
/// `true` is the default (a thinking model's reasoning comes back in
/// `message.thinking`), `false` sets the template's `enable_thinking` to
/// false, `"low"`/`"medium"`/`"high"` its `reasoning_effort` (gpt-oss).
/// `/api/generate` refuses `think`.
fn output_fields(format: &Option<Value>, think: &Option<Value>, chat: bool) -> Result<Map<String, Value>, ApiError> {
    let schema = match format {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s == "json" => Some(json!({"type": "object"})),
        Some(schema @ Value::Object(_)) => Some(schema.clone()),
        Some(_) => return Err(invalid("format", "`format` must be \"json\" or a JSON schema object")),
    };
    let mut fields: Map<String, Value> = schema.map(|schema| ("json_schema".to_string(), schema)).into_iter().collect();
    let kwargs = match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) if !chat => None,
        _ if !chat => return Err(invalid("think", "`think` is taken by /api/chat only")),
        None | Some(Value::Null) | Some(Value::Bool(true)) => None,
        Some(Value::Bool(false)) => Some(json!({"enable_thinking": false})),
        Some(Value::String(level)) if ["low", "medium", "high"].contains(&level.as_str()) => Some(json!({"reasoning_effort": level})),
        Some(_) => return Err(invalid("think", "`think` must be true, false, \"low\", \"medium\" or \"high\"")),
    };
    if let Some(kwargs) = kwargs {
        fields.insert("chat_template_kwargs".into(), kwargs);
    }
    Ok(fields)
}

/// An OpenAI request body from Ollama's model, stream flag and options.
fn openai_body(model: &str, stream: bool, options: Option<&Map<String, Value>>, mut body: Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    body.insert("model".into(), json!(model.strip_suffix(":latest").unwrap_or(model)));
    body.insert("stream".into(), json!(stream));
    for (key, value) in options.into_iter().flatten() {
        if let Some((_, ours)) = SAMPLING_OPTIONS.iter().find(|(theirs, _)| theirs == key) {
            // num_predict -1 (no limit) and -2 (fill the context): our default.
            let unbounded = *ours == "max_tokens" && value.as_i64().is_some_and(|n| n < 0);
            if !unbounded && !value.is_null() {
                body.insert((*ours).to_string(), value.clone());
            }
        } else if !RESOURCE_OPTIONS.contains(&key.as_str()) {
            return Err(invalid(format!("options.{key}"), format!("option `{key}` is not supported (it would change the output)")));
        }
    }
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now())
}

/// What Ollama's final line and non-streamed answer carry besides the text.
fn closing(model: &str, finish: FinishReason, usage: Usage, started: Instant) -> Map<String, Value> {
    let reason = match finish {
        FinishReason::Length => "length",
        _ => "stop",
    };
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("created_at".into(), json!(now_rfc3339()));
    out.insert("done".into(), json!(true));
    out.insert("done_reason".into(), json!(reason));
    out.insert("total_duration".into(), json!(started.elapsed().as_nanos() as u64));
    out.insert("prompt_eval_count".into(), json!(usage.prompt_tokens));
    out.insert("eval_count".into(), json!(usage.completion_tokens));
    out
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn ndjson_framing() -> Framing {
    Framing { error: |e| line(&json!({ "error": e.to_string() })), end: None }
}

/// Where an answer's text goes: `/api/chat` puts it in an assistant
/// `message`, `/api/generate` in `response`.
#[derive(Clone, Copy)]
enum Kind {
    /// How the answer is parsed for tool calls and thinking.
    Chat(crate::api::chat::Output),
    Generate,
}

impl Kind {
    fn text(self, text: &str) -> (&'static str, Value) {
        match self {
            Kind::Chat(_) => ("message", json!({"role": "assistant", "content": text})),
            Kind::Generate => ("response", json!(text)),
        }
    }
}

/// An assistant message in Ollama's shape from parsed output: `content`,
/// `thinking`, and `tool_calls` with the arguments as an object.
fn parsed_message(delta: crate::tools::StreamDelta) -> Value {
    let mut message = json!({"role": "assistant", "content": delta.content});
    if !delta.reasoning.is_empty() {
        message["thinking"] = json!(delta.reasoning);
    }
    if !delta.calls.is_empty() {
        let calls: Vec<Value> = delta
            .calls
            .iter()
            .map(|(_, c)| {
                let arguments = serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!(c.arguments));
                json!({"function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
        message["tool_calls"] = json!(calls);
    }
    message
}

/// Answers a started generation: one object (`stream` false) or NDJSON,
/// one line per piece and then the closing line.
async fn answer(
    kind: Kind,
    started: Started,
    permit: crate::scheduler::Permit,
    model: String,
    stream: bool,
    began: Instant,
) -> Result<Response, OllamaError> {
    let with_text = move |mut object: Map<String, Value>, text: &str| {
        let (key, value) = kind.text(text);
        object.insert(key.into(), value);
        Value::Object(object)
    };
    if !stream {
        let out = collect(started).await?;
        drop(permit);
        let mut body = with_text(closing(&model, out.finish_reason, out.usage, began), &out.text);
        if let Kind::Chat(output) = kind {
            if let Some(parsed) = output.parse(&out.text) {
                let delta = crate::tools::StreamDelta {
                    content: parsed.content,
                    reasoning: parsed.reasoning,
                    calls: parsed.calls.into_iter().enumerate().collect(),
                };
                body["message"] = parsed_message(delta);
            }
        }
        return Ok(Json(body).into_response());
    }
    let (tx, response) = crate::api::sse::channel_response_as("application/x-ndjson");
    tokio::spawn(async move {
        let _permit = permit;
        let name = model.clone();
        let parser = match kind {
            Kind::Chat(output) => output.streaming().map(|p| std::sync::Arc::new(parking_lot::Mutex::new(p))),
            Kind::Generate => None,
        };
        let frame = move |(key, value): (&'static str, Value)| {
            let mut piece = Map::new();
            piece.insert("model".into(), json!(name));
            piece.insert("created_at".into(), json!(now_rfc3339()));
            piece.insert("done".into(), json!(false));
            piece.insert(key.into(), value);
            line(&Value::Object(piece))
        };
        let (for_text, for_finish, frame_at_end) = (parser.clone(), parser, frame.clone());
        let text = move |t: String, _: &[crate::engine::TokenLogprob]| match &for_text {
            // Held back while it may be a call's start: nothing to send yet.
            Some(parser) => {
                let delta = parser.lock().push(&t);
                if delta.is_empty() {
                    return Bytes::new();
                }
                frame(("message", parsed_message(delta)))
            }
            None => frame(kind.text(&t)),
        };
        let finish = move |reason, usage| {
            let mut frames = Vec::new();
            if let Some(parser) = for_finish {
                let delta = parser.lock().finish();
                if !delta.is_empty() {
                    frames.push(frame_at_end(("message", parsed_message(delta))));
                }
            }
            frames.push(line(&with_text(closing(&model, reason, usage, began), "")));
            frames
        };
        pump(&tx, started, text, finish, &ndjson_framing()).await;
    });
    Ok(response)
}

/// Validates an OpenAI chat body built from an Ollama request (`extra`
/// holds its messages and tools), then renders it through the model's
/// template and starts it, as `/v1/chat/completions` does.
async fn start_chat(
    state: &AppState,
    view: &ModelView,
    name: &str,
    stream: bool,
    options: Option<&Map<String, Value>>,
    extra: Map<String, Value>,
    log: RequestLog,
) -> Result<(crate::scheduler::Permit, Started, crate::api::chat::Output), ApiError> {
    let openai: ChatCompletionRequest = parse_json(&openai_body(name, stream, options, extra)?)?;
    let valid = validate::chat(openai, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    let permit = state.scheduler.acquire(view.index).await?;
    let (mut started, output) = crate::api::chat::prepare(&permit, &valid, log).await?;
    Ok((permit, started.remove(0), output))
}

/// `POST /api/chat`.
pub async fn chat(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    chat_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn chat_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, OllamaError> {
    let began = Instant::now();
    let req: ChatBody = parse_json(&body)?;
    let mut extra = output_fields(&req.format, &req.think, true)?;
    for (i, m) in req.messages.iter().enumerate() {
        if m.get("images").is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!("messages[{i}].images"), "images are not supported: this server serves text models").into());
        }
    }
    let stream = req.stream.unwrap_or(true);
    extra.insert("messages".into(), Value::Array(req.messages.into_iter().map(Value::Object).collect()));
    if let Some(tools) = req.tools.filter(|t| !t.is_null()) {
        extra.insert("tools".into(), tools);
    }
    let snapshot = state.scheduler.snapshot();
    let view = resolve(&snapshot, &req.model)?;
    log.model(&view.spec.id);
    crate::api::embeddings::refuse_generation(view)?;
    let (permit, started, output) = start_chat(&state, view, &req.model, stream, req.options.as_ref(), extra, log).await?;
    answer(Kind::Chat(output), started, permit, view.spec.id.clone(), stream, began).await
}

/// `POST /api/generate`.
pub async fn generate(State(state): State<AppState>, Extension(log): Extension<RequestLog>, body: Bytes) -> Response {
    generate_inner(state, log, body).await.unwrap_or_else(|e| e.into_response())
}

async fn generate_inner(state: AppState, log: RequestLog, body: Bytes) -> Result<Response, OllamaError> {
    let began = Instant::now();
    let req: GenerateBody = parse_json(&body)?;
    let mut extra = output_fields(&req.format, &req.think, false)?;
    let unsupported = [
        ("images", req.images.as_ref().is_some_and(|i| !i.is_empty()), "images are not supported: this server serves text models"),
        ("context", req.context.as_ref().is_some_and(|c| !c.is_null()), "`context` is not supported; send the conversation to /api/chat"),
        ("template", req.template.as_ref().is_some_and(|t| !t.is_empty()), "a per-request `template` is not supported; set chat_template_file for the model"),
    ];
    if let Some((field, _, why)) = unsupported.iter().find(|(_, set, _)| *set) {
        return Err(invalid(*field, *why).into());
    }
    let snapshot = state.scheduler.snapshot();
    let view = resolve(&snapshot, &req.model)?;
    log.model(&view.spec.id);
    let (index, id) = (view.index, view.spec.id.clone());
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        // Ollama's way to load (or, with keep_alive 0, unload) a model.
        let unload = req.keep_alive.as_ref().is_some_and(|k| k == 0 || k == "0" || k == "0s");
        let reason = if unload {
            state.scheduler.unload(index, false).await.map_err(ApiError::from)?;
            "unload"
        } else {
            state.scheduler.load(index).await.map_err(ApiError::from)?;
            "load"
        };
        return Ok(Json(json!({"model": id, "created_at": now_rfc3339(), "response": "", "done": true, "done_reason": reason})).into_response());
    }
    crate::api::embeddings::refuse_generation(view)?;
    let stream = req.stream.unwrap_or(true);
    // `suffix`: fill in the middle, on the raw prompt (the model's FIM
    // tokens; a model without them is a 400 naming `suffix`).
    let suffix = req.suffix.filter(|s| !s.is_empty());
    let (permit, started) = if req.raw.unwrap_or(false) || suffix.is_some() {
        extra.insert("prompt".into(), json!(prompt));
        if let Some(suffix) = suffix {
            extra.insert("suffix".into(), json!(suffix));
        }
        let openai: CompletionRequest = parse_json(&openai_body(&req.model, stream, req.options.as_ref(), extra)?)?;
        let mut valid = validate::completion(openai, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
        let suffix = valid.suffix.take();
        let mut one = valid.one_prompt("/api/generate")?;
        let permit = state.scheduler.acquire(index).await.map_err(ApiError::from)?;
        validate::against_model(&mut valid.sampling, &permit.model.engine).await?;
        if let Some(suffix) = &suffix {
            one = crate::api::completions::fill_in_the_middle(&permit.model, &id, one, suffix).await?;
        }
        let started = start(&permit.model, one, &valid.sampling, "prompt", log).await?;
        (permit, started)
    } else {
        // Not raw: the prompt goes through the model's chat template as a
        // user turn (after `system`), as Ollama does.
        let mut messages = Vec::new();
        if let Some(system) = req.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        extra.insert("messages".into(), Value::Array(messages));
        let (permit, started, _) = start_chat(&state, view, &req.model, stream, req.options.as_ref(), extra, log).await?;
        (permit, started)
    };
    answer(Kind::Generate, started, permit, id, stream, began).await
}

/// Ollama's `details` of a model: what we know without loading it.
fn details(view: &ModelView) -> Value {
    let info = view.loaded().map(|m| m.engine.info().clone());
    json!({
        "format": "gguf",
        "family": info.as_ref().and_then(|i| i.architecture.clone()).unwrap_or_default(),
        "parameter_size": info.as_ref().map(|i| format!("{:.1}M", i.n_params as f64 / 1e6)).unwrap_or_default(),
    })
}

fn file_facts(view: &ModelView) -> (u64, String) {
    let meta = std::fs::metadata(&view.spec.path).ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH);
    (meta.map_or(0, |m| m.len()), rfc3339_utc(modified))
}

/// `GET /api/tags`: every registered model (never loads anything).
pub async fn tags(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.scheduler.snapshot();
    let models: Vec<Value> = snapshot
        .active()
        .map(|view| {
            let (size, modified_at) = file_facts(view);
            json!({"name": view.spec.id, "model": view.spec.id, "modified_at": modified_at, "size": size, "details": details(view)})
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/ps`: the loaded models and what they hold.
pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.scheduler.snapshot();
    let models: Vec<Value> = snapshot
        .active()
        .filter(|view| view.loaded().is_some())
        .map(|view| {
            let vram_mib: u64 = view.holding.as_ref().map_or(0, |h| h.gpu_mib.iter().map(|(_, mib)| mib).sum());
            json!({"name": view.spec.id, "model": view.spec.id, "size": view.bytes, "size_vram": vram_mib << 20, "details": details(view)})
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `POST /api/show`: a model's facts, from what is known without loading it.
pub async fn show(State(state): State<AppState>, body: Bytes) -> Response {
    let answer = || -> Result<Value, OllamaError> {
        let req: ShowBody = parse_json(&body)?;
        let name = req.model.or(req.name).ok_or_else(|| invalid("model", "`model` is required"))?;
        let snapshot = state.scheduler.snapshot();
        let view = resolve(&snapshot, &name)?;
        let loaded = view.loaded();
        let mut model_info = Map::new();
        if let Some(info) = loaded.as_ref().map(|m| m.engine.info()) {
            let arch = info.architecture.clone().unwrap_or_default();
            model_info.insert("general.architecture".into(), json!(arch));
            model_info.insert("general.parameter_count".into(), json!(info.n_params));
            model_info.insert(format!("{arch}.context_length"), json!(info.n_ctx_train));
        }
        Ok(json!({
            "modelfile": "",
            "parameters": "",
            "template": loaded.as_ref().map(|m| m.template_source.clone()).unwrap_or_default(),
            "details": details(view),
            "model_info": model_info,
            "capabilities": if view.spec.knobs.embeddings_only { json!(["embedding"]) } else { json!(["completion", "embedding"]) },
        }))
    };
    match answer() {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/version`.
pub async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "version": state.build.version }))
}

