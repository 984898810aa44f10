//! Training the [`Classifier`] on FashionMNIST's train split, and its accuracy on the test split.
//!
//! ```text
//! for each epoch, for each shuffled batch (x, y) of 128 train images (the last partial one dropped):
//!     flip each image left-right with probability 1/2
//!     loss = cross_entropy(classifier(x), y) = mean_i -log softmax(logits_i)[y_i]
//!     Adam step (lr 0.001)
//! accuracy = share of test images whose predicted class (argmax of the logits) is their label
//! ```
//!
//! The starting weights, the order of the batches and the flips all come from one seeded
//! [`Rng`](crate::Rng), so a seed gives the same classifier.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::classifier::Classifier;
use crate::adam::Adam;
use crate::data::{FashionMnist, Split};

/// Settings of a training run; the default is the one behind `docs/classifier.safetensors`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierTraining {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the starting weights, the shuffles and the flips.
    pub seed: u64,
    /// Flip images left-right at random (the diffusion model was trained with flips too).
    pub hflip: bool,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
            hflip: true,
        }
    }
}

/// Where training stands, passed to the callback after each step.
#[derive(Debug, Clone)]
pub struct ClassifierProgress {
    /// The epoch of this step (0-based).
    pub epoch: usize,
    /// Steps done, and the number the run will do.
    pub step: usize,
    pub steps: usize,
    /// This step's loss.
    pub loss: f32,
    pub elapsed: Duration,
}

/// A trained classifier and how it was trained.
#[derive(Debug, Clone)]
pub struct TrainedClassifier {
    pub classifier: Classifier,
    /// Its accuracy on the test set given to [`train_classifier_with`].
    pub accuracy: f64,
    /// The loss of every step.
    pub losses: Vec<f32>,
    /// The time training took (the test evaluation excluded).
    pub elapsed: Duration,
}

/// The share of `data`'s images that `classifier` labels correctly.
pub fn accuracy(classifier: &Classifier, data: &FashionMnist) -> Result<f64> {
    if data.is_empty() {
        bail!("cannot measure an accuracy on 0 images");
    }
    let predicted = classifier.classify(&data.images)?.labels;
    Ok(share_right(&predicted, &data.labels))
}

/// The share of `predicted` equal to `labels`, position by position (`labels` not empty).
pub fn share_right(predicted: &[u8], labels: &[u8]) -> f64 {
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len() as f64
}

/// Trains a new classifier on `train` with `config` on `device`, then measures it on `test`.
/// `progress` runs after every step.
pub fn train_classifier_with(
    train: &FashionMnist,
    test: &FashionMnist,
    config: &ClassifierTraining,
    device: &Device,
    mut progress: impl FnMut(&ClassifierProgress),
) -> Result<TrainedClassifier> {
    if config.epochs == 0 || config.batch_size == 0 {
        bail!(
            "epochs and batch size must be at least 1, got {} and {}",
            config.epochs,
            config.batch_size
        );
    }
    // The side of the training images sets the classifier's (16 for the course's).
    let side = train.images.dims().last().copied().unwrap_or(0);
    let n = super::check_images_of(&train.images, side).context("the training images")?;
    if n != train.labels.len() {
        bail!("{n} training images but {} labels", train.labels.len());
    }
    let per_epoch = n / config.batch_size;
    if per_epoch == 0 {
        bail!(
            "{n} training images make no full batch of {}: use more images or a smaller batch",
            config.batch_size
        );
    }
    let mut rng = crate::Rng::new(config.seed);
    let classifier = Classifier::with_size(side, device, &mut rng)?;
    let params = crate::train::trainable(&classifier.varmap);
    let mut opt = Adam::new(config.lr);
    let steps = per_epoch * config.epochs;
    let mut losses = Vec::with_capacity(steps);
    let start = Instant::now();
    for epoch in 0..config.epochs {
        let batches = crate::data::Batches::with_rng(n, config.batch_size, rng.inner())?;
        for batch in batches {
            let (mut x, labels) = train.batch(&batch)?; // [B, 1, 16, 16]
            if config.hflip {
                x = crate::data::random_hflip(&x, rng.inner())?;
            }
            let x = x.to_device(device)?;
            let y: Vec<u32> = labels.into_iter().map(u32::from).collect();
            let y = Tensor::from_vec(y, batch.len(), device)?; // [B]
            let logits = classifier.forward_t(&x, true)?; // [B, 10]
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                bail!(
                    "the classifier's loss became {value} at step {}: lower the learning rate (now {})",
                    losses.len() + 1,
                    config.lr
                );
            }
            opt.backward_step(&params, &loss)?;
            losses.push(value);
            progress(&ClassifierProgress {
                epoch,
                step: losses.len(),
                steps,
                loss: value,
                elapsed: start.elapsed(),
            });
        }
    }
    let elapsed = start.elapsed();
    let accuracy = accuracy(&classifier, test).context("the test images")?;
    Ok(TrainedClassifier {
        classifier,
        accuracy,
        losses,
        elapsed,
    })
}

/// Trains the classifier on the train split of the FashionMNIST files in `data_dir` for `epochs`
/// epochs (the other settings as [`ClassifierTraining::default`]) on [`device`](crate::device()),
/// and returns it with its accuracy on the test split.
pub fn train_classifier(data_dir: &Path, epochs: usize, seed: u64) -> Result<(Classifier, f64)> {
    let train = crate::data::load(data_dir, Split::Train)?;
    let test = crate::data::load(data_dir, Split::Test)?;
    let config = ClassifierTraining {
        epochs,
        seed,
        ..Default::default()
    };
    let t = train_classifier_with(&train, &test, &config, &crate::device()?, |_| {})?;
    Ok((t.classifier, t.accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two easy classes: dark images (label 0) and bright ones (label 7), with noise.
    fn toy(n: usize, seed: u64) -> FashionMnist {
        let mut rng = crate::Rng::new(seed);
        let labels: Vec<u8> = (0..n).map(|i| if i % 2 == 0 { 0 } else { 7 }).collect();
        let noise = rng.randn((n, 1, 16, 16), &Device::Cpu).unwrap();
        let level: Vec<f32> = labels
            .iter()
            .map(|&l| if l == 0 { -0.5 } else { 0.5 })
            .collect();
        let level = Tensor::from_vec(level, (n, 1, 1, 1), &Device::Cpu).unwrap();
        let images = (noise * 0.3)
            .unwrap()
            .broadcast_add(&level)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap();
        FashionMnist { images, labels }
    }

    #[test]
    fn a_short_run_learns_two_easy_classes_and_is_seeded() {
        let (train, test) = (toy(256, 1), toy(64, 2));
        let config = ClassifierTraining {
            epochs: 2,
            batch_size: 32,
            ..Default::default()
        };
        let mut seen = 0;
        let run = train_classifier_with(&train, &test, &config, &Device::Cpu, |p| {
            seen += 1;
            assert_eq!((p.step, p.steps), (seen, 16));
        })
        .unwrap();
        assert_eq!(run.losses.len(), 16);
        assert!(run.accuracy > 0.95, "{}", run.accuracy);
        assert_eq!(accuracy(&run.classifier, &test).unwrap(), run.accuracy);
        let again = train_classifier_with(&train, &test, &config, &Device::Cpu, |_| {}).unwrap();
        assert_eq!(run.losses, again.losses);
    }

    #[test]
    fn bad_settings_are_errors() {
        let (train, test) = (toy(16, 1), toy(4, 2));
        let no_batch = ClassifierTraining {
            batch_size: 32,
            ..Default::default()
        };
        let e = train_classifier_with(&train, &test, &no_batch, &Device::Cpu, |_| {}).unwrap_err();
        assert!(e.to_string().contains("no full batch of 32"), "{e}");
        let zero = ClassifierTraining {
            epochs: 0,
            ..Default::default()
        };
        assert!(train_classifier_with(&train, &test, &zero, &Device::Cpu, |_| {}).is_err());
        let e = train_classifier(Path::new("/nonexistent/fashion"), 1, 0).unwrap_err();
        assert!(format!("{e:#}").contains("diffusion data"), "{e:#}");
    }
}
