//! The `.carbide` artifact: one file holding a compiled model.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0    magic "CARBIDE\0"
//! 8    format version (u32)            12  header length (u32, = 128)
//! 16   manifest  offset, length (u64), crc32 (u32), 0 (u32)
//! 40   data      offset, length (u64), crc32 (u32), 0 (u32)
//! 64   library   offset, length (u64), crc32 (u32), 0 (u32)
//! 88.. zero up to 128
//! ```
//!
//! The manifest is postcard-encoded [`Manifest`]: versions, target and the
//! CPU features the kernels need, the model graph without its weights, the
//! step list with each kernel's call, and where each weight lies in the data
//! section. The data section holds the weights and packed kernel operands,
//! each 64-byte aligned. The library section is the kernels' shared object.
//! Every section is checksummed, so a damaged file is an error before
//! anything in it is interpreted.

use crate::module::{ModuleParts, Step};
use carbide_ir::{DType, Model, Tensor};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"CARBIDE\0";
/// Bumped whenever the layout or the manifest's encoding changes.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 128;
/// Alignment of every blob in the data section (a cache line; what SIMD loads like).
pub const DATA_ALIGN: usize = 64;

#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a Carbide artifact (bad magic bytes)")]
    BadMagic,
    #[error("artifact is truncated: {0}")]
    Truncated(String),
    #[error("artifact format version {found} is not supported (this Carbide reads version {supported}); recompile the model")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("artifact is corrupt: {section} checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        section: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("artifact is corrupt: {0}")]
    Corrupt(String),
    #[error("artifact was compiled for {target} and needs CPU {what}, which this machine lacks; recompile with --target native")]
    WrongCpu { target: String, what: String },
    #[error("loading the kernel library: {0}")]
    Library(String),
}

/// Where a blob lies in the data section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub offset: u64,
    pub len: u64,
}

/// A main-graph weight stored in the data section.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WeightRecord {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub blob: BlobRef,
}

/// What the compiled code needs from the machine that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The target name the model was compiled for (e.g. "x86-64-avx512").
    pub name: String,
    /// `std::env::consts::ARCH` of the kernels ("x86_64", "aarch64").
    pub arch: String,
    /// CPU features the kernels use, in `is_x86_feature_detected!` spelling.
    pub required_features: Vec<String>,
}

impl TargetInfo {
    /// A target whose steps all run on the host: runs wherever Carbide runs.
    pub fn host_only() -> TargetInfo {
        TargetInfo {
            name: "host".into(),
            arch: std::env::consts::ARCH.into(),
            required_features: Vec::new(),
        }
    }

    /// Fails unless this machine can run kernels built for the target.
    pub fn check_host(&self) -> Result<(), ArtifactError> {
        let wrong = |what: String| ArtifactError::WrongCpu {
            target: self.name.clone(),
            what,
        };
        if self.arch != std::env::consts::ARCH {
            return Err(wrong(format!(
                "architecture {} (this machine is {})",
                self.arch,
                std::env::consts::ARCH
            )));
        }
        let missing: Vec<&str> = self
            .required_features
            .iter()
            .filter(|f| cpu_has_feature(f) != Some(true))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(wrong(format!("features {}", missing.join(", "))));
        }
        Ok(())
    }
}

/// Whether this CPU has `feature`; `None` for a name Carbide does not know
/// (treated as missing: better a clear error than an illegal instruction).
pub fn cpu_has_feature(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($name:tt),*) => {
                match feature {
                    $($name => Some(std::arch::is_x86_feature_detected!($name)),)*
                    _ => None,
                }
            };
        }
        detect!(
            "sse2",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi1",
            "bmi2",
            "lzcnt",
            "movbe",
            "avx512f",
            "avx512bw",
            "avx512cd",
            "avx512dq",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16",
            "avx512ifma",
            "avx512vbmi",
            "avx512vbmi2",
            "avx512bitalg",
            "avx512vpopcntdq"
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        match feature {
            "neon" => Some(std::arch::is_aarch64_feature_detected!("neon")),
            "fp16" => Some(std::arch::is_aarch64_feature_detected!("fp16")),
            "dotprod" => Some(std::arch::is_aarch64_feature_detected!("dotprod")),
            "bf16" => Some(std::arch::is_aarch64_feature_detected!("bf16")),
            _ => None,
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = feature;
        None
    }
}

/// The artifact's table of contents (see the module doc).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The Carbide version that wrote the artifact (informational: the
    /// format version decides compatibility).
    pub carbide_version: String,
    pub target: TargetInfo,
    /// The model graph; its main graph's initializers are in `weights`.
    pub model: Model,
    pub weights: Vec<WeightRecord>,
    /// String-typed initializers (no byte form), kept in the manifest.
    pub string_weights: Vec<(String, Tensor)>,
    pub steps: Vec<Step>,
    /// Packed operands of each kernel step, in step order (the calls in
    /// `steps` have their `packed` vectors emptied).
    pub packed: Vec<Vec<BlobRef>>,
}

/// The raw sections of an artifact, checked against their checksums.
pub struct Sections<'a> {
    pub manifest: Manifest,
    pub data: &'a [u8],
    pub library: &'a [u8],
}

/// Builds the data section: blobs appended 64-byte aligned.
#[derive(Default)]
pub struct DataWriter {
    pub bytes: Vec<u8>,
}

impl DataWriter {
    pub fn push(&mut self, blob: &[u8]) -> BlobRef {
        let pad = (DATA_ALIGN - self.bytes.len() % DATA_ALIGN) % DATA_ALIGN;
        self.bytes.resize(self.bytes.len() + pad, 0);
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(blob);
        BlobRef {
            offset,
            len: blob.len() as u64,
        }
    }
}

fn align_up(n: usize) -> usize {
    n.div_ceil(DATA_ALIGN) * DATA_ALIGN
}

/// Writes an artifact from a model's pieces; the one writer behind
/// [`crate::Module::to_bytes`] and [`encode_parts`].
///
/// `model`'s main-graph initializers are not written (pass them in
/// `weights`: they go into the data section, not the manifest). `packed`
/// holds the packed operands of each kernel step, in step order; the calls
/// in `steps` may still carry them (they are dropped from the manifest).
pub fn write(
    target: &TargetInfo,
    model: &Model,
    weights: &[(&str, &Tensor)],
    steps: &[Step],
    packed: &[Vec<&[u8]>],
    library: &[u8],
) -> Result<Vec<u8>, ArtifactError> {
    let kernel_steps = steps.iter().filter(|s| matches!(s, Step::Kernel(_))).count();
    if packed.len() != kernel_steps {
        return Err(ArtifactError::Corrupt(format!(
            "{} packed-operand tables for {kernel_steps} kernel steps",
            packed.len()
        )));
    }
    let mut data = DataWriter::default();
    let mut weight_records = Vec::new();
    let mut string_weights = Vec::new();
    let mut weights = weights.to_vec();
    // Sorted, so the same model always gives the same bytes.
    weights.sort_by_key(|(name, _)| *name);
    for (name, t) in weights {
        match t.to_le_bytes() {
            Some(bytes) => weight_records.push(WeightRecord {
                name: name.to_string(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                blob: data.push(&bytes),
            }),
            None => string_weights.push((name.to_string(), t.clone())),
        }
    }
    let packed_refs = packed
        .iter()
        .map(|blobs| blobs.iter().map(|b| data.push(b)).collect())
        .collect();
    let mut steps = steps.to_vec();
    for s in &mut steps {
        if let Step::Kernel(k) = s {
            k.call.packed.clear();
        }
    }
    let mut model = model.clone();
    model.graph.initializers.clear();
    let manifest = Manifest {
        carbide_version: env!("CARGO_PKG_VERSION").to_string(),
        target: target.clone(),
        model,
        weights: weight_records,
        string_weights,
        steps,
        packed: packed_refs,
    };
    encode(&manifest, &data.bytes, library)
}

/// Writes the artifact of a compiler's output without loading it: no
/// dlopen and no CPU check, so any target's artifact can be written on
/// any machine (e.g. aarch64 kernels on x86).
pub fn encode_parts(parts: ModuleParts) -> Result<Vec<u8>, ArtifactError> {
    let ModuleParts {
        mut model,
        steps,
        library,
        target,
    } = parts;
    let initializers = std::mem::take(&mut model.graph.initializers);
    let weights: Vec<(&str, &Tensor)> = initializers.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let packed: Vec<Vec<&[u8]>> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel(k) => Some(k.call.packed.iter().map(Vec::as_slice).collect()),
            _ => None,
        })
        .collect();
    write(&target, &model, &weights, &steps, &packed, &library)
}

/// Writes an artifact from its manifest, data section and library bytes.
pub fn encode(manifest: &Manifest, data: &[u8], library: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let manifest_bytes =
        postcard::to_stdvec(manifest).map_err(|e| ArtifactError::Corrupt(format!("encoding the manifest: {e}")))?;
    Ok(encode_raw(&manifest_bytes, data, library))
}

/// Lays out the header and the three sections (the manifest already encoded).
pub fn encode_raw(manifest_bytes: &[u8], data: &[u8], library: &[u8]) -> Vec<u8> {
    let manifest_off = HEADER_LEN;
    let data_off = align_up(manifest_off + manifest_bytes.len());
    let library_off = align_up(data_off + data.len());
    let mut out = Vec::with_capacity(library_off + library.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    for (off, bytes) in [(manifest_off, manifest_bytes), (data_off, data), (library_off, library)] {
        out.extend_from_slice(&(off as u64).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(manifest_bytes);
    out.resize(data_off, 0);
    out.extend_from_slice(data);
    out.resize(library_off, 0);
    out.extend_from_slice(library);
    out
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, ArtifactError> {
    let field = b.get(at..at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok());
    field
        .map(u32::from_le_bytes)
        .ok_or_else(|| ArtifactError::Truncated(format!("header field at byte {at} is past the end")))
}

fn read_u64(b: &[u8], at: usize) -> Result<u64, ArtifactError> {
    let field = b.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok());
    field
        .map(u64::from_le_bytes)
        .ok_or_else(|| ArtifactError::Truncated(format!("header field at byte {at} is past the end")))
}

/// Checks the header and checksums and decodes the manifest.
pub fn decode(bytes: &[u8]) -> Result<Sections<'_>, ArtifactError> {
    if bytes.len() < 16 {
        if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
            return Err(ArtifactError::BadMagic);
        }
        return Err(ArtifactError::Truncated(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    let version = read_u32(bytes, 8)?;
    if version != FORMAT_VERSION {
        return Err(ArtifactError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(ArtifactError::Truncated(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    let section = |at: usize, name: &'static str| -> Result<&[u8], ArtifactError> {
        let (off, len, stored) = (
            read_u64(bytes, at)?,
            read_u64(bytes, at + 8)?,
            read_u32(bytes, at + 16)?,
        );
        let end = off
            .checked_add(len)
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(|| {
                ArtifactError::Truncated(format!(
                    "{name} section ends at byte {}, the file has {}",
                    off as u128 + len as u128,
                    bytes.len()
                ))
            })?;
        let s = &bytes[off as usize..end as usize];
        let computed = crc32fast::hash(s);
        if computed != stored {
            return Err(ArtifactError::Checksum {
                section: name,
                stored,
                computed,
            });
        }
        Ok(s)
    };
    let manifest_bytes = section(16, "manifest")?;
    let data = section(40, "data")?;
    let library = section(64, "library")?;
    let manifest: Manifest = postcard::from_bytes(manifest_bytes)
        .map_err(|e| ArtifactError::Corrupt(format!("decoding the manifest: {e}")))?;
    Ok(Sections {
        manifest,
        data,
        library,
    })
}

/// The bytes of `blob` in the data section, checked to be in range.
pub fn blob<'a>(data: &'a [u8], blob: &BlobRef, what: &str) -> Result<&'a [u8], ArtifactError> {
    blob.offset
        .checked_add(blob.len)
        .filter(|&e| e <= data.len() as u64)
        .map(|e| &data[blob.offset as usize..e as usize])
        .ok_or_else(|| ArtifactError::Corrupt(format!("{what} lies outside the data section")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Module;
    use carbide_ir::ops::elementwise::Binary;
    use carbide_ir::ops::ElementwiseOp;
    use carbide_ir::{Dim, Graph, Node, Op, Value, ValueInfo, ValueType};

    /// y = x + w, one host step, with one weight and a string weight.
    fn parts() -> ModuleParts {
        let mut graph = Graph::default();
        let ty = ValueType::tensor(DType::F32, vec![Dim::Sym("n".into())]);
        graph.inputs.push(ValueInfo {
            name: "x".into(),
            ty: ty.clone(),
        });
        graph.outputs.push(ValueInfo { name: "y".into(), ty });
        graph
            .initializers
            .insert("w".into(), Tensor::from_f32s(vec![1.0, 2.0, 3.0]));
        graph.nodes.push(Node {
            name: "add".into(),
            op: Op::Elementwise(ElementwiseOp::Binary {
                op: Binary::Add,
                legacy_axis: None,
            }),
            inputs: vec!["x".into(), "w".into()],
            outputs: vec!["y".into()],
        });
        ModuleParts {
            model: Model {
                graph,
                ..Default::default()
            },
            steps: vec![Step::Host { node: 0 }],
            library: Vec::new(),
            target: TargetInfo::host_only(),
        }
    }

    #[test]
    fn parts_encode_without_loading_and_load_back_to_the_same_bytes() {
        let bytes = encode_parts(parts()).unwrap();
        let sections = decode(&bytes).unwrap();
        assert!(
            sections.manifest.model.graph.initializers.is_empty(),
            "weights go to the data section"
        );
        assert_eq!(sections.manifest.weights.len(), 1);
        let module = Module::from_bytes(&bytes).unwrap();
        // One writer: the loaded module writes exactly these bytes back.
        assert_eq!(module.to_bytes().unwrap(), bytes);
        let out = module
            .run(vec![(
                "x".into(),
                Value::Tensor(Tensor::from_f32s(vec![10.0, 20.0, 30.0])),
            )])
            .unwrap();
        assert_eq!(
            out[0].1.as_tensor().unwrap().to_f64_vec().unwrap(),
            vec![11.0, 22.0, 33.0]
        );
    }

    #[test]
    fn a_foreign_cpu_artifact_encodes_but_does_not_load() {
        let mut p = parts();
        p.target = TargetInfo {
            name: "elsewhere".into(),
            arch: if std::env::consts::ARCH == "aarch64" {
                "x86_64"
            } else {
                "aarch64"
            }
            .into(),
            required_features: Vec::new(),
        };
        // A kernel step makes the target matter (host-only artifacts run anywhere).
        p.steps = vec![Step::Kernel(Box::new(crate::KernelStep {
            call: carbide_ir::kernel::KernelCall {
                entry: "k".into(),
                buffers: Vec::new(),
                params: Vec::new(),
                packed: vec![vec![7u8; 5]],
                max_parts: None,
            },
            nodes: vec![0],
            inputs: vec!["x".into(), "w".into()],
            outputs: vec!["y".into()],
            input_types: Vec::new(),
            output_types: Vec::new(),
        }))];
        p.library = b"not loaded".to_vec();
        let bytes = encode_parts(p).unwrap();
        let sections = decode(&bytes).unwrap();
        assert_eq!(sections.library, b"not loaded");
        assert_eq!(
            blob(sections.data, &sections.manifest.packed[0][0], "packed").unwrap(),
            &[7u8; 5]
        );
        assert!(matches!(
            Module::from_bytes(&bytes),
            Err(ArtifactError::WrongCpu { .. })
        ));
    }
}
