//! A dense matrix of `f64`, stored row by row: the classifier's features (one row per image) and
//! the covariances of the Fréchet distance. Element `(i, j)` is `data[i * cols + j]`.
//!
//! Products `A B` go through candle's matrix product on the CPU (in f64), the one costly
//! operation the scores need (`9,500 x 128` features against `500 x 128`); everything else is a
//! plain loop.
//!
//! ```
//! use diffusion::eval::Matrix;
//! let a = Matrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let ata = a.transpose().matmul(&a)?; // [3, 2] x [2, 3] = [3, 3]
//! assert_eq!(ata.shape(), (3, 3));
//! assert_eq!(ata[(0, 0)], 1.0 * 1.0 + 4.0 * 4.0);
//! assert_eq!(ata.trace(), 1.0 + 16.0 + 4.0 + 25.0 + 9.0 + 36.0);
//! # anyhow::Ok(())
//! ```

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// A `rows x cols` matrix of `f64`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// The `rows x cols` matrix whose rows, one after the other, are `data`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != rows * cols {
            bail!(
                "a {rows} x {cols} matrix needs {} values, got {}",
                rows * cols,
                data.len()
            );
        }
        Ok(Self { rows, cols, data })
    }

    /// [`Matrix::from_vec`] of a slice.
    pub fn from_row_slice(rows: usize, cols: usize, data: &[f64]) -> Result<Self> {
        Self::from_vec(rows, cols, data.to_vec())
    }

    /// All zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// `diag(values)`: `values` on the diagonal, 0 elsewhere.
    pub fn from_diagonal(values: &[f64]) -> Self {
        let n = values.len();
        let mut m = Self::zeros(n, n);
        for (i, &v) in values.iter().enumerate() {
            m[(i, i)] = v;
        }
        m
    }

    /// The `n x n` identity.
    pub fn identity(n: usize) -> Self {
        Self::from_diagonal(&vec![1.0; n])
    }

    pub fn nrows(&self) -> usize {
        self.rows
    }

    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn is_square(&self) -> bool {
        self.rows == self.cols
    }

    /// The values, row after row.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The values, row after row.
    pub fn iter(&self) -> std::slice::Iter<'_, f64> {
        self.data.iter()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows `start..start + n`, as a matrix of their own.
    pub fn rows(&self, start: usize, n: usize) -> Self {
        Self {
            rows: n,
            cols: self.cols,
            data: self.data[start * self.cols..(start + n) * self.cols].to_vec(),
        }
    }

    /// The rows `idx`, in that order, as a matrix of their own.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Self {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// `A^T`.
    pub fn transpose(&self) -> Self {
        let mut t = Self::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                t[(j, i)] = self[(i, j)];
            }
        }
        t
    }

    /// The product `A B`: `[m, k] x [k, n] = [m, n]`.
    pub fn matmul(&self, b: &Matrix) -> Result<Matrix> {
        if self.cols != b.rows {
            bail!(
                "cannot multiply a {} x {} matrix by a {} x {} one: the inner sizes differ",
                self.rows,
                self.cols,
                b.rows,
                b.cols
            );
        }
        if self.data.is_empty() || b.data.is_empty() {
            return Ok(Self::zeros(self.rows, b.cols));
        }
        let a_t = Tensor::from_slice(&self.data, (self.rows, self.cols), &Device::Cpu)?;
        let b_t = Tensor::from_slice(&b.data, (b.rows, b.cols), &Device::Cpu)?;
        let ab = a_t.matmul(&b_t)?; // [m, n]
        Self::from_vec(self.rows, b.cols, ab.flatten_all()?.to_vec1::<f64>()?)
    }

    /// The mean of each column: `mean_j = 1/rows sum_i A[i, j]`.
    pub fn column_means(&self) -> Vec<f64> {
        let mut mean = vec![0.0; self.cols];
        for i in 0..self.rows {
            for (m, v) in mean.iter_mut().zip(self.row(i)) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= self.rows as f64;
        }
        mean
    }

    /// `tr(A) = sum_i A[i, i]`.
    pub fn trace(&self) -> f64 {
        (0..self.rows.min(self.cols)).map(|i| self[(i, i)]).sum()
    }

    /// `max |A[i, j]|` (0 for an empty matrix).
    pub fn amax(&self) -> f64 {
        self.data.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// `max |A[i, j] - B[i, j]|`, for two matrices of one shape (infinite otherwise).
    pub fn max_abs_diff(&self, b: &Matrix) -> f64 {
        if self.shape() != b.shape() {
            return f64::INFINITY;
        }
        self.data
            .iter()
            .zip(&b.data)
            .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Every value times `factor`.
    pub fn scale(&mut self, factor: f64) {
        for v in &mut self.data {
            *v *= factor;
        }
    }

    /// `A <- (A + A^T) / 2`, in place, for a square `A`.
    pub fn symmetrise(&mut self) {
        for i in 0..self.rows {
            for j in i + 1..self.cols.min(self.rows) {
                let mean = 0.5 * (self[(i, j)] + self[(j, i)]);
                self[(i, j)] = mean;
                self[(j, i)] = mean;
            }
        }
    }
}

impl std::ops::Index<(usize, usize)> for Matrix {
    type Output = f64;
    fn index(&self, (i, j): (usize, usize)) -> &f64 {
        &self.data[i * self.cols + j]
    }
}

impl std::ops::IndexMut<(usize, usize)> for Matrix {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut f64 {
        &mut self.data[i * self.cols + j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_is_the_sum_over_the_inner_index() {
        let a = Matrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Matrix::from_row_slice(3, 2, &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]).unwrap();
        let ab = a.matmul(&b).unwrap();
        // row 0: 1*7 + 2*9 + 3*11 = 58, 1*8 + 2*10 + 3*12 = 64; row 1: 139, 154
        assert_eq!(ab.as_slice(), &[58.0, 64.0, 139.0, 154.0]);
        assert_eq!(a.transpose().as_slice(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(a.column_means(), vec![2.5, 3.5, 4.5]);
        assert_eq!(a.rows(1, 1).as_slice(), &[4.0, 5.0, 6.0]);
        assert_eq!(
            a.select_rows(&[1, 0]).as_slice(),
            &[4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
        );
        let e = a.matmul(&a).unwrap_err().to_string();
        assert!(e.contains("2 x 3") && e.contains("inner sizes"), "{e}");
        let e = Matrix::from_row_slice(2, 2, &[1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 4 values, got 1"), "{e}");
    }

    #[test]
    fn symmetrise_averages_the_two_triangles() {
        let mut m = Matrix::from_row_slice(2, 2, &[1.0, 3.0, 1.0, 2.0]).unwrap();
        m.symmetrise();
        assert_eq!(m.as_slice(), &[1.0, 2.0, 2.0, 2.0]);
        assert_eq!(Matrix::identity(3).trace(), 3.0);
        assert_eq!(m.max_abs_diff(&Matrix::identity(2)), 2.0);
    }
}
