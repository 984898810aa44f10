//! How samples spread over the ten classes, as the classifier labels them.
//!
//! A sampler can score well on average and still draw some classes far more often than others.
//! The class histogram counts the predicted labels; its evenness is the entropy of the shares
//! `p_c = count_c / N` in bits, over the most it can be, `log2(10)`:
//!
//! ```text
//! H = - sum_c p_c log2(p_c)        evenness = H / log2(10)   (1: all classes equally often, 0: one class)
//! ```
//!
//! For a class-conditional model, [`asked_class_share`] gives the share of samples the
//! classifier puts in the class they were asked for.

use anyhow::{bail, Result};

use crate::data::CLASS_NAMES;

/// The number of samples of each class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassHistogram {
    /// `counts[c]`: samples labelled `c` (see [`CLASS_NAMES`]).
    pub counts: [usize; 10],
}

fn check_label(i: usize, l: u8) -> Result<usize> {
    if l as usize >= CLASS_NAMES.len() {
        bail!("label {l} at index {i} is not a class: FashionMNIST labels are 0..=9");
    }
    Ok(l as usize)
}

impl ClassHistogram {
    /// Counts `labels` (each `0..=9`).
    pub fn from_labels(labels: &[u8]) -> Result<Self> {
        let mut counts = [0; 10];
        for (i, &l) in labels.iter().enumerate() {
            counts[check_label(i, l)?] += 1;
        }
        Ok(Self { counts })
    }

    /// Number of samples counted.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// `count_c / N` for each class (all 0 when there is no sample).
    pub fn shares(&self) -> [f64; 10] {
        let n = self.total().max(1) as f64;
        self.counts.map(|c| c as f64 / n)
    }

    /// The entropy `H = - sum_c p_c log2(p_c)` of the shares, in bits (0 to `log2(10)`).
    pub fn entropy_bits(&self) -> f64 {
        self.shares()
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|p| -p * p.log2())
            .sum()
    }

    /// `H / log2(10)`: 1 when every class is equally frequent, 0 when all samples are of one.
    pub fn evenness(&self) -> f64 {
        self.entropy_bits() / (CLASS_NAMES.len() as f64).log2()
    }

    /// One line per class: `name  count  share`.
    pub fn table(&self) -> String {
        let shares = self.shares();
        CLASS_NAMES
            .iter()
            .zip(self.counts)
            .zip(shares)
            .map(|((name, c), p)| format!("{name:<12} {c:>6} {:>6.1}%\n", 100.0 * p))
            .collect()
    }
}

/// The share of samples whose predicted class is the class they were asked for:
/// `#{i : predicted[i] = asked[i]} / N`, for a class-conditional model (`asked[i]` is the
/// class sample `i` was drawn for).
pub fn asked_class_share(predicted: &[u8], asked: &[u8]) -> Result<f64> {
    if predicted.len() != asked.len() || predicted.is_empty() {
        bail!(
            "need one asked class per predicted label (and at least one), got {} predicted and {} asked",
            predicted.len(),
            asked.len()
        );
    }
    let mut hits = 0;
    for (i, (&p, &a)) in predicted.iter().zip(asked).enumerate() {
        check_label(i, p)?;
        check_label(i, a)?;
        hits += usize::from(p == a);
    }
    Ok(hits as f64 / predicted.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_shares_and_entropy_of_constructed_labels() {
        // Ten of each class: entropy log2(10), evenness 1.
        let even: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
        let h = ClassHistogram::from_labels(&even).unwrap();
        assert_eq!(h.counts, [10; 10]);
        assert_eq!(h.total(), 100);
        assert!((h.entropy_bits() - 10f64.log2()).abs() < 1e-12);
        assert!((h.evenness() - 1.0).abs() < 1e-12);

        // One class only: entropy 0.
        let h = ClassHistogram::from_labels(&[3; 7]).unwrap();
        assert_eq!(h.counts[3], 7);
        assert_eq!(h.entropy_bits(), 0.0);

        // Half class 0, half class 1: exactly 1 bit, evenness 1 / log2(10).
        let h = ClassHistogram::from_labels(&[0, 1, 0, 1]).unwrap();
        assert_eq!(h.shares()[..2], [0.5, 0.5]);
        assert!((h.entropy_bits() - 1.0).abs() < 1e-12);
        assert!((h.evenness() - 1.0 / 10f64.log2()).abs() < 1e-12);

        // 1/2, 1/4, 1/4: 1.5 bits.
        let h = ClassHistogram::from_labels(&[9, 9, 4, 5]).unwrap();
        assert!((h.entropy_bits() - 1.5).abs() < 1e-12);
        assert!(
            h.table().contains("Ankle boot") && h.table().contains("50.0%"),
            "{}",
            h.table()
        );

        let empty = ClassHistogram::from_labels(&[]).unwrap();
        assert_eq!((empty.total(), empty.entropy_bits()), (0, 0.0));
    }

    #[test]
    fn the_asked_class_share_counts_agreements() {
        assert_eq!(
            asked_class_share(&[1, 2, 3, 3], &[1, 2, 3, 4]).unwrap(),
            0.75
        );
        assert_eq!(asked_class_share(&[5; 4], &[5; 4]).unwrap(), 1.0);
        assert!(asked_class_share(&[1, 2], &[1])
            .unwrap_err()
            .to_string()
            .contains("2 predicted and 1 asked"));
        assert!(asked_class_share(&[], &[]).is_err());
        assert!(asked_class_share(&[1], &[10])
            .unwrap_err()
            .to_string()
            .contains("label 10"));
    }

    #[test]
    fn a_label_out_of_range_is_an_error() {
        let e = ClassHistogram::from_labels(&[0, 12])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label 12 at index 1") && e.contains("0..=9"),
            "{e}"
        );
    }
}
