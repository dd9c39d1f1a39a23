//! The HTTP layer: OpenAI-compatible endpoints plus llama-server's helpers.
//! `router(state)` builds everything; each endpoint family has its module.

pub mod admin;
pub mod anthropic;
pub mod auth;
pub mod chat;
pub mod choices;
pub mod cors;
pub mod cpu;
pub mod dashboard;
pub mod embeddings;
pub mod completions;
pub mod error;
pub mod extract;
pub mod fields;
pub mod generate;
pub mod logprobs;
pub mod guard;
pub mod helpers;
pub mod metrics;
pub mod models;
pub mod native;
pub mod ollama;
pub mod openai;
pub mod prompt_list;
pub mod reqlog;
pub mod responses;
pub mod resume;
pub mod router;
pub mod router_events;
pub mod sse;
pub mod tool_calls;
mod speculative;
pub mod validate;
pub mod vertex;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use axum::Router;

use crate::build_info::BuildInfo;
use crate::engine::loaded::LoadedModel;
use crate::scheduler::{ModelView, Scheduler};
use error::ApiError;

pub use crate::types::unix_now;

/// Shared by every handler.
/// The startup model sources and flags `/admin/reload` reads again, and the
/// running server's placement options (server settings change on restart
/// only, so models added by a reload are placed like the others).
pub struct ReloadSource {
    pub sources: crate::cli::ModelSources,
    pub flags: crate::cli::ServerFlags,
    pub placement: crate::gpu::PlacementOptions,
}

#[derive(Clone)]
pub struct AppState {
    /// Owns every model's lifecycle; its snapshot is the model list.
    pub scheduler: Scheduler,
    /// False while startup loads run: /health answers 503.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Required as `Authorization: Bearer ...` on every route but /health.
    pub api_key: Option<Arc<str>>,
    /// Enables /admin/* (Bearer or `X-Admin-Token`).
    pub admin_token: Option<Arc<str>>,
    /// Stream load progress to streamed chats that wait for a load.
    pub notify_swaps: bool,
    /// What `/admin/reload` re-reads.
    pub reload_from: Option<Arc<ReloadSource>>,
    pub body_limit: usize,
    pub build: BuildInfo,
    /// llama.cpp's devices found at run time (`/props` `backends`).
    pub backends: Arc<[String]>,
    /// The backend modules loaded (`dynamic-backends`; `/props` `backend_modules`).
    pub backend_modules: Arc<[String]>,
    /// The host KV cache, for /admin/status.
    pub kv_cache: Option<crate::engine::SharedKvStore>,
    /// Browser origins allowed to call the API (`--cors-origins`).
    pub cors_origins: Arc<[String]>,
    /// Host names the server answers to (`None`: any); see `guard`.
    pub allowed_hosts: Option<Arc<[String]>>,
    /// Endpoints and behaviours switched by llama-server's flags.
    pub options: ServeOptions,
    /// Resumable streams (`X-Conversation-Id`), by conversation.
    pub streams: resume::Sessions,
}

/// What llama-server's flags switch on the HTTP side.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// /metrics served (`--no-metrics`: 501).
    pub metrics: bool,
    /// /slots served (`--no-slots`: 501).
    pub slots: bool,
    /// The dashboard at `/` (`--no-ui`: 404, as llama-server's web UI).
    pub ui: bool,
    /// `--verbose`: non-streamed chat answers carry llama-server's
    /// `__verbose` object (the rendered prompt).
    pub verbose: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { metrics: true, slots: true, ui: true, verbose: false }
    }
}

/// Default request body limit: a long conversation fits easily.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/chat/completions", post(chat::chat_completions))
        .route("/v1/chat/completions/input_tokens", post(chat::input_tokens))
        .route("/chat/completions/input_tokens", post(chat::input_tokens))
        .route("/v1/completions", post(completions::completions))
        // llama-server's: `/completions` is its native endpoint, as `/completion`.
        .route("/completions", post(native::completion))
        .route("/completion", post(native::completion))
        .route("/v1/models", get(models::list_models))
        .route("/models", get(models::list_models).post(router_events::download).delete(router::delete))
        .route("/models/sse", get(router_events::events_stream))
        .route("/v1/models/{*id}", get(models::get_model))
        // llama-server's router endpoints (start a load or unload, answer at once).
        .route("/models/load", post(router::load))
        .route("/models/unload", post(router::unload))
        .route("/tokenize", post(helpers::tokenize))
        .route("/detokenize", post(helpers::detokenize))
        .route("/apply-template", post(helpers::apply_template))
        .route("/props", get(helpers::props))
        .route("/slots", get(helpers::slots))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/responses", post(responses::create))
        .route("/responses", post(responses::create))
        .route("/v1/responses/input_tokens", post(responses::input_tokens))
        .route("/responses/input_tokens", post(responses::input_tokens))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/version", get(ollama::version))
        .route("/api/embed", post(ollama::embed::embed))
        .route("/api/embeddings", post(ollama::embed::embeddings))
        .route("/v1/embeddings", post(embeddings::openai))
        .route("/embedding", post(embeddings::native))
        .route("/embeddings", post(embeddings::native))
        // llama-server's resumable streams.
        .route("/v1/stream", get(resume::get).delete(resume::delete))
        .route("/v1/streams/lookup", post(resume::lookup))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), resume::middleware))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_api_key));
    let admin = Router::new()
        .route("/admin/status", get(admin::status))
        .route("/admin/models/load", post(admin::load))
        .route("/admin/models/unload", post(admin::unload))
        .route("/admin/reload", post(admin::reload))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin::require_admin_token));
    let cors = cors::layer(&state.cors_origins);
    let app = Router::new()
        .route("/health", get(helpers::health))
        .route("/", get(dashboard::page))
        .merge(admin)
        .route("/v1/health", get(helpers::health))
        .merge(protected)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check_host_and_origin))
        .layer(axum::middleware::from_fn(reqlog::middleware));
    // Outermost: a preflight is answered before auth or routing.
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound { method: req.method().to_string(), path: req.uri().path().to_string() }
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed { method: req.method().to_string(), path: req.uri().path().to_string() }
}

impl AppState {
    /// The named model for work that needs no slot (tokenizing, templates):
    /// the loaded model if it is loaded, else it is loaded first.
    pub async fn loaded(&self, view: &ModelView) -> Result<Arc<LoadedModel>, ApiError> {
        if let Some(loaded) = view.loaded() {
            return Ok(loaded);
        }
        Ok(self.scheduler.acquire(view.index).await?.model.clone())
    }
}
