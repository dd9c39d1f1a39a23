//! What the scheduler publishes after every step (a `tokio::sync::watch`):
//! the model list with each model's lifecycle state, its loaded engine, load
//! progress, queue and memory. `/health`, `/v1/models`, `/props` and
//! `/admin/status` read it; nobody else keeps lifecycle state.

use std::sync::{Arc, Weak};
use std::time::Instant;

use serde::Serialize;

use super::Holding;
use super::policy::Policy;
use super::SchedError;
use crate::engine::loaded::LoadedModel;
use crate::gpu::{GpuInfo, Placement};
use crate::types::ModelSpec;

#[derive(Clone)]
pub struct Snapshot {
    /// Every model ever registered, in index order (retired ones included).
    pub models: Vec<ModelView>,
    pub policy: Policy,
    /// Host memory budget and what the models hold of it.
    pub budget_bytes: u64,
    pub used_bytes: u64,
    /// Pinned host memory sleeping models may hold (`--sleep-mib`).
    pub sleep_budget_bytes: u64,
    /// Evictions made to give another model room.
    pub swaps: u64,
    pub max_wait_ms: u64,
    /// One active model answers any name (`SchedLimits::any_model_name`).
    pub any_model_name: bool,
    /// Requests load the model they name (`SchedLimits::autoload`).
    pub autoload: bool,
    /// Most models loaded at once (`SchedLimits::max_loaded`; `None`: no cap).
    pub max_loaded: Option<usize>,
    /// The latest loads that waited for evictions, oldest first.
    pub recent_swaps: Vec<SwapRecord>,
}

/// Where one swap's time went, in milliseconds: the request that caused it
/// waited `wait_ms` (idle models lingering, draining busy ones, the
/// unloads) before the load began; the load read the weights and created
/// the context.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SwapRecord {
    pub model: String,
    pub evicted: Vec<String>,
    pub wait_ms: u64,
    pub unload_ms: u64,
    pub weights_ms: u64,
    pub context_ms: u64,
    pub load_ms: u64,
    /// Unix time the load finished.
    pub at: u64,
}

/// One model as the scheduler sees it now.
#[derive(Clone)]
pub struct ModelView {
    pub index: usize,
    pub spec: Arc<ModelSpec>,
    /// Vocabulary size from the GGUF header (validating token ids before a load).
    pub n_vocab: Option<u32>,
    /// Unix time it was registered (`created` in /v1/models).
    pub created: u64,
    /// Removed by a reload: takes no new requests, unloads once idle.
    pub retired: bool,
    /// `unloaded`, `sleeping`, `loading`, `loaded`, `unloading` or `failed`.
    pub state: &'static str,
    /// Asleep: the pinned host bytes it keeps (0 on the CPU, whose weights
    /// are the mapped file).
    pub sleeping_bytes: Option<u64>,
    /// Weak, so that a snapshot never keeps an unloaded model's memory alive.
    pub engine: Option<Weak<LoadedModel>>,
    /// Load progress in percent while a load runs.
    pub progress: Option<u8>,
    pub bytes: u64,
    pub bytes_measured: bool,
    pub queue_depth: usize,
    pub in_flight: u32,
    pub slots: u32,
    pub last_used: Instant,
    pub load_count: u32,
    pub last_load_ms: Option<u64>,
    /// Whether, idle, it is kept for its load time before an eviction.
    pub lingers: bool,
    pub failure: Option<String>,
    /// Where it is loaded (GPUs present and the model loading or loaded).
    pub placement: Option<Placement>,
    /// What it holds while resident: host bytes and MiB per GPU.
    pub holding: Option<Holding>,
}

impl ModelView {
    /// The loaded model, if it is loaded (and not being unloaded) now.
    pub fn loaded(&self) -> Option<Arc<LoadedModel>> {
        self.engine.as_ref().and_then(Weak::upgrade)
    }
}

impl Snapshot {
    /// Before the owner's first step (and a base for tests).
    pub fn empty() -> Self {
        Self {
            models: Vec::new(),
            policy: Policy::default(),
            budget_bytes: 0,
            used_bytes: 0,
            sleep_budget_bytes: 0,
            swaps: 0,
            max_wait_ms: 0,
            any_model_name: false,
            autoload: true,
            max_loaded: None,
            recent_swaps: Vec::new(),
        }
    }

    /// The models clients can use now.
    pub fn active(&self) -> impl Iterator<Item = &ModelView> {
        self.models.iter().filter(|m| !m.retired)
    }

    /// Finds an active model by id or alias. With no name (llama-server
    /// clients often send none) the first active model answers; on a server
    /// of one model, any name does unless `--strict-model-names`.
    pub fn resolve(&self, name: Option<&str>) -> Result<&ModelView, SchedError> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None => self.active().next().ok_or(SchedError::NoModels),
            Some(name) => self.active().find(|m| m.spec.answers_to(name)).or_else(|| self.only_model()).ok_or_else(|| SchedError::UnknownModel(name.to_string())),
        }
    }

    /// The active model with this id or alias, whatever `any_model_name`
    /// says (retrieving, loading or unloading a model by name).
    pub fn find(&self, name: &str) -> Result<&ModelView, SchedError> {
        let name = name.trim();
        self.active().find(|m| m.spec.answers_to(name)).ok_or_else(|| SchedError::UnknownModel(name.to_string()))
    }

    /// The one active model, where it answers any name.
    fn only_model(&self) -> Option<&ModelView> {
        let mut active = self.active();
        match (active.next(), active.next()) {
            (Some(only), None) if self.any_model_name => Some(only),
            _ => None,
        }
    }

    /// Pinned host bytes the sleeping models hold together.
    pub fn sleeping_bytes(&self) -> u64 {
        self.models.iter().filter_map(|m| m.sleeping_bytes).sum()
    }

    /// The inventory `gpus` with what our resident models hold on each GPU.
    pub fn gpu_status(&self, gpus: Vec<GpuInfo>) -> Vec<GpuStatus> {
        gpus.into_iter()
            .map(|info| {
                let models_mib = self
                    .models
                    .iter()
                    .filter_map(|m| m.holding.as_ref())
                    .flat_map(|h| &h.gpu_mib)
                    .filter(|(i, _)| *i == info.index)
                    .map(|(_, m)| m)
                    .sum();
                GpuStatus { info, models_mib }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuStatus {
    #[serde(flatten)]
    pub info: GpuInfo,
    /// MiB our resident models hold there (measured when NVML could tell).
    pub models_mib: u64,
}
