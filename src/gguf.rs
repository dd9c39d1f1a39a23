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

use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// GGUF default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string (key, value or tensor name) accepted.
pub const MAX_STRING_BYTES: u64 = 64 << 20;
/// Arrays with at most this many elements are stored in [`GgufHeader::metadata`];
/// longer ones become [`MetaValue::LongArray`] (type + length only).
pub const MAX_KEPT_ARRAY_LEN: u64 = 1024;
/// Upper bound on the total bytes of strings kept in memory per file.
const MAX_KEPT_METADATA_BYTES: u64 = 256 << 20;
const MAX_KV_COUNT: u64 = 1 << 20;
const MAX_TENSOR_COUNT: u64 = 1 << 24;
const MAX_TENSOR_NAME_BYTES: u64 = 1024;
/// `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
const MAX_SPLIT_COUNT: u64 = 99_999;
/// Larger `block_count` values are treated as corrupt (per-layer vectors are
/// allocated from it).
pub const MAX_LAYERS: u32 = 1 << 16;
/// llama.cpp rounds the context (total and per sequence) up to this.
pub const KV_CELL_PAD: u64 = 256;

// GGUF value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

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

type Result<T> = std::result::Result<T, GgufError>;

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
fn sat_add(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |a, &x| a.saturating_add(x))
}
fn sat_mul(xs: &[u64]) -> u64 {
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

// ---------------------------------------------------------------------------
// Low-level reader
// ---------------------------------------------------------------------------

struct Reader {
    r: BufReader<File>,
    pos: u64,
    len: u64,
    path: PathBuf,
    kept_bytes: u64,
}

impl Reader {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        Ok(Reader { r: BufReader::with_capacity(64 * 1024, f), pos: 0, len, path: path.to_path_buf(), kept_bytes: 0 })
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str, needed: u64) -> GgufError {
        GgufError::Truncated { path: self.path.clone(), what: what.to_string(), needed, file_bytes: self.len }
    }

    fn invalid(&self, offset: u64, what: impl Into<String>) -> GgufError {
        GgufError::Invalid { path: self.path.clone(), offset, what: what.into() }
    }

    /// Fails unless `n` more bytes exist in the file.
    fn need(&self, n: u64, what: &str) -> Result<()> {
        if n > self.remaining() {
            return Err(self.truncated(what, self.pos.saturating_add(n)));
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.need(buf.len() as u64, what)?;
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated(what, self.pos + buf.len() as u64)
            } else {
                GgufError::Io { path: self.path.clone(), source: e }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.read_exact(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        self.need(n, what)?;
        let mut left = n;
        while left > 0 {
            let step = left.min(i64::MAX as u64);
            self.r.seek_relative(step as i64).map_err(|source| GgufError::Io { path: self.path.clone(), source })?;
            left -= step;
        }
        self.pos += n;
        Ok(())
    }

    /// Reads a string length and validates it against `max` and the file size.
    fn string_len(&mut self, max: u64, what: &str) -> Result<u64> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > max {
            return Err(self.invalid(at, format!("{what}: string length {n} exceeds the limit of {max} bytes")));
        }
        self.need(n, what)?;
        Ok(n)
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String> {
        let n = self.string_len(max, what)?;
        self.kept_bytes += n;
        if self.kept_bytes > MAX_KEPT_METADATA_BYTES {
            return Err(self.invalid(self.pos, format!("{what}: metadata strings exceed {MAX_KEPT_METADATA_BYTES} bytes in total")));
        }
        let mut buf = vec![0u8; n as usize]; // n <= remaining file bytes and <= max
        self.read_exact(&mut buf, what)?;
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn skip_string(&mut self, what: &str) -> Result<()> {
        let n = self.string_len(MAX_STRING_BYTES, what)?;
        self.skip(n, what)
    }

    fn scalar(&mut self, ty: u32, what: &str) -> Result<MetaValue> {
        Ok(match ty {
            T_U8 => MetaValue::U64(u8::from_le_bytes(self.bytes(what)?) as u64),
            T_I8 => MetaValue::I64(i8::from_le_bytes(self.bytes(what)?) as i64),
            T_U16 => MetaValue::U64(u16::from_le_bytes(self.bytes(what)?) as u64),
            T_I16 => MetaValue::I64(i16::from_le_bytes(self.bytes(what)?) as i64),
            T_U32 => MetaValue::U64(u32::from_le_bytes(self.bytes(what)?) as u64),
            T_I32 => MetaValue::I64(i32::from_le_bytes(self.bytes(what)?) as i64),
            T_F32 => MetaValue::F64(f32::from_le_bytes(self.bytes(what)?) as f64),
            T_BOOL => {
                let at = self.pos;
                match self.bytes::<1>(what)?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => return Err(self.invalid(at, format!("{what}: bool value {b} is neither 0 nor 1"))),
                }
            }
            T_U64 => MetaValue::U64(u64::from_le_bytes(self.bytes(what)?)),
            T_I64 => MetaValue::I64(i64::from_le_bytes(self.bytes(what)?)),
            T_F64 => MetaValue::F64(f64::from_le_bytes(self.bytes(what)?)),
            T_STRING => MetaValue::Str(self.string(MAX_STRING_BYTES, what)?),
            _ => return Err(self.invalid(self.pos, format!("{what}: unknown value type {ty}"))),
        })
    }

    fn value(&mut self, ty: u32, what: &str) -> Result<MetaValue> {
        if ty != T_ARRAY {
            return self.scalar(ty, what);
        }
        let at = self.pos;
        let elem_type = self.u32(what)?;
        let len = self.u64(what)?;
        let elem_size = match elem_type {
            T_U8 | T_I8 | T_BOOL => 1,
            T_U16 | T_I16 => 2,
            T_U32 | T_I32 | T_F32 => 4,
            T_U64 | T_I64 | T_F64 => 8,
            T_STRING => 8, // at least the length prefix
            T_ARRAY => return Err(self.invalid(at, format!("{what}: nested arrays are not supported"))),
            t => return Err(self.invalid(at, format!("{what}: unknown array element type {t}"))),
        };
        // Bound the count by what the file can possibly hold before looping or allocating.
        let min_bytes = len.checked_mul(elem_size).ok_or_else(|| self.invalid(at, format!("{what}: array length {len} overflows")))?;
        self.need(min_bytes, what)?;
        if len <= MAX_KEPT_ARRAY_LEN {
            let mut v = Vec::with_capacity(len as usize);
            for _ in 0..len {
                v.push(self.scalar(elem_type, what)?);
            }
            Ok(MetaValue::Array(v))
        } else {
            if elem_type == T_STRING {
                for _ in 0..len {
                    self.skip_string(what)?;
                }
            } else {
                self.skip(min_bytes, what)?;
            }
            Ok(MetaValue::LongArray { elem_type, len })
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

struct Part {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    file_bytes: u64,
    header_bytes: u64,
}

fn read_part(path: &Path) -> Result<Part> {
    let mut r = Reader::open(path)?;
    if r.len < 4 {
        let mut found = vec![0u8; r.len as usize];
        r.read_exact(&mut found, "magic")?;
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found });
    }
    let magic: [u8; 4] = r.bytes("magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: magic.to_vec() });
    }
    let version = r.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
    }
    let at = r.pos;
    let tensor_count = r.u64("tensor count")?;
    if tensor_count > MAX_TENSOR_COUNT {
        return Err(r.invalid(at, format!("tensor count {tensor_count} exceeds the limit of {MAX_TENSOR_COUNT}")));
    }
    let at = r.pos;
    let kv_count = r.u64("metadata count")?;
    if kv_count > MAX_KV_COUNT {
        return Err(r.invalid(at, format!("metadata key count {kv_count} exceeds the limit of {MAX_KV_COUNT}")));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let at = r.pos;
        let key = r.string(MAX_STRING_BYTES, &format!("key of metadata entry {i}"))?;
        let what = format!("metadata '{key}'");
        let ty = r.u32(&what)?;
        let value = r.value(ty, &what)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.invalid(at, format!("duplicate metadata key '{key}'")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => return Err(r.invalid(0, format!("general.alignment {v:?} is not a power of two"))),
        },
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count.min(4096) as usize);
    let mut offsets = Vec::with_capacity(tensor_count.min(4096) as usize);
    let mut names = std::collections::HashSet::new();
    for i in 0..tensor_count {
        let at = r.pos;
        let name = r.string(MAX_TENSOR_NAME_BYTES, &format!("name of tensor {i}"))?;
        let what = format!("tensor '{name}'");
        let at_dims = r.pos;
        let n_dims = r.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(r.invalid(at_dims, format!("{what}: {n_dims} dimensions (max {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64(&what)?;
            if d > i64::MAX as u64 {
                return Err(r.invalid(at_dims, format!("{what}: dimension {d} out of range")));
            }
            dims.push(d);
        }
        let ggml_type = r.u32(&what)?;
        let offset = r.u64(&what)?;
        let (blck, type_size) = ggml_type_block(ggml_type).ok_or_else(|| GgufError::UnknownTensorType {
            path: path.to_path_buf(),
            tensor: name.clone(),
            type_id: ggml_type,
        })?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % blck != 0 {
            return Err(r.invalid(at, format!("{what}: row length {ne0} is not a multiple of the block size {blck} of type {}", ggml_type_name(ggml_type).unwrap_or("?"))));
        }
        let overflow = || r.invalid(at, format!("{what}: size overflows (dims {dims:?})"));
        let mut rows: u64 = 1;
        for &d in dims.iter().skip(1) {
            rows = rows.checked_mul(d).ok_or_else(overflow)?;
        }
        if ne0.checked_mul(rows).is_none_or(|n| n > i64::MAX as u64) {
            return Err(overflow());
        }
        let bytes = (ne0 / blck).checked_mul(type_size).and_then(|b| b.checked_mul(rows)).ok_or_else(overflow)?;
        if offset % alignment != 0 {
            return Err(r.invalid(at, format!("{what}: data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        if !names.insert(name.clone()) {
            return Err(r.invalid(at, format!("duplicate tensor name '{name}'")));
        }
        offsets.push(offset);
        tensors.push(TensorInfo { name, dims, ggml_type, bytes });
    }

    // Start of the tensor data: end of the header rounded up to the alignment.
    let header_bytes = r.pos.div_ceil(alignment) * alignment;
    // Verify (without reading it) that the data of every tensor lies in the file.
    for (t, &off) in tensors.iter().zip(&offsets) {
        let end = header_bytes.checked_add(off).and_then(|e| e.checked_add(t.bytes));
        match end {
            Some(end) if end <= r.len => {}
            _ => {
                return Err(r.truncated(
                    &format!("data of tensor '{}'", t.name),
                    end.unwrap_or(u64::MAX),
                ))
            }
        }
    }
    Ok(Part { version, metadata, tensors, file_bytes: r.len, header_bytes })
}

/// Reads the GGUF header of `path` (metadata + tensor infos, no tensor data).
///
/// Split models: if the file has `split.count` > 1 its name must follow
/// llama.cpp's `{prefix}-{no:05}-of-{count:05}.gguf` convention (any part may
/// be given); all parts are read, their tensors concatenated in part order,
/// and the metadata of part 1 is used. A missing part gives
/// [`GgufError::MissingSplitPart`].
pub fn read_header(path: &Path) -> Result<GgufHeader> {
    let first = read_part(path)?;
    let count = first.metadata.get("split.count").and_then(MetaValue::as_u64).unwrap_or(1);
    if count <= 1 {
        return Ok(build_header(vec![(path.to_path_buf(), first)]));
    }
    let invalid = |what: String| GgufError::Invalid { path: path.to_path_buf(), offset: 0, what };
    if count > MAX_SPLIT_COUNT {
        return Err(invalid(format!("split.count {count} exceeds {MAX_SPLIT_COUNT}")));
    }
    let no = first.metadata.get("split.no").and_then(MetaValue::as_u64).unwrap_or(0);
    if no >= count {
        return Err(invalid(format!("split.no {no} is not below split.count {count}")));
    }
    let suffix = format!("-{:05}-of-{:05}.gguf", no + 1, count);
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let prefix = file_name.strip_suffix(&suffix).ok_or_else(|| {
        invalid(format!("file is part {} of a {count}-part split model but its name does not end with '{suffix}', so the other parts cannot be found", no + 1))
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut first = Some(first);
    let mut parts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let p = dir.join(format!("{prefix}-{:05}-of-{count:05}.gguf", i + 1));
        let part = if i == no {
            first.take().expect("the given part is used once")
        } else {
            if !p.is_file() {
                return Err(GgufError::MissingSplitPart { path: p, index: i + 1, count });
            }
            read_part(&p)?
        };
        let pc = part.metadata.get("split.count").and_then(MetaValue::as_u64);
        let pn = part.metadata.get("split.no").and_then(MetaValue::as_u64);
        if pc != Some(count) || pn.is_some_and(|n| n != i) {
            return Err(GgufError::Invalid {
                path: p,
                offset: 0,
                what: format!("expected part {} of {count} (split.no {i}), found split.count {pc:?} split.no {pn:?}", i + 1),
            });
        }
        parts.push((p, part));
    }
    let header = build_header(parts);
    if let Some(expected) = header.get_u64("split.tensors.count") {
        if expected != header.tensors.len() as u64 {
            return Err(invalid(format!("split.tensors.count is {expected} but the parts hold {} tensors", header.tensors.len())));
        }
    }
    Ok(header)
}

fn build_header(parts: Vec<(PathBuf, Part)>) -> GgufHeader {
    let mut h = GgufHeader {
        version: 0,
        architecture: None,
        name: None,
        metadata: BTreeMap::new(),
        tensors: Vec::new(),
        file_bytes: 0,
        header_bytes: 0,
        parts: Vec::new(),
    };
    for (i, (path, part)) in parts.into_iter().enumerate() {
        if i == 0 {
            h.version = part.version;
            h.metadata = part.metadata;
        }
        h.tensors.extend(part.tensors);
        h.file_bytes += part.file_bytes;
        h.header_bytes += part.header_bytes;
        h.parts.push(path);
    }
    h.architecture = h.get_str("general.architecture").map(str::to_string);
    h.name = h.get_str("general.name").map(str::to_string);
    h
}

// ---------------------------------------------------------------------------
// Accessors and model parameters
// ---------------------------------------------------------------------------

/// Hyper-parameters relevant to memory, derived from the metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelParams {
    pub architecture: Option<String>,
    /// `{arch}.block_count` (0 if absent).
    pub n_layers: u32,
    /// `{arch}.context_length` (training context).
    pub n_ctx_train: Option<u64>,
    /// `{arch}.embedding_length`.
    pub n_embd: u64,
    /// `{arch}.vocab_size`, else length of `tokenizer.ggml.tokens`, else `token_embd.weight` `dims[1]`.
    pub n_vocab: Option<u64>,
    /// `{arch}.attention.head_count` (max over layers if per-layer).
    pub n_head: u64,
    /// KV heads per layer (`{arch}.attention.head_count_kv`, scalar or per-layer
    /// array; default `n_head`). 0 for layers without attention (recurrent layers
    /// of hybrid models) and for layers that reuse another layer's KV cache.
    pub n_head_kv: Vec<u64>,
    /// `{arch}.attention.key_length`, default `n_embd / n_head`.
    pub head_dim_k: u64,
    /// `{arch}.attention.value_length`, default `n_embd / n_head`.
    pub head_dim_v: u64,
    /// `{arch}.feed_forward_length` (max over layers if per-layer).
    pub n_ff: Option<u64>,
    /// `{arch}.expert_count`, `{arch}.expert_used_count` (MoE).
    pub n_expert: Option<u64>,
    pub n_expert_used: Option<u64>,
    /// `{arch}.attention.sliding_window` (tokens), if the model uses SWA.
    pub sliding_window: Option<u64>,
    /// Per layer: true = sliding-window layer. `None` when the model has no
    /// sliding window or the pattern cannot be determined. See [`swa_layers`].
    pub swa_layers: Option<Vec<bool>>,
    /// True when the model has recurrent state (Mamba/RWKV style `ssm.*` or
    /// `wkv.*` metadata).
    pub recurrent: bool,
    /// Per-sequence recurrent state in bytes per recurrent layer (F32), if known.
    pub recurrent_state_bytes_per_layer: Option<u64>,
    /// Number of layers holding recurrent state.
    pub n_recurrent_layers: u32,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    /// `"{arch}.{suffix}"` (e.g. `arch_key("block_count")` → `"gemma3.block_count"`).
    pub fn arch_key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.architecture.as_deref().unwrap_or(""))
    }
    pub fn arch_get(&self, suffix: &str) -> Option<&MetaValue> {
        self.get(&self.arch_key(suffix))
    }
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.arch_get(suffix)?.as_u64()
    }
    pub fn arch_f64(&self, suffix: &str) -> Option<f64> {
        self.arch_get(suffix)?.as_f64()
    }
    pub fn arch_str(&self, suffix: &str) -> Option<&str> {
        self.arch_get(suffix)?.as_str()
    }
    /// A value that may be a scalar or a per-layer array, expanded to `n` layers.
    /// A scalar is repeated; an array is used as is when its length is `n`,
    /// otherwise truncated/padded with its last element. `None` if absent or not numeric.
    pub fn arch_u64_per_layer(&self, suffix: &str, n: usize) -> Option<Vec<u64>> {
        match self.arch_get(suffix)? {
            MetaValue::Array(a) => {
                let v: Option<Vec<u64>> = a.iter().map(MetaValue::as_u64).collect();
                let mut v = v?;
                let last = *v.last()?;
                v.resize(n, last);
                Some(v)
            }
            other => Some(vec![other.as_u64()?; n]),
        }
    }

    /// `{arch}.block_count`; `None` if absent or implausible (> [`MAX_LAYERS`]).
    pub fn n_layers(&self) -> Option<u32> {
        self.arch_u64("block_count").filter(|&n| n <= MAX_LAYERS as u64).map(|n| n as u32)
    }

    /// `{arch}.context_length` (training context).
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// Sum of all tensor bytes. Equals llama.cpp's `llama_model_size()`
    /// (the loader sums `ggml_nbytes` of every tensor in the file(s)).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().fold(0, |a, t| a.saturating_add(t.bytes))
    }

    /// Bytes of the tensors named `blk.{i}.*`, indexed by `i`. The length is
    /// `max(block_count, highest blk index + 1)`.
    pub fn layer_bytes(&self) -> Vec<u64> {
        let n = self.n_layers().unwrap_or(0) as usize;
        let max_idx = self.tensors.iter().filter_map(TensorInfo::layer).max().map_or(0, |m| m + 1);
        // Layer indices come from the file; never allocate more than one entry per tensor.
        let len = n.max(max_idx.min(self.tensors.len() + n));
        let mut v = vec![0u64; len];
        for t in &self.tensors {
            if let Some(i) = t.layer() {
                if let Some(slot) = v.get_mut(i) {
                    *slot = slot.saturating_add(t.bytes);
                }
            }
        }
        v
    }

    /// Bytes of all tensors that are not `blk.{i}.*` (token embedding, output
    /// head, output norm, rope tables, …).
    pub fn non_layer_bytes(&self) -> u64 {
        self.tensors.iter().filter(|t| t.layer().is_none()).fold(0, |a, t| a.saturating_add(t.bytes))
    }

    /// Bytes llama.cpp puts on the *output* device when the output layer is
    /// offloaded (`n_gpu_layers > n_layers`): `output.weight` + `output_norm.*`
    /// (+ `output.bias`). For models with tied embeddings (no `output.weight`)
    /// llama.cpp duplicates `token_embd.weight` as the output matrix, so its
    /// size is counted here even though it is stored once in the file.
    /// `token_embd` itself (the input layer) always stays in host memory.
    pub fn output_layer_bytes(&self) -> u64 {
        let mut has_output = false;
        let mut sum = 0;
        for t in &self.tensors {
            if t.name == "output.weight" {
                has_output = true;
            }
            if t.name.starts_with("output.") || t.name.starts_with("output_norm.") {
                sum = sat_add(&[sum, t.bytes]);
            }
        }
        if !has_output {
            sum = sat_add(&[sum, self.tensors.iter().find(|t| t.name == "token_embd.weight").map_or(0, |t| t.bytes)]);
        }
        sum
    }

    /// Vocabulary size (see [`ModelParams::n_vocab`]).
    pub fn n_vocab(&self) -> Option<u64> {
        self.arch_u64("vocab_size")
            .or_else(|| self.get("tokenizer.ggml.tokens").and_then(MetaValue::array_len))
            .or_else(|| self.tensors.iter().find(|t| t.name == "token_embd.weight").and_then(|t| t.dims.get(1).copied()))
    }

    /// Hyper-parameters relevant to memory. Missing values default to 0 / `None`.
    pub fn model_params(&self) -> ModelParams {
        let n_layers = self.n_layers().unwrap_or(0);
        let nl = n_layers as usize;
        let n_embd = self.arch_u64("embedding_length").unwrap_or(0);
        let n_head = self
            .arch_u64_per_layer("attention.head_count", nl.max(1))
            .and_then(|v| v.into_iter().max())
            .unwrap_or(0);
        let mut n_head_kv = self
            .arch_u64_per_layer("attention.head_count_kv", nl)
            .unwrap_or_else(|| vec![n_head; nl]);
        let default_head_dim = n_embd.checked_div(n_head).unwrap_or(0);
        let head_dim_k = self.arch_u64("attention.key_length").unwrap_or(default_head_dim);
        let head_dim_v = self.arch_u64("attention.value_length").unwrap_or(default_head_dim);

        // Layers that reuse the KV cache of an earlier layer (llama.cpp
        // `n_layer_kv_from_start`): gemma4 via shared_kv_layers, gemma3n fixed 20.
        let kv_from_start = match self.arch_u64("attention.shared_kv_layers") {
            Some(shared) => Some((n_layers as u64).saturating_sub(shared)),
            None if self.architecture.as_deref() == Some("gemma3n") => Some(20),
            None => None,
        };
        if let Some(k) = kv_from_start {
            for (il, h) in n_head_kv.iter_mut().enumerate() {
                if il as u64 >= k {
                    *h = 0;
                }
            }
        }

        let sliding_window = self.arch_u64("attention.sliding_window").filter(|&w| w > 0);
        let swa = sliding_window.and_then(|_| swa_layers(self, nl));

        // Recurrent state (llama.cpp hparams n_embd_r / n_embd_s, F32 cache).
        let d_conv = self.arch_u64("ssm.conv_kernel").unwrap_or(0);
        let d_inner = self.arch_u64("ssm.inner_size").unwrap_or(0);
        let d_state = self.arch_u64("ssm.state_size").unwrap_or(0);
        let n_group = self.arch_u64("ssm.group_count").unwrap_or(0);
        let wkv_head = self.arch_u64("wkv.head_size").unwrap_or(0);
        let (recurrent, per_layer) = if wkv_head > 0 {
            let shift = self.arch_u64("token_shift_count").unwrap_or(2);
            (true, Some(sat_mul(&[sat_add(&[sat_mul(&[shift, n_embd]), sat_mul(&[n_embd, wkv_head])]), 4])))
        } else if d_inner > 0 || d_state > 0 {
            let r = sat_mul(&[d_conv.saturating_sub(1), sat_add(&[d_inner, sat_mul(&[2, n_group, d_state])])]);
            (true, Some(sat_mul(&[sat_add(&[r, sat_mul(&[d_state, d_inner])]), 4])))
        } else {
            (false, None)
        };
        // RWKV: every layer is recurrent. Mamba-style: hybrid models mark the
        // attention-free layers with head_count_kv = 0; if no layer has KV
        // heads the model is purely recurrent. (Hybrids that encode the layer
        // layout differently, e.g. qwen3next's full_attention_interval, are
        // counted as attention-only here: an under-estimate of the small
        // recurrent state.)
        let n_recurrent_layers = if !recurrent {
            0
        } else if wkv_head > 0 || n_head_kv.iter().all(|&h| h == 0) {
            n_head_kv.iter_mut().for_each(|h| *h = 0);
            n_layers
        } else {
            n_head_kv.iter().filter(|&&h| h == 0).count() as u32
        };

        ModelParams {
            architecture: self.architecture.clone(),
            n_layers,
            n_ctx_train: self.context_length(),
            n_embd,
            n_vocab: self.n_vocab(),
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: self.arch_u64_per_layer("feed_forward_length", nl.max(1)).and_then(|v| v.into_iter().max()),
            n_expert: self.arch_u64("expert_count"),
            n_expert_used: self.arch_u64("expert_used_count"),
            sliding_window,
            swa_layers: swa,
            recurrent,
            recurrent_state_bytes_per_layer: per_layer,
            n_recurrent_layers,
        }
    }
}

/// Which layers use the sliding window, following llama.cpp:
///
/// 1. `{arch}.attention.sliding_window_pattern` as a per-layer bool array → used as is.
/// 2. As an integer `n` (or, if absent, llama.cpp's built-in default for the
///    architecture: gemma2 2, gemma3/gemma-embedding 6, gemma3n 5, cohere2 4,
///    gpt-oss 2): layer `il` is SWA iff `il % n < n - 1`, i.e. every n-th layer
///    (il = n-1, 2n-1, …) is global; `n == 0` means all layers are SWA.
///    (llama.cpp `set_swa_pattern(n, dense_first = false)`.)
/// 3. Unknown architecture without the key → `None`.
pub fn swa_layers(h: &GgufHeader, n_layers: usize) -> Option<Vec<bool>> {
    let pattern = match h.arch_get("attention.sliding_window_pattern") {
        Some(MetaValue::Array(a)) => {
            let mut v: Vec<bool> = a.iter().map(|x| x.as_bool().or_else(|| x.as_u64().map(|n| n != 0))).collect::<Option<_>>()?;
            v.resize(n_layers, false);
            return Some(v);
        }
        Some(v) => v.as_u64()?,
        None => match h.architecture.as_deref()? {
            "gemma2" | "gpt-oss" => 2,
            "gemma3" | "gemma-embedding" => 6,
            "gemma3n" => 5,
            "cohere2" => 4,
            _ => return None,
        },
    };
    Some((0..n_layers as u64).map(|il| pattern == 0 || il % pattern < pattern - 1).collect())
}

// ---------------------------------------------------------------------------
// Memory estimate
// ---------------------------------------------------------------------------

/// KV cache element type (llama.cpp `--cache-type-k/-v`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(non_camel_case_types)]
pub enum KvCacheType {
    F32,
    #[default]
    F16,
    BF16,
    Q8_0,
    Q5_1,
    Q5_0,
    Q4_1,
    Q4_0,
    IQ4_NL,
}

impl KvCacheType {
    /// ggml type id.
    pub fn ggml_type(self) -> u32 {
        match self {
            KvCacheType::F32 => 0,
            KvCacheType::F16 => 1,
            KvCacheType::BF16 => 30,
            KvCacheType::Q8_0 => 8,
            KvCacheType::Q5_1 => 7,
            KvCacheType::Q5_0 => 6,
            KvCacheType::Q4_1 => 3,
            KvCacheType::Q4_0 => 2,
            KvCacheType::IQ4_NL => 20,
        }
    }
    /// Average bytes per element (F16: 2.0, Q8_0: 34/32, Q4_0: 18/32).
    pub fn bytes_per_element(self) -> f64 {
        let (b, s) = ggml_type_block(self.ggml_type()).expect("cache types are known");
        s as f64 / b as f64
    }
    /// Bytes of a row of `n` elements (rounded up to whole blocks).
    pub fn row_bytes(self, n: u64) -> u64 {
        let (b, s) = ggml_type_block(self.ggml_type()).expect("cache types are known");
        n.div_ceil(b).saturating_mul(s)
    }
    /// Parses llama.cpp names: "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl".
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => KvCacheType::F32,
            "f16" => KvCacheType::F16,
            "bf16" => KvCacheType::BF16,
            "q8_0" => KvCacheType::Q8_0,
            "q5_1" => KvCacheType::Q5_1,
            "q5_0" => KvCacheType::Q5_0,
            "q4_1" => KvCacheType::Q4_1,
            "q4_0" => KvCacheType::Q4_0,
            "iq4_nl" => KvCacheType::IQ4_NL,
            _ => return None,
        })
    }
}

/// Result of [`estimate`]. All sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Sum of all tensors (= llama.cpp model size).
    pub weights_bytes: u64,
    /// KV cache, all layers (SWA layers at full size, llama.cpp `swa_full = true`).
    pub kv_bytes: u64,
    /// Recurrent state (Mamba/RWKV), 0 for attention-only models.
    pub recurrent_bytes: u64,
    /// Compute buffer margin, see [`compute_buffer_estimate`].
    pub compute_bytes: u64,
    /// weights + kv + recurrent + compute.
    pub total_bytes: u64,
    /// KV bytes of each layer (0 for layers without a KV cache).
    pub kv_bytes_per_layer: Vec<u64>,
    /// KV cells in total over all sequences (after llama.cpp's padding).
    pub kv_cells: u64,
    /// KV cells per sequence (slot).
    pub n_ctx_seq: u64,
}

/// KV cells llama.cpp allocates for `ctx_per_slot × parallel` with one KV
/// stream per sequence (`kv_unified = false`, the server's setting):
/// `n_ctx = pad256(ctx × parallel)`, `n_ctx_seq = pad256(n_ctx / parallel)`,
/// cells = `n_ctx_seq × parallel`. Returns `(total cells, cells per sequence)`.
/// (With `kv_unified = true` llama.cpp allocates `pad256(ctx × parallel)`,
/// which is never more.)
pub fn kv_cells(ctx_per_slot: u64, parallel: u64) -> (u64, u64) {
    let parallel = parallel.max(1);
    let n_ctx = ctx_per_slot.saturating_mul(parallel).div_ceil(KV_CELL_PAD).saturating_mul(KV_CELL_PAD);
    let n_ctx_seq = (n_ctx / parallel).div_ceil(KV_CELL_PAD).saturating_mul(KV_CELL_PAD).max(KV_CELL_PAD);
    (n_ctx_seq.saturating_mul(parallel), n_ctx_seq)
}

/// The default micro-batch llama.cpp reserves the compute graph for (`n_ubatch`).
pub const DEFAULT_N_UBATCH: u64 = 512;

/// Compute-buffer margin — an **estimate**, not a measurement.
///
/// llama.cpp sizes its compute buffer by reserving the graph for one
/// micro-batch of `n_ubatch` tokens; the graph allocator reuses memory, so
/// the peak is roughly the larger of two phases plus the graph inputs:
///
/// ```text
/// logits    = n_ubatch × n_vocab × 4                       (F32 output of the last matmul)
/// attention = n_ubatch × n_ctx_seq × n_head × 4            (KQ scores; only without flash attention)
///           + n_ubatch × (4·n_embd + 2·n_ff + 3·n_head·head_dim) × 4   (activations)
/// masks     = n_ubatch × n_ctx_seq × 4 × (2 if the model mixes SWA and global layers else 1)
/// compute   = 64 MiB + max(logits, attention) + masks
/// ```
///
/// Calibration against the vendored llama.cpp (CPU backend) with
/// gemma-3-270m (262k vocabulary, so the logits dominate), n_ubatch 512:
///
/// | n_ctx_seq × seqs | flash attn | llama.cpp | this estimate |
/// |---|---|---|---|
/// | 4096 × 4  | off | 536.3 MiB | 592 MiB |
/// | 4096 × 4  | on  | 526.3 MiB | 592 MiB |
/// | 32768 × 1 | off | 648.3 MiB | 704 MiB |
/// | 32768 × 1 | on  | 582.3 MiB | 704 MiB |
/// | 1024 × 1  | on  | 521.5 MiB | 580 MiB |
///
/// i.e. about 40–120 MiB high, by design. Not included: the host-side output
/// buffer (`n_seq × n_vocab × 4`, a few MiB) and per-process backend overhead
/// (e.g. the CUDA context, typically several hundred MiB per GPU). With
/// several GPUs each one gets its own compute buffer. The scheduler should
/// replace the estimate by the measured value after the first load.
pub fn compute_buffer_estimate(p: &ModelParams, n_ubatch: u64, n_ctx_seq: u64, flash_attn: bool) -> u64 {
    const FIXED: u64 = 64 << 20;
    const F32: u64 = 4;
    let logits = sat_mul(&[n_ubatch, p.n_vocab.unwrap_or(0), F32]);
    let scores = if flash_attn { 0 } else { sat_mul(&[n_ubatch, n_ctx_seq, p.n_head, F32]) };
    let head_dim = p.head_dim_k.max(p.head_dim_v);
    let per_token = sat_add(&[
        sat_mul(&[4, p.n_embd]),
        sat_mul(&[2, p.n_ff.unwrap_or(sat_mul(&[4, p.n_embd]))]),
        sat_mul(&[3, p.n_head, head_dim]),
    ]);
    let act = sat_mul(&[n_ubatch, per_token, F32]);
    let mixed_swa = p.swa_layers.as_ref().is_some_and(|v| v.contains(&true) && v.contains(&false));
    let masks = sat_mul(&[n_ubatch, n_ctx_seq, F32, if mixed_swa { 2 } else { 1 }]);
    sat_add(&[FIXED, logits.max(sat_add(&[scores, act])), masks])
}

/// Estimates the memory to serve `header`'s model with `parallel` slots of
/// `ctx_per_slot` tokens each (`ctx_per_slot == 0` → training context, as
/// llama.cpp does; the server additionally clamps to the training context —
/// pass the clamped value). The compute margin assumes n_ubatch 512 and
/// flash attention on (llama.cpp's `auto` default resolves to on for the
/// CPU, CUDA and Metal backends); call [`compute_buffer_estimate`] directly
/// for other settings. KV for SWA layers is full size (llama.cpp
/// default `swa_full = true`); the SWA layout is in
/// [`GgufHeader::model_params`]. K and V use the same `kv_type`.
pub fn estimate(header: &GgufHeader, ctx_per_slot: u32, parallel: u32, kv_type: KvCacheType) -> MemoryEstimate {
    let p = header.model_params();
    let ctx = if ctx_per_slot == 0 { p.n_ctx_train.unwrap_or(4096) } else { ctx_per_slot as u64 };
    let parallel = parallel.max(1) as u64;
    let (cells, n_ctx_seq) = kv_cells(ctx, parallel);
    let kv_bytes_per_layer: Vec<u64> = p
        .n_head_kv
        .iter()
        .map(|&h| {
            let k = kv_type.row_bytes(h.saturating_mul(p.head_dim_k));
            let v = kv_type.row_bytes(h.saturating_mul(p.head_dim_v));
            cells.saturating_mul(k.saturating_add(v))
        })
        .collect();
    let kv_bytes = sat_add(&kv_bytes_per_layer);
    let recurrent_bytes = sat_mul(&[p.recurrent_state_bytes_per_layer.unwrap_or(0), p.n_recurrent_layers as u64, parallel]);
    let compute_bytes = compute_buffer_estimate(&p, DEFAULT_N_UBATCH, n_ctx_seq, true);
    let weights_bytes = header.weight_bytes();
    MemoryEstimate {
        weights_bytes,
        kv_bytes,
        recurrent_bytes,
        compute_bytes,
        total_bytes: sat_add(&[weights_bytes, kv_bytes, recurrent_bytes, compute_bytes]),
        kv_bytes_per_layer,
        kv_cells: cells,
        n_ctx_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// A fresh, empty temporary directory, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("vram_llm_gguf_{}_{tag}_{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Values for the test writer, with their exact GGUF type.
    #[derive(Clone)]
    enum V {
        U8(u8),
        I8(i8),
        U16(u16),
        I16(i16),
        U32(u32),
        I32(i32),
        F32(f32),
        Bool(bool),
        Str(String),
        U64(u64),
        I64(i64),
        F64(f64),
        Arr(u32, Vec<V>),
    }

    fn s(x: &str) -> V {
        V::Str(x.to_string())
    }

    /// Minimal GGUF writer for tests.
    #[derive(Default)]
    struct W {
        b: Vec<u8>,
    }
    impl W {
        fn u32(&mut self, v: u32) {
            self.b.extend_from_slice(&v.to_le_bytes());
        }
        fn u64(&mut self, v: u64) {
            self.b.extend_from_slice(&v.to_le_bytes());
        }
        fn str(&mut self, v: &str) {
            self.u64(v.len() as u64);
            self.b.extend_from_slice(v.as_bytes());
        }
        fn ty(v: &V) -> u32 {
            match v {
                V::U8(_) => T_U8,
                V::I8(_) => T_I8,
                V::U16(_) => T_U16,
                V::I16(_) => T_I16,
                V::U32(_) => T_U32,
                V::I32(_) => T_I32,
                V::F32(_) => T_F32,
                V::Bool(_) => T_BOOL,
                V::Str(_) => T_STRING,
                V::U64(_) => T_U64,
                V::I64(_) => T_I64,
                V::F64(_) => T_F64,
                V::Arr(..) => T_ARRAY,
            }
        }
        fn val(&mut self, v: &V) {
            match v {
                V::U8(x) => self.b.push(*x),
                V::I8(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::U16(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::I16(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::U32(x) => self.u32(*x),
                V::I32(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::F32(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::Bool(x) => self.b.push(*x as u8),
                V::Str(x) => self.str(x),
                V::U64(x) => self.u64(*x),
                V::I64(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::F64(x) => self.b.extend_from_slice(&x.to_le_bytes()),
                V::Arr(et, items) => {
                    self.u32(*et);
                    self.u64(items.len() as u64);
                    for i in items {
                        self.val(i);
                    }
                }
            }
        }
    }

    /// (name, dims, ggml type, expected bytes computed by hand)
    type T<'a> = (&'a str, Vec<u64>, u32, u64);

    /// Builds a complete GGUF file: header, tensor infos, padding, zeroed data.
    fn build(version: u32, kvs: &[(&str, V)], tensors: &[T], alignment: u64) -> Vec<u8> {
        let mut w = W::default();
        w.b.extend_from_slice(b"GGUF");
        w.u32(version);
        w.u64(tensors.len() as u64);
        w.u64(kvs.len() as u64);
        for (k, v) in kvs {
            w.str(k);
            w.u32(W::ty(v));
            w.val(v);
        }
        let mut off = 0u64;
        for (name, dims, ty, bytes) in tensors {
            w.str(name);
            w.u32(dims.len() as u32);
            for d in dims {
                w.u64(*d);
            }
            w.u32(*ty);
            w.u64(off);
            off = (off + bytes).div_ceil(alignment) * alignment;
        }
        let data_start = (w.b.len() as u64).div_ceil(alignment) * alignment;
        w.b.resize(data_start as usize, 0);
        w.b.resize((data_start + off) as usize, 0);
        w.b
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    fn sample_kvs() -> Vec<(&'static str, V)> {
        vec![
            ("general.architecture", s("llama")),
            ("general.name", s("Tiny Test ü")),
            ("t.u8", V::U8(200)),
            ("t.i8", V::I8(-100)),
            ("t.u16", V::U16(60000)),
            ("t.i16", V::I16(-30000)),
            ("t.u32", V::U32(4_000_000_000)),
            ("t.i32", V::I32(-2_000_000_000)),
            ("t.f32", V::F32(1.5)),
            ("t.bool", V::Bool(true)),
            ("t.u64", V::U64(u64::MAX)),
            ("t.i64", V::I64(i64::MIN)),
            ("t.f64", V::F64(-2.25)),
            ("t.empty", s("")),
            ("t.arr_u32", V::Arr(T_U32, vec![V::U32(1), V::U32(2), V::U32(3)])),
            ("t.arr_str", V::Arr(T_STRING, vec![s("a"), s("bc")])),
            ("t.arr_bool", V::Arr(T_BOOL, vec![V::Bool(false), V::Bool(true)])),
            ("t.arr_empty", V::Arr(T_F32, vec![])),
            ("t.long_u8", V::Arr(T_U8, (0..1025).map(|i| V::U8(i as u8)).collect())),
            ("tokenizer.ggml.tokens", V::Arr(T_STRING, (0..1030).map(|i| s(&format!("t{}", i % 10))).collect())),
            ("llama.block_count", V::U32(2)),
            ("llama.context_length", V::U32(2048)),
            ("llama.embedding_length", V::U32(64)),
            ("llama.feed_forward_length", V::U32(128)),
            ("llama.attention.head_count", V::U32(4)),
            ("llama.attention.head_count_kv", V::Arr(T_I32, vec![V::I32(2), V::I32(1)])),
            ("llama.attention.value_length", V::U32(8)),
        ]
    }

    fn sample_tensors() -> Vec<T<'static>> {
        vec![
            ("token_embd.weight", vec![64, 8], 1, 64 * 8 * 2),   // F16
            ("blk.0.attn_q.weight", vec![64, 2], 2, 2 * 2 * 18),       // Q4_0
            ("blk.0.attn_norm.weight", vec![64], 0, 64 * 4),            // F32
            ("blk.1.ffn_up.weight", vec![256, 3], 12, 3 * 144),         // Q4_K
            ("blk.1.ffn_down.weight", vec![32, 2, 3], 8, 6 * 34),       // Q8_0
            ("blk.1.exp.weight", vec![64, 1, 1, 2], 39, 2 * 2 * 17),    // MXFP4
            ("output.weight", vec![64, 8], 30, 64 * 8 * 2),       // BF16
            ("blk.1.q6.weight", vec![512], 14, 2 * 210),                // Q6_K
            // Last tensor ends on the alignment, so the file has no trailing padding.
            ("output_norm.weight", vec![64], 0, 256),                   // F32
        ]
    }

    #[test]
    fn type_table_matches_ggml() {
        // Spot checks of ggml type_traits (block size, bytes per block).
        assert_eq!(ggml_type_block(0), Some((1, 4)));
        assert_eq!(ggml_type_block(8), Some((32, 34)));
        assert_eq!(ggml_type_block(12), Some((256, 144)));
        assert_eq!(ggml_type_block(23), Some((256, 136)));
        assert_eq!(ggml_type_block(30), Some((1, 2)));
        assert_eq!(ggml_type_block(39), Some((32, 17)));
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(ggml_type_block(removed), None, "type {removed}");
            assert_eq!(ggml_type_name(removed), None, "type {removed}");
        }
        for t in 0..43 {
            assert_eq!(ggml_type_block(t).is_some(), ggml_type_name(t).is_some(), "type {t}");
        }
    }

    #[test]
    fn parse_synthetic_file() {
        let dir = TempDir::new("parse");
        for (version, alignment) in [(3u32, 32u64), (2, 64)] {
            let mut kvs = sample_kvs();
            if alignment != 32 {
                kvs.push(("general.alignment", V::U32(alignment as u32)));
            }
            let tensors = sample_tensors();
            let bytes = build(version, &kvs, &tensors, alignment);
            let path = dir.path(&format!("tiny-v{version}.gguf"));
            write(&path, &bytes);
            let h = read_header(&path).unwrap();

            assert_eq!(h.version, version);
            assert_eq!(h.architecture.as_deref(), Some("llama"));
            assert_eq!(h.name.as_deref(), Some("Tiny Test ü"));
            assert_eq!(h.file_bytes, bytes.len() as u64);
            assert_eq!(h.parts, vec![path.clone()]);
            assert_eq!(h.header_bytes % alignment, 0);
            assert_eq!(h.metadata.len(), kvs.len());

            assert_eq!(h.get_u64("t.u8"), Some(200));
            assert_eq!(h.get_i64("t.i8"), Some(-100));
            assert_eq!(h.get_u64("t.u16"), Some(60000));
            assert_eq!(h.get_i64("t.i16"), Some(-30000));
            assert_eq!(h.get_u64("t.u32"), Some(4_000_000_000));
            assert_eq!(h.get_i64("t.i32"), Some(-2_000_000_000));
            assert_eq!(h.get_f64("t.f32"), Some(1.5));
            assert_eq!(h.get_bool("t.bool"), Some(true));
            assert_eq!(h.get_u64("t.u64"), Some(u64::MAX));
            assert_eq!(h.get_i64("t.u64"), None);
            assert_eq!(h.get_i64("t.i64"), Some(i64::MIN));
            assert_eq!(h.get_u64("t.i64"), None);
            assert_eq!(h.get_f64("t.f64"), Some(-2.25));
            assert_eq!(h.get_str("t.empty"), Some(""));
            assert_eq!(h.get_str("t.u8"), None);
            assert_eq!(h.get("missing"), None);
            assert_eq!(h.get("t.arr_u32"), Some(&MetaValue::Array(vec![MetaValue::U64(1), MetaValue::U64(2), MetaValue::U64(3)])));
            assert_eq!(h.get("t.arr_str"), Some(&MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("bc".into())])));
            assert_eq!(h.get("t.arr_bool"), Some(&MetaValue::Array(vec![MetaValue::Bool(false), MetaValue::Bool(true)])));
            assert_eq!(h.get("t.arr_empty"), Some(&MetaValue::Array(vec![])));
            assert_eq!(h.get("t.long_u8"), Some(&MetaValue::LongArray { elem_type: T_U8, len: 1025 }));
            assert_eq!(h.get("tokenizer.ggml.tokens"), Some(&MetaValue::LongArray { elem_type: T_STRING, len: 1030 }));
            if alignment != 32 {
                assert_eq!(h.get_u64("general.alignment"), Some(alignment));
            }

            assert_eq!(h.tensors.len(), tensors.len());
            for (t, (name, dims, ty, bytes)) in h.tensors.iter().zip(&tensors) {
                assert_eq!(&t.name, name);
                assert_eq!(&t.dims, dims);
                assert_eq!(t.ggml_type, *ty);
                assert_eq!(t.bytes, *bytes, "{name}");
            }
            let total: u64 = tensors.iter().map(|t| t.3).sum();
            assert_eq!(h.weight_bytes(), total);
            let l0 = 2 * 2 * 18 + 256;
            let l1 = 3 * 144 + 6 * 34 + 68 + 420;
            assert_eq!(h.layer_bytes(), vec![l0, l1]);
            assert_eq!(h.non_layer_bytes(), 64 * 8 * 2 * 2 + 256);
            assert_eq!(h.non_layer_bytes() + l0 + l1, total);
            assert_eq!(h.output_layer_bytes(), 64 * 8 * 2 + 256);
            assert!(h.file_bytes - h.header_bytes >= total);

            assert_eq!(h.n_layers(), Some(2));
            assert_eq!(h.context_length(), Some(2048));
            let p = h.model_params();
            assert_eq!(p.n_embd, 64);
            assert_eq!(p.n_head, 4);
            assert_eq!(p.n_head_kv, vec![2, 1]);
            assert_eq!(p.head_dim_k, 16); // default n_embd / n_head
            assert_eq!(p.head_dim_v, 8);
            assert_eq!(p.n_ff, Some(128));
            assert_eq!(p.n_vocab, Some(1030));
            assert_eq!(p.sliding_window, None);
            assert_eq!(p.swa_layers, None);
            assert!(!p.recurrent);

            // KV: ctx 100 × 3 slots → n_ctx 512 → n_ctx_seq pad(170) = 256 → 768 cells.
            let e = estimate(&h, 100, 3, KvCacheType::F16);
            assert_eq!((e.kv_cells, e.n_ctx_seq), (768, 256));
            assert_eq!(e.kv_bytes_per_layer, vec![768 * 2 * (16 + 8) * 2, 768 * (16 + 8) * 2]);
            assert_eq!(e.kv_bytes, e.kv_bytes_per_layer.iter().sum::<u64>());
            assert_eq!(e.weights_bytes, total);
            assert_eq!(e.total_bytes, e.weights_bytes + e.kv_bytes + e.recurrent_bytes + e.compute_bytes);
            let q8 = estimate(&h, 100, 3, KvCacheType::Q8_0);
            // Rows of 2*16=32 and 2*8=16 elements: 34 + ceil(16/32)*34 bytes.
            assert_eq!(q8.kv_bytes_per_layer[0], 768 * (34 + 34));
        }
    }

    #[test]
    fn kv_cells_padding() {
        assert_eq!(kv_cells(4096, 4), (16384, 4096));
        assert_eq!(kv_cells(1000, 1), (1024, 1024));
        assert_eq!(kv_cells(100, 3), (768, 256));
        assert_eq!(kv_cells(1, 1), (256, 256));
        assert_eq!(kv_cells(0, 0), (256, 256));
        assert_eq!(KvCacheType::F16.bytes_per_element(), 2.0);
        assert_eq!(KvCacheType::Q8_0.bytes_per_element(), 34.0 / 32.0);
        assert_eq!(KvCacheType::Q4_0.bytes_per_element(), 18.0 / 32.0);
        assert_eq!(KvCacheType::from_name("Q8_0"), Some(KvCacheType::Q8_0));
        assert_eq!(KvCacheType::from_name("nope"), None);
        assert_eq!(KvCacheType::default(), KvCacheType::F16);
    }

    fn header_with(dir: &TempDir, name: &str, kvs: &[(&str, V)], tensors: &[T]) -> GgufHeader {
        let path = dir.path(name);
        write(&path, &build(3, kvs, tensors, 32));
        read_header(&path).unwrap()
    }

    #[test]
    fn swa_patterns_and_recurrent() {
        let dir = TempDir::new("swa");
        let base = |arch: &str, layers: u32| {
            vec![
                ("general.architecture", s(arch)),
                ("x.block_count", V::U32(layers)), // placeholder, replaced below
            ]
            .into_iter()
            .map(|(k, v)| (if k == "x.block_count" { Box::leak(format!("{arch}.block_count").into_boxed_str()) as &str } else { k }, v))
            .collect::<Vec<_>>()
        };
        // gemma3 default pattern 6: layers 5 and 11 are global.
        let mut kvs = base("gemma3", 12);
        kvs.push(("gemma3.attention.sliding_window", V::U32(512)));
        let h = header_with(&dir, "g.gguf", &kvs, &[]);
        let p = h.model_params();
        assert_eq!(p.sliding_window, Some(512));
        let swa = p.swa_layers.unwrap();
        assert_eq!((0..12).filter(|&i| !swa[i]).collect::<Vec<_>>(), vec![5, 11]);

        // Explicit integer pattern 4 → layers 3, 7 global.
        kvs.push(("gemma3.attention.sliding_window_pattern", V::U32(4)));
        let h = header_with(&dir, "g4.gguf", &kvs, &[]);
        let swa = h.model_params().swa_layers.unwrap();
        assert_eq!((0..12).filter(|&i| !swa[i]).collect::<Vec<_>>(), vec![3, 7, 11]);

        // Per-layer bool array.
        kvs.pop();
        let arr: Vec<V> = (0..12).map(|i| V::Bool(i % 2 == 0)).collect();
        kvs.push(("gemma3.attention.sliding_window_pattern", V::Arr(T_BOOL, arr)));
        let h = header_with(&dir, "ga.gguf", &kvs, &[]);
        let swa = h.model_params().swa_layers.unwrap();
        assert_eq!(swa, (0..12).map(|i| i % 2 == 0).collect::<Vec<_>>());

        // Unknown architecture with a window but no pattern: unknown layout.
        let mut kvs = base("foo", 3);
        kvs.push(("foo.attention.sliding_window", V::U32(128)));
        assert_eq!(header_with(&dir, "f.gguf", &kvs, &[]).model_params().swa_layers, None);

        // Mamba: recurrent state, no KV.
        let mut kvs = base("mamba", 2);
        kvs.extend([
            ("mamba.embedding_length", V::U32(16)),
            ("mamba.ssm.conv_kernel", V::U32(4)),
            ("mamba.ssm.inner_size", V::U32(32)),
            ("mamba.ssm.state_size", V::U32(16)),
        ]);
        let h = header_with(&dir, "m.gguf", &kvs, &[]);
        let p = h.model_params();
        assert!(p.recurrent);
        assert_eq!(p.n_recurrent_layers, 2);
        assert_eq!(p.recurrent_state_bytes_per_layer, Some((3 * 32 + 16 * 32) * 4));
        let e = estimate(&h, 1000, 2, KvCacheType::F16);
        assert_eq!(e.kv_bytes, 0);
        assert_eq!(e.recurrent_bytes, 2 * 2 * (3 * 32 + 16 * 32) * 4);

        // gemma4-style shared KV layers: the last 2 of 4 layers have no cache.
        let mut kvs = base("gemma4", 4);
        kvs.extend([
            ("gemma4.embedding_length", V::U32(64)),
            ("gemma4.attention.head_count", V::U32(4)),
            ("gemma4.attention.head_count_kv", V::U32(1)),
            ("gemma4.attention.shared_kv_layers", V::U32(2)),
        ]);
        let p = header_with(&dir, "g4s.gguf", &kvs, &[]).model_params();
        assert_eq!(p.n_head_kv, vec![1, 1, 0, 0]);
    }

    #[test]
    fn absurd_metadata_does_not_panic() {
        let dir = TempDir::new("absurd");
        for (arch, bc) in [("llama", V::U64(u64::MAX)), ("mamba", V::U32(u32::MAX)), ("rwkv6", V::U32(40_000))] {
            let kvs = vec![
                ("general.architecture", s(arch)),
                (Box::leak(format!("{arch}.block_count").into_boxed_str()) as &str, bc),
                (Box::leak(format!("{arch}.embedding_length").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.vocab_size").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.attention.head_count").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.attention.key_length").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.attention.sliding_window").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.ssm.inner_size").into_boxed_str()), V::U64(u64::MAX)),
                (Box::leak(format!("{arch}.wkv.head_size").into_boxed_str()), V::U64(if arch == "rwkv6" { u64::MAX } else { 0 })),
            ];
            let tensors = [("blk.4000000000.x", vec![8], 0, 32)];
            let h = header_with(&dir, &format!("{arch}.gguf"), &kvs, &tensors);
            let _ = h.model_params();
            let _ = h.layer_bytes();
            let e = estimate(&h, u32::MAX, u32::MAX, KvCacheType::Q4_0);
            assert!(e.total_bytes >= e.weights_bytes);
        }
    }

    fn expect_err(path: &Path, bytes: &[u8]) -> GgufError {
        write(path, bytes);
        match read_header(path) {
            Ok(_) => panic!("expected an error for {}", path.display()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
                e
            }
        }
    }

    #[test]
    fn corrupt_files_give_errors() {
        let dir = TempDir::new("corrupt");
        let p = dir.path("bad.gguf");
        let good = build(3, &sample_kvs(), &sample_tensors(), 32);
        assert!(good.len() < 32 << 10, "keep the truncation loop cheap: {} bytes", good.len());

        assert!(matches!(expect_err(&p, b""), GgufError::BadMagic { .. }));
        assert!(matches!(expect_err(&p, b"GG"), GgufError::BadMagic { .. }));
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(expect_err(&p, &b), GgufError::BadMagic { .. }));
        for v in [1u32, 4, 0x0300_0000] {
            let mut b = good.clone();
            b[4..8].copy_from_slice(&v.to_le_bytes());
            assert!(matches!(expect_err(&p, &b), GgufError::UnsupportedVersion { version, .. } if version == v));
        }

        // Unknown tensor type, naming the tensor.
        let e = expect_err(&p, &build(3, &[], &[("weird.weight", vec![32], 31, 0)], 32));
        assert!(matches!(&e, GgufError::UnknownTensorType { tensor, type_id: 31, .. } if tensor == "weird.weight"), "{e}");
        assert!(e.to_string().contains("weird.weight"));

        // Row not a multiple of the block size.
        assert!(matches!(expect_err(&p, &build(3, &[], &[("x", vec![33], 2, 0)], 32)), GgufError::Invalid { .. }));
        // Too many dims.
        assert!(matches!(expect_err(&p, &build(3, &[], &[("x", vec![1, 1, 1, 1, 1], 0, 4)], 32)), GgufError::Invalid { .. }));
        // Nested array, unknown value type, bad bool, duplicate key, bad alignment.
        let nested = V::Arr(T_ARRAY, vec![V::Arr(T_U8, vec![])]);
        assert!(matches!(expect_err(&p, &build(3, &[("a", nested)], &[], 32)), GgufError::Invalid { .. }));
        let mut b = build(3, &[("a", V::U32(1))], &[], 32);
        let ty_at = 4 + 4 + 8 + 8 + 8 + 1;
        b[ty_at..ty_at + 4].copy_from_slice(&13u32.to_le_bytes());
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. }));
        let mut b = build(3, &[("a", V::Bool(true))], &[], 32);
        b[ty_at + 4] = 7;
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. }));
        assert!(matches!(expect_err(&p, &build(3, &[("a", V::U8(1)), ("a", V::U8(2))], &[], 32)), GgufError::Invalid { .. }));
        assert!(matches!(expect_err(&p, &build(3, &[("general.alignment", V::U32(24))], &[], 32)), GgufError::Invalid { .. }));
        // Duplicate tensor name.
        let dup = [("x", vec![8], 0, 32), ("x", vec![8], 0, 32)];
        assert!(matches!(expect_err(&p, &build(3, &[], &dup, 32)), GgufError::Invalid { .. }));

        // Huge lengths and counts are rejected before allocating anything.
        let mut b = build(3, &[("a", s("x"))], &[], 32);
        let len_at = 24; // key length
        b[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. }));
        b[len_at..len_at + 8].copy_from_slice(&(1u64 << 25).to_le_bytes()); // 32 MiB: under the limit, beyond EOF
        assert!(matches!(expect_err(&p, &b), GgufError::Truncated { .. }));
        let mut b = build(3, &[("a", V::Arr(T_U64, vec![V::U64(1)]))], &[], 32);
        let count_at = 24 + 8 + 1 + 4 + 4;
        b[count_at..count_at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes());
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. } | GgufError::Truncated { .. }));
        b[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(expect_err(&p, &b), GgufError::Truncated { .. }));
        let mut b = build(3, &[("a", V::Arr(T_STRING, vec![s("x")]))], &[], 32);
        b[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(expect_err(&p, &b), GgufError::Truncated { .. }));
        let mut b = good.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. }));
        let mut b = good.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // kv count
        assert!(matches!(expect_err(&p, &b), GgufError::Invalid { .. }));
        // Tensor dims whose product overflows.
        let e = expect_err(&p, &build(3, &[], &[("x", vec![1 << 40, 1 << 40], 0, 0)], 32));
        assert!(matches!(e, GgufError::Invalid { .. }), "{e}");

        // Missing file.
        let missing = dir.path("nope.gguf");
        assert!(matches!(read_header(&missing), Err(GgufError::Io { .. })));

        // Every truncation of a valid file is an error, never a panic. The file
        // is shrunk in place (cheaper than rewriting it 10k times).
        write(&p, &good);
        assert!(read_header(&p).is_ok());
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        for len in (0..good.len()).rev() {
            f.set_len(len as u64).unwrap();
            assert!(read_header(&p).is_err(), "truncated to {len} bytes parsed");
        }
        drop(f);

        // Random corruption of header bytes: Ok or Err, never a panic.
        use std::io::{Seek, SeekFrom, Write};
        write(&p, &good);
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let poke = |f: &mut File, at: usize, byte: u8| {
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(&[byte]).unwrap();
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let header_len = good.len() - sample_tensors().iter().map(|t| t.3).sum::<u64>() as usize;
        for _ in 0..1500 {
            let mut touched = Vec::new();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % header_len as u64) as usize;
                poke(&mut f, at, (seed >> 40) as u8);
                touched.push(at);
            }
            let _ = read_header(&p);
            for at in touched {
                poke(&mut f, at, good[at]);
            }
        }
    }

    fn split_kvs(no: u16, with_model_kvs: bool) -> Vec<(&'static str, V)> {
        let mut kvs = vec![("split.no", V::U16(no)), ("split.count", V::U16(2)), ("split.tensors.count", V::I32(3))];
        if with_model_kvs {
            kvs.extend([("general.architecture", s("llama")), ("llama.block_count", V::U32(2))]);
        }
        kvs
    }

    #[test]
    fn split_models() {
        let dir = TempDir::new("split");
        let p1 = dir.path("m-00001-of-00002.gguf");
        let p2 = dir.path("m-00002-of-00002.gguf");
        let t1 = [("token_embd.weight", vec![32, 4], 8, 4 * 34), ("blk.0.a.weight", vec![8], 0, 32)];
        let t2 = [("blk.1.a.weight", vec![8, 2], 1, 32)];
        write(&p1, &build(3, &split_kvs(0, true), &t1, 32));
        write(&p2, &build(3, &split_kvs(1, false), &t2, 32));
        let len = std::fs::metadata(&p1).unwrap().len() + std::fs::metadata(&p2).unwrap().len();

        for given in [&p1, &p2] {
            let h = read_header(given).unwrap();
            assert_eq!(h.parts, vec![p1.clone(), p2.clone()]);
            assert_eq!(h.architecture.as_deref(), Some("llama"));
            let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["token_embd.weight", "blk.0.a.weight", "blk.1.a.weight"]);
            assert_eq!(h.weight_bytes(), 4 * 34 + 32 + 32);
            assert_eq!(h.layer_bytes(), vec![32, 32]);
            assert_eq!(h.file_bytes, len);
        }

        // A part whose split.no does not match its position.
        write(&p2, &build(3, &split_kvs(0, false), &t2, 32));
        assert!(matches!(read_header(&p1), Err(GgufError::Invalid { .. })));

        // Name not following the convention.
        let odd = dir.path("renamed.gguf");
        std::fs::copy(&p1, &odd).unwrap();
        assert!(matches!(read_header(&odd), Err(GgufError::Invalid { .. })));

        // Missing part.
        std::fs::remove_file(&p2).unwrap();
        match read_header(&p1) {
            Err(GgufError::MissingSplitPart { path, index: 2, count: 2 }) => assert_eq!(path, p2),
            other => panic!("expected MissingSplitPart, got {other:?}"),
        }
        let msg = read_header(&p1).unwrap_err().to_string();
        assert!(msg.contains("m-00002-of-00002.gguf") && msg.contains("missing"), "{msg}");
    }

    /// The real model: set VRAM_LLM_TEST_MODEL to require it; otherwise the
    /// default path is used when present and the test is skipped when not.
    #[test]
    fn real_model() {
        const DEFAULT: &str = "/work/main/models/gemma-3-270m-q4_k_m.gguf";
        let path = match std::env::var_os("VRAM_LLM_TEST_MODEL") {
            Some(p) => {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "VRAM_LLM_TEST_MODEL={} does not exist", p.display());
                p
            }
            None if Path::new(DEFAULT).is_file() => PathBuf::from(DEFAULT),
            None => {
                eprintln!("note: skipping real_model: VRAM_LLM_TEST_MODEL unset and {DEFAULT} missing");
                return;
            }
        };
        let t = std::time::Instant::now();
        let h = read_header(&path).unwrap();
        let elapsed = t.elapsed();
        eprintln!("read_header({}) took {elapsed:?}", path.display());

        assert_eq!(h.architecture.as_deref(), Some("gemma3"));
        assert_eq!(h.n_layers(), Some(18));
        assert_eq!(h.context_length(), Some(32768));
        assert_eq!(h.tensors.len(), 236);
        // llama.cpp: llama_model_size() == 246587904 for this file (the loader
        // sums ggml_nbytes of every tensor; we compute the same).
        assert_eq!(h.weight_bytes(), 246_587_904);
        // Tensor data is exactly the rest of the file after the header.
        assert_eq!(h.file_bytes, 253_113_024);
        assert_eq!(h.header_bytes + h.weight_bytes(), h.file_bytes);
        let layers = h.layer_bytes();
        assert_eq!(layers.len(), 18);
        assert_eq!(layers.iter().sum::<u64>() + h.non_layer_bytes(), h.weight_bytes());
        // Tied embeddings: no output.weight, token_embd doubles as the output head.
        assert!(h.tensors.iter().all(|t| t.name != "output.weight"));
        assert_eq!(h.output_layer_bytes(), h.non_layer_bytes());

        let p = h.model_params();
        assert_eq!((p.n_embd, p.n_head, p.head_dim_k, p.head_dim_v), (640, 4, 256, 256));
        assert_eq!(p.n_head_kv, vec![1; 18]);
        assert_eq!(p.n_vocab, Some(262_144));
        assert_eq!(p.sliding_window, Some(512));
        // llama.cpp logs is_swa = 0 for layers 5, 11, 17.
        let swa = p.swa_layers.clone().unwrap();
        assert_eq!((0..18).filter(|&i| !swa[i]).collect::<Vec<_>>(), vec![5, 11, 17]);

        let e = estimate(&h, 4096, 4, KvCacheType::F16);
        // llama.cpp: KV 48 MiB (3 global layers) + 240 MiB (15 SWA layers, full size).
        assert_eq!(e.kv_bytes, 288 << 20);
        assert_eq!(e.kv_cells, 16384);
        // llama.cpp measured 526.3 MiB (flash attn) / 536.3 MiB (without).
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        assert!(mib(e.compute_bytes) > 526.0 && mib(e.compute_bytes) < 700.0, "{}", mib(e.compute_bytes));
        eprintln!(
            "estimate ctx 4096 x 4 F16: weights {} ({:.1} MiB), kv {} ({:.1} MiB), compute {} ({:.1} MiB), total {} ({:.1} MiB)",
            e.weights_bytes, mib(e.weights_bytes), e.kv_bytes, mib(e.kv_bytes), e.compute_bytes, mib(e.compute_bytes), e.total_bytes, mib(e.total_bytes)
        );
        eprintln!(
            "layer bytes min {} max {}, non-layer {}, output layer {}",
            layers.iter().min().unwrap(),
            layers.iter().max().unwrap(),
            h.non_layer_bytes(),
            h.output_layer_bytes()
        );
        eprintln!("{e:?}");
    }
}
