//! The commands besides `serve`: `vram-llm models`, `gpus` and `plan`. They
//! print what the server would do without starting it.

pub mod gpus;
pub mod models;
