//! Why estimating `p(x) = E_{z ~ p(z)}[p(x | z)]` with samples from the prior is wasteful.
//!
//! The estimator `(1/N) sum_i p(x | z_i)` is unbiased, but when `p(x | z)` is non-negligible only
//! on a region of prior mass `p`, its relative standard deviation is about `sqrt((1 - p) / (N p))`.
//! For a fixed relative error `r` it needs
//!
//! ```text
//! N = (1 - p) / (p r^2)
//! ```
//!
//! samples. In the `D`-dimensional version of the two-image model (`p(x | z) = 1` when every
//! `z_d >= 0`), `p = 2^-D`: the sample count doubles with each latent dimension.

use anyhow::{bail, Result};

/// Prior mass of the positive orthant of `N(0, I_D)`: `2^-D`.
pub fn orthant_evidence(dim: u32) -> f64 {
    0.5f64.powi(dim as i32)
}

/// Samples needed for relative standard deviation `r` when the indicator has probability `p`:
/// `(1 - p) / (p r^2)`.
pub fn samples_for_relative_error(p: f64, r: f64) -> Result<f64> {
    if !(p > 0.0 && p <= 1.0) {
        bail!("the probability must lie in (0, 1], got {p}");
    }
    if !(r > 0.0 && r.is_finite()) {
        bail!("the relative error must be positive, got {r}");
    }
    Ok((1.0 - p) / (p * r * r))
}

/// `log10` of a product of `m` pixel probabilities, each equal to `p`: `m log10 p`.
pub fn log10_product(m: u32, p: f64) -> f64 {
    f64::from(m) * p.log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn orthant_sample_counts_by_hand() {
        // r = 10%: N = (2^D - 1) * 100.
        let n = |d| samples_for_relative_error(orthant_evidence(d), 0.1).unwrap();
        assert!((n(1) - 100.0).abs() < 1e-9);
        assert!((n(10) - 102_300.0).abs() < 1e-6);
        assert!((n(20) - 104_857_500.0).abs() < 1e-3);
        assert!(samples_for_relative_error(0.0, 0.1).is_err());
    }

    #[test]
    fn the_formula_predicts_the_spread_of_real_estimates() {
        // p = 1/8 (D = 3), N = 100 samples per estimate, 4000 estimates:
        // predicted relative sd sqrt(7/100) = 0.2646.
        let mut rng = StdRng::seed_from_u64(7);
        let (n, reps, d) = (100, 4000, 3);
        let estimates: Vec<f64> = (0..reps)
            .map(|_| {
                let hits = (0..n)
                    .filter(|_| (0..d).all(|_| rng.random::<bool>()))
                    .count();
                hits as f64 / n as f64
            })
            .collect();
        let mean = estimates.iter().sum::<f64>() / reps as f64;
        let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / reps as f64;
        let rel_sd = var.sqrt() / 0.125;
        let predicted = (samples_for_relative_error(0.125, 1.0).unwrap() / n as f64).sqrt();
        assert!((predicted - 7f64.sqrt() / 10.0).abs() < 1e-12);
        assert!(
            (rel_sd - predicted).abs() < 0.05 * predicted,
            "{rel_sd} vs {predicted}"
        );
        assert!((mean - 0.125).abs() < 0.005);
    }

    #[test]
    fn a_784_pixel_likelihood_underflows_in_f32() {
        // 784 log10(1/2) = -784 * 0.30103 = -236.0075.
        assert!((log10_product(784, 0.5) + 236.0075).abs() < 1e-4);
        assert_eq!(0.5f32.powi(784), 0.0);
        let p64 = 0.5f64.powi(784);
        assert!(p64 > 0.0 && (p64.log10() + 236.0075).abs() < 1e-4);
        // With p = 0.1 per pixel even f64 underflows: 10^-784.
        assert_eq!(0.1f64.powi(784), 0.0);
    }
}
