//! What the rest of the course needs of a network: a prediction of the noise.
//!
//! ```text
//! e_theta(x_t, t) ≈ e,    where x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) e
//! ```
//!
//! The loss ([`get_loss`](crate::get_loss)), the [`Trainer`](crate::Trainer), the samplers
//! ([`sample_images`](crate::sample_images), [`sample_ddim`](crate::sample_ddim)) and the
//! checkpoints work with any network that implements [`NoisePredictor`], so each notebook's
//! network (in its own module, such as [`notebook02`](crate::notebook02)) brings only its layers.

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarBuilder;

/// A network that predicts the noise in `x_t` at timestep `t`.
pub trait NoisePredictor: Sized {
    /// The sizes the network is built for (timesteps, channels, image side).
    type Config: Copy + std::fmt::Debug + PartialEq;

    /// Creates the network with its tensors under `vb`, named as in PyTorch's `state_dict`.
    fn build(config: Self::Config, vb: VarBuilder) -> Result<Self>;

    /// The sizes it was built with.
    fn config(&self) -> Self::Config;

    /// The number of timesteps `T` it was built for (timesteps run from 0 to T-1).
    fn steps(&self) -> usize;

    /// The shape of one image, `[channels, height, width]`.
    fn image_shape(&self) -> [usize; 3];

    /// `e_theta(x_t, t)`: `x_t` is `[N, C, H, W]` f32, `t` is `[N]` integers in `0..T`; the result
    /// has the shape of `x_t`. With `train`, normalisation layers use (and, for BatchNorm, record)
    /// the batch's statistics.
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor>;

    /// The state that training changes outside the optimizer (BatchNorm's running statistics and
    /// batch count), so that a failed step can put it back. Empty for networks without it.
    fn buffers(&self) -> Vec<&Var> {
        vec![]
    }
}

/// Fails unless `x` is a non-empty f32 batch of images of the network's shape.
pub fn check_images<M: NoisePredictor>(model: &M, x: &Tensor) -> Result<usize> {
    let [c, h, w] = model.image_shape();
    let n = x.dims().first().copied().unwrap_or(0);
    if x.rank() != 4 || x.dims() != [n, c, h, w] || n == 0 {
        bail!(
            "the network takes images of shape [batch, {c}, {h}, {w}] with batch >= 1, got {:?}",
            x.dims()
        );
    }
    if x.dtype() != candle_core::DType::F32 {
        bail!(
            "the network takes f32 images, got {:?}: convert with `.to_dtype(DType::F32)`",
            x.dtype()
        );
    }
    Ok(n)
}
