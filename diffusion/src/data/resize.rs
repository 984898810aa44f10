//! Pillow's bilinear resize of 8-bit grey images, reproduced exactly.
//!
//! The course resizes FashionMNIST with torchvision's `Resize((16, 16))`, which for a PIL image
//! calls `Image.resize((16, 16), Image.BILINEAR)`. Pillow resamples with a triangle filter widened
//! by the downscale factor (so it also averages, an antialiased resize), in two separable passes,
//! horizontal then vertical, each rounded back to u8:
//!
//! - `scale = in / out`, `filterscale = max(scale, 1)`, `support = 1 * filterscale`;
//! - output pixel `i` is centred on `c = (i + 0.5) * scale` and reads input pixels
//!   `j` in `[trunc(c - support + 0.5), trunc(c + support + 0.5))` (clipped to the image);
//! - `w_j = tri((j - c + 0.5) / filterscale)` with `tri(x) = max(0, 1 - |x|)`, then `w_j /= sum w`;
//! - 8-bit images use fixed point: `k_j = round(w_j * 2^22)` and
//!   `out = clamp((2^21 + sum_j k_j * in_j) >> 22, 0, 255)`.
//!
//! For 28 -> 16, `scale = 1.75`: each output pixel mixes 3 or 4 input pixels per axis.
//! Checked byte for byte against Pillow in `tests/fixtures/resize/`.

use anyhow::{bail, Result};

/// Fixed-point fraction bits of Pillow's 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Pillow's bilinear filter: `tri(x) = max(0, 1 - |x|)`.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Fixed-point weights of one axis: output `i` reads `len[i]` inputs from `first[i]` on, with
/// weights `coeffs[i * ksize ..]`.
#[derive(Debug, Clone)]
struct Axis {
    first: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    coeffs: Vec<i32>,
}

impl Axis {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in)`.
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0, widened when shrinking
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut first = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut coeffs = vec![0i32; out_size * ksize];
        for i in 0..out_size {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as i64` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n)
                .map(|x| triangle(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            for (x, wx) in w.iter().enumerate() {
                let k = if total != 0.0 { wx / total } else { *wx };
                let fixed = k * f64::from(1u32 << PRECISION_BITS);
                // Round half away from zero, then truncate, as Pillow does.
                coeffs[i * ksize + x] = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            first.push(xmin);
            len.push(n);
        }
        Self {
            first,
            len,
            ksize,
            coeffs,
        }
    }

    /// The weights of output `i`, applying to inputs `first[i]..first[i] + len[i]`.
    #[inline]
    fn weights(&self, i: usize) -> &[i32] {
        &self.coeffs[i * self.ksize..i * self.ksize + self.len[i]]
    }
}

/// Pillow's rounding back to u8: `clamp((2^21 + acc) >> 22, 0, 255)`, the `2^21` being already
/// in `acc`.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding term `2^21` every sum starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// A precomputed Pillow bilinear resize from `in_w x in_h` to `out_w x out_h` grey images.
#[derive(Debug, Clone)]
pub struct BilinearResize {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    horizontal: Axis,
    vertical: Axis,
}

impl BilinearResize {
    /// Precomputes the weights of both passes; every size must be at least 1.
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Result<Self> {
        if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
            bail!("cannot resize {in_w}x{in_h} to {out_w}x{out_h}: every size must be at least 1");
        }
        Ok(Self {
            in_w,
            in_h,
            out_w,
            out_h,
            horizontal: Axis::new(in_w, out_w),
            vertical: Axis::new(in_h, out_h),
        })
    }

    /// Resizes one row-major image of `in_w * in_h` bytes into `out` (`out_w * out_h` bytes).
    pub fn apply(&self, src: &[u8], out: &mut [u8]) -> Result<()> {
        if src.len() != self.in_w * self.in_h || out.len() != self.out_w * self.out_h {
            bail!(
                "resize {}x{} -> {}x{} needs {} input and {} output bytes, got {} and {}",
                self.in_w,
                self.in_h,
                self.out_w,
                self.out_h,
                self.in_w * self.in_h,
                self.out_w * self.out_h,
                src.len(),
                out.len()
            );
        }
        // Horizontal pass: in_h rows of out_w u8 pixels.
        let h = &self.horizontal;
        let mut mid = vec![0u8; self.out_w * self.in_h];
        for (row, mid_row) in src
            .chunks_exact(self.in_w)
            .zip(mid.chunks_exact_mut(self.out_w))
        {
            for (x, m) in mid_row.iter_mut().enumerate() {
                let taps = &row[h.first[x]..];
                let acc = h
                    .weights(x)
                    .iter()
                    .zip(taps)
                    .fold(HALF, |acc, (k, &p)| acc + k * i32::from(p));
                *m = clip8(acc);
            }
        }
        // Vertical pass, a whole output row at a time.
        let v = &self.vertical;
        let mut acc = vec![0i32; self.out_w];
        for (y, out_row) in out.chunks_exact_mut(self.out_w).enumerate() {
            acc.fill(HALF);
            for (j, k) in v.weights(y).iter().enumerate() {
                let start = (v.first[y] + j) * self.out_w;
                for (a, &p) in acc.iter_mut().zip(&mid[start..start + self.out_w]) {
                    *a += k * i32::from(p);
                }
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        Ok(())
    }

    /// Resizes one image into a new buffer.
    pub fn resize(&self, src: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.out_w * self.out_h];
        self.apply(src, &mut out)?;
        Ok(out)
    }
}

/// Resizes one `in_w x in_h` grey image to `out_w x out_h` as Pillow's `BILINEAR` does.
pub fn resize_bilinear(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<u8>> {
    BilinearResize::new(in_w, in_h, out_w, out_h)?.resize(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_for_28_to_16_match_the_triangle_by_hand() {
        // Output 0: centre 0.875, window [0, 3): distances (j + 0.5 - 0.875) / 1.75 are
        // -0.375/1.75, 0.625/1.75, 1.625/1.75, so weights 1.375, 1.125, 0.125 (over 1.75),
        // normalised by their sum 2.625: 11/21, 9/21, 1/21.
        let a = Axis::new(28, 16);
        assert_eq!(a.ksize, 5);
        assert_eq!((a.first[0], a.len[0]), (0, 3));
        let scale = f64::from(1u32 << 22);
        let want = [11.0 / 21.0, 9.0 / 21.0, 1.0 / 21.0].map(|w| (w * scale + 0.5) as i32);
        assert_eq!(&a.coeffs[..3], &want);
        // Output 1: centre 2.625, window [1, 4) since trunc(2.625 + 1.75 + 0.5) = 4; pixel 4 would
        // sit at distance 1.875/1.75 > 1 anyway. Weights (1.75 - |j + 0.5 - 2.625|): 0.625,
        // 1.625, 0.875 (pixel 1..3) over their sum 3.125.
        assert_eq!((a.first[1], a.len[1]), (1, 3));
        let want = [0.625, 1.625, 0.875].map(|w| (w / 3.125 * scale + 0.5) as i32);
        assert_eq!(&a.coeffs[5..8], &want);
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let r = BilinearResize::new(28, 28, 16, 16).unwrap();
        for v in 0..=255u8 {
            let out = r.resize(&[v; 28 * 28]).unwrap();
            assert!(out.iter().all(|&o| o == v), "constant {v} became {out:?}");
        }
        // Also when enlarging and for other shapes.
        let out = resize_bilinear(&[77; 5 * 3], 5, 3, 12, 9).unwrap();
        assert!(out.iter().all(|&o| o == 77));
    }

    #[test]
    fn same_size_is_the_identity() {
        let src: Vec<u8> = (0..=255).collect();
        assert_eq!(resize_bilinear(&src, 16, 16, 16, 16).unwrap(), src);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(BilinearResize::new(0, 28, 16, 16).is_err());
        let r = BilinearResize::new(28, 28, 16, 16).unwrap();
        assert!(r.resize(&[0; 100]).is_err());
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        in_w: usize,
        in_h: usize,
        out_w: usize,
        out_h: usize,
        input: Vec<u8>,
        output: Vec<u8>,
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }

    /// `tests/fixtures/resize/pil_bilinear.json` holds Pillow's own output
    /// (`Image.resize(size, BILINEAR)`, written by `make_fixture.py`); the match must be exact.
    #[test]
    fn matches_pillow_byte_for_byte() {
        let text = include_str!("../../tests/fixtures/resize/pil_bilinear.json");
        let fixture: Fixture = serde_json::from_str(text).unwrap();
        assert!(fixture.cases.len() >= 10);
        for c in &fixture.cases {
            let got = resize_bilinear(&c.input, c.in_w, c.in_h, c.out_w, c.out_h).unwrap();
            let diffs: Vec<_> = got
                .iter()
                .zip(&c.output)
                .enumerate()
                .filter(|(_, (g, w))| g != w)
                .collect();
            assert!(
                diffs.is_empty(),
                "{}: (index, (ours, pillow)) {diffs:?}",
                c.name
            );
        }
    }
}
