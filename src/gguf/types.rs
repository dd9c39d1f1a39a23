//! The GGUF header's types: limits, errors, metadata values, tensor infos,
//! the header itself and ggml's type table.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;



/// GGUF default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string (key, value or tensor name) accepted.
pub const MAX_STRING_BYTES: u64 = 64 << 20;
/// Arrays with at most this many elements are stored in [`GgufHeader::metadata`];
/// longer ones become [`MetaValue::LongArray`] (type + length only).
pub const MAX_KEPT_ARRAY_LEN: u64 = 1024;
/// Upper bound on the total bytes of strings kept in memory per file.
pub(super) const MAX_KEPT_METADATA_BYTES: u64 = 256 << 20;
pub(super) const MAX_KV_COUNT: u64 = 1 << 20;
pub(super) const MAX_TENSOR_COUNT: u64 = 1 << 24;
pub(super) const MAX_TENSOR_NAME_BYTES: u64 = 1024;
/// `GGML_MAX_DIMS`.
pub(super) const MAX_DIMS: u32 = 4;
pub(super) const MAX_SPLIT_COUNT: u64 = 99_999;
/// Larger `block_count` values are treated as corrupt (per-layer vectors are
/// allocated from it).
pub const MAX_LAYERS: u32 = 1 << 16;
/// llama.cpp rounds the context (total and per sequence) up to this.
pub const KV_CELL_PAD: u64 = 256;

// GGUF value type ids.
pub(super) const T_U8: u32 = 0;
pub(super) const T_I8: u32 = 1;
pub(super) const T_U16: u32 = 2;
pub(super) const T_I16: u32 = 3;
pub(super) const T_U32: u32 = 4;
pub(super) const T_I32: u32 = 5;
pub(super) const T_F32: u32 = 6;
pub(super) const T_BOOL: u32 = 7;
pub(super) const T_STRING: u32 = 8;
pub(super) const T_ARRAY: u32 = 9;
pub(super) const T_U64: u32 = 10;
pub(super) const T_I64: u32 = 11;
pub(super) const T_F64: u32 = 12;

/// Errors from [`read_header`]. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: I/O error: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3; big-endian files are not supported)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: file truncated: {what} needs bytes up to offset {needed} but the file has {file_bytes} bytes")]
    Truncated { path: PathBuf, what: String, needed: u64, file_bytes: u64 },
    #[error("{path}: invalid GGUF at offset {offset}: {what}")]
    Invalid { path: PathBuf, offset: u64, what: String },
    #[error("{path}: tensor '{tensor}' has unknown ggml type id {type_id}")]
    UnknownTensorType { path: PathBuf, tensor: String, type_id: u32 },
    #[error("{path}: split model part {index} of {count} is missing")]
    MissingSplitPart { path: PathBuf, index: u64, count: u64 },
}

pub(super) type Result<T> = std::result::Result<T, GgufError>;

/// A metadata value. Integers are widened to `U64`/`I64` (unsigned GGUF types
/// become `U64`, signed become `I64`), floats to `F64`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    /// An array with at most [`MAX_KEPT_ARRAY_LEN`] elements.
    Array(Vec<MetaValue>),
    /// A longer array that was skipped: GGUF element type id and length.
    LongArray { elem_type: u32, len: u64 },
}

impl MetaValue {
    /// Non-negative integer value (also accepts non-negative `I64`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::U64(v) => i64::try_from(v).ok(),
            MetaValue::I64(v) => Some(v),
            _ => None,
        }
    }
    /// Float value (integers are converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Number of elements for arrays (kept or skipped).
    pub fn array_len(&self) -> Option<u64> {
        match self {
            MetaValue::Array(v) => Some(v.len() as u64),
            MetaValue::LongArray { len, .. } => Some(*len),
            _ => None,
        }
    }
}

/// One tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Size of the tensor data in bytes (= llama.cpp `ggml_nbytes`).
    pub bytes: u64,
}

impl TensorInfo {
    /// Layer index for tensors named `blk.{i}.…`.
    pub fn layer(&self) -> Option<usize> {
        let rest = self.name.strip_prefix("blk.")?;
        let (idx, _) = rest.split_once('.')?;
        if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        idx.parse().ok()
    }
}

/// Parsed GGUF header (all parts of a split model combined).
#[derive(Debug, Clone, Serialize)]
pub struct GgufHeader {
    pub version: u32,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Scalars and short arrays; long arrays as [`MetaValue::LongArray`].
    /// For split models, the metadata of the first part (which holds all of it).
    pub metadata: BTreeMap<String, MetaValue>,
    /// All tensors, parts concatenated in order.
    pub tensors: Vec<TensorInfo>,
    /// Total size of the file(s) on disk.
    pub file_bytes: u64,
    /// Bytes before the tensor data (header + alignment padding), summed over parts.
    pub header_bytes: u64,
    /// The file(s) read, in part order.
    pub parts: Vec<PathBuf>,
}

// ---------------------------------------------------------------------------
// ggml type table
// ---------------------------------------------------------------------------

/// Saturating sum / product: sizes derived from file metadata must never
/// overflow-panic, however absurd the values.
pub(super) fn sat_add(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |a, &x| a.saturating_add(x))
}
pub(super) fn sat_mul(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &x| a.saturating_mul(x))
}

/// `(block size in elements, bytes per block)` of a ggml type id, as in
/// ggml.c `type_traits` (verified against the vendored llama.cpp of
/// llama-cpp-sys-2 0.1.161 by compiling `sizeof(block_*)` from ggml-common.h).
/// `None` for unknown or removed ids (4, 5, 31..=33, 36..=38).
pub fn ggml_type_block(type_id: u32) -> Option<(u64, u64)> {
    Some(match type_id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4 (newer ggml)
        41 => (128, 18),  // Q1_0 (newer ggml)
        42 => (64, 18),   // Q2_0 (newer ggml)
        _ => return None,
    })
}

/// ggml name of a type id (for display).
pub fn ggml_type_name(type_id: u32) -> Option<&'static str> {
    const NAMES: [&str; 43] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",
        "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0",
        "", "", "", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
    ];
    NAMES.get(type_id as usize).copied().filter(|n| !n.is_empty())
}

