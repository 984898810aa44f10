//! Batch normalisation in training mode on the CPU, forward and backward in one op, optionally
//! followed by a ReLU. With `M = N*H*W` values per channel, `mean` and the biased `var` over them,
//! `s = 1 / sqrt(var + eps)` and `xhat = (x - mean) s`:
//!
//! - forward: `y = xhat * weight + bias` (then `max(y, 0)` with the ReLU);
//! - backward, with `g = dy` (times `[y > 0]` with the ReLU): `dbias = sum g`,
//!   `dweight = sum g xhat`, `dx = weight s (g - dbias / M - xhat dweight / M)`.

use std::sync::{Arc, Mutex};

use candle_core::{Layout, Result, Shape, Tensor};

use crate::WithStats;

use super::gemm::{for_each_images, sum_over_images, with_f32};
use super::op::{apply, grad_for, F32Op3, Grads3};
use super::shape::dims4;
use super::simd;

/// Per-channel batch statistics.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub mean: Vec<f32>,
    /// Biased variance.
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
}

/// Per-channel sums over a `[n, c, hw]` tensor: `sum over images of f(ch, at)`, where `at` is the
/// offset of the image's row of channel `ch`. The images are taken in memory order, a few at a
/// time on each thread.
fn channel_sums<const K: usize>(
    n: usize,
    c: usize,
    hw: usize,
    f: impl Fn(usize, usize) -> [f32; K] + Sync + Send,
) -> Vec<[f32; K]> {
    let flat = sum_over_images(n, c * K, |images, acc| {
        for img in images {
            for (ch, a) in acc.chunks_exact_mut(K).enumerate() {
                let v = f(ch, (img * c + ch) * hw);
                a.iter_mut().zip(v).for_each(|(a, v)| *a += v);
            }
        }
    });
    flat.chunks_exact(K)
        .map(|v| std::array::from_fn(|k| v[k]))
        .collect()
}

/// The batch's mean and biased variance per channel, in two passes (the squares are taken about
/// the mean).
pub(crate) fn statistics(x: &[f32], n: usize, c: usize, hw: usize, eps: f64) -> Stats {
    let m = (n * hw) as f64;
    let totals = channel_sums::<1>(n, c, hw, |_, at| [simd::sum(&x[at..at + hw])]);
    let mean: Vec<f32> = totals.iter().map(|t| (t[0] as f64 / m) as f32).collect();
    let squares = channel_sums::<1>(n, c, hw, |ch, at| {
        [simd::sum_sq_dev(&x[at..at + hw], mean[ch])]
    });
    let var: Vec<f32> = squares.iter().map(|s| (s[0] as f64 / m) as f32).collect();
    let inv_std = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    Stats { mean, var, inv_std }
}

/// Applies `out = a[ch] * x + b[ch]` (then the ReLU) image by image.
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    let mut y = vec![0f32; n * c * hw];
    for_each_images(&mut y, c * hw, |images, out| {
        let start = images.start * c * hw;
        let xs = &x[start..start + out.len()];
        for (j, (orow, xrow)) in out
            .chunks_exact_mut(hw)
            .zip(xs.chunks_exact(hw))
            .enumerate()
        {
            let ch = j % c;
            simd::affine(orow, xrow, mean[ch], scale[ch], shift[ch], relu);
        }
    });
    y
}

/// The parameter gradients of a batch norm, and the per-channel sum of its input gradient.
pub(crate) struct BnGrads {
    pub dweight: Vec<f32>,
    pub dbias: Vec<f32>,
    /// `sum_{n, p} dx[n, ch, p]`: the gradient of a bias added just before the batch norm. It is
    /// zero up to rounding (`a sum g + k sum (x - mean) + d M` with `d M = -a sum g`).
    pub dx_sums: Vec<f32>,
}

/// What a batch norm's backward pass reads of its forward pass: the input `x` and output `y`
/// (`n` images of `c` planes of `hw` values), the weight, the batch statistics and whether a
/// ReLU followed.
pub(crate) struct BnForward<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub weight: &'a [f32],
    pub st: &'a Stats,
    pub relu: bool,
}

/// The input gradient for the output gradient `dy`, written into `dx`, and the parameter
/// gradients.
pub(crate) fn backward_into(f: &BnForward, dy: &[f32], dx: &mut [f32]) -> BnGrads {
    let BnForward {
        x,
        y,
        n,
        c,
        hw,
        weight,
        st,
        relu,
    } = *f;
    let sums = channel_sums::<3>(n, c, hw, |ch, at| {
        let r = at..at + hw;
        simd::grad_sums(&x[r.clone()], &y[r.clone()], &dy[r], st.mean[ch], relu)
    });
    let count = (n * hw) as f32;
    // dx = a g + (x - mean) k + d per channel, with dweight = s sum g (x - mean), dbias = sum g.
    let coef: Vec<[f32; 4]> = (0..c)
        .map(|ch| {
            let s = st.inv_std[ch];
            let a = weight[ch] * s;
            let [db, sgx, _] = sums[ch];
            [st.mean[ch], a, -a * s * s * sgx / count, -a * db / count]
        })
        .collect();
    for_each_images(dx, c * hw, |images, out| {
        let start = images.start * c * hw;
        for (j, orow) in out.chunks_exact_mut(hw).enumerate() {
            let base = start + j * hw;
            let (xr, yr, gr) = (
                &x[base..base + hw],
                &y[base..base + hw],
                &dy[base..base + hw],
            );
            simd::bn_dx(orow, xr, yr, gr, coef[j % c], relu);
        }
    });
    BnGrads {
        dweight: (0..c).map(|ch| sums[ch][1] * st.inv_std[ch]).collect(),
        dbias: sums.iter().map(|s| s[0]).collect(),
        dx_sums: (0..c)
            .map(|ch| {
                let [_, a, k, d] = coef[ch];
                a * sums[ch][0] + k * sums[ch][2] + d * count
            })
            .collect(),
    }
}

/// Batch normalisation with batch statistics (and an optional ReLU) as a custom op over
/// `(x, weight, bias)`; the forward pass leaves the statistics in `stats`.
struct BatchNormTrain {
    eps: f64,
    relu: bool,
    stats: Arc<Mutex<Option<Stats>>>,
}

impl BatchNormTrain {
    fn stats(&self) -> Result<Stats> {
        let guard = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch norm: statistics lock poisoned".into()))?;
        guard
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch norm: no forward pass yet".into()))
    }
}

impl F32Op3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        if self.relu {
            "batch_norm_relu_train"
        } else {
            "batch_norm_train"
        }
    }

    fn forward(
        &self,
        [(x, lx), (weight, lw), (bias, lb)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let (n, c, h, w) = dims4(lx, "batch norm input")?;
        if lw.dims() != [c] || lb.dims() != [c] {
            let (wd, bd) = (lw.dims(), lb.dims());
            candle_core::bail!(
                "batch norm: expected weight and bias of [{c}], got {wd:?} and {bd:?}"
            );
        }
        let hw = h * w;
        let st = statistics(x, n, c, hw, self.eps);
        let scale: Vec<f32> = (0..c).map(|ch| weight[ch] * st.inv_std[ch]).collect();
        let y = normalize(x, n, c, hw, &st.mean, &scale, bias, self.relu);
        let mut guard = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch norm: statistics lock poisoned".into()))?;
        *guard = Some(st);
        Ok((y, Shape::from((n, c, h, w))))
    }

    fn backward(
        &self,
        [x, weight, bias]: [&Tensor; 3],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        let (n, c, h, w) = x.dims4()?;
        let st = self.stats()?;
        let (dx, g) = with_f32(x, |x| {
            with_f32(res, |y| {
                with_f32(grad, |dy| {
                    with_f32(weight, |weight| {
                        let (hw, relu) = (h * w, self.relu);
                        let f = BnForward {
                            x,
                            y,
                            n,
                            c,
                            hw,
                            weight,
                            st: &st,
                            relu,
                        };
                        let mut dx = vec![0f32; x.len()];
                        let g = backward_into(&f, dy, &mut dx);
                        Ok((dx, g))
                    })
                })
            })
        })?;
        let dx = grad_for(x, || Ok(dx))?;
        let dw = grad_for(weight, || Ok(g.dweight))?;
        let db = grad_for(bias, || Ok(g.dbias))?;
        Ok((dx, dw, db))
    }
}

/// Batch normalisation with batch statistics, then `max(., 0)` when `relu`, for CPU `f32`
/// tensors: `(y, mean, biased var)`, the statistics without gradient.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<WithStats> {
    let stats = Arc::new(Mutex::new(None));
    let op = BatchNormTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = apply(op, [x, weight, bias])?;
    let st = stats
        .lock()
        .map_err(|_| candle_core::Error::Msg("batch norm: statistics lock poisoned".into()))?
        .clone()
        .ok_or_else(|| {
            candle_core::Error::Msg("batch norm: the forward pass did not run".into())
        })?;
    let c = st.mean.len();
    let mean = Tensor::from_vec(st.mean, c, x.device())?;
    let var = Tensor::from_vec(st.var, c, x.device())?;
    Ok((y, mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_close, check_grads, random};
    use candle_core::{Device, Var};

    fn check(shape: [usize; 4], relu: bool) -> Result<()> {
        let dev = Device::Cpu;
        let c = shape[1];
        // An offset and a spread per channel, as after a convolution.
        let offset = (random(&[1, c, 1, 1], 30, &dev)? * 3.0)?;
        let x = random(&shape, 31, &dev)?.broadcast_add(&offset)?;
        let x = Var::from_tensor(&x)?;
        let weight = Var::from_tensor(&(random(&[c], 32, &dev)? + 1.0)?)?;
        let bias = Var::from_tensor(&random(&[c], 33, &dev)?)?;
        let up = random(&shape, 34, &dev)?;
        let (fast, mean, var) = batch_norm_train(&x, &weight, &bias, 1e-5, relu)?;
        let (slow, mean_ref, var_ref) =
            crate::reference::batch_norm_train(&x, &weight, &bias, 1e-5)?;
        let slow = if relu { slow.relu()? } else { slow };
        check_close(&fast, &slow, 1e-5, "batch norm forward")?;
        check_close(&mean, &mean_ref, 1e-5, "batch norm mean")?;
        check_close(&var, &var_ref, 1e-5, "batch norm var")?;
        let vars = [
            (x.as_tensor(), "dx"),
            (weight.as_tensor(), "dweight"),
            (bias.as_tensor(), "dbias"),
        ];
        check_grads(
            [&fast, &slow],
            &up,
            &vars,
            1e-4,
            &format!("batch norm (relu {relu})"),
        )?;
        Ok(())
    }

    #[test]
    fn matches_reference_at_the_networks_shapes() -> Result<()> {
        for relu in [false, true] {
            check([8, 64, 8, 8], relu)?;
            check([8, 16, 16, 16], relu)?;
            check([8, 64, 4, 4], relu)?;
        }
        Ok(())
    }

    #[test]
    fn matches_reference_for_small_batches() -> Result<()> {
        check([3, 3, 1, 2], false)?;
        check([1, 4, 3, 5], true)
    }

    #[test]
    fn normalises_a_hand_worked_channel() -> Result<()> {
        // One channel holding 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![1f32, 2., 3., 6.], (2, 1, 1, 2), &dev)?;
        let w = Tensor::from_vec(vec![2f32], 1, &dev)?;
        let b = Tensor::from_vec(vec![0.5f32], 1, &dev)?;
        let (y, mean, var) = batch_norm_train(&x, &w, &b, 0.0, false)?;
        assert_eq!(mean.to_vec1::<f32>()?, [3.0]);
        assert!((var.to_vec1::<f32>()?[0] - 3.5).abs() < 1e-6);
        let s = 1.0 / 3.5f32.sqrt();
        let want = [
            -2.0 * s * 2.0 + 0.5,
            -s * 2.0 + 0.5,
            0.5,
            3.0 * s * 2.0 + 0.5,
        ];
        for (a, b) in y.flatten_all()?.to_vec1::<f32>()?.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        Ok(())
    }
}
