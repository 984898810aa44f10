//! # Measuring sample quality
//!
//! A sampler is judged by how close its images are to real ones, as a classifier trained on
//! FashionMNIST sees them. Each image goes through the [`Classifier`]; its penultimate layer
//! gives a vector of [`FEATURES`] numbers, its last layer a class. Then:
//!
//! | score | what it compares | module |
//! | --- | --- | --- |
//! | Fréchet distance (FD) | the mean and covariance of the features, as two Gaussians | [`frechet`] |
//! | kernel distance (KID) | the features' distributions, by an unbiased MMD² | [`kid`](mod@kid) |
//! | class histogram | how the samples spread over the ten classes | [`histogram`] |
//!
//! Lower FD and KID are better; neither reaches 0 for a finite set, so [`score`] also measures
//! two disjoint sets of real test images of the same sizes: the floor a perfect sampler would
//! reach at that `N`. The classifier is trained by [`train_classifier`] (module [`training`]).
//!
//! Bad input is an error that says what was expected: images must be `[N, 1, 16, 16]` f32 in
//! `[-1, 1]` ([`check_images`]), and a covariance of `d` features needs more than `d` images.

pub mod classifier;
pub mod digits;
pub mod eigen;
pub mod frechet;
pub mod histogram;
pub mod kid;
pub mod matrix;
pub mod pixels;
pub mod score;
pub mod training;

pub use classifier::{Classified, Classifier, FEATURES};
pub use frechet::{frechet_distance, sqrt_psd, Gaussian};
pub use histogram::{asked_class_share, ClassHistogram};
pub use kid::kid;
pub use matrix::Matrix;
pub use pixels::ImageStats;
pub use score::{real_split, score_samples, QualityReport, Reference, Scores};
pub use training::{
    accuracy, train_classifier, train_classifier_with, ClassifierProgress, ClassifierTraining,
    TrainedClassifier,
};

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// How far outside `[-1, 1]` a pixel may be before [`check_images`] refuses it (rounding).
pub const RANGE_TOLERANCE: f32 = 1e-3;

/// Checks that `x` is a batch of course images, `[N, 1, 16, 16]` f32 with `N >= 1` and every
/// value finite and in `[-1, 1]` (within [`RANGE_TOLERANCE`]); returns `N`.
pub fn check_images(x: &Tensor) -> Result<usize> {
    check_images_of(x, crate::settings::IMG_SIZE)
}

/// [`check_images`] for images of side `size`: `[N, 1, size, size]`.
pub fn check_images_of(x: &Tensor, size: usize) -> Result<usize> {
    use crate::settings::IMG_CH;
    let dims = x.dims();
    let n = dims.first().copied().unwrap_or(0);
    if dims != [n, IMG_CH, size, size] || n == 0 {
        bail!("expected images of shape [N, {IMG_CH}, {size}, {size}] with N >= 1, got {dims:?}");
    }
    if x.dtype() != DType::F32 {
        bail!(
            "expected f32 images, got {:?}: convert with `.to_dtype(DType::F32)`",
            x.dtype()
        );
    }
    let values: Vec<f32> = x.flatten_all()?.to_vec1()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "image {} holds a non-finite value ({}): every pixel must be a number in [-1, 1]",
            i / (size * size),
            values[i]
        );
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo < -1.0 - RANGE_TOLERANCE || hi > 1.0 + RANGE_TOLERANCE {
        bail!(
            "expected pixels in [-1, 1] (the course's scale), got values from {lo} to {hi}: \
             clamp samples with `.clamp(-1f32, 1f32)` (`diffusion sample` writes them clamped), \
             and map images in [0, 1] with `x * 2 - 1`"
        );
    }
    Ok(n)
}

/// `n` rows of `d` standard normal values plus `shift`, drawn from `rng`: test data.
#[cfg(test)]
pub(crate) fn gaussian_set(rng: &mut crate::Rng, n: usize, d: usize, shift: f32) -> Matrix {
    let t = rng.randn((n, d), &candle_core::Device::Cpu).unwrap();
    let v: Vec<f64> = t
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| (x + shift) as f64)
        .collect();
    Matrix::from_vec(n, d, v).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn err(x: &Tensor) -> String {
        format!("{:#}", check_images(x).unwrap_err())
    }

    #[test]
    fn check_images_says_what_was_expected() {
        let dev = Device::Cpu;
        let ok = Tensor::zeros((3, 1, 16, 16), DType::F32, &dev).unwrap();
        assert_eq!(check_images(&ok).unwrap(), 3);
        let edge = Tensor::full(1.0005f32, (1, 1, 16, 16), &dev).unwrap();
        assert_eq!(check_images(&edge).unwrap(), 1);

        let e = err(&Tensor::zeros((3, 16, 16), DType::F32, &dev).unwrap());
        assert!(
            e.contains("[N, 1, 16, 16]") && e.contains("[3, 16, 16]"),
            "{e}"
        );
        let e = err(&Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap());
        assert!(e.contains("[2, 1, 28, 28]"), "{e}");
        let e = err(&Tensor::zeros((0, 1, 16, 16), DType::F32, &dev).unwrap());
        assert!(e.contains("N >= 1"), "{e}");
        let e = err(&Tensor::zeros((2, 1, 16, 16), DType::F64, &dev).unwrap());
        assert!(e.contains("f32") && e.contains("F64"), "{e}");
        let e = err(&Tensor::full(1.5f32, (2, 1, 16, 16), &dev).unwrap());
        assert!(
            e.contains("[-1, 1]") && e.contains("1.5") && e.contains("clamp"),
            "{e}"
        );
        let e = err(&Tensor::full(0.0f32, (2, 1, 16, 16), &dev)
            .unwrap()
            .affine(1.0, -2.0)
            .unwrap());
        assert!(e.contains("-2"), "{e}");
        let mut v = vec![0f32; 2 * 256];
        v[300] = f32::NAN;
        let e = err(&Tensor::from_vec(v, (2, 1, 16, 16), &dev).unwrap());
        assert!(e.contains("image 1") && e.contains("NaN"), "{e}");
    }
}
