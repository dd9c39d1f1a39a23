//! The one place placement options are merged: command-line flags over the
//! file's `[server]` keys over the defaults (the server's options), then a
//! model's own `[[models]]` keys over the server's (that model's options).

use super::file::ServerSection;
use crate::cli::GpuFlags;
use crate::gpu::PlacementOptions;
use crate::types::{GpuOverrides, ModelSpec};

/// The server's placement options: each flag wins over its `[server]` key,
/// which wins over [`PlacementOptions::default`].
pub fn server_options(flags: &GpuFlags, file: &ServerSection) -> PlacementOptions {
    let d = PlacementOptions::default();
    PlacementOptions {
        reserve_mib: flags.reserve_mib.or(file.reserve_mib).unwrap_or(d.reserve_mib),
        devices: flags.devices.clone().or_else(|| file.devices.clone()),
        device_order: flags.device_order.or(file.device_order).unwrap_or(d.device_order),
        split_mode: flags.split_mode.or(file.split_mode).unwrap_or(d.split_mode),
        main_gpu: flags.main_gpu.or(file.main_gpu),
        spread: flags.spread.or(file.spread).unwrap_or(d.spread),
        use_fit_params: flags.use_fit_params.or(file.use_fit_params).unwrap_or(d.use_fit_params),
        ..d
    }
}

/// The placement options for one model: the server's, with the model's
/// overrides (`n_gpu_layers`, `devices`, `main_gpu`, `split_mode`,
/// `tensor_split`) winning.
pub fn model_options(server: &PlacementOptions, spec: &ModelSpec) -> PlacementOptions {
    let g = &spec.gpu;
    PlacementOptions {
        devices: g.devices.clone().or_else(|| server.devices.clone()),
        main_gpu: g.main_gpu.or(server.main_gpu),
        split_mode: g.split_mode.unwrap_or(server.split_mode),
        n_gpu_layers_override: spec.n_gpu_layers,
        tensor_split_override: g.tensor_split.clone().or_else(|| server.tensor_split_override.clone()),
        // A model's own placement settings win over llama.cpp's fitter.
        use_fit_params: server.use_fit_params && spec.n_gpu_layers.is_none() && *g == GpuOverrides::default(),
        ..server.clone()
    }
}
