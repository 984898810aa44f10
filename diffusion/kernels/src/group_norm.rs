//! Group normalisation on the CPU, optionally followed by a GELU or a ReLU, forward and backward
//! in one op. With `G` groups of `C / G` channels, each image's group holds `M = (C / G) H W`
//! values; `mean` and the biased `var` are over them, `s = 1 / sqrt(var + eps)`,
//! `xhat = (x - mean) s`:
//!
//! - forward: `z = xhat * weight[c] + bias[c]`, `y = act(z)`;
//! - backward, with `g = dy * act'(z)`: `dbias[c] = sum g`, `dweight[c] = sum g xhat`, and per
//!   image and group, with `d = g weight[c]`, `dx = s (d - mean(d) - xhat mean(d xhat))`.
//!
//! The GELU is the exact one, `z Φ(z)`, with `Φ(z) = (1 + erf(z / sqrt 2)) / 2` ([`erf`] to
//! within 2e-7); its derivative is `Φ(z) + z φ(z)`.

use candle_core::{Layout, Result, Shape, Tensor};

use std::sync::Mutex;

use super::gemm::{for_each_images, with_f32};
use super::op::{apply, grad_for, F32Op3, Grads3};
use super::shape::dims4;

/// What follows the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Gelu,
}

/// `erf(x)` as a rational function of `x` (the minimax fit Eigen and XLA use for `f32`, on
/// `x` clamped to `[-4, 4]`, where `erf` is 1 to within 2e-8), with no branch or `exp`, so that
/// loops over it vectorise.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_6e-3;
    p = x2 * p - 1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329_2e-3;
    q = x2 * q - 1.426_474e-2;
    x * p / q
}

/// `e^x` for `x <= 0` (larger values are clamped to 0) to about 2e-7 relative: `x = k ln 2 + r`
/// with `|r| <= ln 2 / 2`, `e^r` by its Taylor polynomial of degree 6, `2^k` from the exponent
/// bits. No branch or call, so that loops over it vectorise.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.clamp(-87.0, 0.0);
    // round to the nearest integer by adding 1.5 * 2^23: the sum's low bits then hold it
    let shifted = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let k = shifted - 12_582_912.0;
    let ki = shifted.to_bits() as i32 - 0x4B40_0000;
    // ln 2 in two parts (Cody and Waite), so that `r` keeps its precision
    let r = (x - k * 0.693_359_4) - k * -2.121_944_4e-4;
    let mut e = 1.0 / 720.0;
    e = e * r + 1.0 / 120.0;
    e = e * r + 1.0 / 24.0;
    e = e * r + 1.0 / 6.0;
    e = e * r + 0.5;
    e = e * r + 1.0;
    e = e * r + 1.0;
    e * f32::from_bits(((ki + 127) as u32) << 23)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2 pi)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

impl Act {
    #[inline(always)]
    fn apply(self, z: f32) -> f32 {
        match self {
            Act::None => z,
            Act::Relu => z.max(0.0),
            Act::Gelu => z * 0.5 * (1.0 + erf(z * FRAC_1_SQRT_2)),
        }
    }

    /// `act'(z)`.
    #[inline(always)]
    fn derivative(self, z: f32) -> f32 {
        match self {
            Act::None => 1.0,
            Act::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Gelu => {
                let cdf = 0.5 * (1.0 + erf(z * FRAC_1_SQRT_2));
                cdf + z * FRAC_1_SQRT_2PI * exp_nonpositive(-0.5 * z * z)
            }
        }
    }
}

/// `sum f(v)` in 16 lanes (vectorised, and more accurate than one running total).
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|a| f(*a)).sum();
    for c in chunks {
        for (l, a) in lanes.iter_mut().zip(c) {
            *l += f(*a);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// Mean and `1 / sqrt(var + eps)` of each image's group, `[n * groups]` each.
fn statistics(x: &[f32], groups_total: usize, m: usize, eps: f64) -> (Vec<f32>, Vec<f32>) {
    let (mut mean, mut inv_std) = (vec![0f32; groups_total], vec![0f32; groups_total]);
    for (i, v) in x.chunks_exact(m).enumerate() {
        let mu = lane_sum(v, |a| a) / m as f32;
        let var = lane_sum(v, |a| (a - mu) * (a - mu)) / m as f32;
        mean[i] = mu;
        inv_std[i] = (1.0 / (var as f64 + eps).sqrt()) as f32;
    }
    (mean, inv_std)
}

/// `out = dy act'(z)` over one channel's row `r` (`deriv` maps `xhat` to `act'(z)`), returning
/// `(sum out xhat, sum out)`. Generic over `deriv`, so that each activation gets its own
/// vectorised loop.
#[inline(always)]
fn gz_row(
    out: &mut [f32],
    xs: &[f32],
    dys: &[f32],
    r: std::ops::Range<usize>,
    mu: f32,
    s: f32,
    deriv: impl Fn(f32) -> f32,
) -> (f32, f32) {
    let (out, xs) = (&mut out[r.clone()], &xs[r.clone()]);
    for ((o, v), d) in out.iter_mut().zip(xs).zip(&dys[r]) {
        *o = d * deriv((v - mu) * s);
    }
    (lane_dot(out, xs, mu, s), lane_sum(out, |a| a))
}

/// `sum a (x - mu) s` over two rows, in 16 lanes.
fn lane_dot(a: &[f32], x: &[f32], mu: f32, s: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cx) = (a.chunks_exact(16), x.chunks_exact(16));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cx.remainder())
        .map(|(a, x)| a * (x - mu) * s)
        .sum();
    for (ca, cx) in ca.zip(cx) {
        for ((l, a), x) in lanes.iter_mut().zip(ca).zip(cx) {
            *l += a * (x - mu) * s;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

struct GroupNorm {
    groups: usize,
    eps: f64,
    act: Act,
}

impl GroupNorm {
    fn check(&self, lx: &Layout, lw: &Layout, lb: &Layout) -> Result<(usize, usize)> {
        let (_, c, h, w) = dims4(lx, "group norm input")?;
        if lw.dims() != [c] || lb.dims() != [c] {
            let (wd, bd) = (lw.dims(), lb.dims());
            candle_core::bail!(
                "group norm: expected weight and bias of [{c}], got {wd:?} and {bd:?}"
            );
        }
        if self.groups == 0 || c % self.groups != 0 {
            candle_core::bail!(
                "group norm: {} groups do not divide {c} channels",
                self.groups
            );
        }
        Ok((c, h * w))
    }
}

impl F32Op3 for GroupNorm {
    fn name(&self) -> &'static str {
        match self.act {
            Act::None => "group_norm",
            Act::Relu => "group_norm_relu",
            Act::Gelu => "group_norm_gelu",
        }
    }

    fn forward(
        &self,
        [(x, lx), (weight, lw), (bias, lb)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let (c, hw) = self.check(lx, lw, lb)?;
        let (g, cg) = (self.groups, c / self.groups);
        let mut y = vec![0f32; x.len()];
        for_each_images(&mut y, c * hw, |images, out| {
            let start = images.start * c * hw;
            let xs = &x[start..start + out.len()];
            let (mean, inv_std) = statistics(xs, images.len() * g, cg * hw, self.eps);
            for (row, (orow, xrow)) in out
                .chunks_exact_mut(hw)
                .zip(xs.chunks_exact(hw))
                .enumerate()
            {
                let (ch, group) = (row % c, row / cg);
                let (mu, s) = (mean[group], inv_std[group]);
                let (a, b) = (weight[ch] * s, bias[ch] - weight[ch] * s * mu);
                let pairs = orow.iter_mut().zip(xrow);
                match self.act {
                    Act::None => pairs.for_each(|(o, v)| *o = a * v + b),
                    Act::Relu => pairs.for_each(|(o, v)| *o = Act::Relu.apply(a * v + b)),
                    Act::Gelu => pairs.for_each(|(o, v)| *o = Act::Gelu.apply(a * v + b)),
                }
            }
        });
        Ok((y, lx.shape().clone()))
    }

    fn backward(
        &self,
        [x, weight, bias]: [&Tensor; 3],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        let (_, c, h, w) = x.dims4()?;
        let (hw, g) = (h * w, self.groups);
        let cg = c / g;
        let m = (cg * hw) as f32;
        // dweight, then dbias: each thread sums over its images, then adds to the total
        let dwb = Mutex::new(vec![0f32; 2 * c]);
        let dx = with_f32(x, |x| {
            with_f32(grad, |dy| {
                with_f32(weight, |weight| {
                    with_f32(bias, |bias| {
                        let mut dx = vec![0f32; x.len()];
                        for_each_images(&mut dx, c * hw, |images, out| {
                            let mut acc = vec![0f32; 2 * c];
                            for (k, img) in images.clone().enumerate() {
                                let at = img * c * hw;
                                let (xs, dys) = (&x[at..at + c * hw], &dy[at..at + c * hw]);
                                let out = &mut out[k * c * hw..(k + 1) * c * hw];
                                let (mean, inv_std) = statistics(xs, g, cg * hw, self.eps);
                                // this image's sum of g xhat per channel, then of g
                                let mut sums = vec![0f32; 2 * c];
                                // out = g = dy act'(z), channel by channel
                                for ch in 0..c {
                                    let (s, mu) = (inv_std[ch / cg], mean[ch / cg]);
                                    let (wc, bc) = (weight[ch], bias[ch]);
                                    let r = ch * hw..(ch + 1) * hw;
                                    let (sw, sb) = match self.act {
                                        Act::None => gz_row(out, xs, dys, r, mu, s, |_| 1.0),
                                        Act::Relu => gz_row(out, xs, dys, r, mu, s, |x| {
                                            Act::Relu.derivative(x * wc + bc)
                                        }),
                                        Act::Gelu => gz_row(out, xs, dys, r, mu, s, |x| {
                                            Act::Gelu.derivative(x * wc + bc)
                                        }),
                                    };
                                    sums[ch] = sw;
                                    sums[c + ch] = sb;
                                }
                                // dx = s (d - mean(d) - xhat mean(d xhat)) with d = out weight:
                                // the two sums are the weighted per-channel sums above
                                for group in 0..g {
                                    let (s, mu) = (inv_std[group], mean[group]);
                                    let chs = group * cg..(group + 1) * cg;
                                    let md = chs
                                        .clone()
                                        .map(|ch| weight[ch] * sums[c + ch])
                                        .sum::<f32>()
                                        / m;
                                    let mdx =
                                        chs.clone().map(|ch| weight[ch] * sums[ch]).sum::<f32>()
                                            / m;
                                    for ch in chs {
                                        let wc = weight[ch];
                                        let r = ch * hw..(ch + 1) * hw;
                                        for (o, v) in out[r.clone()].iter_mut().zip(&xs[r]) {
                                            *o = s * (*o * wc - md - (v - mu) * s * mdx);
                                        }
                                    }
                                }
                                acc.iter_mut().zip(&sums).for_each(|(a, v)| *a += v);
                            }
                            if let Ok(mut total) = dwb.lock() {
                                total.iter_mut().zip(&acc).for_each(|(t, a)| *t += a);
                            }
                        });
                        Ok(dx)
                    })
                })
            })
        })?;
        let dwb = dwb
            .into_inner()
            .map_err(|_| candle_core::Error::Msg("group norm: gradient lock poisoned".into()))?;
        let dxt = grad_for(x, || Ok(dx))?;
        let dw = grad_for(weight, || Ok(dwb[..c].to_vec()))?;
        let db = grad_for(bias, || Ok(dwb[c..].to_vec()))?;
        Ok((dxt, dw, db))
    }
}

/// `act(group_norm(x) * weight + bias)` for CPU `f32` tensors (`[N, C, H, W]`, weight and bias
/// `[C]`).
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    act: Act,
) -> Result<Tensor> {
    apply(GroupNorm { groups, eps, act }, [x, weight, bias])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_close, check_grads, random};
    use candle_core::{Device, Var};

    fn check(shape: [usize; 4], groups: usize, act: Act) -> Result<()> {
        let dev = Device::Cpu;
        let c = shape[1];
        let offset = (random(&[1, c, 1, 1], 40, &dev)? * 2.0)?;
        let x = Var::from_tensor(&random(&shape, 41, &dev)?.broadcast_add(&offset)?)?;
        let weight = Var::from_tensor(&(random(&[c], 42, &dev)? + 1.0)?)?;
        let bias = Var::from_tensor(&random(&[c], 43, &dev)?)?;
        let up = random(&shape, 44, &dev)?;
        let fast = group_norm(&x, &weight, &bias, groups, 1e-5, act)?;
        let slow = crate::reference::group_norm(&x, &weight, &bias, groups, 1e-5, act)?;
        let what = format!("group norm {shape:?} / {groups} ({act:?})");
        check_close(&fast, &slow, 1e-5, &what)?;
        let vars = [
            (x.as_tensor(), "dx"),
            (weight.as_tensor(), "dweight"),
            (bias.as_tensor(), "dbias"),
        ];
        check_grads([&fast, &slow], &up, &vars, 1e-4, &what)?;
        Ok(())
    }

    #[test]
    fn matches_reference_at_the_networks_shapes() -> Result<()> {
        for act in [Act::None, Act::Relu, Act::Gelu] {
            check([4, 64, 16, 16], 32, act)?;
            check([4, 64, 8, 8], 8, act)?;
            check([3, 128, 4, 4], 32, act)?;
        }
        Ok(())
    }

    #[test]
    fn matches_reference_for_odd_shapes() -> Result<()> {
        check([1, 6, 3, 5], 3, Act::Gelu)?;
        check([2, 4, 1, 1], 1, Act::None)
    }

    #[test]
    fn erf_is_within_its_bound() {
        // erf at a few points, from tables
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.5, -0.966_105_146_5),
        ] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn the_exponential_is_within_its_bound() {
        for i in 0..=2000 {
            let x = -20.0 * i as f32 / 2000.0;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}) = {got}, not {want}"
            );
        }
    }

    #[test]
    fn a_group_count_that_does_not_divide_the_channels_is_an_error() {
        let dev = Device::Cpu;
        let x = random(&[1, 6, 2, 2], 1, &dev).unwrap();
        let w = Tensor::ones(6, candle_core::DType::F32, &dev).unwrap();
        let e = group_norm(&x, &w, &w, 4, 1e-5, Act::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 groups do not divide 6"), "{e}");
    }
}
