#!/usr/bin/env python3
"""Write a llama-architecture GGUF test model of a given shape, fast.

    PYTHONPATH=<llama.cpp>/gguf-py python3 scripts/gpu/mkgguf.py --shape 8b --out /tmp/m/8b.gguf

The weight matrices are Q4_0 and left as holes in a sparse file (all-zero
blocks, which Q4_0 decodes to 0.0), so an "8B" file takes a second to write
and almost no disk. With --dense they are random instead (small scale), so
the text depends on every layer: for checks that weights survive a copy. The embeddings and the output matrix are random F16 and
the norms are 1.0, so the logits differ from token to token and greedy
decoding produces varied text. Memory use, load and decode cost follow the
shape and types as for a real model of that shape; the text is noise.

The tokenizer is a small SentencePiece-style ("llama") vocabulary: <unk>,
<s>, </s>, the 256 byte tokens, printable characters and filler pieces.
"""

import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - message for the user
    sys.exit("mkgguf.py needs the gguf package: PYTHONPATH=<llama.cpp>/gguf-py (or pip install gguf)")

# name: (layers, embd, ff, heads, kv heads, vocab)
SHAPES = {
    "tiny": (2, 64, 128, 4, 2, 512),
    "1b": (16, 2048, 8192, 32, 8, 32000),
    "8b": (32, 4096, 14336, 32, 8, 32000),
    "30b": (60, 6656, 17920, 52, 4, 32000),
}
QK4_0, Q4_0_BLOCK = 32, 18  # elements and bytes per Q4_0 block


def vocab(n):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE...
    chars = [chr(c) for c in range(33, 127)] + ["\u2581"]
    for c in chars:
        tokens.append(c)
        tokens.append("\u2581" + c)
    types += [1] * (2 * len(chars))
    i = 0
    while len(tokens) < n:
        tokens.append(f"\u2581w{i}")
        types.append(1)
        i += 1
    tokens, types = tokens[:n], types[:n]
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(n - 259)]
    return tokens, scores, types


def tensors(shape):
    """(name, numpy shape (rows, cols), kind): kind f32one | f16rand | q4zero."""
    n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab = shape
    kv = n_embd // n_head * n_head_kv
    out = [("token_embd.weight", (n_vocab, n_embd), "f16rand")]
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (n_embd,), "f32one"),
            (b + "attn_q.weight", (n_embd, n_embd), "q4zero"),
            (b + "attn_k.weight", (kv, n_embd), "q4zero"),
            (b + "attn_v.weight", (kv, n_embd), "q4zero"),
            (b + "attn_output.weight", (n_embd, n_embd), "q4zero"),
            (b + "ffn_norm.weight", (n_embd,), "f32one"),
            (b + "ffn_gate.weight", (n_ff, n_embd), "q4zero"),
            (b + "ffn_up.weight", (n_ff, n_embd), "q4zero"),
            (b + "ffn_down.weight", (n_embd, n_ff), "q4zero"),
        ]
    out += [("output_norm.weight", (n_embd,), "f32one"), ("output.weight", (n_vocab, n_embd), "f16rand")]
    return out


def nbytes(dims, kind):
    count = int(np.prod(dims))
    if kind == "q4zero":
        assert dims[-1] % QK4_0 == 0, dims
        return count // QK4_0 * Q4_0_BLOCK
    return count * (4 if kind == "f32one" else 2)


def data(dims, kind, rng):
    if kind == "f32one":
        return np.ones(dims, dtype=np.float32)
    return (rng.standard_normal(dims, dtype=np.float32) * 0.5).astype(np.float16)


def dense_q4_0(dims, rng):
    """Q4_0 blocks of random 4-bit values with a small scale (0.02), so the
    layers change the hidden state as a real model's do, without blowing up."""
    blocks = int(np.prod(dims)) // QK4_0
    out = np.empty((blocks, Q4_0_BLOCK), dtype=np.uint8)
    out[:, :2] = np.frombuffer(np.float16(0.02).tobytes(), dtype=np.uint8)
    out[:, 2:] = rng.integers(0, 256, size=(blocks, Q4_0_BLOCK - 2), dtype=np.uint8)
    return out


def write(path, shape_name, seed, ctx, dense=False):
    shape = SHAPES[shape_name]
    n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab = shape
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"vram-llm test {shape_name} (seed {seed})")
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens, scores, types = vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    plan = tensors(shape)
    for name, dims, kind in plan:
        if kind == "q4zero":
            w.add_tensor_info(name, dims, np.float32, nbytes(dims, kind), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            dt = np.float32 if kind == "f32one" else np.float16
            w.add_tensor_info(name, dims, np.dtype(dt), nbytes(dims, kind))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    align = w.data_alignment

    def pad():
        pos = f.tell()
        f.seek(gguf.GGUFWriter.ggml_pad(pos, align) - pos, os.SEEK_CUR)

    pad()
    for name, dims, kind in plan:
        size = nbytes(dims, kind)
        if kind == "q4zero" and dense:
            dense_q4_0(dims, rng).tofile(f)
        elif kind == "q4zero":
            f.seek(size, os.SEEK_CUR)  # a hole: zeros without writing them
        else:
            arr = data(dims, kind, rng)
            assert arr.nbytes == size
            arr.tofile(f)
        pad()
    end = f.tell()
    f.truncate(end)
    w.close()
    params = sum(int(np.prod(d)) for _, d, _ in plan)
    return {"path": path, "shape": shape_name, "params": params, "bytes": end,
            "layers": n_layer, "embd": n_embd, "ff": n_ff, "heads": n_head, "kv_heads": n_head_kv}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=4096, help="training context written to the file")
    ap.add_argument("--dense", action="store_true", help="random Q4_0 layers instead of holes (the layers then matter: "
                    "for checks that weights survive a copy; written in full, slower, takes disk)")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    info = write(args.out, args.shape, args.seed, args.ctx, args.dense)
    print(" ".join(f"{k}={v}" for k, v in info.items()))


if __name__ == "__main__":
    main()
