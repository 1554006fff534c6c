//! Small graphs for pass tests, and the check that a pass kept the numbers.

use crate::manager::{PassCtx, PassOptions};
use carbide_ir::ndarray::ArrayD;
use carbide_ir::{Dim, Graph, Model, Node, Op, Tensor, TensorType, Value, ValueInfo, ValueType};
use carbide_runtime::Session;

pub struct G {
    pub g: Graph,
    feeds: Vec<(String, Tensor)>,
}

/// Deterministic, sign-mixed values.
pub fn ramp(shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (((i * 7919) % 23) as f32 - 11.0) * scale).collect();
    Tensor::F32(ArrayD::from_shape_vec(shape.to_vec(), v).unwrap())
}

pub fn positive(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| 0.5 + ((i * 31) % 7) as f32 * 0.25).collect();
    Tensor::F32(ArrayD::from_shape_vec(shape.to_vec(), v).unwrap())
}

impl G {
    pub fn new() -> G {
        G {
            g: Graph {
                name: "test".into(),
                ..Default::default()
            },
            feeds: Vec::new(),
        }
    }

    /// A graph input with a fixed shape, fed with `ramp` values.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> &mut Self {
        self.g.inputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::Tensor(TensorType {
                dtype: Some(carbide_ir::DType::F32),
                shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
            }),
        });
        self.feeds.push((name.into(), ramp(shape, 0.13)));
        self
    }

    /// A graph input whose dims are symbolic where `shape` has a name.
    pub fn sym_input(&mut self, name: &str, dims: &[Result<usize, &str>], feed_shape: &[usize]) -> &mut Self {
        self.g.inputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::Tensor(TensorType {
                dtype: Some(carbide_ir::DType::F32),
                shape: Some(
                    dims.iter()
                        .map(|d| match d {
                            Ok(n) => Dim::Known(*n),
                            Err(s) => Dim::Sym(s.to_string()),
                        })
                        .collect(),
                ),
            }),
        });
        self.feeds.push((name.into(), ramp(feed_shape, 0.13)));
        self
    }

    pub fn init(&mut self, name: &str, t: Tensor) -> &mut Self {
        self.g.initializers.insert(name.into(), t);
        self
    }

    pub fn node(&mut self, op: Op, ins: &[&str], outs: &[&str]) -> &mut Self {
        let name = format!("n{}", self.g.nodes.len());
        self.g.nodes.push(Node {
            name,
            op,
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: outs.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.g.outputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::Unknown,
        });
        self
    }

    pub fn model(&self) -> Model {
        let mut m = Model {
            graph: self.g.clone(),
            opsets: [("".to_string(), 21)].into_iter().collect(),
            ir_version: 10,
            ..Default::default()
        };
        carbide_ir::infer::infer_graph(&mut m.graph, &Default::default()).expect("test graph infers");
        m
    }

    pub fn run(&self, m: &Model) -> Vec<Tensor> {
        let feeds = self
            .feeds
            .iter()
            .map(|(n, t)| (n.clone(), Value::Tensor(t.clone())))
            .collect();
        Session::new(m.clone())
            .run(feeds)
            .expect("runs")
            .into_iter()
            .map(|(_, v)| v.into_tensor().expect("tensor"))
            .collect()
    }

    /// Applies `pass` once (with re-inference and verification, like the
    /// manager), checks the outputs are unchanged, and returns the new graph.
    pub fn check_pass(&self, pass: crate::manager::PassFn) -> Graph {
        let before = self.model();
        let expected = self.run(&before);
        let mut after = before.clone();
        let opts = PassOptions::default();
        let changed = pass(
            &mut after.graph,
            &PassCtx {
                opts: &opts,
                name: "test",
            },
        )
        .expect("pass runs");
        assert!(changed, "the pass should have changed the graph");
        crate::util::toposort(&mut after.graph);
        crate::util::prune_value_info(&mut after.graph);
        carbide_ir::verify::verify_graph(&after.graph, &Default::default()).expect("verifies");
        after.graph.value_info.clear();
        carbide_ir::infer::infer_graph(&mut after.graph, &Default::default()).expect("infers");
        let got = self.run(&after);
        assert_close(&got, &expected);
        after.graph
    }

    /// Runs the whole pipeline at `level`; checks numbers; returns the graph.
    pub fn check_level(&self, level: u8) -> Graph {
        let before = self.model();
        let expected = self.run(&before);
        let mut after = before.clone();
        let opts = PassOptions {
            level,
            verify_each: true,
            ..Default::default()
        };
        crate::optimize(&mut after, &opts).expect("optimizes");
        assert_close(&self.run(&after), &expected);
        after.graph
    }
}

pub fn assert_close(got: &[Tensor], expected: &[Tensor]) {
    assert_eq!(got.len(), expected.len());
    for (a, b) in got.iter().zip(expected) {
        assert_eq!(a.shape(), b.shape(), "shapes differ");
        assert_eq!(a.dtype(), b.dtype(), "dtypes differ");
        let (x, y) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() <= 1e-5 + 1e-3 * q.abs(), "{p} vs {q}");
        }
    }
}

/// A 3×3-kernel Conv padded by 1 on each side (output size = input size).
pub fn conv_same_3x3() -> Op {
    use carbide_ir::ops::nn::{ConvAttrs, NnOp};
    Op::Nn(NnOp::Conv(ConvAttrs {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    }))
}

pub fn op_types(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.op_type()).collect()
}
