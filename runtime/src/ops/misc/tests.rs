//! Kernel tests. Expected numbers come from onnxruntime (RNN family) and the
//! ONNX reference evaluator (the rest), on inputs `sin(0.37·i + seed)·scale`.

use super::*;
use crate::ops::SubgraphRunner;
use carbide_ir::ops::{OpKind, ParseCtx};
use carbide_ir::{Attr, Attrs, Graph};

struct NoRunner;

impl SubgraphRunner for NoRunner {
    fn run_subgraph(&self, _graph: &Graph, _inputs: Vec<Value>) -> OpResult<Vec<Value>> {
        Err(invalid("no subgraphs here"))
    }
}

fn parse(domain: &str, op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, nin: usize, nout: usize) -> MiscOp {
    let items = attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
    let mut cx = ParseCtx {
        domain,
        op_type,
        opset,
        attrs: Attrs::new(op_type, items),
        num_inputs: nin,
        num_outputs: nout,
    };
    MiscOp::parse(&mut cx).expect("parses").expect("is a misc op")
}

fn run(op: &MiscOp, inputs: Vec<Option<Tensor>>, nout: usize) -> OpResult<Vec<Tensor>> {
    let vals: Vec<Option<Value>> = inputs.into_iter().map(|t| t.map(Value::Tensor)).collect();
    let refs: Vec<Option<&Value>> = vals.iter().map(|v| v.as_ref()).collect();
    let cx = EvalCtx {
        num_outputs: nout,
        runner: &NoRunner,
        seed: 7,
    };
    Ok(eval(op, &refs, &cx)?
        .into_iter()
        .map(|v| v.into_tensor().expect("tensor"))
        .collect())
}

fn inp(shape: &[usize], seed: f64, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((0.37 * i as f64 + seed).sin()) * scale) as f32)
        .collect();
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64s(v.to_vec())
}

fn scalar(v: i64) -> Tensor {
    Tensor::scalar_i64(v)
}

fn strs(shape: &[usize], v: &[&str]) -> Tensor {
    Tensor::String(ArrayD::from_shape_vec(IxDyn(shape), v.iter().map(|s| s.to_string()).collect()).unwrap())
}

fn close(got: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape(), shape);
    let g = got.to_f64_vec().unwrap();
    assert_eq!(g.len(), want.len());
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "element {i}: got {a}, want {b}");
    }
}

fn s(v: &str) -> Attr {
    Attr::String(v.as_bytes().to_vec())
}

#[rustfmt::skip]
const GRU_LBR_Y: [f64; 36] = [0.02128755673766136, 0.07975759357213974, 0.11045645922422409, -0.09310593456029892, 0.02935320883989334, 0.1004863902926445, -0.1438312530517578, -0.07586638629436493, 0.02636084333062172, -0.30153411626815796, -0.19751234352588654, 0.00645032525062561, -0.2565106153488159, -0.08562812209129333, 0.0723884180188179, -0.24699535965919495, -0.11036954075098038, 0.04536909982562065, -0.16489146649837494, -0.10139748454093933, 0.015366293489933014, -0.20491451025009155, -0.18224763870239258, -0.09747385233640671, -0.03679508715867996, -0.028843611478805542, 0.00036712363362312317, 0.0, 0.0, 0.0, 0.09895020723342896, -0.004023437853902578, -0.09668447077274323, 0.0, 0.0, 0.0]; // shape [3, 2, 2, 3]
#[rustfmt::skip]
const GRU_LBR_YH: [f64; 12] = [-0.03679508715867996, -0.028843611478805542, 0.00036712363362312317, -0.24699535965919495, -0.11036954075098038, 0.04536909982562065, -0.1438312530517578, -0.07586638629436493, 0.02636084333062172, -0.30153411626815796, -0.19751234352588654, 0.00645032525062561]; // shape [2, 2, 3]
#[rustfmt::skip]
const GRU_Y: [f64; 36] = [-0.0036974363029003143, 0.08339939266443253, 0.13887110352516174, -0.11220713704824448, 0.0339173749089241, 0.1254446655511856, -0.1548542082309723, -0.025898564606904984, 0.12938660383224487, -0.3099740445613861, -0.15805581212043762, 0.08449386060237885, -0.28269335627555847, -0.082753986120224, 0.1142914816737175, -0.27421265840530396, -0.10785485059022903, 0.08499259501695633, -0.17337968945503235, -0.06463303416967392, 0.09454374015331268, -0.2066017985343933, -0.1583624929189682, -0.04786460101604462, -0.07141325622797012, -0.021001413464546204, 0.04492950811982155, 0.0, 0.0, 0.0, 0.10269860923290253, 0.02628747560083866, -0.04705475643277168, 0.0, 0.0, 0.0]; // shape [3, 2, 2, 3]
#[rustfmt::skip]
const GRU_YH: [f64; 12] = [-0.07141325622797012, -0.021001413464546204, 0.04492950811982155, -0.27421265840530396, -0.10785485059022903, 0.08499259501695633, -0.1548542082309723, -0.025898564606904984, 0.12938660383224487, -0.3099740445613861, -0.15805581212043762, 0.08449386060237885]; // shape [2, 2, 3]
#[rustfmt::skip]
const LSTM_Y: [f64; 18] = [0.07109042257070541, 0.08684498816728592, 0.09820040315389633, 0.20656096935272217, 0.21818199753761292, 0.17117668688297272, 0.24034224450588226, 0.26026397943496704, 0.19113118946552277, 0.17467230558395386, 0.2311810851097107, 0.22240136563777924, 0.05693346634507179, 0.07665698230266571, 0.12026607245206833, 0.0, 0.0, 0.0]; // shape [3, 1, 2, 3]
#[rustfmt::skip]
const LSTM_YH: [f64; 6] = [0.05693346634507179, 0.07665698230266571, 0.12026607245206833, 0.17467230558395386, 0.2311810851097107, 0.22240136563777924]; // shape [1, 2, 3]
#[rustfmt::skip]
const LSTM_YC: [f64; 6] = [0.11622369289398193, 0.14867407083511353, 0.19907106459140778, 0.3011974096298218, 0.48307979106903076, 0.4893949627876282]; // shape [1, 2, 3]
#[rustfmt::skip]
const RNN_Y: [f64; 18] = [0.8405648469924927, 1.2292407751083374, 0.40487605333328247, 0.7522373795509338, 1.3277018070220947, 0.8707921504974365, 0.34997865557670593, 0.8525354266166687, 0.9091625213623047, 0.19048342108726501, 0.5064808130264282, 0.5575569272041321, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]; // shape [3, 1, 2, 3]
#[rustfmt::skip]
const RNN_YH: [f64; 6] = [0.8405648469924927, 1.2292407751083374, 0.40487605333328247, 0.7522373795509338, 1.3277018070220947, 0.8707921504974365]; // shape [1, 2, 3]
#[rustfmt::skip]
const DFT_C: [f64; 60] = [0.8980249762535095, 1.051123023033142, 1.0619564056396484, 0.9290590882301331, 0.6704179048538208, 0.3210388422012329, -0.4811137020587921, 1.4756474494934082, -0.8976209163665771, 1.3003888130187988, -0.8446160554885864, 0.44494494795799255, 2.0368099212646484, -0.5352947115898132, 1.8300992250442505, 1.034557580947876, 0.6661314368247986, 2.0632712841033936, -0.7616583108901978, 3.007131338119507, 1.5038707256317139, 2.71030855178833, 2.982780933380127, 0.995823860168457, 1.8947174549102783, -0.39485403895378113, 1.4993237257003784, -1.2592142820358276, 0.3196895122528076, -1.4649262428283691, -0.4615339934825897, -0.7815005779266357, -0.9956945776939392, -1.0751261711120605, -1.0090442895889282, -0.8063931465148926, -0.005345141980797052, -1.1001248359680176, 0.6279975175857544, -1.5082240104675293, 0.932857871055603, -1.1274272203445435, -1.491433024406433, 1.5567315816879272, -2.091900110244751, 0.11377455294132233, -1.5981720685958862, -1.3886935710906982, 2.2394943237304688, -2.1955130100250244, 0.15273210406303406, -3.090872049331665, -2.01391863822937, -2.3695108890533447, -1.5434836149215698, -0.40597981214523315, -1.8875340223312378, 0.6657280325889587, -1.2442854642868042, 1.3892182111740112]; // shape [2, 5, 3, 2]
#[rustfmt::skip]
const DFT_R: [f64; 16] = [4.712860584259033, 0.0, -0.29722341895103455, -0.7629435062408447, 0.17619588971138, -0.2302834540605545, 0.22915589809417725, 0.0, -3.8245785236358643, 0.0, 1.0792176723480225, -0.8323410153388977, 0.615841805934906, -0.2512301206588745, 0.5640053153038025, -5.551115123125783e-17]; // shape [2, 4, 2]
#[rustfmt::skip]
const DFT_IR: [f64; 12] = [0.6605551242828369, -0.11551451683044434, -0.30422115325927734, 0.029518049210309982, 0.02523793838918209, 0.545895516872406, -0.7210730314254761, 0.2552661597728729, 0.2911275029182434, -0.020123403519392014, 0.013415168039500713, -0.548670768737793]; // shape [2, 6, 1]
#[rustfmt::skip]
const STFT_W: [f64; 40] = [3.5722877979278564, 0.0, 0.17560505867004395, -1.4197227954864502, 0.3494725227355957, -0.27336928248405457, 0.361397385597229, 0.0, 1.0221399068832397, 0.0, 1.1363978385925293, -0.8790101408958435, 0.4142528772354126, -0.1692543923854828, 0.36472398042678833, 0.0, -2.6632752418518066, 0.0, 0.8350197672843933, 0.6379988193511963, 0.01893211528658867, 0.12284735590219498, -0.037040047347545624, 0.0, -3.3906521797180176, 0.0, -0.39379552006721497, 1.4463971853256226, -0.3974161446094513, 0.27850544452667236, -0.39766445755958557, 0.0, -0.3521097004413605, 0.0, -1.185231328010559, 0.6483154892921448, -0.372363418340683, 0.12483391165733337, -0.31661227345466614, 0.0]; // shape [1, 5, 4, 2]

#[test]
fn gru_bidirectional_both_reset_modes() {
    let ins = || {
        vec![
            Some(inp(&[3, 2, 2], 0.1, 1.0)),
            Some(inp(&[2, 9, 2], 0.2, 0.5)),
            Some(inp(&[2, 9, 3], 0.3, 0.5)),
            Some(inp(&[2, 18], 0.4, 0.3)),
            Some(Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![3, 2]).unwrap())),
            Some(inp(&[2, 2, 3], 0.5, 0.2)),
        ]
    };
    for (lbr, y, yh) in [(1, &GRU_LBR_Y[..], &GRU_LBR_YH[..]), (0, &GRU_Y[..], &GRU_YH[..])] {
        let op = parse(
            "",
            "GRU",
            22,
            vec![
                ("hidden_size", Attr::Int(3)),
                ("direction", s("bidirectional")),
                ("linear_before_reset", Attr::Int(lbr)),
            ],
            6,
            2,
        );
        let out = run(&op, ins(), 2).unwrap();
        close(&out[0], &[3, 2, 2, 3], y, 1e-5);
        close(&out[1], &[2, 2, 3], yh, 1e-5);
    }
}

#[test]
fn lstm_peepholes_clip_seq_lens() {
    let op = parse(
        "",
        "LSTM",
        22,
        vec![("hidden_size", Attr::Int(3)), ("clip", Attr::Float(0.8))],
        8,
        3,
    );
    let ins = vec![
        Some(inp(&[3, 2, 2], 0.1, 1.0)),
        Some(inp(&[1, 12, 2], 0.2, 0.5)),
        Some(inp(&[1, 12, 3], 0.3, 0.5)),
        Some(inp(&[1, 24], 0.4, 0.3)),
        Some(Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![3, 2]).unwrap())),
        Some(inp(&[1, 2, 3], 0.5, 0.2)),
        Some(inp(&[1, 2, 3], 0.6, 0.2)),
        Some(inp(&[1, 9], 0.7, 0.3)),
    ];
    let out = run(&op, ins, 3).unwrap();
    close(&out[0], &[3, 1, 2, 3], &LSTM_Y, 1e-5);
    close(&out[1], &[1, 2, 3], &LSTM_YH, 1e-5);
    close(&out[2], &[1, 2, 3], &LSTM_YC, 1e-5);
}

#[test]
fn rnn_reverse_relu_and_layout1_matches_layout0() {
    let op = parse(
        "",
        "RNN",
        22,
        vec![
            ("hidden_size", Attr::Int(3)),
            ("direction", s("reverse")),
            ("activations", Attr::Strings(vec![b"Relu".to_vec()])),
        ],
        3,
        2,
    );
    let x = inp(&[3, 2, 2], 0.1, 1.0);
    let ins = vec![
        Some(x.clone()),
        Some(inp(&[1, 3, 2], 0.2, 0.5)),
        Some(inp(&[1, 3, 3], 0.3, 0.5)),
    ];
    let out = run(&op, ins.clone(), 2).unwrap();
    close(&out[0], &[3, 1, 2, 3], &RNN_Y, 1e-5);
    close(&out[1], &[1, 2, 3], &RNN_YH, 1e-5);
    // layout 1: X is [batch, seq, input]; Y_h is [batch, dirs, hidden].
    let op1 = parse(
        "",
        "RNN",
        22,
        vec![
            ("hidden_size", Attr::Int(3)),
            ("direction", s("reverse")),
            ("activations", Attr::Strings(vec![b"Relu".to_vec()])),
            ("layout", Attr::Int(1)),
        ],
        3,
        2,
    );
    let xt = match &x {
        Tensor::F32(a) => Tensor::F32(
            a.clone()
                .permuted_axes(IxDyn(&[1, 0, 2]))
                .as_standard_layout()
                .to_owned(),
        ),
        _ => unreachable!(),
    };
    let mut ins1 = ins;
    ins1[0] = Some(xt);
    let out1 = run(&op1, ins1, 2).unwrap();
    assert_eq!(out1[1].shape(), &[2, 1, 3]);
    close(&out1[1], &[2, 1, 3], &RNN_YH, 1e-5);
}

#[test]
fn rnn_rejects_bad_shapes_and_lengths() {
    let op = parse("", "RNN", 22, vec![("hidden_size", Attr::Int(3))], 5, 2);
    let bad_w = vec![
        Some(inp(&[3, 2, 2], 0.1, 1.0)),
        Some(inp(&[1, 3, 5], 0.2, 0.5)),
        Some(inp(&[1, 3, 3], 0.3, 0.5)),
    ];
    assert!(run(&op, bad_w, 2).is_err());
    let bad_len = vec![
        Some(inp(&[3, 2, 2], 0.1, 1.0)),
        Some(inp(&[1, 3, 2], 0.2, 0.5)),
        Some(inp(&[1, 3, 3], 0.3, 0.5)),
        None,
        Some(Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![9, -1]).unwrap())),
    ];
    assert!(run(&op, bad_len, 2).is_err());
}

#[test]
fn dft_complex_padded_opset20() {
    let op = parse("", "DFT", 20, vec![], 3, 1);
    let out = run(
        &op,
        vec![Some(inp(&[2, 4, 3, 2], 0.8, 1.0)), Some(scalar(5)), Some(scalar(1))],
        1,
    )
    .unwrap();
    close(&out[0], &[2, 5, 3, 2], &DFT_C, 1e-5);
}

#[test]
fn dft_onesided_and_irfft_opset17() {
    let op = parse(
        "",
        "DFT",
        17,
        vec![("axis", Attr::Int(1)), ("onesided", Attr::Int(1))],
        1,
        1,
    );
    let out = run(&op, vec![Some(inp(&[2, 6, 1], 0.9, 1.0))], 1).unwrap();
    close(&out[0], &[2, 4, 2], &DFT_R, 1e-5);
    let op = parse(
        "",
        "DFT",
        17,
        vec![
            ("axis", Attr::Int(1)),
            ("onesided", Attr::Int(1)),
            ("inverse", Attr::Int(1)),
        ],
        1,
        1,
    );
    let out = run(&op, vec![Some(inp(&[2, 4, 2], 1.0, 1.0))], 1).unwrap();
    close(&out[0], &[2, 6, 1], &DFT_IR, 1e-5);
}

#[test]
fn stft_with_window() {
    let op = parse("", "STFT", 17, vec![], 3, 1);
    let w = match inp(&[6], 1.2, 1.0) {
        Tensor::F32(a) => Tensor::F32(a.mapv(f32::abs)),
        _ => unreachable!(),
    };
    let out = run(&op, vec![Some(inp(&[1, 20, 1], 1.1, 1.0)), Some(scalar(3)), Some(w)], 1).unwrap();
    close(&out[0], &[1, 5, 4, 2], &STFT_W, 1e-5);
}

#[test]
fn windows_match_numpy_formulas() {
    let op = parse("", "HannWindow", 17, vec![("periodic", Attr::Int(0))], 1, 1);
    let out = run(&op, vec![Some(scalar(5))], 1).unwrap();
    close(&out[0], &[5], &[0.0, 0.5, 1.0, 0.5, 0.0], 1e-6);
    let op = parse("", "BlackmanWindow", 17, vec![("output_datatype", Attr::Int(11))], 1, 1);
    let out = run(&op, vec![Some(scalar(4))], 1).unwrap();
    assert_eq!(out[0].dtype(), DType::F64);
    close(&out[0], &[4], &[0.0, 0.34, 1.0, 0.34], 1e-9);
}

#[test]
fn mel_weight_matrix_small() {
    let op = parse("", "MelWeightMatrix", 17, vec![], 5, 1);
    let ins = vec![
        Some(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), 8))),
        Some(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), 16))),
        Some(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), 8192))),
        Some(Tensor::scalar_f32(0.0)),
        Some(Tensor::scalar_f32(4096.0)),
    ];
    let out = run(&op, ins, 1).unwrap();
    assert_eq!(out[0].shape(), &[9, 8]);
    // The first row: bins 0 and 1 start at frequency bin 0.
    let v = out[0].to_f64_vec().unwrap();
    assert_eq!(&v[..3], &[1.0, 1.0, 0.0]);
}

#[test]
fn string_ops() {
    let op = parse("", "StringSplit", 20, vec![("maxsplit", Attr::Int(2))], 1, 2);
    let out = run(&op, vec![Some(strs(&[2], &["o n n x", "  a  b "]))], 2).unwrap();
    assert_eq!(out[0], strs(&[2, 3], &["o", "n", "n x", "a", "b", ""]));
    assert_eq!(out[1].to_i64_vec().unwrap(), vec![3, 2]);
    let op = parse("", "StringSplit", 20, vec![("delimiter", s("-"))], 1, 2);
    let out = run(&op, vec![Some(strs(&[1], &["o--x-"]))], 2).unwrap();
    assert_eq!(out[0], strs(&[1, 4], &["o", "", "x", ""]));

    let op = parse(
        "",
        "StringNormalizer",
        10,
        vec![
            ("case_change_action", s("UPPER")),
            ("stopwords", Attr::Strings(vec![b"monday".to_vec()])),
        ],
        1,
        1,
    );
    let out = run(&op, vec![Some(strs(&[1, 3], &["Monday", "tuesday", "x"]))], 1).unwrap();
    assert_eq!(out[0], strs(&[1, 2], &["TUESDAY", "X"]));
    let out = run(&op, vec![Some(strs(&[1], &["MONDAY"]))], 1).unwrap();
    assert_eq!(out[0], strs(&[1], &[""]));

    let op = parse("", "StringConcat", 20, vec![], 2, 1);
    let out = run(
        &op,
        vec![Some(strs(&[3], &["a", "b", "c"])), Some(strs(&[1], &["!"]))],
        1,
    )
    .unwrap();
    assert_eq!(out[0], strs(&[3], &["a!", "b!", "c!"]));

    let op = parse(
        "",
        "RegexFullMatch",
        20,
        vec![("pattern", s(r"www\.[\w.-]+\.\bcom\b"))],
        1,
        1,
    );
    let out = run(
        &op,
        vec![Some(strs(&[3], &["www.google.com", "www.bbc.co.uk", "xwww.a.com"]))],
        1,
    )
    .unwrap();
    assert_eq!(
        out[0],
        Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, false]).unwrap())
    );
}

#[test]
fn tfidf_uni_and_bigrams_with_skips() {
    // onnx backend test tf_batch_uniandbigrams_skip5.
    let op = parse(
        "",
        "TfIdfVectorizer",
        9,
        vec![
            ("max_gram_length", Attr::Int(2)),
            ("min_gram_length", Attr::Int(1)),
            ("max_skip_count", Attr::Int(5)),
            ("mode", s("TF")),
            ("ngram_counts", Attr::Ints(vec![0, 4])),
            ("ngram_indexes", Attr::Ints(vec![0, 1, 2, 3, 4, 5, 6])),
            ("pool_int64s", Attr::Ints(vec![2, 3, 5, 4, 5, 6, 7, 8, 6, 7])),
        ],
        1,
        1,
    );
    let x = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2, 6]), vec![1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]).unwrap());
    let out = run(&op, vec![Some(x)], 1).unwrap();
    close(
        &out[0],
        &[2, 7],
        &[0., 3., 0., 0., 0., 0., 0., 0., 0., 1., 0., 1., 1., 1.],
        0.0,
    );
}

#[test]
fn training_ops() {
    let op = parse(
        TRAIN,
        "Adam",
        1,
        vec![
            ("alpha", Attr::Float(0.95)),
            ("beta", Attr::Float(0.1)),
            ("epsilon", Attr::Float(1e-7)),
            ("norm_coefficient", Attr::Float(0.001)),
        ],
        6,
        3,
    );
    let f = |v: &[f32]| Tensor::from_f32s(v.to_vec());
    let ins = vec![
        Some(Tensor::scalar_f32(0.1)),
        Some(scalar(0)),
        Some(f(&[1.2, 2.8])),
        Some(f(&[-0.94, -2.5])),
        Some(f(&[1.7, 3.6])),
        Some(f(&[0.1, 0.1])),
    ];
    let out = run(&op, ins, 3).unwrap();
    // onnx backend test "test_adam".
    close(&out[0], &[2], &[1.025036334991455, 2.6610326766967773], 1e-5);
    close(&out[1], &[2], &[1.568060040473938, 3.295139789581299], 1e-5);
    close(&out[2], &[2], &[0.8032107949256897, 5.622406959533691], 1e-5);

    let op = parse(
        TRAIN,
        "Momentum",
        1,
        vec![
            ("alpha", Attr::Float(0.95)),
            ("beta", Attr::Float(1.0)),
            ("mode", s("nesterov")),
            ("norm_coefficient", Attr::Float(0.01)),
        ],
        5,
        2,
    );
    let ins = vec![
        Some(Tensor::scalar_f32(0.1)),
        Some(scalar(0)),
        Some(f(&[1.2, 2.8])),
        Some(f(&[-0.94, -2.5])),
        Some(f(&[1.7, 3.6])),
    ];
    let out = run(&op, ins, 2).unwrap();
    let (x, g, v) = ([1.2f64, 2.8], [-0.94f64, -2.5], [1.7f64, 3.6]);
    let gr: Vec<f64> = (0..2).map(|i| 0.01 * x[i] + g[i]).collect();
    let vn: Vec<f64> = (0..2).map(|i| 0.95 * v[i] + gr[i]).collect();
    let xn: Vec<f64> = (0..2).map(|i| x[i] - 0.1 * (gr[i] + 0.95 * vn[i])).collect();
    close(&out[0], &[2], &xn, 1e-6);
    close(&out[1], &[2], &vn, 1e-6);
}

const TRAIN: &str = carbide_ir::ops::misc::TRAINING_DOMAIN;
const ML: &str = carbide_ir::ops::misc::ML_DOMAIN;

#[test]
#[allow(clippy::approx_constant)] // 3.14 is the split of the ONNX test, not pi.
fn ml_ops() {
    let op = parse(
        ML,
        "LabelEncoder",
        4,
        vec![
            ("keys_strings", Attr::Strings(vec![b"a".to_vec(), b"b".to_vec()])),
            ("values_int64s", Attr::Ints(vec![0, 1])),
            ("default_int64", Attr::Int(42)),
        ],
        1,
        1,
    );
    let out = run(&op, vec![Some(strs(&[3], &["b", "z", "a"]))], 1).unwrap();
    assert_eq!(out[0], Tensor::from_i64s(vec![1, 42, 0]));

    let op = parse(ML, "ArrayFeatureExtractor", 1, vec![], 2, 1);
    let x = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0, 1, 2, 3, 4, 5]).unwrap());
    let out = run(&op, vec![Some(x.clone()), Some(i64s(&[2, 0]))], 1).unwrap();
    assert_eq!(
        out[0],
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![2, 0, 5, 3]).unwrap())
    );
    assert!(run(&op, vec![Some(x), Some(i64s(&[3]))], 1).is_err());

    let op = parse(ML, "Binarizer", 1, vec![("threshold", Attr::Float(1.0))], 1, 1);
    let out = run(&op, vec![Some(Tensor::from_f32s(vec![0.5, 1.0, 1.5]))], 1).unwrap();
    close(&out[0], &[3], &[0.0, 0.0, 1.0], 0.0);

    // onnx backend test tree_ensemble_single_tree.
    let tf = |v: &[f64]| Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap());
    let op = parse(
        ML,
        "TreeEnsemble",
        5,
        vec![
            ("aggregate_function", Attr::Int(1)),
            ("leaf_targetids", Attr::Ints(vec![0, 1, 0, 1])),
            ("leaf_weights", Attr::Tensor(tf(&[5.23, 12.12, -12.23, 7.21]))),
            ("n_targets", Attr::Int(2)),
            ("nodes_falseleafs", Attr::Ints(vec![0, 1, 1])),
            ("nodes_falsenodeids", Attr::Ints(vec![2, 2, 3])),
            ("nodes_featureids", Attr::Ints(vec![0, 0, 0])),
            (
                "nodes_modes",
                Attr::Tensor(Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0, 0, 0]).unwrap())),
            ),
            ("nodes_splits", Attr::Tensor(tf(&[3.14, 1.2, 4.2]))),
            ("nodes_trueleafs", Attr::Ints(vec![0, 1, 1])),
            ("nodes_truenodeids", Attr::Ints(vec![1, 0, 1])),
            ("post_transform", Attr::Int(0)),
            ("tree_roots", Attr::Ints(vec![0])),
        ],
        1,
        1,
    );
    let x = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![1.2, 3.4, -0.12, 1.66, 4.14, 1.77]).unwrap());
    let out = run(&op, vec![Some(x)], 1).unwrap();
    close(&out[0], &[3, 2], &[5.23, 0.0, 5.23, 0.0, 0.0, 12.12], 1e-12);
}

#[test]
fn random_ops_shape_dtype_range_and_seed() {
    let op = parse(
        "",
        "RandomUniform",
        22,
        vec![
            ("shape", Attr::Ints(vec![3, 4])),
            ("low", Attr::Float(2.0)),
            ("high", Attr::Float(3.0)),
            ("seed", Attr::Float(1.0)),
        ],
        0,
        1,
    );
    let a = run(&op, vec![], 1).unwrap();
    let b = run(&op, vec![], 1).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].shape(), &[3, 4]);
    assert!(a[0].to_f64_vec().unwrap().iter().all(|&v| (2.0..3.0).contains(&v)));
    let op = parse("", "Bernoulli", 22, vec![("dtype", Attr::Int(7))], 1, 1);
    let out = run(&op, vec![Some(Tensor::from_f32s(vec![0.0, 1.0, 0.0, 1.0]))], 1).unwrap();
    assert_eq!(out[0], Tensor::from_i64s(vec![0, 1, 0, 1]));
    let op = parse("", "Multinomial", 22, vec![("sample_size", Attr::Int(5))], 1, 1);
    let x = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0, -1e9, -1e9, -1e9, -1e9, 0.0]).unwrap());
    let out = run(&op, vec![Some(x)], 1).unwrap();
    assert_eq!(out[0].dtype(), DType::I32);
    assert_eq!(out[0].to_i64_vec().unwrap(), vec![0, 0, 0, 0, 0, 2, 2, 2, 2, 2]);
    let op = parse(
        "",
        "RandomNormal",
        22,
        vec![("shape", Attr::Ints(vec![1 << 20, 1 << 20]))],
        0,
        1,
    );
    assert!(run(&op, vec![], 1).is_err());
}

#[test]
fn infer_shapes() {
    use carbide_ir::ops::InferCtx;
    use carbide_ir::types::{shape_of, ValueType};
    let op = parse(
        "",
        "LSTM",
        22,
        vec![("hidden_size", Attr::Int(4)), ("direction", s("bidirectional"))],
        3,
        3,
    );
    let ins = vec![
        Some(ValueType::tensor(
            DType::F32,
            vec![
                carbide_ir::Dim::Sym("seq".into()),
                carbide_ir::Dim::Known(2),
                carbide_ir::Dim::Known(5),
            ],
        )),
        Some(ValueType::tensor(DType::F32, shape_of(&[2, 16, 5]))),
        Some(ValueType::tensor(DType::F32, shape_of(&[2, 16, 4]))),
    ];
    let consts = vec![None, None, None];
    let cx = InferCtx {
        inputs: &ins,
        consts: &consts,
        num_outputs: 3,
        op: "LSTM",
    };
    let out = op.infer(&cx).unwrap();
    assert_eq!(
        out[0],
        ValueType::tensor(
            DType::F32,
            vec![
                carbide_ir::Dim::Sym("seq".into()),
                carbide_ir::Dim::Known(2),
                carbide_ir::Dim::Known(2),
                carbide_ir::Dim::Known(4)
            ]
        )
    );
    assert_eq!(out[2], ValueType::tensor(DType::F32, shape_of(&[2, 2, 4])));
}
