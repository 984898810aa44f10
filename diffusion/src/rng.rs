//! A seeded random source for everything the course draws: noise, timesteps, shuffles, flips.
//!
//! Noise is drawn on the host and then moved to the device, so a seed gives the same numbers on
//! the CPU and on CUDA.

use anyhow::Result;
use candle_core::{Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

/// A seeded random number generator.
#[derive(Debug, Clone)]
pub struct Rng(StdRng);

impl Rng {
    /// A generator that always gives the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// A generator seeded from the operating system.
    pub fn from_entropy() -> Self {
        Self(StdRng::from_os_rng())
    }

    /// Standard normal samples `N(0, 1)` of the given shape (f32), by the Box-Muller transform.
    pub fn randn<S: Into<Shape>>(&mut self, shape: S, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let u1: f64 = 1.0 - self.0.random::<f64>(); // in (0, 1]
            let u2: f64 = self.0.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let th = 2.0 * std::f64::consts::PI * u2;
            v.push((r * th.cos()) as f32);
            v.push((r * th.sin()) as f32);
        }
        v.truncate(n);
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// Samples of `U(-bound, bound)` of the given shape (f32).
    pub fn uniform<S: Into<Shape>>(
        &mut self,
        shape: S,
        bound: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v: Vec<f32> = (0..shape.elem_count())
            .map(|_| ((2.0 * self.0.random::<f64>() - 1.0) * bound) as f32)
            .collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// Standard normal samples shaped like `x`, on its device.
    pub fn randn_like(&mut self, x: &Tensor) -> Result<Tensor> {
        self.randn(x.shape().clone(), x.device())
    }

    /// `n` timesteps drawn uniformly from `0..steps`, as a U32 tensor of shape `[n]`.
    pub fn timesteps(&mut self, n: usize, steps: usize, device: &Device) -> Result<Tensor> {
        if steps == 0 || steps > u32::MAX as usize {
            anyhow::bail!(
                "timesteps are drawn from 0..T: T must be between 1 and 2^32 - 1, got {steps}"
            );
        }
        let v: Vec<u32> = (0..n)
            .map(|_| self.0.random_range(0..steps as u32))
            .collect();
        Ok(Tensor::from_vec(v, n, device)?)
    }

    /// A uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> Result<usize> {
        if n == 0 {
            anyhow::bail!("cannot draw an integer below 0: n must be at least 1");
        }
        Ok(self.0.random_range(0..n))
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.0.random::<bool>()
    }

    /// The underlying generator, for shuffles.
    pub fn inner(&mut self) -> &mut StdRng {
        &mut self.0
    }
}
