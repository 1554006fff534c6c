//! Emitting C for element expressions and runtime parameters.

use carbide_ir::kernel::{BinaryFn, Expr, ParamExpr, UnaryFn};

/// A float literal C parses back to the same f32.
pub fn flit(x: f32) -> String {
    if x.is_nan() {
        "NAN".into()
    } else if x == f32::INFINITY {
        "INFINITY".into()
    } else if x == f32::NEG_INFINITY {
        "(-INFINITY)".into()
    } else {
        format!("({x:e}f)")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vector,
    Scalar,
}

/// C for `e` in vector or scalar form; `acc` names the anchor's value and
/// `load(i)` gives the C for operand `i` at the current point.
pub fn emit(e: &Expr, mode: Mode, acc: &str, load: &dyn Fn(usize) -> String) -> String {
    let v = mode == Mode::Vector;
    let rec = |x: &Expr| emit(x, mode, acc, load);
    match e {
        Expr::Load(i) => load(*i),
        Expr::Acc => acc.to_string(),
        Expr::Const(c) if v => format!("VSET1({})", flit(*c)),
        Expr::Const(c) => flit(*c),
        Expr::Unary(f, a) => {
            let a = rec(a);
            match (f, v) {
                (UnaryFn::Neg, true) => format!("VNEG({a})"),
                (UnaryFn::Neg, false) => format!("(-({a}))"),
                (UnaryFn::Abs, true) => format!("VABS({a})"),
                (UnaryFn::Abs, false) => format!("fabsf({a})"),
                (UnaryFn::Reciprocal, true) => format!("v_recip({a})"),
                (UnaryFn::Reciprocal, false) => format!("s_recip({a})"),
                (UnaryFn::Sqrt, true) => format!("VSQRT({a})"),
                (UnaryFn::Sqrt, false) => format!("sqrtf({a})"),
                (UnaryFn::Exp, true) => format!("v_exp({a})"),
                (UnaryFn::Exp, false) => format!("expf({a})"),
                (UnaryFn::Erf, true) => format!("v_erf({a})"),
                (UnaryFn::Erf, false) => format!("erff({a})"),
                (UnaryFn::Tanh, true) => format!("v_tanh({a})"),
                (UnaryFn::Tanh, false) => format!("tanhf({a})"),
                (UnaryFn::Sigmoid, true) => format!("v_sigmoid({a})"),
                (UnaryFn::Sigmoid, false) => format!("s_sigmoid({a})"),
                (UnaryFn::Relu, true) => format!("v_relu({a})"),
                (UnaryFn::Relu, false) => format!("s_relu({a})"),
                (UnaryFn::LeakyRelu { alpha }, true) => format!("v_leaky({a}, {})", flit(*alpha)),
                (UnaryFn::LeakyRelu { alpha }, false) => format!("s_leaky({a}, {})", flit(*alpha)),
                (UnaryFn::Clip { min, max }, true) => format!("v_clip({a}, {}, {})", flit(*min), flit(*max)),
                (UnaryFn::Clip { min, max }, false) => format!("s_clip({a}, {}, {})", flit(*min), flit(*max)),
                (UnaryFn::HardSigmoid { alpha, beta }, true) => {
                    format!("v_hardsigmoid({a}, {}, {})", flit(*alpha), flit(*beta))
                }
                (UnaryFn::HardSigmoid { alpha, beta }, false) => {
                    format!("s_hardsigmoid({a}, {}, {})", flit(*alpha), flit(*beta))
                }
                (UnaryFn::HardSwish, true) => format!("v_hardswish({a})"),
                (UnaryFn::HardSwish, false) => format!("s_hardswish({a})"),
                (UnaryFn::Gelu { tanh: false }, true) => format!("v_gelu({a})"),
                (UnaryFn::Gelu { tanh: false }, false) => format!("s_gelu({a})"),
                (UnaryFn::Gelu { tanh: true }, true) => format!("v_gelu_tanh({a})"),
                (UnaryFn::Gelu { tanh: true }, false) => format!("s_gelu_tanh({a})"),
                (UnaryFn::Swish { alpha }, true) => format!("v_swish({a}, {})", flit(*alpha)),
                (UnaryFn::Swish { alpha }, false) => format!("s_swish({a}, {})", flit(*alpha)),
                (UnaryFn::Floor, true) => format!("VFLOOR({a})"),
                (UnaryFn::Floor, false) => format!("floorf({a})"),
                (UnaryFn::Ceil, true) => format!("VCEIL({a})"),
                (UnaryFn::Ceil, false) => format!("ceilf({a})"),
            }
        }
        Expr::Binary(f, a, b) => {
            let (a, b) = (rec(a), rec(b));
            match (f, v) {
                (BinaryFn::Add, true) => format!("VADD({a}, {b})"),
                (BinaryFn::Add, false) => format!("(({a}) + ({b}))"),
                (BinaryFn::Sub, true) => format!("VSUB({a}, {b})"),
                (BinaryFn::Sub, false) => format!("(({a}) - ({b}))"),
                (BinaryFn::Mul, true) => format!("VMUL({a}, {b})"),
                (BinaryFn::Mul, false) => format!("(({a}) * ({b}))"),
                (BinaryFn::Div, true) => format!("VDIV({a}, {b})"),
                (BinaryFn::Div, false) => format!("(({a}) / ({b}))"),
                (BinaryFn::Max, true) => format!("VMAX({a}, {b})"),
                (BinaryFn::Max, false) => format!("fmaxf({a}, {b})"),
                (BinaryFn::Min, true) => format!("VMIN({a}, {b})"),
                (BinaryFn::Min, false) => format!("fminf({a}, {b})"),
                (BinaryFn::PRelu, true) => format!("v_prelu({a}, {b})"),
                (BinaryFn::PRelu, false) => format!("s_prelu({a}, {b})"),
            }
        }
    }
}

/// The runtime parameters of one kernel: each distinct expression gets one
/// slot of the `params` array; constants are inlined into the C.
#[derive(Default)]
pub struct Params {
    pub exprs: Vec<ParamExpr>,
}

impl Params {
    /// C for the value of `e` inside the entry function (`p` is the params array).
    pub fn c(&mut self, e: ParamExpr) -> String {
        if let ParamExpr::Const(c) = e {
            return format!("((int64_t){c})");
        }
        let i = match self.exprs.iter().position(|x| *x == e) {
            Some(i) => i,
            None => {
                self.exprs.push(e);
                self.exprs.len() - 1
            }
        };
        format!("p[{i}]")
    }
}

pub fn pmul(a: ParamExpr, b: ParamExpr) -> ParamExpr {
    match (&a, &b) {
        (ParamExpr::Const(1), _) => b,
        (_, ParamExpr::Const(1)) => a,
        (ParamExpr::Const(x), ParamExpr::Const(y)) => ParamExpr::Const(x * y),
        _ => ParamExpr::Mul(Box::new(a), Box::new(b)),
    }
}

/// Work (in nanoseconds of one core) that one part of a kernel step must
/// carry before the step is split: handing a part to another thread costs
/// about a microsecond of handshake, and on a loaded machine a worker
/// descheduled inside its part stalls the whole step, so small steps run
/// whole on the calling thread.
pub const MIN_PART_WORK_NS: i64 = 4000;

/// `max_parts` for a step of `tasks` interchangeable tasks costing
/// `total_work` units altogether, at `units_per_ns` units per nanosecond of
/// one core: at most `tasks`, and about one part per `2 * MIN_PART_WORK_NS`
/// of work, so every part gets at least `MIN_PART_WORK_NS`. As tasks per
/// part, `ceil((grain * tasks + 1) / (total_work + 1))`, which stays
/// defined (no division by zero) for empty shapes and symbolic dims.
pub fn parts_for_work(tasks: ParamExpr, total_work: ParamExpr, units_per_ns: i64) -> ParamExpr {
    let grain = ParamExpr::Const(2 * MIN_PART_WORK_NS * units_per_ns);
    let tasks_per_part = ParamExpr::CeilDiv(
        Box::new(ParamExpr::Add(
            Box::new(pmul(grain, tasks.clone())),
            Box::new(ParamExpr::Const(1)),
        )),
        Box::new(ParamExpr::Add(Box::new(total_work), Box::new(ParamExpr::Const(1)))),
    );
    let parts = ParamExpr::CeilDiv(Box::new(tasks), Box::new(tasks_per_part));
    // Known shapes fold to a constant (an expression over no dims evaluates on nothing).
    match parts.eval(&[], &[]) {
        Some(c) => ParamExpr::Const(c),
        None => parts,
    }
}

/// The slot of `b` in a kernel's buffer list, adding it on first use.
pub fn slot(b: carbide_ir::kernel::BufferArg, buffers: &mut Vec<carbide_ir::kernel::BufferArg>) -> usize {
    match buffers.iter().position(|x| *x == b) {
        Some(i) => i,
        None => {
            buffers.push(b);
            buffers.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(axis: usize) -> ParamExpr {
        ParamExpr::InputDim { input: 0, axis }
    }

    #[test]
    fn small_work_is_one_part_and_large_work_keeps_every_task() {
        let grain = 2 * MIN_PART_WORK_NS;
        // 128 tasks of 1 unit each: far below one grain.
        assert_eq!(
            parts_for_work(ParamExpr::Const(128), ParamExpr::Const(128), 1),
            ParamExpr::Const(1)
        );
        // Ten grains of work in 4 tasks: every task is its own part.
        assert_eq!(
            parts_for_work(ParamExpr::Const(4), ParamExpr::Const(10 * grain), 1),
            ParamExpr::Const(4)
        );
        // Three grains in 64 tasks: about three parts of 22 tasks.
        assert_eq!(
            parts_for_work(ParamExpr::Const(64), ParamExpr::Const(3 * grain), 1),
            ParamExpr::Const(3)
        );
    }

    #[test]
    fn symbolic_work_decides_per_binding_and_empty_shapes_stay_defined() {
        // rows = dim 0, each row of dim 1 units.
        let e = parts_for_work(dim(0), pmul(dim(0), dim(1)), 1);
        let grain = (2 * MIN_PART_WORK_NS) as usize;
        assert_eq!(e.eval(&[&[1, 100]], &[]), Some(1));
        assert_eq!(e.eval(&[&[8, grain]], &[]), Some(8));
        assert_eq!(e.eval(&[&[0, grain]], &[]), Some(0));
        assert_eq!(e.eval(&[&[8, 0]], &[]), Some(1));
    }
}
