//! The eigendecomposition of a symmetric matrix, `S = V diag(l) V^T` with `V` orthogonal, by
//! Jacobi's method: each rotation `J` in a plane `(p, q)` is chosen so that `J^T S J` has a zero
//! at `(p, q)`,
//!
//! ```text
//! theta = (S_qq - S_pp) / (2 S_pq),   t = tan(phi) = sign(theta) / (|theta| + sqrt(theta^2 + 1)),
//! c = 1 / sqrt(t^2 + 1),   s = t c,   S <- J^T S J,   V <- V J
//! ```
//!
//! Sweeping every plane in turn shrinks the off-diagonal part quadratically; it stops once that
//! part is rounding next to the whole. Then the diagonal holds the eigenvalues and the columns
//! of `V` the eigenvectors. The method is slow for large matrices (`O(n^3)` a sweep) but exact to
//! rounding, and the scores only need `128 x 128`.

use anyhow::{bail, Result};

use super::Matrix;

/// Sweeps over all planes before giving up.
const MAX_SWEEPS: usize = 100;

/// The eigenvalues `l` of the symmetric `s` and its eigenvectors `V` (column `k` for `l[k]`),
/// with `s = V diag(l) V^T`; in no particular order.
pub fn symmetric_eigen(s: &Matrix) -> Result<(Vec<f64>, Matrix)> {
    let n = s.nrows();
    if !s.is_square() {
        bail!(
            "an eigendecomposition needs a square matrix, got {} x {}",
            n,
            s.ncols()
        );
    }
    if s.iter().any(|v| !v.is_finite()) {
        bail!("the matrix to decompose holds a NaN or an infinity");
    }
    let mut a = s.clone();
    a.symmetrise();
    let mut v = Matrix::identity(n);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| a[(p, q)] * a[(p, q)])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * total {
            let values = (0..n).map(|i| a[(i, i)]).collect();
            return Ok((values, v));
        }
        for p in 0..n {
            for q in p + 1..n {
                rotate(&mut a, &mut v, p, q);
            }
        }
    }
    bail!("the eigendecomposition did not converge in {MAX_SWEEPS} sweeps")
}

/// One Jacobi rotation in the plane `(p, q)`: `a <- J^T a J` (zeroing `a[p, q]`), `v <- v J`.
fn rotate(a: &mut Matrix, v: &mut Matrix, p: usize, q: usize) {
    let apq = a[(p, q)];
    if apq == 0.0 {
        return;
    }
    let theta = (a[(q, q)] - a[(p, p)]) / (2.0 * apq);
    let t = if theta.abs() > 1e150 {
        0.5 / theta // theta^2 would overflow; t = 1 / (2 theta) to first order
    } else {
        let sign = if theta < 0.0 { -1.0 } else { 1.0 };
        sign / (theta.abs() + (theta * theta + 1.0).sqrt())
    };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    let n = a.nrows();
    // columns p and q: a J
    for k in 0..n {
        let (akp, akq) = (a[(k, p)], a[(k, q)]);
        a[(k, p)] = c * akp - s * akq;
        a[(k, q)] = s * akp + c * akq;
    }
    // rows p and q: J^T (a J)
    for k in 0..n {
        let (apk, aqk) = (a[(p, k)], a[(q, k)]);
        a[(p, k)] = c * apk - s * aqk;
        a[(q, k)] = s * apk + c * aqk;
    }
    a[(p, q)] = 0.0;
    a[(q, p)] = 0.0;
    for k in 0..n {
        let (vkp, vkq) = (v[(k, p)], v[(k, q)]);
        v[(k, p)] = c * vkp - s * vkq;
        v[(k, q)] = s * vkp + c * vkq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `V diag(l) V^T`.
    fn rebuild(l: &[f64], v: &Matrix) -> Matrix {
        v.matmul(&Matrix::from_diagonal(l))
            .unwrap()
            .matmul(&v.transpose())
            .unwrap()
    }

    #[test]
    fn a_two_by_two_case_by_hand() {
        // [[2, 1], [1, 2]] has the eigenvalues 1 and 3, eigenvectors (1, -1) and (1, 1) / sqrt 2.
        let s = Matrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]).unwrap();
        let (mut l, v) = symmetric_eigen(&s).unwrap();
        assert!(rebuild(&l, &v).max_abs_diff(&s) < 1e-14);
        l.sort_by(f64::total_cmp);
        assert!(
            (l[0] - 1.0).abs() < 1e-14 && (l[1] - 3.0).abs() < 1e-14,
            "{l:?}"
        );
    }

    #[test]
    fn a_random_symmetric_matrix_is_rebuilt_from_orthogonal_eigenvectors() {
        let n = 40;
        let x = crate::eval::gaussian_set(&mut crate::Rng::new(5), n + 3, n, 0.0);
        let mut s = x.transpose().matmul(&x).unwrap(); // symmetric PSD, n x n
        s[(0, 1)] -= 30.0; // and an indefinite one
        s[(1, 0)] -= 30.0;
        let (l, v) = symmetric_eigen(&s).unwrap();
        let scale = s.amax();
        assert!(rebuild(&l, &v).max_abs_diff(&s) < 1e-12 * scale);
        let vtv = v.transpose().matmul(&v).unwrap();
        assert!(vtv.max_abs_diff(&Matrix::identity(n)) < 1e-12);
        assert!((l.iter().sum::<f64>() - s.trace()).abs() < 1e-10 * scale);
    }

    #[test]
    fn bad_input_is_an_error() {
        let e = symmetric_eigen(&Matrix::zeros(2, 3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("square") && e.contains("2 x 3"), "{e}");
        let mut m = Matrix::identity(2);
        m[(1, 1)] = f64::NAN;
        assert!(symmetric_eigen(&m).unwrap_err().to_string().contains("NaN"));
        let (l, _) = symmetric_eigen(&Matrix::zeros(3, 3)).unwrap();
        assert_eq!(l, vec![0.0; 3]);
    }
}
