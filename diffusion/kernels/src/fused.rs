//! Convolution, batch normalisation (batch statistics) and ReLU as one op on the CPU:
//! `z = conv(x, W) + b`, `y = max(bn(z), 0)`. The op keeps `z` and the statistics for its
//! backward pass, which chains the two backward passes without handing the intermediate
//! gradient `dz` back to autograd:
//!
//! `(dz, dgamma, dbeta) = bn_relu_backward(dy)`, `db = sum dz`, `(dx, dW) = conv_backward(dz)`.
//!
//! In evaluation the batch norm is a fixed per-channel affine map, folded into the convolution:
//! with `s = gamma / sqrt(running_var + eps)`, `y = max(conv(x, s W) + (b - running_mean) s +
//! beta, 0)`. Its backward pass follows `diffusion::layers::BatchNorm2d::forward_t`, where `s` is a
//! constant: `dbeta = sum g`, `dz = s g` for `g = dy [y > 0]`, and no gradient for `gamma`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::batch_norm::{backward_into as bn_backward, normalize, statistics, Stats};
use super::conv::{
    bias_grad, conv3x3_forward, conv3x3_forward_into, conv3x3_weight_grad, dims4, flip_transpose,
};
use super::conv_transpose::{
    conv_transpose_forward_into, conv_transpose_input_grad, conv_transpose_weight_grad,
};
use super::gemm::{cpu_f32, with_f32, PoolBuf};

/// The convolution in front of the batch norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// `conv2d(x, W[O, I, 3, 3], padding 1)`.
    Conv3x3,
    /// `conv_transpose2d(x, W[I, O, 3, 3], stride 2, padding 1, output_padding 1)`.
    Transpose3x3S2,
}

impl ConvKind {
    /// Output channels and side for an input `[_, c, h, w]` and kernel dims.
    fn output(
        self,
        c: usize,
        h: usize,
        w: usize,
        kernel: &[usize],
    ) -> Result<(usize, usize, usize)> {
        let (cin, o) = match (self, kernel) {
            (ConvKind::Conv3x3, &[o, i, 3, 3]) => (i, o),
            (ConvKind::Transpose3x3S2, &[i, o, 3, 3]) => (i, o),
            _ => candle_core::bail!("{self:?}: expected a 3x3 kernel, got {kernel:?}"),
        };
        if cin != c {
            candle_core::bail!("{self:?}: kernel {kernel:?} does not take {c} input channels");
        }
        Ok(match self {
            ConvKind::Conv3x3 => (o, h, w),
            ConvKind::Transpose3x3S2 => (o, 2 * h, 2 * w),
        })
    }
}

/// What the forward pass keeps for the backward one.
struct Saved {
    z: PoolBuf,
    stats: Stats,
}

struct ConvBnRelu {
    kind: ConvKind,
    eps: f64,
    saved: Arc<Mutex<Option<Arc<Saved>>>>,
}

fn lock_error<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("conv-bn-relu: saved state lock poisoned".into())
}

impl CustomOp3 for ConvBnRelu {
    fn name(&self) -> &'static str {
        match self.kind {
            ConvKind::Conv3x3 => "conv3x3_bn_relu",
            ConvKind::Transpose3x3S2 => "conv_transpose3x3_s2_bn_relu",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l1, "conv-bn-relu input")?;
        let (o, ho, wo) = self.kind.output(c, h, w, l2.dims())?;
        if l3.dims() != [3 * o] {
            candle_core::bail!(
                "conv-bn-relu: expected the {} values of bias, weight and bias, got {:?}",
                3 * o,
                l3.dims()
            );
        }
        let (x, wt, params) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let (cb, rest) = params.split_at(o);
        let (gamma, beta) = rest.split_at(o);
        let hw = ho * wo;
        let mut z = PoolBuf::new(n * o * hw);
        match self.kind {
            ConvKind::Conv3x3 => {
                conv3x3_forward_into(x, n, c, h, w, wt, o, Some(cb), false, &mut z)
            }
            ConvKind::Transpose3x3S2 => {
                conv_transpose_forward_into(x, n, c, h, w, wt, o, cb, false, &mut z)
            }
        }
        let stats = statistics(&z, n, o, hw, self.eps);
        let scale: Vec<f32> = (0..o).map(|ch| gamma[ch] * stats.inv_std[ch]).collect();
        let y = normalize(&z, n, o, hw, &stats.mean, &scale, beta, true);
        *self.saved.lock().map_err(lock_error)? = Some(Arc::new(Saved { z, stats }));
        Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let (o, ho, wo) = self.kind.output(c, h, w, wt.dims())?;
        let hw = ho * wo;
        let saved = self
            .saved
            .lock()
            .map_err(lock_error)?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("conv-bn-relu: no forward pass".into()))?;
        let dev = x.device();
        let (dz, dparams) = with_f32(res, |y| {
            with_f32(grad, |dy| {
                with_f32(params, |p| {
                    let gamma = &p[o..2 * o];
                    let mut dz = PoolBuf::new(n * o * hw);
                    let g = bn_backward(
                        &saved.z,
                        y,
                        dy,
                        n,
                        o,
                        hw,
                        gamma,
                        &saved.stats,
                        true,
                        &mut dz,
                    );
                    // The conv bias feeds the batch norm: its gradient is the sum of dz.
                    let mut dparams = g.dx_sums;
                    dparams.extend_from_slice(&g.dweight);
                    dparams.extend_from_slice(&g.dbias);
                    Ok((dz, dparams))
                })
            })
        })?;
        let (dx, dw) = conv_backward(self.kind, x, wt, &dz, (n, c, h, w), o)?;
        let dp = if params.track_op() {
            Some(Tensor::from_vec(dparams, 3 * o, dev)?)
        } else {
            None
        };
        Ok((dx, dw, dp))
    }
}

/// The evaluation-mode op over `(x, w, [b, beta, gamma, running_mean, running_var])`.
struct ConvBnReluEval {
    kind: ConvKind,
    eps: f64,
}

impl ConvBnReluEval {
    /// `s = gamma / sqrt(running_var + eps)` from the packed parameters of `o` channels.
    fn scale(&self, p: &[f32], o: usize) -> Vec<f32> {
        (0..o)
            .map(|ch| (p[2 * o + ch] as f64 / (p[4 * o + ch] as f64 + self.eps).sqrt()) as f32)
            .collect()
    }
}

impl CustomOp3 for ConvBnReluEval {
    fn name(&self) -> &'static str {
        match self.kind {
            ConvKind::Conv3x3 => "conv3x3_bn_relu_eval",
            ConvKind::Transpose3x3S2 => "conv_transpose3x3_s2_bn_relu_eval",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l1, "conv-bn-relu input")?;
        let (o, ho, wo) = self.kind.output(c, h, w, l2.dims())?;
        if l3.dims() != [5 * o] {
            candle_core::bail!(
                "conv-bn-relu: expected the {} values of bias, shift, weight, mean and variance, got {:?}",
                5 * o,
                l3.dims()
            );
        }
        let (x, wt, p) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let s = self.scale(p, o);
        // The folded bias (b - mean) s + beta, and kernel s W (per output channel).
        let bias: Vec<f32> = (0..o)
            .map(|ch| (p[ch] - p[3 * o + ch]) * s[ch] + p[o + ch])
            .collect();
        let per = wt.len() / o.max(1);
        let folded: Vec<f32> = match self.kind {
            ConvKind::Conv3x3 => wt.iter().enumerate().map(|(i, v)| v * s[i / per]).collect(),
            ConvKind::Transpose3x3S2 => wt
                .iter()
                .enumerate()
                .map(|(i, v)| v * s[(i / 9) % o])
                .collect(),
        };
        let mut y = vec![0f32; n * o * ho * wo];
        match self.kind {
            ConvKind::Conv3x3 => {
                conv3x3_forward_into(x, n, c, h, w, &folded, o, Some(&bias), true, &mut y)
            }
            ConvKind::Transpose3x3S2 => {
                conv_transpose_forward_into(x, n, c, h, w, &folded, o, &bias, true, &mut y)
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let (o, ho, wo) = self.kind.output(c, h, w, wt.dims())?;
        let hw = ho * wo;
        let dev = x.device();
        let (dz, dparams) = with_f32(res, |y| {
            with_f32(grad, |dy| {
                with_f32(params, |p| {
                    let s = self.scale(p, o);
                    let mut dz = PoolBuf::new(n * o * hw);
                    for (row, ((yr, gr), dzr)) in y
                        .chunks_exact(hw)
                        .zip(dy.chunks_exact(hw))
                        .zip(dz.chunks_exact_mut(hw))
                        .enumerate()
                    {
                        let sc = s[row % o];
                        for ((d, &yv), &gv) in dzr.iter_mut().zip(yr).zip(gr) {
                            *d = if yv > 0.0 { gv * sc } else { 0.0 };
                        }
                    }
                    // dbeta = sum g = (sum dz) / s, computed from g directly.
                    let mut g = PoolBuf::new(n * o * hw);
                    for ((gv, &yv), &dv) in g.iter_mut().zip(y).zip(dy) {
                        *gv = if yv > 0.0 { dv } else { 0.0 };
                    }
                    let mut dparams = bias_grad(&dz, n, o, hw);
                    dparams.extend(bias_grad(&g, n, o, hw));
                    dparams.extend(std::iter::repeat_n(0.0, 3 * o));
                    Ok((dz, dparams))
                })
            })
        })?;
        let (dx, dw) = conv_backward(self.kind, x, wt, &dz, (n, c, h, w), o)?;
        let dp = if params.track_op() {
            Some(Tensor::from_vec(dparams, 5 * o, dev)?)
        } else {
            None
        };
        Ok((dx, dw, dp))
    }
}

/// The gradients of the convolution's input and kernel for the output gradient `dz`.
fn conv_backward(
    kind: ConvKind,
    x: &Tensor,
    wt: &Tensor,
    dz: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    o: usize,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dev = x.device();
    let dx = if x.track_op() {
        let dx = with_f32(wt, |wv| {
            Ok(match kind {
                ConvKind::Conv3x3 => {
                    conv3x3_forward(dz, n, o, h, w, &flip_transpose(wv, o, c), c, None)
                }
                ConvKind::Transpose3x3S2 => conv_transpose_input_grad(dz, n, c, h, w, wv, o),
            })
        })?;
        Some(Tensor::from_vec(dx, (n, c, h, w), dev)?)
    } else {
        None
    };
    let dw = if wt.track_op() {
        let dw = with_f32(x, |xv| {
            Ok(match kind {
                ConvKind::Conv3x3 => conv3x3_weight_grad(xv, dz, n, c, h, w, o),
                ConvKind::Transpose3x3S2 => conv_transpose_weight_grad(xv, dz, n, c, h, w, o),
            })
        })?;
        Some(Tensor::from_vec(dw, wt.shape(), dev)?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// `max(bn_eval(conv(x, w) + b), 0)` with the running statistics, for CPU `f32` tensors. As in
/// `diffusion::layers::BatchNorm2d::forward_t`, `gamma / sqrt(running_var + eps)` is a constant
/// for autograd (only `x`, `w`, `b` and `beta` get gradients).
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_relu_eval(
    kind: ConvKind,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let params = Tensor::cat(
        &[
            b,
            beta,
            &gamma.detach(),
            &running_mean.detach(),
            &running_var.detach(),
        ],
        0,
    )?;
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &params, ConvBnReluEval { kind, eps })
}

/// `max(bn(conv(x, w) + b), 0)` with batch statistics, for CPU `f32` tensors: `(y, mean, biased
/// var)` of `conv(x, w) + b`, the statistics without gradient.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_relu_train(
    kind: ConvKind,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let params = Tensor::cat(&[b, gamma, beta], 0)?;
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBnRelu {
        kind,
        eps,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3_arc(&w.contiguous()?, &params, Arc::new(Box::new(op)))?;
    let s = saved.lock().map_err(lock_error)?.clone().ok_or_else(|| {
        candle_core::Error::Msg("conv-bn-relu: the forward pass did not run".into())
    })?;
    let o = s.stats.mean.len();
    let mean = Tensor::from_slice(&s.stats.mean, o, x.device())?;
    let var = Tensor::from_slice(&s.stats.var, o, x.device())?;
    Ok((y, mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::testing::{check_close, grads_of, random};
    use candle_core::{Device, Var};

    fn check(kind: ConvKind, shape: [usize; 4], o: usize) -> Result<()> {
        let dev = Device::Cpu;
        let [n, c, h, w] = shape;
        let (kshape, out) = match kind {
            ConvKind::Conv3x3 => ([o, c, 3, 3], [n, o, h, w]),
            ConvKind::Transpose3x3S2 => ([c, o, 3, 3], [n, o, 2 * h, 2 * w]),
        };
        let x = Var::from_tensor(&random(&shape, 50, &dev)?)?;
        let wt = Var::from_tensor(&(random(&kshape, 51, &dev)? * 0.2)?)?;
        let b = Var::from_tensor(&random(&[o], 52, &dev)?)?;
        let gamma = Var::from_tensor(&(random(&[o], 53, &dev)? + 1.0)?)?;
        let beta = Var::from_tensor(&random(&[o], 54, &dev)?)?;
        let up = random(&out, 55, &dev)?;
        let (fast, mean, var) = conv_bn_relu_train(kind, &x, &wt, &b, &gamma, &beta, 1e-5)?;
        let z = match kind {
            ConvKind::Conv3x3 => reference::conv3x3(&x, &wt, &b)?,
            ConvKind::Transpose3x3S2 => reference::conv_transpose3x3_s2(&x, &wt, &b)?,
        };
        let (slow, mean_ref, var_ref) = reference::batch_norm_train(&z, &gamma, &beta, 1e-5)?;
        let slow = slow.relu()?;
        check_close(&fast, &slow, 1e-5, "conv-bn-relu forward")?;
        check_close(&mean, &mean_ref, 1e-5, "conv-bn-relu mean")?;
        check_close(&var, &var_ref, 1e-5, "conv-bn-relu var")?;
        let vars = [
            x.as_tensor(),
            wt.as_tensor(),
            gamma.as_tensor(),
            beta.as_tensor(),
            b.as_tensor(),
        ];
        let gf = grads_of(&fast, &up, &vars)?;
        let gs = grads_of(&slow, &up, &vars)?;
        for i in 0..4 {
            let name = ["dx", "dw", "dgamma", "dbeta"][i];
            check_close(
                &gf[i],
                &gs[i],
                1e-4,
                &format!("conv-bn-relu {kind:?} {name}"),
            )?;
        }
        // The bias in front of the batch norm cancels: its gradient is zero up to rounding.
        let size = |t: &Tensor| -> Result<f32> { t.sqr()?.sum_all()?.sqrt()?.to_scalar() };
        for g in [&gf, &gs] {
            let (db, dbeta) = (size(&g[4])?, size(&g[3])?);
            assert!(db <= 1e-4 * dbeta, "bias gradient {db} against {dbeta}");
        }
        Ok(())
    }

    fn check_eval(kind: ConvKind, shape: [usize; 4], o: usize) -> Result<()> {
        let dev = Device::Cpu;
        let [n, c, h, w] = shape;
        let (kshape, out) = match kind {
            ConvKind::Conv3x3 => ([o, c, 3, 3], [n, o, h, w]),
            ConvKind::Transpose3x3S2 => ([c, o, 3, 3], [n, o, 2 * h, 2 * w]),
        };
        let x = Var::from_tensor(&random(&shape, 60, &dev)?)?;
        let wt = Var::from_tensor(&(random(&kshape, 61, &dev)? * 0.2)?)?;
        let b = Var::from_tensor(&random(&[o], 62, &dev)?)?;
        let gamma = Var::from_tensor(&(random(&[o], 63, &dev)? + 1.0)?)?;
        let beta = Var::from_tensor(&random(&[o], 64, &dev)?)?;
        let rm = (random(&[o], 65, &dev)? * 0.5)?;
        let rv = (random(&[o], 66, &dev)?.sqr()? + 0.5)?;
        let up = random(&out, 67, &dev)?;
        let fast = conv_bn_relu_eval(kind, &x, &wt, &b, &gamma, &beta, &rm, &rv, 1e-5)?;
        let z = match kind {
            ConvKind::Conv3x3 => reference::conv3x3(&x, &wt, &b)?,
            ConvKind::Transpose3x3S2 => reference::conv_transpose3x3_s2(&x, &wt, &b)?,
        };
        let slow = reference::batch_norm_eval(&z, &gamma, &beta, &rm, &rv, 1e-5)?.relu()?;
        check_close(&fast, &slow, 1e-5, "conv-bn-relu eval forward")?;
        let vars = [
            x.as_tensor(),
            wt.as_tensor(),
            b.as_tensor(),
            beta.as_tensor(),
        ];
        let gf = grads_of(&fast, &up, &vars)?;
        let gs = grads_of(&slow, &up, &vars)?;
        for ((f, s), name) in gf.iter().zip(&gs).zip(["dx", "dw", "db", "dbeta"]) {
            check_close(f, s, 1e-4, &format!("conv-bn-relu eval {kind:?} {name}"))?;
        }
        // The scale is a constant on both paths: no gradient for gamma.
        for y in [&fast, &slow] {
            let g = (y * &up)?.sum_all()?.backward()?;
            assert!(g.get(&gamma).is_none());
        }
        Ok(())
    }

    #[test]
    fn eval_matches_reference_at_the_networks_shapes() -> Result<()> {
        check_eval(ConvKind::Conv3x3, [8, 16, 16, 16], 32)?;
        check_eval(ConvKind::Conv3x3, [1, 64, 4, 4], 64)?;
        check_eval(ConvKind::Conv3x3, [2, 3, 4, 5], 4)?;
        check_eval(ConvKind::Transpose3x3S2, [8, 128, 4, 4], 32)?;
        check_eval(ConvKind::Transpose3x3S2, [1, 64, 8, 8], 16)
    }

    #[test]
    fn conv_matches_reference_at_the_networks_shapes() -> Result<()> {
        check(ConvKind::Conv3x3, [8, 16, 16, 16], 32)?;
        check(ConvKind::Conv3x3, [8, 64, 8, 8], 64)?;
        check(ConvKind::Conv3x3, [8, 1, 16, 16], 16)?;
        check(ConvKind::Conv3x3, [2, 3, 4, 5], 4)
    }

    #[test]
    fn transpose_matches_reference_at_the_networks_shapes() -> Result<()> {
        check(ConvKind::Transpose3x3S2, [8, 128, 4, 4], 32)?;
        check(ConvKind::Transpose3x3S2, [8, 64, 8, 8], 16)?;
        check(ConvKind::Transpose3x3S2, [3, 5, 3, 2], 4)
    }
}
