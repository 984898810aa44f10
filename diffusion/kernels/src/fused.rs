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

use candle_core::{Layout, Result, Shape, Tensor};

use crate::WithStats;

use super::batch_norm::{backward_into as bn_backward, normalize, statistics, BnForward, Stats};
use super::conv::bias_grad;
pub use super::convolution::ConvKind;
use super::gemm::{with_f32, PoolBuf};
use super::op::{apply, grad_for, F32Op3, Grads3};
use super::shape::{dims4, ConvShape, Filter};
use super::ConvBn;

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
            .forward_into(x, s, Filter::new(wt, Some(p.bias)), &mut z);
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
        let f = Filter::new(&folded, Some(&bias)).with_relu(true);
        self.kind.forward_into(x, s, f, &mut y);
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
        let f = BnForward {
            x: &saved.z,
            y,
            n: s.n,
            c: s.o,
            hw,
            weight: p.gamma,
            st: &saved.stats,
            relu: true,
        };
        let g = bn_backward(&f, dy, &mut dz);
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

impl F32Op3 for ConvBnRelu {
    fn name(&self) -> &'static str {
        match (self.kind, self.evaluation()) {
            (ConvKind::Conv3x3, false) => "conv3x3_bn_relu",
            (ConvKind::Transpose3x3S2, false) => "conv_transpose3x3_s2_bn_relu",
            (ConvKind::Conv3x3, true) => "conv3x3_bn_relu_eval",
            (ConvKind::Transpose3x3S2, true) => "conv_transpose3x3_s2_bn_relu_eval",
        }
    }

    fn forward(
        &self,
        [(x, lx), (wt, lw), (p, _)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let s = self
            .kind
            .shape(dims4(lx, "conv-bn-relu input")?, lw.dims())?;
        let p = Packed::unpack(p, s.o, self.evaluation())?;
        let y = match &self.mode {
            Mode::Train(slot) => self.forward_train(slot, x, wt, &p, s)?,
            Mode::Eval => self.forward_eval(x, wt, &p, s),
        };
        let (ho, wo) = self.kind.output_hw(s);
        Ok((y, Shape::from((s.n, s.o, ho, wo))))
    }

    fn backward(
        &self,
        [x, wt, params]: [&Tensor; 3],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
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
        let dp = grad_for(params, || Ok(dparams))?;
        Ok((dx, dw, dp))
    }
}

/// `max(bn_eval(conv(x, w) + b), 0)` with the running statistics, for CPU `f32` tensors. As in
/// `diffusion::layers::BatchNorm2d::forward_t`, `gamma / sqrt(running_var + eps)` is a constant
/// for autograd (only `x`, `w`, `b` and `beta` get gradients).
pub fn conv_bn_relu_eval(x: &Tensor, p: &ConvBn) -> Result<Tensor> {
    let bn = &p.bn;
    let params = Packed::pack(&[
        p.b,
        &bn.gamma.detach(),
        bn.beta,
        &bn.running_mean.detach(),
        &bn.running_var.detach(),
    ])?;
    let op = ConvBnRelu {
        kind: p.kind,
        eps: bn.eps,
        mode: Mode::Eval,
    };
    apply(op, [x, p.w, &params])
}

/// `max(bn(conv(x, w) + b), 0)` with batch statistics, for CPU `f32` tensors: `(y, mean, biased
/// var)` of `conv(x, w) + b`, the statistics without gradient.
pub fn conv_bn_relu_train(x: &Tensor, p: &ConvBn) -> Result<WithStats> {
    let params = Packed::pack(&[p.b, p.bn.gamma, p.bn.beta])?;
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBnRelu {
        kind: p.kind,
        eps: p.bn.eps,
        mode: Mode::Train(saved.clone()),
    };
    let y = apply(op, [x, p.w, &params])?;
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
    use crate::testing::{check_close, check_grads, grads_of, random};
    use crate::{reference, BatchNormParams};
    use candle_core::{Device, Var};

    /// Random inputs of a convolution-batch-norm of `kind` on `shape` with `o` output channels,
    /// and a random output gradient `up`.
    struct Case {
        kind: ConvKind,
        x: Var,
        wt: Var,
        b: Var,
        gamma: Var,
        beta: Var,
        running: (Tensor, Tensor),
        up: Tensor,
    }

    impl Case {
        fn new(kind: ConvKind, shape: [usize; 4], o: usize, seed: u64) -> Result<Self> {
            let dev = Device::Cpu;
            let [n, c, h, w] = shape;
            let (kshape, out) = match kind {
                ConvKind::Conv3x3 => ([o, c, 3, 3], [n, o, h, w]),
                ConvKind::Transpose3x3S2 => ([c, o, 3, 3], [n, o, 2 * h, 2 * w]),
            };
            let var = |t: Tensor| Var::from_tensor(&t);
            Ok(Self {
                kind,
                x: var(random(&shape, seed, &dev)?)?,
                wt: var((random(&kshape, seed + 1, &dev)? * 0.2)?)?,
                b: var(random(&[o], seed + 2, &dev)?)?,
                gamma: var((random(&[o], seed + 3, &dev)? + 1.0)?)?,
                beta: var(random(&[o], seed + 4, &dev)?)?,
                running: (
                    (random(&[o], seed + 5, &dev)? * 0.5)?,
                    (random(&[o], seed + 6, &dev)?.sqr()? + 0.5)?,
                ),
                up: random(&out, seed + 7, &dev)?,
            })
        }

        fn params(&self) -> ConvBn<'_> {
            ConvBn {
                kind: self.kind,
                w: &self.wt,
                b: &self.b,
                bn: BatchNormParams {
                    gamma: &self.gamma,
                    beta: &self.beta,
                    running_mean: &self.running.0,
                    running_var: &self.running.1,
                    eps: 1e-5,
                },
            }
        }
    }

    fn check(kind: ConvKind, shape: [usize; 4], o: usize) -> Result<()> {
        let t = Case::new(kind, shape, o, 50)?;
        let (fast, mean, var) = conv_bn_relu_train(&t.x, &t.params())?;
        let z = t.params().reference_conv(&t.x)?;
        let (slow, mean_ref, var_ref) = reference::batch_norm_train(&z, &t.gamma, &t.beta, 1e-5)?;
        let slow = slow.relu()?;
        check_close(&fast, &slow, 1e-5, "conv-bn-relu forward")?;
        check_close(&mean, &mean_ref, 1e-5, "conv-bn-relu mean")?;
        check_close(&var, &var_ref, 1e-5, "conv-bn-relu var")?;
        let vars = [
            (&t.x, "dx"),
            (&t.wt, "dw"),
            (&t.gamma, "dgamma"),
            (&t.beta, "dbeta"),
        ];
        let vars = vars.map(|(v, name)| (v.as_tensor(), name));
        let what = format!("conv-bn-relu {kind:?}");
        let [gf, gs] = check_grads([&fast, &slow], &t.up, &vars, 1e-4, &what)?;
        // The bias in front of the batch norm cancels: its gradient is zero up to rounding.
        let size = |t: &Tensor| -> Result<f32> { t.sqr()?.sum_all()?.sqrt()?.to_scalar() };
        let bias = |y: &Tensor| grads_of(y, &t.up, &[t.b.as_tensor()]);
        let (gf, gs) = ([gf, bias(&fast)?].concat(), [gs, bias(&slow)?].concat());
        for g in [&gf, &gs] {
            let (db, dbeta) = (size(&g[4])?, size(&g[3])?);
            assert!(db <= 1e-4 * dbeta, "bias gradient {db} against {dbeta}");
        }
        Ok(())
    }

    fn check_eval(kind: ConvKind, shape: [usize; 4], o: usize) -> Result<()> {
        let t = Case::new(kind, shape, o, 60)?;
        let fast = conv_bn_relu_eval(&t.x, &t.params())?;
        let z = t.params().reference_conv(&t.x)?;
        let (rm, rv) = &t.running;
        let slow = reference::batch_norm_eval(&z, &t.gamma, &t.beta, rm, rv, 1e-5)?.relu()?;
        check_close(&fast, &slow, 1e-5, "conv-bn-relu eval forward")?;
        let vars = [
            (&t.x, "dx"),
            (&t.wt, "dw"),
            (&t.b, "db"),
            (&t.beta, "dbeta"),
        ];
        let vars = vars.map(|(v, name)| (v.as_tensor(), name));
        let what = format!("conv-bn-relu eval {kind:?}");
        check_grads([&fast, &slow], &t.up, &vars, 1e-4, &what)?;
        // The scale is a constant on both paths: no gradient for gamma.
        for y in [&fast, &slow] {
            let g = (y * &t.up)?.sum_all()?.backward()?;
            assert!(g.get(&t.gamma).is_none());
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
