//! Module execution and the artifact format: host steps, a hand-written C
//! kernel called through the ABI, save/load round trips, and every kind of
//! damaged artifact failing with a clear error.

use carbide_ir::kernel::ParamExpr;
use carbide_ir::kernel::{BufferArg, KernelCall};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::elementwise::{Binary, Unary};
use carbide_ir::ops::ElementwiseOp;
use carbide_ir::{DType, Dim, Model, Tensor, TensorType, Value, ValueInfo};
use carbide_ir::{Graph, Node, Op, ValueType};
use carbide_runtime::artifact::{ArtifactError, TargetInfo};
use carbide_runtime::{KernelStep, Module, ModuleParts, RuntimeError, Step};

fn f32_type(shape: Vec<Dim>) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// y = relu(x) + w, with x: [batch, 4] and a weight w: [4].
fn model() -> Model {
    let x_ty = f32_type(vec![Dim::Sym("batch".into()), Dim::Known(4)]);
    let graph = Graph {
        name: "g".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            ty: ValueType::Tensor(x_ty.clone()),
        }],
        outputs: vec![ValueInfo {
            name: "y".into(),
            ty: ValueType::Tensor(x_ty),
        }],
        initializers: [("w".to_string(), Tensor::from_f32s(vec![1.0, 2.0, 3.0, 4.0]))].into(),
        nodes: vec![
            Node {
                name: "relu".into(),
                op: Op::Elementwise(ElementwiseOp::Unary(Unary::Relu)),
                inputs: vec!["x".into()],
                outputs: vec!["r".into()],
            },
            Node {
                name: "add".into(),
                op: Op::Elementwise(ElementwiseOp::Binary {
                    op: Binary::Add,
                    legacy_axis: None,
                }),
                inputs: vec!["r".into(), "w".into()],
                outputs: vec!["y".into()],
            },
        ],
        ..Default::default()
    };
    Model {
        graph,
        ..Default::default()
    }
}

fn x(rows: usize) -> Value {
    let v: Vec<f32> = (0..rows * 4).map(|i| i as f32 - 5.0).collect();
    Value::Tensor(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[rows, 4]), v).unwrap()))
}

fn f32s(v: &Value) -> Vec<f32> {
    match v {
        Value::Tensor(Tensor::F32(a)) => a.iter().copied().collect(),
        other => panic!("not f32: {other:?}"),
    }
}

fn host_module() -> Module {
    Module::from_parts(ModuleParts {
        model: model(),
        steps: vec![Step::Host { node: 0 }, Step::Host { node: 1 }],
        library: Vec::new(),
        target: TargetInfo::host_only(),
    })
    .unwrap()
}

#[test]
fn host_steps_match_the_reference_session_after_a_round_trip() {
    let m = host_module();
    let want = carbide_runtime::Session::new(model())
        .run(vec![("x".into(), x(3))])
        .unwrap();
    let got = m.run(vec![("x".into(), x(3))]).unwrap();
    assert_eq!(got, want);
    let back = Module::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back.run(vec![("x".into(), x(3))]).unwrap(), want);
    assert_eq!(back.inputs()[0].name, "x");
    assert_eq!(back.outputs()[0].name, "y");
    assert!(matches!(m.run(vec![]), Err(RuntimeError::MissingInput(_))));
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn module_is_send_and_sync_and_runs_from_many_threads() {
    assert_send_sync::<Module>();
    let m = host_module();
    let want = m.run(vec![("x".into(), x(2))]).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(m.run(vec![("x".into(), x(2))]).unwrap(), want));
        }
    });
}

/// Compiles a C kernel `y[i] = 2 * x[i] + w[i % 4]` (w packed) with the system compiler.
fn kernel_library() -> Option<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("carbide-module-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("k.c");
    std::fs::write(
        &src,
        r#"#include <stdint.h>
void twice_plus_w(void *const *b, const int64_t *p, int64_t part, int64_t parts) {
    const float *x = b[0]; float *y = b[1]; const float *w = b[2]; float *scratch = b[3];
    int64_t n = p[0] * p[1], lo = n * part / parts, hi = n * (part + 1) / parts;
    scratch[part * 16] = 1.0f;
    for (int64_t i = lo; i < hi; i++) y[i] = 2.0f * x[i] + w[i % 4] * scratch[part * 16];
}
"#,
    )
    .unwrap();
    let so = dir.join("k.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(cc)
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status();
    let bytes = match status {
        Ok(s) if s.success() => std::fs::read(&so).ok(),
        _ => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

fn kernel_module(library: Vec<u8>, target: TargetInfo) -> Result<Module, ArtifactError> {
    let ty = f32_type(vec![Dim::Sym("batch".into()), Dim::Known(4)]);
    let w: Vec<u8> = [10.0f32, 20.0, 30.0, 40.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let step = KernelStep {
        call: KernelCall {
            entry: "twice_plus_w".into(),
            buffers: vec![
                BufferArg::Input(0),
                BufferArg::Output(0),
                BufferArg::Packed(0),
                BufferArg::Scratch {
                    bytes: ParamExpr::Const(64),
                    per_part: true,
                },
            ],
            params: vec![
                ParamExpr::InputDim { input: 0, axis: 0 },
                ParamExpr::InputDim { input: 0, axis: 1 },
            ],
            packed: vec![w],
            max_parts: Some(ParamExpr::InputDim { input: 0, axis: 0 }),
        },
        nodes: vec![0, 1],
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        input_types: vec![ty.clone()],
        output_types: vec![ty],
    };
    Module::from_parts(ModuleParts {
        model: model(),
        steps: vec![Step::Kernel(Box::new(step))],
        library,
        target,
    })
}

fn host_target() -> TargetInfo {
    TargetInfo {
        name: "test".into(),
        arch: std::env::consts::ARCH.into(),
        required_features: Vec::new(),
    }
}

#[test]
fn kernel_steps_call_the_library_in_parts_and_survive_a_round_trip() {
    let Some(lib) = kernel_library() else {
        eprintln!("skipping: no C compiler");
        return;
    };
    let mut m = kernel_module(lib, host_target()).unwrap();
    let expect = |rows: usize| -> Vec<f32> {
        f32s(&x(rows))
            .iter()
            .enumerate()
            .map(|(i, v)| 2.0 * v + [10.0, 20.0, 30.0, 40.0][i % 4])
            .collect()
    };
    for threads in [1, 3] {
        m.set_threads(threads).unwrap();
        for rows in [1, 2, 5] {
            let out = m.run(vec![("x".into(), x(rows))]).unwrap();
            assert_eq!(f32s(&out[0].1), expect(rows), "{threads} threads, {rows} rows");
        }
    }
    let back = Module::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(f32s(&back.run(vec![("x".into(), x(3))]).unwrap()[0].1), expect(3));
    // A transposed (non-dense) input is made dense before the call.
    let t = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[4, 2]), f32s(&x(2))).unwrap());
    let tt = carbide_ir::tensor_map!(&t, a => a.t().to_owned());
    let dense = carbide_ir::tensor_map!(&tt, a => a.as_standard_layout().into_owned());
    let got = back.run(vec![("x".into(), Value::Tensor(tt))]).unwrap();
    let want = back.run(vec![("x".into(), Value::Tensor(dense))]).unwrap();
    assert_eq!(got, want);
    // A wrong static dim is refused before the kernel runs.
    let bad = Value::Tensor(Tensor::zeros(DType::F32, &[2, 5]).unwrap());
    assert!(back.run(vec![("x".into(), bad)]).is_err());
}

#[test]
fn wrong_cpu_artifacts_are_refused() {
    let other_arch = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let target = TargetInfo {
        arch: other_arch.into(),
        ..host_target()
    };
    assert!(matches!(
        kernel_module(vec![0; 16], target),
        Err(ArtifactError::WrongCpu { .. })
    ));
    let target = TargetInfo {
        required_features: vec!["quantum-fma".into()],
        ..host_target()
    };
    let err = kernel_module(vec![0; 16], target).err().unwrap();
    assert!(err.to_string().contains("quantum-fma"), "{err}");
    // The same check runs when loading bytes, before the library is opened.
    let Some(lib) = kernel_library() else { return };
    let m = kernel_module(lib, host_target()).unwrap();
    let bytes = m.to_bytes().unwrap();
    let mut s = carbide_runtime::artifact::decode(&bytes).unwrap();
    s.manifest.target.arch = other_arch.into();
    let bytes = carbide_runtime::artifact::encode(&s.manifest, s.data, s.library).unwrap();
    assert!(matches!(
        Module::from_bytes(&bytes),
        Err(ArtifactError::WrongCpu { .. })
    ));
}

#[test]
fn damaged_artifacts_are_clear_errors() {
    let good = host_module().to_bytes().unwrap();
    assert!(Module::from_bytes(&good).is_ok());
    assert!(matches!(
        Module::from_bytes(b"PK\x03\x04 not ours"),
        Err(ArtifactError::BadMagic)
    ));
    assert!(matches!(
        Module::from_bytes(&good[..5]),
        Err(ArtifactError::Truncated(_))
    ));
    for cut in [100, good.len() / 2, good.len() - 1] {
        let e = Module::from_bytes(&good[..cut]).err().unwrap();
        assert!(matches!(e, ArtifactError::Truncated(_)), "cut at {cut}: {e}");
    }
    let mut v = good.clone();
    v[8] = 99;
    assert!(matches!(
        Module::from_bytes(&v),
        Err(ArtifactError::UnsupportedVersion { found: 99, .. })
    ));
    // Flip one bit anywhere past the header: a checksum catches it.
    for pos in (128..good.len()).step_by(7) {
        let mut v = good.clone();
        v[pos] ^= 0x10;
        match Module::from_bytes(&v) {
            Err(ArtifactError::Checksum { .. }) => {}
            // Padding between sections is not covered by any checksum.
            Ok(_) => {}
            Err(e) => panic!("byte {pos}: unexpected error {e}"),
        }
    }
    // Header offsets pointing past the end are truncation, not a crash.
    let mut v = good.clone();
    v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(Module::from_bytes(&v), Err(ArtifactError::Truncated(_))));
    // A manifest that passes its checksum but does not decode.
    let garbage = carbide_runtime::artifact::encode_raw(b"\xff\xff\xff\xff", &[], &[]);
    assert!(matches!(Module::from_bytes(&garbage), Err(ArtifactError::Corrupt(_))));
    let missing = std::path::Path::new("/nonexistent/model.carbide");
    assert!(matches!(Module::load(missing), Err(ArtifactError::Io { .. })));
}
