//! What each of notebook 03's changes is worth, and two steps past the course, measured alike.
//!
//! Every run trains on the course's data (train and test splits), batch 128, Adam 1e-3, the same
//! seed and the same number of steps, then draws the same number of DDPM samples (150 steps,
//! one sampling seed) and scores them against the same real test images with the quality
//! meter's classifier ([`diffusion::eval`]):
//!
//! | run | network | schedule | weights sampled |
//! | --- | --- | --- | --- |
//! | `course` | notebook 03's | linear | the last |
//! | `course-ema` | the same run | linear | their moving average ([`diffusion::ema`]) |
//! | `no-<change>` | without one change ([`Change`]) | linear | the last |
//! | `cosine` | notebook 03's | cosine | the last |
//!
//! `diffusion ablation --steps 300 --samples 256` writes `ablation.csv`, `ablation.md`, and per
//! run its samples (`NAME.npy`, float32 `[N, 1, 16, 16]`, for `diffusion score`), a grid of the
//! first 64 (`NAME.png`) and the losses (`NAME-losses.csv`) to `--out`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use diffusion::data::{self, Split, TrainingImages};
use diffusion::display::ImageGrid;
use diffusion::eval::{self, Classifier, Reference, Scores};
use diffusion::notebook03::{Change, UNet, UNetConfig};
use diffusion::schedule::ScheduleKind;
use diffusion::{sample_images, Rng, Schedule, TrainConfig, Trainer};

/// The EMA decay of the `course-ema` run.
pub const EMA_DECAY: f64 = 0.999;

/// What to run (the arguments of `diffusion ablation`).
#[derive(Debug, Clone, clap::Args)]
pub struct AblationOptions {
    /// Training steps of every run.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Samples scored per run (more than 128).
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    /// Seed of the weights, batches, timesteps and noise of every run, and of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The classifier whose features score the samples.
    #[arg(long, default_value = crate::score::DEFAULT_CLASSIFIER)]
    pub classifier: PathBuf,
    /// Output folder: ablation.csv, ablation.md, samples, a grid and losses per run.
    #[arg(long, default_value = "runs/ablation")]
    pub out: PathBuf,
    /// Only these runs (course, no-group-norm-gelu, no-rearrange-pool, no-sinusoidal-time,
    /// no-residual, cosine); repeat the flag for several.
    #[arg(long)]
    pub only: Vec<String>,
}

/// One run of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub what: String,
    pub parameters: usize,
    /// Mean loss of the last 50 steps (of all, if fewer).
    pub final_loss: f64,
    pub train_secs: f64,
    pub scores: Scores,
}

/// The table and the real floor it is read against.
#[derive(Debug, Clone)]
pub struct Ablation {
    pub rows: Vec<Row>,
    pub floor: Scores,
    pub reference: usize,
    pub options: AblationOptions,
}

/// A training run of the table: its network, schedule and whether it keeps an EMA.
struct Run {
    name: String,
    what: String,
    net: UNetConfig,
    schedule: ScheduleKind,
    ema: bool,
}

fn runs() -> Vec<Run> {
    let mut runs = vec![Run {
        name: "course".into(),
        what: "notebook 03's network, linear schedule".into(),
        net: UNetConfig::default(),
        schedule: ScheduleKind::Linear,
        ema: true,
    }];
    for change in Change::ALL {
        runs.push(Run {
            name: format!("no-{}", slug(change)),
            what: format!("without {}: {}", change.name(), change.replaced_by()),
            net: UNetConfig::without(change),
            schedule: ScheduleKind::Linear,
            ema: false,
        });
    }
    runs.push(Run {
        name: "cosine".into(),
        what: "notebook 03's network, cosine schedule".into(),
        net: UNetConfig::default(),
        schedule: ScheduleKind::Cosine,
        ema: false,
    });
    runs
}

/// A short name for a change: `group-norm-gelu`, `rearrange-pool`, ...
pub fn slug(change: Change) -> &'static str {
    match change {
        Change::GroupNormGelu => "group-norm-gelu",
        Change::RearrangePool => "rearrange-pool",
        Change::SinusoidalTime => "sinusoidal-time",
        Change::Residual => "residual",
    }
}

/// Runs the table (each run prints a line when done) and writes its files to `options.out`.
pub fn run(options: &AblationOptions, device: &Device) -> Result<Ablation> {
    let all = runs();
    let unknown: Vec<&String> = options
        .only
        .iter()
        .filter(|n| !all.iter().any(|r| &r.name == *n && !n.is_empty()))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "no run named {unknown:?}: the runs are {}",
            names.join(", ")
        );
    }
    let dir = data::data_dir(options.data.as_deref());
    data::ensure(&dir)?;
    let images = TrainingImages::All.load(&dir)?.images;
    let test = data::load(&dir, Split::Test)?;
    let classifier = Classifier::load(&options.classifier, device)?;
    let (reference, floor) = eval::real_split(&test, options.samples, None, options.seed)?;
    let reference = Reference::new(&classifier.classify(&reference)?)?;
    let floor = reference.score(&classifier.classify(&floor)?)?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;

    let mut rows = vec![];
    for run in all
        .iter()
        .filter(|r| options.only.is_empty() || options.only.contains(&r.name))
    {
        let config = TrainConfig {
            max_steps: Some(options.steps),
            epochs: options.steps.max(1), // max_steps ends the run first
            seed: options.seed,
            schedule: run.schedule,
            ema: run.ema.then_some(EMA_DECAY),
            ..TrainConfig::notebook03()
        };
        let mut trainer = Trainer::<UNet>::for_network(run.net, config, device)?;
        let start = Instant::now();
        trainer.train(&images, 0, |_, _| Ok(()))?;
        let train_secs = start.elapsed().as_secs_f64();
        crate::write_losses(
            &options.out.join(format!("{}-losses.csv", run.name)),
            &trainer.losses,
        )?;
        let last = &trainer.losses[trainer.losses.len().saturating_sub(50)..];
        let final_loss = last.iter().map(|l| *l as f64).sum::<f64>() / last.len() as f64;
        let parameters = trainer.model.summary().parameters();
        let mut sampled = vec![(run.name.clone(), run.what.clone(), trainer.model.clone())];
        if let Some(ema) = trainer.ema_model()? {
            let what = format!("{}, EMA of the weights (decay {EMA_DECAY})", run.what);
            sampled.push((format!("{}-ema", run.name), what, ema));
        }
        for (name, what, model) in sampled {
            let scores = sample_and_score(
                &model,
                &trainer.schedule,
                options,
                &classifier,
                &reference,
                &name,
            )?;
            println!(
                "{name:<24} loss {final_loss:.4}  FD {:8.2}  KID {:8.3}  ({:.0} s training)",
                scores.fd, scores.kid, train_secs
            );
            rows.push(Row {
                name,
                what,
                parameters,
                final_loss,
                train_secs,
                scores,
            });
        }
    }
    let ablation = Ablation {
        rows,
        floor,
        reference: reference.len(),
        options: options.clone(),
    };
    diffusion::files::write_atomic(&options.out.join("ablation.csv"), ablation.csv().as_bytes())?;
    diffusion::files::write_atomic(
        &options.out.join("ablation.md"),
        ablation.markdown().as_bytes(),
    )?;
    Ok(ablation)
}

/// `options.samples` DDPM samples of `model` (seeded), saved as a grid `NAME.png`, scored.
fn sample_and_score(
    model: &UNet,
    schedule: &Schedule,
    options: &AblationOptions,
    classifier: &Classifier,
    reference: &Reference,
    name: &str,
) -> Result<Scores> {
    let mut rng = Rng::new(options.seed);
    let mut batches: Vec<Tensor> = vec![];
    let mut left = options.samples;
    while left > 0 {
        let n = left.min(256);
        batches.push(sample_images(model, schedule, n, 0, &mut rng)?.images);
        left -= n;
    }
    let samples = Tensor::cat(&batches, 0)?.clamp(-1f32, 1f32)?;
    let shown = samples.narrow(0, 0, options.samples.min(64))?;
    ImageGrid::new(&shown, 8)?.save(options.out.join(format!("{name}.png")))?;
    crate::npy::save_npy(&samples, &options.out.join(format!("{name}.npy")))?;
    reference.score(&classifier.classify(&samples)?)
}

impl Ablation {
    /// `name,what,parameters,final_loss,train_secs,n,fd,kid,evenness`, the floor last.
    pub fn csv(&self) -> String {
        let mut s = String::from("name,what,parameters,final_loss,train_secs,n,fd,kid,evenness\n");
        let mut line =
            |name: &str, what: &str, params: String, loss: String, secs: String, sc: &Scores| {
                let _ = writeln!(
                    s,
                    "{name},\"{what}\",{params},{loss},{secs},{},{:.3},{:.4},{:.4}",
                    sc.n,
                    sc.fd,
                    sc.kid,
                    sc.histogram.evenness()
                );
            };
        for r in &self.rows {
            line(
                &r.name,
                &r.what,
                r.parameters.to_string(),
                format!("{:.5}", r.final_loss),
                format!("{:.0}", r.train_secs),
                &r.scores,
            );
        }
        line(
            "real-floor",
            "real test images not in the reference",
            String::new(),
            String::new(),
            String::new(),
            &self.floor,
        );
        s
    }

    /// The table as Markdown, with the settings it was measured at.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "Each run: {} steps of 128 (seed {}), then {} DDPM samples (150 steps, seed {}) \
             scored against {} real test images.\n\n\
             | run | what | parameters | loss (last 50 steps) | FD | KID | class evenness |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            o.steps, o.seed, o.samples, o.seed, self.reference
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {:.4} | {:.1} | {:.2} | {:.3} |",
                r.name,
                r.what,
                diffusion::summary::thousands(r.parameters),
                r.final_loss,
                r.scores.fd,
                r.scores.kid,
                r.scores.histogram.evenness()
            );
        }
        let f = &self.floor;
        let _ = writeln!(
            s,
            "| real floor | {} real test images not in the reference | | | {:.1} | {:.2} | {:.3} |",
            f.n,
            f.fd,
            f.kid,
            f.histogram.evenness()
        );
        s
    }
}
