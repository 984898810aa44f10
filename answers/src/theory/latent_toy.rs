//! The two-image latent variable model of the generative-models exercise 2:
//!
//! ```text
//! p(z) = N(z; 0, 1),   p(x1 | z) = 1[z >= 0],   p(x2 | z) = 1[z < 0]
//! p(x1) = P(z >= 0) = 1/2,   p(z | x1) = 2 N(z; 0, 1) 1[z >= 0]   (half-normal)
//! ELBO(x1; q) = E_q[ln p(x1 | z)] - KL(q || p(z)) = ln p(x1) - KL(q || p(z | x1))
//! ```
//!
//! A Gaussian `q` puts mass `Phi(-mu/sigma) > 0` on `z < 0`, where `p(x1 | z) = 0`: there
//! `ln p(x1 | z) = -inf`, so the ELBO is `-inf` and `KL(q || p(z | x1)) = +inf`.

use super::gaussian::{kl_normal, normal_cdf, normal_log_pdf, normal_pdf, simpson, std_normal_cdf};
use anyhow::Result;

/// `ln p(x1) = ln P(z >= 0)` under the prior `N(0, 1)`: `ln(1/2) = -ln 2`.
pub fn log_p_x1() -> f64 {
    (1.0 - std_normal_cdf(0.0)).ln()
}

/// The posterior density `p(z | x1) = 2 N(z; 0, 1)` for `z >= 0`, `0` below.
pub fn posterior_density(z: f64) -> f64 {
    if z >= 0.0 {
        2.0 * normal_pdf(z, 0.0, 1.0).unwrap_or(0.0)
    } else {
        0.0
    }
}

/// `P_q(z >= 0)` for `q = N(mu, sigma^2)`: `1 - Phi(-mu / sigma) = Phi(mu / sigma)`.
pub fn q_mass_nonnegative(mu: f64, sigma: f64) -> Result<f64> {
    Ok(1.0 - normal_cdf(0.0, mu, sigma)?)
}

/// The part of `KL(q || p(z | x1))` from `z >= 0`: `integral_0^inf q ln(q / (2 N(z; 0, 1))) dz`,
/// by quadrature. For `q = N(0, 1)` it is `-(1/2) ln 2`.
pub fn kl_nonnegative_part(mu: f64, sigma: f64) -> Result<f64> {
    normal_pdf(0.0, mu, sigma)?; // checks sigma
    let hi = mu.max(0.0) + 14.0 * sigma;
    Ok(simpson(
        |z| {
            let q = normal_pdf(z, mu, sigma).unwrap_or(0.0);
            let lq = normal_log_pdf(z, mu, sigma).unwrap_or(0.0);
            let lp = 2f64.ln() + normal_log_pdf(z, 0.0, 1.0).unwrap_or(0.0);
            q * (lq - lp)
        },
        0.0,
        hi,
        20_000,
    ))
}

/// `KL(q || p(z | x1))` for a Gaussian `q`, as the limit `eps -> 0` of
/// [`kl_to_smoothed_posterior`]. The smoothed divergence grows like `r ln(1/eps)`, where the rate
/// `r` is the mass `P_q(z < 0)` that `q` puts where the posterior is zero; the rate is measured
/// between `eps = 1e-6` and `1e-12`. A positive rate means the limit is `+inf`; a zero rate (for
/// a `q` whose mass below zero underflows double precision) gives the value at `eps = 1e-12`.
pub fn kl_gaussian_to_posterior(mu: f64, sigma: f64) -> Result<f64> {
    if kl_divergence_rate(mu, sigma)? > 1e-9 {
        Ok(f64::INFINITY)
    } else {
        kl_to_smoothed_posterior(mu, sigma, 1e-12)
    }
}

/// The growth rate `d KL(q || p_eps) / d ln(1/eps)` of the smoothed divergence, measured between
/// `eps = 1e-6` and `1e-12`; it tends to `P_q(z < 0)`.
pub fn kl_divergence_rate(mu: f64, sigma: f64) -> Result<f64> {
    let (k6, k12) = (
        kl_to_smoothed_posterior(mu, sigma, 1e-6)?,
        kl_to_smoothed_posterior(mu, sigma, 1e-12)?,
    );
    Ok((k12 - k6) / 1e6f64.ln())
}

/// `KL(q || p_eps)` by quadrature, for `q = N(mu, sigma^2)` and the posterior smoothed so that it
/// is nowhere zero: `p_eps = (1 - eps) p(z | x1) + eps N(z; 0, 1)`. As `eps -> 0` it grows like
/// `P_q(z < 0) ln(1 / eps)`, without bound.
pub fn kl_to_smoothed_posterior(mu: f64, sigma: f64, eps: f64) -> Result<f64> {
    anyhow::ensure!(eps > 0.0 && eps < 1.0, "eps must lie in (0, 1), got {eps}");
    normal_pdf(0.0, mu, sigma)?; // checks sigma
                                 // ln p_eps(z) = ln(c) + ln N(z; 0, 1), with c = eps below zero and 2 - eps from zero on.
    let integrand = |c: f64| {
        move |z: f64| {
            let lq = normal_log_pdf(z, mu, sigma).unwrap_or(f64::NEG_INFINITY);
            let lp = c.ln() + normal_log_pdf(z, 0.0, 1.0).unwrap_or(0.0);
            lq.exp() * (lq - lp)
        }
    };
    let (lo, hi) = (mu - 14.0 * sigma, mu + 14.0 * sigma);
    let below = if lo < 0.0 {
        simpson(integrand(eps), lo, hi.min(0.0), 20_000)
    } else {
        0.0
    };
    let above = if hi > 0.0 {
        simpson(integrand(2.0 - eps), lo.max(0.0), hi, 20_000)
    } else {
        0.0
    };
    Ok(below + above)
}

/// The ELBO's terms for a Gaussian `q = N(mu, sigma^2)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElboTerms {
    /// `P_q(z < 0)`, the mass where `p(x1 | z) = 0`.
    pub mass_outside: f64,
    /// `E_q[ln p(x1 | z)] = 0 * P_q(z >= 0) + (-inf) * P_q(z < 0)`.
    pub expected_log_lik: f64,
    /// `KL(q || p(z))` between Gaussians (finite).
    pub kl_to_prior: f64,
    /// `expected_log_lik - kl_to_prior`.
    pub elbo: f64,
}

/// `ELBO(x1; q)` for `q = N(mu, sigma^2)`, term by term.
pub fn elbo_gaussian(mu: f64, sigma: f64) -> Result<ElboTerms> {
    let mass_outside = normal_cdf(0.0, mu, sigma)?;
    let expected_log_lik = if mass_outside > 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    let kl_to_prior = kl_normal(mu, sigma * sigma, 0.0, 1.0)?;
    Ok(ElboTerms {
        mass_outside,
        expected_log_lik,
        kl_to_prior,
        elbo: expected_log_lik - kl_to_prior,
    })
}

/// `KL(p(z | x1) || p(z))`, the half-normal against the prior, by quadrature of
/// `integral_0^inf 2 N(z) ln 2 dz`: equals `ln 2`. This is the ELBO's KL term when `q` is the
/// exact posterior, and the direction in which the narrower support sits inside the wider one.
pub fn kl_posterior_to_prior() -> f64 {
    simpson(
        |z| {
            let p = posterior_density(z);
            let lp = 2f64.ln() + normal_log_pdf(z, 0.0, 1.0).unwrap_or(0.0);
            let lq = normal_log_pdf(z, 0.0, 1.0).unwrap_or(0.0);
            p * (lp - lq)
        },
        0.0,
        14.0,
        20_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_one_half() {
        // By symmetry of N(0,1): p(x1) = 1/2, ln p(x1) = -ln 2 = -0.693147.
        assert!((log_p_x1() + 2f64.ln()).abs() < 1e-15);
        assert_eq!((log_p_x1() * 1e6).round(), -693_147.0); // stated as -0.693147
    }

    #[test]
    fn posterior_is_half_normal_and_integrates_to_one() {
        assert_eq!(posterior_density(-0.1), 0.0);
        // At z = 0: 2 / sqrt(2 pi) = 0.7978845608.
        assert!((posterior_density(0.0) - 0.7978845608028654).abs() < 1e-15);
        let mass = simpson(posterior_density, 0.0, 14.0, 20_000);
        assert!((mass - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kl_standard_normal_to_posterior() {
        // On z >= 0 the ratio q/p is 1/2: the part is (1/2) ln(1/2) = -0.346574.
        let part = kl_nonnegative_part(0.0, 1.0).unwrap();
        assert!((part + 0.5 * 2f64.ln()).abs() < 1e-10, "{part}");
        assert!((part + 0.346574).abs() < 1e-6);
        assert!(kl_gaussian_to_posterior(0.0, 0.0).is_err());
        // The divergence rate is the mass of q below zero (Phi(-mu / sigma), a second
        // computation), and a positive rate makes the limit infinite.
        for (mu, sigma) in [(0.0, 1.0), (1.0, 1.0), (-0.5, 2.0)] {
            let rate = kl_divergence_rate(mu, sigma).unwrap();
            let mass = normal_cdf(0.0, mu, sigma).unwrap();
            assert!(
                (rate - mass).abs() < 1e-3 * mass,
                "{mu} {sigma}: {rate} vs {mass}"
            );
            assert_eq!(kl_gaussian_to_posterior(mu, sigma).unwrap(), f64::INFINITY);
        }
        // Far above zero the mass below it underflows: the limit is finite, the divergence from
        // the half-normal of the part above zero, KL(q || N(0, 1)) - ln 2 (closed form).
        let far = kl_gaussian_to_posterior(40.0, 1.0).unwrap();
        let closed = crate::theory::gaussian::kl_normal(40.0, 1.0, 0.0, 1.0).unwrap() - 2f64.ln();
        assert!((far - closed).abs() < 1e-6 * closed, "{far} vs {closed}");
    }

    #[test]
    fn smoothing_the_posterior_shows_the_divergence() {
        // Each factor 10^4 less smoothing adds P_q(z < 0) ln(10^4) = 4.6052 for q = N(0, 1), and
        // 0.1587 * 9.2103 = 1.4613 for q = N(1, 1): the KL grows without bound as eps -> 0.
        for (mu, mass) in [(0.0, 0.5), (1.0, 0.15865525393145707)] {
            let kl = |eps: f64| kl_to_smoothed_posterior(mu, 1.0, eps).unwrap();
            let (a, b, c) = (kl(1e-4), kl(1e-8), kl(1e-12));
            let step = mass * 1e4f64.ln();
            assert!((b - a - step).abs() < 1e-4, "mu = {mu}: {a} {b} {c}");
            assert!((c - b - step).abs() < 1e-4, "mu = {mu}: {a} {b} {c}");
        }
        // With no smoothing below zero to speak of, the part above zero is what is left of it.
        let above = kl_to_smoothed_posterior(0.0, 1.0, 1e-300).unwrap() - 0.5 * 1e300f64.ln();
        assert!(
            (above - kl_nonnegative_part(0.0, 1.0).unwrap()).abs() < 1e-6,
            "{above}"
        );
        assert!(kl_to_smoothed_posterior(0.0, 1.0, 0.0).is_err());
    }

    #[test]
    fn mass_of_n11_above_zero_is_phi_1() {
        // Table value Phi(1) = 0.8413447, 1 - Phi(1) = 0.1586553.
        let p = q_mass_nonnegative(1.0, 1.0).unwrap();
        assert!((p - 0.8413447460685429).abs() < 1e-12);
        assert!((1.0 - p - 0.1586552539314571).abs() < 1e-12);
    }

    #[test]
    fn elbo_of_n11_is_minus_infinity() {
        let e = elbo_gaussian(1.0, 1.0).unwrap();
        assert!((e.mass_outside - 0.1586552539314571).abs() < 1e-12);
        assert_eq!(e.expected_log_lik, f64::NEG_INFINITY);
        // KL(N(1,1) || N(0,1)) = 1/2 [1 + 1 - 1 - ln 1] = 1/2: finite.
        assert!((e.kl_to_prior - 0.5).abs() < 1e-15);
        assert_eq!(e.elbo, f64::NEG_INFINITY);
    }

    #[test]
    fn exact_posterior_makes_the_bound_tight() {
        // q = p(z|x1): E_q[ln p(x1|z)] = 0 and KL(q || p(z)) = ln 2, so ELBO = -ln 2 = ln p(x1).
        let kl = kl_posterior_to_prior();
        assert!((kl - 2f64.ln()).abs() < 1e-10, "{kl}");
        assert!((0.0 - kl - log_p_x1()).abs() < 1e-10);
    }
}
