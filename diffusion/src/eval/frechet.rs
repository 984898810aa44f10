//! The Fréchet distance between two Gaussians, the "FD" of FID (Heusel et al. 2017), here on
//! the classifier's features:
//!
//! ```text
//! FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr( (S1^{1/2} S2 S1^{1/2})^{1/2} )
//! ```
//!
//! `mu` is a mean and `S` a covariance, both fitted in f64 ([`Gaussian::fit`]). The square roots
//! are of symmetric positive semi-definite matrices, taken through a symmetric eigendecomposition
//! `S = V diag(l) V^T -> S^{1/2} = V diag(sqrt(l)) V^T` ([`sqrt_psd`], [`symmetric_eigen`]);
//! eigenvalues that rounding made slightly negative are set to 0. For 1-dimensional Gaussians the
//! formula is `(mu1 - mu2)^2 + (s1 - s2)^2` with `s` the standard deviations.

use anyhow::{bail, Result};

use super::eigen::symmetric_eigen;
use super::Matrix;

/// A Gaussian `N(mean, cov)` in `d` dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// `[d]`.
    pub mean: Vec<f64>,
    /// `[d, d]`, symmetric positive semi-definite.
    pub cov: Matrix,
}

/// How far below zero, relative to the largest eigenvalue, an eigenvalue may be and still be
/// taken for rounding of a positive semi-definite matrix.
pub const PSD_TOLERANCE: f64 = 1e-9;

impl Gaussian {
    /// `N(mean, cov)`, checked: `cov` must be `d x d` for a mean of `d` values, finite and
    /// symmetric.
    pub fn new(mean: Vec<f64>, cov: Matrix) -> Result<Self> {
        let d = mean.len();
        if d == 0 {
            bail!("a Gaussian needs at least one dimension, got a mean of 0 values");
        }
        if cov.shape() != (d, d) {
            bail!(
                "the covariance of a {d}-dimensional Gaussian must be {d} x {d}, got {} x {}",
                cov.nrows(),
                cov.ncols()
            );
        }
        if mean.iter().chain(cov.iter()).any(|v| !v.is_finite()) {
            bail!("the mean and covariance must be finite, found a NaN or an infinity");
        }
        let scale = cov.amax().max(f64::MIN_POSITIVE);
        let asym = cov.max_abs_diff(&cov.transpose());
        if asym > 1e-9 * scale {
            bail!("a covariance must be symmetric, but S - S^T reaches {asym:e}");
        }
        Ok(Self { mean, cov })
    }

    /// The mean and the unbiased covariance (divided by `N - 1`, as `numpy.cov`) of `features`,
    /// one row per sample: `N x d` with `N > d`, so that the covariance can have full rank.
    ///
    /// ```text
    /// mu = 1/N sum_i x_i,    S = 1/(N - 1) sum_i (x_i - mu)(x_i - mu)^T
    /// ```
    pub fn fit(features: &Matrix) -> Result<Self> {
        let (n, d) = features.shape();
        if d == 0 {
            bail!("features must have at least one column, got {n} x 0");
        }
        if n <= d {
            bail!(
                "a covariance of {d} features needs more than {d} samples, got {n}: \
                 use at least {} images (several times more for a stable score)",
                d + 1
            );
        }
        if features.iter().any(|v| !v.is_finite()) {
            bail!("features must be finite, found a NaN or an infinity");
        }
        let mean = features.column_means();
        let mut centred = features.clone();
        for i in 0..n {
            for (j, m) in mean.iter().enumerate() {
                centred[(i, j)] -= m;
            }
        }
        let mut cov = centred.transpose().matmul(&centred)?; // [d, N] x [N, d] = [d, d]
        cov.scale(1.0 / (n - 1) as f64);
        cov.symmetrise();
        Self::new(mean, cov)
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The eigenvalues of the symmetric matrix `m`, and its eigenvectors, with the eigenvalues that
/// rounding pushed below zero set to 0; an error when one is clearly negative (`m` is not
/// positive semi-definite) or not finite.
fn psd_eigen(m: &Matrix, what: &str) -> Result<(Vec<f64>, Matrix)> {
    if m.iter().any(|v| !v.is_finite()) {
        bail!("{what} holds a NaN or an infinity");
    }
    let (mut values, vectors) = symmetric_eigen(m)?;
    if values.iter().any(|v| !v.is_finite()) {
        bail!("the eigendecomposition of {what} did not converge to finite values");
    }
    let largest = values.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let floor = -PSD_TOLERANCE * largest.max(f64::MIN_POSITIVE);
    for l in values.iter_mut() {
        if *l < floor {
            bail!(
                "{what} is not positive semi-definite: it has the eigenvalue {l:e} (largest {largest:e}); \
                 a covariance never has"
            );
        }
        *l = l.max(0.0);
    }
    Ok((values, vectors))
}

/// The square root `S^{1/2} = V diag(sqrt(l)) V^T` of a symmetric positive semi-definite `S`, the
/// one symmetric PSD matrix with `S^{1/2} S^{1/2} = S`.
pub fn sqrt_psd(s: &Matrix) -> Result<Matrix> {
    if !s.is_square() {
        bail!(
            "a square root needs a square matrix, got {} x {}",
            s.nrows(),
            s.ncols()
        );
    }
    let (values, v) = psd_eigen(s, "the matrix")?;
    let roots: Vec<f64> = values.iter().map(|l| l.sqrt()).collect();
    let mut r = v
        .matmul(&Matrix::from_diagonal(&roots))?
        .matmul(&v.transpose())?;
    r.symmetrise();
    Ok(r)
}

/// The Fréchet distance between `a` and `b` (see the module's formula); never negative.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.dim() != b.dim() {
        bail!(
            "the two Gaussians must have the same dimension, got {} and {}",
            a.dim(),
            b.dim()
        );
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let r = sqrt_psd(&a.cov)?; // S1^{1/2}
    let mut m = r.matmul(&b.cov)?.matmul(&r)?; // S1^{1/2} S2 S1^{1/2}, symmetric PSD
    m.symmetrise();
    // tr(M^{1/2}) = sum of the square roots of M's eigenvalues.
    let cross: f64 = psd_eigen(&m, "S1^{1/2} S2 S1^{1/2}")?
        .0
        .iter()
        .map(|l| l.sqrt())
        .sum();
    let fd = mean_term + a.cov.trace() + b.cov.trace() - 2.0 * cross;
    if !fd.is_finite() {
        bail!("the Fréchet distance came out as {fd}: the covariances are too large or damaged");
    }
    // Rounding can leave a tiny negative number for two equal Gaussians.
    Ok(fd.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} against {b}");
    }

    fn diag(mean: &[f64], sd: &[f64]) -> Gaussian {
        let var: Vec<f64> = sd.iter().map(|s| s * s).collect();
        Gaussian::new(mean.to_vec(), Matrix::from_diagonal(&var)).unwrap()
    }

    #[test]
    fn equal_gaussians_are_at_distance_zero() {
        let g = Gaussian::new(
            vec![1.0, -2.0, 0.5],
            Matrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, -0.7, 0.5, -0.7, 2.0]).unwrap(),
        )
        .unwrap();
        let fd = frechet_distance(&g, &g).unwrap();
        assert!(fd.abs() < 1e-12, "{fd}");
        // A singular covariance (rank 1) too.
        let v = Matrix::from_row_slice(3, 1, &[1.0, 2.0, -1.0]).unwrap();
        let s = Gaussian::new(vec![0.0; 3], v.matmul(&v.transpose()).unwrap()).unwrap();
        assert!(frechet_distance(&s, &s).unwrap() < 1e-7);
    }

    #[test]
    fn diagonal_gaussians_follow_the_closed_form() {
        // sum over dims of (mu1 - mu2)^2 + (s1 - s2)^2:
        // (1 - 0)^2 + (2 - 1)^2 + (0 - 3)^2 + (0.5 - 2)^2 = 1 + 1 + 9 + 2.25 = 13.25
        let a = diag(&[1.0, 0.0], &[2.0, 0.5]);
        let b = diag(&[0.0, 3.0], &[1.0, 2.0]);
        close(frechet_distance(&a, &b).unwrap(), 13.25, 1e-12);
        close(frechet_distance(&b, &a).unwrap(), 13.25, 1e-12);
        // One dimension: (mu1 - mu2)^2 + (s1 - s2)^2 = 4 + 1.
        close(
            frechet_distance(&diag(&[3.0], &[1.0]), &diag(&[1.0], &[2.0])).unwrap(),
            5.0,
            1e-12,
        );
    }

    /// For 2 x 2 matrices, tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = tr((S1 S2)^{1/2})
    /// = sqrt(tr(S1 S2) + 2 sqrt(det(S1) det(S2))), since the two eigenvalues `l1, l2` of `S1 S2`
    /// give (sqrt(l1) + sqrt(l2))^2 = l1 + l2 + 2 sqrt(l1 l2).
    #[test]
    fn a_non_diagonal_case_matches_the_two_by_two_formula() {
        let s1 = Matrix::from_row_slice(2, 2, &[2.0, 0.6, 0.6, 1.0]).unwrap();
        let s2 = Matrix::from_row_slice(2, 2, &[1.5, -0.4, -0.4, 0.8]).unwrap();
        let (m1, m2) = (vec![0.3, -1.0], vec![1.0, 0.5]);
        // By hand: |m1 - m2|^2 = 0.49 + 2.25 = 2.74; tr S1 = 3, tr S2 = 2.3;
        // S1 S2 = [[2.76, -0.32], [0.5, 0.56]], trace 3.32; det S1 = 1.64, det S2 = 1.04.
        let cross = (3.32f64 + 2.0 * (1.64f64 * 1.04).sqrt()).sqrt();
        let want = 2.74 + 3.0 + 2.3 - 2.0 * cross;
        let a = Gaussian::new(m1, s1).unwrap();
        let b = Gaussian::new(m2, s2).unwrap();
        close(frechet_distance(&a, &b).unwrap(), want, 1e-12);
        close(frechet_distance(&b, &a).unwrap(), want, 1e-12);
    }

    /// Covariances that share eigenvectors `Q`: the distance is that of the diagonal case,
    /// `sum (sqrt(l1) - sqrt(l2))^2`, whatever the rotation.
    #[test]
    fn a_rotated_case_matches_the_diagonal_one() {
        let (c, s) = (0.6f64, 0.8f64);
        let q = Matrix::from_row_slice(
            3,
            3,
            &[c, -s, 0.0, s * 0.6, c * 0.6, -0.8, s * 0.8, c * 0.8, 0.6],
        )
        .unwrap();
        let qqt = q.matmul(&q.transpose()).unwrap();
        assert!(qqt.max_abs_diff(&Matrix::identity(3)) < 1e-12);
        let rotate = |l: &[f64]| {
            let ql = q.matmul(&Matrix::from_diagonal(l)).unwrap();
            let mut s = ql.matmul(&q.transpose()).unwrap();
            s.symmetrise();
            s
        };
        let a = Gaussian::new(vec![0.0; 3], rotate(&[4.0, 1.0, 0.25])).unwrap();
        let b = Gaussian::new(vec![0.0; 3], rotate(&[1.0, 9.0, 0.0])).unwrap();
        // (2 - 1)^2 + (1 - 3)^2 + (0.5 - 0)^2 = 5.25
        close(frechet_distance(&a, &b).unwrap(), 5.25, 1e-9);
    }

    #[test]
    fn the_square_root_squares_back() {
        let s =
            Matrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, -0.7, 0.5, -0.7, 2.0]).unwrap();
        let r = sqrt_psd(&s).unwrap();
        assert!(r.matmul(&r).unwrap().max_abs_diff(&s) < 1e-12);
        assert!(r.max_abs_diff(&r.transpose()) < 1e-15);
        // Tiny negative eigenvalues from rounding are clamped; clear ones are refused.
        let almost = Matrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0 - 1e-13]).unwrap();
        assert!(sqrt_psd(&almost).is_ok());
        let e =
            sqrt_psd(&Matrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not positive semi-definite"), "{e}");
        let e = sqrt_psd(&Matrix::from_row_slice(2, 2, &[f64::NAN; 4]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }

    #[test]
    fn fit_gives_the_mean_and_unbiased_covariance() {
        let x = Matrix::from_row_slice(4, 2, &[0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 2.0, 3.0]).unwrap();
        let g = Gaussian::fit(&x).unwrap();
        assert_eq!(g.mean, vec![1.0, 2.0]);
        // Each column: deviations ±1, sum of squares 4, over N - 1 = 3; the columns are uncorrelated.
        close(g.cov[(0, 0)], 4.0 / 3.0, 1e-15);
        close(g.cov[(1, 1)], 4.0 / 3.0, 1e-15);
        assert!(g.cov[(0, 1)].abs() < 1e-15);
    }

    #[test]
    fn fitted_samples_of_one_distribution_come_close_and_of_two_do_not() {
        let mut rng = crate::Rng::new(3);
        let mut draw = |n: usize, shift: f32| {
            Gaussian::fit(&crate::eval::gaussian_set(&mut rng, n, 4, shift)).unwrap()
        };
        let (a, b, c) = (draw(4000, 0.0), draw(4000, 0.0), draw(4000, 1.0));
        let same = frechet_distance(&a, &b).unwrap();
        let shifted = frechet_distance(&a, &c).unwrap();
        assert!(same < 0.02, "{same}");
        assert!((shifted - 4.0).abs() < 0.3, "{shifted}");
    }

    #[test]
    fn bad_input_is_an_error_that_says_what_was_expected() {
        let e = Gaussian::fit(&Matrix::zeros(5, 5)).unwrap_err().to_string();
        assert!(
            e.contains("5 features needs more than 5 samples") && e.contains("at least 6"),
            "{e}"
        );
        let mut x = Matrix::zeros(6, 2);
        x[(3, 1)] = f64::INFINITY;
        assert!(Gaussian::fit(&x)
            .unwrap_err()
            .to_string()
            .contains("finite"));
        let e = Gaussian::new(vec![0.0; 2], Matrix::zeros(3, 3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 x 2") && e.contains("3 x 3"), "{e}");
        let e = Gaussian::new(
            vec![0.0; 2],
            Matrix::from_row_slice(2, 2, &[1.0, 0.5, 0.0, 1.0]).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("symmetric"), "{e}");
        let e = frechet_distance(&diag(&[0.0], &[1.0]), &diag(&[0.0, 0.0], &[1.0, 1.0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("same dimension"), "{e}");
        let bad = Gaussian::new(
            vec![0.0; 2],
            Matrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]).unwrap(),
        )
        .unwrap();
        let e = frechet_distance(&bad, &diag(&[0.0, 0.0], &[1.0, 1.0]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive semi-definite"), "{e}");
    }
}
