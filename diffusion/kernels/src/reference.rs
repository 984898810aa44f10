//! The kernels written with candle's tensor operations, which autograd differentiates: they run
//! on every device and dtype, and serve as the reference the fast CPU kernels are tested against.

use candle_core::{Result, Tensor};

use crate::WithStats;

/// `y = conv2d(x, w, padding = 1) + b` for a `[O, I, 3, 3]` kernel.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = x.conv2d(&w.contiguous()?, 1, 1, 1, 1)?;
    y.broadcast_add(&b.reshape((1, (), 1, 1))?)
}

/// `y = conv_transpose2d(x, w, stride = 2, padding = 1, output_padding = 1) + b` for a
/// `[I, O, 3, 3]` kernel: `[N, I, H, W] -> [N, O, 2H, 2W]`.
pub fn conv_transpose3x3_s2(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = x.conv_transpose2d(&w.contiguous()?, 1, 1, 2, 1)?;
    y.broadcast_add(&b.reshape((1, (), 1, 1))?)
}

/// Batch normalisation with batch statistics over `(N, H, W)`:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, returning `(y, mean, var)` with the biased
/// variance (the last two detached, as PyTorch updates running statistics without gradient).
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<WithStats> {
    let c = weight.dim(0)?;
    let xt = x.transpose(0, 1)?.flatten_from(1)?; // [C, N*H*W]
    let mean = xt.mean_keepdim(1)?; // [C, 1]
    let centered = xt.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let y = centered
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&weight.reshape((c, 1))?)?
        .broadcast_add(&bias.reshape((c, 1))?)?;
    let (n, _, h, w) = x.dims4()?;
    let y = y.reshape((c, n, h, w))?.transpose(0, 1)?.contiguous()?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Batch normalisation with running statistics, as in evaluation:
/// `y = x * s + (bias - running_mean * s)` with `s = weight / sqrt(running_var + eps)` held
/// constant for autograd.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let shape = (1, weight.dim(0)?, 1, 1);
    let scale = weight
        .broadcast_div(&(running_var + eps)?.sqrt()?)?
        .detach();
    let shift = (bias - (running_mean * &scale)?)?;
    x.broadcast_mul(&scale.reshape(shape)?)?
        .broadcast_add(&shift.reshape(shape)?)
}

/// 2x2 max pooling, stride 2, through reshape and `max`: the gradient of `max` goes to the
/// element equal to the maximum, as in PyTorch (a window of exactly equal values, such as zeros
/// after a ReLU, sends it to each of them; those come from a ReLU that passes no gradient).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
}

/// `y = x W^T + b`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.matmul(&w.t()?)?.broadcast_add(b)
}

/// `act(group_norm(x) * weight + bias)`: each image's `groups` groups of channels normalised by
/// their own mean and biased variance, `(x - mean_g) / sqrt(var_g + eps)`.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    act: crate::group_norm::Act,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let g = x.reshape((n, groups, (c / groups) * h * w))?; // [N, G, C/G HW]
    let mean = g.mean_keepdim(2)?;
    let centred = g.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?; // biased
    let z = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, h, w))?
        .broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    match act {
        crate::group_norm::Act::None => Ok(z),
        crate::group_norm::Act::Relu => z.relu(),
        crate::group_norm::Act::Gelu => z.gelu_erf(),
    }
}
