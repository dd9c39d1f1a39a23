//! vram-llm: serve local GGUF models in-process over the OpenAI API.
//! See docs/ARCHITECTURE.md for the shape of the code: the modules below are
//! layers, each importing only those beneath it (tests/layers.rs checks it).

// Leaves: no imports from the crate.
pub mod build_info;
pub mod gguf;
pub mod gpu;
pub mod hub;
pub mod metrics;
pub mod template;
pub mod tools;
// Shared plain types.
pub mod types;
// Inference, then scheduling.
pub mod engine;
pub mod scheduler;
// Configuration and the model catalogue.
pub mod catalogue;
pub mod cli;
pub mod config;
// HTTP, then the commands.
pub mod api;
pub mod commands;
pub mod server;
