//! Notebook 01's exercises: the forward passes of `DownBlock` and `UpBlock`.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::judge::{Judge, Values};
use super::notebook03::{concat_hint, random_vb, up_cases, BlockInput};
use super::Verdict;
use crate::layers::max_pool2x2;
use crate::notebook01::{DownBlock, UpBlock};
use crate::Rng;
use candle_nn::VarMap;

fn down_with(i: &BlockInput<(VarMap, DownBlock)>, pool_first: bool) -> Result<Values> {
    let b = &i.block.1;
    let x = if pool_first {
        max_pool2x2(&i.x)?
    } else {
        i.x.clone()
    };
    let x = b.second.forward_t(&b.first.forward_t(&x, false)?, false)?;
    Values::of(&if pool_first { x } else { max_pool2x2(&x)? })
}

/// Checks `down_block01(block, x, train)`, notebook 01's `DownBlock.forward`: the two
/// `Conv → BatchNorm → ReLU` units, then 2 x 2 max pooling, `[N, in, H, W] -> [N, out, H/2, W/2]`.
/// Run in evaluation mode.
pub fn down_block01(student: impl Fn(&DownBlock, &Tensor, bool) -> Result<Tensor>) -> Verdict {
    let mut rng = Rng::from_entropy();
    let mut judge = Judge::new("down_block01", |i: &BlockInput<(VarMap, DownBlock)>| {
        Values::of(&i.block.1.forward_t(&i.x, false)?)
    })
    .mistake(
        "the block pools after its two convolutions, not before",
        |i| down_with(i, true),
    )
    .mistake(
        "the block ends with MaxPool2d(2), which halves the image side",
        |i| {
            let b = &i.block.1;
            Values::of(
                &b.second
                    .forward_t(&b.first.forward_t(&i.x, false)?, false)?,
            )
        },
    );
    for (n, in_ch, out_ch, side) in [(2, 1, 8, 8), (1, 4, 4, 4)] {
        let case = (|| -> Result<BlockInput<(VarMap, DownBlock)>> {
            let (varmap, vb) = random_vb();
            let block = DownBlock::new(in_ch, out_ch, vb)?;
            let x = rng.randn((n, in_ch, side, side), &Device::Cpu)?;
            Ok(BlockInput {
                block: (varmap, block),
                skip: x.clone(),
                x,
            })
        })();
        if let Ok(case) = case {
            judge = judge.case(
                format!("batch {n}, {in_ch} -> {out_ch} channels, {side} x {side}"),
                case,
            );
        }
    }
    judge.run(|i| Values::of(&student(&i.block.1, &i.x, false)?))
}

/// Checks `up_block01(block, x, skip, train)`, notebook 01's `UpBlock.forward`: concatenate
/// `(x, skip)` on the channels, then the transposed convolution's unit and one convolution unit,
/// `[N, in, H, W] x 2 -> [N, out, 2H, 2W]`. Run in evaluation mode.
pub fn up_block01(student: impl Fn(&UpBlock, &Tensor, &Tensor, bool) -> Result<Tensor>) -> Verdict {
    let judge = Judge::new("up_block01", |i: &BlockInput<(VarMap, UpBlock)>| {
        Values::of(&i.block.1.forward_t(&i.x, &i.skip, false)?)
    })
    .mistake(
        "the course concatenates (x, skip) in that order: torch.cat((x, skip), 1)",
        |i| Values::of(&i.block.1.forward_t(&i.skip, &i.x, false)?),
    )
    .on_error(concat_hint);
    let judge = up_cases(judge, &[(2, 8, 4), (1, 4, 2)], |ch, vb| {
        UpBlock::new(ch, ch, vb)
    });
    judge.run(|i| Values::of(&student(&i.block.1, &i.x, &i.skip, false)?))
}
