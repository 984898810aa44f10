//! The course's U-Net: it looks at a noisy image `x_t` and the time `t`, and predicts the noise.
//!
//! ```text
//!  x [N,1,16,16] ─ down0 ─ down1 ─────────────── down2 ─ to_vec ─ dense_emb ─ up0 ─(+temb_1)─ up1 ─(+temb_2)─ up2 ─ out → noise
//!                 16x16     │ 8x8 (skip)          │ 4x4 (skip)                   4x4          ▲ 8x8       ▲ 16x16
//!                           └─────────────────────┼───────────────────────────────────────────┼───────────┘
//!                                                 └───────────────────────────────────────────┘
//! ```
//!
//! Every tensor is created under its PyTorch `state_dict` name (`down1.model.0.weight`,
//! `up0.2.running_var`, ...), so checkpoints move between the two frameworks.

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{
    cat_channels, conv_bn_relu, conv_transpose_bn_relu, flatten, max_pool2x2, relu, unflatten,
    BatchNorm2d, Conv2d, ConvTranspose2d, Linear,
};

/// `Conv2d(3x3) → BatchNorm2d → ReLU`, the unit every block repeats.
#[derive(Debug, Clone)]
pub struct ConvBnRelu {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBnRelu {
    /// Creates the convolution at index `i` and its BatchNorm at `i + 1` under `vb`.
    fn new(in_ch: usize, out_ch: usize, vb: &VarBuilder, i: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(in_ch, out_ch, vb.pp(i))?,
            bn: BatchNorm2d::new(out_ch, vb.pp(i + 1))?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(conv_bn_relu(&self.conv, &self.bn, x, train)?)
    }
}

/// Halves the image side and changes the channels (`model.0..6` in PyTorch):
/// `Conv → BN → ReLU → Conv → BN → ReLU → MaxPool2d(2)`.
#[derive(Debug, Clone)]
pub struct DownBlock {
    pub first: ConvBnRelu,
    pub second: ConvBnRelu,
}

impl DownBlock {
    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            first: ConvBnRelu::new(in_ch, out_ch, &vb, 0)?,
            second: ConvBnRelu::new(out_ch, out_ch, &vb, 3)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.first.forward_t(x, train)?;
        let x = self.second.forward_t(&x, train)?;
        Ok(max_pool2x2(&x)?)
    }
}

/// Turns the time `t / T` (shape `[N, 1]`) into a per-channel shift `[N, emb_dim, 1, 1]`:
/// `Linear(input_dim → emb_dim) → ReLU → Linear(emb_dim → emb_dim) → Unflatten`.
#[derive(Debug, Clone)]
pub struct EmbedBlock {
    pub lin1: Linear,
    pub lin2: Linear,
}

impl EmbedBlock {
    pub fn new(input_dim: usize, emb_dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            lin1: Linear::new(input_dim, emb_dim, vb.pp(0))?,
            lin2: Linear::new(emb_dim, emb_dim, vb.pp(2))?,
        })
    }

    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let x = self.lin2.forward(&relu(&self.lin1.forward(t)?)?)?;
        Ok(unflatten(&x, &[x.dim(1)?, 1, 1])?)
    }
}

/// Doubles the image side: concatenates the skip connection on channels, then
/// `ConvTranspose2d(stride 2) → BN → ReLU → Conv → BN → ReLU`.
#[derive(Debug, Clone)]
pub struct UpBlock {
    pub up: ConvTranspose2d,
    pub up_bn: BatchNorm2d,
    pub conv: ConvBnRelu,
}

impl UpBlock {
    /// `in_ch` is the channel count of `x` alone; the concatenation with the skip doubles it.
    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            up: ConvTranspose2d::new(2 * in_ch, out_ch, vb.pp(0))?,
            up_bn: BatchNorm2d::new(out_ch, vb.pp(1))?,
            conv: ConvBnRelu::new(out_ch, out_ch, &vb, 3)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        let x = cat_channels(x, skip)?;
        let x = conv_transpose_bn_relu(&self.up, &self.up_bn, &x, train)?;
        self.conv.forward_t(&x, train)
    }
}

/// The sizes the network is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UNetConfig {
    /// Number of timesteps `T`; the network sees `t / T`.
    pub t: usize,
    pub img_ch: usize,
    pub img_size: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        use crate::settings::*;
        Self {
            t: T,
            img_ch: IMG_CH,
            img_size: IMG_SIZE,
        }
    }
}

/// The course's U-Net (240,385 trainable parameters).
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: UNetConfig,
    pub down0: ConvBnRelu,
    pub down1: DownBlock,
    pub down2: DownBlock,
    pub dense_emb: [Linear; 3],
    pub temb_1: EmbedBlock,
    pub temb_2: EmbedBlock,
    pub up0: ConvBnRelu,
    pub up1: UpBlock,
    pub up2: UpBlock,
    pub out: (ConvBnRelu, Conv2d),
}

/// Channels after `down0`, `down1`, `down2`.
pub const DOWN_CHS: [usize; 3] = [16, 32, 64];
/// Width of the bottleneck MLP.
pub const LATENT: usize = 32;

impl UNet {
    /// The course's network (T = 150, 1 channel, 16 x 16).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_config(UNetConfig::default(), vb)
    }

    pub fn with_config(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        if !config.img_size.is_multiple_of(4) || config.img_size == 0 {
            bail!(
                "the U-Net halves the image twice: img_size must be a multiple of 4, got {}",
                config.img_size
            );
        }
        if config.t == 0 {
            bail!("the U-Net needs T >= 1");
        }
        let [c0, c1, c2] = DOWN_CHS;
        let flat = c2 * (config.img_size / 4).pow(2);
        let d = vb.pp("dense_emb");
        let out = vb.pp("out");
        Ok(Self {
            config,
            down0: ConvBnRelu::new(config.img_ch, c0, &vb.pp("down0"), 0)?,
            down1: DownBlock::new(c0, c1, vb.pp("down1"))?,
            down2: DownBlock::new(c1, c2, vb.pp("down2"))?,
            dense_emb: [
                Linear::new(flat, LATENT, d.pp(0))?,
                Linear::new(LATENT, LATENT, d.pp(2))?,
                Linear::new(LATENT, flat, d.pp(4))?,
            ],
            temb_1: EmbedBlock::new(1, c2, vb.pp("temb_1"))?,
            temb_2: EmbedBlock::new(1, c1, vb.pp("temb_2"))?,
            up0: ConvBnRelu::new(c2, c2, &vb.pp("up0"), 1)?,
            up1: UpBlock::new(c2, c1, vb.pp("up1"))?,
            up2: UpBlock::new(c1, c0, vb.pp("up2"))?,
            out: (
                ConvBnRelu::new(c0, c0, &out, 0)?,
                Conv2d::new(c0, config.img_ch, out.pp(3))?,
            ),
        })
    }

    /// Predicts the noise in `x` (`[N, img_ch, img_size, img_size]`) at integer timesteps `t`
    /// (`[N]`, U32 or I64, in `0..T`). With `train`, BatchNorm uses (and records) the batch's
    /// statistics; without, the running ones.
    pub fn forward_t(&self, x: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        let expected = [
            x.dims().first().copied().unwrap_or(0),
            c.img_ch,
            c.img_size,
            c.img_size,
        ];
        if x.rank() != 4 || x.dims() != expected || expected[0] == 0 {
            bail!(
                "the U-Net takes images of shape [batch, {}, {}, {}], got {:?}",
                c.img_ch,
                c.img_size,
                c.img_size,
                x.dims()
            );
        }
        if x.dtype() != DType::F32 {
            bail!("the U-Net takes f32 images, got {:?}", x.dtype());
        }
        let n = x.dim(0)?;
        crate::timesteps::check(t, n, c.t)?;
        let t = (t.to_device(x.device())?.to_dtype(DType::F32)? / c.t as f64)?.reshape((n, 1))?;

        let down0 = self.down0.forward_t(x, train)?;
        let down1 = self.down1.forward_t(&down0, train)?;
        let down2 = self.down2.forward_t(&down1, train)?;

        let mut latent = relu(&flatten(&down2)?)?;
        for layer in &self.dense_emb {
            latent = relu(&layer.forward(&latent)?)?;
        }
        let latent = unflatten(&latent, &down2.dims()[1..])?;

        let temb_1 = self.temb_1.forward(&t)?;
        let temb_2 = self.temb_2.forward(&t)?;

        let up0 = self.up0.forward_t(&latent, train)?;
        let up1 = self
            .up1
            .forward_t(&up0.broadcast_add(&temb_1)?, &down2, train)?;
        let up2 = self
            .up2
            .forward_t(&up1.broadcast_add(&temb_2)?, &down1, train)?;
        let h = self.out.0.forward_t(&up2, train)?;
        Ok(self.out.1.forward(&h)?)
    }

    /// Evaluation-mode prediction: `forward_t(x, t, false)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_t(x, t, false)
    }

    /// Every BatchNorm of the network, with its `state_dict` prefix.
    pub fn batch_norms(&self) -> Vec<(&'static str, &BatchNorm2d)> {
        vec![
            ("down0.1", &self.down0.bn),
            ("down1.model.1", &self.down1.first.bn),
            ("down1.model.4", &self.down1.second.bn),
            ("down2.model.1", &self.down2.first.bn),
            ("down2.model.4", &self.down2.second.bn),
            ("up0.2", &self.up0.bn),
            ("up1.model.1", &self.up1.up_bn),
            ("up1.model.4", &self.up1.conv.bn),
            ("up2.model.1", &self.up2.up_bn),
            ("up2.model.4", &self.up2.conv.bn),
            ("out.1", &self.out.0.bn),
        ]
    }
}

/// Is this `state_dict` entry a trainable parameter (not a BatchNorm statistic)?
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked"))
}
