//! Timing the course's workloads: one training step of 128 images, one 150-step sample of a
//! single image, and a 150-step sample of 64 images, for notebook 02's network ([`run`]) or any
//! other ([`run_for`], e.g. notebook 03's). Each figure is the median of several runs after a
//! warm-up.

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;

use diffusion::network::{Learner, NoisePredictor};
use diffusion::{sample_images, Rng, TrainConfig, Trainer};

/// Medians in milliseconds.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub train_step_ms: f64,
    pub sample150_ms: f64,
    pub sample150x64_ms: f64,
}

impl BenchResult {
    /// `train_step_ms=… sample150_ms=… sample150x64_ms=…`
    pub fn line(&self) -> String {
        format!(
            "train_step_ms={:.1} sample150_ms={:.1} sample150x64_ms={:.1}",
            self.train_step_ms, self.sample150_ms, self.sample150x64_ms
        )
    }
}

/// The median of `runs` timings of `f` (after one warm-up call), in milliseconds.
pub fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Runs the three measurements for notebook 02's network on `device` with `runs` repetitions
/// each.
pub fn run(device: &Device, runs: usize) -> Result<BenchResult> {
    run_for::<diffusion::UNet>(Default::default(), device, runs)
}

/// [`run`] for the network `M` built with `net`.
pub fn run_for<M: Learner + NoisePredictor>(
    net: M::Config,
    device: &Device,
    runs: usize,
) -> Result<BenchResult> {
    let mut trainer = Trainer::<M>::for_network(net, TrainConfig::course(), device)?;
    let mut rng = Rng::new(0);
    let x_0 = rng.randn((128, 1, 16, 16), device)?.clamp(-1f32, 1f32)?;
    // A GPU runs the last operations after a call returns: wait for them inside each timing.
    let train_step_ms = median_ms(runs, || {
        trainer.train_step(&x_0)?;
        Ok(device.synchronize()?)
    })?;
    let (model, schedule) = (&trainer.model, &trainer.schedule);
    let sample150_ms = median_ms(runs, || {
        sample_images(model, schedule, 1, 0, &mut rng)?;
        Ok(device.synchronize()?)
    })?;
    let sample150x64_ms = median_ms(runs.div_ceil(3), || {
        sample_images(model, schedule, 64, 0, &mut rng)?;
        Ok(device.synchronize()?)
    })?;
    Ok(BenchResult {
        train_step_ms,
        sample150_ms,
        sample150x64_ms,
    })
}
