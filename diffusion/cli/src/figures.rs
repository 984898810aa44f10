//! The figures of `walkthroughs/02_diffusion.md`, made by one call: `diffusion figures`.
//!
//! ```text
//! diffusion figures --out walkthroughs/figures                      # trains briefly first
//! diffusion figures --out walkthroughs/figures --checkpoint docs/model.safetensors
//! ```
//!
//! | file | what it shows | needs a model |
//! | --- | --- | --- |
//! | `schedules.svg` | `sqrt(a_bar_t)` and `sqrt(1 - a_bar_t)`, linear and cosine schedules | no |
//! | `forward_grid.png` | one training image after each of the 150 forward steps, 10 x 15 | no |
//! | `reverse_strip.png` | DDPM trajectories from noise to image, 16 snapshots each | yes |
//! | `loss.svg` | the training loss per step and its moving average | its history |
//! | `loss_by_t.svg` | the model's loss at each timestep, and the best per-pixel predictor's | yes |
//! | `ddpm_vs_ddim.png` | the same starting noise through DDPM (150 calls) and DDIM (50, 25, 10) | yes |
//! | `README.md` | captions, where the model came from, and the measured numbers | |
//!
//! The model is the checkpoint given with `--checkpoint`; its loss history is `--losses`, else
//! the `losses.csv` that `diffusion train` writes beside the checkpoint (or the only
//! `losses*.csv` there, as `docs/losses-3-epochs.csv` beside `docs/model.safetensors`). Without a checkpoint the
//! command trains the course's network for `--max-steps` steps (default
//! [`DEFAULT_MAX_STEPS`]) and says so in every caption. Every random draw comes from
//! [`Rng::new(seed)`](diffusion::Rng), so a run is repeatable.
//!
//! Measured on `--samples` images (default 64): the loss at 16 timesteps on test images, and the
//! pixel mean and share of background pixels (`x < -0.9`) of the data, of DDPM samples started
//! from `N(0, I)`, of DDPM samples started from a true `x_149 ~ q(x_149 | x_0)` of test images,
//! and of DDIM samples in 50 and 10 steps.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use plotters::prelude::*;

use diffusion::data::{self, Split, CLASS_NAMES};
use diffusion::display::chart::{Legend, LineChart, Series};
use diffusion::display::course::moving_average;
use diffusion::display::font::{ensure_font, FAMILY};
use diffusion::display::output::write_atomic;
use diffusion::display::{Bitmap, ImageGrid};
use diffusion::eval::ImageStats;
use diffusion::settings::{EPOCHS, NCOLS, NROWS};
use diffusion::{
    forward_step, q_with_noise, reverse_q, sample_ddim, sample_images, Rng, Schedule, TrainConfig,
    Trainer, UNet,
};

/// Training steps of the brief run made when no checkpoint is given.
pub const DEFAULT_MAX_STEPS: usize = 20;

/// Images measured (and the most drawn in a figure row) by default.
pub const DEFAULT_SAMPLES: usize = 64;

/// The files one run writes, in order.
pub const FILES: [&str; 7] = [
    "schedules.svg",
    "forward_grid.png",
    "reverse_strip.png",
    "loss.svg",
    "loss_by_t.svg",
    "ddpm_vs_ddim.png",
    "README.md",
];

/// Trajectories in `reverse_strip.png`.
const STRIP_ROWS: usize = 8;
/// Images per row of `ddpm_vs_ddim.png`.
const COMPARE_COLS: usize = 10;
/// DDIM step counts compared with DDPM.
const DDIM_STEPS: [usize; 3] = [50, 25, 10];
pub use diffusion::eval::pixels::BACKGROUND;
/// Window of the loss curve's moving average, in steps.
const LOSS_WINDOW: usize = 50;

/// What `diffusion figures` does.
#[derive(Debug, Clone)]
pub struct FiguresConfig {
    /// Folder the files go to (created if missing).
    pub out: PathBuf,
    /// A trained checkpoint; `None` trains briefly.
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint's loss history (`step,loss` CSV); default `losses.csv` beside it.
    pub losses: Option<PathBuf>,
    /// FashionMNIST folder (default as for `diffusion train`).
    pub data: Option<PathBuf>,
    /// Steps of the brief training run (only without a checkpoint).
    pub max_steps: usize,
    /// Images measured, at least 1.
    pub samples: usize,
    /// Seed of every random draw.
    pub seed: u64,
}

impl FiguresConfig {
    /// The defaults, writing to `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            checkpoint: None,
            losses: None,
            data: None,
            max_steps: DEFAULT_MAX_STEPS,
            samples: DEFAULT_SAMPLES,
            seed: 0,
        }
    }
}

/// Where the model came from, for the captions.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A checkpoint, with the training steps its BatchNorm counter records.
    Checkpoint { path: PathBuf, steps: i64 },
    /// Trained by this run for this many steps.
    Brief { steps: usize },
}

impl ModelSource {
    /// One line for a caption.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Checkpoint { path, steps } => {
                format!(
                    "model: checkpoint {} ({steps} training steps)",
                    file_name(path)
                )
            }
            ModelSource::Brief { steps } => format!(
                "model: trained by `diffusion figures` for only {steps} steps (no checkpoint given)"
            ),
        }
    }
}

fn file_name(p: &Path) -> String {
    let parent = p
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| format!("{}/", d.to_string_lossy()))
        .unwrap_or_default();
    let name = p
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string());
    format!("{parent}{name}")
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FiguresReport {
    /// The files written.
    pub files: Vec<PathBuf>,
    pub model: ModelSource,
    /// `(step, loss)` of the training history drawn.
    pub losses: Vec<(usize, f64)>,
    /// Steps of 128 in one epoch over the training images (546 for the course's 70,000).
    pub steps_per_epoch: usize,
    /// `(t, model loss, best per-pixel loss)` on test images.
    pub loss_by_t: Vec<(usize, f64, f64)>,
    /// `(name, network calls per image, statistics)`: the data first, then each sampler.
    pub samples: Vec<(String, usize, ImageStats)>,
}

/// The loss history beside a checkpoint: `losses.csv` if it is there, else the only file named
/// `losses*.csv` in the same folder (such as `docs/losses-3-epochs.csv`), else `losses.csv`
/// (which then fails to read, with a message that says what to pass).
pub fn losses_beside(checkpoint: &Path) -> PathBuf {
    let dir = checkpoint
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let plain = dir.join("losses.csv");
    if plain.is_file() {
        return plain;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("losses") && n.ends_with(".csv"))
        })
        .collect();
    match found.len() {
        1 => found.remove(0),
        _ => plain,
    }
}

/// Reads a `step,loss` CSV (the `losses.csv` of `diffusion train`).
pub fn read_losses(path: &Path) -> Result<Vec<(usize, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the loss history {}: give the losses.csv written by `diffusion train` with --losses",
            path.display()
        )
    })?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("step")) {
            continue;
        }
        let parsed = line.split_once(',').and_then(|(s, l)| {
            Some((
                s.trim().parse::<usize>().ok()?,
                l.trim().parse::<f64>().ok()?,
            ))
        });
        match parsed {
            Some(p) => out.push(p),
            None => bail!(
                "{} line {}: expected `step,loss` (a whole number and a number), got {line:?}",
                path.display(),
                i + 1
            ),
        }
    }
    if out.is_empty() {
        bail!("{} holds no loss values", path.display());
    }
    Ok(out)
}

/// A picture: the image grid under a title block, with optional labels left of its rows.
pub fn labeled_png(grid: &ImageGrid, title: &[String], row_labels: &[String]) -> Result<Vec<u8>> {
    ensure_font()?;
    let img = grid.to_bitmap()?.to_rgba();
    let (gw, gh) = (img.width as u32, img.height as u32);
    let char_w = 8u32;
    let label_w = row_labels
        .iter()
        .map(|l| l.chars().count() as u32 * char_w + 12)
        .max()
        .unwrap_or(0);
    let title_w = title
        .iter()
        .map(|l| l.chars().count() as u32 * 8 + 16)
        .max()
        .unwrap_or(0);
    let top = 8 + 20 * title.len() as u32;
    let width = (label_w + gw + 4).max(title_w);
    let height = top + gh + 4;
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let style = TextStyle::from((FAMILY, 15).into_font()).color(&BLACK);
        for (i, line) in title.iter().enumerate() {
            root.draw_text(line, &style, (6, 5 + 20 * i as i32))
                .map_err(|e| anyhow::anyhow!("could not draw the caption: {e}"))?;
        }
        let rows = grid.rows().max(1) as u32;
        let row_h = gh / rows;
        for (r, label) in row_labels.iter().enumerate() {
            let y = top + r as u32 * row_h + row_h / 2 - 8;
            root.draw_text(label, &style, (4, y as i32))
                .map_err(|e| anyhow::anyhow!("could not draw a row label: {e}"))?;
        }
        root.present()
            .map_err(|e| anyhow::anyhow!("could not finish the picture: {e}"))?;
    }
    for y in 0..img.height {
        for x in 0..img.width {
            let at = ((top as usize + y) * width as usize + label_w as usize + x) * 3;
            buf[at..at + 3].copy_from_slice(&img.pixel(x, y)[..3]);
        }
    }
    Bitmap::new(width as usize, height as usize, 3, buf)?.to_png()
}

/// `sqrt(a_bar)` and `sqrt(1 - a_bar)` of the course's linear schedule and of the cosine one.
pub fn schedules_chart(t: usize, device: &Device) -> Result<LineChart> {
    let lin = Schedule::course(device)?;
    let cos = Schedule::cosine(t, device)?;
    let (l, c) = (lin.values(), cos.values());
    Ok(
        LineChart::new(format!("How much image and noise x_t holds (T = {t})"))
            .x_label("timestep t")
            .y_label("coefficient")
            .size(760, 420)
            .legend(Legend::OutsideRight)
            .with(Series::from_y("linear: sqrt(a_bar)", l.sqrt_a_bar.clone()).color(31, 119, 180))
            .with(
                Series::from_y("linear: sqrt(1 - a_bar)", l.sqrt_one_minus_a_bar.clone())
                    .color(214, 39, 40),
            )
            .with(
                Series::from_y("cosine: sqrt(a_bar)", c.sqrt_a_bar.clone())
                    .color(31, 119, 180)
                    .width(1),
            )
            .with(
                Series::from_y("cosine: sqrt(1 - a_bar)", c.sqrt_one_minus_a_bar.clone())
                    .color(214, 39, 40)
                    .width(1),
            ),
    )
}

/// `x` after each of the `T` forward steps (`[T, C, H, W]`), noise from `rng`.
pub fn forward_trajectory(schedule: &Schedule, x_0: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let mut x = x_0.clone();
    let mut frames = Vec::with_capacity(schedule.len());
    for beta in &schedule.values().b {
        let noise = rng.randn_like(&x)?;
        x = forward_step(&x, *beta, &noise)?;
        frames.push(x.clone());
    }
    Ok(Tensor::cat(&frames, 0)?)
}

/// The DDPM sampler started from a given `x` at `t = T-1` (the course's `reverse_q` at every step).
pub fn ddpm_from(
    model: &UNet,
    schedule: &Schedule,
    x_start: &Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let n = x_start.dim(0)?;
    let mut x = x_start.clone();
    for t in (0..schedule.len()).rev() {
        let t_batch = Tensor::full(t as u32, n, x.device())?;
        // as in `sample_images`: no gradient history is kept from one step to the next
        let e_t = model.forward_t(&x, &t_batch, false)?.detach();
        x = reverse_q(schedule, &x, t, &e_t, rng)?.detach();
    }
    Ok(x)
}

/// Offsets added to `--seed` for each random source of a run, so each is repeatable on its own:
/// the forward grid uses the seed itself.
pub const SEED_STRIPS: u64 = 1;
/// The noise of the loss-by-timestep measurement.
pub const SEED_LOSS_BY_T: u64 = 2;
/// The starting noise of `ddpm_vs_ddim.png` (through [`in_chunks`]).
pub const SEED_COMPARE: u64 = 3;
/// The starting noise of the measured DDPM and DDIM samples (through [`in_chunks`]).
pub const SEED_SAMPLES: u64 = 4;
/// The noise of the true `x_149` and of the DDPM run from it.
pub const SEED_TRUE_START: u64 = 5;

/// Images per call of a sampler in [`in_chunks`].
pub const CHUNK: usize = 8;

/// `n` images drawn [`CHUNK`] at a time and concatenated, chunk `k` with its own generator
/// `Rng::new(1000 seed + k)`: two samplers given the same `seed` start from the same noise, and
/// no call holds more than `CHUNK` images' worth of intermediate tensors.
pub fn in_chunks(
    n: usize,
    seed: u64,
    mut draw: impl FnMut(usize, &mut Rng) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut parts = vec![];
    let mut k = 0u64;
    while parts.len() * CHUNK < n {
        let m = CHUNK.min(n - parts.len() * CHUNK);
        parts.push(draw(
            m,
            &mut Rng::new(seed.wrapping_mul(1000).wrapping_add(k)),
        )?);
        k += 1;
    }
    if parts.is_empty() {
        bail!("asked for 0 images");
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The timesteps at which the loss is measured: 0, 10, ..., 140 and T-1.
pub fn loss_timesteps(t_total: usize) -> Vec<usize> {
    let mut ts: Vec<usize> = (0..t_total).step_by(10).collect();
    if ts.last() != Some(&(t_total - 1)) {
        ts.push(t_total - 1);
    }
    ts
}

/// The best loss at `t` of a linear predictor that sees each pixel alone, with pixel `i` modelled as
/// `N(m_i, s2_i)`: `mean_i a_bar s2_i / (a_bar s2_i + 1 - a_bar)`
/// (see [`answers::theory::ideal_sampler::min_noise_mse`]).
pub fn per_pixel_floor(a_bar: f64, pixel_vars: &[f64]) -> f64 {
    let n = pixel_vars.len().max(1) as f64;
    pixel_vars
        .iter()
        .map(|s2| a_bar * s2 / (a_bar * s2 + 1.0 - a_bar))
        .sum::<f64>()
        / n
}

/// The variance of each pixel position over a set of images `[N, C, H, W]`.
pub fn pixel_variances(images: &Tensor) -> Result<Vec<f64>> {
    let x = images.to_dtype(DType::F64)?;
    let mean = x.mean_keepdim(0)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean(0)?;
    Ok(var.flatten_all()?.to_vec1()?)
}

/// Makes every figure of [`FILES`] in `config.out`.
pub fn make_figures(config: &FiguresConfig, device: &Device) -> Result<FiguresReport> {
    if config.samples == 0 {
        bail!("--samples must be at least 1");
    }
    // a checkpoint's loss history is read first, so that a missing one fails before any work
    let checkpoint_losses = match &config.checkpoint {
        Some(path) => {
            let loss_path = match &config.losses {
                Some(p) => p.clone(),
                None => losses_beside(path),
            };
            Some(read_losses(&loss_path).with_context(|| {
                format!(
                    "the loss curve needs the checkpoint's loss history; none at {}",
                    loss_path.display()
                )
            })?)
        }
        None => None,
    };
    let out = &config.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut rng = Rng::new(config.seed);
    let schedule = Schedule::course(device)?;
    let t_total = schedule.len();
    let mut files = vec![];
    let mut save = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let path = out.join(name);
        write_atomic(&path, &bytes)?;
        files.push(path);
        Ok(())
    };

    // data
    let dir = data::data_dir(config.data.as_deref());
    let train = data::TrainingImages::All.load(&dir)?;
    let test = data::load(&dir, Split::Test)?;
    let steps_per_epoch = train.len() / TrainConfig::course().batch_size;
    let n = config.samples;
    if test.len() < n {
        bail!(
            "--samples {n} needs at least {n} test images, the data has {}",
            test.len()
        );
    }
    let test_images = test.images.narrow(0, 0, n)?.to_device(device)?;

    // 1. schedules
    save(
        "schedules.svg",
        schedules_chart(t_total, device)?.to_svg()?.into_bytes(),
    )?;

    // 2. forward grid of the first training image
    let (x_0, label) = train.batch(&[0])?;
    let x_0 = x_0.to_device(device)?;
    let frames = forward_trajectory(&schedule, &x_0, &mut rng)?;
    let class = CLASS_NAMES[usize::from(label[0])];
    let grid = ImageGrid::new(&frames.clamp(-1f32, 1f32)?, NCOLS)?;
    save(
        "forward_grid.png",
        labeled_png(
            &grid,
            &[
                format!("Forward diffusion of training image 0 ({class}), one forward_step per cell"),
                format!(
                    "row r, column c shows x_t for t = {NCOLS} r + c ({NROWS} x {NCOLS} = {t_total} steps)"
                ),
            ],
            &[],
        )?,
    )?;

    // the model
    let (model, source, losses) = match (&config.checkpoint, checkpoint_losses) {
        (Some(path), Some(losses)) => {
            let (model, varmap) = diffusion::checkpoint::load_unet(path, device)?;
            let steps = varmap
                .data()
                .lock()
                .expect("the VarMap lock is never poisoned")
                .get("down0.1.num_batches_tracked")
                .map(|v| v.as_tensor().to_dtype(DType::I64)?.to_scalar::<i64>())
                .transpose()?
                .unwrap_or(0);
            (
                model,
                ModelSource::Checkpoint {
                    path: path.clone(),
                    steps,
                },
                losses,
            )
        }
        _ => {
            let train_config = TrainConfig {
                max_steps: Some(config.max_steps),
                seed: config.seed,
                ..TrainConfig::course()
            };
            let mut trainer = Trainer::new(train_config, device)?;
            trainer.train(&train.images, 0, |_, _| Ok(()))?;
            let losses = trainer
                .losses
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, f64::from(*l)))
                .collect();
            (
                trainer.model.clone(),
                ModelSource::Brief {
                    steps: trainer.step,
                },
                losses,
            )
        }
    };
    let who = source.describe();

    // 3. reverse strips
    let rows = STRIP_ROWS.min(n);
    let strips = sample_images(
        &model,
        &schedule,
        rows,
        NCOLS,
        &mut Rng::new(config.seed + SEED_STRIPS),
    )?;
    let strip_steps: Vec<String> = strips
        .frame_steps
        .iter()
        .map(|s| s.map_or("noise".to_string(), |t| t.to_string()))
        .collect();
    let grid = ImageGrid::new(&strips.strips()?.clamp(-1f32, 1f32)?, strips.frames.len())?;
    save(
        "reverse_strip.png",
        labeled_png(
            &grid,
            &[
                format!("DDPM sampling, {rows} trajectories from N(0, I) noise to an image (sample_images)"),
                format!("columns: x after t = {}", strip_steps.join(", ")),
                who.clone(),
            ],
            &[],
        )?,
    )?;

    // 4. loss curve
    let points: Vec<(f64, f64)> = losses.iter().map(|(s, l)| (*s as f64, *l)).collect();
    let window = LOSS_WINDOW.min(points.len()).max(1);
    let smooth = moving_average(&points, window)?;
    let pixel_vars = pixel_variances(&train.images)?;
    let v = schedule.values();
    let floor_avg = v
        .a_bar
        .iter()
        .map(|ab| per_pixel_floor(*ab, &pixel_vars))
        .sum::<f64>()
        / t_total as f64;
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    let chart = LineChart::new("Training loss (MSE between true and predicted noise)")
        .x_label(format!("step ({who})"))
        .y_label("loss")
        .size(820, 420)
        .with(
            Series::new("loss of each batch", points.clone())
                .color(31, 119, 180)
                .faint(),
        )
        .with(
            Series::new(format!("moving average ({window} steps)"), smooth)
                .color(214, 39, 40)
                .width(2),
        )
        .with(
            Series::new(
                "best linear predictor that sees one pixel at a time",
                [(first, floor_avg), (last, floor_avg)],
            )
            .color(44, 160, 44),
        );
    save("loss.svg", chart.to_svg()?.into_bytes())?;

    // 5. loss by timestep, on test images, evaluation mode
    let mut loss_by_t = vec![];
    let mut noise_rng = Rng::new(config.seed + SEED_LOSS_BY_T);
    for t in loss_timesteps(t_total) {
        let noise = noise_rng.randn_like(&test_images)?;
        let t_batch = Tensor::full(t as u32, n, device)?;
        let x_t = q_with_noise(&schedule, &test_images, &t_batch, &noise)?;
        let e = model.forward_t(&x_t, &t_batch, false)?;
        let mse = (e - &noise)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
        loss_by_t.push((t, f64::from(mse), per_pixel_floor(v.a_bar[t], &pixel_vars)));
    }
    let chart = LineChart::new("Loss at each timestep, test images")
        .x_label(format!("timestep t ({who})"))
        .y_label("MSE")
        .size(820, 420)
        .with(Series::new(
            "the model",
            loss_by_t.iter().map(|(t, l, _)| (*t as f64, *l)),
        ))
        .with(Series::new(
            "best linear predictor that sees one pixel at a time",
            loss_by_t.iter().map(|(t, _, f)| (*t as f64, *f)),
        ));
    save("loss_by_t.svg", chart.to_svg()?.into_bytes())?;

    // 6. DDPM versus DDIM from the same noise (the same chunk generators of `in_chunks`)
    let cols = COMPARE_COLS.min(n);
    let seed = config.seed + SEED_COMPARE;
    let mut rows_img = vec![in_chunks(cols, seed, |m, rng| {
        Ok(sample_images(&model, &schedule, m, 0, rng)?.images)
    })?];
    let mut labels = vec![format!("DDPM, {t_total} calls")];
    for steps in DDIM_STEPS {
        rows_img.push(in_chunks(cols, seed, |m, rng| {
            Ok(sample_ddim(&model, &schedule, m, steps, rng)?.images)
        })?);
        labels.push(format!("DDIM, {steps} calls"));
    }
    let grid = ImageGrid::new(&Tensor::cat(&rows_img, 0)?.clamp(-1f32, 1f32)?, cols)?;
    save(
        "ddpm_vs_ddim.png",
        labeled_png(
            &grid,
            &[
                "The same starting noise in each column, four samplers".to_string(),
                who.clone(),
            ],
            &labels,
        )?,
    )?;

    // measurements of samples
    let mut samples = vec![("test images".to_string(), 0, ImageStats::of(&test_images)?)];
    let s = in_chunks(n, config.seed + SEED_SAMPLES, |m, rng| {
        Ok(sample_images(&model, &schedule, m, 0, rng)?.images)
    })?;
    samples.push((
        "DDPM from N(0, I)".to_string(),
        t_total,
        ImageStats::of(&s)?,
    ));
    let mut start_rng = Rng::new(config.seed + SEED_TRUE_START);
    let noise = start_rng.randn_like(&test_images)?;
    let last = Tensor::full((t_total - 1) as u32, n, device)?;
    let true_start = q_with_noise(&schedule, &test_images, &last, &noise)?;
    let s = ddpm_from(&model, &schedule, &true_start, &mut start_rng)?;
    samples.push((
        format!(
            "DDPM from x_{} ~ q(x_{} | x_0) of test images",
            t_total - 1,
            t_total - 1
        ),
        t_total,
        ImageStats::of(&s)?,
    ));
    for steps in [50, 10] {
        let s = in_chunks(n, config.seed + SEED_SAMPLES, |m, rng| {
            Ok(sample_ddim(&model, &schedule, m, steps, rng)?.images)
        })?;
        samples.push((format!("DDIM, {steps} steps"), steps, ImageStats::of(&s)?));
    }

    let report = FiguresReport {
        files: vec![],
        model: source,
        losses,
        steps_per_epoch,
        loss_by_t,
        samples,
    };
    save("README.md", readme(&report, config, floor_avg).into_bytes())?;
    Ok(FiguresReport { files, ..report })
}

/// The mean of the losses of steps `lo..=hi` (1-based), if there are any.
fn mean_between(losses: &[(usize, f64)], lo: usize, hi: usize) -> Option<f64> {
    let v: Vec<f64> = losses
        .iter()
        .filter(|(s, _)| (lo..=hi).contains(s))
        .map(|(_, l)| *l)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn readme(r: &FiguresReport, config: &FiguresConfig, floor_avg: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Figures of the walkthrough\n");
    let _ = writeln!(
        s,
        "Written by `diffusion figures` (see `diffusion/cli/src/figures.rs`); do not edit by hand. \
         Regenerate from the repository root with\n\n```sh\ncargo run --release -p diffusion-cli -- figures --out walkthroughs/figures --checkpoint docs/model.safetensors\n```\n"
    );
    let _ = writeln!(
        s,
        "This run: {}, seed {}, {} images measured.\n",
        r.model.describe(),
        config.seed,
        config.samples
    );
    let _ = writeln!(s, "| file | caption |\n| --- | --- |");
    for (file, caption) in [
        ("schedules.svg", "`sqrt(a_bar_t)` (image) and `sqrt(1 - a_bar_t)` (noise) for the course's linear schedule and the cosine schedule, T = 150"),
        ("forward_grid.png", "training image 0 after each of the 150 forward steps (`forward_step`), row r, column c showing t = 15 r + c"),
        ("reverse_strip.png", "DDPM trajectories (`sample_images`): the starting noise, then x after t = 140, 130, ..., 0"),
        ("loss.svg", "the training loss of every step, its moving average, and the best loss of a linear predictor that sees one pixel at a time"),
        ("loss_by_t.svg", "the model's loss at t = 0, 10, ..., 140, 149 on test images (evaluation mode; the course trains on them too), against the same one-pixel linear bound"),
        ("ddpm_vs_ddim.png", "the same starting noise in each column through DDPM (150 network calls) and DDIM (50, 25, 10)"),
    ] {
        let _ = writeln!(s, "| [`{file}`]({file}) | {caption} |");
    }
    let _ = writeln!(s, "\n## Training loss\n");
    let steps = r.losses.last().map_or(0, |(s, _)| *s);
    let _ = writeln!(s, "| steps | mean loss |\n| --- | --- |");
    let mut lo = 1;
    let epochs = (1..=EPOCHS).map(|e| e * r.steps_per_epoch);
    for hi in [10, 100].into_iter().chain(epochs) {
        if lo > steps {
            break;
        }
        let hi = hi.min(steps);
        if let Some(m) = mean_between(&r.losses, lo, hi) {
            let _ = writeln!(s, "| {lo}..{hi} | {m:.4} |");
        }
        lo = hi + 1;
    }
    let _ = writeln!(
        s,
        "\nBest loss of a linear predictor that sees one pixel at a time, averaged over t: {floor_avg:.4}.\n"
    );
    let _ = writeln!(s, "## Loss by timestep (test images)\n\n| t | model | best linear, one pixel at a time |\n| --- | --- | --- |");
    for (t, l, f) in &r.loss_by_t {
        let _ = writeln!(s, "| {t} | {l:.4} | {f:.4} |");
    }
    let _ = writeln!(
        s,
        "\n## Samples\n\nPixel mean, and share of pixels below {BACKGROUND} (background), over {} images.\n\n| images | network calls per image | mean pixel | background share |\n| --- | --- | --- | --- |",
        config.samples
    );
    for (name, calls, st) in &r.samples {
        let calls = if *calls == 0 {
            "-".to_string()
        } else {
            calls.to_string()
        };
        // a `|` inside a cell would end it
        let name = name.replace('|', "\\|");
        let _ = writeln!(
            s,
            "| {name} | {calls} | {:.4} | {:.4} |",
            st.mean, st.background
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pixel_floor_limits() {
        // a constant pixel (s2 = 0) is predictable: no loss; unit-variance pixels: a_bar
        assert_eq!(per_pixel_floor(0.3, &[0.0, 0.0]), 0.0);
        assert!((per_pixel_floor(0.3, &[1.0]) - 0.3).abs() < 1e-15);
        // 0.5 * 0.5 / (0.25 + 0.5) = 1/3
        assert!((per_pixel_floor(0.5, &[0.5]) - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn pixel_variances_by_hand() {
        // two images of two pixels: (0, 1) and (2, 1): variances 1 and 0
        let x = Tensor::new(&[[[[0f32, 1.0]]], [[[2.0, 1.0]]]], &Device::Cpu).unwrap();
        assert_eq!(pixel_variances(&x).unwrap(), vec![1.0, 0.0]);
    }

    #[test]
    fn loss_timesteps_cover_both_ends() {
        let ts = loss_timesteps(150);
        assert_eq!(ts.len(), 16);
        assert_eq!((ts[0], ts[1], ts[14], ts[15]), (0, 10, 140, 149));
    }

    #[test]
    fn losses_csv_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("losses.csv");
        std::fs::write(&p, "step,loss\n1,0.9\n2,0.5\n").unwrap();
        assert_eq!(read_losses(&p).unwrap(), vec![(1, 0.9), (2, 0.5)]);
        std::fs::write(&p, "step,loss\n1,abc\n").unwrap();
        let e = read_losses(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("step,loss"), "{e}");
        assert!(read_losses(&dir.path().join("none.csv")).is_err());
    }

    #[test]
    fn losses_beside_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("model.safetensors");
        // nothing there: losses.csv, which will fail to read
        assert_eq!(losses_beside(&ckpt), dir.path().join("losses.csv"));
        std::fs::write(dir.path().join("losses-3-epochs.csv"), "step,loss\n").unwrap();
        assert_eq!(losses_beside(&ckpt), dir.path().join("losses-3-epochs.csv"));
        std::fs::write(dir.path().join("losses-old.csv"), "step,loss\n").unwrap();
        assert_eq!(
            losses_beside(&ckpt),
            dir.path().join("losses.csv"),
            "two candidates: none"
        );
        std::fs::write(dir.path().join("losses.csv"), "step,loss\n").unwrap();
        assert_eq!(losses_beside(&ckpt), dir.path().join("losses.csv"));
    }

    #[test]
    fn chunks_cover_n_with_their_own_seeds() {
        let mut sizes = vec![];
        let x = in_chunks(19, 2, |m, rng| {
            sizes.push(m);
            rng.randn((m, 1), &Device::Cpu)
        })
        .unwrap();
        assert_eq!(sizes, vec![8, 8, 3]);
        assert_eq!(x.dims(), &[19, 1]);
        // chunk 1 is Rng::new(2001)'s first 8 draws
        let want: Vec<f32> = Rng::new(2001)
            .randn((8, 1), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got: Vec<f32> = x
            .narrow(0, 8, 8)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got, want);
        assert!(in_chunks(0, 2, |m, rng| rng.randn((m, 1), &Device::Cpu)).is_err());
    }

    #[test]
    fn readme_tables_keep_their_columns() {
        let stats = ImageStats {
            mean: -0.5,
            std: 0.5,
            spread: 0.5,
            background: 0.25,
        };
        let report = FiguresReport {
            files: vec![],
            model: ModelSource::Brief { steps: 2 },
            losses: vec![(1, 1.0), (2, 0.5)],
            steps_per_epoch: 546,
            loss_by_t: vec![(0, 0.9, 0.99)],
            samples: vec![("DDPM from x_149 ~ q(x_149 | x_0)".to_string(), 150, stats)],
        };
        let text = readme(&report, &FiguresConfig::new("out"), 0.4);
        let row = text
            .lines()
            .find(|l| l.starts_with("| DDPM from"))
            .expect("the sample row");
        // five cell borders; the `|` of the name is escaped
        assert_eq!(row.replace("\\|", "").matches('|').count(), 5, "{row}");
        assert!(row.contains("q(x_149 \\| x_0)"), "{row}");
        assert!(text.contains("| 1..2 | 0.7500 |"), "{text}");
    }

    #[test]
    fn mean_between_steps() {
        let l = vec![(1, 1.0), (2, 3.0), (3, 5.0)];
        assert_eq!(mean_between(&l, 1, 2), Some(2.0));
        assert_eq!(mean_between(&l, 4, 9), None);
    }

    #[test]
    fn model_source_captions() {
        let c = ModelSource::Checkpoint {
            path: PathBuf::from("/x/docs/model.safetensors"),
            steps: 1404,
        };
        assert_eq!(
            c.describe(),
            "model: checkpoint docs/model.safetensors (1404 training steps)"
        );
        assert!(ModelSource::Brief { steps: 20 }
            .describe()
            .contains("only 20 steps"));
    }
}
