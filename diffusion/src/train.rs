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
//! Notebook 04's network also takes each image's class: [`Trainer::train_with_labels`].
//!
//! A [`Trainer`] keeps the model, the optimizer's state and the step count, so calling
//! [`Trainer::train`] again continues where the last call stopped. It trains any
//! [`Learner`] (every [`NoisePredictor`](crate::network::NoisePredictor) on the loss above,
//! notebook 01's denoiser on its own); `Trainer` alone means notebook 02's [`UNet`].
//!
//! Past the course, [`TrainConfig`] can train on the cosine schedule ([`ScheduleKind`]) and
//! keep a moving average of the weights ([`Ema`]), saved beside them.
//!
//! When the environment variable `DIFFUSION_MAX_STEPS` is set, every call of
//! [`Trainer::train`] stops after at most that many steps: the notebooks' headless tests run
//! with it, and a student never has to write it in a cell.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Var};
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::adam::Adam;
use crate::checkpoint::{self, is_trainable};
use crate::ema::Ema;
use crate::network::Learner;
use crate::schedule::ScheduleKind;
use crate::{Rng, Schedule, UNet};

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
    /// The noise schedule over the network's `T` steps (the course's: linear).
    pub schedule: ScheduleKind,
    /// Keep an exponential moving average of the weights with this decay ([`Ema`]; the course
    /// keeps none). It is saved beside the weights and sampled from with [`Trainer::ema_model`].
    pub ema: Option<f64>,
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
            schedule: ScheduleKind::Linear,
            ema: None,
        }
    }

    /// Notebook 03's settings: 5 epochs, batch 128, Adam lr 0.001, random flips.
    pub fn notebook03() -> Self {
        Self {
            epochs: crate::settings::notebook03::EPOCHS,
            ..Self::course()
        }
    }

    /// Notebook 01's settings: 2 epochs, batch 128, Adam lr 0.0001, random flips.
    pub fn notebook01() -> Self {
        use crate::settings::notebook01::*;
        Self {
            epochs: EPOCHS,
            lr: LR,
            ..Self::course()
        }
    }
}

/// The step budget `DIFFUSION_MAX_STEPS` sets, given its value (`None` when unset).
pub fn max_steps_from_env(value: Option<&str>) -> Result<Option<usize>> {
    crate::limits::limit_from_env(crate::limits::MAX_STEPS, "steps", value)
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

pub use crate::clock::format_duration;

/// The trainable weights of `varmap` (BatchNorm statistics excluded), sorted by name.
pub(crate) fn trainable(varmap: &VarMap) -> Vec<(String, Var)> {
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
pub struct Trainer<M: Learner = UNet> {
    pub model: M,
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
    /// The moving average of the weights, when `config.ema` asks for one.
    pub ema: Option<Ema>,
}

impl Trainer<UNet> {
    /// A fresh notebook-02 U-Net with the course's schedule on `device`.
    pub fn new(config: TrainConfig, device: &Device) -> Result<Self> {
        Self::for_network(Default::default(), config, device)
    }

    /// Continues from a checkpoint's weights (the optimizer starts afresh).
    pub fn from_checkpoint(
        path: &std::path::Path,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        Self::for_checkpoint(path, Default::default(), config, device)
    }
}

impl<M: Learner> Trainer<M> {
    /// A fresh network built with `net` on `device`, with the course's linear schedule over its
    /// `T` timesteps ([`Learner::schedule_steps`]). Its starting weights are drawn from the seed of `config`
    /// ([`checkpoint::init_weights`]), so the same seed gives the same run.
    pub fn for_network(net: M::Config, config: TrainConfig, device: &Device) -> Result<Self> {
        let (model, varmap) = checkpoint::new_network(net, device)?;
        let mut trainer = Self::with_model(model, varmap, config, device)?;
        checkpoint::init_weights(&trainer.varmap, &mut trainer.rng)?;
        Ok(trainer)
    }

    /// A network built with `net` that continues from the weights of the checkpoint at `path`
    /// (the optimizer starts afresh).
    pub fn for_checkpoint(
        path: &std::path::Path,
        net: M::Config,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let (model, varmap) = checkpoint::load_network(path, net, device)?;
        Self::with_model(model, varmap, config, device)
    }

    fn with_model(model: M, varmap: VarMap, config: TrainConfig, device: &Device) -> Result<Self> {
        if config.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        let schedule = config.schedule.build(model.schedule_steps(), device)?;
        let ema = config.ema.map(Ema::checked).transpose()?;
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
            ema,
        })
    }

    /// The random source (for sampling with the same seed stream).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One optimisation step on a batch `x_0` (`[B, 1, 16, 16]`, already augmented): computes the
    /// network's training loss ([`Learner::training_loss`]: for a noise predictor, timesteps and
    /// noise drawn, then [`get_loss`](crate::get_loss)), and updates the weights. Returns the loss.
    ///
    /// If the loss, or a gradient, is NaN or infinite, the weights, the optimizer's state and the
    /// BatchNorm statistics are left as they were and an error says so.
    pub fn train_step(&mut self, x_0: &Tensor) -> Result<f32> {
        self.step_on(x_0, None)
    }

    /// [`train_step`](Self::train_step) on a batch with its classes: `labels` is `[B]` U32,
    /// one class index per image (notebook 04's network learns from them).
    pub fn train_step_with_labels(&mut self, x_0: &Tensor, labels: &Tensor) -> Result<f32> {
        self.step_on(x_0, Some(labels))
    }

    fn step_on(&mut self, x_0: &Tensor, labels: Option<&Tensor>) -> Result<f32> {
        self.own_tensors()?;
        let n = crate::network::check_images(&self.model, x_0)
            .context("a training batch x_0 must be images")?;
        if labels.is_none() && self.model.needs_labels() {
            bail!(
                "this network learns from labelled images: train it with `train_with_labels(&images, &labels, ...)` (or `train_step_with_labels`)"
            );
        }
        if let Some(l) = labels {
            if l.dims() != [n] {
                bail!(
                    "a batch of {n} images needs {n} labels (shape [{n}]), got shape {:?}",
                    l.dims()
                );
            }
        }
        let x_0 = x_0.to_device(self.schedule.device())?;
        let labels = labels
            .map(|l| l.to_device(self.schedule.device()))
            .transpose()?;
        let saved = self.bn_state()?;
        let loss =
            self.model
                .training_loss(&x_0, labels.as_ref(), &self.schedule, &mut self.rng)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            self.restore_bn_state(saved)?;
            bail!(
                "the loss became {value} at step {}: training stopped, the weights are those of step {} (lower the learning rate or check the data)",
                self.step + 1,
                self.step
            );
        }
        if let Err(e) = self.opt.backward_step(&self.params, &loss) {
            self.restore_bn_state(saved)?;
            return Err(anyhow::Error::from(e).context(format!(
                "training stopped at step {}: the weights are those of step {} (lower the learning rate or check the data)",
                self.step + 1,
                self.step
            )));
        }
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params)?;
        }
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
        self.schedule = self
            .config
            .schedule
            .build(self.model.schedule_steps(), &device)?;
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &device);
        self.model = M::build(self.model.config(), vb)?;
        self.params = trainable(&self.varmap);
        self.made_by = this_copy();
        Ok(())
    }

    /// A copy of the network's buffers (BatchNorm statistics), to put back after a failed step.
    fn bn_state(&self) -> Result<Vec<Tensor>> {
        self.model
            .buffers()
            .into_iter()
            .map(|v| Ok(v.as_tensor().copy()?))
            .collect()
    }

    fn restore_bn_state(&self, saved: Vec<Tensor>) -> Result<()> {
        for (var, s) in self.model.buffers().into_iter().zip(&saved) {
            var.set(s)?;
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
        callback: impl FnMut(&Progress, &Trainer<M>) -> Result<()>,
    ) -> Result<Progress> {
        self.train_on(images, None, every, callback)
    }

    /// [`train`](Self::train) on labelled images: `labels[i]` is the class of image `i`
    /// (FashionMNIST's [`labels`](crate::data::FashionMnist::labels)), and each batch takes the
    /// labels of its images.
    pub fn train_with_labels(
        &mut self,
        images: &Tensor,
        labels: &[u8],
        every: usize,
        callback: impl FnMut(&Progress, &Trainer<M>) -> Result<()>,
    ) -> Result<Progress> {
        let n = images.dims().first().copied().unwrap_or(0);
        if labels.len() != n {
            bail!(
                "{n} images need {n} labels, got {}: pass the labels loaded with the images",
                labels.len()
            );
        }
        let labels: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        let labels = Tensor::from_vec(labels, n, self.schedule.device())?;
        self.train_on(images, Some(&labels), every, callback)
    }

    fn train_on(
        &mut self,
        images: &Tensor,
        labels: Option<&Tensor>,
        every: usize,
        mut callback: impl FnMut(&Progress, &Trainer<M>) -> Result<()>,
    ) -> Result<Progress> {
        let n = crate::network::check_images(&self.model, images)
            .context("the training images must be a batch of the network's images")?;
        if labels.is_none() && self.model.needs_labels() {
            bail!(
                "this network learns from labelled images: call `trainer.train_with_labels(&train.images, &train.labels, every, callback)`"
            );
        }
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
        let env = crate::limits::limit(crate::limits::MAX_STEPS, "steps")?;
        for m in [self.config.max_steps, env].into_iter().flatten() {
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
                let batch_labels = labels.map(|l| l.index_select(&idx, 0)).transpose()?;
                let loss = self.step_on(&x_0, batch_labels.as_ref())?;
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

    /// Saves the weights and BatchNorm statistics (PyTorch `state_dict` names) to `path`, and,
    /// when training keeps an [`Ema`], the averaged weights beside it ([`ema_path`]).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        checkpoint::save(&self.varmap, path)?;
        if let Some(ema) = &self.ema {
            checkpoint::save(&ema.varmap(&self.varmap)?, &ema_path(path))?;
        }
        Ok(())
    }

    /// The network with the averaged weights (`None` when training keeps no [`Ema`]); before
    /// the first step, the starting weights.
    pub fn ema_model(&self) -> Result<Option<M>> {
        let Some(ema) = &self.ema else {
            return Ok(None);
        };
        let varmap = ema.varmap(&self.varmap)?;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, self.schedule.device());
        Ok(Some(M::build(self.model.config(), vb)?))
    }
}

/// Where [`Trainer::save`] puts the averaged weights: `model.safetensors` ->
/// `model-ema.safetensors`, in the same folder.
pub fn ema_path(path: &std::path::Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy());
    path.with_file_name(format!("{stem}-ema.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_images(n: usize) -> Tensor {
        Rng::new(1)
            .randn((n, 1, 16, 16), &Device::Cpu)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap()
    }

    fn trainer() -> Trainer {
        let config = TrainConfig {
            batch_size: 32,
            max_steps: Some(3),
            ..TrainConfig::course()
        };
        Trainer::new(config, &Device::Cpu).unwrap()
    }

    /// 50 of a call's 150 steps in 10 s: 5 steps/s, 100 steps (20 s) to go, and the course's
    /// progress line with both.
    #[test]
    fn progress_reports_speed_time_left_and_the_course_line() {
        let p = Progress {
            epoch: 1,
            step: 250,
            call_step: 50,
            call_steps: 150,
            loss: 0.123_46,
            elapsed: Duration::from_secs(10),
        };
        assert_eq!(p.steps_per_sec(), 5.0);
        assert_eq!(p.eta(), Duration::from_secs(20));
        assert_eq!(
            p.line(),
            "Epoch 1 | Step 250 | Loss: 0.1235 | 5.0 steps/s | ETA 20s"
        );
        // a finished call has nothing left; one that has not started yet is not divided by zero
        let done = Progress {
            call_step: 150,
            ..p.clone()
        };
        assert_eq!(done.eta(), Duration::ZERO);
        let start = Progress {
            call_step: 0,
            elapsed: Duration::ZERO,
            ..p
        };
        assert_eq!(start.steps_per_sec(), 0.0);
    }

    #[test]
    fn the_seed_fixes_the_starting_weights() {
        let weights = |seed| {
            let config = TrainConfig {
                seed,
                ..TrainConfig::course()
            };
            let t = Trainer::new(config, &Device::Cpu).unwrap();
            let w = t
                .model
                .layers
                .down1
                .first
                .conv
                .weight
                .flatten_all()
                .unwrap();
            w.to_vec1::<f32>().unwrap()
        };
        let (a, b, c) = (weights(3), weights(3), weights(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // PyTorch's bound for Conv2d(16, 32, 3): 1 / sqrt(16 * 9) = 1/12
        let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 1.0 / 12.0 && max > 0.9 / 12.0, "{max}");
    }

    /// A trainer called from another copy of the crate (another evcxr cell) makes its weights
    /// afresh; training must go on exactly as if nothing happened: same values, same Adam state.
    #[test]
    fn weights_made_afresh_train_on_identically() {
        let images = toy_images(64);
        let run = |remake: bool| {
            let mut t = trainer();
            t.train(&images, 0, |_, _| Ok(())).unwrap();
            let before: Vec<_> = t.params.iter().map(|(_, v)| v.as_tensor().id()).collect();
            if remake {
                t.made_by = 0; // as if called from another copy
            }
            t.train(&images, 0, |_, _| Ok(())).unwrap();
            let after: Vec<_> = t.params.iter().map(|(_, v)| v.as_tensor().id()).collect();
            assert_eq!(before != after, remake, "weights re-made only when asked");
            t.losses.clone()
        };
        let plain = run(false);
        let remade = run(true);
        assert_eq!(plain.len(), 6);
        assert_eq!(
            plain, remade,
            "steps 4..6 after the weights were made afresh"
        );
    }

    #[test]
    fn the_step_budget_comes_from_the_environment_value() {
        assert_eq!(max_steps_from_env(None).unwrap(), None);
        assert_eq!(max_steps_from_env(Some(" 12 ")).unwrap(), Some(12));
        let e = max_steps_from_env(Some("many")).unwrap_err().to_string();
        assert!(
            e.contains("DIFFUSION_MAX_STEPS") && e.contains("many"),
            "{e}"
        );
    }
}
