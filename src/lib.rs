//! vram-llm: serve local GGUF models in-process over the OpenAI API.
//! See docs/ARCHITECTURE.md for the shape of the code.

pub mod api;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod engine;
pub mod gpu;
pub mod gguf;
pub mod memory;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod template;
pub mod validate;
