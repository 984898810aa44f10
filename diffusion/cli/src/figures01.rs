//! The figures and measurements of `walkthroughs/01_unet.md`, made by one call:
//!
//! ```text
//! diffusion figures01 --out walkthroughs/figures --checkpoint docs/denoiser.safetensors
//! ```
//!
//! | file | what it shows | needs a model |
//! | --- | --- | --- |
//! | `01_transposed.png` | a 3 x 3 image of ones through the five transposed convolutions of notebook 01, white where most kernel copies overlap | no |
//! | `01_from_noise.png` | rows: real pictures, `add_noise` of them, the denoiser's answers, pure noise, its answers on pure noise | yes |
//! | `01_README.md` | the captions, the checkpoint, and the measured statistics and scores | yes |
//!
//! The measurements ([`measure`]) use [`MEASURED`] images: the first of the course's 70,000, their
//! noisy versions, and as many pure-noise images, all drawn from `Rng::new(seed)`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};

use diffusion::conv_arithmetic::{as_picture, conv_transpose2d};
use diffusion::data::{self, Split, TrainingImages};
use diffusion::display::ImageGrid;
use diffusion::eval::{score_samples, Classifier, ImageStats, QualityReport};
use diffusion::notebook01::{add_noise, UNet};
use diffusion::Rng;

/// The transposed convolutions of the notebook: `(kernel, stride, padding, output_padding)`.
pub const DEMOS: [(usize, usize, usize, usize); 5] = [
    (1, 1, 0, 0),
    (3, 1, 0, 0),
    (2, 2, 0, 0),
    (3, 2, 0, 0),
    (3, 2, 1, 1),
];

/// Images measured per row of [`Measurements`].
pub const MEASURED: usize = 500;

/// What the walkthrough quotes.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// Real pictures, their noisy versions, the answers on them, pure noise, the answers on it.
    pub stats: Vec<(&'static str, ImageStats)>,
    /// The quality meter on the answers on pure noise, and on the cleaned noisy pictures.
    pub from_noise: QualityReport,
    pub cleaned: QualityReport,
    /// The images measured, first rows drawn in `01_from_noise.png`: `[5 * MEASURED, 1, 16, 16]`.
    pub images: Vec<Tensor>,
}

/// The outputs of a 3 x 3 image of ones through [`DEMOS`], each `[1, 1, k, k]`.
pub fn demos(device: &Device) -> Result<Vec<Tensor>> {
    let x = Tensor::ones((1, 1, 3, 3), DType::F32, device)?;
    DEMOS
        .iter()
        .map(|&(k, stride, padding, output_padding)| {
            let kernel = Tensor::ones((1, 1, k, k), DType::F32, device)?;
            conv_transpose2d(&x, &kernel, stride, padding, output_padding)
        })
        .collect()
}

/// Measures `model` as notebook 01 does, on the course's images in `data_dir`.
pub fn measure(model: &UNet, data_dir: &Path, seed: u64, device: &Device) -> Result<Measurements> {
    let train = TrainingImages::All.load(data_dir)?;
    let mut rng = Rng::new(seed);
    let real = train.images.i(0..MEASURED)?.to_device(device)?;
    let noisy = add_noise(&real, &mut rng)?;
    let cleaned = model.forward(&noisy)?;
    let pure = rng.randn((MEASURED, 1, 16, 16), device)?;
    let from_pure = model.forward(&pure)?;
    let names = [
        "real pictures",
        "training inputs: 0.5 x + 0.5 noise",
        "the network's answers on them",
        "pure noise",
        "the network's answers on pure noise",
    ];
    let images = vec![real, noisy, cleaned, pure, from_pure];
    let stats = names
        .iter()
        .zip(&images)
        .map(|(name, x)| Ok((*name, ImageStats::of(x)?)))
        .collect::<Result<Vec<_>>>()?;
    let classifier = Classifier::course(device)?;
    let test = data::load(data_dir, Split::Test)?;
    let score = |x: &Tensor| score_samples(&classifier, &x.clamp(-1f32, 1f32)?, &test, None, seed);
    Ok(Measurements {
        from_noise: score(&images[4])?,
        cleaned: score(&images[2])?,
        stats,
        images,
    })
}

/// Writes the files of the module's table into `out`; returns their paths.
pub fn make_figures(
    out: &Path,
    checkpoint: &Path,
    data_dir: &Path,
    seed: u64,
    device: &Device,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = vec![];

    // every demo on a 7 x 7 black canvas (no coverage), side by side
    let side = 7;
    let pictures = demos(device)?
        .iter()
        .map(|y| {
            let pad = side - y.dim(2)?;
            as_picture(&y.pad_with_zeros(2, 0, pad)?.pad_with_zeros(3, 0, pad)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let path = out.join("01_transposed.png");
    ImageGrid::new(&Tensor::cat(&pictures, 0)?, DEMOS.len())?
        .scale(16)
        .gap(8)
        .save(&path)?;
    files.push(path);

    let model = UNet::load(checkpoint, device)?;
    let m = measure(&model, data_dir, seed, device)?;
    let rows: Vec<Tensor> = m
        .images
        .iter()
        .map(|x| x.i(0..10))
        .collect::<candle_core::Result<_>>()?;
    let path = out.join("01_from_noise.png");
    ImageGrid::new(&Tensor::cat(&rows, 0)?, 10)?
        .scale(4)
        .save(&path)?;
    files.push(path);

    let path = out.join("01_README.md");
    diffusion::files::write_atomic(&path, readme(&m, checkpoint, seed).as_bytes())?;
    files.push(path);
    Ok(files)
}

fn readme(m: &Measurements, checkpoint: &Path, seed: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Figures of walkthroughs/01_unet.md\n\nMade by `diffusion figures01 --checkpoint {} --seed {seed}`.\n",
        checkpoint.display()
    );
    let _ = writeln!(
        s,
        "- `01_transposed.png`: a 3 x 3 image of ones through transposed convolutions with kernels of ones; left to right {}. White is the most overlapping copies, black none (each on a 7 x 7 canvas).",
        DEMOS
            .iter()
            .map(|(k, st, p, op)| format!("kernel {k} stride {st} padding {p} output padding {op}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        s,
        "- `01_from_noise.png`: rows top to bottom: real pictures, 0.5 x + 0.5 noise, the denoiser's answers on them, pure noise, its answers on pure noise.\n"
    );
    let _ = writeln!(s, "## Statistics over {MEASURED} images each\n");
    let _ = writeln!(
        s,
        "| images | mean | std | spread between images | background (below {}) |\n| --- | --- | --- | --- | --- |",
        diffusion::eval::pixels::BACKGROUND
    );
    for (name, st) in &m.stats {
        let _ = writeln!(
            s,
            "| {name} | {:.3} | {:.3} | {:.3} | {:.1}% |",
            st.mean,
            st.std,
            st.spread,
            100.0 * st.background
        );
    }
    let _ = writeln!(
        s,
        "\n## Quality meter\n\n- answers on pure noise: {}\n- cleaned noisy pictures: {}",
        m.from_noise.summary(),
        m.cleaned.summary()
    );
    s
}
