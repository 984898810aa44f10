//! Sinusoidal embeddings of a timestep (or a position), with max period `P` (usually 10000).
//!
//! All conventions use `d / 2` frequencies `w_k`, `k = 0 .. d/2 - 1`, and put `sin(t w_k)` and
//! `cos(t w_k)` in the vector; they differ in the spacing of the frequencies and in the order:
//!
//! ```text
//! Interleaved   (Vaswani et al. 2017)  w_k = P^(-2k/d)          [sin w_0 t, cos w_0 t, sin w_1 t, cos w_1 t, ...]
//! SinThenCos    (half split)            w_k = P^(-k/(d/2))       [sin w_0 t, ..., sin w_{d/2-1} t, cos w_0 t, ...]
//! CosThenSin    (half split, GLIDE)     w_k = P^(-k/(d/2))       [cos ..., sin ...]
//! SinThenCosDdpm (Ho et al. 2020 code)  w_k = P^(-k/(d/2 - 1))   [sin ..., cos ...]   (lowest frequency exactly 1/P)
//! ```
//!
//! `P^(-2k/d)` and `P^(-k/(d/2))` are the same number, so the first three hold the same values in
//! different orders; the DDPM reference code spaces its frequencies slightly differently.
//!
//! Assignment 4 writes the formula with the entry index in the exponent, `i/d` rather than
//! `2 floor(i/2) / d`: read literally, every entry gets a frequency of its own,
//!
//! ```text
//! PerEntry      (Assignment 4 as written)  w_i = P^(-i/d), i = 0 .. d-1   [sin w_0 t, cos w_1 t, sin w_2 t, cos w_3 t, ...]
//! ```
//!
//! so the sine and the cosine of a pair no longer share a frequency (and the pair is no longer a
//! point on the unit circle).

use anyhow::{bail, Result};

/// How the sines and cosines are laid out and spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// `PE[2k] = sin(t / P^(2k/d))`, `PE[2k+1] = cos(t / P^(2k/d))`.
    Interleaved,
    /// First half `sin(t w_k)`, second half `cos(t w_k)`, `w_k = P^(-k/(d/2))`.
    SinThenCos,
    /// First half `cos(t w_k)`, second half `sin(t w_k)`, `w_k = P^(-k/(d/2))`.
    CosThenSin,
    /// First half `sin`, second half `cos`, `w_k = P^(-k/(d/2 - 1))` (needs `d >= 4`).
    SinThenCosDdpm,
    /// `PE[i] = sin(t / P^(i/d))` for even `i`, `cos(t / P^(i/d))` for odd `i`: one frequency
    /// per entry, the formula exactly as Assignment 4 writes it.
    PerEntry,
}

/// The frequencies of a convention: the `d / 2` values `w_k` that the (sin, cos) pairs share, or
/// for [`Convention::PerEntry`] the `d` values `w_i`, one per entry.
pub fn frequencies(d: usize, max_period: f64, convention: Convention) -> Result<Vec<f64>> {
    if d < 2 || !d.is_multiple_of(2) {
        bail!("the embedding dimension must be even and at least 2, got d = {d}");
    }
    if !(max_period > 1.0 && max_period.is_finite()) {
        bail!("the max period must be a finite number above 1, got {max_period}");
    }
    if convention == Convention::PerEntry {
        return Ok((0..d)
            .map(|i| (-(max_period.ln()) * i as f64 / d as f64).exp())
            .collect());
    }
    let half = d / 2;
    let denom = match convention {
        Convention::SinThenCosDdpm => {
            if half < 2 {
                bail!("the DDPM spacing divides by d/2 - 1, so it needs d >= 4, got d = {d}");
            }
            (half - 1) as f64
        }
        _ => half as f64,
    };
    Ok((0..half)
        .map(|k| (-(max_period.ln()) * k as f64 / denom).exp())
        .collect())
}

/// The embedding of timestep `t` in dimension `d`.
///
/// ```
/// use answers::theory::embedding::{embed, Convention};
/// let e = embed(1.0, 8, 10000.0, Convention::Interleaved).unwrap();
/// assert!((e[2] - 0.1f64.sin()).abs() < 1e-12); // second pair: frequency 10000^(-2/8) = 0.1
/// ```
pub fn embed(t: f64, d: usize, max_period: f64, convention: Convention) -> Result<Vec<f64>> {
    let w = frequencies(d, max_period, convention)?;
    let sin = w.iter().map(|w| (t * w).sin());
    let cos = w.iter().map(|w| (t * w).cos());
    Ok(match convention {
        Convention::Interleaved => sin.zip(cos).flat_map(|(s, c)| [s, c]).collect(),
        Convention::SinThenCos | Convention::SinThenCosDdpm => sin.chain(cos).collect(),
        Convention::CosThenSin => cos.chain(sin).collect(),
        Convention::PerEntry => w
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i % 2 == 0 {
                    (t * w).sin()
                } else {
                    (t * w).cos()
                }
            })
            .collect(),
    })
}

/// The longest period `2 pi / w_min` among the embedding's sinusoids.
pub fn longest_period(d: usize, max_period: f64, convention: Convention) -> Result<f64> {
    let w = frequencies(d, max_period, convention)?;
    let w_min = w.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(2.0 * std::f64::consts::PI / w_min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: f64 = 10000.0;

    /// d = 8, t = 1: by hand, 10000^(-2k/8) = 10^(-k) gives frequencies 1, 0.1, 0.01, 0.001.
    fn by_hand_interleaved() -> Vec<f64> {
        vec![
            1f64.sin(),
            1f64.cos(),
            0.1f64.sin(),
            0.1f64.cos(),
            0.01f64.sin(),
            0.01f64.cos(),
            0.001f64.sin(),
            0.001f64.cos(),
        ]
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn q2_interleaved_d8_t1() {
        let e = embed(1.0, 8, P, Convention::Interleaved).unwrap();
        assert!(close(&e, &by_hand_interleaved(), 1e-12), "{e:?}");
        // Rounded values stated in answers/assignment4.md (sin 1 = 0.841471, cos 1 = 0.540302, ...).
        let stated = [
            0.841471, 0.540302, 0.099833, 0.995004, 0.010000, 0.999950, 0.001000, 0.999999,
        ];
        assert!(close(&e, &stated, 1e-6), "{e:?}");
    }

    #[test]
    fn source_q2_vector_is_not_the_embedding() {
        // The source's vector: sin(1), cos(0.1), sin(0.01), cos(1e-3), sin(1e-4), cos(1e-5), ...
        let source = [
            1f64.sin(),
            0.1f64.cos(),
            0.01f64.sin(),
            0.001f64.cos(),
            1e-4f64.sin(),
            1e-5f64.cos(),
            1e-6f64.sin(),
            1e-7f64.cos(),
        ];
        let e = embed(1.0, 8, P, Convention::Interleaved).unwrap();
        // Second entry: cos(1) = 0.5403 in the embedding, cos(0.1) = 0.9950 in the source.
        assert!((e[1] - source[1]).abs() > 0.45);
        // The source's own formula (exponent i/d for every i) gives yet another vector.
        let literal: Vec<f64> = (0..8)
            .map(|i| {
                let arg = 1.0 / P.powf(i as f64 / 8.0);
                if i % 2 == 0 {
                    arg.sin()
                } else {
                    arg.cos()
                }
            })
            .collect();
        assert!((literal[1] - (1.0 / P.powf(0.125)).cos()).abs() < 1e-15);
        assert!((1.0 / P.powf(0.125) - 0.3162).abs() < 1e-4);
        assert!((literal[1] - source[1]).abs() > 0.04); // cos(0.3162) = 0.9504 vs 0.9950
                                                        // The source's frequencies are 10^-i, i = 0..7: the slowest has period 2 pi 10^7, far
                                                        // above the max period 10000 (the embedding's slowest period is 2000 pi).
        let source_w: Vec<f64> = (0..8).map(|i| 10f64.powi(-i)).collect();
        let slowest = source_w.iter().cloned().fold(f64::INFINITY, f64::min);
        let period = 2.0 * std::f64::consts::PI / slowest;
        assert!((period / (2.0 * std::f64::consts::PI) - 1e7).abs() < 1e-3);
        assert!(period > 1000.0 * longest_period(8, P, Convention::Interleaved).unwrap());
    }

    #[test]
    fn half_split_holds_the_same_values_reordered() {
        let inter = embed(1.0, 8, P, Convention::Interleaved).unwrap();
        let split = embed(1.0, 8, P, Convention::SinThenCos).unwrap();
        let sin_first: Vec<f64> = (0..4).map(|k| inter[2 * k]).collect();
        let cos_second: Vec<f64> = (0..4).map(|k| inter[2 * k + 1]).collect();
        assert!(close(&split[..4], &sin_first, 1e-15));
        assert!(close(&split[4..], &cos_second, 1e-15));
        let glide = embed(1.0, 8, P, Convention::CosThenSin).unwrap();
        assert!(close(&glide[..4], &cos_second, 1e-15));
    }

    #[test]
    fn ddpm_spacing_ends_at_one_over_p() {
        // d = 8: w_k = 10000^(-k/3): 1, 0.0464159, 0.00215443, 0.0001.
        let w = frequencies(8, P, Convention::SinThenCosDdpm).unwrap();
        let by_hand = [1.0, 0.046415888336127774, 0.002154434690031882, 1e-4];
        assert!(close(&w, &by_hand, 1e-12), "{w:?}");
        let e = embed(1.0, 8, P, Convention::SinThenCosDdpm).unwrap();
        assert!((e[1] - 0.046415888336127774f64.sin()).abs() < 1e-12);
        assert!((e[5] - 0.046415888336127774f64.cos()).abs() < 1e-12);
    }

    #[test]
    fn pairs_share_a_frequency_so_a_shift_is_a_rotation() {
        // With sin and cos of the same frequency in each pair, PE(t + s) is PE(t) rotated by
        // s * w_k in each pair (angle addition formulas).
        let (t, s) = (3.0, 5.0);
        let w = frequencies(16, P, Convention::Interleaved).unwrap();
        let a = embed(t, 16, P, Convention::Interleaved).unwrap();
        let b = embed(t + s, 16, P, Convention::Interleaved).unwrap();
        for (k, w) in w.iter().enumerate() {
            let (c, sn) = ((s * w).cos(), (s * w).sin());
            let rot_sin = a[2 * k] * c + a[2 * k + 1] * sn;
            let rot_cos = a[2 * k + 1] * c - a[2 * k] * sn;
            assert!((rot_sin - b[2 * k]).abs() < 1e-12);
            assert!((rot_cos - b[2 * k + 1]).abs() < 1e-12);
        }
    }

    #[test]
    fn t_zero_and_longest_period() {
        let e = embed(0.0, 6, P, Convention::Interleaved).unwrap();
        assert_eq!(e, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        // d = 8: slowest frequency 10000^(-6/8) = 0.001, period 2000 pi.
        let p = longest_period(8, P, Convention::Interleaved).unwrap();
        assert!((p - 2000.0 * std::f64::consts::PI).abs() < 1e-9);
        let p = longest_period(8, P, Convention::SinThenCosDdpm).unwrap();
        assert!((p - 20000.0 * std::f64::consts::PI).abs() < 1e-6);
    }

    #[test]
    fn bad_dimensions_are_errors() {
        assert!(embed(1.0, 7, P, Convention::Interleaved).is_err());
        assert!(embed(1.0, 0, P, Convention::SinThenCos).is_err());
        assert!(embed(1.0, 2, P, Convention::SinThenCosDdpm).is_err());
        assert!(embed(1.0, 8, 1.0, Convention::Interleaved).is_err());
    }

    #[test]
    fn per_entry_is_the_assignment_formula_read_literally() {
        // d = 8, t = 1: 10000^(i/8) = 10^(i/2), so entry i is sin or cos of 10^(-i/2).
        let e = embed(1.0, 8, P, Convention::PerEntry).unwrap();
        let by_hand: Vec<f64> = (0..8)
            .map(|i| {
                let x = 10f64.powf(-(i as f64) / 2.0);
                if i % 2 == 0 {
                    x.sin()
                } else {
                    x.cos()
                }
            })
            .collect();
        assert!(close(&e, &by_hand, 1e-15), "{e:?}");
        // The even entries agree with the interleaved layout; the odd ones do not.
        let inter = embed(1.0, 8, P, Convention::Interleaved).unwrap();
        for i in 0..8 {
            assert_eq!((e[i] - inter[i]).abs() < 1e-12, i % 2 == 0, "entry {i}");
        }
        assert!((e[1] - 0.950_415).abs() < 1e-6, "cos(10^-0.5) = {}", e[1]);
        // Its slowest sinusoid: 10000^(-7/8), period 2 pi 10^3.5.
        let p = longest_period(8, P, Convention::PerEntry).unwrap();
        assert!((p - 2.0 * std::f64::consts::PI * 10f64.powf(3.5)).abs() < 1e-6);
    }
}
