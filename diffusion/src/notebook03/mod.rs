//! Notebook 03's U-Net: notebook 02's plan with the four changes the course makes against blocky,
//! checkered samples.
//!
//! | change | where |
//! | --- | --- |
//! | GroupNorm and GELU instead of BatchNorm and ReLU | [`GELUConvBlock`], everywhere |
//! | space to depth instead of max pooling | [`RearrangePoolBlock`], the end of each [`DownBlock`] |
//! | a sinusoidal embedding of `t / T` | [`SinusoidalPositionEmbedBlock`] before `temb_1`, `temb_2` |
//! | residual connections and a global skip | [`ResidualConvBlock`] (`down0`); `down0` concatenated to `up2` before `out` |
//!
//! ```text
//!  x [N,1,16,16] ─ down0 ─ down1 ──────── down2 ─ to_vec ─ dense_emb ─ up0 ─(+temb_1)─ up1 ─(+temb_2)─ up2 ─┬─ out → noise
//!                 64x16x16  │ 64x8x8       │ 128x4x4                  128x4x4         ▲ 64x8x8    ▲ 64x16x16 │
//!                    │      └──────────────┼─────────────────────────────────────────┼───────────┘          │
//!                    │                     └─────────────────────────────────────────┘                      │
//!                    └───────────────────────────────── global skip (concatenated) ───────────────────────┘
//! ```
//!
//! Every tensor has its PyTorch `state_dict` name (`down0.conv1.model.0.weight`,
//! `down1.model.2.conv.model.1.bias`, `up1.model.0.weight`, ...): 1,979,777 parameters.

mod blocks;
mod time;

pub use blocks::{DownBlock, GELUConvBlock, RearrangePoolBlock, ResidualConvBlock, UpBlock};
pub use time::SinusoidalPositionEmbedBlock;

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{
    cat_channels, flatten, gelu, relu, unflatten, Activation, Conv2d, GroupNorm, Linear,
};
use crate::network::{check_images, Network, NoisePredictor};
pub use crate::notebook02::{EmbedBlock, UNetConfig};
use crate::summary::Summary;

/// Channels after `down0`, `down1`, `down2`.
pub const DOWN_CHS: [usize; 3] = [64, 64, 128];
/// Groups of the GroupNorms of `down0` and `out`.
pub const SMALL_GROUP_SIZE: usize = 8;
/// Groups of every other GroupNorm.
pub const BIG_GROUP_SIZE: usize = 32;
/// Dimensions of the sinusoidal time embedding.
pub const T_EMBED_DIM: usize = 8;

/// The head (`out.0..3`): `Conv(2 c0 → c0) → GroupNorm(8) → ReLU → Conv(c0 → img_ch)`.
#[derive(Debug, Clone)]
pub struct OutputHead {
    pub conv1: Conv2d,
    pub norm: GroupNorm,
    pub conv2: Conv2d,
}

impl OutputHead {
    fn new(c0: usize, img_ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(2 * c0, c0, vb.pp(0))?,
            norm: GroupNorm::new(SMALL_GROUP_SIZE, c0, vb.pp(1))?,
            conv2: Conv2d::new(c0, img_ch, vb.pp(3))?,
        })
    }

    /// `[N, 2 c0, H, W] -> [N, img_ch, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(x)?; // [N, c0, H, W]
        let x = self.norm.forward_act(&x, diffusion_kernels::Act::Relu)?; // [N, c0, H, W]
        Ok(self.conv2.forward(&x)?) // [N, img_ch, H, W]
    }

    fn parameters(&self) -> usize {
        self.conv1.parameters() + self.norm.parameters() + self.conv2.parameters()
    }
}

/// Notebook 03's U-Net (1,979,777 trainable parameters for 16 x 16 x 1).
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: UNetConfig,
    pub down0: ResidualConvBlock,
    pub down1: DownBlock,
    pub down2: DownBlock,
    pub dense_emb: [Linear; 3],
    pub sinusoidaltime: SinusoidalPositionEmbedBlock,
    pub temb_1: EmbedBlock,
    pub temb_2: EmbedBlock,
    pub up0: GELUConvBlock,
    pub up1: UpBlock,
    pub up2: UpBlock,
    pub out: OutputHead,
}

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
        if config.t == 0 || config.img_ch == 0 {
            bail!("the U-Net needs T >= 1 and at least one image channel");
        }
        let [c0, c1, c2] = DOWN_CHS;
        let (small, big) = (SMALL_GROUP_SIZE, BIG_GROUP_SIZE);
        let flat = c2 * (config.img_size / 4).pow(2);
        let d = vb.pp("dense_emb");
        let embed = |emb: usize, name: &str| {
            EmbedBlock::with_activation(T_EMBED_DIM, emb, Activation::Gelu, vb.pp(name))
        };
        Ok(Self {
            config,
            down0: ResidualConvBlock::new(config.img_ch, c0, small, vb.pp("down0"))?,
            down1: DownBlock::new(c0, c1, big, vb.pp("down1"))?,
            down2: DownBlock::new(c1, c2, big, vb.pp("down2"))?,
            dense_emb: [
                Linear::new(flat, c1, d.pp(0))?,
                Linear::new(c1, c1, d.pp(2))?,
                Linear::new(c1, flat, d.pp(4))?,
            ],
            sinusoidaltime: SinusoidalPositionEmbedBlock::new(T_EMBED_DIM)?,
            temb_1: embed(c2, "temb_1")?,
            temb_2: embed(c1, "temb_2")?,
            up0: GELUConvBlock::new(c2, c2, big, vb.pp("up0").pp(1))?,
            up1: UpBlock::new(c2, c1, big, vb.pp("up1"))?,
            up2: UpBlock::new(c1, c0, big, vb.pp("up2"))?,
            out: OutputHead::new(c0, config.img_ch, vb.pp("out"))?,
        })
    }

    /// Predicts the noise in `x` (`[N, img_ch, img_size, img_size]`) at integer timesteps `t`
    /// (`[N]`, U32 or I64, in `0..T`). GroupNorm has no running statistics, so training and
    /// evaluation compute the same. Shapes below for the course's 16 x 16 images.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let n = check_images(self, x)?;
        crate::timesteps::check(t, n, self.config.t)?;
        let t = t.to_device(x.device())?.to_dtype(DType::F32)?;
        let t = self.sinusoidaltime.forward(&(t / self.config.t as f64)?)?; // [N, 8]

        let down0 = self.down0.forward(x)?; // [N, 64, 16, 16]
        let down1 = self.down1.forward(&down0)?; // [N, 64, 8, 8]
        let down2 = self.down2.forward(&down1)?; // [N, 128, 4, 4]

        let mut latent = gelu(&flatten(&down2)?)?; // [N, 2048]: to_vec
        for layer in &self.dense_emb {
            latent = relu(&layer.forward(&latent)?)?; // [N, 64], [N, 64], [N, 2048]
        }
        let latent = unflatten(&latent, &down2.dims()[1..])?; // [N, 128, 4, 4]

        let temb_1 = self.temb_1.forward(&t)?; // [N, 128, 1, 1]
        let temb_2 = self.temb_2.forward(&t)?; // [N, 64, 1, 1]

        let up0 = self.up0.forward(&latent)?; // [N, 128, 4, 4]
        let up1 = self.up1.forward(&up0.broadcast_add(&temb_1)?, &down2)?; // [N, 64, 8, 8]
        let up2 = self.up2.forward(&up1.broadcast_add(&temb_2)?, &down1)?; // [N, 64, 16, 16]
        self.out.forward(&cat_channels(&up2, &down0)?) // [N, 1, 16, 16]
    }

    /// The network with the weights of the checkpoint at `path`, on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(crate::checkpoint::load_network(path, UNetConfig::default(), device)?.0)
    }

    /// The layers, the shape each one outputs for one image, and their parameters.
    pub fn summary(&self) -> Summary {
        let c = self.config;
        let (s, [c0, c1, c2]) = (c.img_size, DOWN_CHS);
        let mut m = Summary::new("notebook 03's UNet", [c.img_ch, s, s]);
        let dense: usize = self.dense_emb.iter().map(Linear::parameters).sum();
        let rows = [
            (
                "down0",
                "ResidualConvBlock: GELUConvBlock + GELUConvBlock",
                [c0, s, s],
                self.down0.parameters(),
            ),
            (
                "down1",
                "DownBlock: 2 GELUConvBlocks, RearrangePool",
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
                "Flatten, GELU, 3 x (Linear, ReLU), Unflatten",
                [c2, s / 4, s / 4],
                dense,
            ),
            (
                "temb_1",
                "sinusoidal(t / T), EmbedBlock (GELU)",
                [c2, 1, 1],
                self.temb_1.parameters(),
            ),
            (
                "temb_2",
                "sinusoidal(t / T), EmbedBlock (GELU)",
                [c1, 1, 1],
                self.temb_2.parameters(),
            ),
            (
                "up0",
                "GELUConvBlock",
                [c2, s / 4, s / 4],
                self.up0.parameters(),
            ),
            (
                "up1",
                "UpBlock: cat skip, ConvT 2x2, 4 GELUConvBlocks",
                [c1, s / 2, s / 2],
                self.up1.parameters(),
            ),
            ("up2", "UpBlock", [c0, s, s], self.up2.parameters()),
            (
                "out",
                "cat down0, Conv, GroupNorm, ReLU, Conv",
                [c.img_ch, s, s],
                self.out.parameters(),
            ),
        ];
        for (name, what, output, parameters) in rows {
            m.row(name, what, output, parameters);
        }
        m
    }
}

impl Network for UNet {
    type Config = UNetConfig;

    fn build(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_config(config, vb)
    }

    fn config(&self) -> UNetConfig {
        self.config
    }

    fn image_shape(&self) -> [usize; 3] {
        let c = self.config;
        [c.img_ch, c.img_size, c.img_size]
    }
}

impl NoisePredictor for UNet {
    fn steps(&self) -> usize {
        self.config.t
    }

    /// GroupNorm is the same in training and evaluation: `train` changes nothing.
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward(x_t, t)
    }
}
