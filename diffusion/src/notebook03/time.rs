//! Notebook 03's time input: the sinusoidal embedding of `t / T`.
//!
//! ```text
//! half = dim / 2,   f_k = exp(-k ln(10000) / (half - 1)),  k = 0, ..., half - 1
//! e_k  = (t / T) f_k
//! emb  = [sin e_0, ..., sin e_{half-1}, cos e_0, ..., cos e_{half-1}]   (sines first)
//! ```
//!
//! The frequencies run from 1 down to 1/10000 radians per unit of `t / T`. Since `t / T` stays in
//! `[0, 1)`, every `e_k` stays below 1 radian: the embedding is smooth in `t`, and with 8
//! dimensions its fastest coordinate turns through less than one radian over the whole schedule.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// The course's `SinusoidalPositionEmbedBlock(dim)`: no parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinusoidalPositionEmbedBlock {
    pub dim: usize,
}

impl SinusoidalPositionEmbedBlock {
    /// `dim` must be even and at least 4 (the formula divides by `dim / 2 - 1`).
    pub fn new(dim: usize) -> Result<Self> {
        if dim < 4 || !dim.is_multiple_of(2) {
            bail!("the sinusoidal embedding needs an even dimension of at least 4, got {dim}");
        }
        Ok(Self { dim })
    }

    /// The frequencies `f_k`, `k = 0..dim/2`.
    pub fn frequencies(&self) -> Vec<f64> {
        let half = self.dim / 2;
        let scale = 10000f64.ln() / (half - 1) as f64;
        (0..half).map(|k| (-(k as f64) * scale).exp()).collect()
    }

    /// `[N]` times (the network passes `t / T`) `-> [N, dim]`.
    pub fn forward(&self, time: &Tensor) -> Result<Tensor> {
        let n = time.dims1()?;
        let f: Vec<f32> = self.frequencies().iter().map(|v| *v as f32).collect();
        let f = Tensor::from_vec(f, (1, self.dim / 2), time.device())?; // [1, half]
        let e = time
            .to_dtype(DType::F32)?
            .reshape((n, 1))?
            .broadcast_mul(&f)?; // [N, half]
        Ok(Tensor::cat(&[e.sin()?, e.cos()?], 1)?) // [N, dim]
    }
}
