//! The 3x3 convolution (stride 1, padding 1) computed directly with AVX-512, without the im2col
//! copy: for planes of 16 x 16, 8 x 8 and 4 x 4 pixels (any plane whose width divides 16 and whose
//! pixel count is a multiple of 16), on processors that have AVX-512.
//!
//! Forward (and input gradient, the same kernel with the flipped kernel of
//! [`super::conv::flip_transpose`]): a plane is read as vectors of 16 consecutive pixels (one row
//! of 16, two rows of 8, four rows of 4). The tap `(kh, kw)` needs the same 16 pixels shifted by
//! `off = (kh - 1) w + (kw - 1)` in the flattened plane; a masked load reads them straight from the
//! input and puts zeros where the shifted pixel lies outside the image (the padding). A tile of
//! 8 output channels x 3 pixel vectors stays in 24 registers:
//!
//! ```text
//! y[o, v] = b[o] + sum_{i, kh, kw} W[o, i, kh, kw] x_i[v + off]
//! ```
//!
//! Weight gradient: the lanes run over 16 output channels, and each pixel adds its 9 neighbours
//! times the vector of `dy` at that pixel (see [`weight_grad`]):
//!
//! ```text
//! dW[o..o+16, i, kh, kw] += dy[n, o..o+16, y, x] x[n, i, y + kh - 1, x + kw - 1]
//! ```
//!
//! [`conv3x3_into`] and [`weight_grad`] return `false` / `None` where they do not apply, and the
//! callers then use the matrix products of [`super::conv`].

use std::ops::Range;

use super::gemm::{for_each_images, parallel_for, ranges, sum_over_images, PoolBuf, SharedMut};
use super::shape::{ConvShape, Filter};

/// Output channels per forward tile.
const OB: usize = 8;
/// Pixel vectors per forward tile.
const PV: usize = 3;

/// Can the direct kernels take planes of `h x w` on this processor, on the path in force
/// ([`crate::KernelPath::Fast`])?
pub fn applies(h: usize, w: usize) -> bool {
    w > 0
        && 16 % w == 0
        && (h * w).is_multiple_of(16)
        && crate::path() == crate::KernelPath::Fast
        && has_avx512()
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// Where the 9 taps read from, and which lanes are inside the image, for each vector of a plane.
struct Plane {
    hw: usize,
    /// Vectors of 16 pixels per plane.
    nv: usize,
    /// `off` of each tap `kh * 3 + kw`.
    offs: [isize; 9],
    /// `masks[v][t]`: bit `j` set when lane `j` of vector `v` reads a pixel inside the image.
    masks: Vec<[u16; 9]>,
    /// `cols[kw]`: the lanes whose column `x + kw - 1` lies inside the image (the same for every
    /// vector, as the width divides 16).
    cols: [u16; 3],
    /// `interior[v]`: every tap of vector `v` reads rows inside the image, so that `cols` are
    /// its masks (the first and last vectors of a plane are not).
    interior: Vec<bool>,
}

impl Plane {
    fn new(h: usize, w: usize) -> Self {
        let hw = h * w;
        let nv = hw / 16;
        let mut offs = [0isize; 9];
        for (t, off) in offs.iter_mut().enumerate() {
            *off = (t / 3) as isize * w as isize - w as isize + (t % 3) as isize - 1;
        }
        let masks = (0..nv)
            .map(|v| {
                let mut m = [0u16; 9];
                for (t, mask) in m.iter_mut().enumerate() {
                    for j in 0..16 {
                        let p = 16 * v + j;
                        let (y, x) = ((p / w) as isize, (p % w) as isize);
                        let (sy, sx) = (y + (t / 3) as isize - 1, x + (t % 3) as isize - 1);
                        if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                            *mask |= 1 << j;
                        }
                    }
                }
                m
            })
            .collect::<Vec<[u16; 9]>>();
        let mut cols = [0u16; 3];
        for (kw, col) in cols.iter_mut().enumerate() {
            for j in 0..16 {
                let sx = (j % w + kw) as isize - 1;
                if sx >= 0 && sx < w as isize {
                    *col |= 1 << j;
                }
            }
        }
        let interior = masks
            .iter()
            .map(|m| (0..9).all(|t| m[t] == cols[t % 3]))
            .collect();
        Self {
            hw,
            nv,
            offs,
            masks,
            cols,
            interior,
        }
    }
}

/// `wt` (`[o, c, 3, 3]`) rearranged for the tiles: for each block of `OB` output channels,
/// `[c][9][OB]`, then the channels left over one by one as `[c][9]`.
fn pack_weights(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut packed = Vec::with_capacity(o * c * 9);
    let full = o / OB * OB;
    for ob in (0..full).step_by(OB) {
        for i in 0..c {
            for t in 0..9 {
                packed.extend((ob..ob + OB).map(|oo| wt[(oo * c + i) * 9 + t]));
            }
        }
    }
    for oo in full..o {
        packed.extend_from_slice(&wt[oo * c * 9..(oo + 1) * c * 9]);
    }
    packed
}

/// `y = conv3x3(x, wt) + b` (then `max(y, 0)` with `relu`) for `x` `[n, c, h, w]`, `wt`
/// `[o, c, 3, 3]`, into `y` (`[n, o, h, w]`). Returns `false`, leaving `y` alone, where the
/// direct kernel does not apply.
pub fn conv3x3_into(x: &[f32], s: ConvShape, f: Filter, y: &mut [f32]) -> bool {
    let ConvShape { n, c, h, w, o } = s;
    let (wt, b, relu) = (f.weight, f.bias, f.relu);
    if !applies(h, w) || x.len() < n * c * h * w || y.len() < n * o * h * w || wt.len() < o * c * 9
    {
        return false;
    }
    if b.is_some_and(|b| b.len() < o) {
        return false;
    }
    let plane = Plane::new(h, w);
    let packed = pack_weights(wt, o, c);
    // On small planes most vectors touch the top or bottom row; with a zero row above and below
    // each plane, every vector reads inside the copy and only the column masks remain.
    let padded = (h < 16).then(|| pad_rows(x, n * c, h, w));
    let (x, in_hw, in_off) = match &padded {
        Some(p) => (&p[..], h * w + 2 * w, w),
        None => (x, h * w, 0),
    };
    let vectors = n * plane.nv;
    let groups = vectors.div_ceil(PV);
    let chunks = ranges(groups);
    let out = SharedMut(y.as_mut_ptr());
    parallel_for(chunks.len(), |k| {
        let job = Forward {
            x,
            in_hw,
            in_off,
            all_interior: padded.is_some(),
            c,
            o,
            plane: &plane,
            packed: &packed,
            bias: b,
            relu,
            out,
            vectors,
        };
        // SAFETY: AVX-512 is present (`applies`), the slices have the sizes checked above, and
        // chunk `k` writes only the pixels of its own vectors.
        unsafe { job.run(chunks[k].start * PV..(chunks[k].end * PV).min(vectors)) }
    });
    true
}

/// `planes` planes of `h x w` with a row of zeros above and below each.
fn pad_rows(x: &[f32], planes: usize, h: usize, w: usize) -> PoolBuf {
    let (hw, padded_hw) = (h * w, h * w + 2 * w);
    let mut padded = PoolBuf::new(planes * padded_hw);
    for_each_images(&mut padded, padded_hw, |range, out| {
        let src = &x[range.start * hw..range.end * hw];
        for (dst, plane) in out.chunks_exact_mut(padded_hw).zip(src.chunks_exact(hw)) {
            dst[..w].fill(0.0);
            dst[w..w + hw].copy_from_slice(plane);
            dst[w + hw..].fill(0.0);
        }
    });
    padded
}

/// One forward call's data, shared by the chunks of vectors.
struct Forward<'a> {
    /// The input, plane after plane, `in_hw` values apart, each starting `in_off` values in.
    x: &'a [f32],
    in_hw: usize,
    in_off: usize,
    /// Every vector reads inside the input (its planes are padded with zero rows).
    all_interior: bool,
    c: usize,
    o: usize,
    plane: &'a Plane,
    packed: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    out: SharedMut,
    /// Vectors in the whole batch (`n * nv`).
    vectors: usize,
}

#[cfg(not(target_arch = "x86_64"))]
impl Forward<'_> {
    unsafe fn run(&self, _: Range<usize>) {
        unreachable!("the direct kernels need AVX-512")
    }
}

#[cfg(target_arch = "x86_64")]
impl Forward<'_> {
    /// Computes every output channel at the pixel vectors `vecs` (numbered image by image).
    ///
    /// # Safety
    /// AVX-512 must be present and the buffers as [`conv3x3_into`] checks them.
    unsafe fn run(&self, vecs: Range<usize>) {
        let (nv, hw) = (self.plane.nv, self.plane.hw);
        debug_assert!(vecs.end <= self.vectors);
        let at = |vec: usize| (vec / nv, vec % nv);
        let mut start = vecs.start;
        while start < vecs.end {
            let take = (vecs.end - start).min(PV);
            let mut src = [std::ptr::null::<f32>(); PV];
            let mut dst = [std::ptr::null_mut::<f32>(); PV];
            let mut masks = [&self.plane.masks[0]; PV];
            for p in 0..PV {
                // Short groups repeat their last vector: the copy computes the same values.
                let (img, v) = at(start + p.min(take - 1));
                src[p] = self
                    .x
                    .as_ptr()
                    .add(img * self.c * self.in_hw + self.in_off + 16 * v);
                dst[p] = self.out.at(img * self.o * hw + 16 * v);
                masks[p] = &self.plane.masks[v];
            }
            let interior =
                self.all_interior || (0..take).all(|p| self.plane.interior[at(start + p).1]);
            let tile = Tile {
                src,
                masks,
                cols: self.plane.cols,
                c: self.c,
                in_hw: self.in_hw,
                hw,
                offs: &self.plane.offs,
            };
            let full = self.o / OB * OB;
            for ob in (0..full).step_by(OB) {
                let bias = self.bias.map(|b| &b[ob..ob + OB]);
                let wp = self.packed.as_ptr().add(ob * self.c * 9);
                let dst = dst.map(|d| d.add(ob * hw));
                if interior {
                    forward_tile::<OB, true>(&tile, wp, bias, dst, self.relu);
                } else {
                    forward_tile::<OB, false>(&tile, wp, bias, dst, self.relu);
                }
            }
            for oo in full..self.o {
                let bias = self.bias.map(|b| &b[oo..oo + 1]);
                let wp = self.packed.as_ptr().add(oo * self.c * 9);
                let dst = dst.map(|d| d.add(oo * hw));
                forward_tile::<1, false>(&tile, wp, bias, dst, self.relu);
            }
            start += take;
        }
    }
}

/// The input side of a forward tile: `PV` pixel vectors of one layer.
struct Tile<'a> {
    /// Each vector's pixels in the first input channel.
    src: [*const f32; PV],
    masks: [&'a [u16; 9]; PV],
    cols: [u16; 3],
    c: usize,
    /// Values from one input channel's plane to the next.
    in_hw: usize,
    /// Values from one output channel's plane to the next.
    hw: usize,
    offs: &'a [isize; 9],
}

/// `B` output channels at the tile's vectors: `acc[o][p] = bias[o] + sum_{i, t} wp[i][t][o]
/// x_i[p + off_t]`, stored at `dst[p] + o * hw` (after `max(0, .)` with `relu`; a NaN stays).
/// With `INTERIOR`, every vector of the tile is an interior one and the column masks serve.
///
/// # Safety
/// AVX-512 must be present; `src[p] + i * hw + off_t` must lie in the input wherever the mask of
/// the lane is set, `wp` must hold `c * 9 * B` values and `dst[p] + o * hw` 16 writable ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile<const B: usize, const INTERIOR: bool>(
    tile: &Tile,
    wp: *const f32,
    bias: Option<&[f32]>,
    dst: [*mut f32; PV],
    relu: bool,
) {
    use std::arch::x86_64::*;
    let (src, cols) = (tile.src, tile.cols);
    let mut acc = [[_mm512_setzero_ps(); PV]; B];
    if let Some(bias) = bias {
        for (row, &bo) in acc.iter_mut().zip(bias) {
            *row = [_mm512_set1_ps(bo); PV];
        }
    }
    for i in 0..tile.c {
        let base = (i * tile.in_hw) as isize;
        for t in 0..9 {
            let mut xs = [_mm512_setzero_ps(); PV];
            for p in 0..PV {
                let ptr = src[p].wrapping_offset(base + tile.offs[t]);
                let mask = if INTERIOR {
                    cols[t % 3]
                } else {
                    tile.masks[p][t]
                };
                xs[p] = _mm512_maskz_loadu_ps(mask, ptr);
            }
            let wt = wp.add((i * 9 + t) * B);
            for (o, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wt.add(o));
                for p in 0..PV {
                    row[p] = _mm512_fmadd_ps(xs[p], wv, row[p]);
                }
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for (o, row) in acc.iter().enumerate() {
        for p in 0..PV {
            // MAXPS returns its second operand when either is NaN.
            let v = if relu {
                _mm512_max_ps(zero, row[p])
            } else {
                row[p]
            };
            _mm512_storeu_ps(dst[p].add(o * tile.hw), v);
        }
    }
}

/// `dW[o, i, kh, kw] = sum_{n, y, x} dy[n, o, y, x] x[n, i, y + kh - 1, x + kw - 1]` for `x`
/// `[n, c, h, w]` and `dy` `[n, o, h, w]`, as `[o, c, 3, 3]`; `None` where the direct kernels do
/// not apply.
///
/// Here the vector lanes run over 16 output channels instead of pixels: image by image, `dy` is
/// transposed to `[h*w, o]` and the input padded with zeros all round, and for each pixel the
/// kernel multiplies the vector `dy[p, o..o+16]` by the 9 input values around the pixel, adding
/// into `dW` kept as `[c, 9, o]` (no sums across lanes, no masks).
pub fn weight_grad(x: &[f32], dy: &[f32], s: ConvShape) -> Option<Vec<f32>> {
    let ConvShape { n, c, h, w, o } = s;
    // Under 16 output channels most lanes would be padding: the matrix products do better there
    // (`ops_bench direct`: 16 -> 1 channels, 1.1 ms against 0.7).
    if o < 16 || !applies(h, w) || x.len() < n * c * h * w || dy.len() < n * o * h * w {
        return None;
    }
    let o_pad = o.div_ceil(16) * 16;
    let sums = sum_over_images(n, c * 9 * o_pad, |images, acc| {
        let job = WeightGrad {
            x,
            dy,
            c,
            h,
            w,
            o,
            o_pad,
        };
        // SAFETY: AVX-512 is present (`applies`) and the slices have the sizes checked above.
        unsafe { job.run(images, acc) }
    });
    let mut dw = vec![0f32; o * c * 9];
    for oo in 0..o {
        for it in 0..c * 9 {
            dw[oo * c * 9 + it] = sums[it * o_pad + oo];
        }
    }
    Some(dw)
}

/// One weight-gradient call's data.
struct WeightGrad<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    /// `o` rounded up to a multiple of 16.
    o_pad: usize,
}

#[cfg(not(target_arch = "x86_64"))]
impl WeightGrad<'_> {
    unsafe fn run(&self, _: Range<usize>, _: &mut [f32]) {
        unreachable!("the direct kernels need AVX-512")
    }
}

#[cfg(target_arch = "x86_64")]
impl WeightGrad<'_> {
    /// Adds the images `images`' share of `dW` into `acc` (`[c, 9, o_pad]`).
    ///
    /// # Safety
    /// AVX-512 must be present and the buffers as [`weight_grad`] checks them.
    unsafe fn run(&self, images: Range<usize>, acc: &mut [f32]) {
        let (c, h, w, o, o_pad) = (self.c, self.h, self.w, self.o, self.o_pad);
        let (hw, pw) = (h * w, w + 2);
        let mut dy_t = PoolBuf::zeros(hw * o_pad);
        let mut xp = PoolBuf::zeros(c * (h + 2) * pw);
        for img in images {
            let g = &self.dy[img * o * hw..(img + 1) * o * hw];
            for (oo, row) in g.chunks_exact(hw).enumerate() {
                for (p, &v) in row.iter().enumerate() {
                    dy_t[p * o_pad + oo] = v;
                }
            }
            let xi = &self.x[img * c * hw..(img + 1) * c * hw];
            for (plane, src) in xp.chunks_exact_mut((h + 2) * pw).zip(xi.chunks_exact(hw)) {
                for (y, row) in src.chunks_exact(w).enumerate() {
                    plane[(y + 1) * pw + 1..][..w].copy_from_slice(row);
                }
            }
            for i in 0..c {
                let plane = xp.as_ptr().add(i * (h + 2) * pw);
                let mut ob = 0;
                while ob < o_pad {
                    let out = acc.as_mut_ptr().add(i * 9 * o_pad + ob);
                    if o_pad - ob >= 32 {
                        weight_grad_tile::<2>(dy_t.as_ptr().add(ob), o_pad, plane, h, w, out);
                        ob += 32;
                    } else {
                        weight_grad_tile::<1>(dy_t.as_ptr().add(ob), o_pad, plane, h, w, out);
                        ob += 16;
                    }
                }
            }
        }
    }
}

/// `out[t * o_pad + 16 k + l] += sum_p dy_t[p * o_pad + 16 k + l] plane[p shifted by tap t]` for
/// `B` vectors of 16 output channels, `plane` being one input channel padded to
/// `(h + 2) x (w + 2)`.
///
/// # Safety
/// AVX-512 must be present; `dy_t` must hold `h * w` rows of `o_pad` values (from the first
/// channel of the tile), `plane` `(h + 2) * (w + 2)` values and `out` `9` rows of `o_pad`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_tile<const B: usize>(
    dy_t: *const f32,
    o_pad: usize,
    plane: *const f32,
    h: usize,
    w: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let pw = w + 2;
    let mut acc = [[_mm512_setzero_ps(); B]; 9];
    for (t, row) in acc.iter_mut().enumerate() {
        for (k, a) in row.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(out.add(t * o_pad + 16 * k));
        }
    }
    for y in 0..h {
        for xx in 0..w {
            let gp = dy_t.add((y * w + xx) * o_pad);
            let mut g = [_mm512_setzero_ps(); B];
            for (k, gk) in g.iter_mut().enumerate() {
                *gk = _mm512_loadu_ps(gp.add(16 * k));
            }
            let corner = plane.add(y * pw + xx);
            for (t, row) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*corner.add(t / 3 * pw + t % 3));
                for k in 0..B {
                    row[k] = _mm512_fmadd_ps(g[k], s, row[k]);
                }
            }
        }
    }
    for (t, row) in acc.iter().enumerate() {
        for (k, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(t * o_pad + 16 * k), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv3x3_forward_gemm, conv3x3_weight_grad_gemm};
    use super::*;
    use crate::testing::normal_values as random;

    fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter()
            .zip(b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    /// The masks keep exactly the lanes whose shifted pixel lies inside the image.
    #[test]
    fn masks_mark_the_padding() {
        let plane = Plane::new(4, 4);
        assert_eq!(plane.nv, 1);
        assert_eq!(plane.offs, [-5, -4, -3, -1, 0, 1, 3, 4, 5]);
        // Tap (0, 0) reads the pixel up and left: row 0 and column 0 fall outside.
        assert_eq!(plane.masks[0][0], 0b1110_1110_1110_0000);
        // The centre tap reads every pixel.
        assert_eq!(plane.masks[0][4], 0xffff);
        // Tap (2, 2) reads down and right: row 3 and column 3 fall outside.
        assert_eq!(plane.masks[0][8], 0b0000_0111_0111_0111);
        let plane = Plane::new(16, 16);
        assert_eq!(plane.masks[0][1], 0, "the row above the first lies outside");
        assert_eq!(plane.masks[15][7], 0, "the row below the last lies outside");
        assert_eq!(plane.masks[7][3], 0xfffe, "column -1 lies outside");
    }

    /// Forward and weight gradient against the matrix-product kernels, at the network's plane
    /// sizes, with channel counts that leave partial tiles and batches that leave short groups.
    #[test]
    fn direct_kernels_match_the_matrix_products() {
        if !has_avx512() {
            // Nothing to compare here: check that the convolutions fall back to the matrix
            // products (which the crate's U-Net test compares with the reference path).
            let (x, mut y) = (random(16 * 16, 1), vec![0f32; 16 * 16]);
            let shape = ConvShape::new(1, 1, 16, 16, 1);
            assert!(!applies(16, 16));
            assert!(!conv3x3_into(
                &x,
                shape,
                Filter::new(&[0.5; 9], None),
                &mut y
            ));
            return;
        }
        for (n, c, o, s, relu) in [
            (5, 16, 32, 16, false),
            (2, 3, 13, 16, true),
            (7, 32, 64, 8, false),
            (4, 64, 9, 4, true),
            (1, 16, 1, 16, false),
            (3, 8, 8, 8, true),
            (2, 5, 48, 16, false),
            (3, 7, 16, 4, true),
        ] {
            let x = random(n * c * s * s, 1);
            let wt = random(o * c * 9, 2);
            let b = random(o, 3);
            let dy = random(n * o * s * s, 4);
            let mut y = vec![f32::NAN; n * o * s * s];
            let shape = ConvShape::new(n, c, s, s, o);
            let f = Filter::new(&wt, Some(&b)).with_relu(relu);
            assert!(conv3x3_into(&x, shape, f, &mut y));
            let want = conv3x3_forward_gemm(&x, shape, f);
            let e = max_rel_err(&y, &want);
            assert!(e < 1e-5, "forward n={n} c={c} o={o} {s}x{s}: error {e}");
            let Some(dw) = weight_grad(&x, &dy, shape) else {
                assert!(
                    o < 16,
                    "the direct weight gradient takes 16 output channels or more"
                );
                continue;
            };
            let want = conv3x3_weight_grad_gemm(&x, &dy, shape);
            let e = max_rel_err(&dw, &want);
            assert!(
                e < 1e-5,
                "weight gradient n={n} c={c} o={o} {s}x{s}: error {e}"
            );
        }
    }

    #[test]
    fn other_plane_sizes_are_left_to_the_matrix_products() {
        let mut y = vec![0f32; 5 * 5];
        let x = vec![1f32; 5 * 5];
        let shape = ConvShape::new(1, 1, 5, 5, 1);
        assert!(!conv3x3_into(
            &x,
            shape,
            Filter::new(&[0.0; 9], None),
            &mut y
        ));
        assert!(weight_grad(&x, &x, shape).is_none());
        assert!(!applies(6, 6) && !applies(2, 32));
    }
}
