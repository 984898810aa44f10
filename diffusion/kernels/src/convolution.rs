//! The network's two convolutions behind one interface: their shapes, their forward passes and
//! one backward pass, used by the plain convolution ops and by the fused convolution-batch-norm
//! ops alike.
//!
//! ```text
//! forward:  z = conv(x, W) + b
//! backward: dx = conv_input_grad(dz, W),  dW = conv_weight_grad(x, dz),  db = sum of dz per channel
//! ```

use candle_core::{Layout, Result, Shape, Tensor};

use super::conv::{bias_grad, conv3x3_forward_into, conv3x3_input_grad, conv3x3_weight_grad};
use super::conv_transpose::{
    conv_transpose_forward_into, conv_transpose_input_grad, conv_transpose_weight_grad,
};
use super::gemm::with_f32;
use super::op::{apply, grad_for, F32Op3, Grads3};
use super::shape::{dims4, ConvShape, Filter};

/// Which convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// `conv2d(x, W[O, I, 3, 3], padding 1)`: `[N, I, H, W] -> [N, O, H, W]`.
    Conv3x3,
    /// `conv_transpose2d(x, W[I, O, 3, 3], stride 2, padding 1, output_padding 1)`:
    /// `[N, I, H, W] -> [N, O, 2H, 2W]`.
    Transpose3x3S2,
}

impl ConvKind {
    /// The shape of the convolution of an input `[n, c, h, w]` with a kernel of dims `kernel`,
    /// or an error naming what does not fit.
    pub fn shape(self, input: (usize, usize, usize, usize), kernel: &[usize]) -> Result<ConvShape> {
        let (n, c, h, w) = input;
        let (cin, o) = match (self, kernel) {
            (ConvKind::Conv3x3, &[o, i, 3, 3]) => (i, o),
            (ConvKind::Transpose3x3S2, &[i, o, 3, 3]) => (i, o),
            _ => candle_core::bail!("{self:?}: expected a 3x3 kernel, got {kernel:?}"),
        };
        if cin != c {
            candle_core::bail!("{self:?}: kernel {kernel:?} does not take {c} input channels");
        }
        Ok(ConvShape::new(n, c, h, w, o))
    }

    /// The output side `(h, w)` for a convolution of shape `s`.
    pub fn output_hw(self, s: ConvShape) -> (usize, usize) {
        match self {
            ConvKind::Conv3x3 => (s.h, s.w),
            ConvKind::Transpose3x3S2 => (2 * s.h, 2 * s.w),
        }
    }

    /// Values of the output, `n * o * h_out * w_out`.
    pub fn output_len(self, s: ConvShape) -> usize {
        let (h, w) = self.output_hw(s);
        s.n * s.o * h * w
    }

    /// `y = conv(x, f.weight) + f.bias` (no bias: zero) into `y`, then `max(y, 0)` if `f.relu`.
    pub fn forward_into(self, x: &[f32], s: ConvShape, f: Filter, y: &mut [f32]) {
        match self {
            ConvKind::Conv3x3 => conv3x3_forward_into(x, s, f, y),
            ConvKind::Transpose3x3S2 => conv_transpose_forward_into(x, s, f, y),
        }
    }

    /// The kernel's output channel of the value at flat index `i` of a kernel with `o` output
    /// channels (`[O, I, 3, 3]` or `[I, O, 3, 3]`).
    pub fn output_channel(self, i: usize, o: usize, kernel_len: usize) -> usize {
        match self {
            ConvKind::Conv3x3 => i / (kernel_len / o.max(1)).max(1),
            ConvKind::Transpose3x3S2 => (i / 9) % o,
        }
    }

    /// The gradients of `conv(x, W) + b` for the output gradient `dz`: `dx`, `dW` and, when a
    /// bias is given, `db`, each only for a tensor that autograd tracks.
    pub fn backward(
        self,
        x: &Tensor,
        wt: &Tensor,
        b: Option<&Tensor>,
        dz: &[f32],
        s: ConvShape,
    ) -> Result<Grads3> {
        let dx = grad_for(x, || {
            with_f32(wt, |wv| {
                Ok(match self {
                    ConvKind::Conv3x3 => conv3x3_input_grad(dz, s, wv),
                    ConvKind::Transpose3x3S2 => conv_transpose_input_grad(dz, s, wv),
                })
            })
        })?;
        let dw = grad_for(wt, || {
            with_f32(x, |xv| {
                Ok(match self {
                    ConvKind::Conv3x3 => conv3x3_weight_grad(xv, dz, s),
                    ConvKind::Transpose3x3S2 => conv_transpose_weight_grad(xv, dz, s),
                })
            })
        })?;
        let db = match b {
            Some(b) => grad_for(b, || {
                let (h, w) = self.output_hw(s);
                Ok(bias_grad(dz, s.n, s.o, h * w))
            })?,
            None => None,
        };
        Ok((dx, dw, db))
    }
}

/// `conv(x, W) + b` as an op over `(x, W, b)`.
struct Conv(ConvKind);

impl F32Op3 for Conv {
    fn name(&self) -> &'static str {
        match self.0 {
            ConvKind::Conv3x3 => "conv3x3",
            ConvKind::Transpose3x3S2 => "conv_transpose3x3_s2",
        }
    }

    fn forward(
        &self,
        [(x, lx), (wt, lw), (b, lb)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let kind = self.0;
        let s = kind.shape(dims4(lx, self.name())?, lw.dims())?;
        if lb.dims() != [s.o] {
            let (name, got) = (self.name(), lb.dims());
            candle_core::bail!("{name}: expected a bias of [{}], got {got:?}", s.o);
        }
        let mut y = vec![0f32; kind.output_len(s)];
        kind.forward_into(x, s, Filter::new(wt, Some(b)), &mut y);
        let (ho, wo) = kind.output_hw(s);
        Ok((y, Shape::from((s.n, s.o, ho, wo))))
    }

    fn backward(&self, [x, wt, b]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Result<Grads3> {
        let s = self.0.shape(x.dims4()?, wt.dims())?;
        with_f32(grad, |dz| self.0.backward(x, wt, Some(b), dz, s))
    }
}

/// `conv(x, W) + b` for CPU `f32` tensors.
pub fn conv(kind: ConvKind, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    apply(Conv(kind), [x, w, b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_close, check_grads, random};
    use crate::{with_path, KernelPath};
    use candle_core::{Device, Var};

    /// The fast op and the reference path (candle's own operations) on the same random input:
    /// output within 1e-5, and the gradients of `x`, `W` and `b` within 1e-4.
    fn matches_reference(kind: ConvKind, shape: [usize; 4], o: usize) -> Result<()> {
        let dev = Device::Cpu;
        let [n, c, h, w] = shape;
        let kernel = match kind {
            ConvKind::Conv3x3 => [o, c, 3, 3],
            ConvKind::Transpose3x3S2 => [c, o, 3, 3],
        };
        let x = Var::from_tensor(&random(&shape, 10, &dev)?)?;
        let wt = Var::from_tensor(&random(&kernel, 11, &dev)?)?;
        let b = Var::from_tensor(&random(&[o], 12, &dev)?)?;
        let (ho, wo) = kind.output_hw(ConvShape::new(n, c, h, w, o));
        let up = random(&[n, o, ho, wo], 13, &dev)?;
        let fast = conv(kind, &x, &wt, &b)?;
        let slow = match kind {
            ConvKind::Conv3x3 => crate::reference::conv3x3(&x, &wt, &b)?,
            ConvKind::Transpose3x3S2 => crate::reference::conv_transpose3x3_s2(&x, &wt, &b)?,
        };
        check_close(&fast, &slow, 1e-5, &format!("{kind:?} forward"))?;
        let vars = [
            (x.as_tensor(), "dx"),
            (wt.as_tensor(), "dw"),
            (b.as_tensor(), "db"),
        ];
        check_grads([&fast, &slow], &up, &vars, 1e-4, &format!("{kind:?}"))?;
        Ok(())
    }

    /// The 3x3 convolution as its direct sum, `y[n, o, y, x] = b[o] + sum_{i, kh, kw}
    /// w[o, i, kh, kw] x[n, i, y+kh-1, x+kw-1]`, in `f64` with loops.
    fn direct_sum(x: &[f32], s: ConvShape, wt: &[f32], b: &[f32]) -> Vec<f32> {
        let ConvShape { n, c, h, w, o } = s;
        let mut y = vec![0f32; n * o * h * w];
        for img in 0..n {
            for oo in 0..o {
                for yy in 0..h {
                    for xx in 0..w {
                        let mut acc = b[oo] as f64;
                        for i in 0..c {
                            for kh in 0..3 {
                                for kw in 0..3 {
                                    let (sy, sx) = (yy + kh, xx + kw);
                                    if sy == 0 || sx == 0 || sy > h || sx > w {
                                        continue;
                                    }
                                    let xv = x[((img * c + i) * h + sy - 1) * w + sx - 1];
                                    acc += (wt[((oo * c + i) * 3 + kh) * 3 + kw] * xv) as f64;
                                }
                            }
                        }
                        y[((img * o + oo) * h + yy) * w + xx] = acc as f32;
                    }
                }
            }
        }
        y
    }

    /// The transposed convolution by its definition: every input pixel scattered,
    /// `y[o, 2iy + kh - 1, 2ix + kw - 1] += w[i, o, kh, kw] x[i, iy, ix]`, keeping the pixels
    /// inside `[0, 2h) x [0, 2w)`, in `f64`.
    fn scatter(x: &[f32], s: ConvShape, wt: &[f32], b: &[f32]) -> Vec<f32> {
        let ConvShape { n, c, h, w, o } = s;
        let (h2, w2) = (2 * h, 2 * w);
        let mut y: Vec<f64> = (0..n * o * h2 * w2)
            .map(|k| b[(k / (h2 * w2)) % o] as f64)
            .collect();
        for img in 0..n {
            for i in 0..c {
                for iy in 0..h {
                    for ix in 0..w {
                        let xv = x[((img * c + i) * h + iy) * w + ix] as f64;
                        for oo in 0..o {
                            for kh in 0..3 {
                                for kw in 0..3 {
                                    let (oy, ox) = (2 * iy + kh, 2 * ix + kw);
                                    if oy == 0 || ox == 0 || oy > h2 || ox > w2 {
                                        continue;
                                    }
                                    let wv = wt[((i * o + oo) * 3 + kh) * 3 + kw] as f64;
                                    y[((img * o + oo) * h2 + oy - 1) * w2 + ox - 1] += wv * xv;
                                }
                            }
                        }
                    }
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    /// Each convolution's forward pass against its definition written out with loops, on the
    /// fast path and on the matrix products alike.
    #[test]
    fn both_convolutions_match_their_definitions() -> Result<()> {
        let dev = Device::Cpu;
        for (kind, (n, c, h, w, o)) in [
            (ConvKind::Conv3x3, (2, 3, 5, 4, 4)),
            (ConvKind::Conv3x3, (2, 3, 16, 16, 5)),
            (ConvKind::Transpose3x3S2, (2, 3, 3, 4, 5)),
        ] {
            let s = ConvShape::new(n, c, h, w, o);
            let kernel = match kind {
                ConvKind::Conv3x3 => [o, c, 3, 3],
                ConvKind::Transpose3x3S2 => [c, o, 3, 3],
            };
            let (x, wt, b) = (
                random(&[n, c, h, w], 1, &dev)?,
                random(&kernel, 2, &dev)?,
                random(&[o], 3, &dev)?,
            );
            let (xv, wv, bv) = (
                x.flatten_all()?.to_vec1()?,
                wt.flatten_all()?.to_vec1()?,
                b.to_vec1()?,
            );
            let want = match kind {
                ConvKind::Conv3x3 => direct_sum(&xv, s, &wv, &bv),
                ConvKind::Transpose3x3S2 => scatter(&xv, s, &wv, &bv),
            };
            let (ho, wo) = kind.output_hw(s);
            let want = Tensor::from_vec(want, (n, o, ho, wo), &dev)?;
            for path in [KernelPath::Fast, KernelPath::MatrixProducts] {
                let y = with_path(path, || conv(kind, &x, &wt, &b))?;
                check_close(&y, &want, 1e-5, &format!("{kind:?} on {path:?}"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn both_convolutions_match_the_reference_at_the_networks_shapes() -> Result<()> {
        use ConvKind::*;
        for (shape, o) in [
            ([8, 1, 16, 16], 16),
            ([8, 16, 16, 16], 32),
            ([8, 32, 8, 8], 64),
            ([8, 64, 4, 4], 64),
            ([8, 16, 16, 16], 1),
        ] {
            matches_reference(Conv3x3, shape, o)?;
        }
        matches_reference(Transpose3x3S2, [8, 128, 4, 4], 32)?;
        matches_reference(Transpose3x3S2, [8, 64, 8, 8], 16)
    }

    #[test]
    fn single_images_and_odd_sizes_match_the_reference() -> Result<()> {
        matches_reference(ConvKind::Conv3x3, [1, 16, 16, 16], 32)?;
        matches_reference(ConvKind::Conv3x3, [3, 2, 1, 5], 3)?;
        matches_reference(ConvKind::Transpose3x3S2, [1, 128, 4, 4], 32)?;
        matches_reference(ConvKind::Transpose3x3S2, [3, 2, 1, 3], 4)
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_an_error() {
        let e = ConvKind::Conv3x3
            .shape((1, 4, 8, 8), &[8, 3, 3, 3])
            .unwrap_err();
        assert!(
            e.to_string().contains("does not take 4 input channels"),
            "{e}"
        );
        let e = ConvKind::Transpose3x3S2
            .shape((1, 4, 8, 8), &[4, 8, 2, 2])
            .unwrap_err();
        assert!(e.to_string().contains("3x3 kernel"), "{e}");
    }
}
