//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Extension;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::generate::{pump, response_id, stream_sse, Started};
use super::openai::*;
use super::reqlog::RequestLog;
use super::tool_calls;
use super::validate::{self, TurnEnd, ValidChat};
use super::{sse, unix_now, AppState};
use crate::engine::{FinishReason, TokenLogprob, Usage};
use crate::scheduler::Permit;
use crate::tools::{OutputSpec, Think};
use serde_json::Value;

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(log): Extension<RequestLog>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    // Everything that needs no loaded model is checked before one is
    // acquired: a bad request never causes a load or a swap.
    let snapshot = state.scheduler.snapshot();
    let (view, valid) = checked(&snapshot, req, &log)?;
    let (index, model_id) = (view.index, view.spec.id.clone());
    let chunks = Chunks::new(&state, model_id.clone(), &valid.sampling, log.clone());
    if state.notify_swaps && valid.sampling.stream && valid.sampling.n == 1 && view.loaded().is_none() {
        return Ok(stream_after_load(state, index, valid, chunks, log));
    }
    let permit = state.scheduler.acquire(index).await?;
    let (mut started, output) = prepare(&permit, &valid, log).await?;
    let n = started.len();

    if !valid.sampling.stream {
        let outs = super::choices::collect_all(started).await?;
        // Debugging only: the prompt is rendered again rather than kept for every request.
        let verbose = match valid.verbose || state.options.verbose {
            true => Some(serde_json::json!({"prompt": render(&permit.model, &valid).await?.1})),
            false => None,
        };
        drop(permit);
        let usages: Vec<Usage> = outs.iter().map(|o| o.usage).collect();
        let choices = outs
            .into_iter()
            .enumerate()
            .map(|(i, out)| {
                let logprobs = chunks.logprobs.then(|| super::logprobs::chat(&out.logprobs));
                let (message, finish_reason) = output.message(out.text, out.finish_reason);
                ChatChoice { index: i as u32, message, logprobs, finish_reason }
            })
            .collect();
        return Ok(Json(ChatCompletion {
            id: chunks.id,
            object: "chat.completion",
            created: chunks.created,
            model: model_id,
            choices,
            timings: (n == 1).then(|| chunks.log.timings(&usages[0])),
            usage: super::choices::total_usage(&usages, n).into(),
            system_fingerprint: chunks.fingerprint,
            verbose,
        })
        .into_response());
    }
    if n == 1 {
        let mut chunks = chunks;
        if valid.sampling.timings_per_token {
            chunks.live = Some(started[0].live.clone());
        }
        let chunks = Arc::new(chunks);
        let prologue = vec![chunks.role()];
        let (text, finish) = chunks.clone().framers(output);
        let mut one = started.remove(0);
        if valid.sampling.return_progress {
            let chunks = chunks.clone();
            one.progress = Some(Box::new(move |p| chunks.progress(p)));
        }
        return Ok(stream_sse(one, permit, prologue, text, finish));
    }
    // Several choices: each its chunks (`index`), the usage once at the end.
    let mut prologue = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    for (i, s) in started.into_iter().enumerate() {
        let choice = Arc::new(chunks.for_choice(i as u32));
        prologue.push(choice.role());
        let (text, finish) = choice.framers(output);
        streams.push((s, text, finish));
    }
    let end = move |usage: Usage| {
        let mut usage_chunk = chunks.chunk(Delta::default(), None);
        usage_chunk.choices.clear();
        usage_chunk.usage = Some(Some(usage.into()));
        if chunks.include_usage { vec![sse::data(&usage_chunk)] } else { Vec::new() }
    };
    Ok(super::choices::stream_many(streams, n, permit, prologue, end))
}

/// llama-server's `POST /chat/completions/input_tokens`: the chat's prompt
/// tokens (template, tools and all) without generating; the model is loaded
/// if it is not.
pub async fn input_tokens(
    State(state): State<AppState>,
    Extension(log): Extension<RequestLog>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let snapshot = state.scheduler.snapshot();
    let (view, valid) = checked(&snapshot, req, &log)?;
    let n = count_tokens(&state, view.index, &valid).await?;
    Ok(Json(serde_json::json!({"input_tokens": n})).into_response())
}

/// The prompt tokens a checked chat renders to (template, tools and all) on
/// its model, loaded if it is not: every protocol's token count.
pub(super) async fn count_tokens(state: &AppState, index: usize, valid: &ValidChat) -> Result<usize, ApiError> {
    let view = state.scheduler.snapshot().models[index].clone();
    let model = state.loaded(&view).await?;
    let (_, prompt, _) = render(&model, valid).await?;
    Ok(super::generate::prompt_tokens(&model, validate::Prompt::Text(prompt), "messages").await?.len())
}

/// A chat body another protocol's request became (Anthropic's Messages,
/// the Responses API), checked as `/v1/chat/completions` checks its own
/// before any model is acquired: the model it names (index and id) and the
/// valid chat.
pub(super) fn validate_translated(state: &AppState, body: serde_json::Map<String, Value>, log: &RequestLog) -> Result<(usize, String, ValidChat), ApiError> {
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let req: ChatCompletionRequest = super::extract::parse_json(&bytes)?;
    let snapshot = state.scheduler.snapshot();
    let (view, valid) = checked(&snapshot, req, log)?;
    Ok((view.index, view.spec.id.clone(), valid))
}

/// A translated request's `model` onto its chat body: absent or null is
/// left out (then the chat path's rule: a server of one model serves it),
/// anything but a non-empty string is a 400 naming `model`.
pub(super) fn translated_model(request: &serde_json::Map<String, Value>, body: &mut serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            body.insert("model".into(), Value::String(m.clone()));
        }
        None | Some(Value::Null) => {}
        _ => return Err(super::error::invalid("model", "`model`: a model name (string) is required")),
    }
    Ok(())
}

/// The model a chat names and the chat checked against it, before any model
/// is acquired: a bad request never causes a load or a swap.
fn checked<'a>(snapshot: &'a crate::scheduler::Snapshot, req: ChatCompletionRequest, log: &RequestLog) -> Result<(&'a crate::scheduler::ModelView, ValidChat), ApiError> {
    let view = snapshot.resolve(req.model.as_deref())?;
    log.model(&view.spec.id);
    super::embeddings::refuse_generation(view)?;
    let valid = validate::chat(req, view.n_vocab.unwrap_or(u32::MAX), &view.spec.defaults())?;
    Ok((view, valid))
}

/// On the acquired model: the token-id guard, the tools' plan, the template,
/// the generation. Rendering and tokenizing run off the runtime
/// (`cpu::run`); a conversation with more messages than the context has
/// tokens is refused before either.
pub(super) async fn prepare(permit: &Permit, valid: &ValidChat, log: RequestLog) -> Result<(Vec<Started>, Output), ApiError> {
    let model = permit.model.clone();
    let info = model.engine.info();
    let n_ctx = info.n_ctx_slot as usize;
    if valid.messages.len() >= n_ctx {
        return Err(super::generate::too_long(&format!("at least {}", valid.messages.len()), n_ctx, "messages"));
    }
    let (plan, prompt, branch) = render(&model, valid).await?;
    let mut sampling = valid.sampling.clone();
    if let Some(grammar) = plan.grammar {
        sampling.params.grammar = Some(grammar);
        sampling.grammar_field = "tool_choice";
    }
    sampling.keep_special = plan.keep_special;
    validate::against_model(&mut sampling, &model.engine).await?;
    // Output held to a grammar from its first token has no thinking block.
    let think = match () {
        _ if !valid.split_reasoning || !model.thinks || sampling.params.grammar.is_some() => Think::Off,
        _ if prompt.trim_end().ends_with("<think>") => Think::Open,
        _ => Think::Tagged,
    };
    // `n` choices: one generation each, seeds one apart when a seed is given.
    let started = super::choices::start_choices(&model, super::validate::Prompt::Text(prompt), branch, &sampling, "messages", &log).await?;
    Ok((started, Output { spec: OutputSpec { tools: plan.format, think, single: plan.single } }))
}

/// The tools' plan and the prompt the template renders for `valid` (and,
/// on a sliding-window model, where the last user message starts), in one
/// hop off the runtime.
pub(super) async fn render(model: &Arc<crate::engine::loaded::LoadedModel>, valid: &ValidChat) -> Result<(tool_calls::Plan, String, Option<String>), ApiError> {
    let constrained = valid.sampling.params.grammar.is_some().then_some(valid.sampling.grammar_field);
    let (mut messages, tools, kwargs) = (valid.messages.clone(), valid.tools.clone(), valid.template_kwargs.clone());
    // A continued message is not rendered as a turn: its text ends the prompt.
    let continued = match valid.end {
        TurnEnd::Continue => messages.pop().and_then(|m| m["content"].as_str().map(str::to_string)),
        TurnEnd::Open | TurnEnd::Closed => None,
    };
    let open = valid.end != TurnEnd::Closed;
    let worker = model.clone();
    let windowed = model.engine.info().n_swa > 0;
    super::cpu::run(move || -> Result<_, ApiError> {
        let mut plan = tool_calls::plan(&worker, &messages, tools.as_ref(), constrained)?;
        let descriptions = tools.as_ref().map(|t| &t.descriptions);
        let messages = std::mem::take(&mut plan.messages);
        let mut prompt = worker.render_chat(&messages, open, descriptions, kwargs.as_ref())?;
        prompt.push_str(continued.as_deref().unwrap_or_default());
        // A sliding-window model keeps a checkpoint where the last user
        // message starts: the next request sharing the conversation so far
        // (a fixed system prompt, an edited last message) resumes there.
        let branch = windowed.then(|| worker.before_last_user_content(&messages, descriptions, kwargs.as_ref(), &prompt).map(str::to_string)).flatten();
        Ok((plan, prompt, branch))
    })
    .await?
}

/// How the model's output becomes a message: as text, or parsed for tool
/// calls and reasoning in the model's format.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    spec: OutputSpec,
}

impl Output {
    /// The whole answer parsed in the model's format (`None`: plain text).
    pub(super) fn parse(&self, text: &str) -> Option<crate::tools::Parsed> {
        (!self.spec.is_plain()).then(|| crate::tools::parse_final(self.spec, text))
    }

    /// The whole answer as content, reasoning and calls (plain text: all
    /// content).
    pub(super) fn whole(&self, text: String) -> crate::tools::StreamDelta {
        match self.parse(&text) {
            Some(p) => crate::tools::StreamDelta { content: p.content, reasoning: p.reasoning, calls: p.calls.into_iter().enumerate().collect() },
            None => crate::tools::StreamDelta { content: text, ..Default::default() },
        }
    }

    /// A parser for the answer as it streams (`None`: plain text).
    pub(super) fn streaming(&self) -> Option<crate::tools::Streaming> {
        (!self.spec.is_plain()).then(|| crate::tools::Streaming::new(self.spec))
    }

    /// The whole answer as a message, and its finish reason (`tool_calls`
    /// when it made calls).
    fn message(&self, text: String, finish: FinishReason) -> (AssistantMessage, &'static str) {
        let Some(parsed) = self.parse(&text) else {
            return (AssistantMessage { role: "assistant", content: Some(text), ..AssistantMessage::default() }, finish.as_str());
        };
        let calls: Vec<Value> = parsed.calls.iter().map(|c| tool_calls::call_json(c, None)).collect();
        let message = AssistantMessage {
            role: "assistant",
            content: (!parsed.content.is_empty() || calls.is_empty()).then_some(parsed.content),
            reasoning_content: (!parsed.reasoning.is_empty()).then_some(parsed.reasoning),
            tool_calls: (!calls.is_empty()).then_some(calls),
        };
        let finish = if message.tool_calls.is_some() && finish.is_stop() { "tool_calls" } else { finish.as_str() };
        (message, finish)
    }
}

/// The text and finish framers of a stream whose frames come from parsed
/// output (the Messages and Responses streams): `delta` turns each piece of
/// parsed output into frames (plain text is all content), `finish` the
/// outcome; both act on `state`.
pub(super) fn parsed_framers<S: Send + 'static>(
    output: Output,
    state: Arc<parking_lot::Mutex<S>>,
    delta: fn(&mut S, crate::tools::StreamDelta) -> Vec<Bytes>,
    finish: fn(&mut S, FinishReason, Usage) -> Vec<Bytes>,
) -> (impl FnMut(String, &[TokenLogprob]) -> Bytes + Send + 'static, impl FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static) {
    let parser = output.streaming().map(|p| Arc::new(parking_lot::Mutex::new(p)));
    let (for_text, for_finish) = (parser.clone(), parser);
    let for_finish_state = state.clone();
    let text = move |t: String, _: &[TokenLogprob]| {
        let d = match &for_text {
            Some(parser) => parser.lock().push(&t),
            None => crate::tools::StreamDelta { content: t, ..Default::default() },
        };
        Bytes::from(delta(&mut state.lock(), d).concat())
    };
    let end = move |reason, usage| {
        let mut state = for_finish_state.lock();
        let mut frames = Vec::new();
        if let Some(parser) = for_finish {
            frames.extend(delta(&mut state, parser.lock().finish()));
        }
        frames.extend(finish(&mut state, reason, usage));
        frames
    };
    (text, end)
}

/// `--notify-swaps`: the stream starts at once; while the model loads, the
/// client gets progress in `delta.reasoning_content` (from the scheduler's
/// snapshots), then the answer. Errors after this point can only be sent as
/// error events in the stream.
fn stream_after_load(state: AppState, index: usize, valid: ValidChat, chunks: Chunks, log: RequestLog) -> Response {
    let (tx, response) = sse::channel_response();
    let chunks = Arc::new(chunks);
    tokio::spawn(async move {
        if tx.send(chunks.role()).await.is_err() {
            return;
        }
        let name = chunks.model.clone();
        let mut snapshots = state.scheduler.watch();
        let acquire = state.scheduler.acquire(index);
        tokio::pin!(acquire);
        let mut last_sent = None;
        let permit = loop {
            tokio::select! {
                permit = &mut acquire => break permit,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The scheduler is gone: the acquire ends too.
                        break (&mut acquire).await;
                    }
                    // A hub model downloads first (owner_models.rs), then loads.
                    let now = snapshots.borrow_and_update().models.get(index).and_then(|m| {
                        Some((m.progress?, if m.state == "downloading" { "downloading" } else { "loading" }))
                    });
                    let Some((percent, doing)) = now.filter(|now| Some(*now) != last_sent) else { continue };
                    last_sent = Some((percent, doing));
                    let note = format!("{doing} model {name}: {percent}%\n");
                    if tx.send(chunks.reasoning(note)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let prepared = match permit.map_err(ApiError::from) {
            Ok(permit) => prepare(&permit, &valid, log.clone()).await.map(|prepared| (permit, prepared)),
            Err(e) => Err(e),
        };
        match prepared {
            Ok((_permit, (mut started, output))) => {
                let (text, finish) = chunks.framers(output);
                pump(&tx, started.remove(0), text, finish, &super::generate::sse_framing()).await;
            }
            Err(e) => {
                log.ended(&e.to_string());
                let _ = tx.send(sse::data(&e.body())).await;
                let _ = tx.send(sse::done()).await;
            }
        }
    });
    response
}

/// Builds the chunks of one streamed chat completion.
#[derive(Clone)]
struct Chunks {
    /// The choice these chunks belong to.
    index: u32,
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
    include_usage: bool,
    /// The finish framer sends the usage chunk (not per choice when `n` > 1).
    usage_at_finish: bool,
    /// The request asked for log-probabilities.
    logprobs: bool,
    /// The request's times (`timings` on the finishing chunk).
    log: RequestLog,
    /// `timings_per_token`: the stream's progress, for `timings` on every chunk.
    live: Option<super::generate::Live>,
}

impl Chunks {
    fn new(state: &AppState, model: String, sampling: &validate::ValidSampling, log: RequestLog) -> Self {
        Self {
            index: 0,
            id: response_id("chatcmpl"),
            created: unix_now(),
            model,
            fingerprint: state.build.fingerprint(),
            include_usage: sampling.include_usage,
            usage_at_finish: true,
            logprobs: sampling.logprobs.is_some(),
            log,
            live: None,
        }
    }

    /// A `return_progress` chunk: no choices, the prompt's read so far.
    fn progress(&self, p: &crate::engine::PromptProgress) -> axum::body::Bytes {
        let mut chunk = self.chunk(Delta::default(), None);
        chunk.choices.clear();
        chunk.usage = None;
        chunk.prompt_progress = Some(super::generate::progress_value(p));
        chunk.timings = Some(super::generate::progress_timings(p));
        sse::data(&chunk)
    }

    /// The chunks of choice `index` of the same completion; the usage is
    /// sent once for all choices, not with each.
    fn for_choice(&self, index: u32) -> Self {
        Self { index, usage_at_finish: false, ..self.clone() }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> ChatCompletionChunk {
        self.chunk_with(delta, finish_reason, None)
    }

    fn chunk_with(&self, delta: Delta, finish_reason: Option<&'static str>, logprobs: Option<serde_json::Value>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice { index: self.index, delta, logprobs, finish_reason }],
            usage: self.include_usage.then_some(None),
            timings: self.live.as_ref().map(|live| live.timings(&self.log)),
            prompt_progress: None,
            system_fingerprint: self.fingerprint.clone(),
        }
    }

    /// The first chunk: the assistant role, content null (as llama-server).
    fn role(&self) -> Bytes {
        let mut chunk = self.chunk(Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() }, None);
        // Nothing is timed before the first token (llama-server sends none here).
        chunk.timings = None;
        sse::data(&chunk)
    }

    fn reasoning(&self, note: String) -> Bytes {
        sse::data(&self.chunk(Delta { reasoning_content: Some(note), ..Delta::default() }, None))
    }

    /// The content-delta framer and the finish framer for [`pump`]. With a
    /// tool format, pieces go through the streaming parser: text that may be
    /// a call's start is held back, each call is sent whole once complete.
    #[allow(clippy::type_complexity)]
    fn framers(
        self: Arc<Self>,
        output: Output,
    ) -> (impl FnMut(String, &[TokenLogprob]) -> Bytes + Send + 'static, impl FnOnce(FinishReason, Usage) -> Vec<Bytes> + Send + 'static) {
        let parser = output.streaming();
        let parsed = parser.is_some();
        let shared = Arc::new(parking_lot::Mutex::new((parser, Vec::<TokenLogprob>::new())));
        let for_text = self.clone();
        let text_state = shared.clone();
        let text = move |t: String, lps: &[TokenLogprob]| {
            let mut state = text_state.lock();
            let (parser, held) = &mut *state;
            match parser {
                None => {
                    let logprobs = for_text.logprobs.then(|| super::logprobs::chat(lps));
                    sse::data(&for_text.chunk_with(Delta { content: Some(t), ..Delta::default() }, None, logprobs))
                }
                Some(parser) => {
                    held.extend_from_slice(lps);
                    let delta = parser.push(&t);
                    for_text.delta_frames(delta, held)
                }
            }
        };
        let finish = move |finish_reason: FinishReason, usage: Usage| {
            let mut frames = Vec::new();
            let mut reason = finish_reason.as_str();
            if parsed {
                let mut state = shared.lock();
                let (parser, held) = &mut *state;
                if let Some(parser) = parser {
                    frames.push(self.delta_frames(parser.finish(), held));
                    if parser.calls_sent() > 0 && finish_reason.is_stop() {
                        reason = "tool_calls";
                    }
                }
            }
            let mut last = self.chunk(Delta::default(), Some(reason));
            last.timings = Some(self.log.timings(&usage));
            frames.push(sse::data(&last));
            if self.include_usage && self.usage_at_finish {
                let mut usage_chunk = self.chunk(Delta::default(), None);
                usage_chunk.choices.clear();
                usage_chunk.usage = Some(Some(usage.into()));
                // llama-server repeats the timings beside the usage.
                usage_chunk.timings = last.timings.clone();
                frames.push(sse::data(&usage_chunk));
            }
            frames
        };
        (text, finish)
    }

    /// The chunks of one parsed delta (none when nothing can be sent yet);
    /// log-probabilities go with the first chunk sent.
    fn delta_frames(&self, delta: crate::tools::StreamDelta, held: &mut Vec<TokenLogprob>) -> Bytes {
        let mut deltas = Vec::new();
        if !delta.reasoning.is_empty() {
            deltas.push(Delta { reasoning_content: Some(delta.reasoning), ..Delta::default() });
        }
        if !delta.content.is_empty() {
            deltas.push(Delta { content: Some(delta.content), ..Delta::default() });
        }
        for (i, call) in &delta.calls {
            deltas.push(Delta { tool_calls: Some(vec![tool_calls::call_json(call, Some(*i))]), ..Delta::default() });
        }
        let mut out = Vec::new();
        for d in deltas {
            let logprobs = (self.logprobs && !held.is_empty()).then(|| super::logprobs::chat(&std::mem::take(held)));
            out.extend_from_slice(&sse::data(&self.chunk_with(d, None, logprobs)));
        }
        Bytes::from(out)
    }
}
