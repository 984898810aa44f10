//! The building blocks of the U-Net, with PyTorch's parameter names, shapes and initialisation.
//!
//! Each layer creates its tensors through a [`VarBuilder`], so a `VarMap` behind it holds them
//! under the names of PyTorch's `state_dict` (`weight`, `bias`, `running_mean`, ...).
//! Initialisation follows PyTorch's defaults: weights and biases of convolutions and linear
//! layers are drawn from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; BatchNorm starts at weight 1,
//! bias 0, running mean 0 and running variance 1.

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};

fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `y = x W^T + b`, PyTorch's `nn.Linear` (weight `[out, in]`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    /// Trainable values: weight and bias.
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = uniform(1.0 / (in_dim as f64).sqrt());
        Ok(Self {
            weight: vb.get_with_hints((out_dim, in_dim), "weight", init)?,
            bias: vb.get_with_hints(out_dim, "bias", init)?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        diffusion_kernels::linear(x, &self.weight, &self.bias)
    }
}

/// A 3x3 convolution with stride 1 and padding 1, PyTorch's `nn.Conv2d(in, out, 3, padding=1)`
/// (weight `[out, in, 3, 3]`): `y[o] = b[o] + sum_i W[o, i] * x[i]` (cross-correlation).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Conv2d {
    /// Trainable values: weight and bias.
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        let init = uniform(1.0 / ((in_ch * 9) as f64).sqrt());
        Ok(Self {
            weight: vb.get_with_hints((out_ch, in_ch, 3, 3), "weight", init)?,
            bias: vb.get_with_hints(out_ch, "bias", init)?,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        diffusion_kernels::conv3x3(x, &self.weight, &self.bias)
    }
}

/// A 3x3 transposed convolution with stride 2, padding 1 and output padding 1, which doubles the
/// side: PyTorch's `nn.ConvTranspose2d(in, out, 3, 2, 1, 1)` (weight `[in, out, 3, 3]`).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl ConvTranspose2d {
    /// Trainable values: weight and bias.
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch computes fan_in from weight.size(1) * k * k = out * 9.
        let init = uniform(1.0 / ((out_ch * 9) as f64).sqrt());
        Ok(Self {
            weight: vb.get_with_hints((in_ch, out_ch, 3, 3), "weight", init)?,
            bias: vb.get_with_hints(out_ch, "bias", init)?,
        })
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        diffusion_kernels::conv_transpose3x3_s2(x, &self.weight, &self.bias)
    }
}

/// PyTorch's `nn.BatchNorm2d(c)` (momentum 0.1, eps 1e-5).
///
/// Training: `y = (x - mean_B) / sqrt(var_B + eps) * weight + bias` with the batch's mean and
/// biased variance over `(N, H, W)`, and the running statistics move towards the batch's:
/// `running = (1 - momentum) * running + momentum * batch` (with the unbiased variance), while
/// `num_batches_tracked` counts the updates. Evaluation uses the running statistics instead.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: candle_core::Var,
    pub running_var: candle_core::Var,
    pub num_batches_tracked: candle_core::Var,
}

/// BatchNorm's momentum, as in PyTorch.
pub const BN_MOMENTUM: f64 = 0.1;
/// BatchNorm's epsilon, as in PyTorch.
pub const BN_EPS: f64 = 1e-5;

impl BatchNorm2d {
    /// Trainable values: weight and bias (the running statistics are not trained).
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    /// The state training changes outside the optimizer: the running statistics and the count.
    pub fn buffers(&self) -> [&candle_core::Var; 3] {
        [
            &self.running_mean,
            &self.running_var,
            &self.num_batches_tracked,
        ]
    }

    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let var = |t: Tensor| -> Result<candle_core::Var> {
            if !t.is_variable() {
                bail!("BatchNorm statistics must be created through a VarMap-backed VarBuilder");
            }
            Ok(candle_core::Var::from_tensor(&t)?)
        };
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: var(vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?,
            running_var: var(vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?,
            num_batches_tracked: var(vb.get_with_hints_dtype(
                (),
                "num_batches_tracked",
                Init::Const(0.0),
                DType::I64,
            )?)?,
        })
    }

    /// Normalises `x` of shape `[N, C, H, W]`: with batch statistics (and an update of the running
    /// ones) when `train`, with the running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        if train {
            let (y, mean, var) =
                diffusion_kernels::batch_norm_train(x, &self.weight, &self.bias, BN_EPS)?;
            self.record(&mean, &var, n * h * w)?;
            Ok(y)
        } else {
            diffusion_kernels::batch_norm_eval(
                x,
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                BN_EPS,
            )
        }
    }

    /// Moves the running statistics towards a batch's `mean` and biased `var` (over `count`
    /// values per channel) and counts the batch.
    fn record(&self, mean: &Tensor, var: &Tensor, count: usize) -> candle_core::Result<()> {
        let count = count as f64;
        let unbiased = (var * (count / (count - 1.0).max(1.0)))?;
        let m = BN_MOMENTUM;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm.detach())?;
        self.running_var.set(&rv.detach())?;
        let nbt = (self.num_batches_tracked.as_tensor() + 1.0)?;
        self.num_batches_tracked.set(&nbt)
    }

    /// `relu(self.forward_t(conv(x), train))` for the convolution `kind` with kernel `w` and bias
    /// `b`; in training the three run as one kernel.
    fn after_conv(
        &self,
        kind: diffusion_kernels::ConvKind,
        w: &Tensor,
        b: &Tensor,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        use diffusion_kernels::{conv_bn_relu_eval, conv_bn_relu_train, BatchNormParams, ConvBn};
        let bn = BatchNormParams {
            gamma: &self.weight,
            beta: &self.bias,
            running_mean: self.running_mean.as_tensor(),
            running_var: self.running_var.as_tensor(),
            eps: BN_EPS,
        };
        let p = ConvBn { kind, w, b, bn };
        if train {
            let (y, mean, var) = conv_bn_relu_train(x, &p)?;
            let (n, _, h, w) = y.dims4()?;
            self.record(&mean, &var, n * h * w)?;
            Ok(y)
        } else {
            conv_bn_relu_eval(x, &p)
        }
    }
}

/// `relu(bn(conv(x)))`, PyTorch's `Conv2d → BatchNorm2d → ReLU`.
pub fn conv_bn_relu(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
) -> candle_core::Result<Tensor> {
    bn.after_conv(
        diffusion_kernels::ConvKind::Conv3x3,
        &conv.weight,
        &conv.bias,
        x,
        train,
    )
}

/// `relu(bn(conv_transpose(x)))`, PyTorch's `ConvTranspose2d → BatchNorm2d → ReLU`.
pub fn conv_transpose_bn_relu(
    conv: &ConvTranspose2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
) -> candle_core::Result<Tensor> {
    bn.after_conv(
        diffusion_kernels::ConvKind::Transpose3x3S2,
        &conv.weight,
        &conv.bias,
        x,
        train,
    )
}

/// 2x2 max pooling with stride 2 (PyTorch's `nn.MaxPool2d(2)`), whose gradient goes, whole, to
/// the maximum of each window (candle 0.11's own `max_pool2d` passes only a quarter of it).
pub fn max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    diffusion_kernels::max_pool2x2(x)
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()
}

/// Flattens all dimensions after the first: `[N, ...] -> [N, prod(...)]`.
pub fn flatten(x: &Tensor) -> candle_core::Result<Tensor> {
    x.flatten_from(1)
}

/// The reverse of [`flatten`]: `[N, prod(shape)] -> [N, shape...]`.
pub fn unflatten(x: &Tensor, shape: &[usize]) -> candle_core::Result<Tensor> {
    let mut dims = vec![x.dim(0)?];
    dims.extend_from_slice(shape);
    x.reshape(dims)
}

/// Concatenates on the channel dimension: PyTorch's `torch.cat((a, b), 1)`.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::cat(&[a, b], 1)
}

/// Mean of squared differences: PyTorch's `F.mse_loss`.
pub fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// The activations of the course's networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)` (notebooks 01 and 02).
    Relu,
    /// The exact GELU, `x Φ(x) = x (1 + erf(x / sqrt 2)) / 2` (notebooks 03 and 04).
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
        }
    }
}

/// PyTorch's `nn.GELU()`: `x Φ(x) = x (1 + erf(x / sqrt 2)) / 2`, the erf form (not the tanh
/// approximation).
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.gelu_erf()
}

/// PyTorch's `nn.GroupNorm(num_groups, channels)` (eps 1e-5): the channels are split into
/// `num_groups` groups of `channels / num_groups`, and each image's group is normalised by its
/// own mean and (biased) variance over its channels and pixels,
/// `y = (x - mean_g) / sqrt(var_g + eps) * weight + bias`. Unlike BatchNorm it never mixes
/// images, so it behaves the same in training and in evaluation, at any batch size.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub num_groups: usize,
    pub weight: Tensor,
    pub bias: Tensor,
}

/// GroupNorm's epsilon, as in PyTorch.
pub const GN_EPS: f64 = 1e-5;

impl GroupNorm {
    pub fn new(num_groups: usize, channels: usize, vb: VarBuilder) -> Result<Self> {
        if num_groups == 0 || !channels.is_multiple_of(num_groups) {
            bail!(
                "GroupNorm splits {channels} channels into groups: the number of groups must divide it, got {num_groups} (PyTorch's nn.GroupNorm(num_groups, num_channels) takes the number of groups first)"
            );
        }
        Ok(Self {
            num_groups,
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        })
    }

    /// Trainable values: weight and bias.
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }
}

impl GroupNorm {
    /// `act(GroupNorm(x))`, the activation fused into the same kernel: `[N, C, H, W]`.
    pub fn forward_act(
        &self,
        x: &Tensor,
        act: diffusion_kernels::Act,
    ) -> candle_core::Result<Tensor> {
        diffusion_kernels::group_norm(x, &self.weight, &self.bias, self.num_groups, GN_EPS, act)
    }
}

impl Module for GroupNorm {
    /// `[N, C, H, W] -> [N, C, H, W]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_act(x, diffusion_kernels::Act::None)
    }
}

/// GroupNorm without its scale and shift: each image's `num_groups` groups of channels normalised
/// by their own mean and biased variance, `(x - mean_g) / sqrt(var_g + eps)`. `[N, C, H, W]`.
pub fn group_norm(x: &Tensor, num_groups: usize) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    let ones = Tensor::ones(c, x.dtype(), x.device())?;
    let zeros = Tensor::zeros(c, x.dtype(), x.device())?;
    diffusion_kernels::group_norm(
        x,
        &ones,
        &zeros,
        num_groups,
        GN_EPS,
        diffusion_kernels::Act::None,
    )
}

/// BatchNorm's training-mode normalisation without its scale and shift: each channel normalised
/// by the mean and biased variance over the whole batch and all pixels, `(x - mean_c) /
/// sqrt(var_c + eps)`. Every image's result depends on the other images of the batch.
/// `[N, C, H, W]`.
pub fn batch_statistics_norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let per_channel = x.transpose(0, 1)?.reshape((c, n * h * w))?; // [C, N HW]
    let mean = per_channel.mean_keepdim(1)?;
    let centred = per_channel.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    centred
        .broadcast_div(&(var + BN_EPS)?.sqrt()?)?
        .reshape((c, n, h, w))?
        .transpose(0, 1)?
        .contiguous()
}

/// Space to depth (einops `b c (h p1) (w p2) -> b (c p1 p2) h w` with `p1 = p2 = 2`): each 2 x 2
/// window becomes 4 channels, so the side halves and nothing is thrown away. Output channel
/// `4 c + 2 p1 + p2` holds input channel `c` at rows `2 h + p1`, columns `2 w + p2`.
/// `[N, C, H, W] -> [N, 4C, H/2, W/2]` (H and W even).
pub fn space_to_depth(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if !h.is_multiple_of(2) || !w.is_multiple_of(2) {
        bail!("space to depth takes 2 x 2 windows: the sides must be even, got {h} x {w}");
    }
    Ok(
        x.reshape((n, c, h / 2, 2, w / 2, 2))? // [N, C, h, p1, w, p2]
            .permute((0, 1, 3, 5, 2, 4))? // [N, C, p1, p2, h, w]
            .reshape((n, 4 * c, h / 2, w / 2))?,
    )
}

/// A 2x2 transposed convolution with stride 2, PyTorch's `nn.ConvTranspose2d(in, out, 2, 2)`
/// (weight `[in, out, 2, 2]`): the kernel copies do not overlap, so
/// `y[o, 2i + a, 2j + b] = bias[o] + sum_c x[c, i, j] W[c, o, a, b]`, one matrix product.
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl ConvTranspose2x2 {
    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch computes fan_in from weight.size(1) * k * k = out * 4.
        let init = uniform(1.0 / ((out_ch * 4) as f64).sqrt());
        Ok(Self {
            weight: vb.get_with_hints((in_ch, out_ch, 2, 2), "weight", init)?,
            bias: vb.get_with_hints(out_ch, "bias", init)?,
        })
    }

    /// Trainable values: weight and bias.
    pub fn parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }
}

impl Module for ConvTranspose2x2 {
    /// `[N, in, H, W] -> [N, out, 2H, 2W]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let o = self.bias.dim(0)?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?; // [NHW, in]
        let y = rows.matmul(&self.weight.reshape((c, o * 4))?)?; // [NHW, out 2 2]
        y.reshape((n, h, w, o, 2, 2))?
            .permute((0, 3, 1, 4, 2, 5))? // [N, out, H, a, W, b]
            .reshape((n, o, 2 * h, 2 * w))?
            .broadcast_add(&self.bias.reshape((1, o, 1, 1))?)
    }
}
