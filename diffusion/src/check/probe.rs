//! A network whose prediction is known, for checking code that calls a network.

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use std::cell::RefCell;

use crate::network::{check_images, Network, NoisePredictor};

/// Predicts `0.5 x_t + 0.01 t (+ 0.1 in training mode)`, so that the timestep and the mode it
/// was called with show in its output; remembers every call's timesteps and mode.
#[derive(Debug)]
pub struct Probe {
    shape: [usize; 3],
    steps: usize,
    /// `(timesteps, train)` of each call, in order.
    pub calls: RefCell<Vec<(Vec<u32>, bool)>>,
}

impl Probe {
    /// A probe for images `[channels, height, width]` and `steps` timesteps.
    pub fn new(shape: [usize; 3], steps: usize) -> Self {
        Self {
            shape,
            steps,
            calls: RefCell::new(Vec::new()),
        }
    }

    /// The prediction, from the formula: `0.5 x_t + 0.01 t + 0.1 [train]`.
    pub fn formula(x_t: f64, t: f64, train: bool) -> f64 {
        0.5 * x_t + 0.01 * t + if train { 0.1 } else { 0.0 }
    }
}

impl Network for Probe {
    type Config = ();

    fn build(_: (), _: VarBuilder) -> Result<Self> {
        Ok(Self::new([1, 4, 4], 10))
    }

    fn config(&self) {}

    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
}

impl NoisePredictor for Probe {
    fn steps(&self) -> usize {
        self.steps
    }

    /// `x_t: [N, C, H, W]`, `t: [N]` -> `[N, C, H, W]`.
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        let n = check_images(self, x_t)?;
        let ts = crate::timesteps::check(t, n, self.steps)?;
        self.calls
            .borrow_mut()
            .push((ts.iter().map(|&v| v as u32).collect(), train));
        let t = t.to_dtype(DType::F32)?.reshape((n, 1, 1, 1))?; // [N, 1, 1, 1]
        let shift = if train { 0.1 } else { 0.0 };
        Ok(((x_t * 0.5)? + ((t * 0.01)? + shift)?.broadcast_as(x_t.shape())?)?) // [N, C, H, W]
    }
}
