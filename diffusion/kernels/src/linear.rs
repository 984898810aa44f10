//! The fully connected layer on the CPU: `y = x W^T + b` for `x` of `[N, I]`, `W` of `[O, I]`
//! and `b` of `[O]`, with its backward pass
//!
//! ```text
//! dx = dy W          [N, I]
//! dW = dy^T x        [O, I]
//! db = sum_n dy[n]   [O]
//! ```
//!
//! It exists so that a layer of a few thousand multiply-adds costs no more than its arithmetic:
//! candle's own matrix product asks for the thread count on every call, which, without
//! `RAYON_NUM_THREADS`, reads `/proc/cpuinfo` each time.

use candle_core::{Layout, Result, Shape, Tensor};
use gemm::Parallelism;

use super::gemm::{sgemm, with_f32, Mat};
use super::op::{apply, grad_for, F32Op3, Grads3};

/// The sizes `(N, I, O)` of `x [N, I]`, `W [O, I]` and `b [O]`, or an error naming the shapes.
fn sizes(x: &[usize], w: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    match (x, w, b) {
        ([n, i], [o, i2], [o2]) if i == i2 && o == o2 => Ok((*n, *i, *o)),
        _ => candle_core::bail!(
            "linear: expected x [N, I], weight [O, I] and bias [O], got {x:?}, {w:?} and {b:?}"
        ),
    }
}

/// `y = x W^T + b`.
fn forward(x: &[f32], wt: &[f32], b: &[f32], n: usize, i: usize, o: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * o];
    sgemm(
        n,
        o,
        i,
        &mut y,
        o,
        false,
        Mat::rows(x, i),
        Mat::rows_t(wt, i),
        Parallelism::None,
    );
    for row in y.chunks_exact_mut(o) {
        row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
    }
    y
}

/// `x W^T + b` as an op over `(x, W, b)`.
struct Linear;

impl F32Op3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn forward(
        &self,
        [(x, lx), (wt, lw), (b, lb)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let (n, i, o) = sizes(lx.dims(), lw.dims(), lb.dims())?;
        Ok((forward(x, wt, b, n, i, o), Shape::from((n, o))))
    }

    fn backward(&self, [x, wt, b]: [&Tensor; 3], _res: &Tensor, grad: &Tensor) -> Result<Grads3> {
        let (n, i, o) = sizes(x.dims(), wt.dims(), b.dims())?;
        with_f32(grad, |dy| {
            let dx = grad_for(x, || {
                let mut dx = vec![0f32; n * i];
                with_f32(wt, |w| {
                    let (lhs, rhs) = (Mat::rows(dy, o), Mat::rows(w, i));
                    sgemm(n, i, o, &mut dx, i, false, lhs, rhs, Parallelism::None);
                    Ok(dx)
                })
            })?;
            let dw = grad_for(wt, || {
                let mut dw = vec![0f32; o * i];
                with_f32(x, |xv| {
                    let (lhs, rhs) = (Mat::rows_t(dy, o), Mat::rows(xv, i));
                    sgemm(o, i, n, &mut dw, i, false, lhs, rhs, Parallelism::None);
                    Ok(dw)
                })
            })?;
            let db = grad_for(b, || {
                let mut db = vec![0f32; o];
                for row in dy.chunks_exact(o) {
                    db.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                Ok(db)
            })?;
            Ok((dx, dw, db))
        })
    }
}

/// `x W^T + b` for CPU `f32` tensors.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    apply(Linear, [x, w, b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_close, check_grads, random};
    use candle_core::{Device, Var};

    /// Output and the three gradients against candle's own operations, on sizes that are not
    /// multiples of any vector width, and for a batch of one.
    #[test]
    fn matches_candle_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (n, i, o) in [(5, 7, 3), (1, 1024, 32), (128, 32, 1024)] {
            let x = Var::from_tensor(&random(&[n, i], 1, &dev)?)?;
            let w = Var::from_tensor(&random(&[o, i], 2, &dev)?)?;
            let b = Var::from_tensor(&random(&[o], 3, &dev)?)?;
            let up = random(&[n, o], 4, &dev)?;
            let vars = [
                (x.as_tensor(), "dx"),
                (w.as_tensor(), "dw"),
                (b.as_tensor(), "db"),
            ];
            let fast = linear(&x, &w, &b)?;
            let slow = x.matmul(&w.t()?)?.broadcast_add(&b)?;
            check_close(&fast, &slow, 1e-6, "linear output")?;
            check_grads([&fast, &slow], &up, &vars, 1e-6, "linear")?;
        }
        Ok(())
    }

    #[test]
    fn wrong_shapes_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        let e = linear(&x, &w, &b).unwrap_err().to_string();
        assert!(e.contains("weight [O, I]"), "{e}");
    }
}
