//! Batches and augmentation for training: a shuffled order of the images, cut into full
//! batches (the last partial batch is dropped, so every step sees exactly `batch_size` images),
//! and random horizontal flips.

use anyhow::Result;
use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;

use crate::Rng;

/// The image indices of one epoch: a random permutation of `0..n` cut into
/// `n / batch_size` batches of `batch_size` (the remainder is dropped).
pub fn shuffled_batches(n: usize, batch_size: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(rng.inner());
    order
        .chunks_exact(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// Flips each image of `x` (`[N, C, H, W]`) left-right with probability 1/2, independently.
pub fn random_hflip(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let (n, _, _, w) = x.dims4()?;
    let flips: Vec<u8> = (0..n).map(|_| u8::from(rng.coin())).collect();
    let mask = Tensor::from_vec(flips, (n, 1, 1, 1), x.device())?.broadcast_as(x.shape())?;
    let reversed = Tensor::arange(0u32, w as u32, x.device())?
        .affine(-1.0, (w - 1) as f64)?
        .to_dtype(DType::U32)?;
    let flipped = x.index_select(&reversed, 3)?;
    Ok(mask.where_cond(&flipped, x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn batches_drop_the_remainder_and_never_repeat() {
        let mut rng = Rng::new(1);
        let b = shuffled_batches(10, 3, &mut rng);
        assert_eq!(b.len(), 3);
        let mut all: Vec<u32> = b.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 9);
        assert!(all.iter().all(|i| *i < 10));
    }

    #[test]
    fn hflip_flips_rows_or_leaves_them() {
        let x = Tensor::arange(0f32, 3.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 3))
            .unwrap();
        let x = x.repeat((64, 1, 1, 1)).unwrap();
        let y = random_hflip(&x, &mut Rng::new(3)).unwrap();
        let rows: Vec<Vec<f32>> = y.reshape((64, 3)).unwrap().to_vec2().unwrap();
        let flipped = rows.iter().filter(|r| **r == [2.0, 1.0, 0.0]).count();
        let kept = rows.iter().filter(|r| **r == [0.0, 1.0, 2.0]).count();
        assert_eq!(flipped + kept, 64);
        // 64 fair coins: both outcomes occur (probability of failure 2^-63)
        assert!(flipped > 0 && kept > 0);
    }
}
