//! Sampling: start from pure noise and apply the reverse step `T` times.
//!
//! [`sample_images`] is the course's DDPM sampler (`t = T-1, ..., 0`); it keeps snapshots along
//! the way for the strips "noise → image". [`sample_ddim`] is DDIM (Song et al. 2021) with
//! `eta = 0`: deterministic, and able to skip timesteps:
//!
//! ```text
//! x0_hat  = (x_t - sqrt(1 - a_bar_t) e_t) / sqrt(a_bar_t)            (clipped to [-1, 1])
//! x_prev  = sqrt(a_bar_prev) x0_hat + sqrt(1 - a_bar_prev) e_t       (a_bar_prev = 1 after t = 0)
//! ```

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use crate::network::NoisePredictor;
use crate::{reverse_q_with_noise, Rng, Schedule};

/// The result of sampling `n` images.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The generated images `[n, C, H, W]`, in about [-1, 1].
    pub images: Tensor,
    /// Snapshots `[n, C, H, W]` taken along the way, the first being the starting noise.
    pub frames: Vec<Tensor>,
    /// The timestep each snapshot was taken after (`None` for the starting noise).
    pub frame_steps: Vec<Option<usize>>,
}

impl Samples {
    /// The strips: for each image, its snapshots in a row, as `[n * frames, C, H, W]` (lay them
    /// out with `frames.len()` columns).
    pub fn strips(&self) -> Result<Tensor> {
        let stacked = Tensor::stack(&self.frames, 1)?; // [n, frames, C, H, W]
        Ok(stacked.flatten_to(1)?)
    }
}

/// Which of `0..t_total` the strip shows: `ncols` evenly spaced timesteps from high to low,
/// ending at 0 (for T = 150 and 15 columns: 140, 130, ..., 0).
pub fn strip_steps(t_total: usize, ncols: usize) -> Vec<usize> {
    (0..ncols)
        .rev()
        .map(|k| (k as f64 * t_total as f64 / ncols as f64).round() as usize)
        .map(|s| s.min(t_total - 1))
        .collect()
}

fn check_sampling<M: NoisePredictor>(model: &M, schedule: &Schedule, n: usize) -> Result<()> {
    if n == 0 {
        bail!("asked for 0 images: n must be at least 1");
    }
    if model.steps() != schedule.len() {
        bail!(
            "the model was built for T = {} but the schedule has {} steps",
            model.steps(),
            schedule.len()
        );
    }
    Ok(())
}

fn start_noise<M: NoisePredictor>(
    model: &M,
    n: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let [c, h, w] = model.image_shape();
    rng.randn((n, c, h, w), device)
}

/// The course's `sample_images`: draws `n` images with the DDPM reverse process (evaluation
/// mode), keeping the starting noise and `ncols` snapshots (`ncols + 1` frames). A quick run
/// that sets `DIFFUSION_MAX_SAMPLES` draws at most that many ([`limits`](crate::limits)).
pub fn sample_images<M: NoisePredictor>(
    model: &M,
    schedule: &Schedule,
    n: usize,
    ncols: usize,
    rng: &mut Rng,
) -> Result<Samples> {
    check_sampling(model, schedule, n)?;
    let n = crate::limits::samples(n)?;
    let x_start = start_noise(model, n, rng, schedule.device())?;
    sample_images_from(model, schedule, x_start, ncols, |_, x| rng.randn_like(x))
}

/// [`sample_images`] from a given start `x_start` `[n, C, H, W]`, with the noise of each step
/// given by `step_noise(t, x_t)` (called for `t = T-1, ..., 1`; `t = 0` adds none):
///
/// ```text
/// for t = T-1, ..., 0:   e_t = model(x_t, t);   x_{t-1} = reverse_q(x_t, t, e_t, z = step_noise(t, x_t))
/// ```
///
/// With the same start and the same noises, two implementations of the sampler must agree.
pub fn sample_images_from<M: NoisePredictor>(
    model: &M,
    schedule: &Schedule,
    x_start: Tensor,
    ncols: usize,
    step_noise: impl FnMut(usize, &Tensor) -> Result<Tensor>,
) -> Result<Samples> {
    check_sampling(model, schedule, x_start.dim(0)?)?;
    let shape = model.image_shape();
    if x_start.dims().get(1..) != Some(&shape[..]) {
        bail!(
            "the starting noise must be [n, {}, {}, {}], got {:?}",
            shape[0],
            shape[1],
            shape[2],
            x_start.dims()
        );
    }
    let keep = strip_steps(schedule.len(), ncols.max(1));
    reverse_process(
        schedule,
        x_start,
        |t| ncols > 0 && keep.contains(&t),
        |x, t| model.predict_noise(x, t, false),
        step_noise,
    )
}

/// The reverse process itself, for any prediction of the noise: from `x_start` (`[n, C, H, W]`)
/// through `t = T-1, ..., 0`,
///
/// ```text
/// e_t = predict(x_t, t);   x_{t-1} = reverse_q(x_t, t, e_t, z = step_noise(t, x_t))
/// ```
///
/// keeping a snapshot after each `t` for which `keep(t)` holds. `predict` gets `x_t` and the
/// batch of timesteps (`[n]` U32); [`sample_images_from`] passes the network's prediction,
/// notebook 04's [`sample_w`](crate::notebook04::sample_w) the guided one.
pub fn reverse_process(
    schedule: &Schedule,
    x_start: Tensor,
    keep: impl Fn(usize) -> bool,
    mut predict: impl FnMut(&Tensor, &Tensor) -> Result<Tensor>,
    mut step_noise: impl FnMut(usize, &Tensor) -> Result<Tensor>,
) -> Result<Samples> {
    let n = x_start.dim(0)?;
    if n == 0 {
        bail!("asked for 0 images: n must be at least 1");
    }
    let device = schedule.device();
    let mut x = x_start.to_device(device)?;
    let mut frames = vec![x.clone()];
    let mut frame_steps = vec![None];
    for t in (0..schedule.len()).rev() {
        let t_batch = Tensor::full(t as u32, n, device)?;
        let e_t = predict(&x, &t_batch)?.detach(); // no gradient history across steps
        let z = if t > 0 {
            step_noise(t, &x)?.to_device(device)?
        } else {
            x.zeros_like()?
        };
        x = reverse_q_with_noise(schedule, &x, t, &e_t, &z)?.detach();
        if keep(t) {
            frames.push(x.clone());
            frame_steps.push(Some(t));
        }
    }
    Ok(Samples {
        images: x,
        frames,
        frame_steps,
    })
}

/// The timesteps DDIM visits: `steps` values evenly spaced over `0..T`, from high to low.
pub fn ddim_timesteps(t_total: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > t_total {
        bail!("DDIM needs between 1 and T = {t_total} steps, got {steps}");
    }
    let mut ts: Vec<usize> = (0..steps)
        .map(|i| ((i as f64) * (t_total - 1) as f64 / (steps - 1).max(1) as f64).round() as usize)
        .collect();
    ts.dedup();
    ts.reverse();
    Ok(ts)
}

/// DDIM sampling with `eta = 0` in `steps` steps (deterministic given the starting noise),
/// keeping the starting noise and every step's result as frames.
pub fn sample_ddim<M: NoisePredictor>(
    model: &M,
    schedule: &Schedule,
    n: usize,
    steps: usize,
    rng: &mut Rng,
) -> Result<Samples> {
    check_sampling(model, schedule, n)?;
    let device = schedule.device();
    let ts = ddim_timesteps(schedule.len(), steps)?;
    let a_bar = &schedule.values().a_bar;
    let mut x = start_noise(model, n, rng, device)?;
    let mut frames = vec![x.clone()];
    let mut frame_steps = vec![None];
    for (i, &t) in ts.iter().enumerate() {
        let t_batch = Tensor::full(t as u32, n, device)?;
        let e_t = model.predict_noise(&x, &t_batch, false)?.detach(); // no gradient history across steps
        let x0_hat =
            ((&x - (&e_t * (1.0 - a_bar[t]).sqrt())?)? / a_bar[t].sqrt())?.clamp(-1f32, 1f32)?;
        let a_prev = ts.get(i + 1).map(|&p| a_bar[p]).unwrap_or(1.0);
        x = ((x0_hat * a_prev.sqrt())? + (e_t * (1.0 - a_prev).sqrt())?)?;
        frames.push(x.clone());
        frame_steps.push(Some(t));
    }
    Ok(Samples {
        images: x,
        frames,
        frame_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round(k T / ncols)` for k = ncols-1, ..., 0, worked by hand; more columns than steps
    /// stay inside `0..T` (k = 9 of 10 over T = 3 gives round(2.7) = 3, kept at 2).
    #[test]
    fn strip_steps_are_evenly_spaced_and_inside_the_schedule() {
        assert_eq!(strip_steps(150, 3), [100, 50, 0]);
        assert_eq!(strip_steps(3, 10), [2, 2, 2, 2, 2, 1, 1, 1, 0, 0]);
        assert_eq!(strip_steps(1, 1), [0]);
    }
}
