//! Notebook 04's U-Net: notebook 03's network that also takes a class, so that sampling can ask
//! for one and steer towards it with classifier-free guidance ([`sample_w`]).
//!
//! The class enters as a one-hot context `c` (`[N, 10]`, times the mask of [`get_context_mask`]),
//! embedded twice like the time. The class *scales* the features of the up path, the time
//! *shifts* them:
//!
//! ```text
//! up1 = up1( c_embed1(c) * up0 + t_emb1(t),  down2 )
//! up2 = up2( c_embed2(c) * up1 + t_emb2(t),  down1 )
//! ```
//!
//! Everything else is notebook 03's ([`notebook03::UNet`], with the course's four changes);
//! the tensors keep the course's PyTorch names, with the time embeddings called `t_emb1`,
//! `t_emb2` and the class embeddings `c_embed1`, `c_embed2`: 2,002,561 parameters.
//!
//! [`notebook03::UNet`]: crate::notebook03::UNet

mod context;
mod guidance;
pub mod tradeoff;

pub use context::{class_index, context_for, get_context_mask, one_hot, DROP_PROB, N_CLASSES};
pub use guidance::{
    guided_noise, guided_prediction, mean_pairwise_distance, sample_class, sample_w, GuidedSamples,
    DEFAULT_W, STORE_FREQ, W_TESTS,
};

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarBuilder;

use crate::layers::{mse, Activation};
use crate::network::{Learner, Network};
use crate::notebook02::EmbedBlock;
use crate::notebook03::{self, Changes, DOWN_CHS};
use crate::summary::Summary;
use crate::{q_with_noise, Rng, Schedule};

/// The sizes the network is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UNetConfig {
    /// Number of timesteps `T`; the network sees `t / T`.
    pub t: usize,
    pub img_ch: usize,
    pub img_size: usize,
    /// Length of the one-hot context (the course's `c_embed_dim`): 10 classes.
    pub n_classes: usize,
}

impl Default for UNetConfig {
    /// The course's: notebook 03's sizes and 10 classes.
    fn default() -> Self {
        let body = notebook03::UNetConfig::default();
        Self {
            t: body.t,
            img_ch: body.img_ch,
            img_size: body.img_size,
            n_classes: N_CLASSES,
        }
    }
}

/// Notebook 04's class-conditional U-Net (2,002,561 trainable parameters for 16 x 16 x 1).
#[derive(Debug, Clone)]
pub struct UNet {
    pub config: UNetConfig,
    /// Notebook 03's network, its time embeddings named `t_emb1` and `t_emb2`.
    pub body: notebook03::UNet,
    pub c_embed1: EmbedBlock,
    pub c_embed2: EmbedBlock,
}

impl UNet {
    /// The course's network (T = 150, 1 channel, 16 x 16, 10 classes).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_config(UNetConfig::default(), vb)
    }

    pub fn with_config(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.n_classes == 0 {
            bail!("the conditional U-Net needs at least one class");
        }
        let body_config = notebook03::UNetConfig {
            t: config.t,
            img_ch: config.img_ch,
            img_size: config.img_size,
            changes: Changes::ALL,
        };
        let body =
            notebook03::UNet::with_time_names(body_config, ["t_emb1", "t_emb2"], vb.clone())?;
        let [_, c1, c2] = DOWN_CHS;
        let embed = |emb: usize, name: &str| {
            EmbedBlock::with_activation(config.n_classes, emb, Activation::Gelu, vb.pp(name))
        };
        Ok(Self {
            config,
            body,
            c_embed1: embed(c2, "c_embed1")?,
            c_embed2: embed(c1, "c_embed2")?,
        })
    }

    /// Predicts the noise in `x` (`[N, img_ch, S, S]`) at timesteps `t` (`[N]` integers in
    /// `0..T`) for the contexts `c` (`[N, n_classes]` one-hot) under the masks `c_mask` (same
    /// shape; all zeros: no class). GroupNorm only, so training and evaluation compute the same.
    pub fn forward(&self, x: &Tensor, t: &Tensor, c: &Tensor, c_mask: &Tensor) -> Result<Tensor> {
        let n = crate::network::check_images(self, x)?;
        let shape = [n, self.config.n_classes];
        for (name, v) in [("c", c), ("c_mask", c_mask)] {
            if v.dims() != shape {
                bail!(
                    "{name} must be [{n}, {}] (one row of {} class values per image), got {:?}",
                    shape[1],
                    shape[1],
                    v.dims()
                );
            }
        }
        let c = (c * c_mask)?.to_device(x.device())?; // [N, 10]: the masked context
        let c_emb1 = self.c_embed1.forward(&c)?; // [N, 128, 1, 1]
        let c_emb2 = self.c_embed2.forward(&c)?; // [N, 64, 1, 1]
        self.body
            .forward_scaled(x, t, Some([&c_emb1, &c_emb2]), false) // [N, 1, 16, 16]; GroupNorm: no mode
    }

    /// The network with the weights of the checkpoint at `path`, on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(crate::checkpoint::load_network(path, UNetConfig::default(), device)?.0)
    }

    /// Notebook 03's layers and the two class embeddings.
    pub fn summary(&self) -> Summary {
        let mut s = self.body.summary();
        s.title = "notebook 04's conditional UNet".into();
        for layer in &mut s.layers {
            if let Some(k) = layer.name.strip_prefix("temb_") {
                layer.name = format!("t_emb{k}");
            }
        }
        let n = self.config.n_classes;
        let at = s
            .layers
            .iter()
            .position(|l| l.name == "up0")
            .unwrap_or(s.layers.len());
        let rows = [
            ("c_embed1", self.c_embed1.parameters(), [DOWN_CHS[2], 1, 1]),
            ("c_embed2", self.c_embed2.parameters(), [DOWN_CHS[1], 1, 1]),
        ];
        for (k, (name, parameters, output)) in rows.into_iter().enumerate() {
            let what = format!("c * c_mask ({n}), EmbedBlock (GELU): scales up{k}");
            s.layers.insert(
                at + k,
                crate::summary::Layer {
                    name: name.into(),
                    what,
                    output,
                    parameters,
                },
            );
        }
        s
    }
}

/// The course's `get_loss(model, x_0, t, c_hot, c_mask)` with the noise given:
///
/// ```text
/// x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) e;   loss = mean((e - model(x_t, t, c_hot, c_mask))^2)
/// ```
pub fn get_loss_with_context(
    model: &UNet,
    schedule: &Schedule,
    x_0: &Tensor,
    t: &Tensor,
    context: (&Tensor, &Tensor),
    noise: &Tensor,
) -> Result<Tensor> {
    let x_t = q_with_noise(schedule, x_0, t, noise)?;
    let noise_pred = model.forward(&x_t, t, context.0, context.1)?;
    Ok(mse(&noise_pred, noise)?)
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
        self.body.image_shape()
    }

    fn buffers(&self) -> Vec<&Var> {
        self.body.buffers()
    }
}

/// Notebook 04's training step: `t` drawn per image, the context of each image's label hidden
/// with probability [`DROP_PROB`] ([`get_context_mask`]), fresh noise, then
/// [`get_loss_with_context`].
impl Learner for UNet {
    fn schedule_steps(&self) -> usize {
        self.config.t
    }

    fn needs_labels(&self) -> bool {
        true
    }

    fn training_loss(
        &self,
        x_0: &Tensor,
        labels: Option<&Tensor>,
        schedule: &Schedule,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let labels = labels.context(
            "notebook 04's network learns from labelled images: pass each image's class",
        )?;
        let t = rng.timesteps(x_0.dim(0)?, schedule.len(), x_0.device())?;
        let (c_hot, c_mask) = get_context_mask(labels, DROP_PROB, rng)?;
        let noise = rng.randn_like(x_0)?;
        get_loss_with_context(self, schedule, x_0, &t, (&c_hot, &c_mask), &noise)
    }
}
