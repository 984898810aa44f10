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

use crate::{Rng, Schedule};

/// What every network of the course provides: how to build it under its PyTorch names, the
/// shape of its images, and its BatchNorm state. The checkpoints and the [`Trainer`] work through
/// it.
///
/// [`Trainer`]: crate::Trainer
pub trait Network: Sized {
    /// The sizes the network is built for (timesteps, channels, image side); the default is the
    /// course's.
    type Config: Copy + std::fmt::Debug + PartialEq + Default;

    /// Creates the network with its tensors under `vb`, named as in PyTorch's `state_dict`.
    fn build(config: Self::Config, vb: VarBuilder) -> Result<Self>;

    /// The sizes it was built with.
    fn config(&self) -> Self::Config;

    /// The shape of one image, `[channels, height, width]`.
    fn image_shape(&self) -> [usize; 3];

    /// The state that training changes outside the optimizer (BatchNorm's running statistics and
    /// batch count), so that a failed step can put it back. Empty for networks without it.
    fn buffers(&self) -> Vec<&Var> {
        vec![]
    }
}

/// A network that predicts the noise in `x_t` at timestep `t` (notebooks 02 to 04).
pub trait NoisePredictor: Network {
    /// The number of timesteps `T` it was built for (timesteps run from 0 to T-1).
    fn steps(&self) -> usize;

    /// `e_theta(x_t, t)`: `x_t` is `[N, C, H, W]` f32, `t` is `[N]` integers in `0..T`; the result
    /// has the shape of `x_t`. With `train`, normalisation layers use (and, for BatchNorm, record)
    /// the batch's statistics.
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor>;
}

/// What the [`Trainer`](crate::Trainer) minimises: a network's loss on a clean batch `x_0`.
///
/// Every [`NoisePredictor`] learns the course's diffusion objective
/// ([`get_loss`](crate::get_loss) at timesteps drawn uniformly); notebook 01's denoiser learns
/// to give back the image ([`notebook01::denoising_loss`](crate::notebook01::denoising_loss)).
pub trait Learner: Network {
    /// The number of timesteps of the noise schedule the trainer makes for this network.
    fn schedule_steps(&self) -> usize;

    /// Whether the loss needs each image's class (notebook 04's network); the [`Trainer`]
    /// then asks for labels ([`Trainer::train_with_labels`]).
    ///
    /// [`Trainer`]: crate::Trainer
    /// [`Trainer::train_with_labels`]: crate::Trainer::train_with_labels
    fn needs_labels(&self) -> bool {
        false
    }

    /// The loss on the clean, augmented batch `x_0` (`[B, C, H, W]`), in training mode, drawing
    /// whatever it needs (timesteps, noise) from `rng`. `labels` (`[B]` U32 class indices) are
    /// given when the trainer has them; only a network that [`needs_labels`](Self::needs_labels)
    /// reads them.
    fn training_loss(
        &self,
        x_0: &Tensor,
        labels: Option<&Tensor>,
        schedule: &Schedule,
        rng: &mut Rng,
    ) -> Result<Tensor>;
}

/// `t ~ U{0, ..., T-1}` per image, then [`get_loss`](crate::get_loss): the diffusion objective.
impl<M: NoisePredictor> Learner for M {
    fn schedule_steps(&self) -> usize {
        self.steps()
    }

    fn training_loss(
        &self,
        x_0: &Tensor,
        _labels: Option<&Tensor>,
        schedule: &Schedule,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let t = rng.timesteps(x_0.dim(0)?, schedule.len(), x_0.device())?;
        crate::get_loss(self, schedule, x_0, &t, rng)
    }
}

/// Fails unless `x` is a non-empty f32 batch of images of the network's shape.
pub fn check_images<M: Network>(model: &M, x: &Tensor) -> Result<usize> {
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
