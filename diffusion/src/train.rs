//! The training loop of the course:
//!
//! ```text
//! for each epoch, for each shuffled batch x_0 of 128 images (the last partial batch dropped):
//!     flip each image left-right with probability 1/2
//!     t    ~ U{0, ..., T-1}, one per image
//!     loss = get_loss(model, x_0, t)
//!     Adam step (lr 0.001, no weight decay)
//! ```
//!
//! A [`Trainer`] keeps the model, the optimizer's state and the step count, so calling
//! [`Trainer::train`] again continues where the last call stopped.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Var};
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::adam::Adam;
use crate::checkpoint;
use crate::unet::is_trainable;
use crate::{get_loss_with_noise, Rng, Schedule, UNet};

/// Settings of a training run; [`TrainConfig::course`] gives the notebook's.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Epochs per call of [`Trainer::train`].
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed for shuffling, flips, timesteps and noise.
    pub seed: u64,
    /// Stop a call of [`Trainer::train`] after this many steps (`None`: run all epochs).
    pub max_steps: Option<usize>,
    /// Flip images left-right at random.
    pub hflip: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::course()
    }
}

impl TrainConfig {
    /// The course's settings: 3 epochs, batch 128, Adam lr 0.001, random flips.
    pub fn course() -> Self {
        use crate::settings::*;
        Self {
            epochs: EPOCHS,
            batch_size: BATCH_SIZE,
            lr: LR,
            seed: 0,
            max_steps: None,
            hflip: true,
        }
    }

    /// Applies `DIFFUSION_MAX_STEPS` from the environment (a short run for tests), if set.
    pub fn with_env(mut self) -> Result<Self> {
        if let Ok(v) = std::env::var("DIFFUSION_MAX_STEPS") {
            let n: usize = v.trim().parse().with_context(|| {
                format!("DIFFUSION_MAX_STEPS must be a whole number of steps, got {v:?}")
            })?;
            self.max_steps = Some(n);
        }
        Ok(self)
    }
}

/// Where training stands, passed to the callback.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The epoch of the latest step (0-based, counted over all calls).
    pub epoch: usize,
    /// Steps done so far, over all calls.
    pub step: usize,
    /// Steps done in this call, and the number this call will do.
    pub call_step: usize,
    pub call_steps: usize,
    /// Loss of the latest step.
    pub loss: f32,
    /// Time since this call started.
    pub elapsed: Duration,
}

impl Progress {
    /// Steps per second in this call.
    pub fn steps_per_sec(&self) -> f64 {
        self.call_step as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Estimated time left in this call.
    pub fn eta(&self) -> Duration {
        let left = self.call_steps.saturating_sub(self.call_step) as f64;
        Duration::from_secs_f64(left / self.steps_per_sec().max(1e-9))
    }

    /// The course's progress line: `Epoch 0 | Step 100 | Loss: 0.1234`.
    pub fn line(&self) -> String {
        format!(
            "Epoch {} | Step {:03} | Loss: {:.4} | {:.1} steps/s | ETA {}",
            self.epoch,
            self.step,
            self.loss,
            self.steps_per_sec(),
            format_duration(self.eta())
        )
    }
}

/// `1h02m03s`, `2m03s`, `3s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The trainable weights of `varmap` (BatchNorm statistics excluded), sorted by name.
fn trainable(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    let mut vars: Vec<_> = data
        .iter()
        .filter(|(n, _)| is_trainable(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// An address that tells copies of this crate apart.
///
/// The notebook's Rust kernel (evcxr) links every cell with its own copy of this crate and of
/// candle. candle numbers tensors with a counter, one per copy, and its backward pass tells
/// tensors apart by that number; so a model made in one cell and trained in another could
/// have two different tensors under one number in the same backward pass, and fail with a shape
/// mismatch or, worse, update the wrong weights. A [`Trainer`] remembers which copy made its
/// weights and, called from another copy, makes them afresh first (same values, new numbers).
pub fn this_copy() -> usize {
    static MARK: u8 = 0;
    std::ptr::addr_of!(MARK) as usize
}

/// The model, its optimizer and the training state.
pub struct Trainer {
    pub model: UNet,
    pub varmap: VarMap,
    pub schedule: Schedule,
    pub config: TrainConfig,
    opt: Adam,
    /// The trainable weights by name, sorted: what `opt` updates.
    params: Vec<(String, Var)>,
    /// Which copy of this crate made `model`'s tensors (see [`this_copy`]).
    made_by: usize,
    rng: Rng,
    /// Steps done so far.
    pub step: usize,
    /// Epochs completed so far.
    pub epoch: usize,
    /// The loss of every step so far.
    pub losses: Vec<f32>,
}

impl Trainer {
    /// A fresh model with the course's schedule on `device`.
    pub fn new(config: TrainConfig, device: &Device) -> Result<Self> {
        let (model, varmap) = checkpoint::new_unet(device)?;
        Self::with_model(model, varmap, config, device)
    }

    /// Continues from a checkpoint's weights (the optimizer starts afresh).
    pub fn from_checkpoint(
        path: &std::path::Path,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let (model, varmap) = checkpoint::load_unet(path, device)?;
        Self::with_model(model, varmap, config, device)
    }

    fn with_model(
        model: UNet,
        varmap: VarMap,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        let schedule = Schedule::course(device)?;
        let params = trainable(&varmap);
        let opt = Adam::new(config.lr);
        let rng = Rng::new(config.seed);
        Ok(Self {
            model,
            varmap,
            schedule,
            config,
            opt,
            params,
            made_by: this_copy(),
            rng,
            step: 0,
            epoch: 0,
            losses: vec![],
        })
    }

    /// The random source (for sampling with the same seed stream).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One optimisation step on a batch `x_0` (`[B, 1, 16, 16]`, already augmented): draws
    /// timesteps and noise, computes the loss, and updates the weights. Returns the loss.
    ///
    /// If the loss is NaN or infinite the weights and BatchNorm statistics are left as they were
    /// and an error says so.
    pub fn train_step(&mut self, x_0: &Tensor) -> Result<f32> {
        self.own_tensors()?;
        let device = self.schedule.device().clone();
        let n = x_0.dim(0)?;
        let t = self.rng.timesteps(n, self.schedule.len(), &device)?;
        let noise = self.rng.randn_like(x_0)?;
        let saved = self.bn_state()?;
        let loss = get_loss_with_noise(&self.model, &self.schedule, x_0, &t, &noise)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            self.restore_bn_state(saved)?;
            bail!(
                "the loss became {value} at step {}: training stopped, the weights are those of step {} (lower the learning rate or check the data)",
                self.step + 1,
                self.step
            );
        }
        self.opt.backward_step(&self.params, &loss)?;
        self.step += 1;
        self.losses.push(value);
        Ok(value)
    }

    /// Makes the weights afresh (same values) when this call comes from another copy of the
    /// crate than the one that made them; see [`this_copy`].
    fn own_tensors(&mut self) -> Result<()> {
        if self.made_by == this_copy() {
            return Ok(());
        }
        {
            let mut data = self
                .varmap
                .data()
                .lock()
                .expect("the VarMap lock is never poisoned");
            for var in data.values_mut() {
                *var = Var::from_tensor(&var.as_tensor().copy()?)?;
            }
        }
        let device = self.schedule.device().clone();
        self.schedule = Schedule::course(&device)?;
        self.model = UNet::new(VarBuilder::from_varmap(&self.varmap, DType::F32, &device))?;
        self.params = trainable(&self.varmap);
        self.made_by = this_copy();
        Ok(())
    }

    /// Forgets which copy of the crate made the weights, so the next step makes them afresh as
    /// a call from another notebook cell would. For tests.
    #[doc(hidden)]
    pub fn forget_which_copy_made_the_weights(&mut self) {
        self.made_by = 0;
    }

    fn bn_state(&self) -> Result<Vec<Tensor>> {
        let mut v = vec![];
        for (_, bn) in self.model.batch_norms() {
            v.push(bn.running_mean.as_tensor().copy()?);
            v.push(bn.running_var.as_tensor().copy()?);
            v.push(bn.num_batches_tracked.as_tensor().copy()?);
        }
        Ok(v)
    }

    fn restore_bn_state(&self, saved: Vec<Tensor>) -> Result<()> {
        for ((_, bn), s) in self.model.batch_norms().into_iter().zip(saved.chunks(3)) {
            bn.running_mean.set(&s[0])?;
            bn.running_var.set(&s[1])?;
            bn.num_batches_tracked.set(&s[2])?;
        }
        Ok(())
    }

    /// Number of steps in one epoch over `n_images` images.
    pub fn steps_per_epoch(&self, n_images: usize) -> usize {
        n_images / self.config.batch_size
    }

    /// Trains for `config.epochs` epochs over `images` (`[N, 1, 16, 16]` in [-1, 1]), or
    /// `config.max_steps` steps if that is fewer. `callback` runs every `every` steps and after
    /// the last one; an error from it stops training.
    pub fn train(
        &mut self,
        images: &Tensor,
        every: usize,
        mut callback: impl FnMut(&Progress, &Trainer) -> Result<()>,
    ) -> Result<Progress> {
        let (n, ..) = images.dims4().with_context(|| {
            format!(
                "training images must be [N, 1, 16, 16], got {:?}",
                images.dims()
            )
        })?;
        let per_epoch = self.steps_per_epoch(n);
        if per_epoch == 0 {
            bail!(
                "{n} images make no full batch of {}: use more images or a smaller batch",
                self.config.batch_size
            );
        }
        let device = self.schedule.device().clone();
        let images = images.to_device(&device)?;
        let mut call_steps = per_epoch * self.config.epochs;
        if let Some(m) = self.config.max_steps {
            call_steps = call_steps.min(m);
        }
        let start = Instant::now();
        let mut progress = Progress {
            epoch: self.epoch,
            step: self.step,
            call_step: 0,
            call_steps,
            loss: f32::NAN,
            elapsed: Duration::ZERO,
        };
        'epochs: for _ in 0..self.config.epochs {
            if progress.call_step == call_steps {
                break;
            }
            progress.epoch = self.epoch;
            let order =
                crate::data::Batches::with_rng(n, self.config.batch_size, self.rng.inner())?;
            for batch in order {
                if progress.call_step == call_steps {
                    break 'epochs;
                }
                let batch: Vec<u32> = batch.into_iter().map(|i| i as u32).collect();
                let idx = Tensor::from_vec(batch, self.config.batch_size, &device)?;
                let mut x_0 = images.index_select(&idx, 0)?;
                if self.config.hflip {
                    x_0 = crate::data::random_hflip(&x_0, self.rng.inner())?;
                }
                let loss = self.train_step(&x_0)?;
                progress.call_step += 1;
                progress.step = self.step;
                progress.loss = loss;
                progress.elapsed = start.elapsed();
                if every > 0
                    && progress.call_step.is_multiple_of(every)
                    && progress.call_step != call_steps
                {
                    callback(&progress, self)?;
                }
            }
            self.epoch += 1;
        }
        progress.elapsed = start.elapsed();
        callback(&progress, self)?;
        Ok(progress)
    }

    /// Saves the weights and BatchNorm statistics (PyTorch `state_dict` names).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        checkpoint::save(&self.varmap, path)
    }
}
