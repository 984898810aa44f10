//! Scoring samples against real images, with the floor a perfect sampler would reach.
//!
//! The test split is shuffled (seeded) and cut in two disjoint parts: a *reference* set of
//! `real_n` images, and a *floor* set of as many images as there are samples. The samples and
//! the floor set are each compared with the reference:
//!
//! ```text
//! samples [N] ──┐                               FD(samples, reference), KID(samples, reference)
//!               ├── classifier features ──►
//! floor   [N] ──┘     vs reference [real_n]     FD(floor, reference),   KID(floor, reference)
//! ```
//!
//! Both comparisons have the same sizes, so the floor is what sampling error alone gives at that
//! `N`: a sampler is as good as the classifier can tell when its scores reach the floor's.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::classifier::{Classified, Classifier, FEATURES};
use super::frechet::{frechet_distance, Gaussian};
use super::histogram::ClassHistogram;
use super::kid;
use super::Matrix;
use crate::data::FashionMnist;

/// The real images scores are measured against: their features, the Gaussian fitted to them,
/// and the part of KID that depends on them alone.
#[derive(Debug, Clone)]
pub struct Reference {
    pub features: Matrix,
    pub gaussian: Gaussian,
    /// `1/(n(n-1)) sum_{i != j} k(y_i, y_j)`.
    within: f64,
}

/// The scores of one set of images against a [`Reference`].
#[derive(Debug, Clone)]
pub struct Scores {
    /// Number of images scored.
    pub n: usize,
    /// Fréchet distance of their features to the reference's.
    pub fd: f64,
    /// Kernel distance (unbiased MMD²) to the reference's features.
    pub kid: f64,
    /// Their predicted classes.
    pub histogram: ClassHistogram,
}

impl Reference {
    /// The reference made of `real`'s features (more rows than features).
    pub fn new(real: &Classified) -> Result<Self> {
        let gaussian = Gaussian::fit(&real.features).context("the real reference images")?;
        Ok(Self {
            within: kid::within_mean(&real.features)?,
            features: real.features.clone(),
            gaussian,
        })
    }

    /// Number of reference images.
    pub fn len(&self) -> usize {
        self.features.nrows()
    }

    /// Whether there is no reference image (never, for a constructed one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// FD, KID and the class histogram of `candidate` against this reference.
    pub fn score(&self, candidate: &Classified) -> Result<Scores> {
        let n = candidate.features.nrows();
        let gaussian = Gaussian::fit(&candidate.features).with_context(|| {
            format!("the {n} images scored (the Fréchet distance of {FEATURES} features needs more than {FEATURES})")
        })?;
        let fd = frechet_distance(&gaussian, &self.gaussian)?;
        let kid = kid::within_mean(&candidate.features)? + self.within
            - 2.0 * kid::between_mean(&candidate.features, &self.features)?;
        Ok(Scores {
            n,
            fd,
            kid,
            histogram: ClassHistogram::from_labels(&candidate.labels)?,
        })
    }
}

/// Two disjoint sets of `test`'s images, drawn by a seeded shuffle: the reference
/// (`real_n` images, by default all those not in the other set) and the floor set (`n` images).
pub fn real_split(
    test: &FashionMnist,
    n: usize,
    real_n: Option<usize>,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let total = test.len();
    if n == 0 || n >= total {
        bail!(
            "the floor set needs between 1 and {} of the {total} real images, got {n}",
            total.saturating_sub(1)
        );
    }
    let real_n = real_n.unwrap_or(total - n);
    if real_n == 0 || n + real_n > total {
        bail!(
            "the reference ({real_n} images) and the floor set ({n}, as many as the samples) must \
             be disjoint, so together at most the {total} real images: score at most {} samples \
             with this reference, or pass a reference of 1 to {} images",
            total.saturating_sub(real_n),
            total - n
        );
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let (reference, _) = test.batch(&order[..real_n])?;
    let (floor, _) = test.batch(&order[real_n..real_n + n])?;
    Ok((reference, floor))
}

/// The scores of `samples` and of the real floor at the same `N`.
#[derive(Debug, Clone)]
pub struct QualityReport {
    pub samples: Scores,
    /// Real images not in the reference, as many as the samples.
    pub floor: Scores,
    /// Number of real reference images.
    pub reference: usize,
}

impl QualityReport {
    /// One line: the samples' FD, KID and class evenness, each beside the real floor's.
    ///
    /// `FD 212.3 (real floor 2.0) | KID 86.2 (floor -0.3) | class evenness 0.77 (real 0.99) | N = 1000 against 9000 real test images`
    pub fn summary(&self) -> String {
        let (s, f) = (&self.samples, &self.floor);
        format!(
            "FD {:.1} (real floor {:.1}) | KID {:.2} (floor {:.2}) | class evenness {:.2} (real {:.2}) | N = {} against {} real test images",
            s.fd,
            f.fd,
            s.kid,
            f.kid,
            s.histogram.evenness(),
            f.histogram.evenness(),
            s.n,
            self.reference
        )
    }

    /// The report as text: FD, KID and evenness of samples and floor, then the samples' classes.
    pub fn text(&self) -> String {
        let line = |name: &str, s: &Scores| {
            format!(
                "{name:<28} {:>6} {:>10.3} {:>10.5} {:>8.3}\n",
                s.n,
                s.fd,
                s.kid,
                s.histogram.evenness()
            )
        };
        format!(
            "against {} real test images (classifier features, {FEATURES} dimensions):\n\
             {:<28} {:>6} {:>10} {:>10} {:>8}\n{}{}\nclasses of the samples (evenness = entropy / log2(10)):\n{}",
            self.reference,
            "set",
            "N",
            "FD",
            "KID",
            "evenness",
            line("samples", &self.samples),
            line("real floor (disjoint real)", &self.floor),
            self.samples.histogram.table()
        )
    }
}

/// Scores `samples` (`[N, 1, 16, 16]` f32 in `[-1, 1]`, `N > 128`) against real test images:
/// see the module's description; `real_n` and `seed` as in [`real_split`].
pub fn score_samples(
    classifier: &Classifier,
    samples: &Tensor,
    test: &FashionMnist,
    real_n: Option<usize>,
    seed: u64,
) -> Result<QualityReport> {
    let n = super::check_images(samples).context("the samples")?;
    if n <= FEATURES {
        bail!(
            "{n} samples are too few: the Fréchet distance of {FEATURES} features needs more than \
             {FEATURES} (at least {}; 1,000 or more for a stable score)",
            FEATURES + 1
        );
    }
    let (reference, floor) = real_split(test, n, real_n, seed)?;
    let reference = Reference::new(&classifier.classify(&reference)?)?;
    Ok(QualityReport {
        samples: reference.score(&classifier.classify(samples)?)?,
        floor: reference.score(&classifier.classify(&floor)?)?,
        reference: reference.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn fake_test(n: usize) -> FashionMnist {
        let mut rng = crate::Rng::new(4);
        let images = rng.uniform((n, 1, 16, 16), 1.0, &Device::Cpu).unwrap();
        FashionMnist {
            images,
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    #[test]
    fn the_split_is_disjoint_seeded_and_sized() {
        let test = fake_test(40);
        let (r, f) = real_split(&test, 10, None, 1).unwrap();
        assert_eq!((r.dim(0).unwrap(), f.dim(0).unwrap()), (30, 10));
        let rows = |t: &Tensor| -> Vec<Vec<f32>> {
            (0..t.dim(0).unwrap())
                .map(|i| t.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        let (rr, ff) = (rows(&r), rows(&f));
        assert!(
            ff.iter().all(|x| !rr.contains(x)),
            "an image is in both sets"
        );
        let (r2, _) = real_split(&test, 10, None, 1).unwrap();
        assert_eq!(rows(&r2), rr);
        let (r3, _) = real_split(&test, 10, Some(5), 2).unwrap();
        assert_eq!(r3.dim(0).unwrap(), 5);
        let (r4, f4) = real_split(&test, 25, None, 0).unwrap();
        assert_eq!((r4.dim(0).unwrap(), f4.dim(0).unwrap()), (15, 25));
        let e = real_split(&test, 25, Some(20), 0).unwrap_err().to_string();
        assert!(
            e.contains("at most 20 samples") && e.contains("1 to 15 images"),
            "{e}"
        );
        assert!(real_split(&test, 10, Some(31), 0).is_err());
        assert!(real_split(&test, 0, None, 0).is_err());
    }

    #[test]
    fn scores_of_real_noise_and_too_few_samples() {
        let dev = Device::Cpu;
        let classifier = Classifier::new(&dev, &mut crate::Rng::new(0)).unwrap();
        let test = fake_test(600);
        // Samples drawn as the fake real images are: about the floor. Constant images: far.
        let like = crate::Rng::new(9)
            .uniform((200, 1, 16, 16), 1.0, &dev)
            .unwrap();
        let report = score_samples(&classifier, &like, &test, None, 0).unwrap();
        assert_eq!(
            (report.samples.n, report.floor.n, report.reference),
            (200, 200, 400)
        );
        let grey = Tensor::full(0.2f32, (200, 1, 16, 16), &dev)
            .unwrap()
            .add(
                &crate::Rng::new(3)
                    .uniform((200, 1, 16, 16), 0.01, &dev)
                    .unwrap(),
            )
            .unwrap();
        let far = score_samples(&classifier, &grey, &test, None, 0).unwrap();
        assert!(
            far.samples.fd > 5.0 * report.samples.fd,
            "{} against {}",
            far.samples.fd,
            report.samples.fd
        );
        assert!(far.samples.kid > report.samples.kid);
        assert!(report.text().contains("real floor") && report.text().contains("Trouser"));
        let line = far.summary();
        assert!(!line.contains('\n'), "{line}");
        for part in [
            format!("FD {:.1} (real floor {:.1})", far.samples.fd, far.floor.fd),
            format!("KID {:.2}", far.samples.kid),
            "N = 200 against 400 real test images".to_string(),
        ] {
            assert!(line.contains(&part), "{line} lacks {part}");
        }

        let few = Tensor::zeros((100, 1, 16, 16), candle_core::DType::F32, &dev).unwrap();
        let e = score_samples(&classifier, &few, &test, None, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("100 samples are too few") && e.contains("at least 129"),
            "{e}"
        );
    }
}
