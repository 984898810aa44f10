//! The sizes a convolution kernel works on, in one value instead of five positional arguments.

use candle_core::{Layout, Result};

/// A batch of `n` images of `c` channels and `h x w` pixels going into a convolution with `o`
/// output channels (the output side depends on the convolution: `h x w` for the 3x3 one,
/// `2h x 2w` for the transposed one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
}

impl ConvShape {
    pub fn new(n: usize, c: usize, h: usize, w: usize, o: usize) -> Self {
        Self { n, c, h, w, o }
    }

    /// Pixels of one input plane.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// The input's length, `n * c * h * w`.
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.hw()
    }

    /// The same planes with input and output channels exchanged: the 3x3 convolution whose
    /// output is the input gradient runs on this shape.
    pub fn swapped(self) -> Self {
        Self {
            c: self.o,
            o: self.c,
            ..self
        }
    }
}

/// The shape `[n, c, h, w]` of a rank-4 layout.
pub fn dims4(l: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        d => candle_core::bail!("{what}: expected a rank-4 tensor [N, C, H, W], got {d:?}"),
    }
}

/// What a convolution applies to its input: the kernel's values, a bias per output channel
/// (none: zero) and whether `max(y, 0)` follows.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> Filter<'a> {
    /// `y = conv(x, weight) + bias`, no ReLU.
    pub fn new(weight: &'a [f32], bias: Option<&'a [f32]>) -> Self {
        Self {
            weight,
            bias,
            relu: false,
        }
    }

    /// The same filter followed by `max(y, 0)` when `relu`.
    pub fn with_relu(self, relu: bool) -> Self {
        Self { relu, ..self }
    }
}
