#!/usr/bin/env python3
"""Builds models/symbolic/tiny_encoder.onnx: a 2-layer transformer encoder
over symbolic `batch` and `seq` dims, the model the symbolic-shape tests
compile once and run at many sizes (tests/symbolic.rs).

d_model 64, 2 heads, FFN 128, vocab 100, positions up to 128. Token
embedding by Gather; the position embedding is the first `seq` rows of a
128-row table, sliced with Shape/Slice so the graph works at every length;
attention adds a mask built from `attention_mask` (1 keep, 0 pad) before
Softmax; LayerNormalization; GELU written with Erf (as exporters do).

Also writes tiny_encoder.cases.npz: for each (batch, seq) in CASES, the
inputs and onnxruntime's output, keyed "b{batch}_s{seq}.{name}".

`--prescaled` writes tiny_encoder_prescaled.onnx (and .cases.npz) instead:
the same encoder as exporters write SDPA, for the attention fusion's tests:
Q scaled by √scale before its head split and Kᵀ by √scale after it (no
scale on the scores), and the head split/merge targets computed at run time
as Concat(Shape(x)[0], Shape(x)[1], ...).

    python scripts/make_tiny_encoder.py [--prescaled]
"""
import sys
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "symbolic")
D, HEADS, FFN, VOCAB, MAX_LEN, LAYERS = 64, 2, 128, 100, 128, 2
CASES = [(b, s) for b in (1, 3) for s in (1, 7, 32, 128)]


def build(rng, prescaled=False):
    w = lambda *s: (rng.standard_normal(s) * s[0] ** -0.5).astype(np.float32)
    small = lambda *s: (0.02 * rng.standard_normal(s)).astype(np.float32)
    inits = {
        "tok_emb": (0.5 * rng.standard_normal((VOCAB, D))).astype(np.float32),
        "pos_emb": (0.5 * rng.standard_normal((MAX_LEN, D))).astype(np.float32),
        "zero_i64": np.array([0], np.int64),
        "one_i64": np.array([1], np.int64),
        "two_i64": np.array([2], np.int64),
        "one_f": np.array(1.0, np.float32),
        "neg_big": np.array(-10000.0, np.float32),
        "half": np.array(0.5, np.float32),
        "inv_sqrt2": np.array(2.0**-0.5, np.float32),
        "scale": np.array((D // HEADS) ** -0.5, np.float32),
        "mask_axes": np.array([1, 2], np.int64),
        "split_heads": np.array([0, 0, HEADS, D // HEADS], np.int64),
        "merge_heads": np.array([0, 0, D], np.int64),
    }
    if prescaled:
        inits.update({
            "sqrt_scale": np.array((D // HEADS) ** -0.25, np.float32),
            "i0": np.array(0, np.int64),
            "i1": np.array(1, np.int64),
            "axes0": np.array([0], np.int64),
            "heads_dims": np.array([HEADS, D // HEADS], np.int64),
            "model_dim": np.array([D], np.int64),
        })
        del inits["scale"], inits["split_heads"], inits["merge_heads"]
    nodes = [
        # Position rows 0..seq of the table: seq comes from the input's shape.
        helper.make_node("Shape", ["input_ids"], ["ids_shape"], name="ids_shape"),
        helper.make_node("Slice", ["ids_shape", "one_i64", "two_i64"], ["seq_len"], name="seq_len"),
        helper.make_node("Slice", ["pos_emb", "zero_i64", "seq_len", "zero_i64"], ["pos"], name="pos_slice"),
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["tok"], name="tok_gather"),
        helper.make_node("Add", ["tok", "pos"], ["emb"], name="emb_add"),
        # Additive mask [batch, 1, 1, seq]: 0 where attended, -10000 on padding.
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("Sub", ["one_f", "mask_f"], ["mask_inv"], name="mask_inv"),
        helper.make_node("Mul", ["mask_inv", "neg_big"], ["mask_add"], name="mask_scale"),
        helper.make_node("Unsqueeze", ["mask_add", "mask_axes"], ["mask4"], name="mask_unsqueeze"),
    ]
    inits["emb_ln.g"] = (1 + small(D)).astype(np.float32)
    inits["emb_ln.b"] = small(D)
    nodes.append(helper.make_node("LayerNormalization", ["emb", "emb_ln.g", "emb_ln.b"], ["h0"], axis=-1,
                                  epsilon=1e-5, name="emb_ln"))
    x = "h0"
    for l in range(LAYERS):
        p = f"l{l}."
        for n in ("q", "k", "v", "o"):
            inits[p + n + ".w"] = w(D, D)
            inits[p + n + ".b"] = small(D)
        inits[p + "ff1.w"], inits[p + "ff1.b"] = w(D, FFN), small(FFN)
        inits[p + "ff2.w"], inits[p + "ff2.b"] = w(FFN, D), small(D)
        for n in ("ln1", "ln2"):
            inits[p + n + ".g"] = (1 + small(D)).astype(np.float32)
            inits[p + n + ".b"] = small(D)
        # Layer-local names get the layer prefix; the input, the mask and shared constants do not.
        local = lambda n: n if n == x or n == "mask4" or n in inits else p + n

        def mk(op, ins, outs, **kw):
            nodes.append(helper.make_node(op, [local(i) for i in ins], [p + o for o in outs], name=p + outs[0], **kw))

        split, merge = "split_heads", "merge_heads"
        if prescaled:
            # [batch, seq] of the layer input, read at run time.
            mk("Shape", [x], ["x_shape"])
            mk("Gather", ["x_shape", "i0"], ["x_b"], axis=0)
            mk("Gather", ["x_shape", "i1"], ["x_s"], axis=0)
            mk("Unsqueeze", ["x_b", "axes0"], ["x_b1"])
            mk("Unsqueeze", ["x_s", "axes0"], ["x_s1"])
            mk("Concat", ["x_b1", "x_s1", "heads_dims"], ["split"], axis=0)
            mk("Concat", ["x_b1", "x_s1", "model_dim"], ["merge"], axis=0)
            split, merge = "split", "merge"
        for n in ("q", "k", "v"):
            mk("MatMul", [x, n + ".w"], [n + "_mm"])
            mk("Add", [n + "_mm", n + ".b"], [n + "_lin"])
            if prescaled and n == "q":
                mk("Mul", ["q_lin", "sqrt_scale"], ["q_scaled"])
            mk("Reshape", ["q_scaled" if prescaled and n == "q" else n + "_lin", split], [n + "_heads"])
        mk("Transpose", ["q_heads"], ["q_t"], perm=[0, 2, 1, 3])
        mk("Transpose", ["k_heads"], ["k_t"], perm=[0, 2, 3, 1])
        mk("Transpose", ["v_heads"], ["v_t"], perm=[0, 2, 1, 3])
        if prescaled:
            mk("Mul", ["k_t", "sqrt_scale"], ["k_scaled"])
            mk("MatMul", ["q_t", "k_scaled"], ["scaled"])
        else:
            mk("MatMul", ["q_t", "k_t"], ["scores"])
            mk("Mul", ["scores", "scale"], ["scaled"])
        mk("Add", ["scaled", "mask4"], ["masked"])
        mk("Softmax", ["masked"], ["probs"], axis=-1)
        mk("MatMul", ["probs", "v_t"], ["ctx"])
        mk("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3])
        mk("Reshape", ["ctx_t", merge], ["ctx_m"])
        mk("MatMul", ["ctx_m", "o.w"], ["attn_mm"])
        mk("Add", ["attn_mm", "o.b"], ["attn"])
        mk("Add", [x, "attn"], ["res1"])
        mk("LayerNormalization", ["res1", "ln1.g", "ln1.b"], ["h1"], axis=-1, epsilon=1e-5)
        mk("MatMul", ["h1", "ff1.w"], ["ff1_mm"])
        mk("Add", ["ff1_mm", "ff1.b"], ["ff1"])
        # GELU(x) = 0.5·x·(1 + erf(x/√2)).
        mk("Mul", ["ff1", "inv_sqrt2"], ["gelu_s"])
        mk("Erf", ["gelu_s"], ["gelu_e"])
        mk("Add", ["gelu_e", "one_f"], ["gelu_1"])
        mk("Mul", ["ff1", "gelu_1"], ["gelu_x"])
        mk("Mul", ["gelu_x", "half"], ["gelu"])
        mk("MatMul", ["gelu", "ff2.w"], ["ff2_mm"])
        mk("Add", ["ff2_mm", "ff2.b"], ["ff2"])
        mk("Add", ["h1", "ff2"], ["res2"])
        out = "last_hidden_state" if l == LAYERS - 1 else p + "out"
        nodes.append(helper.make_node("LayerNormalization", [p + "res2", p + "ln2.g", p + "ln2.b"], [out], axis=-1,
                                      epsilon=1e-5, name=p + "ln2"))
        x = out
    graph = helper.make_graph(
        nodes, "tiny_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", D])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="carbide-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    prescaled = "--prescaled" in sys.argv[1:]
    name = "tiny_encoder_prescaled" if prescaled else "tiny_encoder"
    rng = np.random.default_rng(2027 if prescaled else 2026)
    model = build(rng, prescaled)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(model, path)
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    cases = {}
    for b, s in CASES:
        ids = rng.integers(0, VOCAB, (b, s), dtype=np.int64)
        mask = np.ones((b, s), np.int64)
        # Later rows padded at the end (at least one position always attended).
        for r in range(1, b):
            mask[r, max(1, s - 2 * r):] = 0
        out = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        key = f"b{b}_s{s}"
        cases[key + ".input_ids"], cases[key + ".attention_mask"] = ids, mask
        cases[key + ".last_hidden_state"] = out
    np.savez(os.path.join(OUT, name + ".cases.npz"), **cases)
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and {len(CASES)} cases")


if __name__ == "__main__":
    main()
