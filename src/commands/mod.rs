//! The commands besides `serve`: `vram-llm models`, `gpus` and `plan` print
//! what the server would do without starting it; `pull` downloads a model.

pub mod gpus;
pub mod models;
pub mod pull;
