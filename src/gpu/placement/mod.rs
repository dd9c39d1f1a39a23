//! Where a model goes: which GPUs, how it is split, how many layers are offloaded.
//!
//! Everything here is a pure function of a GPU snapshot, a model footprint and the
//! options, so the scheduler can call it as often as it likes and the rules can be
//! tested on simulated machines. Sizes come in bytes (model) and MiB (GPUs).
//!
//! # The model of llama.cpp used here
//!
//! llama.cpp (as vendored by `llama-cpp-sys-2` 0.1.161) treats the output head as one
//! more "layer" after the `n` repeating ones and offloads from the end: with
//! `n_gpu_layers = k` (1 ≤ k ≤ n+1) the output head and the last `k - 1` repeating
//! layers live on GPUs, so `k = n + 1` means everything is offloaded. Token embeddings
//! (`input_bytes`) always stay in host memory; the head (`output_bytes`: output matrix
//! and norm, or llama.cpp's copy of tied embeddings) goes to the last device when
//! offloaded. Measured on an H200 (docs/gpu.md): charging the embeddings to the GPU
//! over-reserved by exactly their size (125 MiB of a 1B model, 406 MiB of a 30B).
//! A layer's KV cache lives on the device holding the layer. `compute_bytes` is
//! charged to the main GPU (the first device) whenever anything is offloaded; the
//! per-GPU reserve covers the smaller compute buffers on the other GPUs.
//!
//! With several devices, offloaded layers are handed out exactly as llama.cpp does
//! (`llama-model.cpp`, `get_layer_buft_list`): item `j` of the `k` offloaded items goes
//! to the first device whose cumulative split point is greater than `j / k` (computed in
//! `f32` like the C++), so the head ends up on the *last* device. Every plan is checked
//! device by device against that layout, not only in aggregate. Row split is modelled
//! with the same layout, which gets the per-device totals right to within one layer.
//!
//! Files: this one (the types, `plan`, `free_after`), `layout.rs` (costs and
//! llama.cpp's layer assignment), `select.rs` (which GPUs, in what order),
//! `strategy.rs` (the strategies and building a plan).

mod layout;
mod select;
mod strategy;

use layout::*;
use select::*;
use strategy::*;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::inventory::GpuInfo;

/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;

/// What a model needs, measured from its GGUF and the context configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFootprint {
    /// Weights of each repeating layer (block), in bytes.
    pub layer_bytes: Vec<u64>,
    /// The output head (output matrix + output norm; with tied embeddings the
    /// copy of `token_embd` llama.cpp makes for it), in bytes: the last item,
    /// on the last device when `n_gpu_layers = n_layers + 1`.
    pub output_bytes: u64,
    /// Non-layer tensors llama.cpp keeps in host memory whatever
    /// `n_gpu_layers` says (the token embeddings), in bytes.
    #[serde(default)]
    pub input_bytes: u64,
    /// KV cache of each layer for the configured context and slots, in bytes.
    /// Must have one entry per layer.
    pub kv_bytes_per_layer: Vec<u64>,
    /// Compute-buffer margin needed on the main GPU, in bytes.
    pub compute_bytes: u64,
}

impl ModelFootprint {
    /// Number of repeating layers.
    pub fn n_layers(&self) -> u32 {
        u32::try_from(self.layer_bytes.len()).unwrap_or(u32::MAX)
    }

    /// Everything: all layers + head + embeddings + all KV + compute.
    pub fn total_bytes(&self) -> u64 {
        self.layer_bytes
            .iter()
            .chain(&self.kv_bytes_per_layer)
            .fold(
                self.output_bytes.saturating_add(self.input_bytes).saturating_add(self.compute_bytes),
                |a, b| a.saturating_add(*b),
            )
    }
}

/// Which selected GPU is preferred (becomes main GPU and is tried first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOrder {
    /// Most usable memory first (ties: lower index first).
    #[default]
    FreeDesc,
    /// Lowest CUDA index first: fills GPU 0 before GPU 1.
    Index,
}

/// llama.cpp's `split_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMode {
    /// Single GPU only (`LLAMA_SPLIT_MODE_NONE`): with `main_gpu` this pins a model to one GPU.
    None,
    /// Whole layers per GPU (`LLAMA_SPLIT_MODE_LAYER`).
    #[default]
    Layer,
    /// Rows of each matrix across GPUs (`LLAMA_SPLIT_MODE_ROW`); passed through.
    Row,
}

impl std::str::FromStr for DeviceOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free_desc" => Ok(Self::FreeDesc),
            "index" => Ok(Self::Index),
            other => Err(format!(
                "device order `{other}`: expected `free_desc` or `index`"
            )),
        }
    }
}

impl std::str::FromStr for SplitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "layer" => Ok(Self::Layer),
            "row" => Ok(Self::Row),
            other => Err(format!(
                "split mode `{other}`: expected `none`, `layer` or `row`"
            )),
        }
    }
}

/// Knobs from the command line (server-wide) and the per-model config (overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementOptions {
    /// MiB kept free on every GPU (other processes, CUDA context, fragmentation).
    pub reserve_mib: u64,
    /// Physical (CUDA) indices allowed, e.g. `--devices 0,2`; `None` = all.
    pub devices: Option<Vec<u32>>,
    pub device_order: DeviceOrder,
    pub split_mode: SplitMode,
    /// Physical index forced to be the main (first) GPU; must be among `devices`.
    pub main_gpu: Option<u32>,
    /// Split over all usable selected GPUs even when one would do.
    pub spread: bool,
    /// Exact llama.cpp `n_gpu_layers` (values above `n_layers + 1` mean "all").
    pub n_gpu_layers_override: Option<u32>,
    /// Shares for the selected GPUs in ascending index order (like llama.cpp's
    /// `--tensor-split`); any non-negative scale, normalised here.
    pub tensor_split_override: Option<Vec<f32>>,
    /// llama.cpp's fitter decides at load time (`--use-fit-params`); [`plan`]
    /// ignores this and its result serves as the estimate.
    pub use_fit_params: bool,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self {
            reserve_mib: 1024,
            devices: None,
            device_order: DeviceOrder::FreeDesc,
            split_mode: SplitMode::Layer,
            main_gpu: None,
            spread: false,
            n_gpu_layers_override: None,
            tensor_split_override: None,
            use_fit_params: false,
        }
    }
}

/// The shape of a plan, for logs and the status endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementKind {
    SingleGpu,
    Split,
    PartialOffload,
    CpuOnly,
}

/// What one GPU holds under a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUse {
    /// Physical (CUDA) index.
    pub index: u32,
    /// Estimated MiB this model occupies there.
    pub mib: u64,
    /// Repeating layers placed there (the output head, when offloaded, is on the last device).
    pub layers: u32,
}

/// The outcome of [`plan`]: everything llama.cpp needs, plus numbers to show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Physical indices used, main GPU first, in the order llama.cpp must see them.
    pub devices: Vec<u32>,
    /// Physical index of the main GPU; `None` when nothing is offloaded.
    pub main_gpu: Option<u32>,
    /// What to pass to llama.cpp: `None` for one GPU (and for CPU only), else the requested mode.
    pub split_mode: SplitMode,
    /// One fraction per entry of `devices`, summing to 1; empty when CPU only.
    pub tensor_split: Vec<f32>,
    /// llama.cpp `n_gpu_layers`: `n_layers + 1` = everything incl. output head.
    pub n_gpu_layers: u32,
    /// Repeating layers in the model.
    pub n_layers: u32,
    /// One entry per `devices`, same order.
    pub mib_per_device: Vec<DeviceUse>,
    /// What stays in host memory (MiB).
    pub cpu_mib: u64,
    pub kind: PlacementKind,
    /// One human sentence saying why.
    pub reason: String,
    /// llama.cpp's fitter chooses the layers and split at load time
    /// (`--use-fit-params`); this plan is then only the estimate.
    #[serde(default)]
    pub use_fit_params: bool,
}

impl Placement {
    /// Total MiB on GPUs.
    pub fn gpu_mib(&self) -> u64 {
        self.mib_per_device.iter().map(|d| d.mib).sum()
    }

    /// `tensor_split` laid out by physical index over `n_devices` GPUs (zeros for unused
    /// ones), for callers that do not pass an explicit device list to llama.cpp and for
    /// row split, whose split buffer is indexed by CUDA device.
    pub fn tensor_split_by_index(&self, n_devices: usize) -> Vec<f32> {
        let mut out = vec![0.0; n_devices];
        for (index, share) in self.devices.iter().zip(&self.tensor_split) {
            if let Some(slot) = out.get_mut(*index as usize) {
                *slot = *share;
            }
        }
        out
    }
}

/// A plan that cannot be made; each names the offending field.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlacementError {
    #[error("`devices` names GPU {index}, which does not exist (GPUs: {available:?})")]
    UnknownDevice { index: u32, available: Vec<u32> },
    #[error("`devices` lists GPU {index} twice")]
    DuplicateDevice { index: u32 },
    #[error("`main_gpu` {index} is not among the selected GPUs {selected:?}")]
    MainGpuNotSelected { index: u32, selected: Vec<u32> },
    #[error("`kv_bytes_per_layer` has {kv} entries but `layer_bytes` has {layers}")]
    FootprintMismatch { layers: usize, kv: usize },
    #[error("`tensor_split` has {got} entries but {expected} GPUs are selected")]
    TensorSplitLength { expected: usize, got: usize },
    #[error("`tensor_split[{position}]` is {value}: shares must be finite and >= 0")]
    TensorSplitValue { position: usize, value: f32 },
    #[error("`tensor_split` is all zeros")]
    TensorSplitAllZero,
    #[error("`tensor_split` needs split mode `layer` or `row`, not `none`")]
    TensorSplitWithoutSplitMode,
}

/// Decide where the model goes. See the module docs for the cost model.
pub fn plan(
    gpus: &[GpuInfo],
    model: &ModelFootprint,
    opts: &PlacementOptions,
) -> Result<Placement, PlacementError> {
    let costs = Costs::new(model)?;
    let selected = select(gpus, opts)?;
    let ordered = order(&selected, opts)?;
    let mut placement = match (&opts.tensor_split_override, opts.n_gpu_layers_override) {
        (Some(shares), _) => with_tensor_split(&costs, &selected, &ordered, shares, opts)?,
        (None, Some(k)) => with_forced_layers(&costs, &ordered, opts, k),
        (None, None) => automatic(&costs, &ordered, opts),
    };
    placement.use_fit_params = opts.use_fit_params;
    Ok(placement)
}

/// `gpus` with what our own loaded models hold (`(index, MiB)`, several entries per
/// index add up) taken off `free_mib`, for when NVML has not caught up with a load yet.
pub fn free_after(gpus: &[GpuInfo], held: &[(u32, u64)]) -> Vec<GpuInfo> {
    gpus.iter()
        .map(|g| {
            let mine: u64 = held
                .iter()
                .filter(|(i, _)| *i == g.index)
                .fold(0, |a, (_, m)| a.saturating_add(*m));
            let mut g = g.clone();
            g.free_mib = g.free_mib.saturating_sub(mine);
            g.used_mib = g.used_mib.saturating_add(mine).min(g.total_mib);
            g
        })
        .collect()
}

#[cfg(test)]
mod tests;
