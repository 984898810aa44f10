//! Notebook 04's figures and its measured trade-off, by one command:
//!
//! ```text
//! diffusion guidance --checkpoint docs/unet04/model.safetensors --out docs/guidance04
//! ```
//!
//! writes to `--out`: `grid.png` (the course's 7 x 10 grid: a row per weight of
//! [`W_TESTS`](diffusion::notebook04::W_TESTS), a column per class), `grid.gif` (its reverse
//! process), `tradeoff.md` (the table of [`tradeoff`](diffusion::notebook04::tradeoff)),
//! `tradeoff.csv` (the same, for [`TradeoffSummary::from_csv`](diffusion::notebook04::tradeoff::TradeoffSummary::from_csv)), `tradeoff-per-class.csv`,
//! `tradeoff.svg` (the chart against `w`), and the samples measured at each weight,
//! `samples-w{w}.npy` (float32 `[per_class * 10, 1, 16, 16]`, image `i` asked for class `i mod 10`).

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;

use diffusion::data::{self, Split};
use diffusion::display::Animation;
use diffusion::eval::Classifier;
use diffusion::files::write_atomic;
use diffusion::notebook04::tradeoff::{measure, Tradeoff, TradeoffSettings};
use diffusion::notebook04::{sample_w, UNet, N_CLASSES, STORE_FREQ, W_TESTS};
use diffusion::{Rng, Schedule};

/// The arguments of `diffusion guidance`.
#[derive(Debug, Clone, clap::Args)]
pub struct GuidanceOptions {
    /// Notebook 04's trained network.
    #[arg(long, default_value = "docs/unet04/model.safetensors")]
    pub checkpoint: PathBuf,
    /// The guidance weights measured (default the course's seven), separated by commas.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub ws: Vec<f64>,
    /// Samples of each class at each weight (more than 128 also measures a Fréchet distance
    /// per class).
    #[arg(long, default_value_t = 30)]
    pub per_class: usize,
    /// Images sampled at a time.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Seed of the grid and of the measured samples (the same for every weight).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The classifier whose predictions and features measure the samples.
    #[arg(long, default_value = crate::score::DEFAULT_CLASSIFIER)]
    pub classifier: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "runs/guidance")]
    pub out: PathBuf,
}

/// Draws the grid and its animation, measures the trade-off, writes everything to `out`.
pub fn run(options: &GuidanceOptions, device: &Device) -> Result<Tradeoff> {
    let model = UNet::load(&options.checkpoint, device)?;
    let schedule = Schedule::course(device)?;
    let out = &options.out;
    std::fs::create_dir_all(out)?;

    let classes: Vec<usize> = (0..N_CLASSES).collect();
    let mut rng = Rng::new(options.seed);
    let grid = sample_w(&model, &schedule, &classes, &W_TESTS, STORE_FREQ, &mut rng)?;
    grid.grid()?.save(out.join("grid.png"))?;
    Animation::new(&grid.frame_grids(2)?)?.save(out.join("grid.gif"))?;

    let dir = data::data_dir(options.data.as_deref());
    data::ensure(&dir)?;
    let test = data::load(&dir, Split::Test)?;
    let classifier = Classifier::load(&options.classifier, device)?;
    let settings = TradeoffSettings {
        ws: match options.ws.is_empty() {
            true => W_TESTS.to_vec(),
            false => options.ws.clone(),
        },
        per_class: options.per_class,
        batch: options.batch,
        seed: options.seed,
    };
    let table = measure(&model, &schedule, &classifier, &test, &settings)?;
    write_atomic(&out.join("tradeoff.md"), table.markdown().as_bytes())?;
    write_atomic(
        &out.join("tradeoff-per-class.csv"),
        table.per_class_csv().as_bytes(),
    )?;
    for row in &table.rows {
        let npy = out.join(format!("samples-w{}.npy", row.w));
        crate::npy::save_npy(&row.samples, &npy)?;
    }
    let summary = table.summary();
    write_atomic(&out.join("tradeoff.csv"), summary.to_csv().as_bytes())?;
    summary.chart().save(out.join("tradeoff.svg"))?;
    Ok(table)
}
