//! Sliding-window geometry shared by inference and the runtime kernels:
//! output extents and the pads actually applied, per spatial dim.

use super::ConvTransposeAttrs;

/// The ONNX `auto_pad` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    pub fn parse(s: &str) -> Option<AutoPad> {
        Some(match s {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            _ => return None,
        })
    }
}

/// The resolved geometry of one spatial dim. Pads are signed because
/// ConvTranspose with an explicit `output_shape` may need negative ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DimGeom {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: i64,
    pub pad_end: i64,
    pub out: usize,
}

/// Window attributes with defaults filled in, checked against a spatial rank.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub auto_pad: AutoPad,
    /// Begin pads then end pads, 2 x spatial rank.
    pub pads: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
}

/// Largest extent accepted for any window parameter (guards overflow).
const MAX_EXTENT: i64 = 1 << 40;

fn fill(name: &str, v: &Option<Vec<i64>>, n: usize, default: usize) -> Result<Vec<usize>, String> {
    match v {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n => v
            .iter()
            .map(|&x| {
                if (0..=MAX_EXTENT).contains(&x) {
                    Ok(x as usize)
                } else {
                    Err(format!("{name} value {x} out of range"))
                }
            })
            .collect(),
        Some(v) => Err(format!("{name} has {} entries, expected {n}", v.len())),
    }
}

impl Window {
    pub fn new(
        nsp: usize,
        auto_pad: AutoPad,
        pads: &Option<Vec<i64>>,
        strides: &Option<Vec<i64>>,
        dilations: &Option<Vec<i64>>,
        ceil_mode: bool,
    ) -> Result<Window, String> {
        let pads = fill("pads", pads, 2 * nsp, 0)?;
        let strides = fill("strides", strides, nsp, 1)?;
        let dilations = fill("dilations", dilations, nsp, 1)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err("strides and dilations must be >= 1".into());
        }
        Ok(Window {
            auto_pad,
            pads,
            strides,
            dilations,
            ceil_mode,
        })
    }

    /// Geometry of spatial dim `i` with input extent `input` and kernel `k`.
    pub fn dim(&self, i: usize, input: usize, k: usize) -> Result<DimGeom, String> {
        let nsp = self.strides.len();
        let (s, d) = (self.strides[i], self.dilations[i]);
        if k == 0 || k as i64 > MAX_EXTENT || input as i64 > MAX_EXTENT {
            return Err(format!(
                "kernel extent {k} / input extent {input} out of range in spatial dim {i}"
            ));
        }
        let ek = (k - 1) * d + 1;
        let (pb, pe) = match self.auto_pad {
            AutoPad::NotSet => (self.pads[i], self.pads[nsp + i]),
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(s);
                let total = ((out.max(1) - 1) * s + ek).saturating_sub(input);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = input + pb + pe;
        if padded < ek {
            return Err(format!(
                "kernel extent {ek} is larger than the padded input {padded} in spatial dim {i}"
            ));
        }
        let out = match self.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => input.div_ceil(s),
            _ if self.ceil_mode => {
                let mut out = (padded - ek).div_ceil(s) + 1;
                // The last window must start inside the input or the begin pad.
                if (out - 1) * s >= input + pb {
                    out -= 1;
                }
                out
            }
            _ => (padded - ek) / s + 1,
        };
        Ok(DimGeom {
            input,
            kernel: k,
            stride: s,
            dilation: d,
            pad_begin: pb as i64,
            pad_end: pe as i64,
            out,
        })
    }

    /// Geometry of every spatial dim.
    pub fn resolve(&self, input: &[usize], kernel: &[usize]) -> Result<Vec<DimGeom>, String> {
        if input.len() != self.strides.len() || kernel.len() != input.len() {
            return Err(format!(
                "window has {} spatial dims, input has {}, kernel has {}",
                self.strides.len(),
                input.len(),
                kernel.len()
            ));
        }
        (0..input.len()).map(|i| self.dim(i, input[i], kernel[i])).collect()
    }
}

/// ConvTranspose geometry of spatial dim `i` of `nsp`: the output extent and
/// the pads removed from the full transposed result.
pub fn conv_transpose_dim(
    a: &ConvTransposeAttrs,
    nsp: usize,
    i: usize,
    input: usize,
    k: usize,
) -> Result<DimGeom, String> {
    let c = &a.conv;
    let win = Window::new(nsp, c.auto_pad, &c.pads, &c.strides, &c.dilations, false)?;
    let op = fill("output_padding", &a.output_padding, nsp, 0)?;
    let (s, d) = (win.strides[i] as i64, win.dilations[i] as i64);
    if k == 0 || k as i64 > MAX_EXTENT || input as i64 > MAX_EXTENT || input == 0 {
        return Err(format!(
            "kernel extent {k} / input extent {input} out of range in spatial dim {i}"
        ));
    }
    let ek = (k as i64 - 1) * d + 1;
    let full = s * (input as i64 - 1) + op[i] as i64 + ek;
    let target = match &a.output_shape {
        Some(os) if os.len() == nsp || os.len() == nsp + 2 => Some(os[os.len() - nsp + i]),
        Some(os) => return Err(format!("output_shape has {} entries for {nsp} spatial dims", os.len())),
        None if matches!(c.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) => Some(input as i64 * s),
        None => None,
    };
    let (pb, pe) = match target {
        Some(t) => {
            let total = full - t;
            let half = total.div_euclid(2);
            if c.auto_pad == AutoPad::SameUpper {
                (half, total - half)
            } else {
                (total - half, half)
            }
        }
        None if c.auto_pad == AutoPad::Valid => (0, 0),
        None => (win.pads[i] as i64, win.pads[nsp + i] as i64),
    };
    let out = full - pb - pe;
    if !(1..=MAX_EXTENT).contains(&out) {
        return Err(format!("output extent {out} out of range in spatial dim {i}"));
    }
    Ok(DimGeom {
        input,
        kernel: k,
        stride: s as usize,
        dilation: d as usize,
        pad_begin: pb,
        pad_end: pe,
        out: out as usize,
    })
}

/// MaxUnpool's default output extent: `(in - 1) * stride + kernel - pads`.
pub fn unpool_dim(
    kernel: &[i64],
    pads: &Option<Vec<i64>>,
    strides: &Option<Vec<i64>>,
    i: usize,
    input: usize,
) -> Result<usize, String> {
    let nsp = kernel.len();
    let pads = fill("pads", pads, 2 * nsp, 0)?;
    let strides = fill("strides", strides, nsp, 1)?;
    let v = (input as i64 - 1) * strides[i] as i64 + kernel[i] - pads[i] as i64 - pads[nsp + i] as i64;
    if !(0..=MAX_EXTENT).contains(&v) {
        return Err(format!("output extent {v} out of range in spatial dim {i}"));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pads_split() {
        let w = Window::new(1, AutoPad::SameUpper, &None, &Some(vec![2]), &None, false).unwrap();
        let g = w.dim(0, 5, 3).unwrap();
        assert_eq!((g.out, g.pad_begin, g.pad_end), (3, 1, 1));
        let w = Window::new(1, AutoPad::SameLower, &None, &None, &None, false).unwrap();
        let g = w.dim(0, 5, 4).unwrap();
        assert_eq!((g.out, g.pad_begin, g.pad_end), (5, 2, 1));
    }

    #[test]
    fn ceil_mode_drops_window_starting_in_end_pad() {
        let w = Window::new(1, AutoPad::NotSet, &Some(vec![1, 1]), &Some(vec![2]), &None, true).unwrap();
        // padded 7, kernel 3: ceil((7-3)/2)+1 = 3, last window starts at 4 < 5+1
        assert_eq!(w.dim(0, 5, 3).unwrap().out, 3);
        let w = Window::new(1, AutoPad::NotSet, &Some(vec![0, 1]), &Some(vec![2]), &None, true).unwrap();
        // padded 5, kernel 2: ceil(3/2)+1 = 3, last window would start at 4 >= 4
        assert_eq!(w.dim(0, 4, 2).unwrap().out, 2);
    }

    #[test]
    fn kernel_too_large_is_an_error() {
        let w = Window::new(1, AutoPad::NotSet, &None, &None, &None, false).unwrap();
        assert!(w.dim(0, 2, 3).is_err());
    }
}
