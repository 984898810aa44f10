//! The figures of `walkthroughs/03_optimizations.md`, made by one call:
//!
//! ```text
//! diffusion figures03 --out walkthroughs/figures --checkpoint docs/unet03/model.safetensors \
//!     --basic docs/model.safetensors --ablation docs/ablation03
//! ```
//!
//! | file | what it shows | needs |
//! | --- | --- | --- |
//! | `03_sinusoidal.svg` | the 8 numbers of the sinusoidal embedding of `t / T`, `t = 0..149` | nothing |
//! | `03_samples.png` | [`COMPARED`] DDPM samples of notebook 02's checkpoint (top half) and of notebook 03's (bottom half), one seed | both checkpoints |
//! | `03_ablation_loss.svg` | each ablation run's loss, a moving mean over [`SMOOTH`] steps | the ablation's folder |
//! | `03_ablation.png` | the first 8 samples of each ablation run, a row each, in the table's order | the ablation's folder |
//! | `03_README.md` | the captions and the ablation's table | |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};

use diffusion::display::{moving_average, ImageGrid, Legend, LineChart, Series};
use diffusion::notebook03::{SinusoidalPositionEmbedBlock, T_EMBED_DIM};
use diffusion::{sample_images, Rng, Schedule};

/// Samples drawn from each checkpoint for `03_samples.png`.
pub const COMPARED: usize = 32;
/// Steps in the moving mean of the ablation's loss curves.
pub const SMOOTH: usize = 25;

/// What to draw from (the arguments of `diffusion figures03`).
#[derive(Debug, Clone, clap::Args)]
pub struct Figures03 {
    /// Output folder.
    #[arg(long, default_value = "walkthroughs/figures")]
    pub out: PathBuf,
    /// Notebook 03's trained network.
    #[arg(long, default_value = "docs/unet03/model.safetensors")]
    pub checkpoint: PathBuf,
    /// Notebook 02's trained network.
    #[arg(long, default_value = "docs/model.safetensors")]
    pub basic: PathBuf,
    /// The folder `diffusion ablation` wrote (ablation.csv, NAME.npy, NAME-losses.csv).
    #[arg(long, default_value = "docs/ablation03")]
    pub ablation: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The runs of an ablation folder, in the order of its `ablation.csv` (the real floor left out).
pub fn ablation_runs(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("ablation.csv");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: run `diffusion ablation --out {}` first",
            path.display(),
            dir.display()
        )
    })?;
    let names: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .filter(|n| !n.is_empty() && *n != "real-floor")
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("{} lists no runs", path.display());
    }
    Ok(names)
}

/// `sin` and `cos` of each of the embedding's 4 frequencies over `t = 0..T`, as chart series.
pub fn sinusoidal_chart(t_total: usize) -> Result<LineChart> {
    let block = SinusoidalPositionEmbedBlock::new(T_EMBED_DIM)?;
    let t = (Tensor::arange(0u32, t_total as u32, &Device::Cpu)?.to_dtype(DType::F32)?
        / t_total as f64)?;
    let e: Vec<Vec<f32>> = block.forward(&t)?.to_vec2()?; // [T, 8]
    let half = T_EMBED_DIM / 2;
    let mut chart = LineChart::new("The sinusoidal embedding of t / T (8 dimensions)")
        .x_label("timestep t")
        .y_label("value")
        .legend(Legend::OutsideRight);
    for (d, f) in block
        .frequencies()
        .iter()
        .enumerate()
        .flat_map(|(k, f)| [(k, *f), (k + half, *f)])
    {
        let kind = if d < half { "sin" } else { "cos" };
        chart.add(Series::new(
            format!("{kind}({f:.4} t/T)"),
            e.iter()
                .enumerate()
                .map(|(i, row)| (i as f64, row[d] as f64)),
        ));
    }
    Ok(chart)
}

/// Writes the files of the module's table into `options.out`; returns their paths.
pub fn make_figures(options: &Figures03, device: &Device) -> Result<Vec<PathBuf>> {
    let out = &options.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = vec![];

    let path = out.join("03_sinusoidal.svg");
    sinusoidal_chart(diffusion::settings::T)?.save(&path)?;
    files.push(path);

    let schedule = Schedule::course(device)?;
    let basic = diffusion::UNet::load(&options.basic, device)?;
    let optimized = diffusion::notebook03::UNet::load(&options.checkpoint, device)?;
    let two = sample_images(&basic, &schedule, COMPARED, 0, &mut Rng::new(options.seed))?;
    let three = sample_images(
        &optimized,
        &schedule,
        COMPARED,
        0,
        &mut Rng::new(options.seed),
    )?;
    let both = Tensor::cat(&[two.images, three.images], 0)?.clamp(-1f32, 1f32)?;
    let path = out.join("03_samples.png");
    ImageGrid::new(&both, 8)?.scale(3).save(&path)?;
    files.push(path);

    let runs = ablation_runs(&options.ablation)?;
    let mut chart = LineChart::new(format!(
        "Training loss of each ablation run (mean of {SMOOTH} steps)"
    ))
    .x_label("step")
    .y_label("loss")
    .log_y(true)
    .legend(Legend::UpperRight);
    let mut rows = vec![];
    for name in &runs {
        let losses = options.ablation.join(format!("{name}-losses.csv"));
        if losses.is_file() {
            let points: Vec<(f64, f64)> = crate::figures::read_losses(&losses)?
                .into_iter()
                .map(|(step, loss)| (step as f64, loss))
                .collect();
            chart.add(Series::new(name.clone(), moving_average(&points, SMOOTH)?));
        }
        let samples = crate::npy::load_npy(&options.ablation.join(format!("{name}.npy")))?;
        rows.push(samples.i(0..8)?);
    }
    let path = out.join("03_ablation_loss.svg");
    chart.save(&path)?;
    files.push(path);
    let path = out.join("03_ablation.png");
    ImageGrid::new(&Tensor::cat(&rows, 0)?, 8)?
        .scale(3)
        .save(&path)?;
    files.push(path);

    let path = out.join("03_README.md");
    diffusion::files::write_atomic(&path, readme(options, &runs)?.as_bytes())?;
    files.push(path);
    Ok(files)
}

fn readme(o: &Figures03, runs: &[String]) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Figures of walkthroughs/03_optimizations.md\n\nMade by `diffusion figures03 --checkpoint {} --basic {} --ablation {} --seed {}`.\n",
        o.checkpoint.display(),
        o.basic.display(),
        o.ablation.display(),
        o.seed
    );
    let _ = writeln!(
        s,
        "- `03_sinusoidal.svg`: the 8 numbers of `SinusoidalPositionEmbedBlock(8)` applied to `t / 150`, for t = 0..149: four sines, then four cosines, of the frequencies 1, 0.0464, 0.00215, 0.0001.\n\
         - `03_samples.png`: {COMPARED} DDPM samples (150 steps, seed {}) of `{}` (notebook 02's network, top {} rows) and of `{}` (notebook 03's, bottom {} rows).\n\
         - `03_ablation_loss.svg`: the loss of each run of `{}`, a moving mean over {SMOOTH} steps, log scale.\n\
         - `03_ablation.png`: the first 8 of each run's samples, one row per run, top to bottom: {}.\n",
        o.seed,
        o.basic.display(),
        COMPARED / 8,
        o.checkpoint.display(),
        COMPARED / 8,
        o.ablation.display(),
        runs.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
    );
    let table = o.ablation.join("ablation.md");
    let table = std::fs::read_to_string(&table)
        .with_context(|| format!("cannot read {}", table.display()))?;
    let _ = writeln!(s, "## The ablation ({})\n\n{table}", o.ablation.display());
    Ok(s)
}
