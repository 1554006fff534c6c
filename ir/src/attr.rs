//! Raw node attributes as the frontend decodes them, and typed getters the
//! op parsers use to turn them into typed op structs.

use crate::error::{IrError, IrResult};
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::types::ValueType;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Graph(Box<Graph>),
    Type(ValueType),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
    Types(Vec<ValueType>),
}

impl Attr {
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Type(_) => "type",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Tensors(_) => "tensors",
            Attr::Graphs(_) => "graphs",
            Attr::Types(_) => "types",
        }
    }
}

/// The attributes of one node, with the op type for error messages.
/// Getters take the attribute out, so a parser can check afterwards that
/// nothing unknown was left (see [`Attrs::finish`]).
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    pub op: String,
    pub items: Vec<(String, Attr)>,
}

impl Attrs {
    pub fn new(op: impl Into<String>, items: Vec<(String, Attr)>) -> Self {
        Attrs { op: op.into(), items }
    }

    pub fn has(&self, name: &str) -> bool {
        self.items.iter().any(|(n, _)| n == name)
    }

    /// Removes and returns an attribute.
    pub fn take(&mut self, name: &str) -> Option<Attr> {
        let i = self.items.iter().position(|(n, _)| n == name)?;
        Some(self.items.remove(i).1)
    }

    fn wrong(&self, name: &str, want: &str, got: &Attr) -> IrError {
        IrError::bad_attr(&self.op, name, format!("expected {want}, got {}", got.kind()))
    }

    pub fn int(&mut self, name: &str) -> IrResult<Option<i64>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(v)),
            Some(a) => Err(self.wrong(name, "int", &a)),
        }
    }

    pub fn int_or(&mut self, name: &str, default: i64) -> IrResult<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float(&mut self, name: &str) -> IrResult<Option<f32>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(v)),
            // Some exporters write integral floats as ints.
            Some(Attr::Int(v)) => Ok(Some(v as f32)),
            Some(a) => Err(self.wrong(name, "float", &a)),
        }
    }

    pub fn float_or(&mut self, name: &str, default: f32) -> IrResult<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn ints(&mut self, name: &str) -> IrResult<Option<Vec<i64>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(vec![v])),
            Some(a) => Err(self.wrong(name, "ints", &a)),
        }
    }

    pub fn floats(&mut self, name: &str) -> IrResult<Option<Vec<f32>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(Attr::Float(v)) => Ok(Some(vec![v])),
            Some(a) => Err(self.wrong(name, "floats", &a)),
        }
    }

    /// A string attribute, decoded as UTF-8.
    pub fn string(&mut self, name: &str) -> IrResult<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::String(v)) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| IrError::bad_attr(&self.op, name, "not valid UTF-8")),
            Some(a) => Err(self.wrong(name, "string", &a)),
        }
    }

    pub fn string_or(&mut self, name: &str, default: &str) -> IrResult<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn strings(&mut self, name: &str) -> IrResult<Option<Vec<String>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => v
                .into_iter()
                .map(|s| String::from_utf8(s).map_err(|_| IrError::bad_attr(&self.op, name, "not valid UTF-8")))
                .collect::<IrResult<Vec<_>>>()
                .map(Some),
            Some(a) => Err(self.wrong(name, "strings", &a)),
        }
    }

    pub fn tensor(&mut self, name: &str) -> IrResult<Option<Tensor>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Tensor(v)) => Ok(Some(v)),
            Some(a) => Err(self.wrong(name, "tensor", &a)),
        }
    }

    pub fn graph(&mut self, name: &str) -> IrResult<Option<Graph>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Graph(g)) => Ok(Some(*g)),
            Some(a) => Err(self.wrong(name, "graph", &a)),
        }
    }

    fn missing(&self, name: &str) -> IrError {
        IrError::bad_attr(&self.op, name, "required attribute is missing")
    }

    pub fn req_int(&mut self, name: &str) -> IrResult<i64> {
        self.int(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn req_float(&mut self, name: &str) -> IrResult<f32> {
        self.float(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn req_ints(&mut self, name: &str) -> IrResult<Vec<i64>> {
        self.ints(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn req_string(&mut self, name: &str) -> IrResult<String> {
        self.string(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn req_tensor(&mut self, name: &str) -> IrResult<Tensor> {
        self.tensor(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn req_graph(&mut self, name: &str) -> IrResult<Graph> {
        self.graph(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn type_(&mut self, name: &str) -> IrResult<Option<ValueType>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Type(t)) => Ok(Some(t)),
            Some(a) => Err(self.wrong(name, "type", &a)),
        }
    }

    /// Errors if an attribute the parser did not consume is left, so that a
    /// typo or an unsupported attribute is never silently ignored.
    pub fn finish(&self) -> IrResult<()> {
        match self.items.first() {
            None => Ok(()),
            Some((n, _)) => Err(IrError::bad_attr(&self.op, n, "unknown or unsupported attribute")),
        }
    }
}
