//! Row kernels of batch normalisation and the bias gradients, written with SSE (part of every
//! x86-64 processor) so that they run four lanes at a time. Each public function runs its SSE
//! part (`sse::*`, which handles a prefix of the row and says how long) and finishes the row with
//! plain code, which on other processors does all of it. Rows passed together have equal lengths.

/// `sum_p x[p]`.
pub fn sum(x: &[f32]) -> f32 {
    let (head, total) = sse::sum(x);
    total + x[head..].iter().sum::<f32>()
}

/// `sum_p (x[p] - m)^2`.
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let (head, total) = sse::sum_sq_dev(x, m);
    total + x[head..].iter().map(|v| (v - m) * (v - m)).sum::<f32>()
}

/// `g = dy`, or `dy` where `y > 0` and 0 elsewhere when `relu`.
#[inline(always)]
fn masked(y: f32, dy: f32, relu: bool) -> f32 {
    if relu && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// `(sum_p g[p], sum_p g[p] (x[p] - m), sum_p (x[p] - m))` with `g` as in [`masked`].
pub fn grad_sums(x: &[f32], y: &[f32], dy: &[f32], m: f32, relu: bool) -> [f32; 3] {
    let n = x.len().min(y.len()).min(dy.len());
    let (head, [mut sg, mut sgx, mut sx]) = sse::grad_sums(&x[..n], &y[..n], &dy[..n], m, relu);
    for p in head..n {
        let g = masked(y[p], dy[p], relu);
        sg += g;
        sgx += g * (x[p] - m);
        sx += x[p] - m;
    }
    [sg, sgx, sx]
}

/// `out[p] = a g[p] + (x[p] - m) k + d` for `coef = [m, a, k, d]`, with `g` as in [`masked`].
pub fn bn_dx(out: &mut [f32], x: &[f32], y: &[f32], dy: &[f32], coef: [f32; 4], relu: bool) {
    let n = out.len().min(x.len()).min(y.len()).min(dy.len());
    let head = sse::bn_dx(&mut out[..n], &x[..n], &y[..n], &dy[..n], coef, relu);
    let [m, a, k, d] = coef;
    for p in head..n {
        out[p] = a * masked(y[p], dy[p], relu) + (x[p] - m) * k + d;
    }
}

/// `out[p] = (x[p] - m) a + b`, then `max(., 0)` when `relu`.
pub fn affine(out: &mut [f32], x: &[f32], m: f32, a: f32, b: f32, relu: bool) {
    let n = out.len().min(x.len());
    let head = sse::affine(&mut out[..n], &x[..n], m, a, b, relu);
    for p in head..n {
        let v = (x[p] - m) * a + b;
        out[p] = if relu && v < 0.0 { 0.0 } else { v }; // NaN passes, as in PyTorch
    }
}

#[cfg(target_arch = "x86_64")]
mod sse {
    use std::arch::x86_64::*;

    /// The sum of the four lanes.
    #[inline(always)]
    fn hsum(v: __m128) -> f32 {
        let mut lanes = [0f32; 4];
        // SAFETY: `lanes` holds four values.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }

    // Each function below takes `head` from the shortest of its rows, so that each load or
    // store at `p` stays inside every row it touches; SSE is part of x86-64.

    pub fn sum(x: &[f32]) -> (usize, f32) {
        let head = x.len() / 8 * 8;
        // SAFETY: loads at `p` and `p + 4` with `p + 8 <= head <= x.len()`; SSE is always there.
        unsafe {
            let (mut a, mut b) = (_mm_setzero_ps(), _mm_setzero_ps());
            let ptr = x.as_ptr();
            for p in (0..head).step_by(8) {
                a = _mm_add_ps(a, _mm_loadu_ps(ptr.add(p)));
                b = _mm_add_ps(b, _mm_loadu_ps(ptr.add(p + 4)));
            }
            (head, hsum(_mm_add_ps(a, b)))
        }
    }

    pub fn sum_sq_dev(x: &[f32], m: f32) -> (usize, f32) {
        let head = x.len() / 8 * 8;
        // SAFETY: loads at `p` and `p + 4` with `p + 8 <= head <= x.len()`; SSE is always there.
        unsafe {
            let (mut a, mut b) = (_mm_setzero_ps(), _mm_setzero_ps());
            let (ptr, mv) = (x.as_ptr(), _mm_set1_ps(m));
            for p in (0..head).step_by(8) {
                let d0 = _mm_sub_ps(_mm_loadu_ps(ptr.add(p)), mv);
                let d1 = _mm_sub_ps(_mm_loadu_ps(ptr.add(p + 4)), mv);
                a = _mm_add_ps(a, _mm_mul_ps(d0, d0));
                b = _mm_add_ps(b, _mm_mul_ps(d1, d1));
            }
            (head, hsum(_mm_add_ps(a, b)))
        }
    }

    pub fn grad_sums(x: &[f32], y: &[f32], dy: &[f32], m: f32, relu: bool) -> (usize, [f32; 3]) {
        let head = x.len().min(y.len()).min(dy.len()) / 4 * 4;
        // SAFETY: four-value loads at `p` of `x`, `y` and `dy`, with `p + 4 <= head`, which is at
        // most each of their lengths; SSE is always there.
        unsafe {
            let (mut a, mut b, mut s) = (_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps());
            let (mv, zero) = (_mm_set1_ps(m), _mm_setzero_ps());
            for p in (0..head).step_by(4) {
                let mut g = _mm_loadu_ps(dy.as_ptr().add(p));
                if relu {
                    g = _mm_and_ps(g, _mm_cmpgt_ps(_mm_loadu_ps(y.as_ptr().add(p)), zero));
                }
                a = _mm_add_ps(a, g);
                let d = _mm_sub_ps(_mm_loadu_ps(x.as_ptr().add(p)), mv);
                b = _mm_add_ps(b, _mm_mul_ps(g, d));
                s = _mm_add_ps(s, d);
            }
            (head, [hsum(a), hsum(b), hsum(s)])
        }
    }

    pub fn bn_dx(
        out: &mut [f32],
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        coef: [f32; 4],
        relu: bool,
    ) -> usize {
        let head = out.len().min(x.len()).min(y.len()).min(dy.len()) / 4 * 4;
        let [m, a, k, d] = coef;
        // SAFETY: four-value loads and stores at `p` of `out`, `x`, `y` and `dy`, with
        // `p + 4 <= head`, which is at most each of their lengths; SSE is always there.
        unsafe {
            let (mv, av) = (_mm_set1_ps(m), _mm_set1_ps(a));
            let (kv, dv, zero) = (_mm_set1_ps(k), _mm_set1_ps(d), _mm_setzero_ps());
            for p in (0..head).step_by(4) {
                let mut g = _mm_loadu_ps(dy.as_ptr().add(p));
                if relu {
                    g = _mm_and_ps(g, _mm_cmpgt_ps(_mm_loadu_ps(y.as_ptr().add(p)), zero));
                }
                let xc = _mm_sub_ps(_mm_loadu_ps(x.as_ptr().add(p)), mv);
                let v = _mm_add_ps(_mm_add_ps(_mm_mul_ps(av, g), _mm_mul_ps(xc, kv)), dv);
                _mm_storeu_ps(out.as_mut_ptr().add(p), v);
            }
        }
        head
    }

    pub fn affine(out: &mut [f32], x: &[f32], m: f32, a: f32, b: f32, relu: bool) -> usize {
        let head = out.len().min(x.len()) / 4 * 4;
        // SAFETY: four-value loads of `x` and stores to `out` at `p`, with `p + 4 <= head`,
        // which is at most both lengths; SSE is always there.
        unsafe {
            let (mv, av) = (_mm_set1_ps(m), _mm_set1_ps(a));
            let (bv, zero) = (_mm_set1_ps(b), _mm_setzero_ps());
            for p in (0..head).step_by(4) {
                let xc = _mm_sub_ps(_mm_loadu_ps(x.as_ptr().add(p)), mv);
                let mut v = _mm_add_ps(_mm_mul_ps(xc, av), bv);
                if relu {
                    v = _mm_max_ps(zero, v); // a NaN in v passes through
                }
                _mm_storeu_ps(out.as_mut_ptr().add(p), v);
            }
        }
        head
    }
}

/// Elsewhere the plain code does whole rows.
#[cfg(not(target_arch = "x86_64"))]
mod sse {
    pub fn sum(_: &[f32]) -> (usize, f32) {
        (0, 0.0)
    }
    pub fn sum_sq_dev(_: &[f32], _: f32) -> (usize, f32) {
        (0, 0.0)
    }
    pub fn grad_sums(_: &[f32], _: &[f32], _: &[f32], _: f32, _: bool) -> (usize, [f32; 3]) {
        (0, [0.0; 3])
    }
    pub fn bn_dx(_: &mut [f32], _: &[f32], _: &[f32], _: &[f32], _: [f32; 4], _: bool) -> usize {
        0
    }
    pub fn affine(_: &mut [f32], _: &[f32], _: f32, _: f32, _: f32, _: bool) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of lengths around the lane widths, with values that make the ReLU mask matter.
    fn rows(len: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..len).map(|i| ((i * 7) % 11) as f32 - 4.5).collect();
        let y: Vec<f32> = (0..len).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 3) % 13) as f32 * 0.25 - 1.0)
            .collect();
        (x, y, dy)
    }

    #[test]
    fn row_kernels_match_plain_loops() {
        for len in [0, 1, 3, 4, 7, 8, 9, 16, 17, 64] {
            let (x, y, dy) = rows(len);
            let m = 0.3;
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
            assert!(close(sum(&x), x.iter().sum()));
            let sq: f32 = x.iter().map(|v| (v - m) * (v - m)).sum();
            assert!(close(sum_sq_dev(&x, m), sq));
            for relu in [false, true] {
                let g: Vec<f32> = (0..len)
                    .map(|p| if relu && y[p] <= 0.0 { 0.0 } else { dy[p] })
                    .collect();
                let [a, b, s] = grad_sums(&x, &y, &dy, m, relu);
                assert!(close(a, g.iter().sum()));
                let want: f32 = (0..len).map(|p| g[p] * (x[p] - m)).sum();
                assert!(close(b, want), "{b} vs {want}");
                assert!(close(s, x.iter().map(|v| v - m).sum()));
                let mut out = vec![0f32; len];
                let coef = [m, 1.5, -0.25, 0.125];
                bn_dx(&mut out, &x, &y, &dy, coef, relu);
                for p in 0..len {
                    assert!(close(out[p], 1.5 * g[p] - 0.25 * (x[p] - m) + 0.125));
                }
                affine(&mut out, &x, m, 2.0, -1.0, relu);
                for p in 0..len {
                    let v = (x[p] - m) * 2.0 - 1.0;
                    assert_eq!(out[p], if relu { v.max(0.0) } else { v });
                }
            }
        }
    }
}
