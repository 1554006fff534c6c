use anyhow::{anyhow, bail, Context, Result};
use carbide::ir::ndarray::{ArrayD, IxDyn};
use carbide::ir::{bf16, f16, DType, Dim, Tensor, Value, ValueInfo, ValueType};
use carbide::npy;
use clap::Args;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Where a model's inputs come from (shared by `run` and `bench`).
#[derive(Args)]
pub struct FeedArgs {
    /// An .npz archive whose array names are the model's input names.
    #[arg(long, value_name = "FILE.npz")]
    inputs: Option<PathBuf>,
    /// One input from an .npy file (repeatable): NAME=FILE.npy.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    input: Vec<String>,
    /// Seed for random inputs (inputs not given are drawn at random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bind a symbolic dim for random inputs (repeatable): NAME=N (default 1).
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The ONNX model or a compiled .carbide artifact.
    model: PathBuf,
    #[command(flatten)]
    feeds: FeedArgs,
    /// Write each output to DIR/<output name>.npy.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Worker threads for a compiled artifact (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// A model ready to run: an ONNX model on the reference runtime, or a
/// compiled artifact.
pub enum Runner {
    Reference(Box<carbide::Session>),
    Compiled(Box<carbide::Module>),
}

/// Whether `path` starts with the artifact magic bytes.
pub fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == carbide::runtime::artifact::MAGIC)
}

impl Runner {
    pub fn open(path: &Path, threads: Option<usize>) -> Result<Runner> {
        if is_artifact(path) {
            let mut m = carbide::Module::load(path).with_context(|| format!("loading {}", path.display()))?;
            if let Some(t) = threads {
                m.set_threads(t)?;
            }
            return Ok(Runner::Compiled(Box::new(m)));
        }
        let model = carbide::load_model(path).with_context(|| format!("loading {}", path.display()))?;
        Ok(Runner::Reference(Box::new(carbide::Session::new(model))))
    }

    pub fn inputs(&self) -> Vec<ValueInfo> {
        match self {
            Runner::Reference(s) => s.model().graph.required_inputs().cloned().collect(),
            Runner::Compiled(m) => m.inputs(),
        }
    }

    pub fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<(String, Value)>> {
        Ok(match self {
            Runner::Reference(s) => s.run(feeds)?,
            Runner::Compiled(m) => m.run(feeds)?,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Runner::Reference(_) => "reference runtime",
            Runner::Compiled(_) => "compiled",
        }
    }
}

/// Builds the feeds for `inputs` from files, drawing the rest at random.
pub fn build_feeds(inputs: &[ValueInfo], a: &FeedArgs, quiet: bool) -> Result<Vec<(String, Value)>> {
    let mut given: Vec<(String, Tensor)> = Vec::new();
    if let Some(p) = &a.inputs {
        given.extend(npy::read_npz(p)?);
    }
    for spec in &a.input {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input expects NAME=FILE.npy, got '{spec}'"))?;
        given.push((name.to_string(), npy::read_npy(file.as_ref())?));
    }
    let mut sym = std::collections::HashMap::new();
    for spec in &a.dims {
        let (name, n) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--dim expects NAME=N, got '{spec}'"))?;
        sym.insert(
            name.to_string(),
            n.parse::<usize>().with_context(|| format!("--dim {spec}"))?,
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut feeds: Vec<(String, Value)> = Vec::new();
    for input in inputs {
        if let Some(pos) = given.iter().position(|(n, _)| n == &input.name) {
            let (n, t) = given.remove(pos);
            feeds.push((n, Value::Tensor(t)));
        } else {
            let t = random_input(&input.name, &input.ty, &sym, &mut rng)?;
            if !quiet {
                println!("input  {:<24} random {} {:?}", input.name, t.dtype(), t.shape());
            }
            feeds.push((input.name.clone(), Value::Tensor(t)));
        }
    }
    if let Some((name, _)) = given.first() {
        bail!("the model has no input named '{name}'");
    }
    Ok(feeds)
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let runner = Runner::open(&a.model, a.threads)?;
    let feeds = build_feeds(&runner.inputs(), &a.feeds, false)?;
    let start = Instant::now();
    let outputs = runner.run(feeds)?;
    let elapsed = start.elapsed();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, v) in &outputs {
        match v {
            Value::Tensor(t) => {
                println!("output {name:<24} {}", describe(t));
                if let Some(dir) = &a.out {
                    let file = dir.join(format!("{}.npy", sanitize(name)));
                    npy::write_npy(&file, t)?;
                }
            }
            other => println!("output {name:<24} {}", other.value_type()),
        }
    }
    println!("ran in {:.2} ms ({})", elapsed.as_secs_f64() * 1e3, runner.kind());
    Ok(ExitCode::SUCCESS)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// dtype, shape and value statistics of a tensor, on one line.
fn describe(t: &Tensor) -> String {
    let stats = t.to_f64_vec().filter(|v| !v.is_empty()).map(|v| {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        format!("  min {min:.6} max {max:.6} mean {mean:.6}")
    });
    format!("{} {:?}{}", t.dtype(), t.shape(), stats.unwrap_or_default())
}

fn random_input(
    name: &str,
    ty: &ValueType,
    sym: &std::collections::HashMap<String, usize>,
    rng: &mut rand::rngs::StdRng,
) -> Result<Tensor> {
    let ValueType::Tensor(tt) = ty else {
        bail!("input '{name}' is a {ty}: give it with --inputs")
    };
    let dtype = tt
        .dtype
        .ok_or_else(|| anyhow!("input '{name}' has no declared dtype: give it with --inputs"))?;
    let shape: Vec<usize> = tt
        .shape
        .as_ref()
        .ok_or_else(|| anyhow!("input '{name}' has no declared shape: give it with --inputs"))?
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Sym(s) => *sym.get(s).unwrap_or(&1),
            Dim::Unknown => 1,
        })
        .collect();
    let n: usize = shape.iter().product();
    let s = IxDyn(&shape);
    Ok(match dtype {
        DType::F32 => Tensor::F32(ArrayD::from_shape_fn(s, |_| rng.gen_range(-1.0..1.0))),
        DType::F64 => Tensor::F64(ArrayD::from_shape_fn(s, |_| rng.gen_range(-1.0..1.0))),
        DType::F16 => Tensor::F16(ArrayD::from_shape_fn(s, |_| f16::from_f32(rng.gen_range(-1.0..1.0)))),
        DType::BF16 => Tensor::BF16(ArrayD::from_shape_fn(s, |_| bf16::from_f32(rng.gen_range(-1.0..1.0)))),
        DType::I64 => Tensor::I64(ArrayD::from_shape_fn(s, |_| rng.gen_range(0..10))),
        DType::I32 => Tensor::I32(ArrayD::from_shape_fn(s, |_| rng.gen_range(0..10))),
        DType::I8 => Tensor::I8(ArrayD::from_shape_fn(s, |_| rng.gen_range(-10..10))),
        DType::U8 => Tensor::U8(ArrayD::from_shape_fn(s, |_| rng.gen_range(0..10))),
        DType::Bool => Tensor::Bool(ArrayD::from_shape_fn(s, |_| rng.gen_bool(0.5))),
        d => bail!("cannot draw random {d} values for input '{name}' ({n} elements): give it with --inputs"),
    })
}
