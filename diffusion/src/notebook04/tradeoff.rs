//! What the guidance weight `w` buys and what it costs, measured with the quality meter
//! ([`crate::eval`]): for each `w`, `per_class` samples of each class, then
//!
//! | column | what it measures | better |
//! | --- | --- | --- |
//! | asked share | the share of samples the classifier puts in the class they were asked for | higher |
//! | FD, KID (all) | the distance of all the samples' features to real test images' | lower |
//! | class KID | the distance of each class's samples to the real images of that class, averaged | lower |
//! | class FD | the same by Fréchet distance (only with more than 128 samples a class) | lower |
//! | spread | the mean pixel distance between two samples of one class, averaged over classes | nearer the real images' |
//!
//! Every weight starts from the same noise (the same seed), so rows differ by `w` alone.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::{mean_pairwise_distance, sample_w, UNet, N_CLASSES};
use crate::data::{FashionMnist, CLASS_NAMES};
use crate::display::LineChart;
use crate::eval::{
    asked_class_share, frechet_distance, kid, real_split, Classifier, Gaussian, Reference, Scores,
    FEATURES,
};
use crate::{Rng, Schedule};

/// The measurements at one guidance weight.
#[derive(Debug, Clone)]
pub struct TradeoffRow {
    pub w: f64,
    /// Share of samples classified as the class asked for, over all classes.
    pub asked_share: f64,
    /// The same, per class.
    pub class_share: [f64; N_CLASSES],
    /// FD, KID and class histogram of all the samples against the real reference.
    pub all: Scores,
    /// KID of each class's samples to the real test images of that class.
    pub class_kid: [f64; N_CLASSES],
    /// FD of each class's samples to the real images of that class (`None` with 128 or fewer
    /// samples a class: a covariance of 128 features needs more).
    pub class_fd: Option<[f64; N_CLASSES]>,
    /// Mean pixel distance between two samples of one class, per class.
    pub spread: [f64; N_CLASSES],
    /// The samples measured, `[per_class * 10, 1, 16, 16]` in `[-1, 1]`; image `i` was asked
    /// for class `i mod 10`.
    pub samples: Tensor,
}

impl TradeoffRow {
    /// The mean of the per-class KIDs.
    pub fn class_kid_mean(&self) -> f64 {
        mean(&self.class_kid)
    }

    /// The mean of the per-class FDs, when measured.
    pub fn class_fd_mean(&self) -> Option<f64> {
        self.class_fd.as_ref().map(|f| mean(f))
    }

    /// The mean within-class spread.
    pub fn spread_mean(&self) -> f64 {
        mean(&self.spread)
    }
}

/// The table over the weights, and what real images score on the same meter.
#[derive(Debug, Clone)]
pub struct Tradeoff {
    pub rows: Vec<TradeoffRow>,
    pub per_class: usize,
    /// Real test images scored like the samples (as many, not in the reference).
    pub floor: Scores,
    /// The classifier's share of right answers on the real test split (what perfect samples
    /// would score in the asked-share column).
    pub floor_share: f64,
    /// The within-class spread of `per_class` real test images of each class.
    pub real_spread: [f64; N_CLASSES],
    /// Real reference images of the all-samples scores.
    pub reference: usize,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// How many samples to draw, at which weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeoffSettings {
    /// The guidance weights, one row each.
    pub ws: Vec<f64>,
    /// Samples of each class at each weight.
    pub per_class: usize,
    /// Images sampled at a time (the network sees twice as many).
    pub batch: usize,
    /// Seed of the samples (the same for every weight) and of the real sets.
    pub seed: u64,
}

impl Default for TradeoffSettings {
    /// The course's seven weights, 30 samples a class, 250 at a time, seed 0.
    fn default() -> Self {
        Self {
            ws: super::W_TESTS.to_vec(),
            per_class: 30,
            batch: 250,
            seed: 0,
        }
    }
}

/// Draws `per_class` samples of each class at each weight (each weight from the same seed)
/// and measures them against the real `test` images with `classifier`.
pub fn measure(
    model: &UNet,
    schedule: &Schedule,
    classifier: &Classifier,
    test: &FashionMnist,
    settings: &TradeoffSettings,
) -> Result<Tradeoff> {
    let TradeoffSettings {
        ref ws,
        per_class,
        batch,
        seed,
    } = *settings;
    let n = per_class * N_CLASSES;
    if n <= FEATURES {
        bail!(
            "{per_class} samples a class make {n} in all: the Fréchet distance of {FEATURES} features needs more than {FEATURES}, so at least {} a class",
            FEATURES / N_CLASSES + 1
        );
    }
    if ws.is_empty() || batch == 0 {
        bail!("give at least one weight and a batch of at least one image");
    }
    // The real side, measured once: the all-classes reference and floor, and each class's images.
    let (reference, floor_images) = real_split(test, n, None, seed)?;
    let reference = Reference::new(&classifier.classify(&reference)?)?;
    let floor_classified = classifier.classify(&floor_images)?;
    let floor = reference.score(&floor_classified)?;
    let real = classifier.classify(&test.images)?;
    let mut class_features = Vec::with_capacity(N_CLASSES);
    let mut real_spread = [0.0; N_CLASSES];
    let mut pick = Rng::new(seed);
    for (c, spread) in real_spread.iter_mut().enumerate() {
        let idx: Vec<usize> = (0..test.len())
            .filter(|&i| test.labels[i] as usize == c)
            .collect();
        if idx.len() <= per_class {
            bail!(
                "the real test split has {} images of class {c}, need more than {per_class}",
                idx.len()
            );
        }
        class_features.push(real.features.select_rows(&idx));
        let mut chosen = idx.clone();
        rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), pick.inner());
        *spread = mean_pairwise_distance(&test.batch(&chosen[..per_class])?.0)?;
    }
    let class_gaussians = (per_class > FEATURES)
        .then(|| {
            class_features
                .iter()
                .map(Gaussian::fit)
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    // What real images score in the asked-share column: the classifier's test accuracy.
    let floor_share = asked_class_share(&real.labels, &test.labels)?;

    let mut out = Vec::with_capacity(ws.len());
    for &w in ws.iter() {
        let images = guided_batches(model, schedule, w, per_class, batch, seed)?; // [n, 1, 16, 16]
        let images = images.clamp(-1f32, 1f32)?;
        let asked: Vec<u8> = (0..n).map(|i| (i % N_CLASSES) as u8).collect();
        let got = classifier.classify(&images)?;
        let all = reference.score(&got)?;
        let mut class_share = [0.0; N_CLASSES];
        let mut class_kid = [0.0; N_CLASSES];
        let mut class_fd = [0.0; N_CLASSES];
        let mut spread = [0.0; N_CLASSES];
        for c in 0..N_CLASSES {
            let idx: Vec<usize> = (c..n).step_by(N_CLASSES).collect();
            let predicted: Vec<u8> = idx.iter().map(|&i| got.labels[i]).collect();
            class_share[c] = asked_class_share(&predicted, &vec![c as u8; idx.len()])?;
            let f = got.features.select_rows(&idx);
            class_kid[c] = kid(&f, &class_features[c])?;
            if let Some(g) = &class_gaussians {
                class_fd[c] = frechet_distance(&Gaussian::fit(&f)?, &g[c])?;
            }
            let ids = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                images.device(),
            )?;
            spread[c] = mean_pairwise_distance(&images.index_select(&ids, 0)?)?;
        }
        out.push(TradeoffRow {
            w,
            asked_share: asked_class_share(&got.labels, &asked)?,
            class_share,
            all,
            class_kid,
            class_fd: class_gaussians.as_ref().map(|_| class_fd),
            spread,
            samples: images,
        });
    }
    Ok(Tradeoff {
        rows: out,
        per_class,
        floor,
        floor_share,
        real_spread,
        reference: reference.len(),
    })
}

/// `per_class` images of each class at weight `w`, image `i` of class `i mod 10`, drawn
/// `batch` at a time from one seeded stream.
fn guided_batches(
    model: &UNet,
    schedule: &Schedule,
    w: f64,
    per_class: usize,
    batch: usize,
    seed: u64,
) -> Result<Tensor> {
    let n = per_class * N_CLASSES;
    let mut rng = Rng::new(seed);
    let mut parts = vec![];
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let classes: Vec<usize> = (start..start + len).map(|i| i % N_CLASSES).collect();
        parts.push(
            sample_w(model, schedule, &classes, &[w], 0, &mut rng)?
                .samples
                .images,
        );
        start += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// One line of the trade-off: the per-class columns averaged over the classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryRow {
    /// The weight (NaN for the real images' line).
    pub w: f64,
    pub asked_share: f64,
    pub fd: f64,
    pub kid: f64,
    /// NaN where not measured (the real images' line; 128 or fewer samples a class for FD).
    pub class_kid: f64,
    pub class_fd: f64,
    pub spread: f64,
}

/// The trade-off as a table: what `tradeoff.csv` holds, and what the chart draws.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeoffSummary {
    pub rows: Vec<SummaryRow>,
    /// Real test images on the same meter.
    pub real: SummaryRow,
}

impl Tradeoff {
    /// The per-class columns averaged, a line per weight, and the real images' line.
    pub fn summary(&self) -> TradeoffSummary {
        let rows = self
            .rows
            .iter()
            .map(|r| SummaryRow {
                w: r.w,
                asked_share: r.asked_share,
                fd: r.all.fd,
                kid: r.all.kid,
                class_kid: r.class_kid_mean(),
                class_fd: r.class_fd_mean().unwrap_or(f64::NAN),
                spread: r.spread_mean(),
            })
            .collect();
        let real = SummaryRow {
            w: f64::NAN,
            asked_share: self.floor_share,
            fd: self.floor.fd,
            kid: self.floor.kid,
            class_kid: f64::NAN,
            class_fd: f64::NAN,
            spread: mean(&self.real_spread),
        };
        TradeoffSummary { rows, real }
    }

    /// The table in Markdown, after a line that says how many images it measured.
    pub fn markdown(&self) -> String {
        format!(
            "{} samples a class, {} in all per weight, against {} real test images.\n\n{}",
            self.per_class,
            self.per_class * N_CLASSES,
            self.reference,
            self.summary().markdown()
        )
    }

    /// Per weight and class: asked share, class KID, class FD and spread, as CSV.
    pub fn per_class_csv(&self) -> String {
        let mut s = String::from("w,class,asked_share,class_kid,class_fd,spread\n");
        for r in &self.rows {
            for c in 0..N_CLASSES {
                let fd = r.class_fd.map_or(String::new(), |f| format!("{:.3}", f[c]));
                let _ = writeln!(
                    s,
                    "{},{},{:.4},{:.3},{fd},{:.4}",
                    r.w, CLASS_NAMES[c], r.class_share[c], r.class_kid[c], r.spread[c]
                );
            }
        }
        s
    }
}

/// The CSV header of [`TradeoffSummary::to_csv`].
const SUMMARY_HEADER: &str = "w,asked_share,fd,kid,class_kid,class_fd,spread";

impl TradeoffSummary {
    /// The table in Markdown, a row per weight, then the real images.
    pub fn markdown(&self) -> String {
        let cell = |v: f64, digits: usize| match v.is_nan() {
            true => "-".to_string(),
            false => format!("{v:.digits$}"),
        };
        let mut s = String::from(
            "| w | asked class share | FD (all) | KID (all) | class KID | class FD | spread |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for r in self.rows.iter().chain([&self.real]) {
            let w = match r.w.is_nan() {
                true => "real test images".to_string(),
                false => r.w.to_string(),
            };
            let _ = writeln!(
                s,
                "| {w} | {} | {} | {} | {} | {} | {} |",
                cell(r.asked_share, 3),
                cell(r.fd, 1),
                cell(r.kid, 2),
                cell(r.class_kid, 2),
                cell(r.class_fd, 1),
                cell(r.spread, 2)
            );
        }
        s
    }

    /// The table as CSV (the real images' line has an empty `w`).
    pub fn to_csv(&self) -> String {
        let mut s = format!("{SUMMARY_HEADER}\n");
        for r in self.rows.iter().chain([&self.real]) {
            let v = [
                r.w,
                r.asked_share,
                r.fd,
                r.kid,
                r.class_kid,
                r.class_fd,
                r.spread,
            ];
            let cells: Vec<String> = v
                .iter()
                .map(|x| match x.is_nan() {
                    true => String::new(),
                    false => x.to_string(),
                })
                .collect();
            let _ = writeln!(s, "{}", cells.join(","));
        }
        s
    }

    /// Reads what [`to_csv`](Self::to_csv) wrote.
    pub fn from_csv(text: &str) -> Result<Self> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(SUMMARY_HEADER) {
            bail!("a guidance trade-off table starts with the line `{SUMMARY_HEADER}`: is this a tradeoff.csv of `diffusion guidance`?");
        }
        let mut rows = vec![];
        for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
            let v: Vec<f64> = line
                .split(',')
                .map(|c| match c.trim() {
                    "" => Ok(f64::NAN),
                    c => c.parse::<f64>(),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("line {} of the trade-off table: {e}", i + 2))?;
            let [w, asked_share, fd, kid, class_kid, class_fd, spread] = v[..] else {
                bail!(
                    "line {} of the trade-off table has {} values, expected 7",
                    i + 2,
                    v.len()
                );
            };
            rows.push(SummaryRow {
                w,
                asked_share,
                fd,
                kid,
                class_kid,
                class_fd,
                spread,
            });
        }
        match rows.pop() {
            Some(real) if real.w.is_nan() && !rows.is_empty() => Ok(Self { rows, real }),
            _ => bail!(
                "a trade-off table has a line per weight, then the real images' line (empty w)"
            ),
        }
    }

    /// One chart against `w`: the asked share, the spread relative to the real images', and
    /// the all-samples FD relative to its largest value, all on one scale from 0.
    pub fn chart(&self) -> LineChart {
        let fd_max = self.rows.iter().map(|r| r.fd).fold(f64::MIN, f64::max);
        let pts = |f: &dyn Fn(&SummaryRow) -> f64| -> Vec<(f64, f64)> {
            self.rows.iter().map(|r| (r.w, f(r))).collect()
        };
        LineChart::new("classifier-free guidance: what w buys and costs")
            .x_label("guidance weight w")
            .y_label("share, or ratio")
            .series("asked class share", pts(&|r| r.asked_share))
            .series(
                "spread / real images' spread",
                pts(&|r| r.spread / self.real.spread),
            )
            .series("FD (all) / largest FD", pts(&|r| r.fd / fd_max))
    }
}
