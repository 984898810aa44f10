//! The convolution blocks of notebook 03's U-Net, under the course's names.
//!
//! | block | layers (PyTorch names) | shape |
//! | --- | --- | --- |
//! | [`GELUConvBlock`] | `model.0` Conv 3x3, `model.1` GroupNorm, GELU | `[N, in, H, W] -> [N, out, H, W]` |
//! | [`ResidualConvBlock`] | `conv1`, `conv2`: two `GELUConvBlock`s, their outputs added | same |
//! | [`RearrangePoolBlock`] | space to depth, then `conv`: a `GELUConvBlock(4 in, in)` | `-> [N, in, H/2, W/2]` |
//! | [`DownBlock`] | `model.0`, `model.1`: `GELUConvBlock`s, `model.2`: `RearrangePoolBlock` | `-> [N, out, H/2, W/2]` |
//! | [`UpBlock`] | concatenate the skip; `model.0` ConvTranspose 2x2 stride 2, `model.1..4` `GELUConvBlock`s | `-> [N, out, 2H, 2W]` |
//!
//! `group_size` is passed to PyTorch's `nn.GroupNorm(num_groups, channels)` as its first
//! argument: despite the course's name it is the *number of groups*.
//!
//! Every block takes the [`Changes`] the network makes: [`Changes::ALL`] builds the course's
//! block; the ablation builds notebook 02's counterpart of a change it takes out. `train` matters
//! only then (BatchNorm uses the batch's statistics in training, its running ones otherwise).

use anyhow::Result;
use candle_core::{Module, Tensor, Var};
use candle_nn::VarBuilder;

use diffusion_kernels::Act;

use super::Changes;
use crate::layers::{
    cat_channels, gelu, max_pool2x2, relu, space_to_depth, BatchNorm2d, Conv2d, ConvTranspose2x2,
    GroupNorm,
};

/// The normalisation after a convolution: the course's GroupNorm, or notebook 02's BatchNorm
/// when the network is built without [`Change::GroupNormGelu`](super::Change::GroupNormGelu).
#[derive(Debug, Clone)]
pub enum Norm {
    Group(GroupNorm),
    Batch(BatchNorm2d),
}

impl Norm {
    pub fn new(
        num_groups: usize,
        channels: usize,
        changes: Changes,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(if changes.group_norm_gelu {
            Norm::Group(GroupNorm::new(num_groups, channels, vb)?)
        } else {
            Norm::Batch(BatchNorm2d::new(channels, vb)?)
        })
    }

    /// `act(norm(x))`, `[N, C, H, W] -> [N, C, H, W]`.
    pub fn forward_act(&self, x: &Tensor, act: Act, train: bool) -> Result<Tensor> {
        Ok(match self {
            Norm::Group(gn) => gn.forward_act(x, act)?,
            Norm::Batch(bn) => {
                let y = bn.forward_t(x, train)?;
                match act {
                    Act::None => y,
                    Act::Relu => relu(&y)?,
                    Act::Gelu => gelu(&y)?,
                }
            }
        })
    }

    pub fn parameters(&self) -> usize {
        match self {
            Norm::Group(gn) => gn.parameters(),
            Norm::Batch(bn) => bn.parameters(),
        }
    }

    /// BatchNorm's running statistics (none for GroupNorm).
    pub fn buffers(&self) -> Vec<&Var> {
        match self {
            Norm::Group(_) => vec![],
            Norm::Batch(bn) => bn.buffers().to_vec(),
        }
    }
}

/// `Conv2d(in, out, 3, 1, 1) → GroupNorm(group_size, out) → GELU`.
#[derive(Debug, Clone)]
pub struct GELUConvBlock {
    pub conv: Conv2d,
    pub norm: Norm,
    /// GELU (ReLU without the GroupNorm-and-GELU change).
    pub act: Act,
}

impl GELUConvBlock {
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        group_size: usize,
        changes: Changes,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            conv: Conv2d::new(in_ch, out_ch, vb.pp(0))?,
            norm: Norm::new(group_size, out_ch, changes, vb.pp(1))?,
            act: if changes.group_norm_gelu {
                Act::Gelu
            } else {
                Act::Relu
            },
        })
    }

    /// `[N, in, H, W] -> [N, out, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv.forward(x)?; // [N, out, H, W]
        self.norm.forward_act(&x, self.act, train) // [N, out, H, W]: GroupNorm, then GELU
    }

    pub fn parameters(&self) -> usize {
        self.conv.parameters() + self.norm.parameters()
    }

    pub fn buffers(&self) -> Vec<&Var> {
        self.norm.buffers()
    }
}

/// Two [`GELUConvBlock`]s whose outputs are added: `x1 = conv1(x)`, `x2 = conv2(x1)`, returns
/// `x1 + x2` (the path around `conv2` lets the block pass `x1` on unchanged).
#[derive(Debug, Clone)]
pub struct ResidualConvBlock {
    pub conv1: GELUConvBlock,
    pub conv2: GELUConvBlock,
    /// Whether `x1` is added (without the residual change: `x2` alone).
    pub residual: bool,
}

impl ResidualConvBlock {
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        group_size: usize,
        changes: Changes,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv1: GELUConvBlock::new(in_ch, out_ch, group_size, changes, vb.pp("conv1"))?,
            conv2: GELUConvBlock::new(out_ch, out_ch, group_size, changes, vb.pp("conv2"))?,
            residual: changes.residual,
        })
    }

    /// `[N, in, H, W] -> [N, out, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x1 = self.conv1.forward(x, train)?; // [N, out, H, W]
        let x2 = self.conv2.forward(&x1, train)?; // [N, out, H, W]
        Ok(if self.residual { (x1 + x2)? } else { x2 })
    }

    pub fn parameters(&self) -> usize {
        self.conv1.parameters() + self.conv2.parameters()
    }

    pub fn buffers(&self) -> Vec<&Var> {
        [self.conv1.buffers(), self.conv2.buffers()].concat()
    }
}

/// Halves the side without discarding anything: [`space_to_depth`] turns each 2 x 2 window into
/// 4 channels, then a [`GELUConvBlock`] maps the `4 in` channels back to `in`.
#[derive(Debug, Clone)]
pub struct RearrangePoolBlock {
    pub conv: GELUConvBlock,
}

impl RearrangePoolBlock {
    pub fn new(in_ch: usize, group_size: usize, changes: Changes, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: GELUConvBlock::new(4 * in_ch, in_ch, group_size, changes, vb.pp("conv"))?,
        })
    }

    /// `[N, in, H, W] -> [N, in, H/2, W/2]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = space_to_depth(x)?; // [N, 4 in, H/2, W/2]
        self.conv.forward(&x, train) // [N, in, H/2, W/2]
    }

    pub fn parameters(&self) -> usize {
        self.conv.parameters()
    }
}

/// `GELUConvBlock(in, out) → GELUConvBlock(out, out) → RearrangePoolBlock(out)`.
#[derive(Debug, Clone)]
pub struct DownBlock {
    pub first: GELUConvBlock,
    pub second: GELUConvBlock,
    /// `None` without the rearrange-pooling change: 2x2 max pooling.
    pub pool: Option<RearrangePoolBlock>,
}

impl DownBlock {
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        group_size: usize,
        changes: Changes,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("model");
        let pool = match changes.rearrange_pool {
            true => Some(RearrangePoolBlock::new(
                out_ch,
                group_size,
                changes,
                vb.pp(2),
            )?),
            false => None,
        };
        Ok(Self {
            first: GELUConvBlock::new(in_ch, out_ch, group_size, changes, vb.pp(0))?,
            second: GELUConvBlock::new(out_ch, out_ch, group_size, changes, vb.pp(1))?,
            pool,
        })
    }

    /// `[N, in, H, W] -> [N, out, H/2, W/2]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.first.forward(x, train)?; // [N, out, H, W]
        let x = self.second.forward(&x, train)?; // [N, out, H, W]
        match &self.pool {
            Some(pool) => pool.forward(&x, train), // [N, out, H/2, W/2]
            None => Ok(max_pool2x2(&x)?),          // [N, out, H/2, W/2]
        }
    }

    pub fn parameters(&self) -> usize {
        let pool = self.pool.as_ref().map_or(0, RearrangePoolBlock::parameters);
        self.first.parameters() + self.second.parameters() + pool
    }

    pub fn buffers(&self) -> Vec<&Var> {
        let pool = self.pool.as_ref().map_or(vec![], |p| p.conv.buffers());
        [self.first.buffers(), self.second.buffers(), pool].concat()
    }
}

/// Concatenates the skip connection on channels, doubles the side with a 2x2 stride-2
/// transposed convolution (`2 in -> out`), then four [`GELUConvBlock`]s.
#[derive(Debug, Clone)]
pub struct UpBlock {
    pub up: ConvTranspose2x2,
    pub convs: [GELUConvBlock; 4],
}

impl UpBlock {
    /// `in_ch` is the channel count of `x` alone; the concatenation with the skip doubles it.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        group_size: usize,
        changes: Changes,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("model");
        let conv = |i: usize| GELUConvBlock::new(out_ch, out_ch, group_size, changes, vb.pp(i));
        Ok(Self {
            up: ConvTranspose2x2::new(2 * in_ch, out_ch, vb.pp(0))?,
            convs: [conv(1)?, conv(2)?, conv(3)?, conv(4)?],
        })
    }

    /// `x, skip: [N, in, H, W] -> [N, out, 2H, 2W]`.
    pub fn forward(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        let x = cat_channels(x, skip)?; // [N, 2 in, H, W]
        let mut x = self.up.forward(&x)?; // [N, out, 2H, 2W]
        for conv in &self.convs {
            x = conv.forward(&x, train)?; // [N, out, 2H, 2W]
        }
        Ok(x)
    }

    pub fn buffers(&self) -> Vec<&Var> {
        self.convs.iter().flat_map(GELUConvBlock::buffers).collect()
    }

    pub fn parameters(&self) -> usize {
        self.up.parameters()
            + self
                .convs
                .iter()
                .map(GELUConvBlock::parameters)
                .sum::<usize>()
    }
}
