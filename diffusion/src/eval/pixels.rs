//! Simple statistics of a batch of images, to compare what a network outputs with real images:
//!
//! ```text
//! mean   = mean of all pixels
//! std    = standard deviation of all pixels
//! spread = mean over pixel positions (c, h, w) of the standard deviation across the N images
//! background = share of pixels below -0.9 (BACKGROUND): the black around a garment
//! ```
//!
//! `spread` is 0 when every image is the same, whatever each one looks like: it measures how much
//! the images differ from each other.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! // two 1 x 1 x 2 images: [0, 1] and [1, 1]
//! let x = Tensor::new(&[[[[0f32, 1.]]], [[[1., 1.]]]], &Device::Cpu)?;
//! let s = diffusion::eval::ImageStats::of(&x)?;
//! assert_eq!(s.mean, 0.75);
//! assert!((s.std - 0.1875f64.sqrt()).abs() < 1e-12);
//! assert_eq!(s.spread, 0.25); // std across images: 0.5 at the first pixel, 0 at the second
//! assert_eq!(s.background, 0.0);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{bail, Result};

/// A pixel below this value counts as background (FashionMNIST's black is -1).
pub const BACKGROUND: f64 = -0.9;
use candle_core::{DType, Device, Tensor};

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageStats {
    pub mean: f64,
    pub std: f64,
    pub spread: f64,
    pub background: f64,
}

impl ImageStats {
    /// The statistics of `images` (`[N, ...]` with `N >= 1`, any float dtype, any device).
    pub fn of(images: &Tensor) -> Result<Self> {
        let n = images.dims().first().copied().unwrap_or(0);
        if images.rank() < 2 || n == 0 || images.elem_count() == 0 {
            bail!(
                "expected a batch of images [N, ...] with N >= 1, got shape {:?}",
                images.dims()
            );
        }
        let x = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_from(1)?;
        let v: Vec<Vec<f64>> = x.to_vec2()?;
        let all: Vec<f64> = v.iter().flatten().copied().collect();
        let (mean, var) = mean_var(&all);
        let per_pixel = v[0].len();
        let spread = (0..per_pixel)
            .map(|j| {
                mean_var(&v.iter().map(|img| img[j]).collect::<Vec<_>>())
                    .1
                    .sqrt()
            })
            .sum::<f64>()
            / per_pixel as f64;
        let background = all.iter().filter(|x| **x < BACKGROUND).count() as f64 / all.len() as f64;
        Ok(Self {
            mean,
            std: var.sqrt(),
            spread,
            background,
        })
    }
}

impl std::fmt::Display for ImageStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean {:+.3} | std {:.3} | spread between images {:.3} | background {:.1}%",
            self.mean,
            self.std,
            self.spread,
            100.0 * self.background
        )
    }
}

/// The mean and the (population) variance of `v`.
fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_is_the_share_below_the_threshold() {
        let x = Tensor::new(&[[-1f32, -0.95, 0.0, 1.0]], &Device::Cpu).unwrap();
        let s = ImageStats::of(&x).unwrap();
        assert!((s.mean - (-0.95 / 4.0)).abs() < 1e-7);
        assert_eq!(s.background, 0.5);
        assert_eq!(s.spread, 0.0, "one image does not differ from itself");
    }

    #[test]
    fn an_empty_batch_is_an_error() {
        let x = Tensor::zeros((0, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = ImageStats::of(&x).unwrap_err().to_string();
        assert!(e.contains("N >= 1"), "{e}");
    }
}
