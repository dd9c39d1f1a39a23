//! Embeddings: `POST /v1/embeddings` (OpenAI) and llama-server's
//! `POST /embedding` and `/embeddings`; Ollama's `/api/embed` shares the
//! core here (`ollama/embed.rs`). Requests are checked without the model,
//! then go through the scheduler like generations (an embedding on a model
//! not loaded is a load or a swap), are tokenized off the runtime and
//! computed on the model's worker thread, which batches a request's inputs.
//! Vectors have unit Euclidean length (see `engine::embed`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{invalid, ApiError};
use super::extract::ApiJson;
use super::openai::WireRequest;
use super::reqlog::RequestLog;
use super::AppState;
use crate::engine::embed::EmbedError;
use crate::engine::{TokenId, Usage};
use crate::scheduler::ModelView;
use crate::types::Pooling;

/// Inputs one request may hold, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub input: Value,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    /// Accepted and unused, as OpenAI's end-user id is.
    #[allow(dead_code)]
    pub user: Option<String>,
}

/// llama-server's `POST /embedding`: `content` (or `input`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeEmbeddingRequest {
    pub content: Option<Value>,
    pub input: Option<Value>,
    pub model: Option<String>,
    /// llama-server's normalisation: only 2 (Euclidean, its default) here.
    pub embd_normalize: Option<i64>,
    /// Checked as llama-server checks it; its list answer is floats either way.
    pub encoding_format: Option<String>,
}

impl WireRequest for EmbeddingRequest {}
impl WireRequest for NativeEmbeddingRequest {}

/// What to embed, as the client gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Texts(Vec<String>),
    /// Token ids, checked against the GGUF header's vocabulary.
    Tokens(Vec<Vec<TokenId>>),
}

/// How a request wants its embeddings computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedOptions {
    /// Must equal the model's vector length (we do not truncate vectors).
    pub dimensions: Option<u32>,
    /// Cut an input longer than an embedding input may be (Ollama's
    /// `truncate`) instead of refusing it.
    pub truncate: bool,
    /// The request field holding the inputs, for errors.
    pub field: &'static str,
}

/// A request's vectors, in input order, and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    /// Floats in one token's vector: with pooling none each of `vectors`
    /// holds its input's token vectors one after another.
    pub n_embd: usize,
    /// Time spent waiting for the model when it was not loaded (Ollama's
    /// `load_duration`); zero when it was.
    pub load: std::time::Duration,
}

/// `input`: a string, a list of strings, a list of token ids, or a list of
/// token-id lists (not a mix); none empty; at most [`MAX_INPUTS`].
pub fn parse_inputs(field: &str, value: &Value, n_vocab: u32) -> Result<Inputs, ApiError> {
    let shape = || {
        invalid(field, format!("`{field}` must be a string, a list of strings, a list of token ids, or a list of token-id lists"))
    };
    let empty = |what: String| invalid(field, format!("`{field}` must not be empty ({what} is)"));
    let ids = |at: String, list: &[Value]| -> Result<Vec<TokenId>, ApiError> {
        let ints: Vec<i64> = list.iter().map(Value::as_i64).collect::<Option<_>>().ok_or_else(shape)?;
        super::validate::token_ids(&at, &ints, n_vocab)
    };
    let items = match value {
        Value::String(s) if s.is_empty() => return Err(empty("the string".into())),
        Value::String(s) => return Ok(Inputs::Texts(vec![s.clone()])),
        Value::Array(items) => items,
        _ => return Err(shape()),
    };
    if items.is_empty() {
        return Err(empty("the list".into()));
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid(field, format!("`{field}` holds {} inputs; at most {MAX_INPUTS} are allowed", items.len())));
    }
    if items.iter().all(Value::is_string) {
        let texts: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        if let Some(i) = texts.iter().position(String::is_empty) {
            return Err(empty(format!("`{field}[{i}]`")));
        }
        return Ok(Inputs::Texts(texts));
    }
    if items.iter().all(Value::is_number) {
        return Ok(Inputs::Tokens(vec![ids(field.to_string(), items)?]));
    }
    if items.iter().all(Value::is_array) {
        let mut lists = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let list = item.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.is_empty() {
                return Err(empty(format!("`{field}[{i}]`")));
            }
            lists.push(ids(format!("{field}[{i}]"), list)?);
        }
        return Ok(Inputs::Tokens(lists));
    }
    Err(shape())
}

/// `encoding_format`: `float` (the default) or `base64`; true for base64.
pub fn parse_encoding(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(invalid("encoding_format", format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}"))),
    }
}

/// `dimensions` is accepted only as the model's own vector length: this
/// server does not shorten vectors.
pub fn check_dimensions(dimensions: Option<u32>, n_embd: u32) -> Result<(), ApiError> {
    match dimensions {
        Some(d) if d != n_embd => Err(invalid(
            "dimensions",
            format!("`dimensions` is {d}, but this model's embeddings have {n_embd} dimensions and this server does not shorten them; leave it out or set it to {n_embd}"),
        )),
        _ => Ok(()),
    }
}

/// Every input non-empty and at most `limit` tokens (cut to it with
/// `truncate`). `closing`: the special token the tokenizer appends (BERT's
/// SEP, the EOS of last-token pooling); a cut input keeps it at its end.
pub fn fit_inputs(
    mut inputs: Vec<Vec<TokenId>>,
    limit: u32,
    truncate: bool,
    closing: Option<TokenId>,
    field: &str,
) -> Result<Vec<Vec<TokenId>>, ApiError> {
    let limit = limit as usize;
    for (i, input) in inputs.iter_mut().enumerate() {
        if input.is_empty() {
            return Err(invalid(field, format!("`{field}` entry {i} has no tokens")));
        }
        if input.len() > limit {
            if !truncate {
                return Err(ApiError::ContextLengthExceeded {
                    n_prompt_tokens: Some(input.len()),
                    n_ctx: None,
                    message: format!(
                        "`{field}` entry {i} has {} tokens but an embedding input holds at most {limit} (the micro-batch, --ubatch-size, capped at the context); shorten it",
                        input.len()
                    ),
                    param: field.to_string(),
                });
            }
            match closing.filter(|c| input.last() == Some(c) && limit > 1) {
                Some(c) => {
                    input.truncate(limit - 1);
                    input.push(c);
                }
                None => input.truncate(limit),
            }
        }
    }
    Ok(inputs)
}

/// Chat and text completions refuse a model configured for embeddings only.
pub fn refuse_generation(view: &ModelView) -> Result<(), ApiError> {
    if view.spec.knobs.embeddings_only {
        return Err(invalid("model", format!("model `{}` serves embeddings only (use /v1/embeddings)", view.spec.id)));
    }
    Ok(())
}

/// The model is configured for a vector per token (`--pooling none`).
fn per_token(view: &ModelView) -> bool {
    view.spec.knobs.pooling == Some(Pooling::None)
}

/// Endpoints that answer one vector per input refuse a model with pooling
/// `none` (a vector per token), as llama-server's `/v1/embeddings` does.
pub fn one_vector_per_input(view: &ModelView, endpoint: &str) -> Result<(), ApiError> {
    if per_token(view) {
        return Err(invalid(
            "model",
            format!("model `{}` has pooling `none` (a vector per token), which {endpoint} cannot answer: use /embeddings, or another --pooling", view.spec.id),
        ));
    }
    Ok(())
}

/// On the acquired model: tokenize (off the runtime), check, embed.
pub async fn run(state: &AppState, view: &ModelView, inputs: Inputs, options: EmbedOptions, log: &RequestLog) -> Result<Embedded, ApiError> {
    // A loaded model's length is known now: a wrong `dimensions` costs no wait.
    // (The snapshot's model is not held across the wait: it may be unloaded.)
    let was_loaded = match view.loaded() {
        Some(loaded) => check_dimensions(options.dimensions, loaded.engine.info().n_embd).map(|()| true)?,
        None => false,
    };
    let waited = std::time::Instant::now();
    let permit = state.scheduler.acquire(view.index).await?;
    let load = if was_loaded { std::time::Duration::ZERO } else { waited.elapsed() };
    let model = permit.model.clone();
    let info = model.engine.info();
    check_dimensions(options.dimensions, info.n_embd)?;
    let tokens = match inputs {
        Inputs::Texts(texts) => {
            let tokenizer = model.clone();
            // The vocabulary's own special tokens (BOS, or CLS/SEP), as llama-server adds them.
            let tokens = super::cpu::run(move || texts.iter().map(|t| tokenizer.engine.tokenize(t, true)).collect::<Vec<_>>()).await?;
            (tokens, model.closing_token)
        }
        // Checked against the header's vocabulary; this is the loaded model's.
        Inputs::Tokens(lists) => (
            lists
                .iter()
                .enumerate()
                .map(|(i, ids)| super::validate::token_ids(&format!("{}[{i}]", options.field), ids, info.n_vocab))
                .collect::<Result<_, _>>()?,
            None,
        ),
    };
    let (tokens, closing) = tokens;
    let tokens = fit_inputs(tokens, info.n_ctx_embed, options.truncate, closing, options.field)?;
    let prompt_tokens = tokens.iter().map(Vec::len).sum::<usize>() as u32;
    let answer = model.embed(tokens)?;
    let vectors = answer
        .await
        .map_err(|_| ApiError::Internal("the model worker dropped the embedding request".into()))?
        .map_err(|e| match e {
            EmbedError::Failed(message) => ApiError::Internal(message),
            EmbedError::Cancelled(message) => ApiError::Unavailable(message),
        })?;
    drop(permit);
    log.done(&Usage { prompt_tokens, ..Usage::default() });
    Ok(Embedded { vectors, prompt_tokens, n_embd: info.n_embd as usize, load })
}

/// Little-endian f32 bytes in standard base64 with padding, as OpenAI
/// sends `encoding_format: "base64"`.
pub fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[derive(Debug, Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`.
pub async fn openai(State(state): State<AppState>, Extension(log): Extension<RequestLog>, ApiJson(req): ApiJson<EmbeddingRequest>) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    one_vector_per_input(view, "/v1/embeddings")?;
    let inputs = parse_inputs("input", &req.input, view.n_vocab.unwrap_or(u32::MAX))?;
    let base64 = parse_encoding(req.encoding_format.as_deref())?;
    let options = EmbedOptions { dimensions: req.dimensions, truncate: false, field: "input" };
    let out = run(&state, view, inputs, options, &log).await?;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 { Vector::Base64(base64_f32(&v)) } else { Vector::Floats(v) },
        })
        .collect();
    let usage = EmbeddingUsage { prompt_tokens: out.prompt_tokens, total_tokens: out.prompt_tokens };
    Ok(Json(EmbeddingList { object: "list", data, model: view.spec.id.clone(), usage }).into_response())
}

/// llama-server's `POST /embedding` (and `/embeddings`): a list of
/// `{"index", "embedding": [vector]}`, the vector inside a list as
/// llama-server nests it (one per token with pooling none, one pooled here).
pub async fn native(State(state): State<AppState>, Extension(log): Extension<RequestLog>, ApiJson(req): ApiJson<NativeEmbeddingRequest>) -> Result<Response, ApiError> {
    if req.embd_normalize.is_some_and(|n| n != 2) {
        return Err(invalid("embd_normalize", "`embd_normalize` can only be 2 (Euclidean): vectors have unit length"));
    }
    parse_encoding(req.encoding_format.as_deref())?;
    let (field, value) = match (&req.input, &req.content) {
        (Some(input), _) => ("input", input),
        (None, Some(content)) => ("content", content),
        (None, None) => return Err(invalid("content", "`content` (or `input`) is required")),
    };
    let snapshot = state.scheduler.snapshot();
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    let inputs = parse_inputs(field, value, view.n_vocab.unwrap_or(u32::MAX))?;
    let by_token = per_token(view);
    let out = run(&state, view, inputs, EmbedOptions { dimensions: None, truncate: false, field }, &log).await?;
    let n_embd = out.n_embd.max(1);
    let body: Vec<Value> = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let rows: Vec<&[f32]> = if by_token { v.chunks(n_embd).collect() } else { vec![&v] };
            serde_json::json!({"index": index, "embedding": rows})
        })
        .collect();
    Ok(Json(body).into_response())
}

#[cfg(test)]
#[path = "embeddings_tests.rs"]
mod tests;
