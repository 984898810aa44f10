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

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use diffusion_kernels::Act;

use crate::layers::{cat_channels, space_to_depth, Conv2d, ConvTranspose2x2, GroupNorm};

/// `Conv2d(in, out, 3, 1, 1) → GroupNorm(group_size, out) → GELU`.
#[derive(Debug, Clone)]
pub struct GELUConvBlock {
    pub conv: Conv2d,
    pub norm: GroupNorm,
}

impl GELUConvBlock {
    pub fn new(in_ch: usize, out_ch: usize, group_size: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            conv: Conv2d::new(in_ch, out_ch, vb.pp(0))?,
            norm: GroupNorm::new(group_size, out_ch, vb.pp(1))?,
        })
    }

    /// `[N, in, H, W] -> [N, out, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv.forward(x)?; // [N, out, H, W]
        Ok(self.norm.forward_act(&x, Act::Gelu)?) // [N, out, H, W]: GroupNorm, then GELU
    }

    pub fn parameters(&self) -> usize {
        self.conv.parameters() + self.norm.parameters()
    }
}

/// Two [`GELUConvBlock`]s whose outputs are added: `x1 = conv1(x)`, `x2 = conv2(x1)`, returns
/// `x1 + x2` (the path around `conv2` lets the block pass `x1` on unchanged).
#[derive(Debug, Clone)]
pub struct ResidualConvBlock {
    pub conv1: GELUConvBlock,
    pub conv2: GELUConvBlock,
}

impl ResidualConvBlock {
    pub fn new(in_ch: usize, out_ch: usize, group_size: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: GELUConvBlock::new(in_ch, out_ch, group_size, vb.pp("conv1"))?,
            conv2: GELUConvBlock::new(out_ch, out_ch, group_size, vb.pp("conv2"))?,
        })
    }

    /// `[N, in, H, W] -> [N, out, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x1 = self.conv1.forward(x)?; // [N, out, H, W]
        let x2 = self.conv2.forward(&x1)?; // [N, out, H, W]
        Ok((x1 + x2)?)
    }

    pub fn parameters(&self) -> usize {
        self.conv1.parameters() + self.conv2.parameters()
    }
}

/// Halves the side without discarding anything: [`space_to_depth`] turns each 2 x 2 window into
/// 4 channels, then a [`GELUConvBlock`] maps the `4 in` channels back to `in`.
#[derive(Debug, Clone)]
pub struct RearrangePoolBlock {
    pub conv: GELUConvBlock,
}

impl RearrangePoolBlock {
    pub fn new(in_ch: usize, group_size: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: GELUConvBlock::new(4 * in_ch, in_ch, group_size, vb.pp("conv"))?,
        })
    }

    /// `[N, in, H, W] -> [N, in, H/2, W/2]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = space_to_depth(x)?; // [N, 4 in, H/2, W/2]
        self.conv.forward(&x) // [N, in, H/2, W/2]
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
    pub pool: RearrangePoolBlock,
}

impl DownBlock {
    pub fn new(in_ch: usize, out_ch: usize, group_size: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        Ok(Self {
            first: GELUConvBlock::new(in_ch, out_ch, group_size, vb.pp(0))?,
            second: GELUConvBlock::new(out_ch, out_ch, group_size, vb.pp(1))?,
            pool: RearrangePoolBlock::new(out_ch, group_size, vb.pp(2))?,
        })
    }

    /// `[N, in, H, W] -> [N, out, H/2, W/2]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.first.forward(x)?; // [N, out, H, W]
        let x = self.second.forward(&x)?; // [N, out, H, W]
        self.pool.forward(&x) // [N, out, H/2, W/2]
    }

    pub fn parameters(&self) -> usize {
        self.first.parameters() + self.second.parameters() + self.pool.parameters()
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
    pub fn new(in_ch: usize, out_ch: usize, group_size: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model");
        let conv = |i: usize| GELUConvBlock::new(out_ch, out_ch, group_size, vb.pp(i));
        Ok(Self {
            up: ConvTranspose2x2::new(2 * in_ch, out_ch, vb.pp(0))?,
            convs: [conv(1)?, conv(2)?, conv(3)?, conv(4)?],
        })
    }

    /// `x, skip: [N, in, H, W] -> [N, out, 2H, 2W]`.
    pub fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let x = cat_channels(x, skip)?; // [N, 2 in, H, W]
        let mut x = self.up.forward(&x)?; // [N, out, 2H, 2W]
        for conv in &self.convs {
            x = conv.forward(&x)?; // [N, out, 2H, 2W]
        }
        Ok(x)
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
