//! Reading a GGUF file (or every part of a split model) into a
//! [`GgufHeader`]: the bounded low-level reader and the parser.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::*;

// ---------------------------------------------------------------------------
// Low-level reader
// ---------------------------------------------------------------------------

pub(super) struct Reader {
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

pub(super) struct Part {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    file_bytes: u64,
    header_bytes: u64,
}

pub(super) fn read_part(path: &Path) -> Result<Part> {
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

pub(super) fn build_header(parts: Vec<(PathBuf, Part)>) -> GgufHeader {
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

