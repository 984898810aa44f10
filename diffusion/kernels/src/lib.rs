//! # diffusion-kernels
//!
//! The numerical kernels behind the layers of the `diffusion` crate, which calls nothing else
//! for its convolutions, batch normalisation and pooling.
//!
//! Each has the meaning of its PyTorch counterpart. `f32` tensors on the CPU go through hand-made
//! kernels (direct AVX-512 convolutions in [`direct`] where the processor has AVX-512, matrix
//! products otherwise and for the transposed convolutions, fused passes for batch
//! normalisation, group normalisation with its activation) with their own backward passes, on candle's CPU threads; any other device or
//! dtype uses [`reference`](mod@reference), written with candle's tensor operations.
//!
//! [`with_path`] runs a closure on a chosen [`KernelPath`], to compare or time the paths; the
//! tests compare every fast kernel with the reference path that way.

pub mod batch_norm;
pub mod conv;
pub mod conv_transpose;
pub mod convolution;
pub mod direct;
pub mod fused;
pub mod gemm;
pub mod group_norm;
pub mod linear;
mod op;
pub mod pool;
pub mod reference;
pub mod shape;
pub mod simd;
pub mod testing;

use std::cell::Cell;

use candle_core::{Result, Tensor};

pub use convolution::ConvKind;
use gemm::is_cpu_f32;
pub use group_norm::Act;
pub use shape::{ConvShape, Filter};

/// Which kernels serve CPU `f32` tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// The fastest this processor has: direct AVX-512 convolutions where they apply, matrix
    /// products elsewhere (the default).
    Fast,
    /// The hand-made kernels with matrix products only, as on a processor without AVX-512.
    MatrixProducts,
    /// candle's own tensor operations ([`reference`](mod@reference)), as on any other device.
    Reference,
}

thread_local! {
    static PATH: Cell<KernelPath> = const { Cell::new(KernelPath::Fast) };
}

/// The path kernels called from this thread take.
pub fn path() -> KernelPath {
    PATH.with(Cell::get)
}

/// Runs `f` with every kernel called from this thread on `path` (the backward passes of what
/// `f` builds take the path in force when they run), then restores the previous path, also
/// when `f` panics.
pub fn with_path<R>(path: KernelPath, f: impl FnOnce() -> R) -> R {
    struct Restore(KernelPath);
    impl Drop for Restore {
        fn drop(&mut self) {
            PATH.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PATH.with(|p| p.replace(path)));
    f()
}

/// Do these tensors take the hand-made CPU kernels (rather than [`reference`](mod@reference))?
fn fast(ts: &[&Tensor]) -> bool {
    path() != KernelPath::Reference && ts.iter().all(|t| is_cpu_f32(t))
}

/// `y = conv2d(x, w, padding = 1) + b` for a `[O, I, 3, 3]` kernel.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        conv::conv3x3(x, w, b)
    } else {
        reference::conv3x3(x, w, b)
    }
}

/// `y = conv_transpose2d(x, w, stride = 2, padding = 1, output_padding = 1) + b` for a
/// `[I, O, 3, 3]` kernel: `[N, I, H, W] -> [N, O, 2H, 2W]`.
pub fn conv_transpose3x3_s2(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        conv_transpose::conv_transpose3x3_s2(x, w, b)
    } else {
        reference::conv_transpose3x3_s2(x, w, b)
    }
}

/// `y = x W^T + b` for `x` of `[N, I]` and a `[O, I]` weight: PyTorch's `F.linear`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        linear::linear(x, w, b)
    } else {
        reference::linear(x, w, b)
    }
}

/// Batch normalisation with batch statistics over `(N, H, W)`:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, returning `(y, mean, var)` with the biased
/// variance (the last two detached, as PyTorch updates running statistics without gradient).
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<WithStats> {
    if fast(&[x, weight, bias]) {
        batch_norm::batch_norm_train(x, weight, bias, eps, false)
    } else {
        reference::batch_norm_train(x, weight, bias, eps)
    }
}

pub use reference::batch_norm_eval;

/// `act(group_norm(x) * weight + bias)`, PyTorch's `nn.GroupNorm(groups, C)` followed by
/// `act` (nothing, ReLU or the exact GELU): each image's groups of `C / groups` channels
/// normalised by their own mean and biased variance.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    act: Act,
) -> Result<Tensor> {
    if fast(&[x, weight, bias]) {
        group_norm::group_norm(x, weight, bias, groups, eps, act)
    } else {
        reference::group_norm(x, weight, bias, groups, eps, act)
    }
}

/// 2x2 max pooling, stride 2; the gradient of each window goes, whole, to its first maximum, as
/// in PyTorch.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if fast(&[x]) {
        pool::max_pool2x2(x)
    } else {
        reference::max_pool2x2(x)
    }
}

/// `(y, mean, var)`: a batch norm's output in training, with the batch mean and biased variance
/// it normalised by (those two without gradient).
pub type WithStats = (Tensor, Tensor, Tensor);

/// A batch norm's tensors: weight `gamma`, shift `beta`, running statistics, and `eps`.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub eps: f64,
}

/// A convolution followed by a batch norm: the convolution's kind, weight `w` and bias `b`,
/// and the batch norm's tensors.
#[derive(Debug, Clone, Copy)]
pub struct ConvBn<'a> {
    pub kind: ConvKind,
    pub w: &'a Tensor,
    pub b: &'a Tensor,
    pub bn: BatchNormParams<'a>,
}

impl ConvBn<'_> {
    /// `conv(x, w) + b` on the reference path.
    pub(crate) fn reference_conv(&self, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            ConvKind::Conv3x3 => reference::conv3x3(x, self.w, self.b),
            ConvKind::Transpose3x3S2 => reference::conv_transpose3x3_s2(x, self.w, self.b),
        }
    }
}

/// `y = max(bn(conv(x, w) + b), 0)` with batch statistics, returning `(y, mean, var)` of
/// `conv(x, w) + b` like [`batch_norm_train`] (the running statistics of `bn` are not read).
pub fn conv_bn_relu_train(x: &Tensor, p: &ConvBn) -> Result<WithStats> {
    let bn = &p.bn;
    if fast(&[x, p.w, p.b, bn.gamma, bn.beta]) {
        fused::conv_bn_relu_train(x, p)
    } else {
        let z = p.reference_conv(x)?;
        let (y, mean, var) = reference::batch_norm_train(&z, bn.gamma, bn.beta, bn.eps)?;
        Ok((y.relu()?, mean, var))
    }
}

/// `y = max(bn_eval(conv(x, w) + b), 0)` with the running statistics, where `bn_eval` is
/// [`batch_norm_eval`].
pub fn conv_bn_relu_eval(x: &Tensor, p: &ConvBn) -> Result<Tensor> {
    let bn = &p.bn;
    if fast(&[
        x,
        p.w,
        p.b,
        bn.gamma,
        bn.beta,
        bn.running_mean,
        bn.running_var,
    ]) {
        fused::conv_bn_relu_eval(x, p)
    } else {
        let z = p.reference_conv(x)?;
        let (rm, rv) = (bn.running_mean, bn.running_var);
        batch_norm_eval(&z, bn.gamma, bn.beta, rm, rv, bn.eps)?.relu()
    }
}
