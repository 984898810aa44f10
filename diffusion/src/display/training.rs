//! The training cell's figure: the loss per step above the sample strips drawn along the way.

use anyhow::Result;
use candle_core::Tensor;

use super::{loss_chart, Figure, ImageGrid};
use crate::{Progress, Samples};

/// Collects a sample strip (or any row of images) at each progress report of [`Trainer::train`](crate::Trainer::train)
/// and draws them, under the loss chart, in one [`Figure`] (evcxr shows one picture per cell).
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// # let dev = candle_core::Device::Cpu;
/// # let images = diffusion::Rng::new(0).randn((256, 1, 16, 16), &dev)?;
/// let mut trainer = diffusion::Trainer::new(diffusion::TrainConfig::course(), &dev)?;
/// let mut rng = diffusion::Rng::new(0);
/// let mut log = diffusion::display::TrainingLog::new(15);
/// trainer.train(&images, 100, |p, tr| {
///     println!("{}", p.line());
///     log.add(p, &diffusion::sample_images(&tr.model, &tr.schedule, 1, 15, &mut rng)?)
/// })?;
/// let figure = log.figure(&trainer.losses)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TrainingLog {
    ncols: usize,
    strips: Vec<(String, ImageGrid)>,
}

impl TrainingLog {
    /// A log whose strips have `ncols` snapshots after the starting noise.
    pub fn new(ncols: usize) -> Self {
        Self {
            ncols,
            strips: vec![],
        }
    }

    /// Keeps the strips of `samples` (drawn with `ncols` snapshots) under the progress's
    /// `Epoch | Step | Loss` caption.
    pub fn add(&mut self, p: &Progress, samples: &Samples) -> Result<()> {
        self.keep(p, ImageGrid::new(&samples.strips()?, self.ncols + 1)?, None)
    }

    /// [`add`](Self::add) with what the strip was drawn for (notebook 04: its class) at the
    /// end of the caption, `Epoch | Step | Loss | Sneaker`.
    pub fn add_labelled(&mut self, p: &Progress, samples: &Samples, label: &str) -> Result<()> {
        let grid = ImageGrid::new(&samples.strips()?, self.ncols + 1)?;
        self.keep(p, grid, Some(label))
    }

    /// Keeps `images` (`[n, C, H, W]`, e.g. notebook 01's original / noisy / predicted) as one
    /// row under the progress's caption.
    pub fn add_images(&mut self, p: &Progress, images: &Tensor) -> Result<()> {
        self.keep(p, ImageGrid::new(images, images.dim(0)?)?, None)
    }

    fn keep(&mut self, p: &Progress, grid: ImageGrid, label: Option<&str>) -> Result<()> {
        let mut caption = format!("Epoch {} | Step {} | Loss {:.4}", p.epoch, p.step, p.loss);
        if let Some(label) = label {
            caption = format!("{caption} | {label}");
        }
        self.strips.push((caption, grid.scale(3)));
        Ok(())
    }

    /// The strips kept so far.
    pub fn len(&self) -> usize {
        self.strips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strips.is_empty()
    }

    /// The loss chart (with a moving average over 50 steps) and every strip, in order.
    pub fn figure(&self, losses: &[f32]) -> Result<Figure> {
        let mut figure = Figure::new().push_chart("Loss per step", &loss_chart(losses, 50)?)?;
        for (caption, strip) in &self.strips {
            figure.add_grid(caption.clone(), strip)?;
        }
        Ok(figure)
    }
}
