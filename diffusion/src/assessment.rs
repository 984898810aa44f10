//! # The course's assessment
//!
//! Notebook 04's class-conditional U-Net trained on MNIST (28 x 28, pixels in `[0, 1]`), then
//! graded: [`run`] draws [`PER_DIGIT`] images of every digit with classifier-free guidance
//! ([`sample_w`], weight `w`), has the digit classifier ([`DigitClassifier`]) read them, and
//! passes when it recognises at least [`PASS_ACCURACY`] of them:
//!
//! ```text
//! accuracy(d) = #{ i : classifier(x_i) = d } / 5      over the 5 images x_i asked for digit d
//! total       = sum_d #right(d) / 50;   passed = total >= 0.95
//! ```
//!
//! The network: [`unet_config`] (T = 150, 1 channel, 28 x 28, 10 classes: 2,547,457
//! parameters); its training: [`train_config`] (5 epochs, batch 128, Adam 0.001, no flips,
//! drop probability 0.1 as [`notebook04::DROP_PROB`]); sampling: the linear schedule of T = 150.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::eval::digits::DigitClassifier;
use crate::network::Network;
use crate::notebook04::{self, sample_w, UNet, UNetConfig};
use crate::{Rng, TrainConfig};

/// Images generated per digit.
pub const PER_DIGIT: usize = 5;
/// The share of recognised digits needed to pass.
pub const PASS_ACCURACY: f64 = 0.95;
/// The course's guidance weight for the assessment.
pub const W: f64 = 2.0;
/// The course's epochs for the assessment.
pub const EPOCHS: usize = 5;
/// Seed of [`run`].
pub const DEFAULT_SEED: u64 = 0;

/// The assessment's network: `T = 150`, 1 channel, 28 x 28, 10 classes.
pub fn unet_config() -> UNetConfig {
    UNetConfig {
        t: crate::settings::T,
        img_ch: 1,
        img_size: crate::data::mnist::IMG_SIZE,
        n_classes: crate::data::mnist::N_CLASSES,
    }
}

/// The assessment's training: 5 epochs, batch 128, Adam 0.001, linear schedule, no flips
/// (a flipped digit is another shape).
pub fn train_config() -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        hflip: false,
        ..TrainConfig::course()
    }
}

/// Where the reference solution is: `<workspace root>/docs/assessment/model.safetensors`.
pub fn reference_path() -> PathBuf {
    crate::data::workspace_root()
        .join("docs")
        .join("assessment")
        .join("model.safetensors")
}

/// Notebook 04's network at 28 x 28 with the weights of the checkpoint at `path`.
pub fn load_model(path: &Path, device: &Device) -> Result<UNet> {
    let (model, _) = crate::checkpoint::load_network::<UNet>(path, unet_config(), device)
        .with_context(|| {
            format!(
                "{} is not notebook 04's network at 28 x 28 with 10 classes (train one with \
                 `diffusion assessment train`)",
                path.display()
            )
        })?;
    Ok(model)
}

/// Checks that `model` is the assessment's network: 1 x 28 x 28 images, 10 classes.
pub fn check_model(model: &UNet) -> Result<()> {
    let want = unet_config();
    let shape = model.image_shape();
    if shape != [want.img_ch, want.img_size, want.img_size] {
        bail!(
            "the assessment grades MNIST digits, [1, 28, 28]: this network makes {shape:?} images; \
             build it with `assessment::unet_config()`"
        );
    }
    if model.config.n_classes != want.n_classes {
        bail!(
            "the assessment asks for the 10 digits: this network has {} classes; build it with \
             `assessment::unet_config()`",
            model.config.n_classes
        );
    }
    Ok(())
}

/// How one digit fared.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitResult {
    /// The digit asked for.
    pub digit: u8,
    /// What the classifier read in each generated image.
    pub predictions: Vec<u8>,
    /// `#{p == digit} / predictions.len()`.
    pub accuracy: f64,
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct AssessmentReport {
    /// The guidance weight.
    pub w: f64,
    pub seed: u64,
    /// Digit 0 to 9.
    pub digits: Vec<DigitResult>,
    /// The share of all generated images read as the digit asked for.
    pub total: f64,
    /// `total >= 0.95`.
    pub passed: bool,
    /// The generated images, `[50, 1, 28, 28]` in `[0, 1]`, image `5 d + k` asked for digit `d`.
    pub images: Tensor,
}

impl std::fmt::Display for AssessmentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.digits {
            let p: Vec<String> = d.predictions.iter().map(|p| p.to_string()).collect();
            writeln!(
                f,
                "digit {}: predicted [{}], accuracy {:.0}%",
                d.digit,
                p.join(", "),
                100.0 * d.accuracy
            )?;
        }
        write!(
            f,
            "final accuracy {:.0}% at w = {} (seed {}): {}",
            100.0 * self.total,
            self.w,
            self.seed,
            if self.passed {
                "passed (at least 95%)"
            } else {
                "not passed (95% needed)"
            }
        )
    }
}

/// [`run_with`] at [`DEFAULT_SEED`], printing the report.
pub fn run(model: &UNet, w: f64) -> Result<AssessmentReport> {
    let classifier = DigitClassifier::committed(model.body.dense_emb[0].weight.device())?;
    let report = run_with(model, w, DEFAULT_SEED, &classifier)?;
    println!("{report}");
    Ok(report)
}

/// Generates [`PER_DIGIT`] images of every digit at guidance weight `w` (noise drawn from
/// `seed`), clamps them to `[0, 1]` and has `classifier` read them.
pub fn run_with(
    model: &UNet,
    w: f64,
    seed: u64,
    classifier: &DigitClassifier,
) -> Result<AssessmentReport> {
    check_model(model)?;
    if !w.is_finite() {
        bail!("the guidance weight must be a number, got {w}");
    }
    let device = model.body.dense_emb[0].weight.device();
    let schedule = crate::schedule::ScheduleKind::Linear.build(model.config.t, device)?;
    let classes: Vec<usize> = (0..notebook04::N_CLASSES)
        .flat_map(|d| std::iter::repeat_n(d, PER_DIGIT))
        .collect();
    let mut rng = Rng::new(seed);
    let guided = sample_w(model, &schedule, &classes, &[w], 0, &mut rng)?;
    let images = guided
        .samples
        .images
        .to_device(&Device::Cpu)?
        .clamp(0f32, 1f32)?; // [50, 1, 28, 28]
    let predicted = classifier.predict(&images)?;
    let digits: Vec<DigitResult> = (0..notebook04::N_CLASSES)
        .map(|d| {
            let predictions = predicted[d * PER_DIGIT..(d + 1) * PER_DIGIT].to_vec();
            let right = predictions.iter().filter(|&&p| p as usize == d).count();
            DigitResult {
                digit: d as u8,
                accuracy: right as f64 / PER_DIGIT as f64,
                predictions,
            }
        })
        .collect();
    let right: usize = predicted
        .iter()
        .zip(&classes)
        .filter(|(&p, &c)| p as usize == c)
        .count();
    let total = right as f64 / classes.len() as f64;
    Ok(AssessmentReport {
        w,
        seed,
        digits,
        total,
        passed: total >= PASS_ACCURACY,
        images,
    })
}
