//! Elementwise chains (unary and broadcasting binary ops, constants folded
//! in as scalars) as one [`LoopNest`] over the output, generated as C whose
//! innermost loop is vectorized with a scalar remainder; parts split the
//! outer iterations.

use crate::cexpr::{emit, slot, Mode, Params};
use crate::group::{broadcast_strides, chain, shape_text};
use crate::target::Target;
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{
    Access, BufferArg, KernelCall, Loop, LoopKind, LoopNest, ParamExpr, Schedule, WeightLayout, WorkloadKey,
};
use carbide_ir::Dim;
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn default_schedule(target: &Target) -> Schedule {
    Schedule {
        tiles: BTreeMap::new(),
        loop_order: Vec::new(),
        vector_axis: Some("inner".into()),
        vector_width: target.vector_width(),
        unroll: BTreeMap::new(),
        parallel_axis: Some("outer".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    }
}

/// Merges adjacent loops that every access walks contiguously (all extents
/// and strides known), so broadcasting over `[N, C, H, W]` with a `[C,1,1]`
/// operand vectorizes over `H*W` and a plain chain over the whole tensor.
fn coalesce(nest: &mut LoopNest) {
    let known = |e: &ParamExpr| if let ParamExpr::Const(c) = e { Some(*c) } else { None };
    let mut d = nest.loops.len();
    while d >= 2 {
        let (outer, inner) = (d - 2, d - 1);
        let Some(inner_ext) = known(&nest.loops[inner].extent) else {
            d -= 1;
            continue;
        };
        let Some(outer_ext) = known(&nest.loops[outer].extent) else {
            d -= 1;
            continue;
        };
        let mergeable = std::iter::once(&nest.output).chain(&nest.operands).all(|a| {
            match (known(&a.strides[outer]), known(&a.strides[inner])) {
                (Some(so), Some(si)) => so == si * inner_ext || (so == 0 && si == 0),
                _ => false,
            }
        });
        if mergeable {
            nest.loops[outer].extent = ParamExpr::Const(outer_ext * inner_ext);
            nest.loops[outer].name = format!("{}_{}", nest.loops[outer].name, nest.loops[inner].name);
            nest.loops.remove(inner);
            for a in std::iter::once(&mut nest.output).chain(nest.operands.iter_mut()) {
                let si = a.strides.remove(inner);
                a.strides[outer] = si;
            }
        }
        d -= 1;
    }
}

/// C for a loop nest whose innermost loop has unit output stride and
/// operand strides of 0 or 1.
fn emit_nest(nest: &LoopNest, entry: &str, p: &mut Params) -> Option<String> {
    let rank = nest.loops.len();
    let inner = rank - 1;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    let _ = writeln!(c, "    (void)p;");
    let _ = writeln!(c, "    float *O = (float *)bufs[{}];", nest.output.buffer);
    for (i, a) in nest.operands.iter().enumerate() {
        let _ = writeln!(c, "    const float *I{i} = (const float *)bufs[{}];", a.buffer);
    }
    for (d, l) in nest.loops.iter().enumerate() {
        let _ = writeln!(c, "    const int64_t d{d} = {};", p.c(l.extent.clone()));
    }
    let outer: Vec<String> = (0..inner).map(|d| format!("d{d}")).collect();
    let outer = if outer.is_empty() {
        "(int64_t)1".to_string()
    } else {
        outer.join(" * ")
    };
    let _ = writeln!(c, "    const int64_t outer = {outer}, inner = d{inner};");
    let _ = writeln!(
        c,
        "    const int64_t o0 = outer * part / num_parts, o1 = outer * (part + 1) / num_parts;"
    );
    let _ = writeln!(c, "    for (int64_t o = o0; o < o1; o++) {{");
    let _ = writeln!(c, "        int64_t rem = o;");
    for i in 0..nest.operands.len() {
        let _ = writeln!(c, "        int64_t off{i} = 0;");
    }
    for d in (0..inner).rev() {
        let _ = writeln!(c, "        {{ const int64_t idx = rem % d{d}; rem /= d{d};");
        for (i, a) in nest.operands.iter().enumerate() {
            if a.strides[d] != ParamExpr::Const(0) {
                let _ = writeln!(c, "          off{i} += idx * {};", p.c(a.strides[d].clone()));
            }
        }
        let _ = writeln!(c, "        }}");
    }
    let _ = writeln!(c, "        float *out = O + o * inner;");
    let mut unit = Vec::new();
    for (i, a) in nest.operands.iter().enumerate() {
        let _ = writeln!(c, "        const float *in{i} = I{i} + off{i};");
        unit.push(match a.strides[inner] {
            ParamExpr::Const(0) => false,
            ParamExpr::Const(1) => true,
            _ => return None,
        });
    }
    let vload = |i: usize| {
        if unit[i] {
            format!("VLOAD(in{i} + j)")
        } else {
            format!("VSET1(in{i}[0])")
        }
    };
    let sload = |i: usize| {
        if unit[i] {
            format!("in{i}[j]")
        } else {
            format!("in{i}[0]")
        }
    };
    let _ = writeln!(c, "        int64_t j = 0;");
    let _ = writeln!(
        c,
        "        for (; j + VW <= inner; j += VW) VSTORE(out + j, {});",
        emit(&nest.body, Mode::Vector, "", &vload)
    );
    let _ = writeln!(
        c,
        "        for (; j < inner; j++) out[j] = {};",
        emit(&nest.body, Mode::Scalar, "", &sload)
    );
    let _ = writeln!(c, "    }}\n}}");
    Some(c)
}

pub fn lower(
    group: &KernelGroup,
    target: &Target,
    schedule: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    let Some(ch) = chain(group, &group.nodes, None) else {
        return Ok(None);
    };
    let out_ty = &group.outputs[0].ty;
    let Some(out) = out_ty.shape.clone() else {
        return Ok(None);
    };
    if out.contains(&Dim::Unknown) {
        return Ok(None);
    }
    let sched = default_schedule(target);
    if let Some(s) = schedule {
        crate::space::require_default(s, &sched, &group.nodes[0].name)?;
    }
    let out_dims: Vec<Dim> = if out.is_empty() {
        vec![Dim::Known(1)]
    } else {
        out.clone()
    };
    let mut buffers = Vec::new();
    let o_slot = slot(BufferArg::Output(0), &mut buffers);
    let mut operands = Vec::new();
    for &gi in &ch.operands {
        let Some(mut st) = broadcast_strides(&group.inputs[gi].ty, gi, &out) else {
            return Ok(None);
        };
        if out.is_empty() {
            st = vec![ParamExpr::Const(0)];
        }
        operands.push(Access {
            buffer: slot(BufferArg::Input(gi), &mut buffers),
            strides: st,
        });
    }
    let loops: Vec<Loop> = out_dims
        .iter()
        .enumerate()
        .map(|(d, dim)| Loop {
            name: format!("d{d}"),
            extent: match dim {
                Dim::Known(n) => ParamExpr::Const(*n as i64),
                _ => ParamExpr::OutputDim { output: 0, axis: d },
            },
            kind: LoopKind::Spatial,
        })
        .collect();
    let mut out_strides = vec![ParamExpr::Const(1); loops.len()];
    for d in (0..loops.len().saturating_sub(1)).rev() {
        out_strides[d] = crate::cexpr::pmul(out_strides[d + 1].clone(), loops[d + 1].extent.clone());
    }
    let mut nest = LoopNest {
        loops,
        operands,
        output: Access {
            buffer: o_slot,
            strides: out_strides,
        },
        body: ch.expr.clone(),
    };
    coalesce(&mut nest);
    let mut shapes = vec![shape_text(out_ty)];
    shapes.extend(ch.operands.iter().map(|&i| shape_text(&group.inputs[i].ty)));
    let workload = WorkloadKey {
        op: "elementwise".into(),
        shapes,
        dtypes: vec!["f32".into()],
        epilogue: ch.expr.describe(),
        attrs: vec![],
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_ew_{}_{}",
        workload.hex(),
        group.nodes[0]
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    let mut p = Params::default();
    let Some(source) = emit_nest(&nest, &entry, &mut p) else {
        return Ok(None);
    };
    let mut outer = ParamExpr::Const(1);
    for l in &nest.loops[..nest.loops.len() - 1] {
        outer = crate::cexpr::pmul(outer, l.extent.clone());
    }
    let elements = crate::cexpr::pmul(outer.clone(), nest.loops[nest.loops.len() - 1].extent.clone());
    // About 4 elements per ns: these kernels stream memory.
    let outer = crate::cexpr::parts_for_work(outer, elements, 4);
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: Vec::new(),
            max_parts: Some(outer),
        },
        source,
        schedule: sched,
        workload,
    }))
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, check_neon, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
    use carbide_ir::types::TensorType;
    use carbide_ir::{DType, Dim, Op};

    fn chain_group(x: &[usize], b: &[usize], s: &[usize]) -> (KernelGroup, Vec<carbide_ir::Tensor>) {
        let bin = |op| Op::Elementwise(ElementwiseOp::Binary { op, legacy_axis: None });
        let un = |u| Op::Elementwise(ElementwiseOp::Unary(u));
        let (tx, tb, ts) = (rand_tensor(x, 1), rand_tensor(b, 2), rand_tensor(s, 3));
        let g = KernelGroup {
            nodes: vec![
                node("add", bin(Binary::Add), &["x", "b"], &["t0"]),
                node("gelu", un(Unary::Gelu { tanh: false }), &["t0"], &["t1"]),
                node("mul", bin(Binary::Mul), &["t1", "s"], &["t2"]),
                node("tanh", un(Unary::Tanh), &["t2"], &["t3"]),
                node("sub", bin(Binary::Sub), &["t3", "t0"], &["t4"]),
                node("sig", un(Unary::Sigmoid), &["t4"], &["t5"]),
                node("erf", un(Unary::Erf), &["t5"], &["t6"]),
                node("exp", un(Unary::Exp), &["t6"], &["out"]),
            ],
            inputs: vec![
                GroupValue {
                    name: "x".into(),
                    ty: tt(x),
                    constant: None,
                },
                GroupValue {
                    name: "b".into(),
                    ty: tt(b),
                    constant: Some(tb.clone()),
                },
                GroupValue {
                    name: "s".into(),
                    ty: tt(s),
                    constant: None,
                },
            ],
            outputs: vec![GroupValue {
                name: "out".into(),
                ty: tt(x),
                constant: None,
            }],
        };
        (g, vec![tx, tb, ts])
    }

    #[test]
    fn elementwise_chain_with_broadcasting() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            for (x, b, s) in [
                (vec![2, 3, 5, 7], vec![3, 1, 1], vec![7]),
                (vec![4, 37], vec![37], vec![4, 1]),
                (vec![1000], vec![1], vec![1000]),
                (vec![3, 1, 19], vec![3, 1, 1], vec![1, 1, 19]),
            ] {
                let (g, feeds) = chain_group(&x, &b, &s);
                check(&g, &t, &feeds, 1e-5);
            }
        }
    }

    #[test]
    fn elementwise_symbolic_batch() {
        let t = Target::host().unwrap();
        let (mut g, _) = chain_group(&[2, 3, 16], &[16], &[3, 16]);
        let sym = TensorType::new(
            DType::F32,
            vec![Dim::Sym("batch".into()), Dim::Known(3), Dim::Known(16)],
        );
        g.inputs[0].ty = sym.clone();
        g.outputs[0].ty = sym;
        for batch in [1, 5] {
            let feeds = vec![
                rand_tensor(&[batch, 3, 16], 9),
                g.inputs[1].constant.clone().unwrap(),
                rand_tensor(&[3, 16], 4),
            ];
            check(&g, &t, &feeds, 1e-5);
        }
    }

    #[test]
    fn neon_elementwise_under_qemu() {
        let (g, feeds) = chain_group(&[2, 3, 5, 7], &[3, 1, 1], &[7]);
        check_neon(&g, &feeds, 1e-5);
    }
}
