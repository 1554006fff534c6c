//! Linear algebra and attention: matrix products (MatMul, Gemm and their
//! quantized forms), Einsum, the softmax family, the attention ops
//! (Attention, FlexAttention, LinearAttention), RotaryEmbedding, SwiGLU, Det.

use super::{broadcast_shapes, normalize_axis, InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::graph::Graph;
use crate::types::{Dim, Shape, TensorType, ValueType};
use crate::DType;

pub mod einsum;
pub use einsum::{EinsumEq, Term};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// Which of the three row-normalizing ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SoftmaxAttrs {
    pub kind: SoftmaxKind,
    pub axis: i64,
    /// Opset < 13: the input is flattened to 2-D at `axis` and each row of
    /// that matrix is normalized; opset >= 13 normalizes along `axis` only.
    pub flatten: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttentionAttrs {
    pub is_causal: bool,
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    /// 0: raw QK, 1: after softcap, 2: after mask, 3: after softmax.
    pub qk_matmul_output_mode: i64,
    pub scale: Option<f32>,
    pub softcap: f32,
    /// ONNX dtype the softmax runs in, if given.
    pub softmax_precision: Option<DType>,
    /// Opset 25 sliding window; -1 is unbounded.
    pub left_window_size: i64,
    pub right_window_size: i64,
    pub opset: i64,
}

/// ONNX's defaults at opset 23: heads taken from 4-D inputs, scale
/// 1/sqrt(head size), no softcap, unbounded windows.
impl Default for AttentionAttrs {
    fn default() -> Self {
        AttentionAttrs {
            is_causal: false,
            q_num_heads: None,
            kv_num_heads: None,
            qk_matmul_output_mode: 0,
            scale: None,
            softcap: 0.0,
            softmax_precision: None,
            left_window_size: -1,
            right_window_size: -1,
            opset: 23,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlexAttentionAttrs {
    pub scale: Option<f32>,
    pub softmax_precision: Option<DType>,
    pub score_mod: Option<Box<Graph>>,
    pub prob_mod: Option<Box<Graph>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinearUpdateRule {
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearAttentionAttrs {
    pub q_num_heads: usize,
    pub kv_num_heads: usize,
    /// 0.0 means 1/sqrt(d_k).
    pub scale: f32,
    pub update_rule: LinearUpdateRule,
    /// A tuning hint; kept so the op round-trips.
    pub chunk_size: i64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotaryAttrs {
    pub interleaved: bool,
    pub num_heads: Option<usize>,
    /// 0 means the whole head.
    pub rotary_embedding_dim: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LinalgOp {
    MatMul,
    Gemm(GemmAttrs),
    MatMulInteger,
    QLinearMatMul,
    Einsum(EinsumEq),
    Softmax(SoftmaxAttrs),
    Attention(AttentionAttrs),
    FlexAttention(FlexAttentionAttrs),
    LinearAttention(LinearAttentionAttrs),
    RotaryEmbedding(RotaryAttrs),
    SwiGLU { alpha: f32 },
    Det,
}

fn precision_attr(op: &str, v: Option<i64>) -> IrResult<Option<DType>> {
    match v {
        None => Ok(None),
        Some(code @ (1 | 10 | 11 | 16)) => Ok(DType::from_onnx_code(code as i32)),
        Some(code) => Err(IrError::bad_attr(
            op,
            "softmax_precision",
            format!("{code} is not a float type code (1, 10, 11 or 16)"),
        )),
    }
}

fn heads_attr(op: &str, name: &str, v: Option<i64>) -> IrResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(n) => Err(IrError::bad_attr(op, name, format!("must be positive, got {n}"))),
    }
}

impl LinalgOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        let a = &mut cx.attrs;
        let op = match (cx.domain, cx.op_type) {
            ("", "MatMul") => LinalgOp::MatMul,
            ("", "MatMulInteger") => LinalgOp::MatMulInteger,
            ("", "QLinearMatMul") => LinalgOp::QLinearMatMul,
            ("", "Det") => LinalgOp::Det,
            ("", "Gemm") => {
                let alpha = a.float_or("alpha", 1.0)?;
                let beta = a.float_or("beta", 1.0)?;
                let trans_a = a.int_or("transA", 0)? != 0;
                let trans_b = a.int_or("transB", 0)? != 0;
                if cx.opset < 7 {
                    // Opset 1/6 flag saying C may be broadcast; C broadcasts
                    // unidirectionally in every version, so it changes nothing.
                    a.int("broadcast")?;
                }
                LinalgOp::Gemm(GemmAttrs {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                })
            }
            ("", "Einsum") => {
                let eq = a.req_string("equation")?;
                let eq = EinsumEq::parse(&eq)?;
                if eq.inputs.len() != cx.num_inputs {
                    return Err(IrError::bad_attr(
                        "Einsum",
                        "equation",
                        format!(
                            "names {} operands but the node has {} inputs",
                            eq.inputs.len(),
                            cx.num_inputs
                        ),
                    ));
                }
                LinalgOp::Einsum(eq)
            }
            ("", t @ ("Softmax" | "LogSoftmax" | "Hardmax")) => {
                let kind = match t {
                    "Softmax" => SoftmaxKind::Softmax,
                    "LogSoftmax" => SoftmaxKind::LogSoftmax,
                    _ => SoftmaxKind::Hardmax,
                };
                let flatten = cx.opset < 13;
                let axis = a.int_or("axis", if flatten { 1 } else { -1 })?;
                LinalgOp::Softmax(SoftmaxAttrs { kind, axis, flatten })
            }
            ("", "Attention") => {
                let op = "Attention";
                let is_causal = a.int_or("is_causal", 0)? != 0;
                let q_num_heads = heads_attr(op, "q_num_heads", a.int("q_num_heads")?)?;
                let kv_num_heads = heads_attr(op, "kv_num_heads", a.int("kv_num_heads")?)?;
                let qk_matmul_output_mode = a.int_or("qk_matmul_output_mode", 0)?;
                if !(0..=3).contains(&qk_matmul_output_mode) {
                    return Err(IrError::bad_attr(
                        op,
                        "qk_matmul_output_mode",
                        format!("{qk_matmul_output_mode} is not 0..3"),
                    ));
                }
                let scale = a.float("scale")?;
                let softcap = a.float_or("softcap", 0.0)?;
                let softmax_precision = precision_attr(op, a.int("softmax_precision")?)?;
                let (mut left_window_size, mut right_window_size) = (-1, -1);
                if cx.opset >= 25 {
                    left_window_size = a.int_or("left_window_size", -1)?;
                    right_window_size = a.int_or("right_window_size", -1)?;
                    for (n, v) in [
                        ("left_window_size", left_window_size),
                        ("right_window_size", right_window_size),
                    ] {
                        if v < -1 {
                            return Err(IrError::bad_attr(op, n, format!("must be -1 or nonnegative, got {v}")));
                        }
                    }
                }
                LinalgOp::Attention(AttentionAttrs {
                    is_causal,
                    q_num_heads,
                    kv_num_heads,
                    qk_matmul_output_mode,
                    scale,
                    softcap,
                    softmax_precision,
                    left_window_size,
                    right_window_size,
                    opset: cx.opset,
                })
            }
            ("ai.onnx.preview", "FlexAttention") => {
                let scale = a.float("scale")?;
                let softmax_precision = precision_attr("FlexAttention", a.int("softmax_precision")?)?;
                let score_mod = a.graph("score_mod")?.map(Box::new);
                let prob_mod = a.graph("prob_mod")?.map(Box::new);
                for (n, g) in [("score_mod", &score_mod), ("prob_mod", &prob_mod)] {
                    if let Some(g) = g {
                        if g.inputs.len() != 1 || g.outputs.len() != 1 {
                            return Err(IrError::bad_attr(
                                "FlexAttention",
                                n,
                                "the subgraph must have exactly one input and one output",
                            ));
                        }
                    }
                }
                LinalgOp::FlexAttention(FlexAttentionAttrs {
                    scale,
                    softmax_precision,
                    score_mod,
                    prob_mod,
                })
            }
            ("", "LinearAttention") => {
                let op = "LinearAttention";
                let q_num_heads = heads_attr(op, "q_num_heads", Some(a.req_int("q_num_heads")?))?.unwrap_or(1);
                let kv_num_heads = heads_attr(op, "kv_num_heads", Some(a.req_int("kv_num_heads")?))?.unwrap_or(1);
                if q_num_heads % kv_num_heads != 0 {
                    return Err(IrError::bad_attr(
                        op,
                        "q_num_heads",
                        format!("{q_num_heads} is not a multiple of kv_num_heads {kv_num_heads}"),
                    ));
                }
                let scale = a.float_or("scale", 0.0)?;
                let chunk_size = a.int_or("chunk_size", 64)?;
                let update_rule = match a.string_or("update_rule", "gated_delta")?.as_str() {
                    "linear" => LinearUpdateRule::Linear,
                    "gated" => LinearUpdateRule::Gated,
                    "delta" => LinearUpdateRule::Delta,
                    "gated_delta" => LinearUpdateRule::GatedDelta,
                    s => return Err(IrError::bad_attr(op, "update_rule", format!("unknown rule '{s}'"))),
                };
                LinalgOp::LinearAttention(LinearAttentionAttrs {
                    q_num_heads,
                    kv_num_heads,
                    scale,
                    update_rule,
                    chunk_size,
                })
            }
            ("", "RotaryEmbedding") => {
                let op = "RotaryEmbedding";
                let interleaved = a.int_or("interleaved", 0)? != 0;
                let num_heads = heads_attr(op, "num_heads", a.int("num_heads")?)?;
                let d = a.int_or("rotary_embedding_dim", 0)?;
                if d < 0 || d % 2 != 0 {
                    return Err(IrError::bad_attr(
                        op,
                        "rotary_embedding_dim",
                        format!("must be even and >= 0, got {d}"),
                    ));
                }
                LinalgOp::RotaryEmbedding(RotaryAttrs {
                    interleaved,
                    num_heads,
                    rotary_embedding_dim: d as usize,
                })
            }
            ("", "SwiGLU") => LinalgOp::SwiGLU {
                alpha: a.float_or("alpha", 1.0)?,
            },
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(op))
    }
}

fn dim_mul(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(x * y),
        (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
        _ => Dim::Unknown,
    }
}

fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(x + y),
        (Dim::Known(0), d) | (d, Dim::Known(0)) => d.clone(),
        _ => Dim::Unknown,
    }
}

fn dim_div(a: &Dim, n: usize) -> Dim {
    match a {
        Dim::Known(x) if n > 0 && x % n == 0 => Dim::Known(x / n),
        d if n == 1 => d.clone(),
        _ => Dim::Unknown,
    }
}

/// Numpy matmul output shape (1-D operands promoted and their dim dropped).
fn matmul_shape(op: &str, a: &Shape, b: &Shape) -> IrResult<Shape> {
    if a.is_empty() || b.is_empty() {
        return Err(IrError::invalid(op, "matmul operands must have rank >= 1"));
    }
    let (a_m, a_k) = if a.len() == 1 {
        (None, &a[0])
    } else {
        (Some(&a[a.len() - 2]), &a[a.len() - 1])
    };
    let (b_k, b_n) = if b.len() == 1 {
        (&b[0], None)
    } else {
        (&b[b.len() - 2], Some(&b[b.len() - 1]))
    };
    if let (Dim::Known(x), Dim::Known(y)) = (a_k, b_k) {
        if x != y {
            return Err(IrError::invalid(op, format!("inner dims differ: {x} vs {y}")));
        }
    }
    let ab: Shape = if a.len() > 2 { a[..a.len() - 2].to_vec() } else { vec![] };
    let bb: Shape = if b.len() > 2 { b[..b.len() - 2].to_vec() } else { vec![] };
    let mut out = broadcast_shapes(op, &[&ab, &bb])?;
    out.extend(a_m.cloned());
    out.extend(b_n.cloned());
    Ok(out)
}

fn matmul_type(cx: &InferCtx, a: &TensorType, b: &TensorType, dtype: Option<DType>) -> IrResult<ValueType> {
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) => Some(matmul_shape(cx.op, x, y)?),
        _ => None,
    };
    Ok(ValueType::Tensor(TensorType { dtype, shape }))
}

fn same_float_dtype(cx: &InferCtx, ts: &[&TensorType]) -> IrResult<Option<DType>> {
    let mut d = None;
    for t in ts {
        match (d, t.dtype) {
            (Some(x), Some(y)) if x != y => return Err(cx.err(format!("dtype mismatch: {x} vs {y}"))),
            (None, Some(y)) => d = Some(y),
            _ => {}
        }
    }
    Ok(d)
}

fn check_rank(cx: &InferCtx, name: &str, t: &TensorType, ranks: &[usize]) -> IrResult<()> {
    if let Some(r) = t.rank() {
        if !ranks.contains(&r) {
            return Err(cx.err(format!("{name} must have rank {ranks:?}, got {r}")));
        }
    }
    Ok(())
}

impl LinalgOp {
    fn infer_attention(&self, cx: &InferCtx, at: &AttentionAttrs) -> IrResult<Vec<ValueType>> {
        let q = cx.tensor(0)?;
        let k = cx.tensor(1)?;
        let v = cx.tensor(2)?;
        for (n, t) in [("Q", &q), ("K", &k), ("V", &v)] {
            check_rank(cx, n, t, &[3, 4])?;
        }
        if let (Some(a), Some(b), Some(c)) = (q.rank(), k.rank(), v.rank()) {
            if a != b || a != c {
                return Err(cx.err(format!("Q, K, V ranks differ: {a}, {b}, {c}")));
            }
        }
        let dtype = q.dtype;
        let past_k = cx.opt_tensor(4)?;
        let past_v = cx.opt_tensor(5)?;
        if past_k.is_some() != past_v.is_some() {
            return Err(cx.err("past_key and past_value must be given together"));
        }
        let past_len = past_k
            .as_ref()
            .and_then(|p| p.shape.as_ref().map(|s| s.get(2).cloned().unwrap_or(Dim::Unknown)));
        let unknown = |d: Option<DType>| ValueType::Tensor(TensorType { dtype: d, shape: None });
        let (qs, ks, vs) = match (&q.shape, &k.shape, &v.shape) {
            (Some(a), Some(b), Some(c)) => (a.clone(), b.clone(), c.clone()),
            _ => {
                let mut outs = vec![unknown(dtype), unknown(k.dtype), unknown(v.dtype), unknown(dtype)];
                outs.truncate(cx.num_outputs.max(1));
                return Ok(outs);
            }
        };
        // (batch, q heads, q seq, kv heads, kv seq, head size, v head size)
        let (b, hq, sq, hkv, skv, hd, vhd) = if qs.len() == 4 {
            (
                qs[0].clone(),
                qs[1].clone(),
                qs[2].clone(),
                ks[1].clone(),
                ks[2].clone(),
                qs[3].clone(),
                vs[3].clone(),
            )
        } else {
            let (Some(nq), Some(nkv)) = (at.q_num_heads, at.kv_num_heads) else {
                return Err(cx.err("3-D inputs need the q_num_heads and kv_num_heads attributes"));
            };
            (
                qs[0].clone(),
                Dim::Known(nq),
                qs[1].clone(),
                Dim::Known(nkv),
                ks[1].clone(),
                dim_div(&qs[2], nq),
                dim_div(&vs[2], nkv),
            )
        };
        let total = match &past_len {
            Some(p) => dim_add(p, &skv),
            None => skv.clone(),
        };
        let y = if qs.len() == 4 {
            vec![b.clone(), hq.clone(), sq.clone(), vhd.clone()]
        } else {
            vec![b.clone(), sq.clone(), dim_mul(&hq, &vhd)]
        };
        let mut outs = vec![ValueType::Tensor(TensorType { dtype, shape: Some(y) })];
        if cx.num_outputs > 1 {
            outs.push(ValueType::Tensor(TensorType {
                dtype: k.dtype,
                shape: Some(vec![b.clone(), hkv.clone(), total.clone(), hd]),
            }));
        }
        if cx.num_outputs > 2 {
            outs.push(ValueType::Tensor(TensorType {
                dtype: v.dtype,
                shape: Some(vec![b.clone(), hkv, total.clone(), vhd]),
            }));
        }
        if cx.num_outputs > 3 {
            outs.push(ValueType::Tensor(TensorType {
                dtype,
                shape: Some(vec![b, hq, sq, total]),
            }));
        }
        Ok(outs)
    }

    fn infer_einsum(&self, cx: &InferCtx, eq: &EinsumEq) -> IrResult<Vec<ValueType>> {
        if cx.inputs.len() != eq.inputs.len() {
            return Err(cx.err(format!(
                "equation has {} operands, node has {} inputs",
                eq.inputs.len(),
                cx.inputs.len()
            )));
        }
        let types = (0..eq.inputs.len())
            .map(|i| cx.tensor(i))
            .collect::<IrResult<Vec<_>>>()?;
        let dtype = same_float_dtype(cx, &types.iter().collect::<Vec<_>>())?;
        if types.iter().any(|t| t.shape.is_none()) {
            return Ok(vec![ValueType::Tensor(TensorType { dtype, shape: None })]);
        }
        let mut labels: std::collections::HashMap<char, Dim> = Default::default();
        let mut ell: Vec<Shape> = Vec::new();
        for (terms, t) in eq.inputs.iter().zip(&types) {
            let shape = t.shape.as_ref().expect("checked above");
            let letters = EinsumEq::letters(terms);
            let has_ell = terms.contains(&Term::Ellipsis);
            if shape.len() < letters || (!has_ell && shape.len() != letters) {
                return Err(cx.err(format!("operand of rank {} does not match its subscripts", shape.len())));
            }
            let ell_rank = shape.len() - letters;
            let mut pos = 0;
            for term in terms {
                match term {
                    Term::Ellipsis => {
                        ell.push(shape[pos..pos + ell_rank].to_vec());
                        pos += ell_rank;
                    }
                    Term::Label(c) => {
                        let d = &shape[pos];
                        let e = labels.entry(*c).or_insert_with(|| d.clone());
                        match (&*e, d) {
                            (Dim::Known(x), Dim::Known(y)) if x != y => {
                                return Err(cx.err(format!("label '{c}' has sizes {x} and {y}")))
                            }
                            (Dim::Known(_), _) => {}
                            (_, Dim::Known(_)) => *e = d.clone(),
                            _ => {}
                        }
                        pos += 1;
                    }
                }
            }
        }
        let ell_refs: Vec<&Shape> = ell.iter().collect();
        let ell_shape = broadcast_shapes(cx.op, &ell_refs)?;
        let mut out = Vec::new();
        for term in &eq.output {
            match term {
                Term::Ellipsis => out.extend(ell_shape.iter().cloned()),
                Term::Label(c) => out.push(labels.get(c).cloned().unwrap_or(Dim::Unknown)),
            }
        }
        Ok(vec![ValueType::Tensor(TensorType {
            dtype,
            shape: Some(out),
        })])
    }
}

impl OpKind for LinalgOp {
    fn op_type(&self) -> &'static str {
        match self {
            LinalgOp::MatMul => "MatMul",
            LinalgOp::Gemm(_) => "Gemm",
            LinalgOp::MatMulInteger => "MatMulInteger",
            LinalgOp::QLinearMatMul => "QLinearMatMul",
            LinalgOp::Einsum(_) => "Einsum",
            LinalgOp::Softmax(s) => match s.kind {
                SoftmaxKind::Softmax => "Softmax",
                SoftmaxKind::LogSoftmax => "LogSoftmax",
                SoftmaxKind::Hardmax => "Hardmax",
            },
            LinalgOp::Attention(_) => "Attention",
            LinalgOp::FlexAttention(_) => "FlexAttention",
            LinalgOp::LinearAttention(_) => "LinearAttention",
            LinalgOp::RotaryEmbedding(_) => "RotaryEmbedding",
            LinalgOp::SwiGLU { .. } => "SwiGLU",
            LinalgOp::Det => "Det",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        match self {
            LinalgOp::MatMul => {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                let d = same_float_dtype(cx, &[&a, &b])?;
                Ok(vec![matmul_type(cx, &a, &b, d)?])
            }
            LinalgOp::MatMulInteger => {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                Ok(vec![matmul_type(cx, &a, &b, Some(DType::I32))?])
            }
            LinalgOp::QLinearMatMul => {
                let (a, b) = (cx.tensor(0)?, cx.tensor(3)?);
                let d = cx.opt_tensor(7)?.and_then(|t| t.dtype).or(a.dtype);
                Ok(vec![matmul_type(cx, &a, &b, d)?])
            }
            LinalgOp::Gemm(g) => {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                check_rank(cx, "A", &a, &[2])?;
                check_rank(cx, "B", &b, &[2])?;
                let d = same_float_dtype(cx, &[&a, &b])?;
                let m = a
                    .shape
                    .as_ref()
                    .map(|s| s[if g.trans_a { 1 } else { 0 }].clone())
                    .unwrap_or(Dim::Unknown);
                let n = b
                    .shape
                    .as_ref()
                    .map(|s| s[if g.trans_b { 0 } else { 1 }].clone())
                    .unwrap_or(Dim::Unknown);
                let ka = a.shape.as_ref().map(|s| s[if g.trans_a { 0 } else { 1 }].clone());
                let kb = b.shape.as_ref().map(|s| s[if g.trans_b { 1 } else { 0 }].clone());
                if let (Some(Dim::Known(x)), Some(Dim::Known(y))) = (&ka, &kb) {
                    if x != y {
                        return Err(cx.err(format!("inner dims differ: {x} vs {y}")));
                    }
                }
                Ok(vec![ValueType::tensor_opt(d, Some(vec![m, n]))])
            }
            LinalgOp::Einsum(eq) => self.infer_einsum(cx, eq),
            LinalgOp::Softmax(s) => {
                let x = cx.tensor(0)?;
                if let Some(r) = x.rank() {
                    normalize_axis(cx.op, s.axis, r)?;
                }
                Ok(vec![ValueType::Tensor(x)])
            }
            LinalgOp::Attention(at) => self.infer_attention(cx, at),
            LinalgOp::FlexAttention(_) => {
                let (q, k, v) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
                for (n, t) in [("Q", &q), ("K", &k), ("V", &v)] {
                    check_rank(cx, n, t, &[4])?;
                }
                let shape = match (&q.shape, &v.shape) {
                    (Some(a), Some(c)) => Some(vec![a[0].clone(), a[1].clone(), a[2].clone(), c[3].clone()]),
                    _ => None,
                };
                Ok(vec![ValueType::tensor_opt(q.dtype, shape)])
            }
            LinalgOp::LinearAttention(la) => {
                let (q, k, v) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
                for (n, t) in [("query", &q), ("key", &k), ("value", &v)] {
                    check_rank(cx, n, t, &[3])?;
                }
                let state_dtype = cx.opt_tensor(3)?.and_then(|t| t.dtype).or(q.dtype);
                let (out, state) = match (&q.shape, &v.shape) {
                    (Some(a), Some(c)) => {
                        let dk = dim_div(&a[2], la.q_num_heads);
                        let dv = dim_div(&c[2], la.kv_num_heads);
                        (
                            Some(vec![
                                a[0].clone(),
                                a[1].clone(),
                                dim_mul(&Dim::Known(la.q_num_heads), &dv),
                            ]),
                            Some(vec![a[0].clone(), Dim::Known(la.kv_num_heads), dk, dv]),
                        )
                    }
                    _ => (None, None),
                };
                Ok(vec![
                    ValueType::tensor_opt(q.dtype, out),
                    ValueType::tensor_opt(state_dtype, state),
                ])
            }
            LinalgOp::RotaryEmbedding(_) => {
                let x = cx.tensor(0)?;
                check_rank(cx, "input", &x, &[3, 4])?;
                Ok(vec![ValueType::Tensor(x)])
            }
            LinalgOp::SwiGLU { .. } => {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                same_float_dtype(cx, &[&a, &b])?;
                if let (Some(x), Some(y)) = (a.rank(), b.rank()) {
                    if x != y {
                        return Err(cx.err(format!("A and B ranks differ: {x} vs {y}")));
                    }
                }
                Ok(vec![ValueType::Tensor(a)])
            }
            LinalgOp::Det => {
                let x = cx.tensor(0)?;
                let shape = match &x.shape {
                    Some(s) if s.len() < 2 => return Err(cx.err(format!("input must have rank >= 2, got {}", s.len()))),
                    Some(s) => Some(s[..s.len() - 2].to_vec()),
                    None => None,
                };
                Ok(vec![ValueType::tensor_opt(x.dtype, shape)])
            }
        }
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            LinalgOp::FlexAttention(f) => f.score_mod.iter().chain(f.prob_mod.iter()).map(|g| &**g).collect(),
            _ => Vec::new(),
        }
    }

    fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match self {
            LinalgOp::FlexAttention(f) => f
                .score_mod
                .iter_mut()
                .chain(f.prob_mod.iter_mut())
                .map(|g| &mut **g)
                .collect(),
            _ => Vec::new(),
        }
    }
}

trait TensorOpt {
    fn tensor_opt(dtype: Option<DType>, shape: Option<Shape>) -> ValueType;
}

impl TensorOpt for ValueType {
    fn tensor_opt(dtype: Option<DType>, shape: Option<Shape>) -> ValueType {
        ValueType::Tensor(TensorType { dtype, shape })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::types::shape_of;

    fn parse(op: &str, opset: i64, attrs: Vec<(&str, Attr)>, n_in: usize) -> IrResult<Option<LinalgOp>> {
        let items = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut cx = ParseCtx {
            domain: "",
            op_type: op,
            opset,
            attrs: Attrs::new(op, items),
            num_inputs: n_in,
            num_outputs: 1,
        };
        LinalgOp::parse(&mut cx)
    }

    fn infer(op: &LinalgOp, ins: Vec<Option<TensorType>>, n_out: usize) -> IrResult<Vec<ValueType>> {
        let inputs: Vec<Option<ValueType>> = ins.into_iter().map(|t| t.map(ValueType::Tensor)).collect();
        let consts = vec![None; inputs.len()];
        op.infer(&InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: n_out,
            op: op.op_type(),
        })
    }

    fn tt(d: &[usize]) -> Option<TensorType> {
        Some(TensorType::new(DType::F32, shape_of(d)))
    }

    #[test]
    fn softmax_default_axis_follows_opset() {
        let LinalgOp::Softmax(s) = parse("Softmax", 11, vec![], 1).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((s.axis, s.flatten), (1, true));
        let LinalgOp::Softmax(s) = parse("LogSoftmax", 13, vec![], 1).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((s.axis, s.flatten, s.kind), (-1, false, SoftmaxKind::LogSoftmax));
        assert!(parse("Softmax", 13, vec![("bogus", Attr::Int(1))], 1).is_err());
        assert!(parse("Relu", 13, vec![], 1).unwrap().is_none());
    }

    #[test]
    fn matmul_shapes() {
        let op = LinalgOp::MatMul;
        let t = |v: &ValueType| v.as_tensor().unwrap().concrete_shape().unwrap();
        assert_eq!(
            t(&infer(&op, vec![tt(&[3]), tt(&[2, 3, 4])], 1).unwrap()[0]),
            vec![2, 4]
        );
        assert_eq!(
            t(&infer(&op, vec![tt(&[2, 1, 5, 3]), tt(&[7, 3, 4])], 1).unwrap()[0]),
            vec![2, 7, 5, 4]
        );
        assert_eq!(
            t(&infer(&op, vec![tt(&[3]), tt(&[3])], 1).unwrap()[0]),
            Vec::<usize>::new()
        );
        assert!(infer(&op, vec![tt(&[2, 3]), tt(&[4, 5])], 1).is_err());
    }

    #[test]
    fn gemm_and_attention_shapes() {
        let op = parse("Gemm", 13, vec![("transA", Attr::Int(1))], 3).unwrap().unwrap();
        let out = infer(&op, vec![tt(&[4, 3]), tt(&[4, 5]), tt(&[5])], 1).unwrap();
        assert_eq!(out[0].as_tensor().unwrap().concrete_shape().unwrap(), vec![3, 5]);
        let op = parse(
            "Attention",
            23,
            vec![("q_num_heads", Attr::Int(9)), ("kv_num_heads", Attr::Int(3))],
            6,
        )
        .unwrap()
        .unwrap();
        let out = infer(
            &op,
            vec![
                tt(&[2, 4, 72]),
                tt(&[2, 6, 24]),
                tt(&[2, 6, 30]),
                None,
                tt(&[2, 3, 12, 8]),
                tt(&[2, 3, 12, 10]),
            ],
            4,
        )
        .unwrap();
        let s: Vec<Vec<usize>> = out
            .iter()
            .map(|v| v.as_tensor().unwrap().concrete_shape().unwrap())
            .collect();
        assert_eq!(
            s,
            vec![vec![2, 4, 90], vec![2, 3, 18, 8], vec![2, 3, 18, 10], vec![2, 9, 4, 18]]
        );
    }

    #[test]
    fn einsum_shapes() {
        let op = parse(
            "Einsum",
            12,
            vec![("equation", Attr::String(b"...ij,...jk".to_vec()))],
            2,
        )
        .unwrap()
        .unwrap();
        let out = infer(&op, vec![tt(&[5, 2, 3]), tt(&[3, 4])], 1).unwrap();
        assert_eq!(out[0].as_tensor().unwrap().concrete_shape().unwrap(), vec![5, 2, 4]);
        assert!(parse("Einsum", 12, vec![("equation", Attr::String(b"ij,jk".to_vec()))], 1).is_err());
    }
}
