//! 2x2 max pooling with stride 2 on the CPU: `y[n, c, i, j] = max` of the window
//! `x[n, c, 2i..2i+2, 2j..2j+2]` (a last odd row or column is dropped). As in PyTorch, the
//! maximum is the first largest value in row-major order, or the first NaN (which propagates),
//! and the backward pass sends the whole gradient of a window there.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::gemm::{cpu_f32, for_each_images, with_f32};
use super::shape::dims4;

/// The offsets of a window's four values from its top-left one, in row-major order.
fn window(w: usize) -> [usize; 4] {
    [0, 1, w, w + 1]
}

/// The index (0..4) of the first maximum among the window's values (or of its first NaN).
fn argmax(plane: &[f32], top_left: usize, w: usize) -> usize {
    let offs = window(w);
    let mut best = 0;
    for k in 1..4 {
        let (v, b) = (plane[top_left + offs[k]], plane[top_left + offs[best]]);
        if b.is_nan() {
            break;
        }
        if v > b || v.is_nan() {
            best = k;
        }
    }
    best
}

fn forward(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![0f32; n * c * ho * wo];
    for_each_images(&mut y, c * ho * wo, |images, out| {
        let first = images.start * c;
        for (j, oplane) in out.chunks_exact_mut(ho * wo).enumerate() {
            let plane = &x[(first + j) * h * w..(first + j + 1) * h * w];
            for i in 0..ho {
                for jj in 0..wo {
                    let tl = 2 * i * w + 2 * jj;
                    let (a, b) = (plane[tl], plane[tl + 1]);
                    let (c, d) = (plane[tl + w], plane[tl + w + 1]);
                    let m = a.max(b).max(c).max(d);
                    // `max` skips NaN; PyTorch's pooling returns it.
                    oplane[i * wo + jj] = if m.is_nan() || (a + b + c + d).is_nan() {
                        plane[tl + window(w)[argmax(plane, tl, w)]]
                    } else {
                        m
                    };
                }
            }
        }
    });
    y
}

fn backward(x: &[f32], dy: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0f32; n * c * h * w];
    let offs = window(w);
    for_each_images(&mut dx, c * h * w, |images, out| {
        let first = images.start * c;
        for (j, dplane) in out.chunks_exact_mut(h * w).enumerate() {
            let plane = &x[(first + j) * h * w..(first + j + 1) * h * w];
            let gplane = &dy[(first + j) * ho * wo..(first + j + 1) * ho * wo];
            for i in 0..ho {
                for jj in 0..wo {
                    let tl = 2 * i * w + 2 * jj;
                    let v = offs.map(|o| plane[tl + o]);
                    let k = if (v[0] + v[1] + v[2] + v[3]).is_nan() {
                        argmax(plane, tl, w)
                    } else {
                        // The first of the largest values, without NaN to care about.
                        let m = v[0].max(v[1]).max(v[2]).max(v[3]);
                        v.iter().position(|&a| a == m).unwrap_or(0)
                    };
                    dplane[tl + offs[k]] = gplane[i * wo + jj];
                }
            }
        }
    });
    dx
}

/// 2x2 max pooling as a custom op.
struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max_pool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l, "max_pool2x2 input")?;
        let y = forward(cpu_f32(s, l)?, n, c, h, w);
        Ok((CpuStorage::F32(y), Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let dx = with_f32(x, |xv| with_f32(grad, |g| Ok(backward(xv, g, n, c, h, w))))?;
        Ok(Some(Tensor::from_vec(dx, (n, c, h, w), x.device())?))
    }
}

/// 2x2 max pooling for CPU `f32` tensors.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2x2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_close, grads_of, random};
    use candle_core::{Device, Var};

    #[test]
    fn nan_propagates_and_takes_the_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(
            vec![1f32, f32::NAN, 0., 2., 5., 2., 3., f32::NAN],
            (1, 1, 2, 4),
            &dev,
        )?)?;
        let y = max_pool2x2(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(y[0].is_nan() && y[1].is_nan());
        let up = Tensor::from_vec(vec![10f32, 20.], (1, 1, 1, 2), &dev)?;
        let g = grads_of(&max_pool2x2(&x)?, &up, &[x.as_tensor()])?;
        assert_eq!(
            g[0].flatten_all()?.to_vec1::<f32>()?,
            [0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 20.0]
        );
        Ok(())
    }

    #[test]
    fn hand_worked_window_with_a_tie() -> Result<()> {
        // One 2x4 plane: windows [[1, 5], [5, 2]] (tie: the first 5 wins) and [[0, -1], [3, 3]].
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(
            vec![1f32, 5., 0., -1., 5., 2., 3., 3.],
            (1, 1, 2, 4),
            &dev,
        )?)?;
        let y = max_pool2x2(&x)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5.0, 3.0]);
        let up = Tensor::from_vec(vec![10f32, 20.], (1, 1, 1, 2), &dev)?;
        let g = grads_of(&y, &up, &[x.as_tensor()])?;
        assert_eq!(
            g[0].flatten_all()?.to_vec1::<f32>()?,
            [0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0, 0.0]
        );
        Ok(())
    }

    /// Routes each window's gradient to its maximum by a plain scan of the four values.
    fn routed(x: &[f32], up: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
        let mut dx = vec![0f32; x.len()];
        for p in 0..planes {
            for i in 0..h / 2 {
                for j in 0..w / 2 {
                    let idx = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(a, b)| p * h * w + (2 * i + a) * w + 2 * j + b);
                    let mut best = idx[0];
                    for &k in &idx[1..] {
                        if x[k] > x[best] {
                            best = k;
                        }
                    }
                    dx[best] = up[(p * (h / 2) + i) * (w / 2) + j];
                }
            }
        }
        dx
    }

    #[test]
    fn matches_reference_forward_and_argmax_routing() -> Result<()> {
        let dev = Device::Cpu;
        for shape in [[8usize, 32, 16, 16], [8, 64, 8, 8], [1, 3, 5, 7]] {
            let [n, c, h, w] = shape;
            // ReLU makes ties at zero, as in the network.
            let x = Var::from_tensor(&random(&shape, 40, &dev)?.relu()?)?;
            let y = max_pool2x2(&x)?;
            if h % 2 == 0 && w % 2 == 0 {
                let want = crate::reference::max_pool2x2(&x)?;
                check_close(&y, &want, 1e-7, "max pool forward")?;
            }
            let up = random(&[n, c, h / 2, w / 2], 41, &dev)?;
            let g = grads_of(&y, &up, &[x.as_tensor()])?;
            let want = routed(
                &x.flatten_all()?.to_vec1()?,
                &up.flatten_all()?.to_vec1()?,
                n * c,
                h,
                w,
            );
            assert_eq!(g[0].flatten_all()?.to_vec1::<f32>()?, want);
        }
        Ok(())
    }
}
