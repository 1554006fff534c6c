//! String kernels and TfIdfVectorizer.

use super::check_elems;
use crate::error::{invalid, unsupported, OpResult};
use crate::ops::{dtype_unsupported, tensor_in, tensors_out};
use carbide_ir::ops::misc::{CaseChange, StringNormalizerAttrs, TfIdfAttrs, TfIdfMode, TfIdfPool};
use carbide_ir::ops::MiscOp;
use carbide_ir::{Tensor, Value};
use ndarray::{ArrayD, IxDyn};
use std::collections::{HashMap, HashSet};

fn strings<'a>(t: &'a Tensor, what: &str) -> OpResult<&'a ArrayD<String>> {
    match t {
        Tensor::String(a) => Ok(a),
        t => Err(invalid(format!("{what} must be a string tensor, got {}", t.dtype()))),
    }
}

fn string_tensor(shape: &[usize], v: Vec<String>) -> OpResult<Tensor> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map(Tensor::String)
        .map_err(|_| invalid("internal: element count does not match shape"))
}

/// Numpy broadcasting of two concrete shapes.
fn broadcast(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                (x, y) => Err(invalid(format!(
                    "cannot broadcast shapes {a:?} and {b:?} (dims {x} and {y})"
                ))),
            }
        })
        .collect()
}

fn normalize(a: &StringNormalizerAttrs, x: &Tensor) -> OpResult<Tensor> {
    let xs = strings(x, "X")?;
    let shape = xs.shape();
    let two_d = match shape.len() {
        1 => false,
        2 if shape[0] == 1 => true,
        _ => {
            return Err(invalid(format!(
                "StringNormalizer input must be [C] or [1, C], got {shape:?}"
            )))
        }
    };
    let fold = |s: &str| s.to_lowercase();
    let stops: HashSet<String> = if a.case_sensitive {
        a.stopwords.iter().cloned().collect()
    } else {
        a.stopwords.iter().map(|s| fold(s)).collect()
    };
    let mut out: Vec<String> = xs
        .iter()
        .filter(|s| {
            if a.case_sensitive {
                !stops.contains(s.as_str())
            } else {
                !stops.contains(&fold(s))
            }
        })
        .map(|s| match a.case_change {
            CaseChange::Lower => s.to_lowercase(),
            CaseChange::Upper => s.to_uppercase(),
            CaseChange::None => s.clone(),
        })
        .collect();
    if out.is_empty() {
        out.push(String::new());
    }
    let n = out.len();
    if two_d {
        string_tensor(&[1, n], out)
    } else {
        string_tensor(&[n], out)
    }
}

/// Python's `str.split()` (runs of whitespace, no empty pieces) with maxsplit.
fn split_ws(s: &str, maxsplit: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if maxsplit == Some(out.len()) {
            out.push(rest.to_string());
            break;
        }
        match rest.find(char::is_whitespace) {
            None => {
                out.push(rest.to_string());
                break;
            }
            Some(i) => {
                out.push(rest[..i].to_string());
                rest = rest[i..].trim_start();
            }
        }
    }
    out
}

fn split(delimiter: &Option<String>, maxsplit: Option<i64>, x: &Tensor) -> OpResult<Vec<Tensor>> {
    let xs = strings(x, "X")?;
    let maxsplit = maxsplit.map(|m| m.max(0) as usize);
    let parts: Vec<Vec<String>> = xs
        .iter()
        .map(|s| match delimiter.as_deref() {
            None | Some("") => split_ws(s, maxsplit),
            Some(d) => match maxsplit {
                Some(m) => s.splitn(m.saturating_add(1), d).map(str::to_string).collect(),
                None => s.split(d).map(str::to_string).collect(),
            },
        })
        .collect();
    let width = parts.iter().map(Vec::len).max().unwrap_or(0);
    let mut oshape = xs.shape().to_vec();
    oshape.push(width);
    check_elems(&oshape)?;
    let lens: Vec<i64> = parts.iter().map(|p| p.len() as i64).collect();
    let mut flat = Vec::with_capacity(parts.len() * width);
    for mut p in parts {
        p.resize(width, String::new());
        flat.extend(p);
    }
    let len_t = ArrayD::from_shape_vec(IxDyn(xs.shape()), lens).map_err(|_| invalid("internal: shape"))?;
    Ok(vec![string_tensor(&oshape, flat)?, Tensor::I64(len_t)])
}

fn regex_full_match(pattern: &str, x: &Tensor) -> OpResult<Tensor> {
    let xs = strings(x, "X")?;
    let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 24)
        .build()
        .map_err(|e| invalid(format!("bad pattern '{pattern}': {e}")))?;
    Ok(Tensor::Bool(xs.map(|s| re.is_match(s))))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Tok {
    I(i64),
    S(String),
}

/// One trie level of the n-gram pool: `id` is 1-based (0 = no n-gram ends here).
#[derive(Default)]
struct Gram {
    id: usize,
    next: HashMap<Tok, Gram>,
}

fn build_trie(a: &TfIdfAttrs) -> Gram {
    let pool: Vec<Tok> = match &a.pool {
        TfIdfPool::Ints(v) => v.iter().map(|&i| Tok::I(i)).collect(),
        TfIdfPool::Strings(v) => v.iter().map(|s| Tok::S(s.clone())).collect(),
    };
    let mut root = Gram::default();
    let mut id = 1;
    for (level, &start) in a.ngram_counts.iter().enumerate() {
        let size = level + 1;
        let end = a
            .ngram_counts
            .get(level + 1)
            .copied()
            .unwrap_or(pool.len())
            .min(pool.len());
        let count = end.saturating_sub(start) / size;
        if size < a.min_gram_length || size > a.max_gram_length {
            id += count;
            continue;
        }
        for g in 0..count {
            let toks = &pool[start + g * size..start + (g + 1) * size];
            let mut node = &mut root;
            for t in toks {
                node = node.next.entry(t.clone()).or_default();
            }
            node.id = id;
            id += 1;
        }
    }
    root
}

fn tfidf(a: &TfIdfAttrs, x: &Tensor) -> OpResult<Tensor> {
    let toks: Vec<Tok> = match (x, &a.pool) {
        (Tensor::String(s), TfIdfPool::Strings(_)) => s.iter().map(|v| Tok::S(v.clone())).collect(),
        (Tensor::I32(_) | Tensor::I64(_), TfIdfPool::Ints(_)) => {
            x.to_i64_vec().unwrap_or_default().into_iter().map(Tok::I).collect()
        }
        (Tensor::String(_) | Tensor::I32(_) | Tensor::I64(_), _) => {
            return Err(invalid(
                "input dtype does not match the pool (pool_int64s vs pool_strings)",
            ))
        }
        _ => return Err(dtype_unsupported("TfIdfVectorizer", x)),
    };
    let (rows, cols, oshape) = match x.shape() {
        [] => (1, 1, vec![a.output_size()]),
        [c] => (1, *c, vec![a.output_size()]),
        [b, c] => (*b, *c, vec![*b, a.output_size()]),
        s => return Err(invalid(format!("input must be [C] or [B, C], got {s:?}"))),
    };
    let osize = a.output_size();
    check_elems(&oshape)?;
    let root = build_trie(a);
    let mut freq = vec![0u64; rows * osize];
    for row in 0..rows {
        let xs = &toks[row * cols..(row + 1) * cols];
        let mut start_size = a.min_gram_length;
        for skip in 1..=a.max_skip_count + 1 {
            for s in 0..cols {
                if s + skip * (start_size - 1) >= cols {
                    break;
                }
                let mut node = &root;
                let mut size = 1;
                let mut item = s;
                while !node.next.is_empty() && size <= a.max_gram_length && item < cols {
                    let Some(hit) = node.next.get(&xs[item]) else {
                        break;
                    };
                    if size >= start_size && hit.id != 0 {
                        let col = *a
                            .ngram_indexes
                            .get(hit.id - 1)
                            .ok_or_else(|| invalid(format!("n-gram {} has no entry in ngram_indexes", hit.id - 1)))?;
                        freq[row * osize + col] += 1;
                    }
                    node = hit;
                    size += 1;
                    item += skip;
                }
            }
            // Unigrams do not depend on the skip distance: count them once.
            if start_size == 1 {
                start_size = 2;
                if start_size > a.max_gram_length {
                    break;
                }
            }
        }
    }
    let w = a.weights.as_deref();
    let y: Vec<f32> = freq
        .iter()
        .enumerate()
        .map(|(p, &f)| {
            let wi = w.and_then(|w| w.get(p % osize.max(1)).copied());
            match a.mode {
                TfIdfMode::Tf => f as f32,
                TfIdfMode::Idf => {
                    if f > 0 {
                        wi.unwrap_or(1.0)
                    } else {
                        0.0
                    }
                }
                TfIdfMode::TfIdf => wi.unwrap_or(1.0) * f as f32,
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&oshape), y)
        .map(Tensor::F32)
        .map_err(|_| invalid("internal: shape"))
}

pub(super) fn eval(op: &MiscOp, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let outs = match op {
        MiscOp::StringNormalizer(a) => vec![normalize(a, x)?],
        MiscOp::StringConcat => {
            let a = strings(x, "X")?;
            let b = strings(tensor_in(inputs, 1)?, "Y")?;
            let shape = broadcast(a.shape(), b.shape())?;
            let (av, bv) = match (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape))) {
                (Some(av), Some(bv)) => (av, bv),
                _ => return Err(unsupported("StringConcat broadcast")),
            };
            let v: Vec<String> = av.iter().zip(bv.iter()).map(|(p, q)| format!("{p}{q}")).collect();
            vec![string_tensor(&shape, v)?]
        }
        MiscOp::StringSplit { delimiter, maxsplit } => split(delimiter, *maxsplit, x)?,
        MiscOp::RegexFullMatch { pattern } => vec![regex_full_match(pattern, x)?],
        MiscOp::TfIdfVectorizer(a) => vec![tfidf(a, x)?],
        _ => return Err(invalid("not a string op")),
    };
    Ok(tensors_out(outs))
}
