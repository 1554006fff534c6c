//! The tensor-algebra language the e-graph rewrites, and its shape analysis.
//!
//! Attributes live inside the e-nodes (a Transpose's permutation, a
//! Reshape's target, a Slice's range), so rules are plain Rust functions over
//! e-nodes rather than s-expression patterns. Every e-class carries the
//! static shape and dtype of its value: rules check legality against it and
//! only add nodes whose shape they can derive.

use carbide_ir::ops::elementwise::Unary;
use carbide_ir::ops::fused::Activation;
use carbide_ir::DType;
use egg::{Analysis, DidMerge, Id, Language};

/// The Gemm attributes, with the scales as f32 bit patterns (hashable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmFlags {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: u32,
    pub beta: u32,
    /// `None`: an ONNX Gemm; `Some(i)`: a com.carbide FusedGemm applying
    /// activation `i` of the analysis' activation table.
    pub activation: Option<u32>,
}

/// A convolution's window with every default filled in and `auto_pad`
/// resolved to explicit pads (shapes are static), so two convs compare by
/// value. The kernel extent is the weight's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvSpec {
    pub strides: Box<[usize]>,
    pub dilations: Box<[usize]>,
    /// Begin pads then end pads, 2 x spatial rank.
    pub pads: Box<[usize]>,
    pub group: usize,
    /// `None`: an ONNX Conv; `Some(i)`: a com.carbide FusedConv applying
    /// activation `i` of the analysis' activation table.
    pub activation: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorLang {
    /// A value the e-graph does not look inside (graph input, weight, output
    /// of a node outside the region): an index into the leaf table.
    Leaf(u32),
    Transpose(Box<[usize]>, [Id; 1]),
    /// Reshape to a fully known shape.
    Reshape(Box<[usize]>, [Id; 1]),
    /// An elementwise unary op (index into the analysis' unary table): it
    /// commutes with every layout change.
    Unary(u32, [Id; 1]),
    /// Multiplication by a scalar f32 constant (its bit pattern).
    Scale(u32, [Id; 1]),
    MatMul([Id; 2]),
    /// com.carbide FusedMatMul without residual: activation `i` of the
    /// analysis' table applied to MatMul(A, B) + bias; A, B and optionally bias.
    FusedMatMul(u32, Box<[Id]>),
    /// A, B and optionally C.
    Gemm(GemmFlags, Box<[Id]>),
    /// X, W and optionally the bias B.
    Conv(Box<ConvSpec>, Box<[Id]>),
    /// Zero padding, begin pads then end pads per axis: widens small conv
    /// kernels to a larger one's (on weights only, where it folds away).
    Pad(Box<[usize]>, [Id; 1]),
    Concat(usize, Box<[Id]>),
    /// `[start, end)` of one axis; a Split is a group of these.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
        arg: [Id; 1],
    },
}

impl Language for TensorLang {
    type Discriminant = std::mem::Discriminant<Self>;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(self)
    }

    fn matches(&self, other: &Self) -> bool {
        use TensorLang::*;
        match (self, other) {
            (Leaf(a), Leaf(b)) => a == b,
            (Transpose(a, _), Transpose(b, _)) | (Reshape(a, _), Reshape(b, _)) => a == b,
            (Unary(a, _), Unary(b, _)) | (Scale(a, _), Scale(b, _)) => a == b,
            (MatMul(_), MatMul(_)) => true,
            (FusedMatMul(a, x), FusedMatMul(b, y)) => a == b && x.len() == y.len(),
            (Gemm(a, x), Gemm(b, y)) => a == b && x.len() == y.len(),
            (Conv(a, x), Conv(b, y)) => a == b && x.len() == y.len(),
            (Pad(a, _), Pad(b, _)) => a == b,
            (Concat(a, x), Concat(b, y)) => a == b && x.len() == y.len(),
            (
                Slice {
                    axis: a,
                    start: s,
                    end: e,
                    ..
                },
                Slice {
                    axis: b,
                    start: t,
                    end: f,
                    ..
                },
            ) => (a, s, e) == (b, t, f),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        use TensorLang::*;
        match self {
            Leaf(_) => &[],
            Transpose(_, c) | Reshape(_, c) | Pad(_, c) | Unary(_, c) | Scale(_, c) | Slice { arg: c, .. } => c,
            MatMul(c) => c,
            Gemm(_, c) | Conv(_, c) | FusedMatMul(_, c) | Concat(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        use TensorLang::*;
        match self {
            Leaf(_) => &mut [],
            Transpose(_, c) | Reshape(_, c) | Pad(_, c) | Unary(_, c) | Scale(_, c) | Slice { arg: c, .. } => c,
            MatMul(c) => c,
            Gemm(_, c) | Conv(_, c) | FusedMatMul(_, c) | Concat(_, c) => c,
        }
    }
}

/// A value outside the rewritten region.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// An initializer (not overridable by a graph input).
    pub constant: bool,
}

/// What every e-class knows about its value.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassData {
    /// `None` only for nodes a rule could not type (rules never add those).
    pub shape: Option<Vec<usize>>,
    pub dtype: Option<DType>,
    /// Computable from initializers alone: folded at extraction.
    pub constant: bool,
}

impl ClassData {
    pub fn elems(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.iter().product())
    }

    pub fn bytes(&self) -> f64 {
        let width = self.dtype.map_or(32, |d| d.bit_width());
        (self.elems().unwrap_or(0) * width).div_ceil(8) as f64
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

/// Parallel ops merged by a rule into one wider op whose result is split
/// back. A greedy extractor counts the shared wide op once per slice, so
/// extraction decides these groups as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The input the merged ops share: its cost is paid either way.
    pub shared: Id,
    /// The original classes.
    pub classes: Vec<Id>,
    /// The slice e-nodes of the wide op that replace them, in order.
    pub slices: Vec<TensorLang>,
}

/// The analysis state: the leaf table, the interned unary ops and
/// activations, and the merges the rules found.
#[derive(Debug, Default)]
pub struct TensorAnalysis {
    pub leaves: Vec<LeafInfo>,
    pub unaries: Vec<Unary>,
    pub activations: Vec<Activation>,
    pub merges: Vec<Merge>,
}

fn intern<T: PartialEq>(table: &mut Vec<T>, x: T) -> u32 {
    if let Some(i) = table.iter().position(|y| *y == x) {
        return i as u32;
    }
    table.push(x);
    (table.len() - 1) as u32
}

impl TensorAnalysis {
    pub fn intern_unary(&mut self, u: Unary) -> u32 {
        intern(&mut self.unaries, u)
    }

    pub fn intern_activation(&mut self, a: Activation) -> u32 {
        intern(&mut self.activations, a)
    }
}

pub type EG = egg::EGraph<TensorLang, TensorAnalysis>;

fn is_perm(p: &[usize]) -> bool {
    let mut seen = vec![false; p.len()];
    p.iter().all(|&i| i < p.len() && !std::mem::replace(&mut seen[i], true))
}

/// Numpy broadcasting of two batch shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The shape and dtype of `node`'s value, or `None` when the node is not
/// well-typed (a rule must then not add it).
pub fn node_type(
    node: &TensorLang,
    leaves: &[LeafInfo],
    data: impl Fn(Id) -> ClassData,
) -> Option<(Vec<usize>, DType)> {
    use TensorLang::*;
    let typed = |id: Id| {
        let d = data(id);
        Some((d.shape?, d.dtype?))
    };
    match node {
        Leaf(i) => leaves.get(*i as usize).map(|l| (l.shape.clone(), l.dtype)),
        Transpose(perm, [x]) => {
            let (s, dt) = typed(*x)?;
            (perm.len() == s.len() && is_perm(perm)).then(|| (perm.iter().map(|&p| s[p]).collect(), dt))
        }
        Reshape(target, [x]) => {
            let (s, dt) = typed(*x)?;
            (s.iter().product::<usize>() == target.iter().product::<usize>()).then(|| (target.to_vec(), dt))
        }
        Unary(_, [x]) => typed(*x),
        Scale(_, [x]) => typed(*x).filter(|(_, dt)| *dt == DType::F32),
        MatMul([a, b]) => matmul_type(*a, *b, typed),
        FusedMatMul(_, args) => {
            let (out, dt) = matmul_type(*args.first()?, *args.get(1)?, typed)?;
            if let Some(bias) = args.get(2) {
                let (sb, db) = typed(*bias)?;
                if db != dt || broadcast(&sb, &out)? != out {
                    return None;
                }
            }
            (args.len() <= 3).then_some((out, dt))
        }
        Gemm(f, args) => {
            let (sa, da) = typed(*args.first()?)?;
            let (sb, db) = typed(*args.get(1)?)?;
            if da != db || sa.len() != 2 || sb.len() != 2 || args.len() > 3 {
                return None;
            }
            let (m, k) = if f.trans_a { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
            let (k2, n) = if f.trans_b { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
            if k != k2 {
                return None;
            }
            if let Some(c) = args.get(2) {
                let (sc, dc) = typed(*c)?;
                if dc != da || broadcast(&sc, &[m, n])? != [m, n] {
                    return None;
                }
            }
            Some((vec![m, n], da))
        }
        Conv(spec, args) => conv_type(spec, args, typed),
        Pad(pads, [x]) => {
            let (s, dt) = typed(*x)?;
            let rank = s.len();
            (pads.len() == 2 * rank).then(|| {
                let out = s
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d + pads[i] + pads[rank + i])
                    .collect();
                (out, dt)
            })
        }
        Concat(axis, parts) => {
            let (first, dt) = typed(*parts.first()?)?;
            if *axis >= first.len() {
                return None;
            }
            let mut out = first.clone();
            out[*axis] = 0;
            for p in parts.iter() {
                let (s, d) = typed(*p)?;
                let same_elsewhere =
                    s.len() == first.len() && s.iter().zip(&first).enumerate().all(|(i, (x, y))| i == *axis || x == y);
                if d != dt || !same_elsewhere {
                    return None;
                }
                out[*axis] += s[*axis];
            }
            Some((out, dt))
        }
        Slice {
            axis,
            start,
            end,
            arg: [x],
        } => {
            let (mut s, dt) = typed(*x)?;
            if *axis >= s.len() || start >= end || *end > s[*axis] {
                return None;
            }
            s[*axis] = end - start;
            Some((s, dt))
        }
    }
}

fn matmul_type(a: Id, b: Id, typed: impl Fn(Id) -> Option<(Vec<usize>, DType)>) -> Option<(Vec<usize>, DType)> {
    let (sa, da) = typed(a)?;
    let (sb, db) = typed(b)?;
    if da != db || sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
        return None;
    }
    let mut out = broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    out.extend([sa[sa.len() - 2], sb[sb.len() - 1]]);
    Some((out, da))
}

/// Conv inference: X [N, C, D...], W [M, C/group, k...], B [M] -> [N, M, out...].
fn conv_type(
    spec: &ConvSpec,
    args: &[Id],
    typed: impl Fn(Id) -> Option<(Vec<usize>, DType)>,
) -> Option<(Vec<usize>, DType)> {
    let (xs, dx) = typed(*args.first()?)?;
    let (ws, dw) = typed(*args.get(1)?)?;
    let nsp = xs.len().checked_sub(2).filter(|&n| n > 0)?;
    let lengths_ok = spec.strides.len() == nsp && spec.dilations.len() == nsp && spec.pads.len() == 2 * nsp;
    if dx != dw || ws.len() != xs.len() || args.len() > 3 || !lengths_ok || spec.group == 0 {
        return None;
    }
    let m = ws[0];
    if xs[1] != ws[1] * spec.group || m % spec.group != 0 {
        return None;
    }
    if let Some(b) = args.get(2) {
        let (bs, db) = typed(*b)?;
        if db != dx || bs != [m] {
            return None;
        }
    }
    let mut out = vec![xs[0], m];
    for i in 0..nsp {
        let (s, d) = (spec.strides[i], spec.dilations[i]);
        let extent = ws[2 + i].checked_sub(1)? * d + 1;
        let padded = xs[2 + i] + spec.pads[i] + spec.pads[nsp + i];
        if s == 0 || padded < extent {
            return None;
        }
        out.push((padded - extent) / s + 1);
    }
    Some((out, dx))
}

impl Analysis<TensorLang> for TensorAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut EG, enode: &TensorLang, _id: Id) -> ClassData {
        let ty = node_type(enode, &egraph.analysis.leaves, |i| egraph[i].data.clone());
        let constant = match enode {
            TensorLang::Leaf(i) => egraph.analysis.leaves.get(*i as usize).is_some_and(|l| l.constant),
            _ => enode.children().iter().all(|c| egraph[*c].data.constant),
        };
        let (shape, dtype) = match ty {
            Some((s, d)) => (Some(s), Some(d)),
            None => (None, None),
        };
        ClassData { shape, dtype, constant }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let before = a.clone();
        if a.shape.is_none() {
            a.shape = b.shape.clone();
        }
        if a.dtype.is_none() {
            a.dtype = b.dtype;
        }
        a.constant |= b.constant;
        DidMerge(*a != before, *a != b)
    }
}

/// Adds the slices of `x` along `axis` that tile it in `sizes` (a Split),
/// in order; `None` when one is not well-typed.
pub fn add_split(eg: &mut EG, x: Id, axis: usize, sizes: &[usize]) -> Option<Vec<(Id, TensorLang)>> {
    let mut offset = 0;
    let mut parts = Vec::with_capacity(sizes.len());
    for len in sizes {
        let node = TensorLang::Slice {
            axis,
            start: offset,
            end: offset + len,
            arg: [x],
        };
        offset += len;
        parts.push((add_typed(eg, node.clone())?, node));
    }
    Some(parts)
}

/// Adds `node` when it is well-typed; rules go through this so every class
/// keeps a known shape.
pub fn add_typed(eg: &mut EG, node: TensorLang) -> Option<Id> {
    node_type(&node, &eg.analysis.leaves, |i| eg[i].data.clone())?;
    Some(eg.add(node))
}
