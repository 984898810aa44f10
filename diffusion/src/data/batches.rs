//! Shuffled mini-batches and the random horizontal flip of the course's training loop.
//!
//! As PyTorch's `DataLoader(shuffle=True, drop_last=True)`: each epoch visits the images in a
//! new random order, in `n / batch_size` full batches; the last `n % batch_size` images of the
//! order are left out of that epoch. `RandomHorizontalFlip()` mirrors each image with
//! probability 1/2.

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The indices of one epoch's batches, in a shuffled order, last partial batch dropped.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Batches {
    /// Batches of `0..n_images` shuffled by `StdRng::seed_from_u64(epoch_seed(seed, epoch))`.
    pub fn new(n_images: usize, batch_size: usize, seed: u64, epoch: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(epoch_seed(seed, epoch));
        Self::with_rng(n_images, batch_size, &mut rng)
    }

    /// Batches of `0..n_images` shuffled by `rng`.
    pub fn with_rng(n_images: usize, batch_size: usize, rng: &mut StdRng) -> Result<Self> {
        if batch_size == 0 {
            bail!("batch size must be at least 1, got 0");
        }
        let mut order: Vec<usize> = (0..n_images).collect();
        order.shuffle(rng);
        Ok(Self {
            order,
            batch_size,
            next: 0,
        })
    }

    /// Number of full batches per epoch, `n_images / batch_size`.
    pub fn num_batches(&self) -> usize {
        self.order.len() / self.batch_size
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// The seed of epoch `epoch` of a run seeded with `seed`: `seed + epoch * 0x9E3779B97F4A7C15`
/// (wrapping), so that each epoch gets its own order.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed.wrapping_add(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let end = self.next + self.batch_size;
        if end > self.order.len() {
            return None;
        }
        let batch = self.order[self.next..end].to_vec();
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next) / self.batch_size;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}

/// Mirrors each image of a `[N, C, H, W]` batch left-right with probability 1/2:
/// `out[i, c, y, x] = x[i, c, y, W - 1 - x]` when image `i`'s coin comes up, else `x[i, c, y, x]`.
pub fn random_hflip(images: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
    let dims = images.dims();
    if dims.len() != 4 {
        bail!(
            "random_hflip expects a batch of images [N, C, H, W], got shape {:?}",
            dims
        );
    }
    let n = dims[0];
    let flip: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.5))).collect();
    let mask = Tensor::from_vec(flip, (n, 1, 1, 1), images.device())?.broadcast_as(dims)?;
    let flipped = images.flip(&[3])?;
    Ok(mask.where_cond(&flipped, images)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn batches_drop_the_last_partial_batch_and_repeat_no_index() {
        let b = Batches::new(10, 3, 7, 0).unwrap();
        assert_eq!(b.num_batches(), 3);
        assert_eq!(b.len(), 3);
        let batches: Vec<Vec<usize>> = b.collect();
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.len() == 3));
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "an index came twice");
        assert!(seen.iter().all(|&i| i < 10));

        // Exact multiple: every index exactly once.
        let mut all: Vec<usize> = Batches::new(12, 4, 1, 0).unwrap().flatten().collect();
        all.sort();
        assert_eq!(all, (0..12).collect::<Vec<_>>());

        // Fewer images than one batch: no batch at all.
        assert_eq!(Batches::new(5, 8, 0, 0).unwrap().count(), 0);
        assert!(Batches::new(5, 0, 0, 0).is_err());
    }

    #[test]
    fn batches_are_shuffled_seeded_and_differ_between_epochs() {
        let order = |seed, epoch| -> Vec<usize> {
            Batches::new(1000, 10, seed, epoch)
                .unwrap()
                .flatten()
                .collect()
        };
        assert_eq!(order(3, 0), order(3, 0));
        assert_ne!(order(3, 0), order(3, 1));
        assert_ne!(order(3, 0), order(4, 0));
        // Not the identity order (probability 1/1000! of failing by chance).
        assert_ne!(order(3, 0), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn hflip_mirrors_whole_images_about_half_the_time() {
        let (n, c, h, w) = (200usize, 2usize, 3usize, 4usize);
        let data: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
        let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let y = random_hflip(&x, &mut rng).unwrap();
        assert_eq!(y.dims(), &[n, c, h, w]);
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let at = |i: usize, ch: usize, r: usize, col: usize| ((i * c + ch) * h + r) * w + col;
        let mut flipped = 0;
        for i in 0..n {
            let same = (0..c * h * w).all(|k| y[i * c * h * w + k] == data[i * c * h * w + k]);
            let mirrored = (0..c).all(|ch| {
                (0..h).all(|r| {
                    (0..w).all(|col| y[at(i, ch, r, col)] == data[at(i, ch, r, w - 1 - col)])
                })
            });
            assert!(
                same ^ mirrored,
                "image {i} is neither kept nor mirrored whole"
            );
            flipped += usize::from(mirrored);
        }
        // Binomial(200, 1/2): mean 100, sd ~7; 60..140 fails with probability < 1e-8.
        assert!((60..=140).contains(&flipped), "{flipped} of {n} flipped");
        assert!(random_hflip(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            &mut rng
        )
        .is_err());
    }
}
