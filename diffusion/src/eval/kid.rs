//! The kernel distance "KID" (Bińkowski et al. 2018): the squared maximum mean discrepancy
//! between two sets of features, with the polynomial kernel and its unbiased estimate:
//!
//! ```text
//! k(x, y) = (x . y / d + 1)^3                                   (d: the number of features)
//! MMD^2   = 1/(m(m-1)) sum_{i != j} k(x_i, x_j)  +  1/(n(n-1)) sum_{i != j} k(y_i, y_j)
//!           - 2/(m n) sum_{i, j} k(x_i, y_j)
//! ```
//!
//! Leaving out the terms `i = j` makes the estimate unbiased: its mean over draws is the true
//! MMD², 0 for two sets from one distribution, so a single estimate can come out slightly
//! negative. Unlike the Fréchet distance it needs no covariance, so any `m, n >= 2` will do.

use super::Matrix;
use anyhow::{bail, Result};

/// Rows of `x` per block when summing kernels, so that no `m x n` matrix is held at once.
const BLOCK: usize = 512;

/// `(x . y / d + 1)^3` of a dot product `x . y`.
fn kernel(dot: f64, d: usize) -> f64 {
    (dot / d as f64 + 1.0).powi(3)
}

/// `sum_{i, j} k(x_i, y_j)` over the rows of `x` and `y`, and the diagonal's sum
/// `sum_i k(x_i, y_i)` when `x` and `y` are the same set.
fn kernel_sums(x: &Matrix, y: &Matrix, same: bool) -> Result<(f64, f64)> {
    let d = x.ncols();
    let yt = y.transpose();
    let (mut total, mut diagonal) = (0.0, 0.0);
    for start in (0..x.nrows()).step_by(BLOCK) {
        let rows = BLOCK.min(x.nrows() - start);
        let dots = x.rows(start, rows).matmul(&yt)?; // [rows, d] x [d, n] = [rows, n]
        total += dots.iter().map(|&v| kernel(v, d)).sum::<f64>();
        if same {
            diagonal += (0..rows)
                .map(|i| kernel(dots[(i, start + i)], d))
                .sum::<f64>();
        }
    }
    Ok((total, diagonal))
}

/// `1/(m(m-1)) sum_{i != j} k(x_i, x_j)`: the mean kernel between distinct rows of one set.
pub fn within_mean(x: &Matrix) -> Result<f64> {
    let m = x.nrows();
    if m < 2 {
        bail!("the kernel distance needs at least 2 samples in each set, got {m}");
    }
    let (total, diagonal) = kernel_sums(x, x, true)?;
    Ok((total - diagonal) / (m * (m - 1)) as f64)
}

/// `1/(m n) sum_{i, j} k(x_i, y_j)`: the mean kernel between the two sets.
pub fn between_mean(x: &Matrix, y: &Matrix) -> Result<f64> {
    check_pair(x, y)?;
    Ok(kernel_sums(x, y, false)?.0 / (x.nrows() * y.nrows()) as f64)
}

fn check_pair(x: &Matrix, y: &Matrix) -> Result<()> {
    if x.ncols() != y.ncols() || x.ncols() == 0 {
        bail!(
            "the two sets must have the same number of features (at least 1), got {} and {}",
            x.ncols(),
            y.ncols()
        );
    }
    for (name, s) in [("first", x), ("second", y)] {
        if s.nrows() < 2 {
            bail!(
                "the kernel distance needs at least 2 samples in each set, the {name} has {}",
                s.nrows()
            );
        }
        if s.iter().any(|v| !v.is_finite()) {
            bail!("the {name} set of features holds a NaN or an infinity");
        }
    }
    Ok(())
}

/// The unbiased MMD² between the rows of `x` (`m x d`) and of `y` (`n x d`) with the kernel
/// `(x . y / d + 1)^3`.
pub fn kid(x: &Matrix, y: &Matrix) -> Result<f64> {
    check_pair(x, y)?;
    Ok(within_mean(x)? + within_mean(y)? - 2.0 * between_mean(x, y)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_worked_case() {
        // d = 1, x = {0, 1}, y = {1, 2}, k(a, b) = (ab + 1)^3:
        // within x: k(0, 1) = 1; within y: k(1, 2) = 27;
        // between: k(0,1) + k(0,2) + k(1,1) + k(1,2) = 1 + 1 + 8 + 27 = 37, mean 9.25.
        // MMD^2 = 1 + 27 - 2 * 9.25 = 9.5
        let x = Matrix::from_row_slice(2, 1, &[0.0, 1.0]).unwrap();
        let y = Matrix::from_row_slice(2, 1, &[1.0, 2.0]).unwrap();
        assert!((kid(&x, &y).unwrap() - 9.5).abs() < 1e-12);
        assert!((kid(&y, &x).unwrap() - 9.5).abs() < 1e-12);
    }

    #[test]
    fn the_blocks_sum_to_the_whole() {
        // More rows than a block: compare with a direct double loop.
        let mut rng = crate::Rng::new(2);
        let (x, y) = (
            crate::eval::gaussian_set(&mut rng, BLOCK + 37, 3, 0.0),
            crate::eval::gaussian_set(&mut rng, 40, 3, 0.5),
        );
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let k = |a: usize, b: &Matrix, j: usize| kernel(dot(x.row(a), b.row(j)), 3);
        let (m, n) = (x.nrows(), y.nrows());
        let mut xx = 0.0;
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    xx += k(i, &x, j);
                }
            }
        }
        let yy: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| kernel(dot(y.row(i), y.row(j)), 3))
            .sum();
        let xy: f64 = (0..m)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| k(i, &y, j))
            .sum();
        let want =
            xx / (m * (m - 1)) as f64 + yy / (n * (n - 1)) as f64 - 2.0 * xy / (m * n) as f64;
        let got = kid(&x, &y).unwrap();
        assert!(
            (got - want).abs() < 1e-9 * want.abs().max(1.0),
            "{got} against {want}"
        );
    }

    #[test]
    fn one_distribution_gives_about_zero_and_a_shift_a_positive_distance() {
        let mut rng = crate::Rng::new(7);
        let d = 8;
        let a = crate::eval::gaussian_set(&mut rng, 500, d, 0.0);
        let b = crate::eval::gaussian_set(&mut rng, 500, d, 0.0);
        let c = crate::eval::gaussian_set(&mut rng, 500, d, 0.5);
        let same = kid(&a, &b).unwrap();
        let shifted = kid(&a, &c).unwrap();
        assert!(same.abs() < 0.02, "{same}");
        assert!(
            shifted > 0.1 && shifted > 20.0 * same.abs(),
            "{shifted} against {same}"
        );
    }

    /// The estimate is unbiased, not positive: for one set against itself it is
    /// `2 (S - m D) / (m^2 (m - 1)) <= 0` (`S` the sum of all kernels, `D` of the diagonal ones,
    /// and `S <= m D` for a positive definite kernel), and over independent draws of one
    /// distribution it falls on both sides of 0.
    #[test]
    fn the_unbiased_estimate_can_be_negative() {
        let mut rng = crate::Rng::new(11);
        let a = crate::eval::gaussian_set(&mut rng, 50, 4, 0.0);
        let m = 50.0;
        let (s, dg) = kernel_sums(&a, &a, true).unwrap();
        let want = 2.0 * (s - m * dg) / (m * m * (m - 1.0));
        let self_kid = kid(&a, &a).unwrap();
        assert!(
            self_kid < 0.0 && (self_kid - want).abs() < 1e-9 * want.abs(),
            "{self_kid} against {want}"
        );

        let draws: Vec<f64> = (0..20)
            .map(|_| {
                kid(
                    &crate::eval::gaussian_set(&mut rng, 50, 4, 0.0),
                    &crate::eval::gaussian_set(&mut rng, 50, 4, 0.0),
                )
                .unwrap()
            })
            .collect();
        assert!(
            draws.iter().any(|&v| v < 0.0) && draws.iter().any(|&v| v > 0.0),
            "{draws:?}"
        );
    }

    #[test]
    fn bad_input_is_an_error_that_says_what_was_expected() {
        let one = Matrix::zeros(1, 3);
        let two = Matrix::zeros(2, 3);
        assert!(kid(&one, &two)
            .unwrap_err()
            .to_string()
            .contains("at least 2 samples"));
        let e = kid(&two, &Matrix::zeros(2, 4)).unwrap_err().to_string();
        assert!(
            e.contains("same number of features") && e.contains('3') && e.contains('4'),
            "{e}"
        );
        let mut nan = Matrix::zeros(3, 3);
        nan[(1, 1)] = f64::NAN;
        assert!(kid(&two, &nan).unwrap_err().to_string().contains("NaN"));
    }
}
