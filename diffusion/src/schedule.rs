//! The noise schedule: how much noise each forward step adds.
//!
//! With `B_t` (beta) the variance added at step `t`:
//!
//! ```text
//! a_t                  = 1 - B_t
//! a_bar_t              = a_0 * a_1 * ... * a_t
//! sqrt_a_bar_t         = sqrt(a_bar_t)               (how much of x_0 is left in x_t)
//! sqrt_one_minus_a_bar = sqrt(1 - a_bar_t)           (how much noise is in x_t)
//! sqrt_a_inv_t         = sqrt(1 / a_t)
//! pred_noise_coeff_t   = (1 - a_t) / sqrt(1 - a_bar_t)
//! ```
//!
//! Everything is computed in f64 and cast to f32 at the end, so the cumulative product loses no
//! precision.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// The schedule's arrays, each of length `T`, as f32 tensors on the chosen device.
///
/// ```
/// use diffusion::Schedule;
/// let s = Schedule::linear(150, 0.0001, 0.02, &candle_core::Device::Cpu).unwrap();
/// assert_eq!(s.len(), 150);
/// let a_bar = s.a_bar.to_vec1::<f32>().unwrap();
/// assert!(a_bar[0] > a_bar[149]);
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `B_t`, the variance added by forward step `t`.
    pub b: Tensor,
    /// `a_t = 1 - B_t`.
    pub a: Tensor,
    /// `a_bar_t = prod_{s <= t} a_s`.
    pub a_bar: Tensor,
    /// `sqrt(a_bar_t)`.
    pub sqrt_a_bar: Tensor,
    /// `sqrt(1 - a_bar_t)`.
    pub sqrt_one_minus_a_bar: Tensor,
    /// `sqrt(1 / a_t)`.
    pub sqrt_a_inv: Tensor,
    /// `(1 - a_t) / sqrt(1 - a_bar_t)`.
    pub pred_noise_coeff: Tensor,
    host: ScheduleValues,
}

/// The same arrays in f64 on the host, for scalar use (the reverse step, the theory answers).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleValues {
    pub b: Vec<f64>,
    pub a: Vec<f64>,
    pub a_bar: Vec<f64>,
    pub sqrt_a_bar: Vec<f64>,
    pub sqrt_one_minus_a_bar: Vec<f64>,
    pub sqrt_a_inv: Vec<f64>,
    pub pred_noise_coeff: Vec<f64>,
}

impl ScheduleValues {
    /// Derives every array from the betas.
    pub fn from_betas(b: Vec<f64>) -> Self {
        let a: Vec<f64> = b.iter().map(|b| 1.0 - b).collect();
        let a_bar: Vec<f64> = a
            .iter()
            .scan(1.0, |acc, a| {
                *acc *= a;
                Some(*acc)
            })
            .collect();
        let sqrt_a_bar = a_bar.iter().map(|x| x.sqrt()).collect();
        let sqrt_one_minus_a_bar: Vec<f64> = a_bar.iter().map(|x| (1.0 - x).sqrt()).collect();
        let sqrt_a_inv = a.iter().map(|x| (1.0 / x).sqrt()).collect();
        let pred_noise_coeff = a
            .iter()
            .zip(&sqrt_one_minus_a_bar)
            .map(|(a, s)| (1.0 - a) / s)
            .collect();
        Self {
            b,
            a,
            a_bar,
            sqrt_a_bar,
            sqrt_one_minus_a_bar,
            sqrt_a_inv,
            pred_noise_coeff,
        }
    }
}

/// Which schedule a run uses over its `T` steps: the course's linear one
/// ([`Schedule::linear`] from `B = 0.0001` to `0.02`) or the cosine one ([`Schedule::cosine`]).
///
/// ```
/// use diffusion::schedule::ScheduleKind;
/// let dev = candle_core::Device::Cpu;
/// let last = |k: ScheduleKind| *k.build(150, &dev).unwrap().values().a_bar.last().unwrap();
/// assert!((last(ScheduleKind::Linear) - 0.2192).abs() < 1e-4); // x_149 keeps 0.47 x_0
/// assert!(last(ScheduleKind::Cosine) < 1e-6); // pure noise
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleKind {
    #[default]
    Linear,
    Cosine,
}

impl ScheduleKind {
    /// The schedule over `t` timesteps.
    pub fn build(self, t: usize, device: &Device) -> Result<Schedule> {
        use crate::settings::{BETA_END, BETA_START};
        match self {
            Self::Linear => Schedule::linear(t, BETA_START, BETA_END, device),
            Self::Cosine => Schedule::cosine(t, device),
        }
    }
}

/// `torch.linspace(start, end, t)` in f64.
pub fn linspace(start: f64, end: f64, t: usize) -> Vec<f64> {
    match t {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (t - 1) as f64;
            (0..t).map(|i| start + step * i as f64).collect()
        }
    }
}

impl Schedule {
    /// The course's schedule: `B = linspace(start, end, t)`.
    pub fn linear(t: usize, start: f64, end: f64, device: &Device) -> Result<Self> {
        if t == 0 {
            bail!("a schedule needs at least one timestep (got T = 0)");
        }
        if !(0.0 < start && start <= end && end < 1.0) {
            bail!("linear schedule needs 0 < start <= end < 1, got start = {start}, end = {end}");
        }
        Self::from_betas(linspace(start, end, t), device)
    }

    /// The course's default: `Schedule::linear(150, 0.0001, 0.02)`.
    pub fn course(device: &Device) -> Result<Self> {
        use crate::settings::*;
        Self::linear(T, BETA_START, BETA_END, device)
    }

    /// The cosine schedule of Nichol & Dhariwal (2021), "Improved DDPM":
    ///
    /// ```text
    /// f(t)     = cos^2( (t/T + s) / (1 + s) * pi/2 ),  s = 0.008
    /// a_bar_t  = f(t) / f(0)
    /// B_t      = min(1 - a_bar_{t+1} / a_bar_t, 0.999)   for t = 0..T-1
    /// ```
    ///
    /// It destroys information more evenly over time than the linear schedule, which at small `T`
    /// leaves much of the image in place until late.
    pub fn cosine(t: usize, device: &Device) -> Result<Self> {
        if t == 0 {
            bail!("a schedule needs at least one timestep (got T = 0)");
        }
        let s = 0.008;
        let f = |i: usize| {
            let x = (i as f64 / t as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2;
            x.cos().powi(2)
        };
        let betas = (0..t).map(|i| (1.0 - f(i + 1) / f(i)).min(0.999)).collect();
        Self::from_betas(betas, device)
    }

    /// A schedule from any betas in (0, 1).
    pub fn from_betas(b: Vec<f64>, device: &Device) -> Result<Self> {
        if let Some((i, b)) = b
            .iter()
            .enumerate()
            .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
        {
            bail!("beta must lie in (0, 1); beta[{i}] = {b}");
        }
        let host = ScheduleValues::from_betas(b);
        let to = |v: &[f64]| -> Result<Tensor> {
            let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
            Ok(Tensor::from_vec(v, v_len(&host), device)?)
        };
        Ok(Self {
            b: to(&host.b)?,
            a: to(&host.a)?,
            a_bar: to(&host.a_bar)?,
            sqrt_a_bar: to(&host.sqrt_a_bar)?,
            sqrt_one_minus_a_bar: to(&host.sqrt_one_minus_a_bar)?,
            sqrt_a_inv: to(&host.sqrt_a_inv)?,
            pred_noise_coeff: to(&host.pred_noise_coeff)?,
            host,
        })
    }

    /// Number of timesteps `T`.
    pub fn len(&self) -> usize {
        self.host.b.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.host.b.is_empty()
    }

    /// The arrays in f64 on the host.
    pub fn values(&self) -> &ScheduleValues {
        &self.host
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        self.b.device()
    }
}

fn v_len(h: &ScheduleValues) -> usize {
    h.b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `torch.linspace(0.1, 0.2, t)` for t = 0, 1, 2 and 5: empty, `[start]` (no step to divide
    /// by), both ends, and the quarters.
    #[test]
    fn linspace_is_torchs_at_every_length() {
        assert!(linspace(0.1, 0.2, 0).is_empty());
        assert_eq!(linspace(0.1, 0.2, 1), [0.1]);
        assert_eq!(linspace(0.1, 0.2, 2), [0.1, 0.2]);
        let five = linspace(0.1, 0.2, 5);
        for (got, want) in five.iter().zip([0.1, 0.125, 0.15, 0.175, 0.2]) {
            assert!((got - want).abs() < 1e-15, "{got} against {want}");
        }
    }

    /// The cosine schedule's `a_bar` is its betas' product; without the clip it telescopes to
    /// `f(t + 1) / f(0)`, checked here against `f` written out with Nichol & Dhariwal's `s`.
    /// The last beta, where `f(T) = cos^2(pi / 2) = 0`, is the clip 0.999.
    #[test]
    fn the_cosine_schedule_telescopes_to_its_f_and_clips_its_last_beta() -> Result<()> {
        let t = 150;
        let s = Schedule::cosine(t, &Device::Cpu)?;
        let v = s.values();
        let f = |i: f64| {
            let x = (i / t as f64 + 0.008) / 1.008 * std::f64::consts::PI / 2.0;
            x.cos() * x.cos()
        };
        for i in 0..t - 1 {
            let want = f(i as f64 + 1.0) / f(0.0);
            assert!(
                (v.a_bar[i] - want).abs() < 1e-12,
                "a_bar[{i}] = {}, f gives {want}",
                v.a_bar[i]
            );
            assert!(v.b[i] < 0.999, "beta[{i}] = {} is clipped", v.b[i]);
        }
        assert_eq!(v.b[t - 1], 0.999);
        // beta_0 = 1 - f(1) / f(0), about x_1^2 - x_0^2 for the small angles x_0 and x_1 of f
        let (x0, x1) = (
            0.008 / 1.008 * std::f64::consts::FRAC_PI_2,
            (1.0 / 150.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2,
        );
        let small_angle = x1 * x1 - x0 * x0; // 3.67e-4
        assert!(
            (v.b[0] / small_angle - 1.0).abs() < 0.01,
            "beta[0] = {}",
            v.b[0]
        );
        Ok(())
    }
}
