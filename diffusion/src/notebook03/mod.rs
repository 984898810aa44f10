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
//!
//! [`UNetConfig::changes`] can take any of the four changes out again ([`Changes`]), for the
//! ablation that measures what each is worth.

mod blocks;
mod changes;
mod time;

pub use blocks::{DownBlock, GELUConvBlock, Norm, RearrangePoolBlock, ResidualConvBlock, UpBlock};
pub use changes::{Change, Changes};
pub use time::SinusoidalPositionEmbedBlock;

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;

use diffusion_kernels::Act;

use crate::layers::{cat_channels, flatten, relu, unflatten, Activation, Conv2d, Linear};
use crate::network::{check_images, Network, NoisePredictor};
pub use crate::notebook02::EmbedBlock;
use crate::summary::Summary;

/// Channels after `down0`, `down1`, `down2`.
pub const DOWN_CHS: [usize; 3] = [64, 64, 128];
/// Groups of the GroupNorms of `down0` and `out`.
pub const SMALL_GROUP_SIZE: usize = 8;
/// Groups of every other GroupNorm.
pub const BIG_GROUP_SIZE: usize = 32;
/// Dimensions of the sinusoidal time embedding.
pub const T_EMBED_DIM: usize = 8;

/// The sizes the network is built for, and which of the course's changes it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UNetConfig {
    /// Number of timesteps `T`; the network sees `t / T`.
    pub t: usize,
    pub img_ch: usize,
    pub img_size: usize,
    /// [`Changes::ALL`] for the course's network.
    pub changes: Changes,
}

impl Default for UNetConfig {
    fn default() -> Self {
        let crate::UNetConfig {
            t,
            img_ch,
            img_size,
        } = Default::default();
        Self {
            t,
            img_ch,
            img_size,
            changes: Changes::ALL,
        }
    }
}

impl UNetConfig {
    /// The course's network without `change` (for the ablation).
    pub fn without(change: Change) -> Self {
        Self {
            changes: Changes::ALL.without(change),
            ..Self::default()
        }
    }
}

/// The head (`out.0..3`): `Conv(2 c0 → c0) → GroupNorm(8) → ReLU → Conv(c0 → img_ch)`; its
/// input is `up2` and `down0` concatenated (`up2` alone, `c0` channels, without the residual
/// change).
#[derive(Debug, Clone)]
pub struct OutputHead {
    pub conv1: Conv2d,
    pub norm: Norm,
    pub conv2: Conv2d,
}

impl OutputHead {
    fn new(c0: usize, img_ch: usize, changes: Changes, vb: VarBuilder) -> Result<Self> {
        let in_ch = if changes.residual { 2 * c0 } else { c0 };
        Ok(Self {
            conv1: Conv2d::new(in_ch, c0, vb.pp(0))?,
            norm: Norm::new(SMALL_GROUP_SIZE, c0, changes, vb.pp(1))?,
            conv2: Conv2d::new(c0, img_ch, vb.pp(3))?,
        })
    }

    /// `[N, 2 c0, H, W] -> [N, img_ch, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv1.forward(x)?; // [N, c0, H, W]
        let x = self.norm.forward_act(&x, Act::Relu, train)?; // [N, c0, H, W]
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
    /// `None` without the sinusoidal-time change: the embeddings see `t / T` itself.
    pub sinusoidaltime: Option<SinusoidalPositionEmbedBlock>,
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
        Self::with_time_names(config, ["temb_1", "temb_2"], vb)
    }

    /// The network with its two time embeddings under `time_names` (notebook 04's course code
    /// calls them `t_emb1`, `t_emb2`).
    pub(crate) fn with_time_names(
        config: UNetConfig,
        time_names: [&str; 2],
        vb: VarBuilder,
    ) -> Result<Self> {
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
        let changes = config.changes;
        let flat = c2 * (config.img_size / 4).pow(2);
        let d = vb.pp("dense_emb");
        let (sinusoidaltime, t_dim) = match changes.sinusoidal_time {
            true => (
                Some(SinusoidalPositionEmbedBlock::new(T_EMBED_DIM)?),
                T_EMBED_DIM,
            ),
            false => (None, 1),
        };
        let act = Self::activation(changes);
        let embed =
            |emb: usize, name: &str| EmbedBlock::with_activation(t_dim, emb, act, vb.pp(name));
        Ok(Self {
            config,
            down0: ResidualConvBlock::new(config.img_ch, c0, small, changes, vb.pp("down0"))?,
            down1: DownBlock::new(c0, c1, big, changes, vb.pp("down1"))?,
            down2: DownBlock::new(c1, c2, big, changes, vb.pp("down2"))?,
            dense_emb: [
                Linear::new(flat, c1, d.pp(0))?,
                Linear::new(c1, c1, d.pp(2))?,
                Linear::new(c1, flat, d.pp(4))?,
            ],
            sinusoidaltime,
            temb_1: embed(c2, time_names[0])?,
            temb_2: embed(c1, time_names[1])?,
            up0: GELUConvBlock::new(c2, c2, big, changes, vb.pp("up0").pp(1))?,
            up1: UpBlock::new(c2, c1, big, changes, vb.pp("up1"))?,
            up2: UpBlock::new(c1, c0, big, changes, vb.pp("up2"))?,
            out: OutputHead::new(c0, config.img_ch, changes, vb.pp("out"))?,
        })
    }

    /// GELU, or ReLU without the GroupNorm-and-GELU change.
    fn activation(changes: Changes) -> Activation {
        match changes.group_norm_gelu {
            true => Activation::Gelu,
            false => Activation::Relu,
        }
    }

    /// Predicts the noise in `x` (`[N, img_ch, img_size, img_size]`) at integer timesteps `t`
    /// (`[N]`, U32 or I64, in `0..T`). GroupNorm has no running statistics, so training and
    /// evaluation compute the same; `forward` is [`forward_t`](Self::forward_t) in evaluation.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_t(x, t, false)
    }

    /// [`forward`](Self::forward); `train` matters only to a network built with BatchNorm
    /// (without [`Change::GroupNormGelu`]). Shapes below for the course's 16 x 16 images.
    pub fn forward_t(&self, x: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_scaled(x, t, None, train)
    }

    /// [`forward_t`](Self::forward_t) with the inputs of `up1` and `up2` scaled per image and
    /// channel before the time is added: `scale[0] * up0 + temb_1`, `scale[1] * up1 + temb_2`
    /// (`[N, 128, 1, 1]` and `[N, 64, 1, 1]`; notebook 04's class embeddings).
    pub(crate) fn forward_scaled(
        &self,
        x: &Tensor,
        t: &Tensor,
        scale: Option<[&Tensor; 2]>,
        train: bool,
    ) -> Result<Tensor> {
        let n = check_images(self, x)?;
        crate::timesteps::check(t, n, self.config.t)?;
        let t = t.to_device(x.device())?.to_dtype(DType::F32)?;
        let t = (t / self.config.t as f64)?; // [N]: t / T
        let t = match &self.sinusoidaltime {
            Some(block) => block.forward(&t)?, // [N, 8]
            None => t.reshape((n, 1))?,        // [N, 1]
        };

        let down0 = self.down0.forward(x, train)?; // [N, 64, 16, 16]
        let down1 = self.down1.forward(&down0, train)?; // [N, 64, 8, 8]
        let down2 = self.down2.forward(&down1, train)?; // [N, 128, 4, 4]

        let act = Self::activation(self.config.changes);
        let mut latent = act.apply(&flatten(&down2)?)?; // [N, 2048]: to_vec
        for layer in &self.dense_emb {
            latent = relu(&layer.forward(&latent)?)?; // [N, 64], [N, 64], [N, 2048]
        }
        let latent = unflatten(&latent, &down2.dims()[1..])?; // [N, 128, 4, 4]

        let temb_1 = self.temb_1.forward(&t)?; // [N, 128, 1, 1]
        let temb_2 = self.temb_2.forward(&t)?; // [N, 64, 1, 1]

        let scaled = |x: Tensor, k: usize| match scale {
            Some(s) => x.broadcast_mul(s[k]),
            None => Ok(x),
        };
        let up0 = self.up0.forward(&latent, train)?; // [N, 128, 4, 4]
        let up0 = scaled(up0, 0)?.broadcast_add(&temb_1)?; // [N, 128, 4, 4]
        let up1 = self.up1.forward(&up0, &down2, train)?; // [N, 64, 8, 8]
        let up1 = scaled(up1, 1)?.broadcast_add(&temb_2)?; // [N, 64, 8, 8]
        let up2 = self.up2.forward(&up1, &down1, train)?; // [N, 64, 16, 16]
        let head = match self.config.changes.residual {
            true => cat_channels(&up2, &down0)?, // [N, 128, 16, 16]: the global skip
            false => up2,                        // [N, 64, 16, 16]
        };
        self.out.forward(&head, train) // [N, 1, 16, 16]
    }

    /// The network with the weights of the checkpoint at `path`, on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(crate::checkpoint::load_network(path, UNetConfig::default(), device)?.0)
    }

    /// The layers, the shape each one outputs for one image, and their parameters.
    pub fn summary(&self) -> Summary {
        let c = self.config;
        let (s, [c0, c1, c2]) = (c.img_size, DOWN_CHS);
        let removed: Vec<&str> = Change::ALL
            .into_iter()
            .filter(|ch| !c.changes.has(*ch))
            .map(Change::replaced_by)
            .collect();
        let title = match removed.is_empty() {
            true => "notebook 03's UNet".to_string(),
            false => format!("notebook 03's UNet, with {}", removed.join(", ")),
        };
        let mut m = Summary::new(&title, [c.img_ch, s, s]);
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

    /// None for the course's network; BatchNorm's statistics without the GroupNorm change.
    fn buffers(&self) -> Vec<&Var> {
        [
            self.down0.buffers(),
            self.down1.buffers(),
            self.down2.buffers(),
            self.up0.buffers(),
            self.up1.buffers(),
            self.up2.buffers(),
            self.out.norm.buffers(),
        ]
        .concat()
    }
}

impl NoisePredictor for UNet {
    fn steps(&self) -> usize {
        self.config.t
    }

    /// GroupNorm is the same in training and evaluation: for the course's network `train`
    /// changes nothing.
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(x_t, t, train)
    }
}
