//! Output sizes of convolutions, pooling and transposed convolutions (PyTorch's conventions,
//! `floor` rounding, one spatial side):
//!
//! ```text
//! conv:           out = floor((n + 2 p - d (k - 1) - 1) / s) + 1
//! max pool:       out = floor((n + 2 p - (k - 1) - 1) / s) + 1      (stride defaults to k)
//! transposed:     out = (n - 1) s - 2 p + d (k - 1) + output_padding + 1
//! ```

use anyhow::{bail, Result};

/// Side of a convolution's output: kernel `k`, stride `s`, padding `p`, dilation `d`.
pub fn conv_out(n: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    if k == 0 || s == 0 || d == 0 {
        bail!("kernel, stride and dilation must be at least 1 (got k = {k}, s = {s}, d = {d})");
    }
    let span = d * (k - 1) + 1;
    if n + 2 * p < span {
        bail!("input side {n} with padding {p} is smaller than the kernel's span {span}");
    }
    Ok((n + 2 * p - span) / s + 1)
}

/// Side of a max-pool's output (kernel `k`, stride `s`, padding `p`).
pub fn pool_out(n: usize, k: usize, s: usize, p: usize) -> Result<usize> {
    conv_out(n, k, s, p, 1)
}

/// Side of a transposed convolution's output.
pub fn conv_transpose_out(
    n: usize,
    k: usize,
    s: usize,
    p: usize,
    output_padding: usize,
    d: usize,
) -> Result<usize> {
    if n == 0 || k == 0 || s == 0 || d == 0 {
        bail!("input side, kernel, stride and dilation must be at least 1");
    }
    if output_padding >= s.max(d) {
        bail!(
            "output padding must be smaller than the stride or the dilation, got {output_padding}"
        );
    }
    let full = (n - 1) * s + d * (k - 1) + output_padding + 1;
    if full <= 2 * p {
        bail!("padding {p} removes the whole output (side {full} before cropping)");
    }
    Ok(full - 2 * p)
}

/// Sides after each of `blocks` stride-2 downsamplings (3x3 convolution, stride 2, padding 1),
/// starting with `n`.
pub fn stride2_chain(n: usize, blocks: usize) -> Result<Vec<usize>> {
    let mut sides = vec![n];
    for _ in 0..blocks {
        let last = *sides.last().unwrap_or(&n);
        sides.push(conv_out(last, 3, 2, 1, 1)?);
    }
    Ok(sides)
}

/// One stage of the course U-Net: name, channels, side.
pub type Stage = (&'static str, usize, usize);

/// The spatial trace of the course U-Net (notebook 02) for a 16 x 16 input, computed layer by
/// layer with the formulas above.
pub fn course_unet_trace() -> Result<Vec<Stage>> {
    let n = 16;
    let down0 = conv_out(n, 3, 1, 1, 1)?;
    let down1 = pool_out(conv_out(conv_out(down0, 3, 1, 1, 1)?, 3, 1, 1, 1)?, 2, 2, 0)?;
    let down2 = pool_out(conv_out(conv_out(down1, 3, 1, 1, 1)?, 3, 1, 1, 1)?, 2, 2, 0)?;
    let up1 = conv_out(conv_transpose_out(down2, 3, 2, 1, 1, 1)?, 3, 1, 1, 1)?;
    let up2 = conv_out(conv_transpose_out(up1, 3, 2, 1, 1, 1)?, 3, 1, 1, 1)?;
    let out = conv_out(conv_out(up2, 3, 1, 1, 1)?, 3, 1, 1, 1)?;
    Ok(vec![
        ("down0", 16, down0),
        ("down1", 32, down1),
        ("down2", 64, down2),
        ("up0", 64, down2),
        ("up1", 32, up1),
        ("up2", 16, up2),
        ("out", 1, out),
    ])
}

/// Number of elements of a shape: the product of its sides.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_stride2_blocks_take_64_to_8() {
        // (64 + 2 - 3) / 2 + 1 = 32, then 16, then 8.
        assert_eq!(stride2_chain(64, 3).unwrap(), vec![64, 32, 16, 8]);
        // Max-pooling by 2 halves the side the same way.
        assert_eq!(pool_out(64, 2, 2, 0).unwrap(), 32);
        assert_eq!(pool_out(7, 2, 2, 0).unwrap(), 3); // floor
    }

    #[test]
    fn same_padding_keeps_the_side() {
        for n in [4, 8, 16, 17] {
            assert_eq!(conv_out(n, 3, 1, 1, 1).unwrap(), n);
        }
        assert_eq!(conv_out(28, 5, 1, 0, 1).unwrap(), 24);
        assert_eq!(conv_out(10, 3, 1, 0, 2).unwrap(), 6); // span 5
    }

    #[test]
    fn transposed_convolution_doubles_with_output_padding() {
        // (4 - 1) 2 - 2 + 2 + 1 + 1 = 8; without output padding 7.
        assert_eq!(conv_transpose_out(4, 3, 2, 1, 1, 1).unwrap(), 8);
        assert_eq!(conv_transpose_out(4, 3, 2, 1, 0, 1).unwrap(), 7);
        assert_eq!(conv_transpose_out(8, 3, 2, 1, 1, 1).unwrap(), 16);
    }

    #[test]
    fn course_unet_goes_16_8_4_and_back() {
        let sides: Vec<usize> = course_unet_trace().unwrap().iter().map(|s| s.2).collect();
        assert_eq!(sides, vec![16, 8, 4, 4, 8, 16, 16]);
        // Flattened bottleneck: 64 * 4 * 4 = 1024; one 16 x 16 grey image has 256 values.
        assert_eq!(numel(&[64, 4, 4]), 1024);
        assert_eq!(numel(&[1, 16, 16]), 256);
        assert_eq!(numel(&[1024, 1024, 3]), 3_145_728);
    }

    #[test]
    fn impossible_shapes_are_errors() {
        assert!(conv_out(2, 5, 1, 0, 1).is_err());
        assert!(conv_out(8, 3, 0, 1, 1).is_err());
        assert!(conv_transpose_out(1, 1, 1, 1, 0, 1).is_err());
        assert!(conv_transpose_out(4, 3, 2, 1, 2, 1).is_err());
    }
}
