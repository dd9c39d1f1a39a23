//! Models from the Hugging Face hub: names (`owner/repo[:QUANT]`) and the
//! hub cache that llama.cpp and huggingface_hub share, read in place so a
//! model either of them fetched is served without a second copy.
//! `download` and `remote` fetch from the hub into that cache.
//! A leaf: no imports from the crate.

pub mod cache;
pub mod download;
pub mod names;
mod parallel;
pub mod remote;

pub use cache::{cache_dir, cached_models, resolve, CachedModel};
pub use names::RepoTag;
