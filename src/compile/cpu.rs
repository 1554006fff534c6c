//! The CPU code generator behind partitioning: turns each group into a
//! `carbide_backend_cpu::KernelGroup`, asks `lower`, and collects the
//! kernels for one shared library.

use super::partition::{Group, KernelGen};
use super::CompileError;
use carbide_backend_cpu::{build_library, lower, GroupValue, KernelGroup, LoweredKernel, Target};
use carbide_ir::{Dim, Graph, TensorType};
use carbide_runtime::artifact::TargetInfo;
use carbide_runtime::KernelStep;
use std::collections::HashSet;

pub struct CpuGen {
    pub target: Target,
    pub kernels: Vec<LoweredKernel>,
    /// Tuning records to replay: the best record per workload replaces the default schedule.
    pub tuning: Option<carbide_autotune::Database>,
    /// Kernels that got a recorded schedule, and tunable ones that had none.
    pub tuned: Vec<super::TunedKernel>,
    pub untuned: Vec<String>,
    /// Keep each generated kernel's group (for the autotuner).
    pub keep_groups: bool,
    pub groups: Vec<KernelGroup>,
    /// Symbolic dims bound by the graph's inputs (known when a run starts).
    graph_syms: HashSet<String>,
}

fn syms(ty: &TensorType) -> impl Iterator<Item = &str> {
    ty.shape.iter().flatten().filter_map(|d| match d {
        Dim::Sym(s) => Some(s.as_str()),
        _ => None,
    })
}

impl CpuGen {
    pub fn new(target: Target, graph: &Graph) -> CpuGen {
        let graph_syms = graph
            .inputs
            .iter()
            .filter_map(|i| i.ty.as_tensor())
            .flat_map(|t| syms(t).map(str::to_string).collect::<Vec<_>>())
            .collect();
        CpuGen {
            target,
            kernels: Vec::new(),
            tuning: None,
            tuned: Vec::new(),
            untuned: Vec::new(),
            keep_groups: false,
            groups: Vec::new(),
            graph_syms,
        }
    }

    pub fn target_info(&self) -> TargetInfo {
        TargetInfo {
            name: self.target.name().to_string(),
            arch: self.target.arch().to_string(),
            required_features: self.target.required_cpu_features(),
        }
    }

    /// Builds all kernels into one shared object (empty when there are none).
    pub fn finish(&self) -> Result<Vec<u8>, CompileError> {
        if self.kernels.is_empty() {
            return Ok(Vec::new());
        }
        build_library(&self.kernels, &self.target).map_err(|e| CompileError::Codegen {
            node: "(library)".into(),
            reason: e.to_string(),
        })
    }
}

impl CpuGen {
    /// The kernel with the best recorded schedule of `default`'s workload,
    /// or `None` (noted in `untuned` for tunable workloads) when there is no
    /// record or the record no longer fits the kernel (then the default stays).
    fn replay(
        &mut self,
        db: &carbide_autotune::Database,
        kg: &KernelGroup,
        default: &LoweredKernel,
        node: &str,
    ) -> Option<LoweredKernel> {
        if !carbide_autotune::space::is_tunable(&default.workload.op) {
            return None;
        }
        let Some(rec) = db.best(&default.workload) else {
            self.untuned.push(node.to_string());
            return None;
        };
        match lower(kg, &self.target, Some(&rec.schedule)) {
            Ok(Some(k)) => {
                self.tuned.push(super::TunedKernel {
                    node: node.to_string(),
                    workload: rec.workload.clone(),
                    schedule: rec.schedule.clone(),
                    median_us: rec.median_us,
                    default_us: rec.default_us,
                });
                Some(k)
            }
            Ok(None) | Err(_) => {
                tracing::warn!(
                    "tuning record {} does not fit kernel '{node}'; using the default schedule",
                    rec.workload
                );
                self.untuned.push(node.to_string());
                None
            }
        }
    }
}

/// A type a kernel can be generated for: dtype and rank known, no unknown dims.
fn complete(graph: &Graph, name: &str) -> Option<TensorType> {
    let t = super::partition::tensor_type(graph, name)?;
    t.shape
        .as_ref()?
        .iter()
        .all(|d| !matches!(d, Dim::Unknown))
        .then_some(t)
}

impl KernelGen for CpuGen {
    fn lower(&mut self, graph: &Graph, group: &Group) -> Result<Option<KernelStep>, CompileError> {
        let graph_inputs: HashSet<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
        let mut input_types = Vec::new();
        let mut inputs = Vec::new();
        for name in &group.inputs {
            let Some(ty) = complete(graph, name) else {
                return Ok(None);
            };
            let constant = graph
                .initializers
                .get(name)
                .filter(|_| !graph_inputs.contains(name.as_str()))
                .cloned();
            inputs.push(GroupValue {
                name: name.clone(),
                ty: ty.clone(),
                constant,
            });
            input_types.push(ty);
        }
        let mut output_types = Vec::new();
        let mut outputs = Vec::new();
        for name in &group.outputs {
            let Some(ty) = complete(graph, name) else {
                return Ok(None);
            };
            // Every symbolic output dim must be bound when the kernel runs.
            let bound = |s: &str| self.graph_syms.contains(s) || input_types.iter().any(|t| syms(t).any(|x| x == s));
            if !syms(&ty).all(bound) {
                return Ok(None);
            }
            outputs.push(GroupValue {
                name: name.clone(),
                ty: ty.clone(),
                constant: None,
            });
            output_types.push(ty);
        }
        if outputs.is_empty() {
            return Ok(None);
        }
        let kg = KernelGroup {
            nodes: group.nodes.iter().map(|&i| graph.nodes[i].clone()).collect(),
            inputs,
            outputs,
        };
        let node = &graph.nodes[group.nodes[0]].name;
        let lowered = lower(&kg, &self.target, None).map_err(|e| CompileError::Codegen {
            node: node.clone(),
            reason: e.to_string(),
        })?;
        let Some(mut k) = lowered else { return Ok(None) };
        if let Some(db) = self.tuning.take() {
            if let Some(tuned) = self.replay(&db, &kg, &k, node) {
                k = tuned;
            }
            self.tuning = Some(db);
        }
        let step = KernelStep {
            call: k.call.clone(),
            nodes: group.nodes.clone(),
            inputs: group.inputs.clone(),
            outputs: group.outputs.clone(),
            input_types,
            output_types,
        };
        self.kernels.push(k);
        if self.keep_groups {
            self.groups.push(kg);
        }
        Ok(Some(step))
    }
}
