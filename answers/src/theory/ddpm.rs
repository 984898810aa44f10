//! Closed-form DDPM quantities behind `answers/ddpm-math.md`, in plain f64.
//!
//! Timesteps use the notebook's indexing: `t = 0..T-1`, `B[t]` is the variance added by step `t`,
//! `a_bar[t] = (1 - B[0]) * ... * (1 - B[t])`, and `x_t` is the image after `t + 1` noising steps
//! (the clean image `x_0` of `q(x_0, t)` has no index of its own).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use diffusion::schedule::{linspace, ScheduleValues};
use diffusion::Schedule;

/// The course schedule's arrays: `B = linspace(0.0001, 0.02, 150)` and what follows from it.
pub fn course_values() -> Result<ScheduleValues> {
    Ok(Schedule::course(&Device::Cpu)?.values().clone())
}

/// The cosine schedule's arrays for `steps` timesteps (`Schedule::cosine`).
pub fn cosine_values(steps: usize) -> Result<ScheduleValues> {
    Ok(Schedule::cosine(steps, &Device::Cpu)?.values().clone())
}

fn at(values: &[f64], t: usize, name: &str) -> Result<f64> {
    match values.get(t) {
        Some(v) => Ok(*v),
        None => bail!(
            "timestep {t} is out of range for {name}: timesteps run from 0 to {}",
            values.len().saturating_sub(1)
        ),
    }
}

/// `a_bar[t]`, the share of the variance of `x_t` that is signal.
pub fn a_bar(v: &ScheduleValues, t: usize) -> Result<f64> {
    at(&v.a_bar, t, "a_bar")
}

/// `a_bar[t - 1]`, with `a_bar[-1] = 1` (the clean image).
pub fn a_bar_prev(v: &ScheduleValues, t: usize) -> Result<f64> {
    at(&v.a_bar, t, "a_bar")?;
    Ok(if t == 0 { 1.0 } else { v.a_bar[t - 1] })
}

/// `B[t] = start + (end - start) * t / (T - 1)`, the t-th value of `linspace(start, end, T)`.
pub fn linear_beta(t: usize, steps: usize, start: f64, end: f64) -> Result<f64> {
    if steps < 2 || t >= steps {
        bail!("need T >= 2 and 0 <= t < T, got t = {t}, T = {steps}");
    }
    Ok(start + (end - start) * t as f64 / (steps - 1) as f64)
}

/// Arithmetic mean of a slice (`0` for an empty one).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// `sqrt(a_bar[t])`: the factor on `x_0` in `x_t` (the amplitude of the signal left).
pub fn signal_amplitude(v: &ScheduleValues, t: usize) -> Result<f64> {
    Ok(a_bar(v, t)?.sqrt())
}

/// `1 - a_bar[t]`: the share of the variance of `x_t` that is noise.
pub fn noise_share(v: &ScheduleValues, t: usize) -> Result<f64> {
    Ok(1.0 - a_bar(v, t)?)
}

/// Signal-to-noise ratio `SNR(t) = a_bar[t] / (1 - a_bar[t])`.
pub fn snr(v: &ScheduleValues, t: usize) -> Result<f64> {
    let ab = a_bar(v, t)?;
    Ok(ab / (1.0 - ab))
}

/// `ln SNR(from) - ln SNR(to)`: how far the log-SNR falls between two timesteps.
pub fn log_snr_drop(v: &ScheduleValues, from: usize, to: usize) -> Result<f64> {
    Ok(snr(v, from)?.ln() - snr(v, to)?.ln())
}

/// First `t` with `values[t] < level`, if any.
pub fn first_below(values: &[f64], level: f64) -> Option<usize> {
    values.iter().position(|x| *x < level)
}

/// Smallest `T` (up to `max_steps`) for which `linspace(start, end, T)` ends with
/// `a_bar[T-1] < level`.
pub fn min_linear_steps_below(start: f64, end: f64, level: f64, max_steps: usize) -> Option<usize> {
    (2..=max_steps).find(|&n| {
        linspace(start, end, n)
            .iter()
            .map(|b| 1.0 - b)
            .product::<f64>()
            < level
    })
}

/// How one forward step combines `x_{t-1}` with fresh noise `e ~ N(0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRule {
    /// `x_t = sqrt(1 - B_t) x_{t-1} + sqrt(B_t) e` (the notebook's): `v -> (1 - B) v + B`.
    VariancePreserving,
    /// `x_t = x_{t-1} + sqrt(B_t) e`: `v -> v + B`.
    Additive,
    /// `x_t = (1 - B_t) x_{t-1} + sqrt(B_t) e`: `v -> (1 - B)^2 v + B`.
    Shrink,
}

/// Variance of `x` after one step per beta, starting from variance `v0` (noise independent of `x`).
pub fn variance_after(betas: &[f64], v0: f64, rule: UpdateRule) -> f64 {
    betas.iter().fold(v0, |v, b| match rule {
        UpdateRule::VariancePreserving => (1.0 - b) * v + b,
        UpdateRule::Additive => v + b,
        UpdateRule::Shrink => (1.0 - b).powi(2) * v + b,
    })
}

/// Fixed point of `v -> (1 - B)^2 v + B`: `B / (1 - (1 - B)^2) = 1 / (2 - B)`.
pub fn shrink_fixed_point(beta: f64) -> f64 {
    1.0 / (2.0 - beta)
}

/// `(sqrt(1 - B), sqrt(B))`: the factors on `x_{t-1}` and on the noise in one forward step.
pub fn one_step_coeffs(beta: f64) -> (f64, f64) {
    ((1.0 - beta).sqrt(), beta.sqrt())
}

/// `(sqrt_a_inv[t], pred_noise_coeff[t]) = (1 / sqrt(a[t]), (1 - a[t]) / sqrt(1 - a_bar[t]))`.
pub fn reverse_mean_coeffs(v: &ScheduleValues, t: usize) -> Result<(f64, f64)> {
    Ok((
        at(&v.sqrt_a_inv, t, "sqrt_a_inv")?,
        at(&v.pred_noise_coeff, t, "pred_noise_coeff")?,
    ))
}

/// The reverse mean for one pixel: `u_t = sqrt_a_inv[t] * (x_t - pred_noise_coeff[t] * e_t)`.
pub fn reverse_mean(v: &ScheduleValues, t: usize, x_t: f64, e_t: f64) -> Result<f64> {
    let (s, c) = reverse_mean_coeffs(v, t)?;
    Ok(s * (x_t - c * e_t))
}

/// Posterior mean coefficients of `q(x_{t-1} | x_t, x_0)` on `(x_0, x_t)`:
/// `(sqrt(a_bar[t-1]) B[t] / (1 - a_bar[t]), sqrt(a[t]) (1 - a_bar[t-1]) / (1 - a_bar[t]))`.
pub fn posterior_mean_coeffs(v: &ScheduleValues, t: usize) -> Result<(f64, f64)> {
    let ab = a_bar(v, t)?;
    let prev = a_bar_prev(v, t)?;
    let b = v.b[t];
    Ok((
        prev.sqrt() * b / (1.0 - ab),
        v.a[t].sqrt() * (1.0 - prev) / (1.0 - ab),
    ))
}

/// Posterior variance `B~[t] = (1 - a_bar[t-1]) / (1 - a_bar[t]) * B[t]` (`0` at `t = 0`).
pub fn posterior_variance(v: &ScheduleValues, t: usize) -> Result<f64> {
    let ab = a_bar(v, t)?;
    Ok((1.0 - a_bar_prev(v, t)?) / (1.0 - ab) * v.b[t])
}

/// Standard deviation of the noise the notebook's `reverse_q` adds at `t`:
/// `sqrt(B[t-1])` for `t >= 1`, `0` at `t = 0`.
pub fn notebook_reverse_noise_std(v: &ScheduleValues, t: usize) -> Result<f64> {
    at(&v.b, t, "B")?;
    Ok(if t == 0 { 0.0 } else { v.b[t - 1].sqrt() })
}

/// Weight of `|e - e_theta|^2` in the ELBO term of step `t`:
/// `w = B[t]^2 / (2 sigma2 a[t] (1 - a_bar[t]))`, with `sigma2` the reverse-step variance.
pub fn elbo_weight(v: &ScheduleValues, t: usize, sigma2: f64) -> Result<f64> {
    let ab = a_bar(v, t)?;
    if sigma2.is_nan() || sigma2 <= 0.0 {
        bail!("the reverse-step variance must be positive, got {sigma2}");
    }
    Ok(v.b[t].powi(2) / (2.0 * sigma2 * v.a[t] * (1.0 - ab)))
}

/// Weight that an unweighted image loss `|x_0 - x0_hat|^2` puts on the noise error
/// `|e - e_hat|^2`: `(1 - a_bar[t]) / a_bar[t] = 1 / SNR(t)`.
pub fn x0_loss_weight(v: &ScheduleValues, t: usize) -> Result<f64> {
    Ok(1.0 / snr(v, t)?)
}

/// KL divergence, per pixel, from `q(x_{T-1} | x_0) = N(sqrt(ab) x0, 1 - ab)` to `N(0, 1)`:
/// `(ab x0^2 - ab - ln(1 - ab)) / 2`.
pub fn prior_kl(a_bar_last: f64, x0: f64) -> f64 {
    0.5 * (a_bar_last * x0 * x0 - a_bar_last - (1.0 - a_bar_last).ln())
}

/// Noising steps needed to reach timestep `t` one step at a time: `t + 1`, by the indexing
/// (a definition; the tests count the steps against the schedule).
pub fn sequential_noising_steps(t: usize) -> usize {
    t + 1
}

/// Mean of `t + 1` for `t` uniform on `0..T-1`: `(T + 1) / 2`.
pub fn mean_sequential_noising_steps(steps: usize) -> f64 {
    (steps as f64 + 1.0) / 2.0
}

/// Network evaluations to draw one sample with the DDPM sampler: one per timestep, `T` (a
/// definition; [`counted_network_calls`] counts them on the crate's sampler).
pub fn sampling_network_calls(steps: usize) -> usize {
    steps
}

/// A network that predicts zero noise and counts how often it is called.
struct CountingNet {
    steps: usize,
    calls: std::cell::Cell<usize>,
}

impl diffusion::Network for CountingNet {
    type Config = usize;

    fn build(steps: usize, _: candle_nn::VarBuilder) -> Result<Self> {
        Ok(Self {
            steps,
            calls: 0.into(),
        })
    }

    fn config(&self) -> usize {
        self.steps
    }

    fn image_shape(&self) -> [usize; 3] {
        [1, 4, 4]
    }
}

impl diffusion::NoisePredictor for CountingNet {
    fn steps(&self) -> usize {
        self.steps
    }

    fn predict_noise(&self, x_t: &Tensor, _: &Tensor, _: bool) -> Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        Ok(x_t.zeros_like()?)
    }
}

/// The network calls the crate itself makes with a schedule of `steps` timesteps, counted:
/// `(one training loss of a batch of `batch` images, one sampling run of `batch` images)`.
pub fn counted_network_calls(steps: usize, batch: usize) -> Result<(usize, usize)> {
    let dev = Device::Cpu;
    let schedule = Schedule::linear(steps, 0.0001, 0.02, &dev)?;
    let net = CountingNet {
        steps,
        calls: 0.into(),
    };
    let mut rng = diffusion::Rng::new(0);
    let x_0 = rng.randn((batch, 1, 4, 4), &dev)?;
    let t = rng.timesteps(batch, steps, &dev)?;
    diffusion::get_loss(&net, &schedule, &x_0, &t, &mut rng)?;
    let training = net.calls.replace(0);
    diffusion::sample_images(&net, &schedule, batch, batch, &mut rng)?;
    Ok((training, net.calls.get()))
}

/// The network calls the crate's DDIM sampler (`diffusion::sample_ddim`, deterministic) makes to
/// draw one image when it visits `visited` of a schedule's `steps` timesteps, counted.
pub fn counted_ddim_calls(steps: usize, visited: usize) -> Result<usize> {
    let dev = Device::Cpu;
    let schedule = Schedule::linear(steps, 0.0001, 0.02, &dev)?;
    let net = CountingNet {
        steps,
        calls: 0.into(),
    };
    diffusion::sample_ddim(&net, &schedule, 1, visited, &mut diffusion::Rng::new(0))?;
    Ok(net.calls.get())
}

/// Optimizer steps per epoch with the last partial batch dropped: `floor(images / batch)`.
pub fn steps_per_epoch(images: usize, batch: usize) -> Result<usize> {
    if batch == 0 {
        bail!("the batch size must be at least 1");
    }
    Ok(images / batch)
}

/// `(image, t)` pairs seen in training: `floor(images / batch) * batch * epochs`.
pub fn training_examples(images: usize, batch: usize, epochs: usize) -> Result<usize> {
    Ok(steps_per_epoch(images, batch)? * batch * epochs)
}

/// The network's time input `t / T`.
pub fn normalized_timestep(t: usize, steps: usize) -> Result<f64> {
    if t >= steps {
        bail!(
            "timestep {t} is out of range: timesteps run from 0 to T-1 = {}",
            steps.saturating_sub(1)
        );
    }
    Ok(t as f64 / steps as f64)
}

/// Standard deviation of `t` uniform on `0..T-1`: `sqrt((T^2 - 1) / 12)`.
pub fn uniform_timestep_std(steps: usize) -> f64 {
    let n = steps as f64;
    ((n * n - 1.0) / 12.0).sqrt()
}

/// The timesteps `0, 1, ..., T-1` as numbers.
pub fn timesteps(steps: usize) -> Vec<f64> {
    (0..steps).map(|t| t as f64).collect()
}

/// Sample standard deviation `sqrt(sum (x - mean)^2 / (n - 1))` (0 for fewer than 2 values).
pub fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    let ss: f64 = values.iter().map(|x| (x - m).powi(2)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// Mean square of the values: the MSE of predicting zero noise.
pub fn mean_square(values: &[f64]) -> f64 {
    mean(&values.iter().map(|x| x * x).collect::<Vec<_>>())
}

/// Frequencies of the sinusoidal time embedding: `exp(-ln(10000) k / (half - 1))`, `k = 0..half`.
pub fn sinusoidal_frequencies(half_dim: usize) -> Result<Vec<f64>> {
    if half_dim < 2 {
        bail!("the sinusoidal embedding needs half_dim >= 2, got {half_dim}");
    }
    let step = 10000f64.ln() / (half_dim - 1) as f64;
    Ok((0..half_dim).map(|k| (-step * k as f64).exp()).collect())
}

/// Shape of an elementwise product under broadcasting (align on the right; a 1 stretches).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < n {
            1
        } else {
            s[i + s.len() - n]
        }
    };
    (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => bail!(
                "shapes {a:?} and {b:?} do not broadcast: {x} vs {y} at dimension {i} (from the left)"
            ),
        })
        .collect()
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Factor turning predicted noise into the score: `score = -e_hat / sqrt(1 - a_bar[t])`;
/// returns `1 / sqrt(1 - a_bar[t])`.
pub fn score_scale(v: &ScheduleValues, t: usize) -> Result<f64> {
    Ok(1.0 / noise_share(v, t)?.sqrt())
}

/// Data `x_0 ~ N(0, s2)` (one pixel): the marginal score of `x_t`, `-x_t / (a_bar s2 + 1 - a_bar)`.
pub fn gaussian_data_score(a_bar: f64, s2: f64, x_t: f64) -> f64 {
    -x_t / (a_bar * s2 + 1.0 - a_bar)
}

/// Data `x_0 ~ N(0, s2)`: the best noise prediction `E[e | x_t] = sqrt(1 - a_bar) x_t / var(x_t)`.
pub fn gaussian_data_expected_noise(a_bar: f64, s2: f64, x_t: f64) -> f64 {
    (1.0 - a_bar).sqrt() * x_t / (a_bar * s2 + 1.0 - a_bar)
}

/// Timestep whose `x_t`, divided by `sqrt(a_bar[t])`, carries Gaussian noise of std `sigma`
/// around the clean image: the `t` with `a_bar[t]` closest to `1 / (1 + sigma^2)`.
pub fn matching_timestep(v: &ScheduleValues, sigma: f64) -> Result<usize> {
    if sigma.is_nan() || sigma <= 0.0 {
        bail!("the noise std must be positive, got {sigma}");
    }
    let target = 1.0 / (1.0 + sigma * sigma);
    let dist = |t: &usize| (v.a_bar[*t] - target).abs();
    match (0..v.a_bar.len()).min_by(|x, y| dist(x).total_cmp(&dist(y))) {
        Some(t) => Ok(t),
        None => bail!("the schedule is empty"),
    }
}

/// Standard deviation of the noise of a Langevin step `x + d * score + sqrt(2 d) z`: `sqrt(2 d)`.
pub fn langevin_noise_std(step: f64) -> f64 {
    (2.0 * step).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: f64 = 0.0001;
    const END: f64 = 0.02;
    const T: usize = 150;
    /// Spacing of the linear betas: 0.0199 / 149.
    const D: f64 = 0.0199 / 149.0;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// `ln a_bar[n-1]` for the linear betas `START + D k`, `k = 0..n-1`, from the series
    /// `ln(1 - x) = -x - x^2/2 - x^3/3 - ...` with power sums of the arithmetic sequence worked
    /// out in closed form, independent of the schedule's running product.
    fn ln_a_bar_series(n: usize) -> f64 {
        let nf = n as f64;
        // sum k^j for k = 0..n-1, j = 0..4 (Faulhaber)
        let s0 = nf;
        let s1 = nf * (nf - 1.0) / 2.0;
        let s2 = (nf - 1.0) * nf * (2.0 * nf - 1.0) / 6.0;
        let s3 = s1 * s1;
        let m = nf - 1.0;
        let s4 = m * (m + 1.0) * (2.0 * m + 1.0) * (3.0 * m * m + 3.0 * m - 1.0) / 30.0;
        let (a, d) = (START, D);
        let p1 = a * s0 + d * s1;
        let p2 = a * a * s0 + 2.0 * a * d * s1 + d * d * s2;
        let p3 = a.powi(3) * s0 + 3.0 * a * a * d * s1 + 3.0 * a * d * d * s2 + d.powi(3) * s3;
        let p4 = a.powi(4) * s0
            + 4.0 * a.powi(3) * d * s1
            + 6.0 * a * a * d * d * s2
            + 4.0 * a * d.powi(3) * s3
            + d.powi(4) * s4;
        // the x^5 tail is below 150 * 0.02^5 / 5 = 1e-7 in total; half of it is a fair estimate
        -(p1 + p2 / 2.0 + p3 / 3.0 + p4 / 4.0)
    }

    #[test]
    fn linear_beta_closed_form() {
        let v = course_values().unwrap();
        // B[t] = start + (end - start) t / (T - 1), 0-indexed: B[0] = start, B[149] = end
        assert!(close(v.b[0], 0.0001, 1e-15));
        assert!(close(v.b[1], 0.0001 + 0.0199 / 149.0, 1e-15));
        assert!(close(v.b[1], 0.000_233_557_046_979_865_8, 1e-15));
        assert!(close(v.b[148], 0.02 - 0.0199 / 149.0, 1e-15));
        assert!(close(v.b[149], 0.02, 1e-15));
        for t in 0..T {
            assert!(close(linear_beta(t, T, START, END).unwrap(), v.b[t], 1e-15));
        }
        assert!(linear_beta(150, T, START, END).is_err());
    }

    #[test]
    fn one_indexed_beta_formulas() {
        let v = course_values().unwrap();
        // The review's notation counts steps s = 1..T (beta_1, ..., beta_T), so beta_s is the
        // array's B[s - 1]. Its Q10 comment start + (end - start)(s - 1)/(T - 1) is right there:
        // beta_1 = start, beta_T = end.
        let q10 = |s: usize| START + (END - START) * (s as f64 - 1.0) / (T - 1) as f64;
        for s in 1..=T {
            assert!(close(q10(s), v.b[s - 1], 1e-15), "s = {s}");
        }
        assert!(close(q10(1), 0.0001, 1e-15) && close(q10(T), 0.02, 1e-15));
        // Its Q3 formula (end - start)/(T - 1) s + start, in the same notation, is one step ahead:
        // beta_1 = start + D = 0.0002336 (the array's B[1]) and beta_150 = end + D = 0.0201336,
        // beyond the end value of the linspace.
        let q3 = |s: usize| (END - START) / (T - 1) as f64 * s as f64 + START;
        assert!(close(q3(1), 0.0001 + D, 1e-15) && close(q3(1), v.b[1], 1e-15));
        assert!(close(q3(1), 0.000_233_6, 5e-8));
        assert!(close(q3(T), 0.02 + D, 1e-15) && close(q3(T), 0.020_133_6, 5e-8));
        assert!(q3(T) > v.b.iter().cloned().fold(f64::MIN, f64::max));
        // read as the 0-indexed array, the Q3 formula is the array's own: B[t] = q3(t)
        for t in 0..T {
            assert!(close(q3(t), v.b[t], 1e-15));
        }
    }

    #[test]
    fn mean_beta_is_midpoint() {
        let v = course_values().unwrap();
        // mean of an arithmetic sequence = (first + last) / 2 = 0.01005; sum = 150 * 0.01005
        assert!(close(mean(&v.b), 0.01005, 1e-15));
        assert!(close(v.b.iter().sum::<f64>(), 1.5075, 1e-12));
        // not 1 / T
        assert!((mean(&v.b) - 1.0 / 150.0).abs() > 0.003);
    }

    #[test]
    fn linear_beta_endpoints_do_not_depend_on_t() {
        // the DDPM paper's T = 1000 schedule has the same endpoints and mean 0.01005, not 1/T
        let b1000 = linspace(START, END, 1000);
        assert!(close(b1000[0], 0.0001, 1e-15) && close(b1000[999], 0.02, 1e-15));
        assert!(close(mean(&b1000), 0.01005, 1e-12));
        let b5 = linspace(START, END, 5);
        assert!(close(mean(&b5), 0.01005, 1e-12));
    }

    #[test]
    fn a_bar_last_course() {
        let v = course_values().unwrap();
        let series = ln_a_bar_series(T).exp();
        assert!(close(a_bar(&v, 149).unwrap(), series, 1e-7));
        // independent float64 product from the definitions (Python): 0.21921859918582318
        assert!(close(a_bar(&v, 149).unwrap(), 0.219_218_599_185_823, 1e-12));
        assert!(close(
            signal_amplitude(&v, 149).unwrap(),
            0.468_207_858_953_5,
            1e-9
        ));
        assert!(close(
            noise_share(&v, 149).unwrap(),
            0.780_781_400_814_18,
            1e-9
        ));
        assert!(a_bar(&v, 150).is_err());
    }

    #[test]
    fn a_bar_after_100_steps() {
        let v = course_values().unwrap();
        // after 100 steps = index 99
        assert!(close(
            a_bar(&v, 99).unwrap(),
            ln_a_bar_series(100).exp(),
            1e-8
        ));
        assert!(close(a_bar(&v, 99).unwrap(), 0.509_603_312_361_27, 1e-10));
        assert!(close(
            a_bar(&v, 100).unwrap(),
            ln_a_bar_series(101).exp(),
            1e-8
        ));
        assert!(close(
            signal_amplitude(&v, 99).unwrap(),
            0.509_603_312_361_27f64.sqrt(),
            1e-12
        ));
    }

    #[test]
    fn first_alphas() {
        let v = course_values().unwrap();
        // a[t] = 1 - B[t] by hand
        assert!(close(v.a[0], 0.9999, 1e-15));
        assert!(close(v.a[1], 1.0 - 0.0001 - D, 1e-15));
        assert!(close(v.a[2], 1.0 - 0.0001 - 2.0 * D, 1e-15));
        assert!(close(v.a[149], 0.98, 1e-15));
        // a_bar as explicit products
        assert!(close(v.a_bar[1], 0.9999 * (1.0 - 0.0001 - D), 1e-15));
        assert!(close(
            v.a_bar[2],
            0.9999 * (1.0 - 0.0001 - D) * (1.0 - 0.0001 - 2.0 * D),
            1e-15
        ));
        assert!(close(v.a_bar[1], 0.999_666_466, 1e-9));
        assert!(close(v.a_bar[2], 0.999_299_475, 1e-9));
    }

    #[test]
    fn erosion_analogy() {
        // ERRATA.md's number, plain arithmetic (no crate code): keeping 99.9% per day for 100
        // days leaves 0.999^100 = e^(100 ln 0.999)
        let left = 0.999f64.powi(100);
        assert!(close(
            left,
            (100.0 * (-0.001f64 - 0.0000005 - 1.0 / 3.0e9)).exp(),
            1e-9
        ));
        assert!(close(left, 0.904_792, 1e-6));
    }

    #[test]
    fn snr_course_endpoints() {
        let v = course_values().unwrap();
        // SNR(0) = a0 / (1 - a0) = 0.9999 / 0.0001
        assert!(close(snr(&v, 0).unwrap(), 9999.0, 1e-6));
        let ab = 0.219_218_599_185_823;
        assert!(close(snr(&v, 149).unwrap(), ab / (1.0 - ab), 1e-10));
        assert!(close(snr(&v, 149).unwrap(), 0.280_768_2, 1e-7));
        // SNR falls below 1 exactly where a_bar falls below 1/2
        assert_eq!(first_below(&v.a_bar, 0.5), Some(101));
        assert!(v.a_bar[100] > 0.5 && v.a_bar[101] < 0.5);
        assert_eq!(first_below(&v.a_bar, 0.1), None);
    }

    #[test]
    fn noise_level_grows_with_t() {
        let v = course_values().unwrap();
        assert!(v.a_bar.windows(2).all(|w| w[1] < w[0]));
        assert!(snr(&v, 1).unwrap() > 2000.0);
        assert!(snr(&v, 149).unwrap() < 0.3);
    }

    #[test]
    fn min_linear_steps_for_small_a_bar() {
        let n = min_linear_steps_below(START, END, 0.01, 2000).unwrap();
        assert_eq!(n, 456);
        // check with the series instead of the product: 455 steps stay above, 456 go below
        // ln a_bar = sum ln(1 - b_k) = -sum (b + b^2/2 + ... + b^5/5), b_k = START + d k
        let series = |n: usize| {
            let d = (END - START) / (n - 1) as f64;
            (0..n)
                .map(|k| {
                    let b = START + d * k as f64;
                    -(b + b * b / 2.0 + b.powi(3) / 3.0 + b.powi(4) / 4.0 + b.powi(5) / 5.0)
                })
                .sum::<f64>()
        };
        assert!(series(455).exp() > 0.01 && series(456).exp() < 0.01);
        assert_eq!(min_linear_steps_below(START, END, 0.1, 2000), Some(228));
    }

    #[test]
    fn additive_rule_variance() {
        let v = course_values().unwrap();
        // v -> v + B: v_T = v0 + sum B = 1 + 1.5075
        let var = variance_after(&v.b, 1.0, UpdateRule::Additive);
        assert!(close(var, 2.5075, 1e-12));
        // the additive chain also has a closed form: x_t = x_0 + sqrt(sum B) e
        assert!(close(
            variance_after(&v.b, 0.3, UpdateRule::Additive),
            0.3 + 1.5075,
            1e-12
        ));
    }

    #[test]
    fn shrink_rule_variance() {
        let v = course_values().unwrap();
        let var = variance_after(&v.b, 1.0, UpdateRule::Shrink);
        // unrolled sum instead of the recursion:
        // v_T = prod (1 - B_k)^2 + sum_j B_j prod_{k > j} (1 - B_k)^2
        let n = v.b.len();
        let tail = |j: usize| (j + 1..n).map(|k| (1.0 - v.b[k]).powi(2)).product::<f64>();
        let unrolled = v.b.iter().map(|b| (1.0 - b).powi(2)).product::<f64>()
            + (0..n).map(|j| v.b[j] * tail(j)).sum::<f64>();
        assert!(close(var, unrolled, 1e-12));
        assert!(close(var, 0.528_040_892, 1e-8));
        assert!(var > 0.5);
        // with a constant beta the variance settles at 1 / (2 - B), not at 0
        let constant = vec![0.02; 5000];
        let settled = variance_after(&constant, 1.0, UpdateRule::Shrink);
        assert!(close(settled, 1.0 / 1.98, 1e-12));
        // The closed form against the rule iterated to convergence, from above and from below.
        for v0 in [0.0, 1.0] {
            let iterated = variance_after(&[0.02; 5000], v0, UpdateRule::Shrink);
            assert!(
                close(shrink_fixed_point(0.02), iterated, 1e-12),
                "{iterated}"
            );
        }
    }

    #[test]
    fn variance_preserving_rule() {
        let v = course_values().unwrap();
        assert!(close(
            variance_after(&v.b, 1.0, UpdateRule::VariancePreserving),
            1.0,
            1e-12
        ));
        // from v0: closed form a_bar v0 + (1 - a_bar)
        let ab = v.a_bar[149];
        let got = variance_after(&v.b, 0.25, UpdateRule::VariancePreserving);
        assert!(close(got, ab * 0.25 + 1.0 - ab, 1e-12));
    }

    #[test]
    fn one_step_coefficients() {
        let (keep, noise) = one_step_coeffs(0.0001);
        // sqrt(1 - x) = 1 - x/2 - x^2/8 - ...
        assert!(close(keep, 1.0 - 0.00005 - 0.0001f64.powi(2) / 8.0, 1e-12));
        assert!(close(keep, 0.99995, 1e-8));
        assert!(close(noise, 0.01, 1e-15));
        let (keep, noise) = one_step_coeffs(0.02);
        // the factors of the crate's forward step, read off with (x = 1, no noise), (x = 0, e = 1)
        let (one, zero) = (
            Tensor::ones(1, candle_core::DType::F64, &Device::Cpu).unwrap(),
            Tensor::zeros(1, candle_core::DType::F64, &Device::Cpu).unwrap(),
        );
        let step = |x: &Tensor, e: &Tensor| {
            diffusion::forward_step(x, 0.02, e)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[0]
        };
        assert!(close(step(&one, &zero), keep, 1e-15));
        assert!(close(step(&zero, &one), noise, 1e-15));
        assert!(close(keep, 0.989_949_5, 1e-7));
        assert!(close(noise, 0.141_421_36, 1e-8));
        // a step keeping 99.9% of the variance keeps sqrt(0.999) of the amplitude
        let (keep, _) = one_step_coeffs(0.001);
        assert!(close(keep, 1.0 - 0.0005 - 0.001f64.powi(2) / 8.0, 1e-9));
        assert!(close(keep, 0.9995, 5e-7));
    }

    #[test]
    fn reverse_coefficients() {
        let v = course_values().unwrap();
        let (s0, c0) = reverse_mean_coeffs(&v, 0).unwrap();
        // at t = 0: 1 - a_bar[0] = B[0], so the coefficient is B[0] / sqrt(B[0]) = sqrt(B[0])
        assert!(close(c0, 0.01, 1e-12));
        assert!(close(s0, 1.0 / 0.9999f64.sqrt(), 1e-15));
        assert!(close(s0, 1.000_05, 1e-7));
        let (s, c) = reverse_mean_coeffs(&v, 149).unwrap();
        assert!(close(s, 1.0 / 0.98f64.sqrt(), 1e-15));
        assert!(close(s, 1.010_152_5, 1e-7));
        let ab = 0.219_218_599_185_823f64;
        assert!(close(c, 0.02 / (1.0 - ab).sqrt(), 1e-12));
        assert!(close(c, 0.022_634_2, 1e-7));
        // the coefficient grows with t, so its spread is its last over its first value
        assert!(v.pred_noise_coeff.windows(2).all(|w| w[1] > w[0]));
        assert!(close(c / c0, 2.263_42, 1e-5));
        // share of the noise variance added by the last step: B / (1 - a_bar), not the coefficient
        // (ERRATA.md's rounding, plain arithmetic)
        assert!(close(0.02 / (1.0 - ab), 0.025_615_6, 1e-6));
    }

    #[test]
    fn posterior_mean_matches_noise_form() {
        let v = course_values().unwrap();
        // Bayes: mean = c0 x_0 + c1 x_t; with x_t = sqrt(ab) x_0 + sqrt(1 - ab) e this must equal
        // (x_t - pred_noise_coeff e) / sqrt(a) for every x_0 and e
        for &t in &[1usize, 10, 75, 149] {
            let (c0, c1) = posterior_mean_coeffs(&v, t).unwrap();
            for &(x0, e) in &[(0.7, -1.3), (-1.0, 0.4), (0.0, 2.0)] {
                let ab = v.a_bar[t];
                let x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * e;
                let bayes = c0 * x0 + c1 * x_t;
                assert!(close(bayes, reverse_mean(&v, t, x_t, e).unwrap(), 1e-12));
            }
        }
    }

    #[test]
    fn posterior_variance_is_precision_sum() {
        let v = course_values().unwrap();
        // Bayes: 1 / B~ = a[t] / B[t] + 1 / (1 - a_bar[t-1])
        for t in 1..T {
            let prec = v.a[t] / v.b[t] + 1.0 / (1.0 - v.a_bar[t - 1]);
            assert!(close(posterior_variance(&v, t).unwrap(), 1.0 / prec, 1e-15));
        }
        assert_eq!(posterior_variance(&v, 0).unwrap(), 0.0);
        assert!(close(
            posterior_variance(&v, 149).unwrap(),
            0.019_885_4,
            1e-7
        ));
        assert!(close(posterior_variance(&v, 1).unwrap(), 7.002_50e-5, 1e-9));
    }

    #[test]
    fn notebook_reverse_noise_std_uses_previous_beta() {
        let v = course_values().unwrap();
        assert_eq!(notebook_reverse_noise_std(&v, 0).unwrap(), 0.0);
        assert!(close(
            notebook_reverse_noise_std(&v, 1).unwrap(),
            0.01,
            1e-15
        ));
        // t = 149 uses B[148] = 0.02 - D, never B[149] = 0.02
        let s = notebook_reverse_noise_std(&v, 149).unwrap();
        assert!(close(s, (0.02 - D).sqrt(), 1e-15));
        assert!(close(s, 0.140_948_4, 1e-7));
        assert!((s - 0.02f64.sqrt()).abs() > 4e-4);
        assert!(notebook_reverse_noise_std(&v, 150).is_err());
    }

    /// The weight of `|e - e_theta|^2` read off the ELBO term itself, for one draw: the KL from
    /// the posterior `q(x_{t-1} | x_t, x_0)` (Bayes form, [`posterior_mean_coeffs`]) to the model's
    /// step `N(mu_theta, sigma2)` ([`reverse_mean`] with a wrong noise), less the same KL with the
    /// model's mean set right, divided by the squared noise error.
    fn weight_from_kl(v: &ScheduleValues, t: usize, sigma2: f64) -> f64 {
        use crate::theory::gaussian::kl_normal;
        let (x0, e, e_theta) = (0.7, -1.2, 0.4);
        let ab = v.a_bar[t];
        let x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * e;
        let (c0, c1) = posterior_mean_coeffs(v, t).unwrap();
        let mu_q = c0 * x0 + c1 * x_t;
        let mu_p = reverse_mean(v, t, x_t, e_theta).unwrap();
        // the posterior is a point mass at t = 0; any variance gives the same difference
        let s = if t == 0 {
            sigma2
        } else {
            posterior_variance(v, t).unwrap()
        };
        let kl =
            kl_normal(mu_q, s, mu_p, sigma2).unwrap() - kl_normal(mu_q, s, mu_q, sigma2).unwrap();
        kl / (e - e_theta).powi(2)
    }

    #[test]
    fn elbo_weight_falls_then_rises() {
        let v = course_values().unwrap();
        // The closed form against the KL it comes from, for both reverse variances.
        for t in [0usize, 1, 2, 10, 75, 134, 135, 148, 149] {
            let mut variances = vec![v.b[t]];
            if t > 0 {
                variances.push(posterior_variance(&v, t).unwrap());
            }
            for sigma2 in variances {
                let w = elbo_weight(&v, t, sigma2).unwrap();
                let kl = weight_from_kl(&v, t, sigma2);
                assert!(close(w, kl, 1e-9 * w), "t = {t}: {w} vs {kl}");
            }
        }
        // the prose's values (ddpm-math.md Q11), now checked against the KL above
        assert!(close(elbo_weight(&v, 0, v.b[0]).unwrap(), 0.500_05, 5e-6));
        assert!(close(elbo_weight(&v, 1, v.b[1]).unwrap(), 0.350_207, 1e-6));
        let last = elbo_weight(&v, 149, v.b[149]).unwrap();
        assert!(close(last, 0.013_069_06, 1e-8));
        // with the posterior variance the weight is larger at the start still
        let w1 = elbo_weight(&v, 1, posterior_variance(&v, 1).unwrap()).unwrap();
        assert!(close(w1, 1.168_06, 1e-5));
        assert!(w1 > elbo_weight(&v, 149, posterior_variance(&v, 149).unwrap()).unwrap());
        assert!(elbo_weight(&v, 1, 0.0).is_err());
        // Not monotone: read off the KL at every step, the weight with sigma^2 = B is smallest at
        // t = 134 and rises from there to t = 149; with sigma^2 = B~ it is smallest at t = 135.
        let argmin = |w: &[(usize, f64)]| {
            w.iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|p| p.0)
                .unwrap()
        };
        let from_kl: Vec<(usize, f64)> =
            (0..T).map(|t| (t, weight_from_kl(&v, t, v.b[t]))).collect();
        let closed: Vec<(usize, f64)> = (0..T)
            .map(|t| (t, elbo_weight(&v, t, v.b[t]).unwrap()))
            .collect();
        assert_eq!(argmin(&from_kl), 134);
        assert_eq!(argmin(&closed), 134);
        assert!((134..T - 1).all(|t| closed[t + 1].1 > closed[t].1));
        assert!((0..134).all(|t| closed[t + 1].1 < closed[t].1));
        // independent float64 computation from the definitions (Python): 0.012953409485862879
        assert!(close(closed[134].1, 0.012_953_409_485_862_88, 1e-12));
        assert!(close(closed[134].1, 0.012_95, 5e-6));
        let tilde: Vec<(usize, f64)> = (1..T)
            .map(|t| (t, weight_from_kl(&v, t, posterior_variance(&v, t).unwrap())))
            .collect();
        assert_eq!(argmin(&tilde), 135);
        // most of the fall is at the start: w[0] is 38.6 times the minimum, w[20] only 3.61 times
        assert!(close(closed[0].1 / closed[134].1, 38.6, 0.05));
        assert!(close(closed[20].1 / closed[134].1, 3.61, 0.005));
        assert!(closed[20..].iter().all(|p| p.1 <= closed[20].1));
    }

    #[test]
    fn x0_loss_weight_is_inverse_snr() {
        let v = course_values().unwrap();
        // Noise an image with the crate's coefficients, read the clean image back with a noise
        // prediction that is off by d (as x0_hat is formed from e_hat), and compare the squared
        // image error with the weight times d^2.
        let (x0, e, d) = (0.3, 1.1, 0.05);
        for t in [0usize, 1, 40, 101, 149] {
            let (sa, sn) = (v.sqrt_a_bar[t], v.sqrt_one_minus_a_bar[t]);
            let x_t = sa * x0 + sn * e;
            let x0_hat = (x_t - sn * (e + d)) / sa;
            let per_noise_error = (x0 - x0_hat).powi(2) / (d * d);
            let w = x0_loss_weight(&v, t).unwrap();
            assert!(
                close(w, per_noise_error, 1e-9 * w),
                "t = {t}: {w} vs {per_noise_error}"
            );
        }
        // the prose's values (ddpm-math.md Q8)
        assert!(close(x0_loss_weight(&v, 0).unwrap(), 1.0001e-4, 5e-9));
        assert!(close(x0_loss_weight(&v, 149).unwrap(), 3.561_66, 1e-5));
    }

    #[test]
    fn prior_kl_per_pixel() {
        // KL(N(m, s2) || N(0, 1)), m = sqrt(ab) x0, s2 = 1 - ab, as the integral of its
        // definition (Simpson's rule) rather than in closed form
        use crate::theory::gaussian::{normal_log_pdf, simpson};
        let ab = course_values().unwrap().a_bar[149];
        for x0 in [-1.0, 0.0, 0.5, 1.0] {
            let (m, s) = (ab.sqrt() * x0, (1.0 - ab).sqrt());
            let integrand = |x: f64| {
                let lq = normal_log_pdf(x, m, s).unwrap();
                lq.exp() * (lq - normal_log_pdf(x, 0.0, 1.0).unwrap())
            };
            let kl = simpson(integrand, m - 14.0 * s, m + 14.0 * s, 8000);
            assert!(close(prior_kl(ab, x0), kl, 1e-12), "x0 = {x0}");
        }
        // the prose's values (ddpm-math.md Q11)
        assert!(close(prior_kl(ab, 0.0), 0.014_120_7, 1e-7));
        assert!(close(prior_kl(ab, 1.0), 0.123_730, 1e-6));
        assert_eq!(prior_kl(0.0, 1.0), 0.0);
    }

    #[test]
    fn sequential_noising_cost() {
        let v = course_values().unwrap();
        // Count the forward steps that reach index t: step the variance of a clean pixel one beta
        // at a time until it is the closed form's noise variance 1 - a_bar[t].
        let counted = |t: usize| {
            (1..=T)
                .find(|&n| {
                    let var = variance_after(&v.b[..n], 0.0, UpdateRule::VariancePreserving);
                    close(var, 1.0 - v.a_bar[t], 1e-13)
                })
                .unwrap()
        };
        for t in 0..T {
            assert_eq!(sequential_noising_steps(t), counted(t), "t = {t}");
        }
        let avg = (0..T).map(counted).sum::<usize>() as f64 / T as f64;
        assert!(close(mean_sequential_noising_steps(T), avg, 1e-12));
        assert!(close(avg, 75.5, 1e-12)); // the prose's number
                                          // One call per training batch and one per sampling step, whatever T and the batch are.
        assert_eq!(
            counted_network_calls(150, 8).unwrap(),
            (1, sampling_network_calls(150))
        );
        assert_eq!(counted_network_calls(1000, 1).unwrap(), (1, 1000));
    }

    /// `(image, t)` pairs the crate's own batcher hands out over `epochs` epochs.
    fn batched_examples(images: usize, batch: usize, epochs: u64) -> usize {
        (0..epochs)
            .map(|epoch| {
                diffusion::data::Batches::new(images, batch, 0, epoch)
                    .unwrap()
                    .map(|b| b.len())
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn training_examples_count() {
        // 60000 / 128 = 468.75 -> 468 full batches, counted on the training loop's batcher
        let per_epoch = diffusion::data::Batches::new(60_000, 128, 0, 0)
            .unwrap()
            .count();
        assert_eq!(steps_per_epoch(60_000, 128).unwrap(), per_epoch);
        assert_eq!(per_epoch, 468);
        assert_eq!(
            training_examples(60_000, 128, 3).unwrap(),
            batched_examples(60_000, 128, 3)
        );
        assert_eq!(training_examples(60_000, 128, 3).unwrap(), 179_712);
        // with the 10,000 test images too: 546 batches (ERRATA.md's 209,664)
        assert_eq!(
            training_examples(70_000, 128, 3).unwrap(),
            batched_examples(70_000, 128, 3)
        );
        assert_eq!(training_examples(70_000, 128, 3).unwrap(), 209_664);
        assert!(training_examples(70_000, 128, 3).unwrap() < 1_000_000);
        assert!(steps_per_epoch(10, 0).is_err());
    }

    #[test]
    fn normalized_timestep_range() {
        assert_eq!(normalized_timestep(0, 150).unwrap(), 0.0);
        assert!(close(
            normalized_timestep(1, 150).unwrap(),
            1.0 / 150.0,
            1e-15
        ));
        assert!(close(
            normalized_timestep(149, 150).unwrap(),
            0.993_333,
            1e-6
        ));
        assert!(normalized_timestep(150, 150).is_err());
        // the min-max variant 2 (t / T) - 1 ends at 2 * 149 / 150 - 1 = 148 / 150
        let last = 2.0 * normalized_timestep(149, 150).unwrap() - 1.0;
        assert!(close(last, 148.0 / 150.0, 1e-15) && close(last, 0.986_67, 5e-6));
    }

    #[test]
    fn normalization_keeps_gradient_ratio() {
        // The first layer of the time embedding (Linear 1 -> 64) backpropagated with candle: its
        // weight gradient for t = 149 over the one for t = 1, with raw and with normalised input.
        use candle_core::Var;
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::ones((64, 1), candle_core::DType::F64, &dev).unwrap())
            .unwrap();
        let b =
            Var::from_tensor(&Tensor::zeros(64, candle_core::DType::F64, &dev).unwrap()).unwrap();
        let weight_grad = |input: f64| {
            let x = Tensor::new(&[[input]], &dev).unwrap();
            let y = x
                .matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap();
            let grads = y.sum_all().unwrap().backward().unwrap();
            grads
                .get(w.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let ratio = |hi: f64, lo: f64| {
            let (g_hi, g_lo) = (weight_grad(hi), weight_grad(lo));
            assert!(g_hi
                .iter()
                .zip(&g_lo)
                .all(|(h, l)| close(h / l, g_hi[0] / g_lo[0], 1e-12)));
            g_hi[0] / g_lo[0]
        };
        let raw = ratio(149.0, 1.0);
        let norm = ratio(
            normalized_timestep(149, 150).unwrap(),
            normalized_timestep(1, 150).unwrap(),
        );
        assert!(close(raw, 149.0, 1e-9), "{raw}");
        assert!(close(norm, raw, 1e-9), "{norm} vs {raw}");
    }

    #[test]
    fn z_score_std() {
        // population std of 0..149 computed directly
        let ts: Vec<f64> = (0..150).map(|t| t as f64).collect();
        let m = mean(&ts);
        assert!(close(m, 74.5, 1e-12));
        let direct = mean(&ts.iter().map(|t| (t - m).powi(2)).collect::<Vec<_>>()).sqrt();
        assert!(close(uniform_timestep_std(150), direct, 1e-9));
        assert!(close(direct, 43.300_3, 1e-4));
        // (t - T/2) / (T/6): std = 43.3003 / 25
        assert!(close(uniform_timestep_std(150) / 25.0, 1.732_01, 1e-5));
    }

    #[test]
    fn zero_predictor_loss_is_one() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        // Box-Muller normals
        let noise: Vec<f64> = (0..200_000)
            .map(|_| {
                let (u, w): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()
            })
            .collect();
        assert!(close(mean_square(&noise), 1.0, 0.02));
    }

    #[test]
    fn sinusoidal_frequencies_are_geometric() {
        let f = sinusoidal_frequencies(16).unwrap();
        assert_eq!(f.len(), 16);
        assert!(close(f[0], 1.0, 1e-15));
        assert!(close(f[15], 1e-4, 1e-15));
        // ratio 10000^(-1/15) = 0.54117, not 1/2
        assert!(close(f[1], 10000f64.powf(-1.0 / 15.0), 1e-15));
        assert!(close(f[1], 0.541_17, 1e-5));
        assert!(close(f[2], f[1] * f[1], 1e-15));
        assert!(close(f[2], 0.292_87, 1e-5));
        assert!(sinusoidal_frequencies(1).is_err());
    }

    #[test]
    fn broadcast_shapes() {
        assert_eq!(
            broadcast_shape(&[128, 1, 1, 1], &[128, 1, 16, 16]).unwrap(),
            vec![128, 1, 16, 16]
        );
        assert_eq!(numel(&[128, 1, 16, 16]), 32_768);
        // two Nones: [128, 1, 1] lines up as [1, 128, 1, 1]
        assert_eq!(
            broadcast_shape(&[128, 1, 1], &[128, 1, 16, 16]).unwrap(),
            vec![128, 128, 16, 16]
        );
        // no None: [128] meets the width 16
        assert!(broadcast_shape(&[128], &[128, 1, 16, 16]).is_err());
        // ... unless the batch equals the width
        assert_eq!(
            broadcast_shape(&[16], &[16, 1, 16, 16]).unwrap(),
            vec![16, 1, 16, 16]
        );
        assert_eq!(
            broadcast_shape(&[128, 1, 1, 1], &[128, 3, 16, 16]).unwrap(),
            vec![128, 3, 16, 16]
        );
    }

    #[test]
    fn broadcast_shapes_agree_with_candle() {
        use candle_core::{DType, Device, Tensor};
        let dev = Device::Cpu;
        let x = Tensor::zeros((128, 1, 16, 16), DType::F32, &dev).unwrap();
        let two = Tensor::zeros((128, 1, 1), DType::F32, &dev).unwrap();
        assert_eq!(two.broadcast_mul(&x).unwrap().dims(), &[128, 128, 16, 16]);
        let one = Tensor::zeros(128, DType::F32, &dev).unwrap();
        assert!(one.broadcast_mul(&x).is_err());
        // broadcast_as is a view: stretched dimensions get stride 0
        let c = Tensor::zeros((128, 1, 1, 1), DType::F32, &dev).unwrap();
        let e = c.broadcast_as((128, 1, 16, 16)).unwrap();
        assert_eq!(&e.stride()[2..], &[0, 0]);
        assert!(!e.is_contiguous());
    }

    #[test]
    fn cosine_a_bar_uses_square() {
        let v = cosine_values(150).unwrap();
        let f = |i: f64| ((i / 150.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos();
        // a_bar[t] = f(t+1)^2 / f(0)^2 (no clipping before the last step)
        assert!(close(v.a_bar[74], f(75.0).powi(2) / f(0.0).powi(2), 1e-12));
        assert!(close(v.a_bar[74], 0.493_844, 1e-6));
        // without the square: 0.70274 (ERRATA.md's rounding, plain arithmetic)
        assert!(close(f(75.0) / f(0.0), 0.702_740, 1e-6));
    }

    #[test]
    fn pred_noise_coeff_spread() {
        let lin = course_values().unwrap();
        let cos = cosine_values(150).unwrap();
        let spread = |v: &ScheduleValues| {
            let max = v.pred_noise_coeff.iter().cloned().fold(f64::MIN, f64::max);
            let min = v.pred_noise_coeff.iter().cloned().fold(f64::MAX, f64::min);
            max / min
        };
        assert!(close(spread(&lin), 0.022_634_2 / 0.01, 1e-4));
        // cosine: first coefficient sqrt(B0) (as for any schedule), last B = 0.999 (clipped)
        assert!(close(cos.pred_noise_coeff[0], cos.b[0].sqrt(), 1e-12));
        assert!(close(cos.b[149], 0.999, 1e-15));
        assert!(close(cos.pred_noise_coeff[149], 0.999, 1e-6));
        // smallest at t = 1, from the closed form: B1 = 1 - f(2)^2 / f(1)^2, a_bar1 = f(2)^2 / f(0)^2
        let f = |i: f64| ((i / 150.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos();
        let b1 = 1.0 - f(2.0).powi(2) / f(1.0).powi(2);
        let c1 = b1 / (1.0 - f(2.0).powi(2) / f(0.0).powi(2)).sqrt();
        assert!(close(cos.pred_noise_coeff[1], c1, 1e-12));
        assert!(cos.pred_noise_coeff.iter().all(|c| *c >= c1));
        assert!(close(spread(&cos), cos.pred_noise_coeff[149] / c1, 1e-12));
        assert!(close(spread(&cos), 52.82, 5e-3));
    }

    #[test]
    fn schedule_table() {
        let cos = cosine_values(150).unwrap();
        // first cosine beta: 1 - f(1)^2 / f(0)^2
        let f = |i: f64| ((i / 150.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos();
        assert!(close(
            cos.b[0],
            1.0 - f(1.0).powi(2) / f(0.0).powi(2),
            1e-15
        ));
        assert!(close(cos.b[0], 3.669e-4, 1e-7));
        // last a_bar: a_bar[148] * (1 - 0.999), with a_bar[148] = f(149)^2 / f(0)^2
        let ab148 = f(149.0).powi(2) / f(0.0).powi(2);
        assert!(close(cos.a_bar[149], ab148 * 0.001, 1e-15));
        assert!(close(cos.a_bar[149], 1.079e-7, 1e-10));
        // linear at T = 1000 (the paper's): about 4.0e-5
        let b1000 = linspace(START, END, 1000);
        let ab1000: f64 = b1000.iter().map(|b| 1.0 - b).product();
        assert!(close(ab1000, 4.036e-5, 1e-8));
    }

    #[test]
    fn log_snr_drops() {
        let v = course_values().unwrap();
        // SNR from the series for ln a_bar instead of the schedule's running product
        let snr_series = |t: usize| {
            let ab = ln_a_bar_series(t + 1).exp();
            ab / (1.0 - ab)
        };
        // ln SNR would fall by the same amount per 30 steps if SNR = exp(-c t)
        let expect = [6.514, 1.443, 0.963, 0.812]; // the prose's roundings (Q10: 6.51, 0.81)
        for (t, e) in [0usize, 30, 60, 90].into_iter().zip(expect) {
            let d = log_snr_drop(&v, t, t + 30).unwrap();
            let series = snr_series(t).ln() - snr_series(t + 30).ln();
            assert!(close(d, series, 1e-6), "t = {t}: {d} vs {series}");
            assert!(close(d, e, 1e-3), "t = {t}: {d}");
        }
    }

    #[test]
    fn noise_share_table() {
        let v = course_values().unwrap();
        // the prose's roundings (Q15), and the series for ln a_bar as a second computation
        let expect = [
            (120, 0.627_332),
            (90, 0.427_813),
            (60, 0.222_130),
            (30, 0.063_209),
            (5, 0.002_601),
        ];
        for (t, e) in expect {
            let share = noise_share(&v, t).unwrap();
            assert!(
                close(share, 1.0 - ln_a_bar_series(t + 1).exp(), 1e-7),
                "t = {t}"
            );
            assert!(close(share, e, 1e-6), "t = {t}");
        }
    }

    #[test]
    fn gaussian_toy_score() {
        // x_0 ~ N(0, s2): the marginal density of x_t and E[e | x_t] by quadrature over x_0, the
        // score by a central difference of the log of that density
        use crate::theory::gaussian::{normal_pdf, simpson};
        let (ab, s2) = (0.4f64, 0.25f64);
        let joint = |x0: f64, x: f64| {
            normal_pdf(x0, 0.0, s2.sqrt()).unwrap()
                * normal_pdf(x, ab.sqrt() * x0, (1.0 - ab).sqrt()).unwrap()
        };
        let density = |x: f64| simpson(|x0| joint(x0, x), -6.0, 6.0, 4000);
        let noise_of = |x0: f64, x: f64| (x - ab.sqrt() * x0) / (1.0 - ab).sqrt();
        for x in [-1.3, 0.2, 0.8, 2.5] {
            let h = 1e-4;
            let score = (density(x + h).ln() - density(x - h).ln()) / (2.0 * h);
            let e_mean = simpson(|x0| joint(x0, x) * noise_of(x0, x), -6.0, 6.0, 4000) / density(x);
            assert!(
                close(gaussian_data_score(ab, s2, x), score, 1e-8),
                "x = {x}"
            );
            assert!(
                close(gaussian_data_expected_noise(ab, s2, x), e_mean, 1e-10),
                "x = {x}"
            );
            // Tweedie: e_hat = -sqrt(1 - ab) * score, minus sign included
            assert!(close(e_mean, -(1.0 - ab).sqrt() * score, 1e-8));
        }
        assert!(
            gaussian_data_expected_noise(ab, s2, 0.8) > 0.0
                && gaussian_data_score(ab, s2, 0.8) < 0.0
        );
    }

    #[test]
    fn ddpm_step_vs_langevin() {
        let v = course_values().unwrap();
        // DDPM mean written with the score s = -e / sqrt(1 - ab): (x + B s) / sqrt(a)
        for &t in &[1usize, 75, 149] {
            let (x, e) = (0.3, -0.9);
            let s = -e * score_scale(&v, t).unwrap();
            let via_score = (x + v.b[t] * s) / v.a[t].sqrt();
            assert!(close(via_score, reverse_mean(&v, t, x, e).unwrap(), 1e-12));
        }
        // Why a Langevin step needs sqrt(2 d) noise: on the target N(0, 1) (score -x) the step
        // x + d (-x) + std z maps the variance v -> (1 - d)^2 v + std^2. Iterated, it settles
        // within O(d) of the target's 1 only with the Langevin std; with the DDPM step's sqrt(d)
        // it would settle near 1/2.
        for d in [0.02f64, 1e-3] {
            let settle =
                |std: f64| (0..100_000).fold(0.0, |var, _| (1.0 - d) * (1.0 - d) * var + std * std);
            let langevin = settle(langevin_noise_std(d));
            assert!((langevin - 1.0).abs() < d, "d = {d}: {langevin}");
            assert!(close(langevin, 1.0 / (1.0 - d / 2.0), 1e-12));
            assert!((settle(d.sqrt()) - 0.5).abs() < d);
        }
        assert!(close(
            score_scale(&v, 149).unwrap(),
            1.0 / 0.780_781_400_814_18f64.sqrt(),
            1e-9
        ));
        assert!(close(score_scale(&v, 149).unwrap(), 1.131_71, 1e-5));
    }

    #[test]
    fn matching_timestep_for_noise_std() {
        let v = course_values().unwrap();
        // x_t / sqrt(ab) = x_0 + sqrt((1 - ab) / ab) e: std sigma when ab = 1 / (1 + sigma^2)
        let t = matching_timestep(&v, 0.1).unwrap();
        assert_eq!(t, 11);
        let target = 1.0 / 1.01;
        assert!((v.a_bar[11] - target).abs() < (v.a_bar[10] - target).abs());
        assert!((v.a_bar[11] - target).abs() < (v.a_bar[12] - target).abs());
        assert!(((1.0 - v.a_bar[11]) / v.a_bar[11]).sqrt() > 0.099);
        assert!(matching_timestep(&v, 0.0).is_err());
    }

    #[test]
    fn first_fifty_steps_carry_most_of_the_log_snr_drop() {
        let v = course_values().unwrap();
        // after 50 steps (index 49), from the series for ln a_bar as a second computation
        assert!(close(
            a_bar(&v, 49).unwrap(),
            ln_a_bar_series(50).exp(),
            1e-8
        ));
        // independent float64 product from the definitions (Python): 0.8445208921316225
        assert!(close(
            a_bar(&v, 49).unwrap(),
            0.844_520_892_131_622_5,
            1e-12
        ));
        assert!(close(noise_share(&v, 49).unwrap(), 0.1555, 5e-5));
        // ln SNR: 9.2102 at t = 0 (ln 9999), 1.6923 at t = 49, -1.2702 at t = 149
        let ln_snr = |t: usize| snr(&v, t).unwrap().ln();
        assert!(close(ln_snr(0), 9999f64.ln(), 1e-9));
        let first = log_snr_drop(&v, 0, 49).unwrap();
        let whole = log_snr_drop(&v, 0, 149).unwrap();
        assert!(close(first, ln_snr(0) - ln_snr(49), 1e-12));
        assert!(close(first, 7.52, 5e-3) && close(whole, 10.48, 5e-3));
        assert!(close(first / whole, 0.717, 5e-4));
    }

    #[test]
    fn cumprod_index_is_the_paper_step_minus_one() {
        let v = course_values().unwrap();
        // the paper's alpha_bar_s = prod_{r = 1..s} (1 - beta_r), with beta_r = B[r - 1], written
        // as an explicit product over the 1-indexed betas
        let beta = |r: usize| START + (END - START) * (r as f64 - 1.0) / (T - 1) as f64;
        let paper_a_bar = |s: usize| (1..=s).map(|r| 1.0 - beta(r)).product::<f64>();
        for s in 1..=T {
            // cumprod(1 - betas)[i] holds alpha_bar_{i + 1}: index s - 1 for step s
            assert!(close(v.a_bar[s - 1], paper_a_bar(s), 1e-13), "s = {s}");
        }
        // so indexing the cumprod with a paper step s gives alpha_bar_{s + 1}, and s = T is out of
        // range: the array has T entries, 0..T-1
        assert!(!close(v.a_bar[1], paper_a_bar(1), 1e-5));
        assert_eq!(v.a_bar.len(), T);
        assert!(a_bar(&v, T).is_err());
    }

    #[test]
    fn closed_form_is_not_an_interpolation() {
        let v = course_values().unwrap();
        // the factors on x_0 and on e: their squares sum to 1, the factors themselves do not
        let sum = |t: usize| v.sqrt_a_bar[t] + v.sqrt_one_minus_a_bar[t];
        for t in 0..T {
            let squares = v.sqrt_a_bar[t].powi(2) + v.sqrt_one_minus_a_bar[t].powi(2);
            assert!(close(squares, 1.0, 1e-12));
            assert!(sum(t) > 1.0);
        }
        assert!(close(sum(149), 0.4682 + 0.8836, 1e-4) && close(sum(149), 1.3518, 5e-5));
        // (sqrt(a) + sqrt(1 - a))^2 = 1 + 2 sqrt(a (1 - a)) is largest at a = 1/2, where it is 2:
        // the largest sum is at the t whose a_bar is nearest 1/2 (t = 100), just under sqrt(2)
        let largest = (0..T).max_by(|&i, &j| sum(i).total_cmp(&sum(j))).unwrap();
        let nearest_half = (0..T)
            .min_by(|&i, &j| {
                (v.a_bar[i] - 0.5)
                    .abs()
                    .total_cmp(&(v.a_bar[j] - 0.5).abs())
            })
            .unwrap();
        assert_eq!((largest, nearest_half), (100, 100));
        assert!(sum(100) < 2f64.sqrt() && close(sum(100), 2f64.sqrt(), 1e-4));
    }

    #[test]
    fn ddim_speed_comes_from_skipping() {
        // counted on the crate's samplers: DDIM visiting every timestep is deterministic and makes
        // as many network calls as DDPM; only visiting fewer timesteps makes it cheaper
        assert_eq!(counted_ddim_calls(150, 150).unwrap(), 150);
        assert_eq!(
            counted_ddim_calls(150, 150).unwrap(),
            counted_network_calls(150, 1).unwrap().1
        );
        assert_eq!(counted_ddim_calls(150, 10).unwrap(), 10);
        assert_eq!(counted_ddim_calls(1000, 50).unwrap(), 50);
    }

    #[test]
    fn target_noise_does_not_depend_on_t() {
        // The network's target is the noise the crate's q draws. Drawn with the same seed for
        // t = 0 and t = 149 it is the same tensor: nothing about it depends on t.
        let dev = Device::Cpu;
        let s = Schedule::course(&dev).unwrap();
        let x0 = Tensor::zeros((64, 1, 16, 16), candle_core::DType::F32, &dev).unwrap();
        let noise_at = |t: u32| {
            let ts = Tensor::full(t, 64, &dev).unwrap();
            let (_, e) = diffusion::q(&s, &x0, &ts, &mut diffusion::Rng::new(5)).unwrap();
            e.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (e0, e149) = (noise_at(0), noise_at(149));
        assert_eq!(e0, e149);
        // and it is white: unit variance, no correlation between horizontal neighbours (within 4
        // standard errors, 4 / sqrt(n))
        let e: Vec<f64> = e0.iter().map(|x| *x as f64).collect();
        let n = e.len() as f64;
        assert!(close(mean_square(&e), 1.0, 4.0 * (2.0 / n).sqrt()));
        let pairs: Vec<f64> = e
            .chunks(16)
            .flat_map(|row| row.windows(2).map(|w| w[0] * w[1]).collect::<Vec<_>>())
            .collect();
        assert!(mean(&pairs).abs() < 4.0 / (pairs.len() as f64).sqrt());
    }

    #[test]
    fn timesteps_are_uniform_from_the_first_step() {
        // the draw of the training step (Rng::timesteps, as in Trainer::train_step): the first ten
        // batches of 128 already cover 0..149 evenly, within 4 standard errors
        let dev = Device::Cpu;
        let t = diffusion::Rng::new(0)
            .timesteps(1280, T, &dev)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let ts: Vec<f64> = t.iter().map(|x| *x as f64).collect();
        let n = ts.len() as f64;
        assert!(close(
            mean(&ts),
            74.5,
            4.0 * uniform_timestep_std(T) / n.sqrt()
        ));
        let third = 1.0 / 3.0;
        let se = (third * (1.0 - third) / n).sqrt();
        let share =
            |lo: f64, hi: f64| ts.iter().filter(|x| **x >= lo && **x < hi).count() as f64 / n;
        assert!(close(share(0.0, 50.0), third, 4.0 * se));
        assert!(close(share(100.0, 150.0), third, 4.0 * se));
    }

    #[test]
    fn cosine_schedule_breaks_the_stated_design_rules() {
        let cos = cosine_values(150).unwrap();
        let f = |i: f64| {
            ((i / 150.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        // betas from the definition 1 - f(t + 1) / f(t), capped at 0.999
        let beta = |t: usize| (1.0 - f(t as f64 + 1.0) / f(t as f64)).min(0.999);
        for t in 0..150 {
            assert!(close(cos.b[t], beta(t), 1e-12), "t = {t}");
        }
        // "max beta < 0.1": 19 of its betas exceed 0.1, all from t = 131 on
        let above: Vec<usize> = (0..150).filter(|&t| cos.b[t] > 0.1).collect();
        assert_eq!(above.len(), 19);
        assert_eq!(above[0], 131);
        assert!(above.windows(2).all(|w| w[1] == w[0] + 1));
        // "d/dt SNR constant": the SNR falls by 1672 in the first step and by 1.08e-4 in the last
        let snr_def = |t: usize| f(t as f64 + 1.0) / (f(0.0) - f(t as f64 + 1.0));
        assert!(close(snr(&cos, 0).unwrap(), snr_def(0), 1e-9));
        assert!(close(snr(&cos, 74).unwrap(), snr_def(74), 1e-12));
        let first = snr(&cos, 0).unwrap() - snr(&cos, 1).unwrap();
        let last = snr(&cos, 148).unwrap() - snr(&cos, 149).unwrap();
        assert!(close(first, snr_def(0) - snr_def(1), 1e-9) && close(first, 1672.1, 0.05));
        assert!(close(last, 1.078e-4, 5e-7));
        // and the linear schedule's first 15 steps take 99.4% of its SNR's whole fall
        let lin = course_values().unwrap();
        let fall = |v: &ScheduleValues, t: usize| snr(v, 0).unwrap() - snr(v, t).unwrap();
        assert!(close(fall(&lin, 15) / fall(&lin, 149), 0.994, 5e-4));
        assert!(close(fall(&cos, 15) / fall(&cos, 149), 0.989, 5e-4));
    }

    #[test]
    fn same_normalised_time_is_another_noise_level() {
        // t / T = 0.5 is t = 75 of 150 steps and t = 100 of 200 steps (same endpoints): the
        // products of the linear betas (linear_beta, not the schedule's running product) differ
        let product = |t: usize, steps: usize| {
            (0..=t)
                .map(|k| 1.0 - linear_beta(k, steps, START, END).unwrap())
                .product::<f64>()
        };
        let v150 = course_values().unwrap();
        let v200 = Schedule::linear(200, START, END, &Device::Cpu)
            .unwrap()
            .values()
            .clone();
        assert_eq!(
            normalized_timestep(75, 150).unwrap(),
            normalized_timestep(100, 200).unwrap()
        );
        assert!(close(v150.a_bar[75], product(75, 150), 1e-13));
        assert!(close(v200.a_bar[100], product(100, 200), 1e-13));
        // independent float64 products (Python): 0.6773533736073168 and 0.5963952542240977
        assert!(close(v150.a_bar[75], 0.677_353_373_607_316_8, 1e-12));
        assert!(close(v200.a_bar[100], 0.596_395_254_224_097_7, 1e-12));
        assert!(close(v150.a_bar[75], 0.6774, 5e-5) && close(v200.a_bar[100], 0.5964, 5e-5));
    }

    #[test]
    fn best_noise_guess_needs_t() {
        // Unit-variance Gaussian data: x_t ~ N(0, a_bar + 1 - a_bar) = N(0, 1) at every t, so x_t
        // alone says nothing about t, yet E[e | x_t] = sqrt(1 - a_bar) x_t depends on it. By
        // quadrature over x_0 ~ N(0, 1), at x_t = 0.8, for a_bar = 0.9 and 0.3:
        use crate::theory::gaussian::{normal_pdf, simpson};
        let x = 0.8;
        let guess = |ab: f64| {
            let joint = |x0: f64| {
                normal_pdf(x0, 0.0, 1.0).unwrap()
                    * normal_pdf(x, ab.sqrt() * x0, (1.0 - ab).sqrt()).unwrap()
            };
            let density = simpson(joint, -9.0, 9.0, 6000);
            assert!(close(density, normal_pdf(x, 0.0, 1.0).unwrap(), 1e-12));
            let noise = |x0: f64| (x - ab.sqrt() * x0) / (1.0 - ab).sqrt();
            simpson(|x0| joint(x0) * noise(x0), -9.0, 9.0, 6000) / density
        };
        assert!(close(
            guess(0.9),
            gaussian_data_expected_noise(0.9, 1.0, x),
            1e-10
        ));
        assert!(close(guess(0.9), 0.2530, 5e-5) && close(guess(0.3), 0.6693, 5e-5));
    }
}
