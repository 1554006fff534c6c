//! Einsum equations, parsed once at import so the kernel and inference share
//! one validated form.

use crate::error::{IrError, IrResult};
use std::fmt;

/// One subscript of an operand or of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Term {
    /// A letter label (`a`-`z`, `A`-`Z`).
    Label(char),
    /// `...`: the operand's leading/trailing dims not named by letters.
    Ellipsis,
}

/// A parsed einsum equation: one term list per input and the output terms
/// (explicit after `->`, or the implicit numpy order).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EinsumEq {
    pub inputs: Vec<Vec<Term>>,
    pub output: Vec<Term>,
    /// Whether the output was written after `->`.
    pub explicit: bool,
}

impl fmt::Display for EinsumEq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let term = |ts: &[Term]| -> String {
            ts.iter()
                .map(|t| match t {
                    Term::Label(c) => c.to_string(),
                    Term::Ellipsis => "...".to_string(),
                })
                .collect()
        };
        let ins: Vec<String> = self.inputs.iter().map(|t| term(t)).collect();
        write!(f, "{}->{}", ins.join(","), term(&self.output))
    }
}

fn parse_terms(s: &str, err: &dyn Fn(String) -> IrError) -> IrResult<Vec<Term>> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut i = 0;
    let mut seen_ellipsis = false;
    while i < cs.len() {
        let c = cs[i];
        if c == '.' {
            if cs.get(i + 1) != Some(&'.') || cs.get(i + 2) != Some(&'.') {
                return Err(err(format!("'.' must be part of '...' in '{s}'")));
            }
            if seen_ellipsis {
                return Err(err(format!("more than one '...' in '{s}'")));
            }
            seen_ellipsis = true;
            out.push(Term::Ellipsis);
            i += 3;
        } else if c.is_ascii_alphabetic() {
            out.push(Term::Label(c));
            i += 1;
        } else {
            return Err(err(format!("invalid character '{c}' in '{s}'")));
        }
    }
    Ok(out)
}

impl EinsumEq {
    /// Parses and validates `equation` (whitespace is ignored).
    pub fn parse(equation: &str) -> IrResult<EinsumEq> {
        let err = |m: String| IrError::bad_attr("Einsum", "equation", m);
        let (lhs, rhs) = match equation.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (equation, None),
        };
        if rhs.is_some_and(|r| r.contains("->")) {
            return Err(err("more than one '->'".into()));
        }
        let inputs = lhs
            .split(',')
            .map(|t| parse_terms(t, &err))
            .collect::<IrResult<Vec<_>>>()?;
        let any_ellipsis = inputs.iter().any(|t| t.contains(&Term::Ellipsis));
        let (output, explicit) = match rhs {
            Some(r) => {
                let out = parse_terms(r, &err)?;
                for (i, t) in out.iter().enumerate() {
                    if out[..i].contains(t) {
                        return Err(err(format!("output subscript {t:?} repeats")));
                    }
                    match t {
                        Term::Ellipsis if !any_ellipsis => {
                            return Err(err("output has '...' but no input does".into()))
                        }
                        Term::Label(c) if !inputs.iter().any(|ts| ts.contains(t)) => {
                            return Err(err(format!("output label '{c}' appears in no input")))
                        }
                        _ => {}
                    }
                }
                (out, true)
            }
            None => {
                // numpy's implicit mode: '...' first, then the labels that
                // occur exactly once, in alphabetical order.
                let mut counts = std::collections::BTreeMap::new();
                for t in inputs.iter().flatten() {
                    if let Term::Label(c) = t {
                        *counts.entry(*c).or_insert(0usize) += 1;
                    }
                }
                let mut out = Vec::new();
                if any_ellipsis {
                    out.push(Term::Ellipsis);
                }
                // BTreeMap orders uppercase before lowercase, as numpy does.
                out.extend(counts.into_iter().filter(|(_, n)| *n == 1).map(|(c, _)| Term::Label(c)));
                (out, false)
            }
        };
        Ok(EinsumEq {
            inputs,
            output,
            explicit,
        })
    }

    /// Number of letter labels in an operand's term list.
    pub fn letters(terms: &[Term]) -> usize {
        terms.iter().filter(|t| matches!(t, Term::Label(_))).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_explicit_and_implicit() {
        let e = EinsumEq::parse("bij, bjk -> bik").unwrap();
        assert_eq!(e.inputs.len(), 2);
        assert_eq!(e.output, vec![Term::Label('b'), Term::Label('i'), Term::Label('k')]);
        let e = EinsumEq::parse("ij,jk").unwrap();
        assert_eq!(e.output, vec![Term::Label('i'), Term::Label('k')]);
        let e = EinsumEq::parse("...ii ->...i").unwrap();
        assert_eq!(e.inputs[0], vec![Term::Ellipsis, Term::Label('i'), Term::Label('i')]);
        let e = EinsumEq::parse("->").unwrap();
        assert_eq!(e.inputs, vec![Vec::<Term>::new()]);
        assert!(e.output.is_empty());
        let e = EinsumEq::parse("i,i").unwrap();
        assert!(e.output.is_empty());
    }

    #[test]
    fn rejects_bad_equations() {
        assert!(EinsumEq::parse("ij->k").is_err());
        assert!(EinsumEq::parse("i.j->ij").is_err());
        assert!(EinsumEq::parse("ij->ii").is_err());
        assert!(EinsumEq::parse("i1->i").is_err());
        assert!(EinsumEq::parse("ij->...").is_err());
    }
}
