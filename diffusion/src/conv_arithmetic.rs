//! Convolution arithmetic: how big the output of a (transposed) convolution is, and a transposed
//! convolution with any kernel, stride and padding, for the small demonstrations of notebook 01.
//!
//! ```text
//! convolution:            out = floor((in + 2 padding - kernel) / stride) + 1
//! transposed convolution: out = (in - 1) stride - 2 padding + kernel + output_padding
//! ```
//!
//! A transposed convolution places a copy of the kernel, scaled by each input pixel, at
//! `stride` times that pixel's position, and adds the copies where they overlap. With a kernel
//! larger than the stride, neighbouring copies overlap and the overlapping outputs are sums of
//! more terms than the others: the checkerboard notebook 02 ends on.
//!
//! ```
//! use diffusion::conv_arithmetic::{conv_output_size, conv_transpose2d, transposed_output_size};
//! use candle_core::{Device, Tensor};
//! // notebook 02's UpBlock: kernel 3, stride 2, padding 1, output padding 1 doubles the side
//! assert_eq!(transposed_output_size(8, 3, 2, 1, 1), 16);
//! // its convolutions (kernel 3, padding 1) keep it
//! assert_eq!(conv_output_size(16, 3, 1, 1), 16);
//! let ones = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let k = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = conv_transpose2d(&ones, &k, 2, 0, 0)?; // [1, 1, 7, 7]
//! let row: Vec<f32> = y.get(0)?.get(0)?.get(2)?.to_vec1()?;
//! assert_eq!(row, [2., 2., 4., 2., 4., 2., 2.]); // where two copies overlap, 2 and 4
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// The side of a convolution's output: `floor((input + 2 padding - kernel) / stride) + 1`, or 0
/// when the kernel does not fit.
pub fn conv_output_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = input + 2 * padding;
    if kernel > padded || stride == 0 {
        return 0;
    }
    (padded - kernel) / stride + 1
}

/// The side of a transposed convolution's output:
/// `(input - 1) stride - 2 padding + kernel + output_padding` (0 when that is not positive).
pub fn transposed_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> usize {
    let full = input.saturating_sub(1) * stride + kernel + output_padding;
    full.saturating_sub(2 * padding)
}

/// PyTorch's `F.conv_transpose2d(x, kernel, stride=stride, padding=padding,
/// output_padding=output_padding)` without bias: `x` is `[N, C_in, H, W]`, `kernel` is
/// `[C_in, C_out, k, k]`, the result `[N, C_out, H', W']` with `H'` from
/// [`transposed_output_size`].
pub fn conv_transpose2d(
    x: &Tensor,
    kernel: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    if x.rank() != 4 || kernel.rank() != 4 || kernel.dim(0)? != x.dim(1)? {
        bail!(
            "a transposed convolution takes x [N, C_in, H, W] and a kernel [C_in, C_out, k, k], got {:?} and {:?}",
            x.dims(),
            kernel.dims()
        );
    }
    if stride == 0 {
        bail!("the stride must be at least 1");
    }
    if output_padding >= stride {
        bail!("output_padding ({output_padding}) must be smaller than the stride ({stride}), as in PyTorch");
    }
    let k = kernel.dim(2)?;
    if transposed_output_size(x.dim(2)?, k, stride, padding, output_padding) == 0 {
        bail!("padding {padding} removes the whole output of a {k} x {k} kernel");
    }
    let x = x.to_dtype(DType::F32)?;
    let kernel = kernel.to_dtype(DType::F32)?;
    Ok(x.conv_transpose2d(&kernel, padding, output_padding, stride, 1)?)
}

/// The values of the first plane of `x` (`[N, C, H, W]`, the `[0, 0]` image), one row per line,
/// as whole numbers when they are: what the notebook prints under each demonstration.
pub fn plane_text(x: &Tensor) -> Result<String> {
    if x.rank() != 4 {
        bail!("expected [N, C, H, W], got {:?}", x.dims());
    }
    let rows: Vec<Vec<f32>> = x.get(0)?.get(0)?.to_dtype(DType::F32)?.to_vec2()?;
    let cell = |v: f32| {
        if v.fract() == 0.0 {
            format!("{v:>3}")
        } else {
            format!("{v:>6.2}")
        }
    };
    Ok(rows
        .iter()
        .map(|r| r.iter().map(|v| cell(*v)).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `x` scaled so that 0 is black and its largest value white (`x / max * 2 - 1`, in `[-1, 1]`),
/// to draw non-negative values such as the overlap counts with [`ImageGrid`](crate::display::ImageGrid).
pub fn as_picture(x: &Tensor) -> Result<Tensor> {
    let max = x.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if max <= 0.0 {
        bail!("as_picture draws non-negative values with a positive maximum, got max {max}");
    }
    Ok(x.to_dtype(DType::F32)?.affine(2.0 / max, -1.0)?)
}
