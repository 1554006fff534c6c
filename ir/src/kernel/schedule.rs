//! Schedules: how a kernel's loops are tiled, ordered, vectorized and
//! parallelized, kept apart from *what* the kernel computes so the autotuner
//! can enumerate, serialize (JSON) and replay them. Codegen is a pure
//! function of (kernel, schedule, target).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The register tile of a GEMM-like microkernel: `mr` rows of A times `nr`
/// columns of B held in named accumulator registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroTile {
    pub mr: usize,
    pub nr: usize,
}

/// How a constant weight operand is laid out in the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightLayout {
    /// As in the graph (row-major).
    RowMajor,
    /// GEMM B operand in column panels of `nr` columns, each `K x nr`
    /// row-major and zero-padded to a whole panel.
    PackedPanels { nr: usize },
    /// Convolution weights blocked as OIHW{block}o (NCHWc-style output-channel blocks).
    Nchwc { block: usize },
    /// Convolution weights Winograd-transformed for F(m x m, 3 x 3) output
    /// tiles: `(m + 2)^2` matrices U = G g G^T, each packed as GEMM A panels.
    Winograd { m: usize },
}

/// A kernel schedule. Loop names refer to the kernel's loops (e.g. `m`,
/// `n`, `k` for GEMM; `i` for an elementwise kernel's flattened index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Cache tile size per loop (GEMM: `m` = MC, `n` = NC, `k` = KC).
    pub tiles: BTreeMap<String, usize>,
    /// Outer-to-inner loop order of the tiled loops.
    pub loop_order: Vec<String>,
    /// The loop mapped to SIMD lanes, and the lane count.
    pub vector_axis: Option<String>,
    pub vector_width: usize,
    /// Unroll factor per loop (1 = not unrolled).
    pub unroll: BTreeMap<String, usize>,
    /// The loop split across `part`/`num_parts`.
    pub parallel_axis: Option<String>,
    pub weight_layout: WeightLayout,
    /// Register tile for GEMM-like kernels.
    pub microkernel: Option<MicroTile>,
}

impl Schedule {
    /// A tile size, or `default` when the schedule leaves the loop untiled.
    pub fn tile(&self, loop_name: &str, default: usize) -> usize {
        self.tiles.get(loop_name).copied().filter(|&t| t > 0).unwrap_or(default)
    }

    pub fn unroll_of(&self, loop_name: &str) -> usize {
        self.unroll.get(loop_name).copied().filter(|&u| u > 0).unwrap_or(1)
    }
}

/// What a kernel computes, independent of how: the key under which tuning
/// records are stored. Two groups with equal keys can share a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    /// Anchor op kind, e.g. `gemm`, `conv2d`, `elementwise`.
    pub op: String,
    /// Operand shapes as text (`?`/symbol names for unknown dims).
    pub shapes: Vec<String>,
    pub dtypes: Vec<String>,
    /// The fused epilogue, in order (e.g. `bias`, `relu`, `add`).
    pub epilogue: Vec<String>,
    /// Op attributes that change the computation (strides, transposes...).
    pub attrs: Vec<String>,
    pub target: String,
}

impl WorkloadKey {
    /// The canonical text form: stable across runs, versions and platforms.
    pub fn canonical(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.op,
            self.shapes.join(";"),
            self.dtypes.join(";"),
            self.epilogue.join(";"),
            self.attrs.join(";"),
            self.target
        )
    }

    /// A stable 64-bit FNV-1a hash of [`Self::canonical`] (std's hasher is
    /// randomly seeded and may change between Rust versions, so it is unfit
    /// for records on disk).
    pub fn hash64(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.canonical().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    /// The hash as 16 hex digits, usable in symbol and file names.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.hash64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkloadKey {
        WorkloadKey {
            op: "gemm".into(),
            shapes: vec!["64x128".into(), "128x32".into()],
            dtypes: vec!["f32".into()],
            epilogue: vec!["relu".into()],
            attrs: vec![],
            target: "x86-64-avx512".into(),
        }
    }

    #[test]
    fn workload_hash_is_stable_and_discriminating() {
        // The value is pinned: tuning records on disk depend on it never changing.
        let k = key();
        assert_eq!(k.hash64(), 0xa3be_4d83_efe7_d901);
        assert_eq!(k.hex(), "a3be4d83efe7d901");
        assert_eq!(k.hex().len(), 16);
        let mut other = key();
        other.epilogue.clear();
        assert_ne!(k.hash64(), other.hash64());
        assert_eq!(k.canonical(), "gemm|64x128;128x32|f32|relu||x86-64-avx512");
    }

    #[test]
    fn schedule_defaults_for_missing_tiles() {
        let s = Schedule {
            tiles: [("k".to_string(), 256)].into_iter().collect(),
            loop_order: vec!["n".into(), "k".into(), "m".into()],
            vector_axis: Some("n".into()),
            vector_width: 16,
            unroll: BTreeMap::new(),
            parallel_axis: Some("m".into()),
            weight_layout: WeightLayout::PackedPanels { nr: 32 },
            microkernel: Some(MicroTile { mr: 12, nr: 32 }),
        };
        assert_eq!(s.tile("k", 1), 256);
        assert_eq!(s.tile("m", 96), 96);
        assert_eq!(s.unroll_of("k"), 1);
    }
}
