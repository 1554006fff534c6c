//! The rewrite rules. Most are a Rust function from one e-node (and its
//! e-class) to equivalent e-nodes it adds; the runner unions them with the
//! class. The parallel-op merges look at a whole class (a shared input) and
//! relate several of its users at once. There is deliberately no general
//! commutativity or associativity: only matmul re-association, where shapes
//! decide which order is cheaper.

use super::language::{add_split, add_typed, ConvSpec, GemmFlags, Merge, TensorAnalysis, TensorLang, EG};
use egg::{Id, Language, Rewrite, SearchMatches, Searcher, Subst, Var};
use std::collections::BTreeMap;

type Apply = fn(&mut EG, Id, &TensorLang) -> Vec<Id>;

/// A rule over whole classes: it returns (class, equivalent class) pairs to union.
type ClassApply = fn(&mut EG, Id) -> Vec<(Id, Id)>;

/// What a rule looks at.
#[derive(Clone, Copy)]
enum Scope {
    /// Every e-node for which the filter holds; the apply function adds
    /// equivalents of that node.
    Node(fn(&TensorLang) -> bool, Apply),
    /// Every class for which the test holds (a cheap prefilter); the apply
    /// function relates several classes at once (parallel-op merging).
    Class(fn(&EG, Id) -> bool, ClassApply),
}

/// A rule written as Rust functions rather than an s-expression pattern.
#[derive(Clone)]
pub struct FnRule {
    scope: Scope,
}

impl Searcher<TensorLang, TensorAnalysis> for FnRule {
    fn search_eclass_with_limit(&self, eg: &EG, eclass: Id, limit: usize) -> Option<SearchMatches<'_, TensorLang>> {
        let hit = match self.scope {
            Scope::Node(filter, _) => eg[eclass].nodes.iter().any(filter),
            Scope::Class(test, _) => test(eg, eclass),
        };
        (limit > 0 && hit).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl egg::Applier<TensorLang, TensorAnalysis> for FnRule {
    fn apply_matches(&self, eg: &mut EG, matches: &[SearchMatches<TensorLang>], _rule: egg::Symbol) -> Vec<Id> {
        let mut changed = Vec::new();
        for m in matches {
            let pairs: Vec<(Id, Id)> = match self.scope {
                Scope::Node(filter, apply) => {
                    let nodes: Vec<TensorLang> = eg[m.eclass].nodes.iter().filter(|n| filter(n)).cloned().collect();
                    let mut pairs = Vec::new();
                    for n in nodes {
                        let n = n.map_children(|c| eg.find(c));
                        pairs.extend(apply(eg, m.eclass, &n).into_iter().map(|id| (m.eclass, id)));
                    }
                    pairs
                }
                Scope::Class(_, apply) => apply(eg, m.eclass),
            };
            for (class, id) in pairs {
                if eg.union(class, id) {
                    changed.push(id);
                }
            }
        }
        changed
    }

    fn apply_one(
        &self,
        _eg: &mut EG,
        _eclass: Id,
        _subst: &Subst,
        _ast: Option<&egg::PatternAst<TensorLang>>,
        _rule: egg::Symbol,
    ) -> Vec<Id> {
        // apply_matches handles whole classes; single substitutions carry nothing.
        Vec::new()
    }
}

fn rule(name: &str, filter: fn(&TensorLang) -> bool, apply: Apply) -> Rewrite<TensorLang, TensorAnalysis> {
    with_scope(name, Scope::Node(filter, apply))
}

fn class_rule(name: &str, test: fn(&EG, Id) -> bool, apply: ClassApply) -> Rewrite<TensorLang, TensorAnalysis> {
    with_scope(name, Scope::Class(test, apply))
}

fn with_scope(name: &str, scope: Scope) -> Rewrite<TensorLang, TensorAnalysis> {
    let r = FnRule { scope };
    Rewrite::new(name, r.clone(), r).expect("an FnRule binds no variables")
}

/// The e-nodes of class `id` (cloned: the caller mutates the e-graph).
fn nodes(eg: &EG, id: Id) -> Vec<TensorLang> {
    eg[id].nodes.clone()
}

fn shape(eg: &EG, id: Id) -> Option<Vec<usize>> {
    eg[id].data.shape.clone()
}

fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &x)| i == x)
}

/// Transpose∘Transpose → one Transpose, or nothing when the perms cancel.
fn transpose_compose(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Transpose(p, [x]) = n else {
        return vec![];
    };
    let mut out = Vec::new();
    for inner in nodes(eg, *x) {
        if let TensorLang::Transpose(q, [y]) = inner {
            if q.len() != p.len() {
                continue;
            }
            let r: Box<[usize]> = p.iter().map(|&i| q[i]).collect();
            if is_identity(&r) {
                out.push(y);
            } else {
                out.extend(add_typed(eg, TensorLang::Transpose(r, [y])));
            }
        }
    }
    out
}

fn transpose_identity(_eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    match n {
        TensorLang::Transpose(p, [x]) if is_identity(p) => vec![*x],
        _ => vec![],
    }
}

/// Transpose(Unary(x)) → Unary(Transpose(x)): lets transposes meet and cancel.
fn transpose_sink_unary(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Transpose(p, [x]) = n else {
        return vec![];
    };
    let mut out = Vec::new();
    for inner in nodes(eg, *x) {
        if let TensorLang::Unary(u, [y]) = inner {
            if let Some(t) = add_typed(eg, TensorLang::Transpose(p.clone(), [y])) {
                out.extend(add_typed(eg, TensorLang::Unary(u, [t])));
            }
        }
    }
    out
}

/// Unary(Transpose(x)) → Transpose(Unary(x)).
fn transpose_hoist_unary(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Unary(u, [x]) = n else { return vec![] };
    let mut out = Vec::new();
    for inner in nodes(eg, *x) {
        if let TensorLang::Transpose(p, [y]) = inner {
            if let Some(v) = add_typed(eg, TensorLang::Unary(*u, [y])) {
                out.extend(add_typed(eg, TensorLang::Transpose(p, [v])));
            }
        }
    }
    out
}

/// The operand under a 2-D Transpose([1, 0]) in class `id`, if any.
fn under_2d_transpose(eg: &EG, id: Id) -> Option<Id> {
    eg[id].nodes.iter().find_map(|n| match n {
        TensorLang::Transpose(p, [y]) if **p == [1, 0] => Some(*y),
        _ => None,
    })
}

const ONE: u32 = 0x3f80_0000;

/// MatMul(Aᵀ, B) and MatMul(A, Bᵀ) of 2-D operands → Gemm with transA/transB.
fn matmul_transpose_to_gemm(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::MatMul([a, b]) = n else { return vec![] };
    let mut out = Vec::new();
    let flags = |trans_a, trans_b| GemmFlags {
        trans_a,
        trans_b,
        alpha: ONE,
        beta: ONE,
        activation: None,
    };
    if let Some(a0) = under_2d_transpose(eg, *a) {
        out.extend(add_typed(eg, TensorLang::Gemm(flags(true, false), Box::new([a0, *b]))));
    }
    if let Some(b0) = under_2d_transpose(eg, *b) {
        out.extend(add_typed(eg, TensorLang::Gemm(flags(false, true), Box::new([*a, b0]))));
    }
    out
}

/// Gemm(Aᵀ, …) → Gemm with transA flipped (and the same for B).
fn gemm_absorb_transpose(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Gemm(f, args) = n else { return vec![] };
    let mut out = Vec::new();
    for slot in 0..2 {
        if let Some(x) = under_2d_transpose(eg, args[slot]) {
            let mut f2 = *f;
            let mut a2 = args.clone();
            a2[slot] = x;
            if slot == 0 {
                f2.trans_a = !f2.trans_a;
            } else {
                f2.trans_b = !f2.trans_b;
            }
            out.extend(add_typed(eg, TensorLang::Gemm(f2, a2)));
        }
    }
    out
}

/// Reshape∘Reshape → Reshape (targets are concrete shapes).
fn reshape_compose(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Reshape(s, [x]) = n else { return vec![] };
    let mut out = Vec::new();
    for inner in nodes(eg, *x) {
        if let TensorLang::Reshape(_, [y]) = inner {
            if shape(eg, y).as_deref() == Some(&s[..]) {
                out.push(y);
            } else {
                out.extend(add_typed(eg, TensorLang::Reshape(s.clone(), [y])));
            }
        }
    }
    out
}

fn reshape_identity(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    match n {
        TensorLang::Reshape(s, [x]) if shape(eg, *x).as_deref() == Some(&s[..]) => vec![*x],
        _ => vec![],
    }
}

/// A slice of a Concat along the same axis that lies inside one part is a
/// slice of that part (or the part itself).
fn slice_of_concat(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let &TensorLang::Slice {
        axis,
        start,
        end,
        arg: [x],
    } = n
    else {
        return vec![];
    };
    let mut out = Vec::new();
    for inner in nodes(eg, x) {
        let TensorLang::Concat(cat_axis, parts) = inner else {
            continue;
        };
        if cat_axis != axis {
            continue;
        }
        let mut offset = 0;
        for p in parts.iter() {
            let Some(len) = shape(eg, *p).map(|s| s[axis]) else {
                break;
            };
            if start >= offset && end <= offset + len {
                out.extend(slice_or_whole(eg, *p, axis, start - offset, end - offset));
                break;
            }
            offset += len;
        }
    }
    out
}

fn slice_or_whole(eg: &mut EG, x: Id, axis: usize, start: usize, end: usize) -> Option<Id> {
    if start == 0 && shape(eg, x).map(|s| s[axis]) == Some(end) {
        return Some(x);
    }
    add_typed(
        eg,
        TensorLang::Slice {
            axis,
            start,
            end,
            arg: [x],
        },
    )
}

fn slice_whole(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    match *n {
        TensorLang::Slice {
            axis,
            start: 0,
            end,
            arg: [x],
        } if shape(eg, x).map(|s| s[axis]) == Some(end) => vec![x],
        _ => vec![],
    }
}

/// Concat of adjacent slices of one value along the concat axis → one slice
/// (the value itself when they cover it: Split then Concat cancels).
fn concat_of_slices(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Concat(axis, parts) = n else {
        return vec![];
    };
    let Some(first) = parts.first() else { return vec![] };
    let mut out = Vec::new();
    for cand in nodes(eg, *first) {
        let TensorLang::Slice {
            axis: a,
            start,
            end,
            arg: [x],
        } = cand
        else {
            continue;
        };
        if a != *axis {
            continue;
        }
        let mut at = end;
        let contiguous = parts[1..].iter().all(|p| {
            let next = eg[*p].nodes.iter().find_map(|m| match *m {
                TensorLang::Slice {
                    axis: b,
                    start: s,
                    end: e,
                    arg: [y],
                } if b == a && s == at && eg.find(y) == eg.find(x) => Some(e),
                _ => None,
            });
            next.map(|e| at = e).is_some()
        });
        if contiguous {
            out.extend(slice_or_whole(eg, x, a, start, at));
        }
    }
    out
}

/// Scale(MatMul(a, b)) → MatMul(a, Scale(b)) and MatMul(Scale(a), b): the
/// scale moves onto whichever operand is cheaper (a weight: folded away).
fn scale_into_matmul(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::Scale(k, [x]) = n else { return vec![] };
    let mut out = Vec::new();
    for inner in nodes(eg, *x) {
        if let TensorLang::MatMul([a, b]) = inner {
            if let Some(sb) = add_typed(eg, TensorLang::Scale(*k, [b])) {
                out.extend(add_typed(eg, TensorLang::MatMul([a, sb])));
            }
            if let Some(sa) = add_typed(eg, TensorLang::Scale(*k, [a])) {
                out.extend(add_typed(eg, TensorLang::MatMul([sa, b])));
            }
        }
    }
    out
}

/// MatMul(Scale(a), b) or MatMul(a, Scale(b)) → Scale(MatMul(a, b)).
fn scale_out_of_matmul(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::MatMul([a, b]) = n else { return vec![] };
    let mut out = Vec::new();
    for (slot, operand) in [(0, *a), (1, *b)] {
        for inner in nodes(eg, operand) {
            if let TensorLang::Scale(k, [y]) = inner {
                let pair = if slot == 0 { [y, *b] } else { [*a, y] };
                if let Some(m) = add_typed(eg, TensorLang::MatMul(pair)) {
                    out.extend(add_typed(eg, TensorLang::Scale(k, [m])));
                }
            }
        }
    }
    out
}

fn rank(eg: &EG, id: Id) -> Option<usize> {
    eg[id].data.rank()
}

/// (A·B)·C ⇄ A·(B·C) when B and C are matrices (A may be batched); the
/// extractor keeps the cheaper order.
fn matmul_reassociate(eg: &mut EG, _c: Id, n: &TensorLang) -> Vec<Id> {
    let TensorLang::MatMul([l, r]) = n else { return vec![] };
    let mut out = Vec::new();
    if rank(eg, *r) == Some(2) {
        for inner in nodes(eg, *l) {
            if let TensorLang::MatMul([a, b]) = inner {
                if rank(eg, b) == Some(2) {
                    if let Some(bc) = add_typed(eg, TensorLang::MatMul([b, *r])) {
                        out.extend(add_typed(eg, TensorLang::MatMul([a, bc])));
                    }
                }
            }
        }
    }
    for inner in nodes(eg, *r) {
        if let TensorLang::MatMul([b, c]) = inner {
            if rank(eg, b) == Some(2) && rank(eg, c) == Some(2) {
                if let Some(ab) = add_typed(eg, TensorLang::MatMul([*l, b])) {
                    out.extend(add_typed(eg, TensorLang::MatMul([ab, c])));
                }
            }
        }
    }
    out
}

/// The ops of the classes using `x` as their first operand for which
/// `pick` holds, one per class, in class order: candidates for merging.
fn parallel_users(eg: &EG, x: Id, pick: impl Fn(&EG, &TensorLang) -> bool) -> Vec<(Id, TensorLang)> {
    let x = eg.find(x);
    let mut found: BTreeMap<Id, TensorLang> = BTreeMap::new();
    for p in eg[x].parents() {
        let p = eg.find(p);
        for n in &eg[p].nodes {
            let first_is_x = n.children().first().is_some_and(|c| eg.find(*c) == x);
            if first_is_x && pick(eg, n) {
                found.entry(p).or_insert_with(|| n.clone().map_children(|c| eg.find(c)));
            }
        }
    }
    found.into_iter().collect()
}

/// A weight of the original graph: merging only concatenates those, so a
/// merged op (whose weight is a Concat) is never merged again.
fn original_constant(eg: &EG, w: Id) -> bool {
    let w = eg.find(w);
    eg[w].data.constant && eg[w].nodes.iter().any(|m| matches!(m, TensorLang::Leaf(_)))
}

/// Slices `wide` back into the merged classes along `axis` (each class
/// gets `width` of it, in order) and records the group for extraction.
/// Returns the (class, slice) pairs to union; none when a slice would not
/// have its class's shape.
fn split_back(eg: &mut EG, shared: Id, wide: Id, axis: usize, members: &[(Id, usize)]) -> Vec<(Id, Id)> {
    let mut merge = Merge {
        shared,
        classes: Vec::new(),
        slices: Vec::new(),
    };
    let widths: Vec<usize> = members.iter().map(|m| m.1).collect();
    let Some(parts) = add_split(eg, wide, axis, &widths) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (&(class, _), (id, part)) in members.iter().zip(parts) {
        if eg[id].data.shape != eg[class].data.shape {
            return Vec::new();
        }
        merge.classes.push(class);
        merge.slices.push(part);
        pairs.push((class, id));
    }
    if !eg.analysis.merges.contains(&merge) {
        eg.analysis.merges.push(merge);
    }
    pairs
}

fn has_two_parents(eg: &EG, x: Id) -> bool {
    eg[x].parents().len() >= 2
}

/// Merges MatMuls (or FusedMatMuls with one activation, with `[N]`
/// biases or none) that share their input and have constant 2-D weights
/// (from the graph) into one with the weights (and biases) concatenated
/// along N, whose result is split back: the Q, K, V projections of
/// attention become one wider MatMul (TASO/TENSAT). The extractor decides
/// whether it pays.
fn merge_parallel_matmuls(eg: &mut EG, x: Id) -> Vec<(Id, Id)> {
    let users = parallel_users(eg, x, |eg, n| {
        let weight_2d = |w: Id| original_constant(eg, w) && eg[w].data.rank() == Some(2);
        match n {
            TensorLang::MatMul([_, w]) => weight_2d(*w),
            TensorLang::FusedMatMul(_, args) => {
                weight_2d(args[1])
                    && args
                        .get(2)
                        .is_none_or(|b| original_constant(eg, *b) && rank(eg, *b) == Some(1))
            }
            _ => false,
        }
    });
    /// None for MatMul, else the FusedMatMul's activation and whether it has a bias; K.
    type Key = (Option<(u32, bool)>, usize);
    /// A member: its class, weight, bias, and N.
    type Member = (Id, Id, Option<Id>, usize);
    let mut groups: BTreeMap<Key, Vec<Member>> = BTreeMap::new();
    for (class, n) in users {
        let (kind, args) = match &n {
            TensorLang::MatMul(args) => (None, &args[..]),
            TensorLang::FusedMatMul(a, args) => (Some((*a, args.len() == 3)), &args[..]),
            _ => continue,
        };
        let Some(ws) = shape(eg, args[1]) else { continue };
        let bias = args.get(2).copied();
        if bias.is_some_and(|b| shape(eg, b) != Some(vec![ws[1]])) {
            continue;
        }
        groups
            .entry((kind, ws[0]))
            .or_default()
            .push((class, args[1], bias, ws[1]));
    }
    let mut pairs = Vec::new();
    for ((kind, _), group) in groups {
        if group.len() < 2 {
            continue;
        }
        let Some(cat) = add_typed(eg, TensorLang::Concat(1, group.iter().map(|m| m.1).collect())) else {
            continue;
        };
        let x = eg.find(x);
        let wide = match kind {
            None => add_typed(eg, TensorLang::MatMul([x, cat])),
            Some((act, with_bias)) => {
                let mut args = vec![x, cat];
                if with_bias {
                    let biases: Option<Box<[Id]>> = group.iter().map(|m| m.2).collect();
                    let Some(cat_bias) = biases.and_then(|b| add_typed(eg, TensorLang::Concat(0, b))) else {
                        continue;
                    };
                    args.push(cat_bias);
                }
                add_typed(eg, TensorLang::FusedMatMul(act, args.into()))
            }
        };
        let Some((wide, out_axis)) = wide.and_then(|w| Some((w, rank(eg, w)? - 1))) else {
            continue;
        };
        let members: Vec<(Id, usize)> = group.iter().map(|m| (m.0, m.3)).collect();
        pairs.extend(split_back(eg, x, wide, out_axis, &members));
    }
    pairs
}

/// How a Gemm's C input concatenates along N, when it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum GemmBias {
    None,
    /// `[N]`: concatenated on axis 0.
    Vector,
    /// `[rows, N]`: concatenated on axis 1.
    Rows(usize),
}

fn gemm_bias(eg: &EG, args: &[Id], n: usize) -> Option<GemmBias> {
    let Some(c) = args.get(2) else {
        return Some(GemmBias::None);
    };
    if !original_constant(eg, *c) {
        return None;
    }
    match shape(eg, *c)?.as_slice() {
        [len] if *len == n => Some(GemmBias::Vector),
        [rows, len] if *len == n => Some(GemmBias::Rows(*rows)),
        _ => None,
    }
}

/// Merges Gemms that share A, with the same flags and constant B (and C
/// when present), into one Gemm with B and C concatenated along N, split
/// back on the output's columns.
fn merge_parallel_gemms(eg: &mut EG, x: Id) -> Vec<(Id, Id)> {
    let users = parallel_users(
        eg,
        x,
        |eg, n| matches!(n, TensorLang::Gemm(_, args) if original_constant(eg, args[1])),
    );
    /// A member: its class, its Gemm's operands, its N.
    type Member = (Id, Box<[Id]>, usize);
    let mut groups: BTreeMap<(GemmFlags, GemmBias), Vec<Member>> = BTreeMap::new();
    for (class, n) in users {
        let TensorLang::Gemm(flags, args) = n else { continue };
        let Some(width) = shape(eg, class).map(|s| s[1]) else {
            continue;
        };
        let Some(bias) = gemm_bias(eg, &args, width) else {
            continue;
        };
        groups.entry((flags, bias)).or_default().push((class, args, width));
    }
    let mut pairs = Vec::new();
    for ((flags, bias), group) in groups {
        if group.len() < 2 {
            continue;
        }
        let b_axis = if flags.trans_b { 0 } else { 1 };
        let Some(cat_b) = add_typed(eg, TensorLang::Concat(b_axis, group.iter().map(|g| g.1[1]).collect())) else {
            continue;
        };
        let mut args = vec![eg.find(x), cat_b];
        if bias != GemmBias::None {
            let c_axis = if bias == GemmBias::Vector { 0 } else { 1 };
            let Some(cat_c) = add_typed(eg, TensorLang::Concat(c_axis, group.iter().map(|g| g.1[2]).collect())) else {
                continue;
            };
            args.push(cat_c);
        }
        let Some(wide) = add_typed(eg, TensorLang::Gemm(flags, args.into())) else {
            continue;
        };
        let members: Vec<(Id, usize)> = group.iter().map(|g| (g.0, g.2)).collect();
        pairs.extend(split_back(eg, eg.find(x), wide, 1, &members));
    }
    pairs
}

/// A mergeable Conv: its class, spec, kernel extent, weight, bias, and
/// output channels.
struct ConvUser {
    class: Id,
    spec: ConvSpec,
    kernel: Vec<usize>,
    weight: Id,
    bias: Option<Id>,
    channels: usize,
}

/// The zero taps (before, after) per spatial dim that widen `u`'s kernel to
/// `kernel` with `pads` while reading the same input windows: a k-tap
/// kernel with begin pad p equals a K-tap one with begin pad p + l·d whose
/// first l and last K - k - l taps are zero (TASO's 1×1 → 3×3 enlargement).
fn widening(u: &ConvUser, kernel: &[usize], pads: &[usize]) -> Option<Vec<(usize, usize)>> {
    let nsp = kernel.len();
    (0..nsp)
        .map(|i| {
            let d = u.spec.dilations[i];
            let shift = pads[i].checked_sub(u.spec.pads[i])?;
            let before = (shift % d == 0).then_some(shift / d)?;
            let after = kernel[i].checked_sub(u.kernel[i] + before)?;
            (pads[nsp + i] == u.spec.pads[nsp + i] + after * d).then_some((before, after))
        })
        .collect()
}

/// Merges Convs that share X, with group 1, the same strides, dilations
/// and activation, constant weights (and biases, all or none) into one Conv
/// with the weights concatenated on output channels, split back on the
/// channel axis. Kernels of different sizes merge when zero-padding the
/// smaller weights to the largest kernel reads the same windows; the
/// extractor keeps that only when the saved launch, input read and any
/// Concat of the parts outweigh the extra FLOPs of the zero taps.
fn merge_parallel_convs(eg: &mut EG, x: Id) -> Vec<(Id, Id)> {
    let users = parallel_users(eg, x, |eg, n| match n {
        TensorLang::Conv(spec, args) => {
            spec.group == 1 && original_constant(eg, args[1]) && args.get(2).is_none_or(|b| original_constant(eg, *b))
        }
        _ => false,
    });
    type Key = (Box<[usize]>, Box<[usize]>, Option<u32>, bool);
    let mut groups: BTreeMap<Key, Vec<ConvUser>> = BTreeMap::new();
    for (class, n) in users {
        let TensorLang::Conv(spec, args) = n else { continue };
        let (Some(ws), Some(out)) = (shape(eg, args[1]), shape(eg, class)) else {
            continue;
        };
        let key = (
            spec.strides.clone(),
            spec.dilations.clone(),
            spec.activation,
            args.len() == 3,
        );
        groups.entry(key).or_default().push(ConvUser {
            class,
            kernel: ws[2..].to_vec(),
            weight: args[1],
            bias: args.get(2).copied(),
            channels: out[1],
            spec: *spec,
        });
    }
    let mut pairs = Vec::new();
    for group in groups.values() {
        let mut targets: Vec<(&[usize], &[usize])> = group.iter().map(|u| (&u.kernel[..], &u.spec.pads[..])).collect();
        targets.sort();
        targets.dedup();
        for (kernel, pads) in targets {
            let fitting: Vec<(&ConvUser, Vec<(usize, usize)>)> = group
                .iter()
                .filter_map(|u| Some((u, widening(u, kernel, pads)?)))
                .collect();
            if fitting.len() >= 2 {
                pairs.extend(merge_convs(eg, x, &fitting, pads));
            }
        }
    }
    pairs
}

fn merge_convs(eg: &mut EG, x: Id, fitting: &[(&ConvUser, Vec<(usize, usize)>)], pads: &[usize]) -> Vec<(Id, Id)> {
    let mut weights = Vec::new();
    for (u, taps) in fitting {
        if taps.iter().all(|&(b, a)| b == 0 && a == 0) {
            weights.push(u.weight);
            continue;
        }
        // No padding on the output and input channel axes.
        let pad: Box<[usize]> = [0, 0]
            .into_iter()
            .chain(taps.iter().map(|t| t.0))
            .chain([0, 0])
            .chain(taps.iter().map(|t| t.1))
            .collect();
        let Some(w) = add_typed(eg, TensorLang::Pad(pad, [u.weight])) else {
            return Vec::new();
        };
        weights.push(w);
    }
    let Some(cat_w) = add_typed(eg, TensorLang::Concat(0, weights.into())) else {
        return Vec::new();
    };
    let mut args = vec![eg.find(x), cat_w];
    let biases: Option<Box<[Id]>> = fitting.iter().map(|(u, _)| u.bias).collect();
    if let Some(biases) = biases {
        let Some(cat_b) = add_typed(eg, TensorLang::Concat(0, biases)) else {
            return Vec::new();
        };
        args.push(cat_b);
    }
    let spec = ConvSpec {
        pads: pads.into(),
        ..fitting[0].0.spec.clone()
    };
    let Some(wide) = add_typed(eg, TensorLang::Conv(Box::new(spec), args.into())) else {
        return Vec::new();
    };
    let members: Vec<(Id, usize)> = fitting.iter().map(|(u, _)| (u.class, u.channels)).collect();
    split_back(eg, eg.find(x), wide, 1, &members)
}

/// Every rule, by name.
pub fn all_rules() -> Vec<Rewrite<TensorLang, TensorAnalysis>> {
    use TensorLang as T;
    let is_transpose = |n: &T| matches!(n, T::Transpose(..));
    let is_unary = |n: &T| matches!(n, T::Unary(..));
    let is_matmul = |n: &T| matches!(n, T::MatMul(..));
    let is_gemm = |n: &T| matches!(n, T::Gemm(..));
    let is_reshape = |n: &T| matches!(n, T::Reshape(..));
    let is_slice = |n: &T| matches!(n, T::Slice { .. });
    let is_concat = |n: &T| matches!(n, T::Concat(..));
    let is_scale = |n: &T| matches!(n, T::Scale(..));
    vec![
        rule("transpose-compose", is_transpose, transpose_compose),
        rule("transpose-identity", is_transpose, transpose_identity),
        rule("transpose-sink-unary", is_transpose, transpose_sink_unary),
        rule("transpose-hoist-unary", is_unary, transpose_hoist_unary),
        rule("matmul-transpose-to-gemm", is_matmul, matmul_transpose_to_gemm),
        rule("gemm-absorb-transpose", is_gemm, gemm_absorb_transpose),
        rule("reshape-compose", is_reshape, reshape_compose),
        rule("reshape-identity", is_reshape, reshape_identity),
        rule("slice-of-concat", is_slice, slice_of_concat),
        rule("slice-whole", is_slice, slice_whole),
        rule("concat-of-slices", is_concat, concat_of_slices),
        rule("scale-into-matmul", is_scale, scale_into_matmul),
        rule("scale-out-of-matmul", is_matmul, scale_out_of_matmul),
        rule("matmul-reassociate", is_matmul, matmul_reassociate),
        class_rule("merge-parallel-matmul", has_two_parents, merge_parallel_matmuls),
        class_rule("merge-parallel-gemm", has_two_parents, merge_parallel_gemms),
        class_rule("merge-parallel-conv", has_two_parents, merge_parallel_convs),
    ]
}
