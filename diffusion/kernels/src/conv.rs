//! The 3x3 convolution (stride 1, padding 1) on the CPU. Where the direct kernels of
//! [`super::direct`] apply (AVX-512, the network's plane sizes) they do the work; otherwise it
//! is done as matrix products:
//!
//! - forward: `y_n = W col(x_n) + b`, with `W` seen as `[O, I*9]` and `col(x_n)` the `[I*9, H*W]`
//!   matrix of shifted copies of the image (im2col);
//! - input gradient: `dx = conv3x3(dy, W')` with `W'[i, o, kh, kw] = W[o, i, 2-kh, 2-kw]`;
//! - weight gradient: `dW = sum_n dy_n col(x_n)^T`; bias gradient: `db[o] = sum_{n,p} dy[n, o, p]`.

use super::convolution::ConvKind;
use super::gemm::{for_each_images, inner_parallelism, sgemm, sum_over_images, with_scratch, Mat};
use super::shape::{ConvShape, Filter};
use candle_core::{Result, Tensor};

/// Fills `col` (`[c*9, h*w]`) with `col[i*9 + kh*3 + kw, y*w + x] = x[i, y+kh-1, x+kw-1]`, zero
/// outside the image.
///
/// Each row of `col` is the image plane shifted by `off = (kh-1)*w + (kw-1)` in its flattened
/// order: one copy, then zeros where the shift left the plane and, for `kw != 1`, on the column
/// that wrapped around from the neighbouring image row.
pub fn im2col3x3(x: &[f32], c: usize, h: usize, w: usize, col: &mut [f32]) {
    let hw = h * w;
    for i in 0..c {
        let img = &x[i * hw..(i + 1) * hw];
        for kh in 0..3 {
            for kw in 0..3 {
                let row = &mut col[((i * 3 + kh) * 3 + kw) * hw..][..hw];
                let off = (kh * w + kw) as isize - (w + 1) as isize;
                let lo = (-off).clamp(0, hw as isize) as usize;
                let hi = (hw as isize - off).clamp(0, hw as isize) as usize;
                row[..lo].fill(0.0);
                if lo < hi {
                    let src = (lo as isize + off) as usize;
                    row[lo..hi].copy_from_slice(&img[src..src + (hi - lo)]);
                }
                row[hi.max(lo)..].fill(0.0);
                match kw {
                    0 => row.iter_mut().step_by(w).for_each(|v| *v = 0.0),
                    2 => row[w - 1..].iter_mut().step_by(w).for_each(|v| *v = 0.0),
                    _ => {}
                }
            }
        }
    }
}

/// `y = conv3x3(x, w) + b` for `x` `[n, c, h, w]`, `w` `[o, c, 3, 3]`, `b` `[o]` (or no bias).
pub fn conv3x3_forward(x: &[f32], s: ConvShape, wt: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; s.n * s.o * s.hw()];
    conv3x3_forward_into(x, s, Filter::new(wt, b), &mut y);
    y
}

/// `y = conv3x3(x, f.weight) + f.bias` written into `y` (`n * o * h * w` values), then
/// `max(y, 0)` if `f.relu`: with the direct kernels of [`super::direct`] where they apply, else
/// as matrix products.
pub fn conv3x3_forward_into(x: &[f32], s: ConvShape, f: Filter, y: &mut [f32]) {
    if !super::direct::conv3x3_into(x, s, f, y) {
        gemm_forward_into(x, s, f, y);
    }
}

/// `dx = conv3x3(dy, W')`, `W'[i, o, kh, kw] = W[o, i, 2-kh, 2-kw]`: the input gradient
/// `[n, c, h, w]` for the output gradient `dy` `[n, o, h, w]`.
pub fn conv3x3_input_grad(dy: &[f32], s: ConvShape, wt: &[f32]) -> Vec<f32> {
    conv3x3_forward(dy, s.swapped(), &flip_transpose(wt, s.o, s.c), None)
}

/// The forward pass as matrix products (im2col), whatever the processor and plane size.
#[cfg(test)]
pub(crate) fn conv3x3_forward_gemm(x: &[f32], s: ConvShape, f: Filter) -> Vec<f32> {
    let mut y = vec![0f32; s.n * s.o * s.hw()];
    gemm_forward_into(x, s, f, &mut y);
    y
}

/// `y_n = W col(x_n) + b` for each image.
fn gemm_forward_into(x: &[f32], s: ConvShape, f: Filter, y: &mut [f32]) {
    let ConvShape { n, c, h, w, o } = s;
    let (wt, b, relu) = (f.weight, f.bias, f.relu);
    let hw = h * w;
    let k = c * 9;
    let par = inner_parallelism(n);
    for_each_images(y, o * hw, |images, out| {
        with_scratch(k * hw, |col| {
            for (j, img) in images.enumerate() {
                let y_img = &mut out[j * o * hw..(j + 1) * o * hw];
                im2col3x3(&x[img * c * hw..(img + 1) * c * hw], c, h, w, col);
                if let Some(b) = b {
                    for (row, &bo) in y_img.chunks_exact_mut(hw).zip(b) {
                        row.fill(bo);
                    }
                }
                sgemm(
                    o,
                    hw,
                    k,
                    y_img,
                    hw,
                    b.is_some(),
                    Mat::rows(wt, k),
                    Mat::rows(col, hw),
                    par,
                );
                if relu {
                    relu_in_place(y_img);
                }
            }
        })
    });
}

/// `v = max(v, 0)`, except that a NaN stays NaN (as in PyTorch, so that a diverging run shows).
pub fn relu_in_place(y: &mut [f32]) {
    for v in y {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// `W'[i, o, kh, kw] = W[o, i, 2-kh, 2-kw]`: the kernel whose convolution is the input gradient.
pub fn flip_transpose(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut f = vec![0f32; c * o * 9];
    for oo in 0..o {
        for i in 0..c {
            for t in 0..9 {
                f[(i * o + oo) * 9 + (8 - t)] = wt[(oo * c + i) * 9 + t];
            }
        }
    }
    f
}

/// `dW[o, i*9 + t] = sum_n sum_p dy[n, o, p] col(x_n)[i*9 + t, p]`: with the direct kernels
/// of [`super::direct`] where they apply, else as matrix products.
pub fn conv3x3_weight_grad(x: &[f32], dy: &[f32], s: ConvShape) -> Vec<f32> {
    super::direct::weight_grad(x, dy, s).unwrap_or_else(|| conv3x3_weight_grad_gemm(x, dy, s))
}

/// The weight gradient as matrix products (im2col), whatever the processor and plane size.
pub(crate) fn conv3x3_weight_grad_gemm(x: &[f32], dy: &[f32], s: ConvShape) -> Vec<f32> {
    let ConvShape { n, c, h, w, o } = s;
    let hw = h * w;
    let k = c * 9;
    let par = inner_parallelism(n);
    sum_over_images(n, o * k, |images, acc| {
        with_scratch(k * hw, |col| {
            for img in images {
                im2col3x3(&x[img * c * hw..(img + 1) * c * hw], c, h, w, col);
                sgemm(
                    o,
                    k,
                    hw,
                    acc,
                    k,
                    true,
                    Mat::rows(&dy[img * o * hw..(img + 1) * o * hw], hw),
                    Mat::rows_t(col, hw),
                    par,
                );
            }
        })
    })
}

/// `db[o] = sum_{n, p} dy[n, o, p]` for `dy` `[n, o, p]` (`p` values per channel).
pub fn bias_grad(dy: &[f32], n: usize, o: usize, p: usize) -> Vec<f32> {
    sum_over_images(n, o, |images, acc| {
        for img in images {
            for (a, row) in acc
                .iter_mut()
                .zip(dy[img * o * p..(img + 1) * o * p].chunks_exact(p))
            {
                *a += super::simd::sum(row);
            }
        }
    })
}

/// `conv2d(x, w, padding = 1) + b` for CPU `f32` tensors.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::convolution::conv(ConvKind::Conv3x3, x, w, b)
}
