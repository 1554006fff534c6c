//! ModelProto -> [`Model`]: graphs, initializers, nodes (with Constant nodes
//! folded into initializers and model-local functions inlined), attributes,
//! topological ordering, verification and type inference.

use crate::proto::{attr_type, AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto};
use crate::tensor::{decode, decode_sparse};
use crate::types::value_type;
use crate::FrontendError;
use carbide_ir::ops::ParseCtx;
use carbide_ir::{Attr, Attrs, Graph, IrError, Model, Node, Op, Tensor, ValueInfo};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

/// A model-local function: (domain, name, overload).
type FnKey = (String, String, String);

/// Opset version per (normalised) domain.
type Opsets = Rc<BTreeMap<String, i64>>;

/// Deepest nesting of function calls (and subgraphs) accepted.
const MAX_DEPTH: usize = 64;

/// Most nodes a model may expand to through function inlining (a small file
/// whose functions call each other twice per level would otherwise explode).
const MAX_NODES: usize = 1 << 22;

/// "ai.onnx" is another spelling of the default domain "".
pub fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}

fn malformed(msg: String) -> FrontendError {
    FrontendError::Ir(IrError::Malformed(msg))
}

/// A node after function inlining, before op parsing.
#[derive(Clone, Debug)]
struct FlatNode {
    name: String,
    /// The name came from the file (not generated).
    named: bool,
    op_type: String,
    domain: String,
    /// `NodeProto.overload`: picks among same-named model functions.
    overload: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: Vec<AttributeProto>,
    /// The opset imports that apply to this node (the model's, or the
    /// function's when it came from a function body).
    opsets: Opsets,
}

/// Converts a whole model.
pub fn import_model(mp: &ModelProto, base_dir: Option<&Path>) -> Result<Model, FrontendError> {
    let ir_version = mp.ir_version.unwrap_or(0);
    let mut opsets = BTreeMap::new();
    for o in &mp.opset_import {
        opsets.insert(
            norm_domain(o.domain.as_deref().unwrap_or("")).to_string(),
            o.version.unwrap_or(0),
        );
    }
    // IR versions before 3 had no opset imports: their ops are opset 1.
    if ir_version < 3 && !opsets.contains_key("") {
        opsets.insert(String::new(), 1);
    }
    let mut functions = HashMap::new();
    for f in &mp.functions {
        let key = (
            norm_domain(f.domain.as_deref().unwrap_or("")).to_string(),
            f.name.clone().unwrap_or_default(),
            f.overload.clone().unwrap_or_default(),
        );
        functions.insert(key, f);
    }
    let opsets = Rc::new(opsets);
    let im = Importer {
        base_dir,
        functions,
        model_opsets: opsets.clone(),
        node_count: Cell::new(0),
    };
    let gp = mp
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the model has no graph".into()))?;
    let graph = im.convert_graph(gp, &BTreeSet::new(), 0)?;
    let mut model = Model {
        graph,
        opsets: (*opsets).clone(),
        ir_version,
        producer_name: mp.producer_name.clone().unwrap_or_default(),
        producer_version: mp.producer_version.clone().unwrap_or_default(),
        domain: mp.domain.clone().unwrap_or_default(),
        model_version: mp.model_version.unwrap_or(0),
        doc_string: mp.doc_string.clone().unwrap_or_default(),
        metadata: mp
            .metadata_props
            .iter()
            .map(|e| (e.key.clone().unwrap_or_default(), e.value.clone().unwrap_or_default()))
            .collect(),
    };
    carbide_ir::verify::verify_graph(&model.graph, &BTreeSet::new())?;
    carbide_ir::infer::infer_graph(&mut model.graph, &Default::default())?;
    Ok(model)
}

struct Importer<'a> {
    base_dir: Option<&'a Path>,
    functions: HashMap<FnKey, &'a FunctionProto>,
    model_opsets: Opsets,
    /// Nodes created so far, all graphs together (see [`MAX_NODES`]).
    node_count: Cell<usize>,
}

/// Names a graph defines itself (inputs, initializers, node outputs).
fn defined_names(g: &GraphProto) -> BTreeSet<String> {
    let mut d = BTreeSet::new();
    d.extend(g.input.iter().filter_map(|i| i.name.clone()));
    d.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    d.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().and_then(|v| v.name.clone())),
    );
    for n in &g.node {
        d.extend(n.output.iter().cloned());
    }
    d
}

/// Names a subgraph reads from enclosing graphs.
fn free_vars(g: &GraphProto, out: &mut BTreeSet<String>) {
    let defined = defined_names(g);
    let mut used = BTreeSet::new();
    for n in &g.node {
        used.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            attr_free_vars(a, &mut used);
        }
    }
    used.extend(g.output.iter().filter_map(|o| o.name.clone()));
    out.extend(used.into_iter().filter(|u| !defined.contains(u)));
}

fn attr_free_vars(a: &AttributeProto, out: &mut BTreeSet<String>) {
    if let Some(g) = &a.g {
        free_vars(g, out);
    }
    for g in &a.graphs {
        free_vars(g, out);
    }
}

/// Renames every value name in a subgraph copied out of a function body,
/// and resolves its attribute references.
fn substitute_graph(
    g: &mut GraphProto,
    rename: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&AttributeProto) -> Option<AttributeProto>,
) {
    for i in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        if let Some(n) = &mut i.name {
            *n = rename(n);
        }
    }
    for t in g.initializer.iter_mut() {
        if let Some(n) = &mut t.name {
            *n = rename(n);
        }
    }
    for s in g.sparse_initializer.iter_mut() {
        if let Some(n) = s.values.as_mut().and_then(|v| v.name.as_mut()) {
            *n = rename(n);
        }
    }
    for n in g.node.iter_mut() {
        for v in n.input.iter_mut().chain(n.output.iter_mut()) {
            *v = rename(v);
        }
        n.attribute = substitute_attrs(&n.attribute, rename, resolve);
    }
}

fn substitute_attrs(
    attrs: &[AttributeProto],
    rename: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&AttributeProto) -> Option<AttributeProto>,
) -> Vec<AttributeProto> {
    let mut out = Vec::with_capacity(attrs.len());
    for a in attrs {
        let Some(mut a) = resolve(a) else { continue };
        if let Some(g) = &mut a.g {
            substitute_graph(g, rename, resolve);
        }
        for g in a.graphs.iter_mut() {
            substitute_graph(g, rename, resolve);
        }
        out.push(a);
    }
    out
}

/// Which kind of value an attribute holds; old files may leave `type` unset.
fn attr_kind(a: &AttributeProto) -> i32 {
    match a.r#type {
        Some(t) if t != attr_type::UNDEFINED => t,
        _ => {
            if a.f.is_some() {
                attr_type::FLOAT
            } else if a.i.is_some() {
                attr_type::INT
            } else if a.s.is_some() {
                attr_type::STRING
            } else if a.t.is_some() {
                attr_type::TENSOR
            } else if a.g.is_some() {
                attr_type::GRAPH
            } else if a.sparse_tensor.is_some() {
                attr_type::SPARSE_TENSOR
            } else if a.tp.is_some() {
                attr_type::TYPE_PROTO
            } else if !a.floats.is_empty() {
                attr_type::FLOATS
            } else if !a.ints.is_empty() {
                attr_type::INTS
            } else if !a.strings.is_empty() {
                attr_type::STRINGS
            } else if !a.tensors.is_empty() {
                attr_type::TENSORS
            } else if !a.graphs.is_empty() {
                attr_type::GRAPHS
            } else if !a.sparse_tensors.is_empty() {
                attr_type::SPARSE_TENSORS
            } else if !a.type_protos.is_empty() {
                attr_type::TYPE_PROTOS
            } else {
                attr_type::UNDEFINED
            }
        }
    }
}

impl Importer<'_> {
    /// Converts one graph. `outer` holds names visible from enclosing graphs.
    fn convert_graph(&self, gp: &GraphProto, outer: &BTreeSet<String>, depth: usize) -> Result<Graph, FrontendError> {
        self.convert_graph_with(gp, outer, depth, &self.model_opsets.clone())
    }

    fn convert_graph_with(
        &self,
        gp: &GraphProto,
        outer: &BTreeSet<String>,
        depth: usize,
        opsets: &Opsets,
    ) -> Result<Graph, FrontendError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!("subgraphs are nested more than {MAX_DEPTH} deep")));
        }
        let gname = gp.name.clone().unwrap_or_default();
        let mut graph = Graph {
            name: gname.clone(),
            ..Default::default()
        };
        for i in &gp.input {
            let name = i.name.clone().unwrap_or_default();
            let ty = value_type(&format!("graph input '{name}'"), i.r#type.as_ref())?;
            graph.inputs.push(ValueInfo { name, ty });
        }
        for o in &gp.output {
            let name = o.name.clone().unwrap_or_default();
            let ty = value_type(&format!("graph output '{name}'"), o.r#type.as_ref())?;
            graph.outputs.push(ValueInfo { name, ty });
        }
        for v in &gp.value_info {
            let name = v.name.clone().unwrap_or_default();
            let ty = value_type(&format!("value '{name}'"), v.r#type.as_ref())?;
            graph.value_info.insert(name, ty);
        }
        for t in &gp.initializer {
            let name = t.name.clone().unwrap_or_default();
            if name.is_empty() {
                return Err(malformed(format!("graph '{gname}' has an initializer without a name")));
            }
            let tensor = decode(t, self.base_dir)?;
            if graph.initializers.insert(name.clone(), tensor).is_some() {
                return Err(malformed(format!("initializer '{name}' is defined more than once")));
            }
        }
        for s in &gp.sparse_initializer {
            let name = s.values.as_ref().and_then(|v| v.name.clone()).unwrap_or_default();
            if name.is_empty() {
                return Err(malformed(format!(
                    "graph '{gname}' has a sparse initializer without a name"
                )));
            }
            let tensor = decode_sparse(s, self.base_dir)?;
            if graph.initializers.insert(name.clone(), tensor).is_some() {
                return Err(malformed(format!("initializer '{name}' is defined more than once")));
            }
        }

        // Inline function calls.
        let mut flat = Vec::with_capacity(gp.node.len());
        for (idx, n) in gp.node.iter().enumerate() {
            let op_type = n.op_type.clone().unwrap_or_default();
            let given = n.name.clone().unwrap_or_default();
            let fnode = FlatNode {
                named: !given.is_empty(),
                name: if given.is_empty() {
                    format!("{op_type}_{idx}")
                } else {
                    given
                },
                domain: norm_domain(n.domain.as_deref().unwrap_or("")).to_string(),
                overload: n.overload.clone().unwrap_or_default(),
                op_type,
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs: n.attribute.clone(),
                opsets: opsets.clone(),
            };
            self.expand(fnode, &mut Vec::new(), &mut flat)?;
        }
        uniquify_names(&mut flat);

        // Constant nodes become initializers.
        let mut nodes = Vec::with_capacity(flat.len());
        for n in flat {
            if n.domain.is_empty() && n.op_type == "Constant" {
                let visible = outer.clone();
                let t = self.constant_value(&n, &visible, depth)?;
                let out = match n.outputs.as_slice() {
                    [o] if !o.is_empty() => o.clone(),
                    _ => {
                        return Err(IrError::invalid("Constant", "needs exactly one output")
                            .at_node(&n.name, "Constant")
                            .into())
                    }
                };
                if graph.initializers.insert(out.clone(), t).is_some() {
                    return Err(malformed(format!("value '{out}' is defined more than once")));
                }
                continue;
            }
            nodes.push(n);
        }

        let order = topo_order(&nodes, &graph, outer)?;

        // Names visible to subgraphs: everything this graph defines, plus outer names.
        let mut visible = outer.clone();
        visible.extend(graph.inputs.iter().map(|i| i.name.clone()));
        visible.extend(graph.initializers.keys().cloned());
        for n in &nodes {
            visible.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }

        let mut slots: Vec<Option<FlatNode>> = nodes.into_iter().map(Some).collect();
        for i in order {
            let Some(n) = slots.get_mut(i).and_then(Option::take) else {
                continue;
            };
            graph.nodes.push(self.convert_node(n, &visible, depth)?);
        }
        Ok(graph)
    }

    fn opset_for(&self, n: &FlatNode) -> Result<i64, FrontendError> {
        n.opsets.get(&n.domain).copied().ok_or_else(|| {
            malformed(format!(
                "node '{}' ({}) is in domain '{}', which the model does not import (opset_import)",
                n.name, n.op_type, n.domain
            ))
        })
    }

    fn convert_node(&self, n: FlatNode, visible: &BTreeSet<String>, depth: usize) -> Result<Node, FrontendError> {
        let opset = self.opset_for(&n)?;
        let ctx = if n.domain.is_empty() {
            format!("{}, opset {opset}", n.op_type)
        } else {
            format!("{}.{}, opset {opset}", n.domain, n.op_type)
        };
        let items = self
            .convert_attrs(&n, visible, depth)
            .map_err(|e| in_node(e, &n.name, &ctx))?;
        let mut cx = ParseCtx {
            domain: &n.domain,
            op_type: &n.op_type,
            opset,
            attrs: Attrs::new(n.op_type.clone(), items),
            num_inputs: n.inputs.len(),
            num_outputs: n.outputs.len(),
        };
        let op = Op::parse(&mut cx).map_err(|e| e.at_node(&n.name, &ctx))?;
        Ok(Node {
            name: n.name,
            op,
            inputs: n.inputs,
            outputs: n.outputs,
        })
    }

    fn convert_attrs(
        &self,
        n: &FlatNode,
        visible: &BTreeSet<String>,
        depth: usize,
    ) -> Result<Vec<(String, Attr)>, FrontendError> {
        let mut items: Vec<(String, Attr)> = Vec::with_capacity(n.attrs.len());
        for a in &n.attrs {
            let name = a.name.clone().unwrap_or_default();
            if let Some(r) = a.ref_attr_name.as_deref().filter(|r| !r.is_empty()) {
                return Err(IrError::bad_attr(
                    &n.op_type,
                    &name,
                    format!("refers to function attribute '{r}' outside of a function"),
                )
                .into());
            }
            if items.iter().any(|(k, _)| *k == name) {
                return Err(IrError::bad_attr(&n.op_type, &name, "given more than once").into());
            }
            let attr = self.convert_attr(n, a, &name, visible, depth)?;
            items.push((name, attr));
        }
        Ok(items)
    }

    fn convert_attr(
        &self,
        n: &FlatNode,
        a: &AttributeProto,
        name: &str,
        visible: &BTreeSet<String>,
        depth: usize,
    ) -> Result<Attr, FrontendError> {
        let sub = |g: &GraphProto| self.convert_graph_with(g, visible, depth + 1, &n.opsets);
        Ok(match attr_kind(a) {
            attr_type::FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
            attr_type::INT => Attr::Int(a.i.unwrap_or(0)),
            attr_type::STRING => Attr::String(a.s.clone().unwrap_or_default()),
            attr_type::TENSOR => match &a.t {
                Some(t) => Attr::Tensor(decode(t, self.base_dir)?),
                None => return Err(IrError::bad_attr(&n.op_type, name, "tensor attribute without a tensor").into()),
            },
            attr_type::SPARSE_TENSOR => match &a.sparse_tensor {
                Some(t) => Attr::Tensor(decode_sparse(t, self.base_dir)?),
                None => {
                    return Err(IrError::bad_attr(&n.op_type, name, "sparse tensor attribute without a value").into())
                }
            },
            attr_type::GRAPH => match &a.g {
                Some(g) => Attr::Graph(Box::new(sub(g)?)),
                None => return Err(IrError::bad_attr(&n.op_type, name, "graph attribute without a graph").into()),
            },
            attr_type::TYPE_PROTO => Attr::Type(value_type(&format!("attribute '{name}'"), a.tp.as_ref())?),
            attr_type::FLOATS => Attr::Floats(a.floats.clone()),
            attr_type::INTS => Attr::Ints(a.ints.clone()),
            attr_type::STRINGS => Attr::Strings(a.strings.clone()),
            attr_type::TENSORS => Attr::Tensors(
                a.tensors
                    .iter()
                    .map(|t| decode(t, self.base_dir))
                    .collect::<Result<_, _>>()?,
            ),
            attr_type::SPARSE_TENSORS => Attr::Tensors(
                a.sparse_tensors
                    .iter()
                    .map(|t| decode_sparse(t, self.base_dir))
                    .collect::<Result<_, _>>()?,
            ),
            attr_type::GRAPHS => Attr::Graphs(a.graphs.iter().map(sub).collect::<Result<_, _>>()?),
            attr_type::TYPE_PROTOS => Attr::Types(
                a.type_protos
                    .iter()
                    .map(|t| value_type(&format!("attribute '{name}'"), Some(t)))
                    .collect::<Result<_, _>>()?,
            ),
            k => return Err(IrError::bad_attr(&n.op_type, name, format!("unknown attribute type {k}")).into()),
        })
    }

    /// The tensor a `Constant` node defines.
    fn constant_value(&self, n: &FlatNode, visible: &BTreeSet<String>, depth: usize) -> Result<Tensor, FrontendError> {
        let ctx = format!("Constant, opset {}", self.opset_for(n)?);
        let at = |e: IrError| FrontendError::Ir(e.at_node(&n.name, &ctx));
        let items = self
            .convert_attrs(n, visible, depth)
            .map_err(|e| in_node(e, &n.name, &ctx))?;
        if !n.inputs.iter().all(|i| i.is_empty()) {
            return Err(at(IrError::invalid("Constant", "takes no inputs")));
        }
        let mut attrs = Attrs::new("Constant", items);
        let names = [
            "value",
            "sparse_value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "value_string",
            "value_strings",
        ];
        let present: Vec<&str> = names.iter().copied().filter(|k| attrs.has(k)).collect();
        if present.len() != 1 {
            return Err(at(IrError::bad_attr(
                "Constant",
                present.get(1).copied().unwrap_or("value"),
                format!("exactly one value attribute is required, got {}", present.len()),
            )));
        }
        let t = (|| -> Result<Tensor, IrError> {
            let t = match present[0] {
                "value" | "sparse_value" => attrs.req_tensor(present[0])?,
                "value_float" => Tensor::scalar_f32(attrs.req_float("value_float")?),
                "value_floats" => Tensor::from_f32s(attrs.floats("value_floats")?.unwrap_or_default()),
                "value_int" => Tensor::scalar_i64(attrs.req_int("value_int")?),
                "value_ints" => Tensor::from_i64s(attrs.req_ints("value_ints")?),
                "value_string" => {
                    let s = attrs.req_string("value_string")?;
                    Tensor::String(carbide_ir::ndarray::arr0(s).into_dyn())
                }
                _ => {
                    let v = attrs.strings("value_strings")?.unwrap_or_default();
                    Tensor::String(carbide_ir::ndarray::Array1::from(v).into_dyn())
                }
            };
            attrs.finish()?;
            Ok(t)
        })()
        .map_err(at)?;
        Ok(t)
    }

    /// How many nodes a call of function `key` expands to (saturating),
    /// rejecting recursion.
    fn expanded_size(
        &self,
        key: &FnKey,
        stack: &mut Vec<FnKey>,
        memo: &mut HashMap<FnKey, u64>,
    ) -> Result<u64, FrontendError> {
        if let Some(&n) = memo.get(key) {
            return Ok(n);
        }
        let Some(f) = self.functions.get(key).copied() else {
            return Ok(1);
        };
        if stack.contains(key) {
            return Err(malformed(format!(
                "function '{}' (domain '{}') calls itself",
                key.1, key.0
            )));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(malformed(format!(
                "function calls are nested more than {MAX_DEPTH} deep in '{}'",
                key.1
            )));
        }
        stack.push(key.clone());
        let mut total: u64 = 0;
        for b in &f.node {
            let bkey = (
                norm_domain(b.domain.as_deref().unwrap_or("")).to_string(),
                b.op_type.clone().unwrap_or_default(),
                b.overload.clone().unwrap_or_default(),
            );
            total = total.saturating_add(self.expanded_size(&bkey, stack, memo)?);
            if total > MAX_NODES as u64 {
                break;
            }
        }
        stack.pop();
        memo.insert(key.clone(), total);
        Ok(total)
    }

    /// Appends `n` to `out`, inlining it if it calls a model-local function.
    fn expand(&self, n: FlatNode, stack: &mut Vec<FnKey>, out: &mut Vec<FlatNode>) -> Result<(), FrontendError> {
        let key = (n.domain.clone(), n.op_type.clone(), n.overload.clone());
        let count = self.node_count.get() + 1;
        if count > MAX_NODES {
            return Err(malformed(format!(
                "the model expands to more than {MAX_NODES} nodes (at node '{}')",
                n.name
            )));
        }
        self.node_count.set(count);
        let Some(f) = self.functions.get(&key).copied() else {
            out.push(n);
            return Ok(());
        };
        if stack.is_empty() {
            // Check the call's full expansion before materializing any of it.
            let size = self.expanded_size(&key, &mut Vec::new(), &mut HashMap::new())?;
            if size.saturating_add(count as u64) > MAX_NODES as u64 {
                return Err(malformed(format!(
                    "node '{}' calls function '{}', which expands to more than {MAX_NODES} nodes",
                    n.name, n.op_type
                )));
            }
        }
        if stack.contains(&key) {
            return Err(malformed(format!(
                "function '{}' (domain '{}') calls itself (through node '{}')",
                n.op_type, n.domain, n.name
            )));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(malformed(format!(
                "function calls are nested more than {MAX_DEPTH} deep at node '{}'",
                n.name
            )));
        }
        if n.inputs.len() > f.input.len() || n.outputs.len() > f.output.len() {
            return Err(malformed(format!(
                "node '{}' calls function '{}' with {} inputs and {} outputs; it takes {} and {}",
                n.name,
                n.op_type,
                n.inputs.len(),
                n.outputs.len(),
                f.input.len(),
                f.output.len()
            )));
        }
        let prefix = format!("{}/", n.name);
        let mut map: HashMap<String, String> = HashMap::new();
        for (i, formal) in f.input.iter().enumerate() {
            map.insert(formal.clone(), n.inputs.get(i).cloned().unwrap_or_default());
        }
        for (i, formal) in f.output.iter().enumerate() {
            match n.outputs.get(i).filter(|o| !o.is_empty()) {
                Some(actual) => map.insert(formal.clone(), actual.clone()),
                None => map.insert(formal.clone(), format!("{prefix}{formal}")),
            };
        }
        let rename = |s: &str| -> String {
            if s.is_empty() {
                return String::new();
            }
            map.get(s).cloned().unwrap_or_else(|| format!("{prefix}{s}"))
        };
        let caller_attrs = &n.attrs;
        let resolve = |a: &AttributeProto| -> Option<AttributeProto> {
            let r = a.ref_attr_name.as_deref().filter(|r| !r.is_empty());
            let Some(r) = r else { return Some(a.clone()) };
            let found = caller_attrs
                .iter()
                .find(|c| c.name.as_deref() == Some(r))
                .or_else(|| f.attribute_proto.iter().find(|d| d.name.as_deref() == Some(r)))?;
            let mut v = found.clone();
            v.name = a.name.clone();
            v.ref_attr_name = None;
            Some(v)
        };
        let mut fopsets = (*self.model_opsets).clone();
        for o in &f.opset_import {
            fopsets.insert(
                norm_domain(o.domain.as_deref().unwrap_or("")).to_string(),
                o.version.unwrap_or(0),
            );
        }
        let fopsets = Rc::new(fopsets);
        stack.push(key);
        for (j, b) in f.node.iter().enumerate() {
            let op_type = b.op_type.clone().unwrap_or_default();
            let local = b
                .name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{op_type}_{j}"));
            let body = FlatNode {
                name: format!("{prefix}{local}"),
                named: true,
                domain: norm_domain(b.domain.as_deref().unwrap_or("")).to_string(),
                overload: b.overload.clone().unwrap_or_default(),
                op_type,
                inputs: b.input.iter().map(|s| rename(s)).collect(),
                outputs: b.output.iter().map(|s| rename(s)).collect(),
                attrs: substitute_attrs(&b.attribute, &rename, &resolve),
                opsets: fopsets.clone(),
            };
            self.expand(body, stack, out)?;
        }
        stack.pop();
        Ok(())
    }
}

/// Adds the node's name, op and opset to an error met while converting it.
fn in_node(e: FrontendError, node: &str, ctx: &str) -> FrontendError {
    match e {
        FrontendError::Ir(e) => FrontendError::Ir(e.at_node(node, ctx)),
        FrontendError::Invalid(m) => FrontendError::Invalid(format!("node '{node}' ({ctx}): {m}")),
        FrontendError::Unsupported(m) => FrontendError::Unsupported(format!("node '{node}' ({ctx}): {m}")),
        e => e,
    }
}

/// Makes generated node names unique (`Relu_3` may also be a real name).
fn uniquify_names(nodes: &mut [FlatNode]) {
    let mut used: HashSet<String> = nodes.iter().filter(|n| n.named).map(|n| n.name.clone()).collect();
    for n in nodes.iter_mut().filter(|n| !n.named) {
        let mut name = n.name.clone();
        let mut k = 1;
        while used.contains(&name) {
            name = format!("{}_{k}", n.name);
            k += 1;
        }
        used.insert(name.clone());
        n.name = name;
    }
}

/// A stable topological order of `nodes` (file order wherever the data flow
/// allows). A use of a name that nothing defines is an error naming both.
fn topo_order(nodes: &[FlatNode], graph: &Graph, outer: &BTreeSet<String>) -> Result<Vec<usize>, FrontendError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut indegree = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut used: BTreeSet<String> = n.inputs.iter().filter(|s| !s.is_empty()).cloned().collect();
        for a in &n.attrs {
            attr_free_vars(a, &mut used);
        }
        let mut deps = BTreeSet::new();
        for u in &used {
            if graph.initializers.contains_key(u) || graph.inputs.iter().any(|x| &x.name == u) {
                continue;
            }
            if let Some(&p) = producer.get(u.as_str()) {
                if p == i {
                    return Err(malformed(format!(
                        "the graph has a cycle: node '{}' ({}) uses its own output '{u}'",
                        n.name, n.op_type
                    )));
                }
                deps.insert(p);
            } else if !outer.contains(u) {
                return Err(malformed(format!(
                    "node '{}' ({}) uses '{u}', which is never defined",
                    n.name, n.op_type
                )));
            }
        }
        indegree[i] = deps.len();
        for p in deps {
            users[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len()).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck = (0..nodes.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
        let n = nodes
            .get(stuck)
            .map(|n| (n.name.as_str(), n.op_type.as_str()))
            .unwrap_or(("?", "?"));
        return Err(malformed(format!(
            "the graph has a cycle through node '{}' ({})",
            n.0, n.1
        )));
    }
    Ok(order)
}

/// Decodes every tensor and type in a model without parsing ops: a check
/// that a file is well formed as far as the importer's data layer goes.
/// Returns the number of tensors decoded.
pub fn check_model_data(mp: &ModelProto, base_dir: Option<&Path>) -> Result<usize, FrontendError> {
    fn graph(g: &GraphProto, base_dir: Option<&Path>, count: &mut usize) -> Result<(), FrontendError> {
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            value_type("value", v.r#type.as_ref())?;
        }
        for t in &g.initializer {
            decode(t, base_dir)?;
            *count += 1;
        }
        for s in &g.sparse_initializer {
            decode_sparse(s, base_dir)?;
            *count += 1;
        }
        for n in &g.node {
            node(n, base_dir, count)?;
        }
        Ok(())
    }
    fn node(n: &NodeProto, base_dir: Option<&Path>, count: &mut usize) -> Result<(), FrontendError> {
        for a in &n.attribute {
            if let Some(t) = &a.t {
                decode(t, base_dir)?;
                *count += 1;
            }
            if let Some(s) = &a.sparse_tensor {
                decode_sparse(s, base_dir)?;
                *count += 1;
            }
            for t in &a.tensors {
                decode(t, base_dir)?;
                *count += 1;
            }
            if let Some(tp) = &a.tp {
                value_type("attribute", Some(tp))?;
            }
            for g in a.g.as_deref().into_iter().chain(&a.graphs) {
                graph(g, base_dir, count)?;
            }
        }
        Ok(())
    }
    let mut count = 0;
    if let Some(g) = &mp.graph {
        graph(g, base_dir, &mut count)?;
    }
    for f in &mp.functions {
        for n in &f.node {
            node(n, base_dir, &mut count)?;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(name: &str, inputs: &[&str], outputs: &[&str]) -> FlatNode {
        FlatNode {
            name: name.into(),
            named: true,
            op_type: "Op".into(),
            domain: String::new(),
            overload: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
            opsets: Rc::new(BTreeMap::new()),
        }
    }

    #[test]
    fn topo_order_is_stable_and_sorts_out_of_order_files() {
        let graph = Graph {
            inputs: vec![ValueInfo {
                name: "x".into(),
                ty: carbide_ir::ValueType::Unknown,
            }],
            ..Default::default()
        };
        // Already ordered: unchanged.
        let nodes = vec![
            flat("a", &["x"], &["a"]),
            flat("b", &["x"], &["b"]),
            flat("c", &["a", "b"], &["c"]),
        ];
        assert_eq!(topo_order(&nodes, &graph, &BTreeSet::new()).unwrap(), vec![0, 1, 2]);
        // Reversed file: producers move up, independent nodes keep file order.
        let nodes = vec![
            flat("c", &["a", "b"], &["c"]),
            flat("i", &["x"], &["i"]),
            flat("b", &["a"], &["b"]),
            flat("a", &["x"], &["a"]),
        ];
        assert_eq!(topo_order(&nodes, &graph, &BTreeSet::new()).unwrap(), vec![1, 3, 2, 0]);
        // Names from enclosing graphs need no producer; unknown ones are errors.
        let outer: BTreeSet<String> = ["o".to_string()].into();
        assert!(topo_order(&[flat("u", &["o", ""], &["u"])], &graph, &outer).is_ok());
        let e = topo_order(&[flat("u", &["zz"], &["u"])], &graph, &BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'u'") && e.contains("'zz'"), "{e}");
    }

    #[test]
    fn subgraph_free_variables_are_dependencies() {
        let graph = Graph::default();
        let body = GraphProto {
            node: vec![NodeProto {
                input: vec!["late".into(), "inner".into()],
                output: vec!["r".into()],
                op_type: Some("Add".into()),
                ..Default::default()
            }],
            input: vec![crate::proto::ValueInfoProto {
                name: Some("inner".into()),
                ..Default::default()
            }],
            output: vec![crate::proto::ValueInfoProto {
                name: Some("r".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut user = flat("if", &["cond"], &["y"]);
        user.attrs.push(AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(attr_type::GRAPH),
            g: Some(Box::new(body)),
            ..Default::default()
        });
        let nodes = vec![user, flat("mk", &[], &["late"]), flat("c", &[], &["cond"])];
        assert_eq!(topo_order(&nodes, &graph, &BTreeSet::new()).unwrap(), vec![1, 2, 0]);
    }
}
