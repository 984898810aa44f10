//! # diffusion
//!
//! Diffusion models on FashionMNIST with [candle](https://github.com/huggingface/candle), one
//! course step per module, under the course's own names:
//!
//! | step of the course | item |
//! | --- | --- |
//! | the noise schedule `B`, `a`, `a_bar`, ... | [`Schedule`] |
//! | one forward step, the closed form `q(x_t \| x_0)` | [`forward_step`], [`q`], [`q_with_noise`] |
//! | notebook 01's denoiser, the blocks | [`notebook01`]: [`DownBlock`], [`UpBlock`], [`notebook01::UNet`], [`notebook01::add_noise`] |
//! | notebook 02's network | [`notebook02`]: [`EmbedBlock`], [`DownBlock`], [`UpBlock`], [`UNet`] |
//! | notebook 03's network: GroupNorm, GELU, rearrange pooling, sinusoidal time, residuals | [`notebook03`]: [`notebook03::UNet`] |
//! | notebook 04's class-conditional network, classifier-free guidance | [`notebook04`]: [`notebook04::UNet`], [`notebook04::get_context_mask`], [`notebook04::sample_w`] |
//! | what every network provides | [`Network`], [`NoisePredictor`], [`Learner`] |
//! | the loss | [`get_loss`] |
//! | the reverse step and sampling | [`reverse_q`], [`sample_images`], [`sample_ddim`], [`reverse_process`] |
//! | training | [`Trainer`], [`TrainConfig`]; past the course: [`ema`], [`schedule::ScheduleKind`] |
//! | data | [`data`] |
//! | pictures, a model summary | [`display`], [`summary`] |
//! | checkpoints under PyTorch's names | [`checkpoint`] |
//! | sample quality: a classifier, FD, KID, class histogram | [`eval`] |
//! | checks of a student's exercises | [`check`] |
//! | the course's assessment: MNIST, the digit classifier, the grader | [`assessment`], [`data::mnist`], [`eval::digits`] |
//!
//! Bad input (a wrong shape or dtype, a timestep out of range, a missing or corrupt file) is an
//! `anyhow` error that says what was expected and what to do, not a panic. The convolutions and
//! normalisations run on the kernels of the `diffusion-kernels` crate.

pub mod adam;
pub mod assessment;
pub mod check;
pub mod checkpoint;
pub mod clock;
pub mod conv_arithmetic;
pub mod data;
pub mod device;
pub mod display;
pub mod ema;
pub mod eval;
pub mod files;
pub mod forward;
pub mod layers;
pub mod limits;
pub mod loss;
pub mod network;
pub mod notebook01;
pub mod notebook02;
pub mod notebook03;
pub mod notebook04;
pub mod reverse;
pub mod rng;
pub mod sample;
pub mod schedule;
pub mod summary;
pub mod timesteps;
pub mod train;

pub use anyhow::Result;
pub use clock::timed;
pub use device::device;
pub use forward::{forward_step, q, q_with_noise};
pub use loss::{get_loss, get_loss_with_noise};
pub use network::{Learner, Network, NoisePredictor};
pub use notebook02::{DownBlock, EmbedBlock, UNet, UNetConfig, UpBlock};
pub use reverse::{reverse_q, reverse_q_with_noise};
pub use rng::Rng;
pub use sample::{reverse_process, sample_ddim, sample_images, sample_images_from, Samples};
pub use schedule::Schedule;
pub use train::{Progress, TrainConfig, Trainer};

/// The course's settings (notebook 02's, and those of notebooks 01 and 03 where they differ).
pub mod settings {
    /// Rows of the forward-diffusion grid.
    pub const NROWS: usize = 10;
    /// Columns of the forward-diffusion grid and of a sample strip.
    pub const NCOLS: usize = 15;
    /// Number of timesteps `T = nrows * ncols`.
    pub const T: usize = NROWS * NCOLS;
    /// First beta of the linear schedule.
    pub const BETA_START: f64 = 0.0001;
    /// Last beta of the linear schedule.
    pub const BETA_END: f64 = 0.02;
    /// Side of the (resized) images.
    pub const IMG_SIZE: usize = 16;
    /// Image channels.
    pub const IMG_CH: usize = 1;
    /// Batch size.
    pub const BATCH_SIZE: usize = 128;
    /// Adam learning rate.
    pub const LR: f64 = 0.001;
    /// Epochs.
    pub const EPOCHS: usize = 3;

    /// Notebook 01's denoiser (the data, the image size and the batch are notebook 02's).
    pub mod notebook01 {
        /// Adam learning rate.
        pub const LR: f64 = 0.0001;
        /// Epochs.
        pub const EPOCHS: usize = 2;
    }

    /// Notebook 03's optimised U-Net (data, batch and learning rate as notebook 02).
    pub mod notebook03 {
        /// Epochs.
        pub const EPOCHS: usize = 5;
    }
}
