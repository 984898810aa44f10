//! The 3x3 transposed convolution with stride 2, padding 1 and output padding 1 on the CPU
//! (`[N, I, H, W] -> [N, O, 2H, 2W]`, kernel `[I, O, 3, 3]`), as matrix products. Input pixel
//! `(iy, ix)` adds `W[i, o, kh, kw] x[i, iy, ix]` to output pixel `(2iy + kh - 1, 2ix + kw - 1)`:
//!
//! - forward: `cols_n = W^T x_n` (`W` seen as `[I, O*9]`), then the columns are added into the
//!   output at those pixels (col2im), on top of the bias;
//! - input gradient: `dx_n = W g(dy_n)`, where `g(dy_n)[o*9 + kh*3 + kw, iy*W + ix] =
//!   dy_n[o, 2iy + kh - 1, 2ix + kw - 1]` gathers the pixels each input pixel wrote to;
//! - weight gradient: `dW = sum_n x_n g(dy_n)^T`; bias gradient: the sum of `dy` per channel.

use candle_core::{Result, Tensor};

use super::conv::relu_in_place;
use super::convolution::ConvKind;
use super::gemm::{for_each_images, inner_parallelism, sgemm, sum_over_images, with_scratch, Mat};
use super::shape::{ConvShape, Filter};

/// Adds `cols` (`[o*9, h*w]`) into `y` (`[o, 2h, 2w]`) at the pixels the kernel reaches.
pub fn col2im_s2(cols: &[f32], o: usize, h: usize, w: usize, y: &mut [f32]) {
    let (hw, w2) = (h * w, 2 * w);
    for oo in 0..o {
        let plane = &mut y[oo * 4 * hw..(oo + 1) * 4 * hw];
        for kh in 0..3 {
            for kw in 0..3 {
                let row = &cols[((oo * 3 + kh) * 3 + kw) * hw..][..hw];
                for iy in usize::from(kh == 0)..h {
                    let oy = 2 * iy + kh - 1;
                    let dst = &mut plane[oy * w2..(oy + 1) * w2];
                    let src = &row[iy * w..(iy + 1) * w];
                    match kw {
                        0 => {
                            for ix in 1..w {
                                dst[2 * ix - 1] += src[ix];
                            }
                        }
                        1 => {
                            for ix in 0..w {
                                dst[2 * ix] += src[ix];
                            }
                        }
                        _ => {
                            for ix in 0..w {
                                dst[2 * ix + 1] += src[ix];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills `cols` (`[o*9, h*w]`) with `dy[o, 2iy + kh - 1, 2ix + kw - 1]` (zero at index -1), for
/// `dy` of `[o, 2h, 2w]`.
pub fn im2col_s2(dy: &[f32], o: usize, h: usize, w: usize, cols: &mut [f32]) {
    let (hw, w2) = (h * w, 2 * w);
    for oo in 0..o {
        let plane = &dy[oo * 4 * hw..(oo + 1) * 4 * hw];
        for kh in 0..3 {
            for kw in 0..3 {
                let row = &mut cols[((oo * 3 + kh) * 3 + kw) * hw..][..hw];
                for iy in 0..h {
                    let dst = &mut row[iy * w..(iy + 1) * w];
                    if kh == 0 && iy == 0 {
                        dst.fill(0.0);
                        continue;
                    }
                    let oy = 2 * iy + kh - 1;
                    let src = &plane[oy * w2..(oy + 1) * w2];
                    match kw {
                        0 => {
                            dst[0] = 0.0;
                            for ix in 1..w {
                                dst[ix] = src[2 * ix - 1];
                            }
                        }
                        1 => {
                            for ix in 0..w {
                                dst[ix] = src[2 * ix];
                            }
                        }
                        _ => {
                            for ix in 0..w {
                                dst[ix] = src[2 * ix + 1];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y = conv_transpose2d(x, w, stride 2, padding 1, output_padding 1) + b` for `x` `[n, c, h, w]`,
/// `f.weight` `[c, o, 3, 3]`, `f.bias` `[o]` (or no bias), written into `y` (`n * o * 4 * h * w`
/// values), then `max(y, 0)` if `f.relu`.
pub fn conv_transpose_forward_into(x: &[f32], s: ConvShape, f: Filter, y: &mut [f32]) {
    let ConvShape { n, c, h, w, o } = s;
    let (wt, b, relu) = (f.weight, f.bias, f.relu);
    let hw = h * w;
    let par = inner_parallelism(n);
    for_each_images(y, o * 4 * hw, |images, out| {
        with_scratch(o * 9 * hw, |cols| {
            for (j, img) in images.enumerate() {
                sgemm(
                    o * 9,
                    hw,
                    c,
                    cols,
                    hw,
                    false,
                    Mat::rows_t(wt, o * 9),
                    Mat::rows(&x[img * c * hw..(img + 1) * c * hw], hw),
                    par,
                );
                let y_img = &mut out[j * o * 4 * hw..(j + 1) * o * 4 * hw];
                match b {
                    Some(b) => {
                        for (plane, &bo) in y_img.chunks_exact_mut(4 * hw).zip(b) {
                            plane.fill(bo);
                        }
                    }
                    None => y_img.fill(0.0),
                }
                col2im_s2(cols, o, h, w, y_img);
                if relu {
                    relu_in_place(y_img);
                }
            }
        })
    });
}

/// `dx_n = W g(dy_n)` for `dy` `[n, o, 2h, 2w]`: the input gradient, `[n, c, h, w]`.
pub fn conv_transpose_input_grad(dy: &[f32], s: ConvShape, wt: &[f32]) -> Vec<f32> {
    let ConvShape { n, c, h, w, o } = s;
    let hw = h * w;
    let mut dx = vec![0f32; n * c * hw];
    let par = inner_parallelism(n);
    for_each_images(&mut dx, c * hw, |images, out| {
        with_scratch(o * 9 * hw, |cols| {
            for (j, img) in images.enumerate() {
                im2col_s2(&dy[img * o * 4 * hw..(img + 1) * o * 4 * hw], o, h, w, cols);
                sgemm(
                    c,
                    hw,
                    o * 9,
                    &mut out[j * c * hw..(j + 1) * c * hw],
                    hw,
                    false,
                    Mat::rows(wt, o * 9),
                    Mat::rows(cols, hw),
                    par,
                );
            }
        })
    });
    dx
}

/// `dW = sum_n x_n g(dy_n)^T`, `[c, o, 3, 3]`.
pub fn conv_transpose_weight_grad(x: &[f32], dy: &[f32], s: ConvShape) -> Vec<f32> {
    let ConvShape { n, c, h, w, o } = s;
    let hw = h * w;
    let par = inner_parallelism(n);
    sum_over_images(n, c * o * 9, |images, acc| {
        with_scratch(o * 9 * hw, |cols| {
            for img in images {
                im2col_s2(&dy[img * o * 4 * hw..(img + 1) * o * 4 * hw], o, h, w, cols);
                sgemm(
                    c,
                    o * 9,
                    hw,
                    acc,
                    o * 9,
                    true,
                    Mat::rows(&x[img * c * hw..(img + 1) * c * hw], hw),
                    Mat::rows_t(cols, hw),
                    par,
                );
            }
        })
    })
}

/// `conv_transpose2d(x, w, stride 2, padding 1, output_padding 1) + b` for CPU `f32` tensors.
pub fn conv_transpose3x3_s2(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::convolution::conv(ConvKind::Transpose3x3S2, x, w, b)
}
