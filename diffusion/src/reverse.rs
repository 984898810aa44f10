//! The reverse step: from `x_t` and the predicted noise `e_t`, one step back towards `x_0`.
//!
//! The mean of `q(x_{t-1} | x_t, x_0)` with `x_0` replaced by its estimate from `e_t` is
//!
//! ```text
//! u_t = sqrt(1 / a_t) * ( x_t - (1 - a_t) / sqrt(1 - a_bar_t) * e_t )
//!     = sqrt_a_inv[t] * ( x_t - pred_noise_coeff[t] * e_t )
//! ```
//!
//! and the step adds fresh noise, except at the last step (`t = 0`), which returns the mean:
//!
//! ```text
//! x_{t-1} = u_t + sqrt(B[t-1]) z,   z ~ N(0, I)      (t > 0)
//! x_{-1}  = u_0                                      (t = 0)
//! ```
//!
//! The standard deviation `sqrt(B[t-1])` is the course notebook's choice (one index behind the
//! `sqrt(B[t])` of Ho et al.); it is kept so that the two implementations agree.

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::{Rng, Schedule};

/// The course's `reverse_q(x_t, t, e_t)` with fresh noise from `rng`.
pub fn reverse_q(
    schedule: &Schedule,
    x_t: &Tensor,
    t: usize,
    e_t: &Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let z = if t > 0 {
        rng.randn_like(x_t)?
    } else {
        x_t.zeros_like()?
    };
    reverse_q_with_noise(schedule, x_t, t, e_t, &z)
}

/// The reverse step with the noise `z` given (ignored at `t = 0`).
pub fn reverse_q_with_noise(
    schedule: &Schedule,
    x_t: &Tensor,
    t: usize,
    e_t: &Tensor,
    z: &Tensor,
) -> Result<Tensor> {
    crate::timesteps::check_one(t, schedule.len())?;
    for (name, other) in [("predicted noise e_t", e_t), ("noise z", z)] {
        if other.dims() != x_t.dims() {
            bail!(
                "{name} must have the shape of x_t {:?}, got {:?}",
                x_t.dims(),
                other.dims()
            );
        }
    }
    let v = schedule.values();
    let u_t = ((x_t - (e_t * v.pred_noise_coeff[t])?)? * v.sqrt_a_inv[t])?;
    if t == 0 {
        return Ok(u_t);
    }
    Ok((u_t + (z * v.b[t - 1].sqrt())?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// For `t > 0`, `reverse_q` adds `sqrt(B[t-1]) z` with `z` the next draw of its generator.
    #[test]
    fn reverse_q_adds_the_generators_noise_for_t_above_0() -> Result<()> {
        let s = Schedule::course(&Device::Cpu)?;
        let x_t = Rng::new(1).randn((2, 1, 4, 4), &Device::Cpu)?;
        let e_t = Rng::new(2).randn((2, 1, 4, 4), &Device::Cpu)?;
        for t in [1, 5, s.len() - 1] {
            let got = reverse_q(&s, &x_t, t, &e_t, &mut Rng::new(7))?;
            let z = Rng::new(7).randn_like(&x_t)?;
            let want = reverse_q_with_noise(&s, &x_t, t, &e_t, &z)?;
            assert!(max_diff(&got, &want) < 1e-6, "t = {t}");
            let mean = reverse_q_with_noise(&s, &x_t, t, &e_t, &x_t.zeros_like()?)?;
            assert!(max_diff(&got, &mean) > 1e-3, "t = {t}: no noise was added");
        }
        Ok(())
    }

    /// At `t = 0`, `reverse_q` returns the mean and draws nothing from the generator.
    #[test]
    fn reverse_q_at_t_0_returns_the_mean_and_leaves_the_generator_alone() -> Result<()> {
        let s = Schedule::course(&Device::Cpu)?;
        let x_t = Rng::new(1).randn((2, 1, 4, 4), &Device::Cpu)?;
        let e_t = Rng::new(2).randn((2, 1, 4, 4), &Device::Cpu)?;
        let mut rng = Rng::new(7);
        let got = reverse_q(&s, &x_t, 0, &e_t, &mut rng)?;
        let v = s.values();
        let mean = ((&x_t - (&e_t * v.pred_noise_coeff[0])?)? * v.sqrt_a_inv[0])?;
        assert!(max_diff(&got, &mean) < 1e-6);
        assert_eq!(
            rng.unit(),
            Rng::new(7).unit(),
            "t = 0 drew noise it does not use"
        );
        Ok(())
    }
}
