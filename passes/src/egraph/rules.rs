//! The rewrite rules. Each is a Rust function from one e-node (and its
//! e-class) to equivalent e-nodes it adds; the runner unions them with the
//! class. There is deliberately no general commutativity or associativity:
//! only matmul re-association, where shapes decide which order is cheaper.

use super::language::{add_typed, GemmFlags, TensorLang, EG};
use egg::{Id, Language, Rewrite, SearchMatches, Searcher, Subst, Var};
use std::collections::BTreeMap;

type Apply = fn(&mut EG, Id, &TensorLang) -> Vec<Id>;

/// A rule that looks at every e-node for which `filter` holds.
#[derive(Clone)]
pub struct FnRule {
    filter: fn(&TensorLang) -> bool,
    apply: Apply,
}

impl Searcher<TensorLang, super::language::TensorAnalysis> for FnRule {
    fn search_eclass_with_limit(&self, eg: &EG, eclass: Id, limit: usize) -> Option<SearchMatches<'_, TensorLang>> {
        (limit > 0 && eg[eclass].nodes.iter().any(self.filter)).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl egg::Applier<TensorLang, super::language::TensorAnalysis> for FnRule {
    fn apply_matches(&self, eg: &mut EG, matches: &[SearchMatches<TensorLang>], _rule: egg::Symbol) -> Vec<Id> {
        let mut changed = Vec::new();
        for m in matches {
            let nodes: Vec<TensorLang> = eg[m.eclass]
                .nodes
                .iter()
                .filter(|n| (self.filter)(n))
                .cloned()
                .collect();
            for n in nodes {
                let n = n.map_children(|c| eg.find(c));
                for id in (self.apply)(eg, m.eclass, &n) {
                    if eg.union(m.eclass, id) {
                        changed.push(id);
                    }
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

fn rule(
    name: &str,
    filter: fn(&TensorLang) -> bool,
    apply: Apply,
) -> Rewrite<TensorLang, super::language::TensorAnalysis> {
    let r = FnRule { filter, apply };
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

/// Merges MatMuls that share their input and have constant 2-D weights
/// (from the graph) into one MatMul with the weights concatenated along N,
/// whose result is split back: the Q, K, V projections of attention become
/// one wider MatMul (TASO/TENSAT). The extractor decides whether it pays.
#[derive(Clone)]
pub struct MergeParallelMatMul;

/// The mergeable MatMuls over `x`: (its class, weight class, N), sorted.
fn parallel_matmuls(eg: &EG, x: Id) -> Vec<(Id, Id, usize)> {
    let x = eg.find(x);
    let mut found: BTreeMap<Id, (Id, usize)> = BTreeMap::new();
    for p in eg[x].parents() {
        let p = eg.find(p);
        for n in &eg[p].nodes {
            let TensorLang::MatMul([a, w]) = n else { continue };
            let w = eg.find(*w);
            let original_weight = eg[w].nodes.iter().any(|m| matches!(m, TensorLang::Leaf(_)));
            let ws = &eg[w].data;
            if eg.find(*a) == x && original_weight && ws.constant && ws.rank() == Some(2) {
                if let Some(s) = &ws.shape {
                    found.entry(p).or_insert((w, s[1]));
                }
            }
        }
    }
    found.into_iter().map(|(c, (w, n))| (c, w, n)).collect()
}

impl Searcher<TensorLang, super::language::TensorAnalysis> for MergeParallelMatMul {
    fn search_eclass_with_limit(&self, eg: &EG, eclass: Id, limit: usize) -> Option<SearchMatches<'_, TensorLang>> {
        (limit > 0 && eg[eclass].parents().len() >= 2 && parallel_matmuls(eg, eclass).len() >= 2).then(|| {
            SearchMatches {
                eclass,
                substs: vec![Subst::default()],
                ast: None,
            }
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl egg::Applier<TensorLang, super::language::TensorAnalysis> for MergeParallelMatMul {
    fn apply_matches(&self, eg: &mut EG, matches: &[SearchMatches<TensorLang>], _rule: egg::Symbol) -> Vec<Id> {
        let mut changed = Vec::new();
        for m in matches {
            let x = eg.find(m.eclass);
            let group = parallel_matmuls(eg, x);
            let k = |eg: &EG, w: Id| shape(eg, w).map(|s| s[0]);
            let Some(k0) = group.first().and_then(|g| k(eg, g.1)) else {
                continue;
            };
            if group.len() < 2 || group.iter().any(|g| k(eg, g.1) != Some(k0)) {
                continue;
            }
            let weights: Box<[Id]> = group.iter().map(|g| g.1).collect();
            let Some(cat) = add_typed(eg, TensorLang::Concat(1, weights)) else {
                continue;
            };
            let Some(wide) = add_typed(eg, TensorLang::MatMul([x, cat])) else {
                continue;
            };
            let Some(out_axis) = rank(eg, wide).map(|r| r - 1) else {
                continue;
            };
            let mut offset = 0;
            let mut merge = (Vec::new(), Vec::new());
            for (class, _, n) in group {
                let part = TensorLang::Slice {
                    axis: out_axis,
                    start: offset,
                    end: offset + n,
                    arg: [wide],
                };
                offset += n;
                merge.0.push(class);
                merge.1.push(part.clone());
                if let Some(id) = add_typed(eg, part) {
                    if eg.union(class, id) {
                        changed.push(id);
                    }
                }
            }
            if !eg.analysis.merges.contains(&merge) {
                eg.analysis.merges.push(merge);
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
        Vec::new()
    }
}

/// Every rule, by name.
pub fn all_rules() -> Vec<Rewrite<TensorLang, super::language::TensorAnalysis>> {
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
        Rewrite::new("merge-parallel-matmul", MergeParallelMatMul, MergeParallelMatMul).expect("binds no variables"),
    ]
}
