//! Notebook 02's U-Net: it looks at a noisy image `x_t` and the time `t`, and predicts the noise.
//!
//! ```text
//!  x [N,1,16,16] ─ down0 ─ down1 ─────────────── down2 ─ to_vec ─ dense_emb ─ up0 ─(+temb_1)─ up1 ─(+temb_2)─ up2 ─ out → noise
//!                 16x16     │ 8x8 (skip)          │ 4x4 (skip)                   4x4          ▲ 8x8       ▲ 16x16
//!                           └─────────────────────┼───────────────────────────────────────────┼───────────┘
//!                                                 └───────────────────────────────────────────┘
//! ```
//!
//! It is notebook 01's network ([`notebook01::UNet`], the blocks `down0` ... `out`) with the time
//! added: two [`EmbedBlock`]s turn `t / T` into per-channel shifts. Every tensor is created under
//! its PyTorch `state_dict` name (`down1.model.0.weight`, `up0.2.running_var`, `temb_1.model.0.weight`,
//! ...), so checkpoints move between the two frameworks.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;

use crate::layers::{unflatten, Activation, Linear};
use crate::network::{check_images, Network, NoisePredictor};
use crate::notebook01::{self, ImageConfig};
use crate::summary::Summary;

pub use crate::notebook01::{ConvBnRelu, DownBlock, OutputHead, UpBlock, DOWN_CHS, LATENT};

/// Turns the time (`t / T`, shape `[N, 1]`; notebook 03: its sinusoidal embedding, `[N, 8]`)
/// into a per-channel shift `[N, emb_dim, 1, 1]`:
/// `Linear(input_dim → emb_dim) → ReLU (GELU from notebook 03 on) → Linear(emb_dim → emb_dim) →
/// Unflatten`.
#[derive(Debug, Clone)]
pub struct EmbedBlock {
    pub lin1: Linear,
    pub activation: Activation,
    pub lin2: Linear,
}

impl EmbedBlock {
    /// Notebook 02's, with ReLU.
    pub fn new(input_dim: usize, emb_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_activation(input_dim, emb_dim, Activation::Relu, vb)
    }

    pub fn with_activation(
        input_dim: usize,
        emb_dim: usize,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            lin1: Linear::new(input_dim, emb_dim, vb.pp(0))?,
            activation,
            lin2: Linear::new(emb_dim, emb_dim, vb.pp(2))?,
        })
    }

    /// `[N, input_dim] -> [N, emb_dim, 1, 1]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let x = self.activation.apply(&self.lin1.forward(t)?)?; // [N, emb_dim]
        let x = self.lin2.forward(&x)?; // [N, emb_dim]
        Ok(unflatten(&x, &[x.dim(1)?, 1, 1])?) // [N, emb_dim, 1, 1]
    }

    pub fn parameters(&self) -> usize {
        self.lin1.parameters() + self.lin2.parameters()
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

/// The course's U-Net of notebook 02 (240,385 trainable parameters): notebook 01's layers, and
/// two embeddings of the time `t / T` added before `up1` and `up2`.
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: UNetConfig,
    /// `down0` ... `out`, notebook 01's network.
    pub layers: notebook01::UNet,
    pub temb_1: EmbedBlock,
    pub temb_2: EmbedBlock,
}

impl UNet {
    /// The course's network (T = 150, 1 channel, 16 x 16).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_config(UNetConfig::default(), vb)
    }

    pub fn with_config(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.t == 0 {
            bail!("the U-Net needs T >= 1");
        }
        let images = ImageConfig {
            img_ch: config.img_ch,
            img_size: config.img_size,
        };
        let [_, c1, c2] = DOWN_CHS;
        Ok(Self {
            config,
            layers: notebook01::UNet::with_config(images, vb.clone())?,
            temb_1: EmbedBlock::new(1, c2, vb.pp("temb_1"))?,
            temb_2: EmbedBlock::new(1, c1, vb.pp("temb_2"))?,
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

        let temb_1 = self.temb_1.forward(&t)?; // [N, 64, 1, 1]
        let temb_2 = self.temb_2.forward(&t)?; // [N, 32, 1, 1]
                                               // down0 .. up0, then up1(up0 + temb_1, down2), up2(up1 + temb_2, down1), out
        self.layers
            .forward_shifted(x, Some([&temb_1, &temb_2]), train) // [N, 1, 16, 16]
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
        let [_, c1, c2] = DOWN_CHS;
        let mut m = self.layers.summary();
        m.title = "notebook 02's UNet".into();
        let at = m.layers.iter().position(|l| l.name == "up0").unwrap_or(0);
        let mut time = Summary::new("", m.input);
        time.row(
            "temb_1",
            "EmbedBlock: t / T -> shift",
            [c2, 1, 1],
            self.temb_1.parameters(),
        );
        time.row(
            "temb_2",
            "EmbedBlock: t / T -> shift",
            [c1, 1, 1],
            self.temb_2.parameters(),
        );
        m.layers.splice(at..at, time.layers);
        m
    }

    /// Every BatchNorm of the network, with its `state_dict` prefix.
    pub fn batch_norms(&self) -> Vec<(&'static str, &crate::layers::BatchNorm2d)> {
        self.layers.batch_norms()
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

    fn buffers(&self) -> Vec<&Var> {
        self.layers.batch_norm_buffers()
    }
}

impl NoisePredictor for UNet {
    fn steps(&self) -> usize {
        self.config.t
    }

    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(x_t, t, train)
    }
}
