//! The numerical kernels behind the layers; `layers` calls nothing else.
//!
//! Each has the meaning of its PyTorch counterpart. `f32` tensors on the CPU go through hand-made
//! kernels (direct AVX-512 convolutions in [`direct`] where the processor has AVX-512, matrix
//! products otherwise and for the transposed convolutions, fused passes for batch
//! normalisation) with their own backward passes, on candle's CPU threads; any other device or
//! dtype uses [`reference`](mod@reference), written with candle's tensor operations.

pub mod batch_norm;
pub mod conv;
pub mod conv_transpose;
pub mod direct;
pub mod fused;
pub mod gemm;
pub mod pool;
pub mod reference;
pub mod simd;
#[cfg(test)]
mod testing;

use std::cell::Cell;

use candle_core::{Result, Tensor};

pub use fused::ConvKind;
use gemm::is_cpu_f32;

thread_local! {
    static REFERENCE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// With `true`, every kernel called from this thread goes through [`reference`](mod@reference) (to compare or
/// time the two paths).
pub fn use_reference_only(on: bool) {
    REFERENCE_ONLY.with(|r| r.set(on));
}

/// Do these tensors take the fast CPU kernels?
fn fast(ts: &[&Tensor]) -> bool {
    let fast = !REFERENCE_ONLY.with(Cell::get) && ts.iter().all(|t| is_cpu_f32(t));
    if fast {
        gemm::keep_freed_memory();
    }
    fast
}

/// `y = conv2d(x, w, padding = 1) + b` for a `[O, I, 3, 3]` kernel.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        conv::conv3x3(x, w, b)
    } else {
        reference::conv3x3(x, w, b)
    }
}

/// `y = conv_transpose2d(x, w, stride = 2, padding = 1, output_padding = 1) + b` for a
/// `[I, O, 3, 3]` kernel: `[N, I, H, W] -> [N, O, 2H, 2W]`.
pub fn conv_transpose3x3_s2(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        conv_transpose::conv_transpose3x3_s2(x, w, b)
    } else {
        reference::conv_transpose3x3_s2(x, w, b)
    }
}

/// Batch normalisation with batch statistics over `(N, H, W)`:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, returning `(y, mean, var)` with the biased
/// variance (the last two detached, as PyTorch updates running statistics without gradient).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    if fast(&[x, weight, bias]) {
        batch_norm::batch_norm_train(x, weight, bias, eps, false)
    } else {
        reference::batch_norm_train(x, weight, bias, eps)
    }
}

/// Batch normalisation with running statistics, as in evaluation:
/// `y = x * s + (bias - running_mean * s)`, `s = weight / sqrt(running_var + eps)` (a constant
/// for autograd). Written with candle's operations on every device.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    reference::batch_norm_eval(x, weight, bias, running_mean, running_var, eps)
}

/// 2x2 max pooling, stride 2; the gradient of each window goes, whole, to its first maximum, as
/// in PyTorch.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if fast(&[x]) {
        pool::max_pool2x2(x)
    } else {
        reference::max_pool2x2(x)
    }
}

/// `y = max(bn(conv(x, w) + b), 0)` with batch statistics (the convolution being `kind`),
/// returning `(y, mean, var)` of `conv(x, w) + b` like [`batch_norm_train`].
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
    if fast(&[x, w, b, gamma, beta]) {
        fused::conv_bn_relu_train(kind, x, w, b, gamma, beta, eps)
    } else {
        let z = match kind {
            ConvKind::Conv3x3 => reference::conv3x3(x, w, b)?,
            ConvKind::Transpose3x3S2 => reference::conv_transpose3x3_s2(x, w, b)?,
        };
        let (y, mean, var) = reference::batch_norm_train(&z, gamma, beta, eps)?;
        Ok((y.relu()?, mean, var))
    }
}

/// `y = max(bn_eval(conv(x, w) + b), 0)` with the running statistics (the convolution being
/// `kind`), where `bn_eval` is [`reference::batch_norm_eval`].
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
    if fast(&[x, w, b, gamma, beta, running_mean, running_var]) {
        fused::conv_bn_relu_eval(kind, x, w, b, gamma, beta, running_mean, running_var, eps)
    } else {
        let z = match kind {
            ConvKind::Conv3x3 => reference::conv3x3(x, w, b)?,
            ConvKind::Transpose3x3S2 => reference::conv_transpose3x3_s2(x, w, b)?,
        };
        reference::batch_norm_eval(&z, gamma, beta, running_mean, running_var, eps)?.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check_close, rel_err};
    use candle_core::{backprop::GradStore, Device, Tensor};

    use crate::layers::mse;
    use crate::unet::is_trainable;
    use crate::{checkpoint, Rng, UNet};

    struct Pass {
        out: Tensor,
        loss: Tensor,
        grads: GradStore,
        stats: Vec<Tensor>,
        eval: Tensor,
    }

    /// A training-mode pass with gradients, then an evaluation-mode one, on the fast or the
    /// reference kernels; the BatchNorm statistics are put back afterwards.
    fn pass(unet: &UNet, x: &Tensor, t: &Tensor, noise: &Tensor, reference: bool) -> Pass {
        let saved: Vec<Tensor> = unet
            .batch_norms()
            .iter()
            .flat_map(|(_, bn)| [bn.running_mean.as_tensor(), bn.running_var.as_tensor()])
            .map(|t| t.copy().unwrap())
            .collect();
        super::use_reference_only(reference);
        let out = unet.forward_t(x, t, true).unwrap();
        let loss = mse(&out, noise).unwrap();
        let grads = loss.backward().unwrap();
        let eval = unet.forward_t(x, t, false).unwrap();
        super::use_reference_only(false);
        let mut stats = vec![];
        for ((_, bn), s) in unet.batch_norms().iter().zip(saved.chunks(2)) {
            stats.push(bn.running_mean.as_tensor().copy().unwrap());
            stats.push(bn.running_var.as_tensor().copy().unwrap());
            bn.running_mean.set(&s[0]).unwrap();
            bn.running_var.set(&s[1]).unwrap();
        }
        Pass {
            out,
            loss,
            grads,
            stats,
            eval,
        }
    }

    /// Seeded weights, with every BatchNorm shift away from zero: a channel that is constant over
    /// the batch (all its inputs zero) leaves its BatchNorm at exactly the shift, and at exactly
    /// 0 the two paths take different ReLU gradients (the fast one PyTorch's 0, candle's 1).
    fn seeded_unet(seed: u64) -> (UNet, candle_nn::VarMap) {
        let dev = Device::Cpu;
        let (unet, varmap) = checkpoint::new_unet(&dev).unwrap();
        let mut rng = Rng::new(seed);
        let mut data: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
        data.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, var) in data.iter().filter(|(n, _)| is_trainable(n)) {
            let t = var.as_tensor();
            let noise = rng.randn(t.shape(), &dev).unwrap();
            let new = if name.ends_with(".bias") && is_batch_norm(&unet, name) {
                ((noise * 0.2).unwrap() + 0.3).unwrap()
            } else {
                let bound = t
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                (noise * (bound as f64 / 2.0)).unwrap()
            };
            var.set(&new).unwrap();
        }
        (unet, varmap)
    }

    fn is_batch_norm(unet: &UNet, name: &str) -> bool {
        unet.batch_norms()
            .iter()
            .any(|(p, _)| name.strip_suffix(".bias") == Some(p))
    }

    /// The whole U-Net on the fast kernels against the same network on the reference ones: the
    /// outputs, loss and running statistics within 1e-5, and every parameter's gradient within
    /// 5e-3 (a bias feeding a BatchNorm, whose true gradient is zero, measured against the norm
    /// of all gradients). Gradients get a looser bound than the kernels' own tests (1e-4): the
    /// two forward passes differ by rounding, and where two values of a max-pool window, or a
    /// value and zero at a ReLU, lie closer than that, the paths route that gradient differently
    /// (the reference path does so against itself when its input moves by 3e-7), which moves
    /// some gradients by up to about 1e-3.
    #[test]
    fn unet_on_fast_kernels_matches_the_reference_kernels() {
        let dev = Device::Cpu;
        let (unet, varmap) = seeded_unet(3);
        let mut rng = Rng::new(7);
        let x = rng.randn((16, 1, 16, 16), &dev).unwrap();
        let t = rng.timesteps(16, 150, &dev).unwrap();
        let noise = rng.randn((16, 1, 16, 16), &dev).unwrap();
        let fast = pass(&unet, &x, &t, &noise, false);
        let slow = pass(&unet, &x, &t, &noise, true);
        // Different kernels round differently: equal outputs would mean one path ran twice.
        assert!(rel_err(&fast.out, &slow.out).unwrap() > 0.0);
        check_close(&fast.out, &slow.out, 1e-5, "training output").unwrap();
        check_close(&fast.loss, &slow.loss, 1e-5, "loss").unwrap();
        check_close(&fast.eval, &slow.eval, 1e-5, "evaluation output").unwrap();
        for (i, (a, b)) in fast.stats.iter().zip(&slow.stats).enumerate() {
            check_close(a, b, 1e-5, &format!("running statistic {i}")).unwrap();
        }
        let data = varmap.data().lock().unwrap();
        let params: Vec<_> = data.iter().filter(|(n, _)| is_trainable(n)).collect();
        let all: f64 = params
            .iter()
            .map(|(_, v)| {
                let g = slow.grads.get(v.as_tensor()).unwrap();
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            .sqrt();
        assert!(params.len() >= 50);
        for (name, var) in params {
            let a = fast.grads.get(var.as_tensor()).unwrap();
            let b = slow.grads.get(var.as_tensor()).unwrap();
            let norm = b
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let e = if norm.sqrt() > 1e-3 * all {
                rel_err(a, b).unwrap()
            } else {
                let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
                (d.to_scalar::<f32>().unwrap() as f64).sqrt() / all
            };
            assert!(e <= 5e-3, "gradient of {name}: relative error {e:e}");
        }
    }
}
