//! GGUF reader and estimate tests on synthetic files written here: the
//! builders, parsing, SWA patterns and the KV cell padding.

mod files;

use std::fs::File;
use std::path::{Path, PathBuf};

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
        assert_eq!(h.input_layer_bytes(), 64 * 8 * 2); // token_embd: host memory
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
        let e = estimate(&h, 100, 3, &Shape::kv(KvCacheType::F16));
        assert_eq!((e.kv_cells, e.n_ctx_seq), (768, 256));
        assert_eq!(e.kv_bytes_per_layer, vec![768 * 2 * (16 + 8) * 2, 768 * (16 + 8) * 2]);
        assert_eq!(e.kv_bytes, e.kv_bytes_per_layer.iter().sum::<u64>());
        assert_eq!(e.weights_bytes, total);
        assert_eq!(e.total_bytes, e.weights_bytes + e.kv_bytes + e.recurrent_bytes + e.compute_bytes);
        let q8 = estimate(&h, 100, 3, &Shape::kv(KvCacheType::Q8_0));
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
fn an_encoder_does_not_generate() {
    let dir = TempDir::new("causal");
    let bert = header_with(&dir, "b.gguf", &[("general.architecture", s("bert")), ("bert.attention.causal", V::Bool(false))], &[]);
    assert!(!bert.generates());
    let plain = header_with(&dir, "p.gguf", &[("general.architecture", s("llama"))], &[]);
    assert!(plain.generates(), "no key: a decoder");
    let said = header_with(&dir, "c.gguf", &[("general.architecture", s("llama")), ("llama.attention.causal", V::Bool(true))], &[]);
    assert!(said.generates());
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
    let e = estimate(&h, 1000, 2, &Shape::kv(KvCacheType::F16));
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
