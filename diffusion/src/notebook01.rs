//! Notebook 01's U-Net: it takes a noisy image and gives back a clean one. It has no time input:
//! it only ever sees one amount of noise, [`add_noise`]'s `0.5 x + 0.5 e`.
//!
//! ```text
//!  x [N,1,16,16] ─ down0 ─ down1 ─────────── down2 ─ to_vec ─ dense_emb ─ up0 ─ up1 ─ up2 ─ out → x̂_0
//!                 16x16     │ 8x8 (skip)      │ 4x4 (skip)                 4x4   ▲ 8x8 ▲ 16x16
//!                           └─────────────────┼────────────────────────────────────────┘
//!                                             └──────────────────────────────┘
//! ```
//!
//! Its blocks ([`ConvBnRelu`], [`DownBlock`], [`UpBlock`], [`OutputHead`]) are the ones notebook
//! 02's network reuses: [`notebook02::UNet`](crate::notebook02::UNet) is this network plus a time
//! embedding added before `up1` and `up2`. Every tensor is created under its PyTorch `state_dict`
//! name (`down1.model.0.weight`, `up0.2.running_var`, ...), so checkpoints move between the two
//! frameworks.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{Device, Module, Tensor, Var};
use candle_nn::VarBuilder;

use crate::layers::{
    cat_channels, conv_bn_relu, conv_transpose_bn_relu, flatten, max_pool2x2, mse, relu, unflatten,
    BatchNorm2d, Conv2d, ConvTranspose2d, Linear,
};
use crate::network::{check_images, Learner, Network};
use crate::summary::Summary;
use crate::{Rng, Schedule};

/// `Conv2d(3x3) → BatchNorm2d → ReLU`, the unit every block repeats.
#[derive(Debug, Clone)]
pub struct ConvBnRelu {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBnRelu {
    /// Creates the convolution at index `i` and its BatchNorm at `i + 1` under `vb`.
    pub fn new(in_ch: usize, out_ch: usize, vb: &VarBuilder, i: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(in_ch, out_ch, vb.pp(i))?,
            bn: BatchNorm2d::new(out_ch, vb.pp(i + 1))?,
        })
    }

    /// `[N, in_ch, H, W] -> [N, out_ch, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(conv_bn_relu(&self.conv, &self.bn, x, train)?)
    }

    pub fn parameters(&self) -> usize {
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

    pub fn parameters(&self) -> usize {
        self.first.parameters() + self.second.parameters()
    }
}

/// Doubles the image side: concatenates the skip connection on channels, then
/// `ConvTranspose2d(3x3, stride 2) → BN → ReLU → Conv → BN → ReLU`.
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

    pub fn parameters(&self) -> usize {
        self.up.parameters() + self.up_bn.parameters() + self.conv.parameters()
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
    pub fn new(ch: usize, img_ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv_bn_relu: ConvBnRelu::new(ch, ch, &vb, 0)?,
            conv: Conv2d::new(ch, img_ch, vb.pp(3))?,
        })
    }

    /// `[N, c0, H, W] -> [N, img_ch, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv_bn_relu.forward_t(x, train)?; // [N, c0, H, W]
        Ok(self.conv.forward(&h)?) // [N, img_ch, H, W]
    }

    pub fn parameters(&self) -> usize {
        self.conv_bn_relu.parameters() + self.conv.parameters()
    }
}

/// Channels after `down0`, `down1`, `down2`.
pub const DOWN_CHS: [usize; 3] = [16, 32, 64];
/// Width of the bottleneck MLP.
pub const LATENT: usize = 32;

/// The sizes of the images the network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageConfig {
    pub img_ch: usize,
    pub img_size: usize,
}

impl Default for ImageConfig {
    /// The course's FashionMNIST: 1 channel, 16 x 16.
    fn default() -> Self {
        use crate::settings::*;
        Self {
            img_ch: IMG_CH,
            img_size: IMG_SIZE,
        }
    }
}

/// Notebook 01's U-Net (234,977 trainable parameters).
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: ImageConfig,
    pub down0: ConvBnRelu,
    pub down1: DownBlock,
    pub down2: DownBlock,
    pub dense_emb: [Linear; 3],
    pub up0: ConvBnRelu,
    pub up1: UpBlock,
    pub up2: UpBlock,
    pub out: OutputHead,
}

impl UNet {
    /// The course's network (1 channel, 16 x 16).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_config(ImageConfig::default(), vb)
    }

    pub fn with_config(config: ImageConfig, vb: VarBuilder) -> Result<Self> {
        if !config.img_size.is_multiple_of(4) || config.img_size == 0 {
            bail!(
                "the U-Net halves the image twice: img_size must be a multiple of 4, got {}",
                config.img_size
            );
        }
        if config.img_ch == 0 {
            bail!("the U-Net needs images with at least one channel");
        }
        let [c0, c1, c2] = DOWN_CHS;
        let flat = c2 * (config.img_size / 4).pow(2);
        let d = vb.pp("dense_emb");
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
            up0: ConvBnRelu::new(c2, c2, &vb.pp("up0"), 1)?,
            up1: UpBlock::new(c2, c1, vb.pp("up1"))?,
            up2: UpBlock::new(c1, c0, vb.pp("up2"))?,
            out: OutputHead::new(c0, config.img_ch, vb.pp("out"))?,
        })
    }

    /// The network's guess of the clean image behind `x` (`[N, img_ch, img_size, img_size]`).
    /// With `train`, BatchNorm uses (and records) the batch's statistics; without, the running
    /// ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_images(self, x)?;
        self.forward_shifted(x, None, train)
    }

    /// Evaluation-mode prediction: `forward_t(x, false)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// The forward pass with per-channel shifts added to the inputs of `up1` and `up2`
    /// (`[N, 64, 1, 1]` and `[N, 32, 1, 1]`): notebook 02 adds its time embeddings there.
    /// `x` is not checked here. Shapes below for the course's 16 x 16 images.
    pub fn forward_shifted(
        &self,
        x: &Tensor,
        shifts: Option<[&Tensor; 2]>,
        train: bool,
    ) -> Result<Tensor> {
        let down0 = self.down0.forward_t(x, train)?; // [N, 16, 16, 16]
        let down1 = self.down1.forward_t(&down0, train)?; // [N, 32, 8, 8]
        let down2 = self.down2.forward_t(&down1, train)?; // [N, 64, 4, 4]

        let mut latent = relu(&flatten(&down2)?)?; // [N, 1024]: to_vec
        for layer in &self.dense_emb {
            latent = relu(&layer.forward(&latent)?)?; // [N, 32], [N, 32], [N, 1024]
        }
        let latent = unflatten(&latent, &down2.dims()[1..])?; // [N, 64, 4, 4]

        let mut up0 = self.up0.forward_t(&latent, train)?; // [N, 64, 4, 4]
        if let Some([shift, _]) = shifts {
            up0 = up0.broadcast_add(shift)?;
        }
        let mut up1 = self.up1.forward_t(&up0, &down2, train)?; // [N, 32, 8, 8]
        if let Some([_, shift]) = shifts {
            up1 = up1.broadcast_add(shift)?;
        }
        let up2 = self.up2.forward_t(&up1, &down1, train)?; // [N, 16, 16, 16]
        self.out.forward_t(&up2, train) // [N, 1, 16, 16]
    }

    /// The network with the weights of the checkpoint at `path` (a `state_dict` saved by
    /// [`checkpoint::save`](crate::checkpoint::save) or by PyTorch), on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(crate::checkpoint::load_network(path, ImageConfig::default(), device)?.0)
    }

    /// The layers, the shape each one outputs for one image, and their parameters.
    pub fn summary(&self) -> Summary {
        let c = self.config;
        let (s, [c0, c1, c2]) = (c.img_size, DOWN_CHS);
        let mut m = Summary::new("notebook 01's UNet", [c.img_ch, s, s]);
        let dense: usize = self.dense_emb.iter().map(Linear::parameters).sum();
        let rows = [
            (
                "down0",
                "Conv 3x3, BN, ReLU",
                [c0, s, s],
                self.down0.parameters(),
            ),
            (
                "down1",
                "DownBlock: 2 x (Conv, BN, ReLU), MaxPool",
                [c1, s / 2, s / 2],
                self.down1.parameters(),
            ),
            (
                "down2",
                "DownBlock",
                [c2, s / 4, s / 4],
                self.down2.parameters(),
            ),
            (
                "dense_emb",
                "Flatten, 3 x (Linear, ReLU), Unflatten",
                [c2, s / 4, s / 4],
                dense,
            ),
            (
                "up0",
                "Conv 3x3, BN, ReLU",
                [c2, s / 4, s / 4],
                self.up0.parameters(),
            ),
            (
                "up1",
                "UpBlock: cat skip, ConvT, BN, ReLU, Conv, BN, ReLU",
                [c1, s / 2, s / 2],
                self.up1.parameters(),
            ),
            ("up2", "UpBlock", [c0, s, s], self.up2.parameters()),
            (
                "out",
                "Conv, BN, ReLU, Conv 3x3",
                [c.img_ch, s, s],
                self.out.parameters(),
            ),
        ];
        for (name, what, output, parameters) in rows {
            m.row(name, what, output, parameters);
        }
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

    /// The running statistics and batch counts of every BatchNorm.
    pub fn batch_norm_buffers(&self) -> Vec<&Var> {
        self.batch_norms()
            .into_iter()
            .flat_map(|(_, bn)| bn.buffers())
            .collect()
    }
}

/// How much of the noisy image is noise: the course's `percent`.
pub const NOISE_PERCENT: f64 = 0.5;

/// The course's `add_noise`: `x_noisy = (1 - p) x + p e` with `p` = [`NOISE_PERCENT`] and
/// `e ~ N(0, I)` drawn from `rng`. Returns `x_noisy`.
pub fn add_noise(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    let noise = rng.randn_like(x)?;
    add_noise_with(x, &noise)
}

/// [`add_noise`] with the noise given: `(1 - p) x + p noise`.
pub fn add_noise_with(x: &Tensor, noise: &Tensor) -> Result<Tensor> {
    if noise.dims() != x.dims() {
        bail!(
            "noise must have the images' shape {:?}, got {:?}",
            x.dims(),
            noise.dims()
        );
    }
    Ok(((x * (1.0 - NOISE_PERCENT))? + (noise * NOISE_PERCENT)?)?)
}

/// The course's `get_loss` of notebook 01: `mean((x_0 - model(add_noise(x_0)))^2)`, BatchNorm in
/// training mode, with the noise given.
pub fn denoising_loss(model: &UNet, x_0: &Tensor, noise: &Tensor) -> Result<Tensor> {
    let x_noisy = add_noise_with(x_0, noise)?;
    let x_pred = model.forward_t(&x_noisy, true)?;
    Ok(mse(x_0, &x_pred)?)
}

impl Network for UNet {
    type Config = ImageConfig;

    fn build(config: ImageConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_config(config, vb)
    }

    fn config(&self) -> ImageConfig {
        self.config
    }

    fn image_shape(&self) -> [usize; 3] {
        let c = self.config;
        [c.img_ch, c.img_size, c.img_size]
    }

    fn buffers(&self) -> Vec<&Var> {
        self.batch_norm_buffers()
    }
}

/// The denoiser learns to give back the image: [`denoising_loss`] with fresh noise.
impl Learner for UNet {
    /// The trainer's schedule goes unused: this network sees one noise level, not timesteps.
    fn schedule_steps(&self) -> usize {
        crate::settings::T
    }

    fn training_loss(
        &self,
        x_0: &Tensor,
        _labels: Option<&Tensor>,
        _: &Schedule,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let noise = rng.randn_like(x_0)?;
        denoising_loss(self, x_0, &noise)
    }
}
