//! The assessment's digit classifier: the quality meter's [`Classifier`] at 28 x 28, trained on
//! MNIST (no flips), reading images in MNIST's `[0, 1]` through `x' = 2 x - 1`, the
//! classifier's `[-1, 1]`.
//!
//! It trains on the digits of [`Mnist::classifier_split`] (all but every 10th image) and is
//! measured on the held-out ones; the committed weights are [`committed_path`], their measured
//! accuracy in `docs/mnist/classifier.md`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::classifier::Classifier;
use super::training::{train_classifier_with, ClassifierProgress, ClassifierTraining};
use super::RANGE_TOLERANCE;
use crate::data::mnist::{Mnist, IMG_SIZE};
use crate::data::FashionMnist;

/// `<workspace root>/docs/mnist/classifier.safetensors`.
pub fn committed_path() -> PathBuf {
    crate::data::workspace_root()
        .join("docs")
        .join("mnist")
        .join("classifier.safetensors")
}

/// `<workspace root>/docs/mnist/classifier.md`: the committed weights' measured accuracy.
pub fn committed_report_path() -> PathBuf {
    committed_path().with_extension("md")
}

/// The settings behind the committed weights: 8 epochs, batch 128, Adam 0.001, seed 0, no
/// flips.
pub fn digit_training() -> ClassifierTraining {
    ClassifierTraining {
        epochs: 8,
        hflip: false,
        ..Default::default()
    }
}

/// Checks `[N, 1, 28, 28]` f32 in `[0, 1]` and maps it to the classifier's scale, `2 x - 1`.
pub fn to_classifier_scale(images: &Tensor) -> Result<Tensor> {
    let dims = images.dims();
    if dims.len() != 4 || dims[1..] != [1, IMG_SIZE, IMG_SIZE] || dims[0] == 0 {
        bail!("expected digits of shape [N, 1, 28, 28] with N >= 1, got {dims:?}");
    }
    let x = images
        .to_dtype(candle_core::DType::F32)?
        .to_device(&Device::Cpu)?;
    let values: Vec<f32> = x.flatten_all()?.to_vec1()?;
    if let Some(v) = values
        .iter()
        .find(|v| !v.is_finite() || **v < -RANGE_TOLERANCE || **v > 1.0 + RANGE_TOLERANCE)
    {
        bail!(
            "expected pixels in [0, 1] (MNIST's scale), found {v}: clamp samples with \
             `.clamp(0f32, 1f32)`"
        );
    }
    Ok(x.affine(2.0, -1.0)?) // [N, 1, 28, 28] in [-1, 1]
}

/// The classifier reading 28 x 28 digits in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct DigitClassifier {
    pub classifier: Classifier,
}

impl DigitClassifier {
    /// The committed weights, [`committed_path`].
    pub fn committed(device: &Device) -> Result<Self> {
        Self::load(&committed_path(), device)
    }

    /// Weights saved by [`Classifier::save`] for 28 x 28 images.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let classifier = Classifier::load(path, device)?;
        if classifier.img_size != IMG_SIZE {
            bail!(
                "{} reads {s}x{s} images, not MNIST's 28x28 (is it the FashionMNIST classifier?): \
                 train the digit classifier with `diffusion assessment classifier`",
                path.display(),
                s = classifier.img_size
            );
        }
        Ok(Self { classifier })
    }

    /// The digit read in each image of `images` (`[N, 1, 28, 28]` in `[0, 1]`).
    pub fn predict(&self, images: &Tensor) -> Result<Vec<u8>> {
        let x = to_classifier_scale(images)?;
        Ok(self.classifier.classify(&x)?.labels)
    }

    /// The share of `data`'s images read as their label.
    pub fn accuracy(&self, data: &Mnist) -> Result<f64> {
        if data.is_empty() {
            bail!("cannot measure an accuracy on 0 images");
        }
        let predicted = self.predict(&data.images)?;
        Ok(super::training::share_right(&predicted, &data.labels))
    }
}

/// A trained digit classifier and its held-out accuracy.
#[derive(Debug, Clone)]
pub struct TrainedDigits {
    pub classifier: DigitClassifier,
    /// Accuracy on the held-out digits.
    pub accuracy: f64,
    pub train_images: usize,
    pub test_images: usize,
    pub losses: Vec<f32>,
    pub elapsed: std::time::Duration,
}

/// Trains the classifier on `data`'s train part ([`Mnist::classifier_split`]) with `config`
/// and measures it on the held-out part.
pub fn train_digit_classifier(
    data: &Mnist,
    config: &ClassifierTraining,
    device: &Device,
    progress: impl FnMut(&ClassifierProgress),
) -> Result<TrainedDigits> {
    let (train, test) = data.classifier_split()?;
    let scaled = |m: &Mnist| -> Result<FashionMnist> {
        Ok(FashionMnist {
            images: to_classifier_scale(&m.images)?,
            labels: m.labels.clone(),
        })
    };
    let t = train_classifier_with(&scaled(&train)?, &scaled(&test)?, config, device, progress)
        .context("training the digit classifier")?;
    Ok(TrainedDigits {
        classifier: DigitClassifier {
            classifier: t.classifier,
        },
        accuracy: t.accuracy,
        train_images: train.len(),
        test_images: test.len(),
        losses: t.losses,
        elapsed: t.elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_checks_shape_and_range() {
        let ok = Tensor::full(0.5f32, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let x = to_classifier_scale(&ok).unwrap();
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 0.0);
        let small = Tensor::zeros((2, 1, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(format!("{:#}", to_classifier_scale(&small).unwrap_err()).contains("28, 28"));
        let neg = Tensor::full(-0.5f32, (1, 1, 28, 28), &Device::Cpu).unwrap();
        assert!(format!("{:#}", to_classifier_scale(&neg).unwrap_err()).contains("[0, 1]"));
    }

    #[test]
    fn the_fashion_classifier_is_refused_and_sizes_round_trip() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let fashion = dir.path().join("f.safetensors");
        Classifier::new(&dev, &mut crate::Rng::new(0))
            .unwrap()
            .save(&fashion)
            .unwrap();
        let e = format!("{:#}", DigitClassifier::load(&fashion, &dev).unwrap_err());
        assert!(e.contains("16x16") && e.contains("28x28"), "{e}");
        let digits = dir.path().join("d.safetensors");
        let c = Classifier::with_size(28, &dev, &mut crate::Rng::new(0)).unwrap();
        c.save(&digits).unwrap();
        let back = DigitClassifier::load(&digits, &dev).unwrap();
        assert_eq!(back.classifier.img_size, 28);
        let x = Tensor::full(0.3f32, (3, 1, 28, 28), &dev).unwrap();
        assert_eq!(back.predict(&x).unwrap().len(), 3);
    }
}
