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
use super::conv::bias_grad;
pub use super::convolution::ConvKind;
use super::gemm::{cpu_f32, with_f32, PoolBuf};
use super::shape::{dims4, ConvShape};
use super::BatchNormParams;

/// The per-channel parameters a fused op takes in one tensor, always in this order: the
/// convolution's bias, the batch norm's weight `gamma` and shift `beta`, and, in evaluation, the
/// running mean and variance (`3 * O` or `5 * O` values). Gradients come back in the same order.
struct Packed<'a> {
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    /// `(running_mean, running_var)`, in evaluation.
    running: Option<(&'a [f32], &'a [f32])>,
}

impl<'a> Packed<'a> {
    /// Splits `p` for `o` channels; `running` says whether it must hold the running statistics.
    fn unpack(p: &'a [f32], o: usize, running: bool) -> Result<Self> {
        let parts = if running { 5 } else { 3 };
        if p.len() != parts * o {
            candle_core::bail!(
                "conv-bn-relu: expected {parts} x {o} packed parameters (bias, gamma, beta{}), got {}",
                if running { ", running mean, running var" } else { "" },
                p.len()
            );
        }
        let mut chunks = p.chunks_exact(o.max(1));
        let mut next = || chunks.next().unwrap_or(&[]);
        let (bias, gamma, beta) = (next(), next(), next());
        let running = running.then(|| (next(), next()));
        Ok(Self {
            bias,
            gamma,
            beta,
            running,
        })
    }

    /// Packs per-channel tensors in the order above.
    fn pack(tensors: &[&Tensor]) -> Result<Tensor> {
        Tensor::cat(tensors, 0)
    }
}

/// What the training forward pass keeps for the backward one.
struct Saved {
    z: PoolBuf,
    stats: Stats,
}

/// Training (batch statistics, the slot for what backward needs) or evaluation (running
/// statistics, folded into the convolution).
enum Mode {
    Train(Arc<Mutex<Option<Arc<Saved>>>>),
    Eval,
}

/// `max(bn(conv(x, W) + b), 0)` as one custom op over `(x, W, packed parameters)`.
struct ConvBnRelu {
    kind: ConvKind,
    eps: f64,
    mode: Mode,
}

fn lock_error<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("conv-bn-relu: saved state lock poisoned".into())
}

impl ConvBnRelu {
    fn evaluation(&self) -> bool {
        matches!(self.mode, Mode::Eval)
    }

    /// `s = gamma / sqrt(running_var + eps)` per channel.
    fn scale(&self, gamma: &[f32], running_var: &[f32]) -> Vec<f32> {
        gamma
            .iter()
            .zip(running_var)
            .map(|(&g, &v)| (g as f64 / (v as f64 + self.eps).sqrt()) as f32)
            .collect()
    }

    /// Training: `z = conv(x, W) + b`, its batch statistics, `y = max(bn(z), 0)`; keeps `z` and
    /// the statistics in `slot`.
    fn forward_train(
        &self,
        slot: &Mutex<Option<Arc<Saved>>>,
        x: &[f32],
        wt: &[f32],
        p: &Packed,
        s: ConvShape,
    ) -> Result<Vec<f32>> {
        let z_len = self.kind.output_len(s);
        let hw = z_len / (s.n * s.o).max(1);
        let mut z = PoolBuf::new(z_len);
        self.kind
            .forward_into(x, s, wt, Some(p.bias), false, &mut z);
        let stats = statistics(&z, s.n, s.o, hw, self.eps);
        let scale: Vec<f32> = (0..s.o).map(|ch| p.gamma[ch] * stats.inv_std[ch]).collect();
        let y = normalize(&z, s.n, s.o, hw, &stats.mean, &scale, p.beta, true);
        *slot.lock().map_err(lock_error)? = Some(Arc::new(Saved { z, stats }));
        Ok(y)
    }

    /// Evaluation: the batch norm folded into the convolution, `y = max(conv(x, s W) +
    /// (b - mean) s + beta, 0)`.
    fn forward_eval(&self, x: &[f32], wt: &[f32], p: &Packed, s: ConvShape) -> Vec<f32> {
        let (mean, var) = p.running.unwrap_or_default();
        let sc = self.scale(p.gamma, var);
        let bias: Vec<f32> = (0..s.o)
            .map(|ch| (p.bias[ch] - mean[ch]) * sc[ch] + p.beta[ch])
            .collect();
        let folded: Vec<f32> = wt
            .iter()
            .enumerate()
            .map(|(i, v)| v * sc[self.kind.output_channel(i, s.o, wt.len())])
            .collect();
        let mut y = vec![0f32; self.kind.output_len(s)];
        self.kind
            .forward_into(x, s, &folded, Some(&bias), true, &mut y);
        y
    }

    /// Training: the batch norm's and ReLU's backward pass, `(dz, [db, dgamma, dbeta])`.
    fn dz_train(
        &self,
        saved: &Saved,
        y: &[f32],
        dy: &[f32],
        p: &Packed,
        s: ConvShape,
    ) -> (PoolBuf, Vec<f32>) {
        let hw = y.len() / (s.n * s.o).max(1);
        let mut dz = PoolBuf::new(y.len());
        let g = bn_backward(
            &saved.z,
            y,
            dy,
            s.n,
            s.o,
            hw,
            p.gamma,
            &saved.stats,
            true,
            &mut dz,
        );
        // Packed order: the conv bias (it feeds the batch norm: its gradient is the sum of dz),
        // gamma, beta.
        let mut dparams = g.dx_sums;
        dparams.extend_from_slice(&g.dweight);
        dparams.extend_from_slice(&g.dbias);
        (dz, dparams)
    }

    /// Evaluation: with `s` a constant, `dz = s g` and `dbeta = sum g` for `g = dy [y > 0]`;
    /// `(dz, [db, 0, dbeta, 0, 0])`.
    fn dz_eval(&self, y: &[f32], dy: &[f32], p: &Packed, s: ConvShape) -> (PoolBuf, Vec<f32>) {
        let (n, o) = (s.n, s.o);
        let hw = y.len() / (n * o).max(1);
        let sc = self.scale(p.gamma, p.running.unwrap_or_default().1);
        let mut g = PoolBuf::new(y.len());
        for ((gv, &yv), &dv) in g.iter_mut().zip(y).zip(dy) {
            *gv = if yv > 0.0 { dv } else { 0.0 };
        }
        let mut dz = PoolBuf::new(y.len());
        for (row, (gr, dzr)) in g.chunks_exact(hw).zip(dz.chunks_exact_mut(hw)).enumerate() {
            let k = sc[row % o];
            dzr.iter_mut().zip(gr).for_each(|(d, &gv)| *d = gv * k);
        }
        // Packed order: bias, gamma (a constant here), beta, mean, var.
        let mut dparams = bias_grad(&dz, n, o, hw);
        dparams.extend(std::iter::repeat_n(0.0, o));
        dparams.extend(bias_grad(&g, n, o, hw));
        dparams.extend(std::iter::repeat_n(0.0, 2 * o));
        (dz, dparams)
    }
}

impl CustomOp3 for ConvBnRelu {
    fn name(&self) -> &'static str {
        match (self.kind, self.evaluation()) {
            (ConvKind::Conv3x3, false) => "conv3x3_bn_relu",
            (ConvKind::Transpose3x3S2, false) => "conv_transpose3x3_s2_bn_relu",
            (ConvKind::Conv3x3, true) => "conv3x3_bn_relu_eval",
            (ConvKind::Transpose3x3S2, true) => "conv_transpose3x3_s2_bn_relu_eval",
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
        let s = self
            .kind
            .shape(dims4(l1, "conv-bn-relu input")?, l2.dims())?;
        let (x, wt) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?);
        let p = Packed::unpack(cpu_f32(s3, l3)?, s.o, self.evaluation())?;
        let y = match &self.mode {
            Mode::Train(slot) => self.forward_train(slot, x, wt, &p, s)?,
            Mode::Eval => self.forward_eval(x, wt, &p, s),
        };
        let (ho, wo) = self.kind.output_hw(s);
        Ok((CpuStorage::F32(y), Shape::from((s.n, s.o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let s = self.kind.shape(x.dims4()?, wt.dims())?;
        let saved = match &self.mode {
            Mode::Train(slot) => {
                Some(slot.lock().map_err(lock_error)?.clone().ok_or_else(|| {
                    candle_core::Error::Msg("conv-bn-relu: no forward pass".into())
                })?)
            }
            Mode::Eval => None,
        };
        let (dz, dparams) = with_f32(res, |y| {
            with_f32(grad, |dy| {
                with_f32(params, |p| {
                    let p = Packed::unpack(p, s.o, self.evaluation())?;
                    Ok(match &saved {
                        Some(saved) => self.dz_train(saved, y, dy, &p, s),
                        None => self.dz_eval(y, dy, &p, s),
                    })
                })
            })
        })?;
        let (dx, dw, _) = self.kind.backward(x, wt, None, &dz, s)?;
        let dp = if params.track_op() {
            Some(Tensor::from_vec(dparams, params.shape(), x.device())?)
        } else {
            None
        };
        Ok((dx, dw, dp))
    }
}

/// `max(bn_eval(conv(x, w) + b), 0)` with the running statistics, for CPU `f32` tensors. As in
/// `diffusion::layers::BatchNorm2d::forward_t`, `gamma / sqrt(running_var + eps)` is a constant
/// for autograd (only `x`, `w`, `b` and `beta` get gradients).
pub fn conv_bn_relu_eval(
    kind: ConvKind,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    bn: &BatchNormParams,
) -> Result<Tensor> {
    let params = Packed::pack(&[
        b,
        &bn.gamma.detach(),
        bn.beta,
        &bn.running_mean.detach(),
        &bn.running_var.detach(),
    ])?;
    let op = ConvBnRelu {
        kind,
        eps: bn.eps,
        mode: Mode::Eval,
    };
    x.contiguous()?.apply_op3(&w.contiguous()?, &params, op)
}

/// `max(bn(conv(x, w) + b), 0)` with batch statistics, for CPU `f32` tensors: `(y, mean, biased
/// var)` of `conv(x, w) + b`, the statistics without gradient.
pub fn conv_bn_relu_train(
    kind: ConvKind,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    bn: &BatchNormParams,
) -> Result<(Tensor, Tensor, Tensor)> {
    let params = Packed::pack(&[b, bn.gamma, bn.beta])?;
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBnRelu {
        kind,
        eps: bn.eps,
        mode: Mode::Train(saved.clone()),
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
        let bn = BatchNormParams {
            gamma: &gamma,
            beta: &beta,
            running_mean: &gamma,
            running_var: &gamma,
            eps: 1e-5,
        };
        let (fast, mean, var) = conv_bn_relu_train(kind, &x, &wt, &b, &bn)?;
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
        let bn = BatchNormParams {
            gamma: &gamma,
            beta: &beta,
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-5,
        };
        let fast = conv_bn_relu_eval(kind, &x, &wt, &b, &bn)?;
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
