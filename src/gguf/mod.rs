//! GGUF header reader and memory estimator.
//!
//! Reads the header of a GGUF model file (metadata key/values and tensor
//! infos) **without loading the model** and without reading tensor data, then
//! estimates how much memory llama.cpp will need for it: weights, KV cache and
//! a compute-buffer margin. Pure Rust (std + `thiserror` + `serde`), no
//! llama.cpp.
//!
//! * [`read_header`] parses one file, or all parts of a split model
//!   (`name-00001-of-00003.gguf`).
//! * [`GgufHeader`] has typed accessors for metadata, the per-layer weight
//!   split used for GPU placement ([`GgufHeader::layer_bytes`],
//!   [`GgufHeader::non_layer_bytes`], [`GgufHeader::output_layer_bytes`]) and
//!   the hyper-parameters the estimate needs ([`GgufHeader::model_params`]).
//! * [`estimate`] turns that into a [`MemoryEstimate`]. It is an *estimate*:
//!   after a real load the scheduler should replace it by measured numbers.
//!
//! Robustness: every length and count read from the file is checked against
//! fixed limits and against the bytes left in the file *before* anything is
//! allocated or skipped, so a corrupt or malicious file produces a
//! [`GgufError`] naming the file, the offset and what was wrong — never a
//! panic or a huge allocation. Large arrays (e.g. `tokenizer.ggml.tokens`,
//! 262k strings) are skipped, not stored: only their element type and length
//! are kept ([`MetaValue::LongArray`]).
//!
//! The tensor data region is never read, but tensor offsets/sizes are checked
//! against the file size, so an incomplete download is reported as an error.
//!
//! Files: `types.rs` (limits, errors, values, the header), `reader.rs` (the
//! bounded reader and the parser), `params.rs` (accessors, per-layer bytes,
//! hyper-parameters), `estimate.rs` (the memory estimate).

mod estimate;
mod params;
mod reader;
mod types;

pub use estimate::*;
pub use params::*;
pub use reader::*;
pub use types::*;

#[cfg(test)]
mod tests;
