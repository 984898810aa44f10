//! A DDPM forward chain with a short list of betas, in the paper's notation (steps counted from
//! 1, `alpha_bar_0 = 1`), for checking worked numbers by hand:
//!
//! ```text
//! alpha_t = 1 - beta_t,   alpha_bar_t = alpha_1 * ... * alpha_t
//! q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t)
//! q(x_{t-1} | x_t, x_0) = N(c_t x_t + c_0 x_0, beta_tilde_t)
//!   c_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
//!   c_0 = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
//!   beta_tilde_t = (1 - alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
//! mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_theta) / sqrt(alpha_t)
//! VLB weight of ||eps - eps_theta||^2 at step t: beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))
//! ```
//!
//! The course notebook counts steps from 0 instead (`t = 0 .. T-1`); its `pred_noise_coeff[t]`
//! is this module's `beta_t / sqrt(1 - alpha_bar_t)` at step `t + 1`.

use anyhow::{bail, Result};

/// A forward chain given by its betas `beta_1 .. beta_T`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyChain {
    betas: Vec<f64>,
}

/// One Gaussian component of a mixture: weight, mean, variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub mean: f64,
    pub var: f64,
}

impl ToyChain {
    /// A chain with betas in `(0, 1)`.
    pub fn new(betas: &[f64]) -> Result<Self> {
        if betas.is_empty() {
            bail!("a chain needs at least one beta");
        }
        if let Some(b) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
            bail!("every beta must lie in (0, 1), got {b}");
        }
        Ok(Self {
            betas: betas.to_vec(),
        })
    }

    /// Number of steps `T`.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    fn check(&self, t: usize) -> Result<()> {
        if t == 0 || t > self.len() {
            bail!("step t must run from 1 to T = {}, got {t}", self.len());
        }
        Ok(())
    }

    /// `beta_t`.
    pub fn beta(&self, t: usize) -> Result<f64> {
        self.check(t)?;
        Ok(self.betas[t - 1])
    }

    /// `alpha_t = 1 - beta_t`.
    pub fn alpha(&self, t: usize) -> Result<f64> {
        Ok(1.0 - self.beta(t)?)
    }

    /// `alpha_bar_t`, with `alpha_bar_0 = 1`.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        if t > self.len() {
            bail!("step t must run from 0 to T = {}, got {t}", self.len());
        }
        Ok(self.betas[..t].iter().map(|b| 1.0 - b).product())
    }

    /// Mean and variance of `q(x_t | x_0)`.
    pub fn q_mean_var(&self, x0: f64, t: usize) -> Result<(f64, f64)> {
        self.check(t)?;
        let ab = self.alpha_bar(t)?;
        Ok((ab.sqrt() * x0, 1.0 - ab))
    }

    /// `(c_t, c_0, beta_tilde_t)` of the posterior `q(x_{t-1} | x_t, x_0)`.
    pub fn posterior(&self, t: usize) -> Result<(f64, f64, f64)> {
        let (a, b) = (self.alpha(t)?, self.beta(t)?);
        let (ab, ab_prev) = (self.alpha_bar(t)?, self.alpha_bar(t - 1)?);
        Ok((
            a.sqrt() * (1.0 - ab_prev) / (1.0 - ab),
            ab_prev.sqrt() * b / (1.0 - ab),
            (1.0 - ab_prev) * b / (1.0 - ab),
        ))
    }

    /// `(1 / sqrt(alpha_t), beta_t / sqrt(1 - alpha_bar_t))`: the reverse mean is
    /// `first * (x_t - second * eps_theta)`.
    pub fn reverse_mean_coeffs(&self, t: usize) -> Result<(f64, f64)> {
        let (a, b, ab) = (self.alpha(t)?, self.beta(t)?, self.alpha_bar(t)?);
        Ok((1.0 / a.sqrt(), b / (1.0 - ab).sqrt()))
    }

    /// Weight of `||eps - eps_theta||^2` in the variational bound's term `L_{t-1}` when the
    /// reverse variance is `sigma2`: `beta_t^2 / (2 sigma2 alpha_t (1 - alpha_bar_t))`.
    pub fn vlb_weight(&self, t: usize, sigma2: f64) -> Result<f64> {
        if sigma2.is_nan() || sigma2 <= 0.0 {
            bail!("the reverse variance must be positive, got {sigma2}");
        }
        let (a, b, ab) = (self.alpha(t)?, self.beta(t)?, self.alpha_bar(t)?);
        Ok(b * b / (2.0 * sigma2 * a * (1.0 - ab)))
    }

    /// Coefficients of the per-step noises `eps_1 .. eps_t` in `x_t` when the chain is unrolled:
    /// `x_t = sqrt(alpha_bar_t) x_0 + sum_s sqrt(beta_s) sqrt(alpha_{s+1} ... alpha_t) eps_s`.
    pub fn step_noise_coeffs(&self, t: usize) -> Result<Vec<f64>> {
        self.check(t)?;
        (1..=t)
            .map(|s| {
                let later: f64 = ((s + 1)..=t)
                    .map(|r| self.alpha(r))
                    .product::<Result<f64>>()?;
                Ok(self.beta(s)?.sqrt() * later.sqrt())
            })
            .collect()
    }

    /// The true reverse `q(x_{t-1} | x_t)` when the data is two equally likely points: a mixture
    /// of two Gaussians, one per data point, weighted by `q(x_0 | x_t)`.
    pub fn reverse_two_points(&self, xt: f64, t: usize, data: [f64; 2]) -> Result<[Component; 2]> {
        let (ct, c0, var) = self.posterior(t)?;
        let (mean_t, var_t) = (self.alpha_bar(t)?.sqrt(), 1.0 - self.alpha_bar(t)?);
        let lik = |x0: f64| (-(xt - mean_t * x0).powi(2) / (2.0 * var_t)).exp();
        let (l0, l1) = (lik(data[0]), lik(data[1]));
        let comp = |l: f64, x0: f64| Component {
            weight: l / (l0 + l1),
            mean: ct * xt + c0 * x0,
            var,
        };
        Ok([comp(l0, data[0]), comp(l1, data[1])])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ToyChain {
        ToyChain::new(&[0.1, 0.2]).unwrap()
    }

    #[test]
    fn alphas_by_hand() {
        let c = chain();
        assert!((c.alpha(1).unwrap() - 0.9).abs() < 1e-15);
        assert!((c.alpha(2).unwrap() - 0.8).abs() < 1e-15);
        assert!((c.alpha_bar(2).unwrap() - 0.72).abs() < 1e-15);
        assert_eq!(c.alpha_bar(0).unwrap(), 1.0);
        assert!(c.alpha(0).is_err() && c.alpha(3).is_err());
    }

    #[test]
    fn q_x2_given_x0_equal_2() {
        // mean = 2 sqrt(0.72) = 1.697056, variance = 0.28.
        let (m, v) = chain().q_mean_var(2.0, 2).unwrap();
        assert!((m - 2.0 * 0.72f64.sqrt()).abs() < 1e-15);
        assert!((m - 1.697056).abs() < 1e-6);
        assert!((v - 0.28).abs() < 1e-15);
    }

    #[test]
    fn posterior_at_step_2_by_hand() {
        // c_t = sqrt(0.8) * 0.1 / 0.28 = 0.319438, c_0 = sqrt(0.9) * 0.2 / 0.28 = 0.677631,
        // beta_tilde = 0.1 * 0.2 / 0.28 = 1/14 = 0.0714286.
        let (ct, c0, v) = chain().posterior(2).unwrap();
        assert!((ct - 0.8f64.sqrt() * 0.1 / 0.28).abs() < 1e-15);
        assert!((c0 - 0.9f64.sqrt() * 0.2 / 0.28).abs() < 1e-15);
        assert!((v - 1.0 / 14.0).abs() < 1e-15);
        assert!((ct - 0.319438).abs() < 1e-6 && (c0 - 0.677631).abs() < 1e-6);
        // At t = 1 the posterior is a point mass at x_0.
        let (ct, c0, v) = chain().posterior(1).unwrap();
        assert!(ct.abs() < 1e-15 && (c0 - 1.0).abs() < 1e-15 && v.abs() < 1e-15);
    }

    #[test]
    fn posterior_is_the_product_of_the_two_gaussians() {
        // Independent check: multiply N(x_t; sqrt(a) x, beta) and N(x; sqrt(ab_prev) x_0,
        // 1 - ab_prev) as functions of x; precision and mean by completing the square.
        let c = chain();
        let (x0, xt) = (2.0, 0.7);
        let (a, b, abp) = (0.8f64, 0.2, 0.9);
        let prec = a / b + 1.0 / (1.0 - abp);
        let mean = (a.sqrt() * xt / b + abp.sqrt() * x0 / (1.0 - abp)) / prec;
        let (ct, c0, v) = c.posterior(2).unwrap();
        assert!((v - 1.0 / prec).abs() < 1e-14);
        assert!((ct * xt + c0 * x0 - mean).abs() < 1e-14);
    }

    #[test]
    fn reverse_mean_coefficient() {
        // Correct: beta_2 / sqrt(1 - alpha_bar_2) = 0.2 / sqrt(0.28) = 0.377964.
        // With sqrt(1 - alpha_2) instead: 0.2 / sqrt(0.2) = 0.447214.
        let (inv, coeff) = chain().reverse_mean_coeffs(2).unwrap();
        assert!((inv - 1.0 / 0.8f64.sqrt()).abs() < 1e-15);
        assert!((coeff - 0.2 / 0.28f64.sqrt()).abs() < 1e-15);
        assert!((coeff - 0.377964).abs() < 1e-6);
        assert!((0.2 / 0.2f64.sqrt() - 0.447214).abs() < 1e-6);
        // The reverse mean with the true noise recovers the posterior mean.
        let c = chain();
        let (x0, eps) = (2.0, -0.3);
        let (m, v) = c.q_mean_var(x0, 2).unwrap();
        let xt = m + v.sqrt() * eps;
        let (ct, c0, _) = c.posterior(2).unwrap();
        assert!((inv * (xt - coeff * eps) - (ct * xt + c0 * x0)).abs() < 1e-14);
    }

    #[test]
    fn vlb_weights() {
        // The weight read off the bound's term itself: KL(q(x_1 | x_2, x_0) || N(mu_theta, sigma2))
        // less the same KL with the mean set right, over the squared noise error, for one draw.
        use crate::theory::gaussian::kl_normal;
        let c = chain();
        let (x0, eps, eps_theta) = (2.0, -0.3, 0.5);
        let (m, v) = c.q_mean_var(x0, 2).unwrap();
        let xt = m + v.sqrt() * eps;
        let (ct, c0, beta_tilde) = c.posterior(2).unwrap();
        let (inv, coeff) = c.reverse_mean_coeffs(2).unwrap();
        let (mu_q, mu_p) = (ct * xt + c0 * x0, inv * (xt - coeff * eps_theta));
        for sigma2 in [beta_tilde, 0.2, 0.05] {
            let kl = kl_normal(mu_q, beta_tilde, mu_p, sigma2).unwrap()
                - kl_normal(mu_q, beta_tilde, mu_q, sigma2).unwrap();
            let w = c.vlb_weight(2, sigma2).unwrap();
            assert!(
                (w - kl / (eps - eps_theta).powi(2)).abs() < 1e-12 * w,
                "{sigma2}"
            );
        }
        // By hand, the values the page states:
        // sigma^2 = beta_tilde_2 = 1/14: 0.04 / (2/14 * 0.8 * 0.28) = 1.25.
        // sigma^2 = beta_2 = 0.2: 0.04 / (0.4 * 0.8 * 0.28) = 0.446429.
        assert!((c.vlb_weight(2, 1.0 / 14.0).unwrap() - 1.25).abs() < 1e-12);
        assert!((c.vlb_weight(2, 0.2).unwrap() - 0.446429).abs() < 1e-6);
    }

    #[test]
    fn total_noise_mixes_both_steps() {
        // x_2 = sqrt(0.72) x_0 + sqrt(0.1 * 0.8) eps_1 + sqrt(0.2) eps_2.
        let c = chain().step_noise_coeffs(2).unwrap();
        assert!((c[0] - 0.08f64.sqrt()).abs() < 1e-15 && (c[1] - 0.2f64.sqrt()).abs() < 1e-15);
        assert!((c[0] * c[0] + c[1] * c[1] - 0.28).abs() < 1e-15);
        // eps = (c_1 eps_1 + c_2 eps_2) / sqrt(0.28): weights 0.534522 and 0.845154.
        let (w1, w2) = (c[0] / 0.28f64.sqrt(), c[1] / 0.28f64.sqrt());
        assert!((w1 - 0.534522).abs() < 1e-6 && (w2 - 0.845154).abs() < 1e-6);
    }

    #[test]
    fn true_reverse_is_a_mixture_not_a_gaussian() {
        // Data {-1, +1}, x_2 = 0: equal weights, means -+0.677631, variance 1/14. Two equal
        // Gaussians make a bimodal mixture when their means are more than 2 sd apart.
        let [a, b] = chain().reverse_two_points(0.0, 2, [-1.0, 1.0]).unwrap();
        assert!((a.weight - 0.5).abs() < 1e-15 && (b.weight - 0.5).abs() < 1e-15);
        assert!((b.mean - 0.677631).abs() < 1e-6 && (a.mean + 0.677631).abs() < 1e-6);
        let separation = (b.mean - a.mean) / a.var.sqrt();
        assert!((separation - 5.0709).abs() < 1e-4, "{separation}");
        assert!(separation > 2.0);
    }

    #[test]
    fn bad_betas_are_errors() {
        assert!(ToyChain::new(&[]).is_err());
        assert!(ToyChain::new(&[0.1, 1.0]).is_err());
        assert!(chain().vlb_weight(2, 0.0).is_err());
    }
}
