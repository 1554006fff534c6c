//! Einsum: each operand's repeated labels become a diagonal, labels no one
//! else needs are summed away, and operands are contracted left to right as
//! batched matrix products (batch = shared kept labels, k = shared dropped
//! labels), so every equation reduces to the GEMM kernel.

use super::matmul::{batch_offsets, batched_gemm, MatElem, MAX_ELEMS};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, Axis, IxDyn};
use carbide_ir::ops::linalg::{EinsumEq, Term};
use carbide_ir::{bf16, f16, Tensor};
use std::ops::Add;

/// Labels are letters (their char code) or ellipsis dims (1000 + position,
/// right-aligned so broadcasting ellipses share labels).
type Label = u32;
const ELL: Label = 1000;

/// An operand as an array plus one label per axis.
struct Operand<T> {
    a: ArrayD<T>,
    labels: Vec<Label>,
}

fn expand_labels(terms: &[Term], rank: usize, ell_max: usize) -> OpResult<Vec<Label>> {
    let letters = EinsumEq::letters(terms);
    let has_ell = terms.contains(&Term::Ellipsis);
    if rank < letters || (!has_ell && rank != letters) {
        return Err(invalid(format!(
            "operand of rank {rank} does not match its {letters} subscripts"
        )));
    }
    let ell_rank = rank - letters;
    let mut out = Vec::with_capacity(rank);
    for t in terms {
        match t {
            Term::Label(c) => out.push(*c as Label),
            Term::Ellipsis => out.extend((0..ell_rank).map(|j| ELL + (ell_max - ell_rank + j) as Label)),
        }
    }
    Ok(out)
}

/// Takes the diagonal over repeated labels of one operand.
fn diagonal<T: Copy + Default>(op: Operand<T>) -> OpResult<Operand<T>> {
    let mut uniq: Vec<Label> = Vec::new();
    for l in &op.labels {
        if !uniq.contains(l) {
            uniq.push(*l);
        }
    }
    if uniq.len() == op.labels.len() {
        return Ok(op);
    }
    let shape = op.a.shape().to_vec();
    let mut sizes = Vec::with_capacity(uniq.len());
    for u in &uniq {
        let ds: Vec<usize> = op
            .labels
            .iter()
            .zip(&shape)
            .filter(|(l, _)| *l == u)
            .map(|(_, d)| *d)
            .collect();
        if ds.iter().any(|d| *d != ds[0]) {
            return Err(invalid(format!("repeated label has differing sizes {ds:?}")));
        }
        sizes.push(ds[0]);
    }
    let a = op.a.as_standard_layout();
    let src = a.as_slice().ok_or_else(|| invalid("non-contiguous operand"))?;
    let mut strides = vec![0usize; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = s;
        s *= shape[i];
    }
    let ustride: Vec<usize> = uniq
        .iter()
        .map(|u| {
            op.labels
                .iter()
                .zip(&strides)
                .filter(|(l, _)| *l == u)
                .map(|(_, s)| *s)
                .sum()
        })
        .collect();
    let n: usize = sizes.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; sizes.len()];
    for _ in 0..n {
        let off: usize = idx.iter().zip(&ustride).map(|(i, s)| i * s).sum();
        out.push(*src.get(off).ok_or_else(|| invalid("diagonal index out of range"))?);
        for d in (0..sizes.len()).rev() {
            idx[d] += 1;
            if idx[d] < sizes[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let a = ArrayD::from_shape_vec(IxDyn(&sizes), out).map_err(|e| invalid(e.to_string()))?;
    Ok(Operand { a, labels: uniq })
}

/// Sums away the axes whose labels are not in `keep`.
fn sum_unneeded<T: Copy + Default + Add<Output = T>>(mut op: Operand<T>, keep: &[Label]) -> Operand<T> {
    let mut i = op.labels.len();
    while i > 0 {
        i -= 1;
        if !keep.contains(&op.labels[i]) {
            op.a = op.a.fold_axis(Axis(i), T::default(), |&acc, &v| acc + v);
            op.labels.remove(i);
        }
    }
    op
}

/// Permutes to the given label order, broadcasting size-1 axes to `sizes`,
/// and returns a contiguous buffer.
fn arrange<T: Copy>(op: &Operand<T>, order: &[Label], sizes: &[usize]) -> OpResult<Vec<T>> {
    let perm: Vec<usize> = order
        .iter()
        .map(|l| {
            op.labels
                .iter()
                .position(|x| x == l)
                .ok_or_else(|| invalid("label lost in contraction"))
        })
        .collect::<OpResult<_>>()?;
    let v = op.a.view().permuted_axes(IxDyn(&perm));
    let v = v
        .broadcast(IxDyn(sizes))
        .ok_or_else(|| invalid(format!("einsum dims {:?} do not broadcast to {sizes:?}", v.shape())))?;
    Ok(v.iter().copied().collect())
}

fn contract<T: MatElem>(x: Operand<T>, y: Operand<T>, keep: &[Label]) -> OpResult<Operand<T>> {
    let size_of = |l: Label| -> usize {
        let a = x
            .labels
            .iter()
            .position(|v| *v == l)
            .map(|p| x.a.shape()[p])
            .unwrap_or(1);
        let b = y
            .labels
            .iter()
            .position(|v| *v == l)
            .map(|p| y.a.shape()[p])
            .unwrap_or(1);
        a.max(b)
    };
    let (mut batch, mut left, mut kdims, mut right) = (vec![], vec![], vec![], vec![]);
    for l in &x.labels {
        if y.labels.contains(l) {
            if keep.contains(l) {
                batch.push(*l)
            } else {
                kdims.push(*l)
            }
        } else {
            left.push(*l)
        }
    }
    right.extend(y.labels.iter().filter(|l| !x.labels.contains(l)).copied());
    for l in x.labels.iter().chain(&y.labels) {
        let (a, b) = (
            x.labels.iter().position(|v| v == l).map(|p| x.a.shape()[p]),
            y.labels.iter().position(|v| v == l).map(|p| y.a.shape()[p]),
        );
        if let (Some(a), Some(b)) = (a, b) {
            if a != b && a != 1 && b != 1 {
                return Err(invalid(format!("einsum label has sizes {a} and {b}")));
            }
        }
    }
    let sz = |ls: &[Label]| ls.iter().map(|&l| size_of(l)).collect::<Vec<_>>();
    let (bs, ls, ks, rs) = (sz(&batch), sz(&left), sz(&kdims), sz(&right));
    let prod = |v: &[usize]| {
        v.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&p| p <= MAX_ELEMS)
    };
    let too_big = || invalid("einsum intermediate is too large");
    let (nb, m, k, n) = (
        prod(&bs).ok_or_else(too_big)?,
        prod(&ls).ok_or_else(too_big)?,
        prod(&ks).ok_or_else(too_big)?,
        prod(&rs).ok_or_else(too_big)?,
    );
    for s in [nb * m, nb * k, m * k, k * n, nb * n] {
        if s > MAX_ELEMS {
            return Err(too_big());
        }
    }
    let xo: Vec<Label> = batch.iter().chain(&left).chain(&kdims).copied().collect();
    let xs: Vec<usize> = bs.iter().chain(&ls).chain(&ks).copied().collect();
    let yo: Vec<Label> = batch.iter().chain(&kdims).chain(&right).copied().collect();
    let ys: Vec<usize> = bs.iter().chain(&ks).chain(&rs).copied().collect();
    let xb = arrange(&x, &xo, &xs)?;
    let yb = arrange(&y, &yo, &ys)?;
    let offs = |inner: usize| batch_offsets(&[nb], &[nb], inner);
    let out = batched_gemm(m, k, n, &xb, &offs(m * k), (k, 1), &yb, &offs(k * n), (n, 1))?;
    let labels: Vec<Label> = batch.iter().chain(&left).chain(&right).copied().collect();
    let shape: Vec<usize> = bs.iter().chain(&ls).chain(&rs).copied().collect();
    let a = ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid(e.to_string()))?;
    Ok(Operand { a, labels })
}

pub fn einsum_arrays<T: MatElem + Add<Output = T>>(eq: &EinsumEq, xs: &[&ArrayD<T>]) -> OpResult<ArrayD<T>> {
    if xs.len() != eq.inputs.len() {
        return Err(invalid(format!(
            "equation has {} operands, got {} inputs",
            eq.inputs.len(),
            xs.len()
        )));
    }
    let ell_max = eq
        .inputs
        .iter()
        .zip(xs)
        .map(|(t, x)| {
            if t.contains(&Term::Ellipsis) {
                x.ndim().saturating_sub(EinsumEq::letters(t))
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0);
    let mut out_labels = Vec::new();
    for t in &eq.output {
        match t {
            Term::Label(c) => out_labels.push(*c as Label),
            Term::Ellipsis => out_labels.extend((0..ell_max).map(|j| ELL + j as Label)),
        }
    }
    let mut ops = Vec::with_capacity(xs.len());
    for (terms, x) in eq.inputs.iter().zip(xs) {
        let labels = expand_labels(terms, x.ndim(), ell_max)?;
        ops.push(diagonal(Operand {
            a: (*x).clone(),
            labels,
        })?);
    }
    // Labels still needed by operand i or later, or by the output.
    let needed_from = |ops: &[Operand<T>], i: usize| -> Vec<Label> {
        let mut v = out_labels.clone();
        for o in &ops[i..] {
            v.extend(o.labels.iter().copied());
        }
        v
    };
    let mut rest = ops.into_iter();
    let first = rest
        .next()
        .ok_or_else(|| invalid("einsum needs at least one operand"))?;
    let mut later: Vec<Operand<T>> = rest.collect();
    let mut cur = sum_unneeded(first, &needed_from(&later, 0));
    while !later.is_empty() {
        let next = later.remove(0);
        let keep = needed_from(&later, 0);
        let mut keep_next = keep.clone();
        keep_next.extend(cur.labels.iter().copied());
        let next = sum_unneeded(next, &keep_next);
        let mut keep_cur = keep.clone();
        keep_cur.extend(next.labels.iter().copied());
        cur = sum_unneeded(cur, &keep_cur);
        cur = contract(cur, next, &keep)?;
    }
    // Output labels missing from the result (possible only for ellipsis
    // dims of size 1 that no operand has) become size-1 axes.
    for l in &out_labels {
        if !cur.labels.contains(l) {
            let n = cur.labels.len();
            cur.a = cur.a.insert_axis(Axis(n));
            cur.labels.push(*l);
        }
    }
    let perm: Vec<usize> = out_labels
        .iter()
        .map(|l| {
            cur.labels
                .iter()
                .position(|x| x == l)
                .ok_or_else(|| invalid("output label lost"))
        })
        .collect::<OpResult<_>>()?;
    Ok(cur.a.permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned())
}

pub fn einsum(eq: &EinsumEq, xs: &[&Tensor]) -> OpResult<Tensor> {
    let first = xs.first().ok_or_else(|| invalid("Einsum needs inputs"))?;
    if xs.iter().any(|x| x.dtype() != first.dtype()) {
        return Err(invalid("Einsum inputs differ in dtype"));
    }
    macro_rules! go {
        ($v:ident) => {{
            let arrs: Vec<&ArrayD<_>> = xs
                .iter()
                .filter_map(|x| if let Tensor::$v(a) = x { Some(a) } else { None })
                .collect();
            Tensor::$v(einsum_arrays(eq, &arrs)?)
        }};
    }
    Ok(match first {
        Tensor::F32(_) => go!(F32),
        Tensor::F64(_) => go!(F64),
        Tensor::I8(_) => go!(I8),
        Tensor::I16(_) => go!(I16),
        Tensor::I32(_) => go!(I32),
        Tensor::I64(_) => go!(I64),
        Tensor::U8(_) => go!(U8),
        Tensor::U16(_) => go!(U16),
        Tensor::U32(_) => go!(U32),
        Tensor::U64(_) => go!(U64),
        Tensor::F16(_) | Tensor::BF16(_) => {
            let arrs: Vec<ArrayD<f32>> = xs
                .iter()
                .map(|x| match x {
                    Tensor::F16(a) => a.mapv(|v| v.to_f32()),
                    Tensor::BF16(a) => a.mapv(|v| v.to_f32()),
                    _ => ArrayD::zeros(IxDyn(&[0])),
                })
                .collect();
            let refs: Vec<&ArrayD<f32>> = arrs.iter().collect();
            let y = einsum_arrays(eq, &refs)?;
            match first {
                Tensor::F16(_) => Tensor::F16(y.mapv(f16::from_f32)),
                _ => Tensor::BF16(y.mapv(bf16::from_f32)),
            }
        }
        t => return Err(unsupported(format!("Einsum on {} tensors", t.dtype()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(shape: &[usize], v: Vec<f64>) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    fn run(eq: &str, xs: &[&ArrayD<f64>]) -> ArrayD<f64> {
        einsum_arrays(&EinsumEq::parse(eq).unwrap(), xs).unwrap()
    }

    #[test]
    fn einsum_cases() {
        let a = arr(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = arr(&[3, 2], vec![1., 0., 0., 1., 1., 1.]);
        assert_eq!(
            run("ij,jk->ik", &[&a, &b]).into_raw_vec_and_offset().0,
            vec![4., 5., 10., 11.]
        );
        assert_eq!(run("ij->ji", &[&a]).shape(), &[3, 2]);
        assert_eq!(
            run("ij->ji", &[&a]).into_raw_vec_and_offset().0,
            vec![1., 4., 2., 5., 3., 6.]
        );
        assert_eq!(run("ij->i", &[&a]).into_raw_vec_and_offset().0, vec![6., 15.]);
        assert_eq!(
            run("ij", &[&a]).into_raw_vec_and_offset().0,
            a.clone().into_raw_vec_and_offset().0
        );
        let v = arr(&[3], vec![1., 2., 3.]);
        assert_eq!(run("i,i", &[&v, &v]).into_raw_vec_and_offset().0, vec![14.]);
        assert_eq!(run("i,j->ij", &[&v, &v]).shape(), &[3, 3]);
        let s = arr(&[], vec![7.]);
        assert_eq!(run("->", &[&s]).into_raw_vec_and_offset().0, vec![7.]);
        // batch diagonal: [2,3,3] -> [2,3]
        let d = arr(&[2, 3, 3], (0..18).map(|v| v as f64).collect());
        assert_eq!(
            run("...ii->...i", &[&d]).into_raw_vec_and_offset().0,
            vec![0., 4., 8., 9., 13., 17.]
        );
        assert_eq!(
            run("ii", &[&arr(&[2, 2], vec![1., 2., 3., 4.])])
                .into_raw_vec_and_offset()
                .0,
            vec![5.]
        );
        // three operands and broadcasting ellipsis
        let x = arr(&[2, 1, 2, 3], (0..12).map(|v| v as f64).collect());
        let y = arr(&[4, 3, 2], (0..24).map(|v| v as f64).collect());
        let r = run("...ij,...jk->...ik", &[&x, &y]);
        assert_eq!(r.shape(), &[2, 4, 2, 2]);
        assert_eq!(
            r[[1, 2, 0, 1]],
            (0..3).map(|j| (6 + j) as f64 * (12 + j * 2 + 1) as f64).sum::<f64>()
        );
        let r = run("i,ij,j->", &[&v, &arr(&[3, 3], vec![1.; 9]), &v]);
        assert_eq!(r.into_raw_vec_and_offset().0, vec![36.]);
        assert!(einsum_arrays(&EinsumEq::parse("ij,jk->ik").unwrap(), &[&a, &a]).is_err());
    }
}
