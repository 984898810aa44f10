//! Notebook 02's U-Net: it looks at a noisy image `x_t` and the time `t`, and predicts the noise.
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

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;

use crate::network::{check_images, NoisePredictor};
use crate::summary::Summary;

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

    /// `[N, in_ch, H, W] -> [N, out_ch, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(conv_bn_relu(&self.conv, &self.bn, x, train)?)
    }

    fn parameters(&self) -> usize {
        self.conv.parameters() + self.bn.parameters()
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

    /// `[N, in_ch, H, W] -> [N, out_ch, H/2, W/2]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.first.forward_t(x, train)?; // [N, out_ch, H, W]
        let x = self.second.forward_t(&x, train)?; // [N, out_ch, H, W]
        Ok(max_pool2x2(&x)?) // [N, out_ch, H/2, W/2]
    }

    fn parameters(&self) -> usize {
        self.first.parameters() + self.second.parameters()
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

    /// `[N, input_dim] -> [N, emb_dim, 1, 1]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let x = relu(&self.lin1.forward(t)?)?; // [N, emb_dim]
        let x = self.lin2.forward(&x)?; // [N, emb_dim]
        Ok(unflatten(&x, &[x.dim(1)?, 1, 1])?) // [N, emb_dim, 1, 1]
    }

    fn parameters(&self) -> usize {
        self.lin1.parameters() + self.lin2.parameters()
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

    /// `x, skip: [N, in_ch, H, W] -> [N, out_ch, 2H, 2W]`.
    pub fn forward_t(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        let x = cat_channels(x, skip)?; // [N, 2 in_ch, H, W]
        let x = conv_transpose_bn_relu(&self.up, &self.up_bn, &x, train)?; // [N, out_ch, 2H, 2W]
        self.conv.forward_t(&x, train) // [N, out_ch, 2H, 2W]
    }

    fn parameters(&self) -> usize {
        self.up.parameters() + self.up_bn.parameters() + self.conv.parameters()
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

/// The network's last layers (`out.0..3` in PyTorch): `Conv → BN → ReLU`, then a 3x3
/// convolution down to the image's channels.
#[derive(Debug, Clone)]
pub struct OutputHead {
    pub conv_bn_relu: ConvBnRelu,
    pub conv: Conv2d,
}

impl OutputHead {
    /// `[N, c0, H, W] -> [N, img_ch, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv_bn_relu.forward_t(x, train)?; // [N, c0, H, W]
        Ok(self.conv.forward(&h)?) // [N, img_ch, H, W]
    }

    fn parameters(&self) -> usize {
        self.conv_bn_relu.parameters() + self.conv.parameters()
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
    pub out: OutputHead,
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
            out: OutputHead {
                conv_bn_relu: ConvBnRelu::new(c0, c0, &out, 0)?,
                conv: Conv2d::new(c0, config.img_ch, out.pp(3))?,
            },
        })
    }

    /// Predicts the noise in `x` (`[N, img_ch, img_size, img_size]`) at integer timesteps `t`
    /// (`[N]`, U32 or I64, in `0..T`). With `train`, BatchNorm uses (and records) the batch's
    /// statistics; without, the running ones. Shapes below for the course's 16 x 16 images.
    pub fn forward_t(&self, x: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        let n = check_images(self, x)?;
        crate::timesteps::check(t, n, self.config.t)?;
        let t = t.to_device(x.device())?.to_dtype(DType::F32)?;
        let t = (t / self.config.t as f64)?.reshape((n, 1))?; // [N, 1], t / T

        let down0 = self.down0.forward_t(x, train)?; // [N, 16, 16, 16]
        let down1 = self.down1.forward_t(&down0, train)?; // [N, 32, 8, 8]
        let down2 = self.down2.forward_t(&down1, train)?; // [N, 64, 4, 4]

        let mut latent = relu(&flatten(&down2)?)?; // [N, 1024]
        for layer in &self.dense_emb {
            latent = relu(&layer.forward(&latent)?)?; // [N, 32], [N, 32], [N, 1024]
        }
        let latent = unflatten(&latent, &down2.dims()[1..])?; // [N, 64, 4, 4]

        let temb_1 = self.temb_1.forward(&t)?; // [N, 64, 1, 1]
        let temb_2 = self.temb_2.forward(&t)?; // [N, 32, 1, 1]

        let up0 = self.up0.forward_t(&latent, train)?; // [N, 64, 4, 4]
        let up1 = self
            .up1
            .forward_t(&up0.broadcast_add(&temb_1)?, &down2, train)?; // [N, 32, 8, 8]
        let up2 = self
            .up2
            .forward_t(&up1.broadcast_add(&temb_2)?, &down1, train)?; // [N, 16, 16, 16]
        self.out.forward_t(&up2, train) // [N, 1, 16, 16]
    }

    /// Evaluation-mode prediction: `forward_t(x, t, false)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_t(x, t, false)
    }

    /// The network with the weights of the checkpoint at `path` (a `state_dict` saved by
    /// [`checkpoint::save`](crate::checkpoint::save) or by PyTorch), on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(crate::checkpoint::load_network(path, UNetConfig::default(), device)?.0)
    }

    /// The layers, the shape each one outputs for one image, and their parameters.
    pub fn summary(&self) -> Summary {
        let c = self.config;
        let (s, [c0, c1, c2]) = (c.img_size, DOWN_CHS);
        let mut m = Summary::new("notebook 02's UNet", [c.img_ch, s, s]);
        m.row(
            "down0",
            "Conv 3x3, BN, ReLU",
            [c0, s, s],
            self.down0.parameters(),
        );
        m.row(
            "down1",
            "DownBlock: 2 x (Conv, BN, ReLU), MaxPool",
            [c1, s / 2, s / 2],
            self.down1.parameters(),
        );
        m.row(
            "down2",
            "DownBlock",
            [c2, s / 4, s / 4],
            self.down2.parameters(),
        );
        let dense: usize = self.dense_emb.iter().map(Linear::parameters).sum();
        m.row(
            "dense_emb",
            "Flatten, 3 x (Linear, ReLU), Unflatten",
            [c2, s / 4, s / 4],
            dense,
        );
        m.row(
            "temb_1",
            "EmbedBlock: t / T -> shift",
            [c2, 1, 1],
            self.temb_1.parameters(),
        );
        m.row(
            "temb_2",
            "EmbedBlock: t / T -> shift",
            [c1, 1, 1],
            self.temb_2.parameters(),
        );
        m.row(
            "up0",
            "Conv 3x3, BN, ReLU",
            [c2, s / 4, s / 4],
            self.up0.parameters(),
        );
        m.row(
            "up1",
            "UpBlock: cat skip, ConvT, BN, ReLU, Conv, BN, ReLU",
            [c1, s / 2, s / 2],
            self.up1.parameters(),
        );
        m.row("up2", "UpBlock", [c0, s, s], self.up2.parameters());
        m.row(
            "out",
            "Conv, BN, ReLU, Conv 3x3",
            [c.img_ch, s, s],
            self.out.parameters(),
        );
        m
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
            ("out.1", &self.out.conv_bn_relu.bn),
        ]
    }
}

impl NoisePredictor for UNet {
    type Config = UNetConfig;

    fn build(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_config(config, vb)
    }

    fn config(&self) -> UNetConfig {
        self.config
    }

    fn steps(&self) -> usize {
        self.config.t
    }

    fn image_shape(&self) -> [usize; 3] {
        let c = self.config;
        [c.img_ch, c.img_size, c.img_size]
    }

    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(x_t, t, train)
    }

    fn buffers(&self) -> Vec<&Var> {
        self.batch_norms()
            .into_iter()
            .flat_map(|(_, bn)| [&bn.running_mean, &bn.running_var, &bn.num_batches_tracked])
            .collect()
    }
}
