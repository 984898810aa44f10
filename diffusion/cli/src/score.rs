//! `diffusion classifier train` and `diffusion score`: the sample-quality measures of
//! [`diffusion::eval`] on the command line, and the table of `docs/quality.md` ([`quality_table`]).
//!
//! Each function returns its report as text for the caller to print; progress goes to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use diffusion::data::{self, Split};
use diffusion::eval::{self, Classifier, ClassifierTraining, Reference, Scores};
use diffusion::train::format_duration;
use diffusion::{sample_ddim, sample_images, Rng, Schedule};

/// Where the course's classifier is kept (relative to the repository root).
pub const DEFAULT_CLASSIFIER: &str = "docs/classifier.safetensors";

/// Trains the classifier on the train split of the FashionMNIST files in `data` (default as
/// [`data::data_dir`]; fetched when missing) for `epochs` epochs, measures it on the test split,
/// saves it to `out`, and returns a report with the test accuracy, the time and the command.
pub fn classifier_train(
    data: Option<&Path>,
    epochs: usize,
    seed: u64,
    out: &Path,
) -> Result<String> {
    let device = diffusion::device()?;
    let dir = data::data_dir(data);
    data::ensure(&dir)?;
    let train = data::load(&dir, Split::Train)?;
    let test = data::load(&dir, Split::Test)?;
    let config = ClassifierTraining {
        epochs,
        seed,
        ..Default::default()
    };
    eprintln!(
        "training the classifier on {} with {} images: {epochs} epoch(s) of {} batches of {}",
        diffusion::device::device_name(&device),
        train.len(),
        train.len() / config.batch_size,
        config.batch_size
    );
    let mut recent = Vec::new();
    let run = eval::train_classifier_with(&train, &test, &config, &device, |p| {
        recent.push(p.loss);
        if p.step % 100 == 0 || p.step == p.steps {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            recent.clear();
            let per_s = p.step as f64 / p.elapsed.as_secs_f64().max(1e-9);
            let left = (p.steps - p.step) as f64 / per_s.max(1e-9);
            eprintln!(
                "epoch {} | step {}/{} | loss {mean:.4} | {per_s:.1} steps/s | ETA {}",
                p.epoch,
                p.step,
                p.steps,
                format_duration(std::time::Duration::from_secs_f64(left))
            );
        }
    })?;
    run.classifier.save(out)?;
    let right = (run.accuracy * test.len() as f64).round() as usize;
    Ok(format!(
        "classifier: test accuracy {:.4} ({right} of {} test images) after {epochs} epoch(s), {} steps, in {}\n\
         final loss (mean of the last 100 steps) {:.4}; {} parameters, {} features\n\
         saved to {}\n\
         made by: diffusion classifier train --epochs {epochs} --seed {seed} --out {}",
        run.accuracy,
        test.len(),
        run.losses.len(),
        format_duration(run.elapsed),
        tail_mean(&run.losses, 100),
        run.classifier.parameters(),
        eval::FEATURES,
        out.display(),
        out.display()
    ))
}

fn tail_mean(values: &[f32], n: usize) -> f32 {
    let tail = &values[values.len().saturating_sub(n)..];
    tail.iter().sum::<f32>() / tail.len().max(1) as f32
}

/// Scores the samples in `samples_npy` (float32 `[N, 1, 16, 16]` in `[-1, 1]`, `N > 128`) with
/// the classifier at `classifier` against the test split: FD, KID and the class histogram, and
/// the floor of two disjoint real sets at the same `N` (`real_n` reference images, by default
/// the `10,000 - N` not in the floor set; `seed` draws the split).
pub fn score(
    samples_npy: &Path,
    classifier: &Path,
    data: Option<&Path>,
    real_n: Option<usize>,
    seed: u64,
) -> Result<String> {
    let samples = crate::npy::load_npy(samples_npy)?;
    eval::check_images(&samples)
        .with_context(|| format!("the samples in {}", samples_npy.display()))?;
    let classifier_net = Classifier::load(classifier, &diffusion::device()?)?;
    let dir = data::data_dir(data);
    data::ensure(&dir)?;
    let test = data::load(&dir, Split::Test)?;
    let report = eval::score_samples(&classifier_net, &samples, &test, real_n, seed)?;
    Ok(format!(
        "samples {} ({} images), classifier {}, split seed {seed}\n{}\
         FD over the floor: {:.2}x; KID over the floor: {}",
        samples_npy.display(),
        report.samples.n,
        classifier.display(),
        report.text(),
        report.samples.fd / report.floor.fd.max(f64::MIN_POSITIVE),
        if report.floor.kid > 0.0 {
            format!("{:.2}x", report.samples.kid / report.floor.kid)
        } else {
            "(the floor's KID is not positive)".to_string()
        }
    ))
}

/// `x` blurred by the 5-tap binomial filter `[1, 4, 6, 4, 1] / 16` (a Gaussian of standard
/// deviation 1 pixel) along rows and then columns, edges repeated: `[N, C, H, W] -> [N, C, H, W]`.
pub fn blur(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    const TAPS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let mut v: Vec<f32> = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    let mut tmp = vec![0f32; h * w];
    for img in v.chunks_exact_mut(h * w) {
        for (axis_len, stride, other, other_stride) in [(w, 1, h, w), (h, w, w, 1)] {
            for o in 0..other {
                for i in 0..axis_len {
                    tmp[o * other_stride + i * stride] = TAPS
                        .iter()
                        .enumerate()
                        .map(|(k, t)| {
                            let j = (i as isize + k as isize - 2).clamp(0, axis_len as isize - 1)
                                as usize;
                            t * img[o * other_stride + j * stride]
                        })
                        .sum();
                }
            }
            img.copy_from_slice(&tmp);
        }
    }
    Ok(Tensor::from_vec(v, (n, c, h, w), x.device())?)
}

/// What [`quality_table`] measures (the arguments of `diffusion quality-table`).
#[derive(Debug, Clone, clap::Args)]
pub struct QualityOptions {
    /// The diffusion model's checkpoint (`docs/model.safetensors` for the course's).
    #[arg(long, default_value = "docs/model.safetensors")]
    pub checkpoint: PathBuf,
    /// The classifier whose features are compared.
    #[arg(long, default_value = DEFAULT_CLASSIFIER)]
    pub classifier: PathBuf,
    /// Data directory (default: $DIFFUSION_DATA, else data/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Images per set.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Images sampled at once.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// DDIM step counts to measure, comma-separated (DDPM always takes T = 150).
    #[arg(long, value_delimiter = ',', default_value = "50,30")]
    pub ddim_steps: Vec<usize>,
    /// Seed of the sampling noise, the noise baseline and the real split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for QualityOptions {
    fn default() -> Self {
        Self {
            checkpoint: PathBuf::from("docs/model.safetensors"),
            classifier: PathBuf::from(DEFAULT_CLASSIFIER),
            data: None,
            n: 1000,
            batch: 250,
            ddim_steps: vec![50, 30],
            seed: 0,
        }
    }
}

/// Draws `n` images with `draw(batch size, rng)`, `batch` at a time, clamped to `[-1, 1]`;
/// returns them with the images per second.
fn sample_in_batches(
    n: usize,
    batch: usize,
    rng: &mut Rng,
    mut draw: impl FnMut(usize, &mut Rng) -> Result<Tensor>,
) -> Result<(Tensor, f64)> {
    let start = Instant::now();
    let mut parts = Vec::new();
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        parts.push(draw(b, rng)?.clamp(-1f32, 1f32)?.to_device(&Device::Cpu)?);
        done += b;
    }
    let per_s = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok((Tensor::cat(&parts, 0)?, per_s))
}

/// The table of `docs/quality.md`: FD, KID and class evenness of `n` images from each sampler of
/// the checkpoint (DDPM with T = 150 steps, DDIM at each of `ddim_steps`), of `n` real test images
/// (the floor), of those images blurred ([`blur`]) and of `N(0, I)` noise clamped to `[-1, 1]`,
/// all against the same reference of `10,000 - n` other test images; then whether
/// real < samples < noise holds for both scores.
pub fn quality_table(opts: &QualityOptions) -> Result<String> {
    if opts.batch == 0 {
        bail!("the sampling batch must be at least 1 image");
    }
    let device = diffusion::device()?;
    let classifier = Classifier::load(&opts.classifier, &device)?;
    let (unet, _) = diffusion::checkpoint::load_unet(&opts.checkpoint, &device)?;
    let schedule = Schedule::course(&device)?;
    let dir = data::data_dir(opts.data.as_deref());
    data::ensure(&dir)?;
    let test = data::load(&dir, Split::Test)?;
    let (reference, floor) = eval::real_split(&test, opts.n, None, opts.seed)?;
    let reference = Reference::new(&classifier.classify(&reference)?)?;
    let score = |x: &Tensor| -> Result<Scores> { reference.score(&classifier.classify(x)?) };

    let mut rows: Vec<(String, Scores, Option<f64>)> = Vec::new();
    rows.push(("real test images (the floor)".into(), score(&floor)?, None));
    let mut samplers: Vec<(String, Option<usize>)> = vec![("DDPM, 150 steps".into(), None)];
    samplers.extend(
        opts.ddim_steps
            .iter()
            .map(|&s| (format!("DDIM, {s} steps"), Some(s))),
    );
    for (name, steps) in &samplers {
        eprintln!("sampling {} images: {name}", opts.n);
        let mut rng = Rng::new(opts.seed);
        let (images, per_s) = sample_in_batches(opts.n, opts.batch, &mut rng, |b, rng| {
            Ok(match steps {
                None => sample_images(&unet, &schedule, b, 0, rng)?.images,
                Some(s) => sample_ddim(&unet, &schedule, b, *s, rng)?.images,
            })
        })?;
        eprintln!("  {per_s:.1} images/s");
        rows.push((name.clone(), score(&images)?, Some(per_s)));
    }
    rows.push((
        "real test images, blurred (binomial 5x5, sd 1 px)".into(),
        score(&blur(&floor)?)?,
        None,
    ));
    let noise = Rng::new(opts.seed.wrapping_add(1))
        .randn((opts.n, 1, 16, 16), &Device::Cpu)?
        .clamp(-1f32, 1f32)?;
    rows.push((
        "N(0, I) noise, clamped to [-1, 1]".into(),
        score(&noise)?,
        None,
    ));

    let mut out = format!(
        "{} images per set against {} other real test images; classifier {}, checkpoint {}, seed {}\n\n\
         | images | FD | KID | class evenness | images/s |\n| --- | --- | --- | --- | --- |\n",
        opts.n,
        reference.len(),
        opts.classifier.display(),
        opts.checkpoint.display(),
        opts.seed
    );
    for (name, s, per_s) in &rows {
        out.push_str(&format!(
            "| {name} | {:.3} | {:.5} | {:.3} | {} |\n",
            s.fd,
            s.kid,
            s.histogram.evenness(),
            per_s.map_or("".to_string(), |v| format!("{v:.1}"))
        ));
    }
    let sampled = &rows[1..1 + samplers.len()];
    let (floor, noise) = (&rows[0].1, &rows[rows.len() - 1].1);
    let holds = |f: fn(&Scores) -> f64| {
        sampled
            .iter()
            .all(|(_, s, _)| f(floor) < f(s) && f(s) < f(noise))
    };
    out.push_str(&format!(
        "\nreal < samples < noise: FD {}, KID {}\n",
        if holds(|s| s.fd) {
            "holds"
        } else {
            "DOES NOT hold"
        },
        if holds(|s| s.kid) {
            "holds"
        } else {
            "DOES NOT hold"
        },
    ));
    for (name, s, _) in &rows {
        out.push_str(&format!("\nclasses of {name}:\n{}", s.histogram.table()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_constant_images_and_averages_an_impulse() {
        let dev = Device::Cpu;
        let flat = Tensor::full(0.3f32, (2, 1, 16, 16), &dev).unwrap();
        let b: Vec<f32> = blur(&flat)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(b.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let mut v = vec![0f32; 256];
        v[8 * 16 + 8] = 1.0;
        let b: Vec<f32> = blur(&Tensor::from_vec(v, (1, 1, 16, 16), &dev).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((b[8 * 16 + 8] - 36.0 / 256.0).abs() < 1e-7);
        assert!((b[7 * 16 + 8] - 24.0 / 256.0).abs() < 1e-7);
        assert!((b[6 * 16 + 6] - 1.0 / 256.0).abs() < 1e-7);
    }

    #[test]
    fn score_explains_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("s.npy");
        crate::npy::save_npy(
            &Tensor::full(2f32, (200, 1, 16, 16), &Device::Cpu).unwrap(),
            &npy,
        )
        .unwrap();
        let e = format!(
            "{:#}",
            score(&npy, Path::new("none.safetensors"), None, None, 0).unwrap_err()
        );
        assert!(e.contains("s.npy") && e.contains("[-1, 1]"), "{e}");
        crate::npy::save_npy(
            &Tensor::zeros((3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
            &npy,
        )
        .unwrap();
        let e = format!(
            "{:#}",
            score(&npy, Path::new("none.safetensors"), None, None, 0).unwrap_err()
        );
        assert!(e.contains("[N, 1, 16, 16]"), "{e}");
        let e = format!(
            "{:#}",
            score(
                &dir.path().join("missing.npy"),
                Path::new("x"),
                None,
                None,
                0
            )
            .unwrap_err()
        );
        assert!(e.contains("missing.npy"), "{e}");
    }
}
