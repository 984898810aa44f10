//! The ELBO and its gap, on a model where everything has a closed form:
//!
//! ```text
//! p(z) = N(0, 1),  p(x | z) = N(x; z, s2)          (s2: the decoder's variance)
//! p(x) = N(x; 0, 1 + s2),  p(z | x) = N(x / (1 + s2), s2 / (1 + s2))
//! q(z) = N(m, v)
//! ELBO = E_q[ln p(x | z)] - KL(q || p(z))
//!      = -1/2 ln(2 pi s2) - ((x - m)^2 + v) / (2 s2) - KL(N(m, v) || N(0, 1))
//! ln p(x) = ELBO + KL(q || p(z | x))
//! ```

use super::gaussian::{kl_normal, normal_log_pdf};
use anyhow::{bail, Result};
use std::f64::consts::PI;

/// The linear-Gaussian latent model with decoder variance `s2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearGaussian {
    s2: f64,
}

impl LinearGaussian {
    /// A model with decoder variance `s2 > 0`.
    pub fn new(s2: f64) -> Result<Self> {
        if !(s2 > 0.0 && s2.is_finite()) {
            bail!("the decoder variance must be positive and finite, got {s2}");
        }
        Ok(Self { s2 })
    }

    /// `ln p(x) = ln N(x; 0, 1 + s2)`.
    pub fn log_evidence(&self, x: f64) -> f64 {
        normal_log_pdf(x, 0.0, (1.0 + self.s2).sqrt()).unwrap_or(f64::NAN)
    }

    /// The exact posterior `p(z | x)` as `(mean, variance)`.
    pub fn posterior(&self, x: f64) -> (f64, f64) {
        (x / (1.0 + self.s2), self.s2 / (1.0 + self.s2))
    }

    /// `E_q[ln p(x | z)]` for `q = N(m, v)`.
    pub fn expected_log_lik(&self, x: f64, m: f64, v: f64) -> f64 {
        -0.5 * (2.0 * PI * self.s2).ln() - ((x - m).powi(2) + v) / (2.0 * self.s2)
    }

    /// `ELBO(x; q) = E_q[ln p(x | z)] - KL(q || p(z))`.
    pub fn elbo(&self, x: f64, m: f64, v: f64) -> Result<f64> {
        Ok(self.expected_log_lik(x, m, v) - kl_normal(m, v, 0.0, 1.0)?)
    }

    /// The gap `KL(q || p(z | x))`.
    pub fn gap(&self, x: f64, m: f64, v: f64) -> Result<f64> {
        let (pm, pv) = self.posterior(x);
        kl_normal(m, v, pm, pv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_evidence_is_elbo_plus_gap() {
        for (s2, x, m, v) in [
            (1.0, 0.0, 0.0, 1.0),
            (0.3, 1.2, -0.4, 2.5),
            (4.0, -2.0, 1.0, 0.1),
        ] {
            let model = LinearGaussian::new(s2).unwrap();
            let lhs = model.log_evidence(x);
            let rhs = model.elbo(x, m, v).unwrap() + model.gap(x, m, v).unwrap();
            assert!((lhs - rhs).abs() < 1e-12, "s2 = {s2}: {lhs} vs {rhs}");
            assert!(model.elbo(x, m, v).unwrap() <= lhs);
        }
    }

    #[test]
    fn exact_posterior_closes_the_gap() {
        let model = LinearGaussian::new(0.5).unwrap();
        let (m, v) = model.posterior(0.8);
        assert!((m - 0.8 / 1.5).abs() < 1e-15 && (v - 1.0 / 3.0).abs() < 1e-15);
        assert!(model.gap(0.8, m, v).unwrap().abs() < 1e-15);
        assert!((model.elbo(0.8, m, v).unwrap() - model.log_evidence(0.8)).abs() < 1e-12);
    }

    #[test]
    fn elbo_can_rise_while_the_likelihood_falls() {
        // Worked by hand at x = 0.
        // A: s2 = 1, q = N(0, 10). ln p(0) = -1/2 ln(4 pi) = -1.265512;
        //    posterior N(0, 1/2), gap = 1/2 [ln(0.05) + 20 - 1] = 8.002134; ELBO = -9.267646.
        // B: s2 = 4, q = N(0, 0.8) = posterior. ln p(0) = -1/2 ln(10 pi) = -1.723657 = ELBO.
        let a = LinearGaussian::new(1.0).unwrap();
        let b = LinearGaussian::new(4.0).unwrap();
        let (la, lb) = (a.log_evidence(0.0), b.log_evidence(0.0));
        assert!((la + 0.5 * (4.0 * PI).ln()).abs() < 1e-14);
        assert!((lb + 0.5 * (10.0 * PI).ln()).abs() < 1e-14);
        let gap_a = 0.5 * (0.05f64.ln() + 19.0);
        assert!((a.gap(0.0, 0.0, 10.0).unwrap() - gap_a).abs() < 1e-12);
        let (ea, eb) = (
            a.elbo(0.0, 0.0, 10.0).unwrap(),
            b.elbo(0.0, 0.0, 0.8).unwrap(),
        );
        assert!((ea - (la - gap_a)).abs() < 1e-12);
        assert!((eb - lb).abs() < 1e-12);
        // Rounded values stated in answers/vae-diffusion.md.
        assert!((la + 1.265512).abs() < 1e-6 && (lb + 1.723657).abs() < 1e-6);
        assert!((gap_a - 8.002134).abs() < 1e-6 && (ea + 9.267646).abs() < 1e-6);
        assert!(eb > ea && lb < la);
    }

    #[test]
    fn bad_variance_is_an_error() {
        assert!(LinearGaussian::new(0.0).is_err());
        assert!(LinearGaussian::new(f64::NAN).is_err());
    }
}
