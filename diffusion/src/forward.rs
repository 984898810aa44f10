//! The forward process: adding noise to an image.
//!
//! One Markov step adds a little Gaussian noise and shrinks the image so the variance stays one:
//!
//! ```text
//! x_t = sqrt(1 - B_t) x_{t-1} + sqrt(B_t) e,          e ~ N(0, I)
//! ```
//!
//! Applying it `t + 1` times collapses, because Gaussians add, into one jump from `x_0`:
//!
//! ```text
//! q(x_t | x_0) = N( sqrt(a_bar_t) x_0, (1 - a_bar_t) I )
//! x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) e
//! ```
//!
//! Each image of a batch has its own timestep, so the two coefficients are gathered per image
//! and reshaped to `[batch, 1, 1, 1]` to broadcast over channels, rows and columns.

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::{Rng, Schedule};

/// One forward step: `x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let zero = x.zeros_like().unwrap();
/// // without noise, one step only shrinks the image by sqrt(1 - beta)
/// let y = diffusion::forward_step(&x, 0.19, &zero).unwrap();
/// let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
/// assert!((v[0] - 0.9).abs() < 1e-6);
/// ```
pub fn forward_step(x_prev: &Tensor, beta_t: f64, noise: &Tensor) -> Result<Tensor> {
    if !(0.0..1.0).contains(&beta_t) {
        bail!("beta_t must lie in [0, 1), got {beta_t}");
    }
    if x_prev.dims() != noise.dims() {
        bail!(
            "noise must have the image's shape {:?}, got {:?}",
            x_prev.dims(),
            noise.dims()
        );
    }
    Ok(((x_prev * (1.0 - beta_t).sqrt())? + (noise * beta_t.sqrt())?)?)
}

/// Gathers `coeff[t_i]` for each image and shapes it `[batch, 1, 1, ...]` to broadcast over
/// an `x` of the given rank.
pub fn per_image(coeff: &Tensor, t: &Tensor, rank: usize) -> Result<Tensor> {
    let batch = t.dim(0)?;
    let t = t.to_device(coeff.device())?;
    let mut shape = vec![batch];
    shape.resize(rank, 1);
    Ok(coeff.index_select(&t, 0)?.reshape(shape)?)
}

fn check_images(x_0: &Tensor) -> Result<usize> {
    if x_0.rank() < 2 {
        bail!(
            "images must be a batch [batch, channels, height, width], got shape {:?}",
            x_0.dims()
        );
    }
    Ok(x_0.dim(0)?)
}

/// The closed form with given noise: `x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) noise`,
/// one timestep per image (`t`: U32 or I64, shape `[batch]`, values in `0..T`).
pub fn q_with_noise(
    schedule: &Schedule,
    x_0: &Tensor,
    t: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let batch = check_images(x_0)?;
    crate::timesteps::check(t, batch, schedule.len())?;
    if noise.dims() != x_0.dims() {
        bail!(
            "noise must have the images' shape {:?}, got {:?}",
            x_0.dims(),
            noise.dims()
        );
    }
    let sqrt_a_bar_t = per_image(&schedule.sqrt_a_bar, t, x_0.rank())?;
    let sqrt_one_minus_a_bar_t = per_image(&schedule.sqrt_one_minus_a_bar, t, x_0.rank())?;
    Ok((x_0.broadcast_mul(&sqrt_a_bar_t)? + noise.broadcast_mul(&sqrt_one_minus_a_bar_t)?)?)
}

/// The course's `q(x_0, t)`: samples `x_t ~ q(x_t | x_0)` with fresh noise from `rng` and
/// returns `(x_t, noise)`, the noised images and the noise that was added (the network's target).
/// [`q_with_noise`] takes the noise instead.
pub fn q(schedule: &Schedule, x_0: &Tensor, t: &Tensor, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    check_images(x_0)?;
    let noise = rng.randn_like(x_0)?;
    Ok((q_with_noise(schedule, x_0, t, &noise)?, noise))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// `sqrt(1 - 0.19) * 1.5 + sqrt(0.19) * n` for `n` = 2 and -1, worked by hand:
    /// `0.9 * 1.5 = 1.35` and `sqrt(0.19) = 0.435889894...`.
    #[test]
    fn forward_step_scales_the_image_and_the_noise() -> Result<()> {
        let x = Tensor::new(&[[1.5f32, 1.5]], &Device::Cpu)?;
        let noise = Tensor::new(&[[2.0f32, -1.0]], &Device::Cpu)?;
        let got = forward_step(&x, 0.19, &noise)?.to_vec2::<f32>()?;
        let want = [1.35 + 2.0 * 0.435_889_9, 1.35 - 0.435_889_9];
        for (g, w) in got[0].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} against {w}");
        }
        Ok(())
    }

    /// Images need a batch dimension: a single vector is refused by name, a `[batch, n]` batch
    /// (the smallest one) is taken.
    #[test]
    fn the_closed_form_needs_a_batch_of_at_least_two_dimensions() -> Result<()> {
        let s = Schedule::course(&Device::Cpu)?;
        let t = Tensor::new(&[3u32, 3], &Device::Cpu)?;
        let flat = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?;
        for e in [
            q_with_noise(&s, &flat, &t, &flat).unwrap_err(),
            q(&s, &flat, &t, &mut Rng::new(0)).unwrap_err(),
        ] {
            assert!(e.to_string().contains("images must be a batch"), "{e}");
        }
        let x = Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu)?;
        let x_t = q_with_noise(&s, &x, &t, &x.zeros_like()?)?.to_vec2::<f32>()?;
        let want = s.values().a_bar[3].sqrt() as f32;
        assert!(x_t.iter().flatten().all(|v| (v - want).abs() < 1e-6));
        Ok(())
    }
}
