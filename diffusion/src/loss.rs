//! The training objective: predict the noise that was added.
//!
//! ```text
//! t ~ U{0, ..., T-1},  e ~ N(0, I)
//! x_t  = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) e
//! loss = mean( (e - model(x_t, t))^2 )
//! ```

use anyhow::Result;
use candle_core::Tensor;

use crate::network::NoisePredictor;
use crate::{layers::mse, q, q_with_noise, Rng, Schedule};

/// The course's `get_loss(model, x_0, t)`: noises `x_0` to `x_t` with fresh noise from `rng`,
/// predicts the noise (BatchNorm in training mode) and returns the mean squared error.
pub fn get_loss<M: NoisePredictor>(
    model: &M,
    schedule: &Schedule,
    x_0: &Tensor,
    t: &Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let (x_t, noise) = q(schedule, x_0, t, rng)?;
    let noise_pred = model.predict_noise(&x_t, t, true)?;
    Ok(mse(&noise_pred, &noise)?)
}

/// [`get_loss`] with the noise given, for exact comparisons.
pub fn get_loss_with_noise<M: NoisePredictor>(
    model: &M,
    schedule: &Schedule,
    x_0: &Tensor,
    t: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let x_t = q_with_noise(schedule, x_0, t, noise)?;
    let noise_pred = model.predict_noise(&x_t, t, true)?;
    Ok(mse(&noise_pred, noise)?)
}
