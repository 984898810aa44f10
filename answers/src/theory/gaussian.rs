//! The normal distribution: density, distribution function (through an `erf` written here) and
//! the KL divergence between two univariate Gaussians.
//!
//! ```text
//! pdf(x; mu, s^2) = exp(-(x - mu)^2 / (2 s^2)) / sqrt(2 pi s^2)
//! Phi(x)          = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2
//! KL(N(m1, v1) || N(m2, v2)) = 1/2 [ ln(v2 / v1) + (v1 + (m1 - m2)^2) / v2 - 1 ]
//! ```

use anyhow::{bail, Result};
use std::f64::consts::PI;

/// `2 / sqrt(pi)`.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// Below this, `erf` uses its power series; above, `erfc` uses its continued fraction.
const SWITCH: f64 = 2.5;

/// `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1 * 3 * ... * (2n+1))` for `|x| < 2.5`
/// (a series of positive terms, so no cancellation), `1 - erfc(x)` beyond.
/// Absolute error below `1e-14`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x < SWITCH {
        erf_series(x)
    } else {
        1.0 - erfc_continued_fraction(x)
    }
}

/// `erfc(x) = 1 - erf(x)`, computed without cancellation for large `x`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < SWITCH {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0u32;
    while term > 1e-17 * sum && n < 500 {
        n += 1;
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
    }
    TWO_OVER_SQRT_PI * (-x2).exp() * sum
}

/// `erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + ...))))`, `x >= 2.5`,
/// evaluated from the tail (120 levels are far more than needed there).
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for n in (1..=120u32).rev() {
        f = x + f64::from(n) / 2.0 / f;
    }
    (-x * x).exp() / PI.sqrt() / f
}

/// The normal density `N(x; mu, sigma^2)` (`sigma` is the standard deviation).
pub fn normal_pdf(x: f64, mu: f64, sigma: f64) -> Result<f64> {
    check_sigma(sigma)?;
    let z = (x - mu) / sigma;
    Ok((-0.5 * z * z).exp() / (sigma * (2.0 * PI).sqrt()))
}

/// `ln N(x; mu, sigma^2)`.
pub fn normal_log_pdf(x: f64, mu: f64, sigma: f64) -> Result<f64> {
    check_sigma(sigma)?;
    let z = (x - mu) / sigma;
    Ok(-0.5 * z * z - sigma.ln() - 0.5 * (2.0 * PI).ln())
}

/// The standard normal distribution function `Phi(x) = P(Z <= x)`.
pub fn std_normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `P(X <= x)` for `X ~ N(mu, sigma^2)`.
pub fn normal_cdf(x: f64, mu: f64, sigma: f64) -> Result<f64> {
    check_sigma(sigma)?;
    Ok(std_normal_cdf((x - mu) / sigma))
}

/// `KL(N(mu1, var1) || N(mu2, var2))`, in nats (variances, not standard deviations).
pub fn kl_normal(mu1: f64, var1: f64, mu2: f64, var2: f64) -> Result<f64> {
    if !(var1 > 0.0 && var2 > 0.0 && var1.is_finite() && var2.is_finite()) {
        bail!("both variances must be positive and finite, got {var1} and {var2}");
    }
    let d = mu1 - mu2;
    Ok(0.5 * ((var2 / var1).ln() + (var1 + d * d) / var2 - 1.0))
}

fn check_sigma(sigma: f64) -> Result<()> {
    if !(sigma > 0.0 && sigma.is_finite()) {
        bail!("the standard deviation must be positive and finite, got {sigma}");
    }
    Ok(())
}

/// Integrates `f` over `[a, b]` with composite Simpson's rule on `n` (even) intervals.
pub fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let n = if n % 2 == 1 { n + 1 } else { n.max(2) };
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        s += w * f(a + h * i as f64);
    }
    s * h / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values of erf and erfc from standard tables (Abramowitz & Stegun, Table 7.1, and
    // the C library's erf/erfc), to 16 digits.
    const ERF: [(f64, f64); 6] = [
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (2.5, 0.999593047982555),
        (3.0, 0.9999779095030014),
    ];
    const ERFC: [(f64, f64); 4] = [
        (2.5, 4.069520174449589e-4),
        (3.0, 2.2090496998585438e-5),
        (4.0, 1.541725790028002e-8),
        (5.0, 1.5374597944280351e-12),
    ];

    #[test]
    fn erf_matches_tables_to_1e_12() {
        assert_eq!(erf(0.0), 0.0);
        for (x, v) in ERF {
            assert!((erf(x) - v).abs() < 1e-12, "erf({x}) = {} vs {v}", erf(x));
            assert!((erf(-x) + v).abs() < 1e-12);
        }
        // Just below and above the switch between series and continued fraction.
        let (lo, hi) = (erf(2.5 - 1e-9), erf(2.5 + 1e-9));
        assert!((hi - lo).abs() < 1e-10);
    }

    #[test]
    fn erfc_has_small_relative_error_in_the_tail() {
        for (x, v) in ERFC {
            assert!(
                ((erfc(x) - v) / v).abs() < 1e-11,
                "erfc({x}) = {} vs {v}",
                erfc(x)
            );
        }
        assert!((erfc(-1.0) - (2.0 - 0.15729920705028513)).abs() < 1e-14);
    }

    #[test]
    fn erf_agrees_with_the_integral_of_its_definition() {
        // erf(x) = 2/sqrt(pi) * integral_0^x exp(-u^2) du, by quadrature.
        for x in [0.3, 1.1, 2.7, 3.4] {
            let q = TWO_OVER_SQRT_PI * simpson(|u| (-u * u).exp(), 0.0, x, 2000);
            assert!((erf(x) - q).abs() < 1e-12, "x = {x}");
        }
    }

    #[test]
    fn phi_values() {
        // Table values: Phi(1) = 0.841344746, Phi(-1) = 0.158655254, Phi(1.96) = 0.975002105.
        assert!((std_normal_cdf(1.0) - 0.8413447460685429).abs() < 1e-12);
        assert!((std_normal_cdf(-1.0) - 0.15865525393145707).abs() < 1e-12);
        assert!((std_normal_cdf(1.96) - 0.9750021048517795).abs() < 1e-12);
        assert_eq!(std_normal_cdf(0.0), 0.5);
        // P(z >= 0) for z ~ N(1, 1) is Phi(1).
        let p = 1.0 - normal_cdf(0.0, 1.0, 1.0).unwrap();
        assert!((p - 0.8413447460685429).abs() < 1e-12);
    }

    #[test]
    fn pdf_at_the_mean_and_normalisation() {
        // 1/sqrt(2 pi) = 0.3989422804014327.
        assert!((normal_pdf(0.0, 0.0, 1.0).unwrap() - 0.3989422804014327).abs() < 1e-15);
        assert!((normal_pdf(3.0, 3.0, 2.0).unwrap() - 0.3989422804014327 / 2.0).abs() < 1e-15);
        let mass = simpson(|x| normal_pdf(x, 1.0, 0.5).unwrap_or(0.0), -5.0, 7.0, 4000);
        assert!((mass - 1.0).abs() < 1e-10);
        let lp = normal_log_pdf(1.5, 0.0, 2.0).unwrap();
        assert!((lp - normal_pdf(1.5, 0.0, 2.0).unwrap().ln()).abs() < 1e-14);
        assert!(normal_pdf(0.0, 0.0, 0.0).is_err());
    }

    #[test]
    fn kl_closed_forms_by_hand() {
        // KL(N(1,1) || N(0,1)) = 1/2 [0 + (1 + 1)/1 - 1] = 1/2.
        assert!((kl_normal(1.0, 1.0, 0.0, 1.0).unwrap() - 0.5).abs() < 1e-15);
        // KL(N(0,4) || N(0,1)) = 1/2 [ln(1/4) + 4 - 1] = 1.5 - ln 2.
        assert!((kl_normal(0.0, 4.0, 0.0, 1.0).unwrap() - (1.5 - 2f64.ln())).abs() < 1e-15);
        // Equal variances v: KL = d^2 / (2 v); d = 1, v = 0.01 gives 50.
        assert!((kl_normal(1.0, 0.01, 0.0, 0.01).unwrap() - 50.0).abs() < 1e-9);
        assert!(kl_normal(0.0, 0.0, 0.0, 1.0).is_err());
    }

    #[test]
    fn kl_zero_only_for_equal_gaussians_and_never_negative() {
        assert_eq!(kl_normal(0.3, 2.0, 0.3, 2.0).unwrap(), 0.0);
        for (m, v) in [(0.1, 1.0), (0.0, 1.1), (-2.0, 0.5), (0.0, 0.9)] {
            assert!(kl_normal(m, v, 0.0, 1.0).unwrap() > 0.0);
        }
        // Small shift: KL(N(0.01, 1) || N(0, 1)) = 0.01^2 / 2 = 5e-5.
        assert!((kl_normal(0.01, 1.0, 0.0, 1.0).unwrap() - 5e-5).abs() < 1e-15);
    }

    #[test]
    fn kl_agrees_with_the_integral_of_its_definition() {
        // KL = integral p ln(p/q), by quadrature.
        let (m1, s1, m2, s2) = (0.5, 0.8, -0.3, 1.7);
        let q = simpson(
            |x| {
                let p = normal_pdf(x, m1, s1).unwrap_or(0.0);
                let lp = normal_log_pdf(x, m1, s1).unwrap_or(0.0);
                let lq = normal_log_pdf(x, m2, s2).unwrap_or(0.0);
                p * (lp - lq)
            },
            -12.0,
            12.0,
            8000,
        );
        let kl = kl_normal(m1, s1 * s1, m2, s2 * s2).unwrap();
        assert!((kl - q).abs() < 1e-10, "{kl} vs {q}");
    }
}
