//! Corrupt and split files, and the real test model.

use super::*;

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
        let e = estimate(&h, u32::MAX, u32::MAX, &Shape::kv(KvCacheType::Q4_0));
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

/// The real test model (VRAM_LLM_TEST_MODEL, set by `scripts/dev test`, else
/// the checkout's models/ folder): missing, the test fails, never skips.
#[test]
fn real_model() {
    let path = std::env::var_os("VRAM_LLM_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/gemma-3-270m-q4_k_m.gguf")));
    assert!(path.is_file(), "test model {} is missing: run `scripts/dev setup` (or set VRAM_LLM_TEST_MODEL)", path.display());
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
    // ...and the input copy stays in host memory: llama.cpp holds both with a GPU.
    let embd = h.tensors.iter().find(|t| t.name == "token_embd.weight").map(|t| t.bytes);
    assert_eq!(Some(h.input_layer_bytes()), embd);

    let p = h.model_params();
    assert_eq!((p.n_embd, p.n_head, p.head_dim_k, p.head_dim_v), (640, 4, 256, 256));
    assert_eq!(p.n_head_kv, vec![1; 18]);
    assert_eq!(p.n_vocab, Some(262_144));
    assert_eq!(p.sliding_window, Some(512));
    // llama.cpp logs is_swa = 0 for layers 5, 11, 17.
    let swa = p.swa_layers.clone().unwrap();
    assert_eq!((0..18).filter(|&i| !swa[i]).collect::<Vec<_>>(), vec![5, 11, 17]);

    let e = estimate(&h, 4096, 4, &Shape::kv(KvCacheType::F16));
    // llama.cpp: KV 48 MiB (3 global layers) + 240 MiB (15 SWA layers, full size).
    assert_eq!(e.kv_bytes, 288 << 20);
    assert_eq!(e.kv_cells, 16384);
    // Without swa_full (the server's default) llama.cpp logs "creating SWA KV
    // cache, size = 1024 cells" per stream: 15 layers x 4 x 1024 cells x 1 KiB.
    let windowed = estimate(&h, 4096, 4, &Shape { swa_full: false, ..Shape::default() });
    assert_eq!(windowed.kv_bytes, (48 << 20) + (60 << 20));
    // llama.cpp measured 526.3 MiB (flash attn) / 536.3 MiB (without).
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    assert!(mib(e.compute_bytes) > 526.0 && mib(e.compute_bytes) < 700.0, "{}", mib(e.compute_bytes));
    // A context smaller than the micro-batch caps it: llama.cpp logs a
    // 259.4 MiB compute buffer at 256 x 1 (logits for 256 tokens), not 515.
    let small = estimate(&h, 256, 1, &Shape::default());
    assert!(mib(small.compute_bytes) > 259.0 && mib(small.compute_bytes) < 330.0, "{}", mib(small.compute_bytes));
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
