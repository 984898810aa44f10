//! The samplers driven by a perfect network, on data simple enough to solve exactly: every pixel
//! an independent Gaussian, `x_0 ~ N(m, s2)`.
//!
//! Then `x_t ~ N(sqrt(a_bar_t) m, a_bar_t s2 + 1 - a_bar_t)`, and the best noise prediction (the
//! one that minimises the training loss) is linear in `x_t`:
//!
//! ```text
//! e*(x_t, t) = E[e | x_t] = k_t (x_t - sqrt(a_bar_t) m),   k_t = sqrt(1 - a_bar_t) / (a_bar_t s2 + 1 - a_bar_t)
//! min MSE    = E[(e - e*)^2] = a_bar_t s2 / (a_bar_t s2 + 1 - a_bar_t)
//! ```
//!
//! With `e*` in place of the network every sampler step is affine in `x` plus independent noise,
//! `x' = g x + h + sigma z`, so a Gaussian start `N(mu, v)` stays Gaussian and its moments follow
//! `mu' = g mu + h`, `v' = g^2 v + sigma^2`. Whatever goes wrong here is the schedule's or the
//! sampler's doing, not the network's.

use anyhow::{bail, Result};

use diffusion::sample::ddim_timesteps;
use diffusion::schedule::ScheduleValues;

/// One pixel's data distribution `N(mean, var)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianPixel {
    pub mean: f64,
    pub var: f64,
}

/// Mean and variance of a Gaussian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub mean: f64,
    pub var: f64,
}

impl Moments {
    /// `N(0, 1)`, where the samplers start.
    pub const STANDARD: Moments = Moments {
        mean: 0.0,
        var: 1.0,
    };
}

/// The variance of the noise a DDPM reverse step adds at `t >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseVariance {
    /// `B[t-1]`, the course notebook's (and [`diffusion::reverse_q`]'s).
    Course,
    /// `B[t]`, Ho et al.'s first choice.
    Beta,
    /// `B~[t] = (1 - a_bar[t-1]) / (1 - a_bar[t]) B[t]`, the posterior variance, Ho et al.'s second.
    Posterior,
}

fn check_t(v: &ScheduleValues, t: usize) -> Result<()> {
    if t >= v.a_bar.len() {
        bail!(
            "timestep {t} is out of range: timesteps run from 0 to T-1 = {}",
            v.a_bar.len().saturating_sub(1)
        );
    }
    Ok(())
}

/// `q(x_t)` for this pixel: `N(sqrt(a_bar_t) m, a_bar_t s2 + 1 - a_bar_t)`.
pub fn marginal(v: &ScheduleValues, t: usize, px: GaussianPixel) -> Result<Moments> {
    check_t(v, t)?;
    let ab = v.a_bar[t];
    Ok(Moments {
        mean: ab.sqrt() * px.mean,
        var: ab * px.var + 1.0 - ab,
    })
}

/// `k_t = sqrt(1 - a_bar_t) / (a_bar_t s2 + 1 - a_bar_t)`, the slope of `e*` in `x_t`.
pub fn noise_gain(v: &ScheduleValues, t: usize, px: GaussianPixel) -> Result<f64> {
    let m = marginal(v, t, px)?;
    Ok((1.0 - v.a_bar[t]).sqrt() / m.var)
}

/// The perfect network's output `e*(x_t, t) = k_t (x_t - sqrt(a_bar_t) m)`.
pub fn optimal_noise(v: &ScheduleValues, t: usize, px: GaussianPixel, x_t: f64) -> Result<f64> {
    let m = marginal(v, t, px)?;
    Ok(noise_gain(v, t, px)? * (x_t - m.mean))
}

/// The lowest loss any network can reach at `t`: `a_bar_t s2 / (a_bar_t s2 + 1 - a_bar_t)`.
pub fn min_noise_mse(v: &ScheduleValues, t: usize, px: GaussianPixel) -> Result<f64> {
    let m = marginal(v, t, px)?;
    Ok(v.a_bar[t] * px.var / m.var)
}

/// The variance the DDPM step adds at `t` (`0` at `t = 0`).
pub fn reverse_variance(v: &ScheduleValues, t: usize, which: ReverseVariance) -> Result<f64> {
    check_t(v, t)?;
    if t == 0 {
        return Ok(0.0);
    }
    Ok(match which {
        ReverseVariance::Course => v.b[t - 1],
        ReverseVariance::Beta => v.b[t],
        ReverseVariance::Posterior => (1.0 - v.a_bar[t - 1]) / (1.0 - v.a_bar[t]) * v.b[t],
    })
}

/// The course's DDPM step with `e*`, as `x' = g x + h + sigma z`: returns `(g, h, sigma^2)` with
/// `g = (1 - c_t k_t) / sqrt(a_t)`, `h = c_t k_t sqrt(a_bar_t) m / sqrt(a_t)`,
/// `c_t = pred_noise_coeff[t]`.
pub fn ddpm_step(
    v: &ScheduleValues,
    t: usize,
    px: GaussianPixel,
    which: ReverseVariance,
) -> Result<(f64, f64, f64)> {
    let k = noise_gain(v, t, px)?;
    let ck = v.pred_noise_coeff[t] * k;
    let g = (1.0 - ck) * v.sqrt_a_inv[t];
    let h = ck * v.sqrt_a_bar[t] * px.mean * v.sqrt_a_inv[t];
    Ok((g, h, reverse_variance(v, t, which)?))
}

/// Moments of the DDPM sampler's output (`t = T-1, ..., 0`) from a start `N(mu, var)`.
pub fn ddpm_moments(
    v: &ScheduleValues,
    px: GaussianPixel,
    start: Moments,
    which: ReverseVariance,
) -> Result<Moments> {
    let mut m = start;
    for t in (0..v.a_bar.len()).rev() {
        let (g, h, s2) = ddpm_step(v, t, px, which)?;
        m = Moments {
            mean: g * m.mean + h,
            var: g * g * m.var + s2,
        };
    }
    Ok(m)
}

/// Moments of the DDIM (`eta = 0`) output in `steps` steps, without the `[-1, 1]` clipping of
/// `x0_hat` that [`diffusion::sample_ddim`] applies (clipping would make the step non-linear):
///
/// ```text
/// x0_hat = (x - sqrt(1 - a_bar_t) e*) / sqrt(a_bar_t)
/// x'     = sqrt(a_bar_prev) x0_hat + sqrt(1 - a_bar_prev) e*
/// ```
pub fn ddim_moments(
    v: &ScheduleValues,
    px: GaussianPixel,
    start: Moments,
    steps: usize,
) -> Result<Moments> {
    let ts = ddim_timesteps(v.a_bar.len(), steps)?;
    let mut m = start;
    for (i, &t) in ts.iter().enumerate() {
        let ab = v.a_bar[t];
        let prev = ts.get(i + 1).map_or(1.0, |&p| v.a_bar[p]);
        let k = noise_gain(v, t, px)?;
        // e* = k x - k sqrt(ab) m, written as (slope, offset)
        let (e_g, e_h) = (k, -k * ab.sqrt() * px.mean);
        let x0_g = (1.0 - (1.0 - ab).sqrt() * e_g) / ab.sqrt();
        let x0_h = -(1.0 - ab).sqrt() * e_h / ab.sqrt();
        let g = prev.sqrt() * x0_g + (1.0 - prev).sqrt() * e_g;
        let h = prev.sqrt() * x0_h + (1.0 - prev).sqrt() * e_h;
        m = Moments {
            mean: g * m.mean + h,
            var: g * g * m.var,
        };
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::ddpm::{cosine_values, course_values};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    const UNIT: GaussianPixel = GaussianPixel {
        mean: 0.0,
        var: 1.0,
    };

    #[test]
    fn unit_gaussian_data_is_a_fixed_point_with_beta_variance() {
        // x_0 ~ N(0, 1): every x_t ~ N(0, 1); e* = sqrt(1 - ab) x, and the DDPM mean is
        // (x - B/sqrt(1-ab) sqrt(1-ab) x)/sqrt(a) = sqrt(a) x: variance a + B = 1 per step.
        let v = course_values().unwrap();
        for t in [0, 75, 149] {
            assert!(close(
                noise_gain(&v, t, UNIT).unwrap(),
                (1.0 - v.a_bar[t]).sqrt(),
                1e-15
            ));
            let (g, h, _) = ddpm_step(&v, t, UNIT, ReverseVariance::Beta).unwrap();
            assert!(close(g, v.a[t].sqrt(), 1e-15) && h == 0.0);
        }
        let out = ddpm_moments(&v, UNIT, Moments::STANDARD, ReverseVariance::Beta).unwrap();
        // the last step adds no noise: a[0] * 1
        assert!(close(out.var, 0.9999, 1e-12));
    }

    #[test]
    fn course_variance_closed_form() {
        // with B[t-1] each step adds D = B[t] - B[t-1] less variance; unrolled:
        // v_out = a[0] - D * sum_{j=0}^{148} a_bar[j]
        let v = course_values().unwrap();
        let d = 0.0199 / 149.0;
        let sum: f64 = v.a_bar[..149].iter().sum();
        let out = ddpm_moments(&v, UNIT, Moments::STANDARD, ReverseVariance::Course).unwrap();
        assert!(close(out.var, 0.9999 - d * sum, 1e-12));
    }

    #[test]
    fn a_deterministic_pixel_is_recovered_exactly() {
        // s2 -> 0: e* recovers the noise exactly and the last step returns m whatever the start
        let v = course_values().unwrap();
        let px = GaussianPixel {
            mean: -1.0,
            var: 1e-12,
        };
        let out = ddpm_moments(&v, px, Moments::STANDARD, ReverseVariance::Course).unwrap();
        assert!(close(out.mean, -1.0, 1e-6) && out.var < 1e-6);
    }

    #[test]
    fn the_true_start_gives_the_data_mean() {
        let v = course_values().unwrap();
        let px = GaussianPixel {
            mean: -0.4,
            var: 0.4,
        };
        let start = marginal(&v, 149, px).unwrap();
        for which in [
            ReverseVariance::Course,
            ReverseVariance::Beta,
            ReverseVariance::Posterior,
        ] {
            let out = ddpm_moments(&v, px, start, which).unwrap();
            assert!(close(out.mean, -0.4, 1e-12), "{which:?}");
        }
        // DDIM from the true start keeps the mean too (its mean map is exact for any step count)
        for steps in [150, 50, 10] {
            let out = ddim_moments(&v, px, start, steps).unwrap();
            assert!(close(out.mean, -0.4, 1e-12), "{steps}");
        }
    }

    #[test]
    fn cosine_start_is_already_the_marginal() {
        let v = cosine_values(150).unwrap();
        let px = GaussianPixel {
            mean: -0.4,
            var: 0.4,
        };
        let m = marginal(&v, 149, px).unwrap();
        assert!(m.mean.abs() < 2e-4 && close(m.var, 1.0, 1e-6));
    }

    #[test]
    fn min_mse_limits() {
        let v = course_values().unwrap();
        // unit data: a_bar s2 / (a_bar s2 + 1 - a_bar) = a_bar
        assert!(close(
            min_noise_mse(&v, 149, UNIT).unwrap(),
            v.a_bar[149],
            1e-15
        ));
        assert!(optimal_noise(&v, 150, UNIT, 0.0).is_err());
        assert_eq!(reverse_variance(&v, 0, ReverseVariance::Beta).unwrap(), 0.0);
    }
}
