//! GPU discovery and model placement.
//!
//! [`inventory`] answers "what GPUs does this process's CUDA see, and how much is free
//! on each" (NVML, a JSON file, or nothing); [`placement`] turns that snapshot and a
//! model's footprint into llama.cpp parameters (`devices`, `main_gpu`, `split_mode`,
//! `tensor_split`, `n_gpu_layers`) with pure, unit-tested functions.

pub mod inventory;
pub mod placement;

pub use inventory::{
    detect, resolve_visible_devices, GpuError, GpuInfo, GpuInventory, NvmlInventory,
    StaticInventory, VisibleDevices,
};
pub use placement::{
    free_after, plan, DeviceOrder, DeviceUse, ModelFootprint, Placement, PlacementError,
    PlacementKind, PlacementOptions, SplitMode, MIB,
};
