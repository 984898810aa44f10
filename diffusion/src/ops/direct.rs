//! The 3x3 convolution (stride 1, padding 1) computed directly with AVX-512, without the im2col
//! copy: for planes of 16 x 16, 8 x 8 and 4 x 4 pixels (any plane whose width divides 16 and whose
//! pixel count is a multiple of 16), on processors that have AVX-512.
//!
//! A plane is read as vectors of 16 consecutive pixels (one row of 16, two rows of 8, four rows
//! of 4). The tap `(kh, kw)` of the kernel needs the same 16 pixels shifted by
//! `off = (kh - 1) w + (kw - 1)` in the flattened plane; a masked load reads them straight from the
//! input and puts zeros where the shifted pixel lies outside the image (the padding):
//!
//! ```text
//! forward, per output channel o:  y[o, v] = b[o] + sum_{i, kh, kw} W[o, i, kh, kw] x_i[v + off]
//! weight gradient:                dW[o, i, kh, kw] = sum_{n, v} sum_lanes dy[n, o, v] x[n, i, v + off]
//! ```
//!
//! The forward kernel keeps a tile of 8 output channels x 3 pixel vectors in 24 registers; the
//! input gradient is the same kernel with the flipped kernel (see [`super::conv::flip_transpose`]).
//! [`conv3x3_into`] and [`weight_grad`] return `false` / `None` where they do not apply, and the
//! callers then use the matrix products of [`super::conv`].

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use super::gemm::{for_each_images, parallel_for, ranges, sum_over_images, PoolBuf, SharedMut};

/// Output channels per forward tile.
const OB: usize = 8;
/// Pixel vectors per forward tile.
const PV: usize = 3;
/// Output channels per weight-gradient tile (each with 9 accumulators).
const WB: usize = 2;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// With `false`, the convolutions use the matrix products everywhere (to compare the two).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Can the direct kernels take planes of `h x w` on this processor?
pub fn applies(h: usize, w: usize) -> bool {
    w > 0
        && 16 % w == 0
        && (h * w).is_multiple_of(16)
        && ENABLED.load(Ordering::Relaxed)
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
    w: usize,
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
            w,
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
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_into(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    o: usize,
    b: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> bool {
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

/// `dW[o, i, kh, kw] = sum_{n, p} dy[n, o, p] x[n, i, p + off]` for `x` `[n, c, h, w]` and `dy`
/// `[n, o, h, w]`, as `[o, c, 3, 3]`; `None` where the direct kernel does not apply or is not
/// the faster one (planes under 16 x 16 pixels).
pub fn weight_grad(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
) -> Option<Vec<f32>> {
    // On smaller planes each image adds too little to the 9 x 2 accumulators of a tile, and the
    // matrix products are faster (`ops_bench direct`: 64 -> 64 channels on 8 x 8, 7 ms against 4).
    if h * w < 256 || !applies(h, w) || x.len() < n * c * h * w || dy.len() < n * o * h * w {
        return None;
    }
    let plane = Plane::new(h, w);
    Some(sum_over_images(n, o * c * 9, |images, acc| {
        let job = WeightGrad {
            x,
            dy,
            c,
            o,
            plane: &plane,
        };
        // SAFETY: AVX-512 is present (`applies`) and the slices have the sizes checked above.
        unsafe { job.run(images, acc) }
    }))
}

/// One weight-gradient call's data.
struct WeightGrad<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    c: usize,
    o: usize,
    plane: &'a Plane,
}

#[cfg(not(target_arch = "x86_64"))]
impl WeightGrad<'_> {
    unsafe fn run(&self, _: Range<usize>, _: &mut [f32]) {
        unreachable!("the direct kernels need AVX-512")
    }
}

#[cfg(target_arch = "x86_64")]
impl WeightGrad<'_> {
    /// Adds the images `images`' share of `dW` into `acc` (`[o, c, 9]`).
    ///
    /// # Safety
    /// AVX-512 must be present and the buffers as [`weight_grad`] checks them.
    unsafe fn run(&self, images: Range<usize>, acc: &mut [f32]) {
        // The images' planes with a row of zeros above and below: every tap then reads inside
        // the copy, and only the column masks remain.
        let (hw, w) = (self.plane.hw, self.plane.w);
        let src = &self.x[images.start * self.c * hw..images.end * self.c * hw];
        let padded = pad_rows(src, images.len() * self.c, hw / w, w);
        let full = self.o / WB * WB;
        for i in 0..self.c {
            for ob in (0..full).step_by(WB) {
                let sums = self.tile::<WB>(&padded, &images, ob, i);
                for (k, s) in sums.iter().enumerate() {
                    let row = &mut acc[((ob + k) * self.c + i) * 9..][..9];
                    row.iter_mut().zip(s).for_each(|(a, v)| *a += v);
                }
            }
            for oo in full..self.o {
                let [s] = self.tile::<1>(&padded, &images, oo, i);
                let row = &mut acc[(oo * self.c + i) * 9..][..9];
                row.iter_mut().zip(&s).for_each(|(a, v)| *a += v);
            }
        }
    }

    /// The 9 tap sums of output channels `ob..ob + B` against input channel `i`, for the images
    /// `images`, whose planes `padded` holds with a row of zeros above and below.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const B: usize>(
        &self,
        padded: &[f32],
        images: &Range<usize>,
        ob: usize,
        i: usize,
    ) -> [[f32; 9]; B] {
        use std::arch::x86_64::*;
        let (hw, nv, c, o) = (self.plane.hw, self.plane.nv, self.c, self.o);
        let padded_hw = hw + 2 * self.plane.w;
        let (offs, cols) = (&self.plane.offs, self.plane.cols);
        let mut acc = [[_mm512_setzero_ps(); 9]; B];
        for (j, img) in images.clone().enumerate() {
            let xp = padded.as_ptr().add((j * c + i) * padded_hw + self.plane.w);
            let gp = self.dy.as_ptr().add((img * o + ob) * hw);
            for v in 0..nv {
                let mut g = [_mm512_setzero_ps(); B];
                for (k, gk) in g.iter_mut().enumerate() {
                    *gk = _mm512_loadu_ps(gp.add(k * hw + 16 * v));
                }
                let xv = xp.add(16 * v);
                for t in 0..9 {
                    let x = _mm512_maskz_loadu_ps(cols[t % 3], xv.wrapping_offset(offs[t]));
                    for k in 0..B {
                        acc[k][t] = _mm512_fmadd_ps(g[k], x, acc[k][t]);
                    }
                }
            }
        }
        let mut out = [[0f32; 9]; B];
        for k in 0..B {
            for t in 0..9 {
                out[k][t] = _mm512_reduce_add_ps(acc[k][t]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv3x3_forward_gemm, conv3x3_weight_grad_gemm};
    use super::*;
    use crate::Rng;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let t = Rng::new(seed)
            .randn(len, &candle_core::Device::Cpu)
            .unwrap();
        t.to_vec1().unwrap()
    }

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
        if !applies(16, 16) {
            eprintln!("no AVX-512 on this processor: the direct kernels are not used here");
            return;
        }
        for (n, c, o, s, relu) in [
            (5, 16, 32, 16, false),
            (2, 3, 13, 16, true),
            (7, 32, 64, 8, false),
            (4, 64, 9, 4, true),
            (1, 16, 1, 16, false),
            (3, 8, 8, 8, true),
        ] {
            let x = random(n * c * s * s, 1);
            let wt = random(o * c * 9, 2);
            let b = random(o, 3);
            let dy = random(n * o * s * s, 4);
            let mut y = vec![f32::NAN; n * o * s * s];
            assert!(conv3x3_into(&x, n, c, s, s, &wt, o, Some(&b), relu, &mut y));
            let want = conv3x3_forward_gemm(&x, n, c, s, s, &wt, o, Some(&b), relu);
            let e = max_rel_err(&y, &want);
            assert!(e < 1e-5, "forward n={n} c={c} o={o} {s}x{s}: error {e}");
            let Some(dw) = weight_grad(&x, &dy, n, c, s, s, o) else {
                assert!(s < 16, "the direct weight gradient takes 16 x 16 planes");
                continue;
            };
            let want = conv3x3_weight_grad_gemm(&x, &dy, n, c, s, s, o);
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
        assert!(!conv3x3_into(
            &x, 1, 1, 5, 5, &[0.0; 9], 1, None, false, &mut y
        ));
        assert!(weight_grad(&x, &x, 1, 1, 5, 5, 1).is_none());
        assert!(!applies(6, 6) && !applies(2, 32));
    }
}
