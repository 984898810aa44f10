//! Notebook 03's exercises: the group sizes, the sinusoidal time embedding, `EmbedBlock` and
//! `UpBlock`'s forward.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::judge::{Judge, Values};
use super::{Failure, Verdict};
use crate::layers::Activation;
use crate::notebook02::EmbedBlock;
use crate::notebook03::{Changes, SinusoidalPositionEmbedBlock, UpBlock};
use crate::Rng;

/// The course's group counts: `GroupNorm(8, 64)` after the first convolution, `GroupNorm(32, c)`
/// in the down and up blocks (`c` = 64 or 128).
const SMALL: usize = 8;
const BIG: usize = 32;

/// Checks `group_sizes()`, the `(small_group_size, big_group_size)` of notebook 03, which the
/// course passes to `nn.GroupNorm` as the *number of groups*: the small one divides 64 channels,
/// the big one 64 and 128, and they are `2 x` and `8 x` the base that does.
pub fn group_sizes(student: impl Fn() -> (usize, usize)) -> Verdict {
    let got = super::judge::guarded(|| Ok(student()));
    let mut verdict = Verdict {
        check: "group_sizes".to_string(),
        passed: 0,
        total: 2,
        failure: None,
    };
    match got {
        Err(message) => {
            verdict.failure = Some(Failure {
                case: "group_sizes()".to_string(),
                message,
                hint: None,
            })
        }
        Ok((small, big)) => {
            for (name, value, expected, channels) in [
                ("small_group_size", small, SMALL, &[64usize][..]),
                ("big_group_size", big, BIG, &[64, 128][..]),
            ] {
                if value == expected {
                    verdict.passed += 1;
                    continue;
                }
                let hint = if value == 0 || channels.iter().any(|c| c % value != 0) {
                    format!(
                        "GroupNorm splits the channels into equal groups: {value} groups do not \
                         divide {channels:?} channels; try each base from 3 to 7"
                    )
                } else if value == 64 / expected {
                    format!(
                        "{value} is the number of channels in each group; nn.GroupNorm's first \
                         argument (the course's group size) is the number of groups: 64 / {value}"
                    )
                } else {
                    format!(
                        "{value} divides the channels, but the course's sizes are 2 x and 8 x the \
                         one base from 3 to 7 whose multiples divide 64 and 128"
                    )
                };
                verdict.failure.get_or_insert(Failure {
                    case: name.to_string(),
                    message: format!("{name} is {value}"),
                    hint: Some(hint),
                });
            }
        }
    }
    verdict.log();
    verdict
}

// ---------------------------------------------------------------------------------------------
// sinusoidal

/// One input of the time embedding: `[N]` times and the embedding's dimension.
pub struct TimeInput {
    time: Tensor,
    dim: usize,
}

/// `[sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ...]` or, with `interleave`, sin and cos of each
/// frequency side by side; `f_k = exp(-k ln(10000) / denominator(h))`.
fn embedding(
    i: &TimeInput,
    interleave: bool,
    cos_first: bool,
    denominator: fn(usize) -> f64,
) -> Result<Values> {
    let t: Vec<f32> = i.time.to_vec1()?;
    let half = i.dim / 2;
    let scale = 10000f64.ln() / denominator(half);
    let mut data = Vec::with_capacity(t.len() * i.dim);
    for &ti in &t {
        let e: Vec<f64> = (0..half)
            .map(|k| f64::from(ti) * (-(k as f64) * scale).exp())
            .collect();
        let (first, second): (Vec<f64>, Vec<f64>) = if cos_first {
            (
                e.iter().map(|v| v.cos()).collect(),
                e.iter().map(|v| v.sin()).collect(),
            )
        } else {
            (
                e.iter().map(|v| v.sin()).collect(),
                e.iter().map(|v| v.cos()).collect(),
            )
        };
        if interleave {
            for k in 0..half {
                data.push(first[k]);
                data.push(second[k]);
            }
        } else {
            data.extend(first);
            data.extend(second);
        }
    }
    Ok(Values {
        shape: vec![t.len(), i.dim],
        data,
    })
}

/// Checks `sinusoidal(time, dim)`, the `SinusoidalPositionEmbedBlock`: with `h = dim / 2` and
/// `f_k = exp(-k ln(10000) / (h - 1))`, the sines of `t f_k` then their cosines, `[N] -> [N, dim]`.
pub fn sinusoidal(student: impl Fn(&Tensor, usize) -> Result<Tensor>) -> Verdict {
    let mut rng = Rng::from_entropy();
    let mut judge = Judge::new("sinusoidal", |i: &TimeInput| {
        Values::of(&SinusoidalPositionEmbedBlock::new(i.dim)?.forward(&i.time)?)
    })
    .mistake(
        "the course concatenates all the sines, then all the cosines (torch.cat on the last axis), \
         instead of interleaving sin and cos of each frequency",
        |i| embedding(i, true, false, |h| (h - 1) as f64),
    )
    .mistake("the sines come first, then the cosines", |i| embedding(i, false, true, |h| (h - 1) as f64))
    .mistake(
        "the frequencies' exponent divides ln(10000) by half_dim - 1, so that the last frequency is 1/10000",
        |i| embedding(i, false, false, |h| h as f64),
    );
    for (n, dim) in [(6, 8), (3, 16), (1, 4)] {
        if let Ok(time) = rng.uniform(n, 1.0, &Device::Cpu).and_then(|u| Ok(u.abs()?)) {
            judge = judge.case(
                format!("{n} times t / T in [0, 1), dim {dim}"),
                TimeInput { time, dim },
            );
        }
    }
    judge.run(|i| Values::of(&student(&i.time, i.dim)?))
}

// ---------------------------------------------------------------------------------------------
// EmbedBlock

/// A block with random weights and its input.
pub struct BlockInput<B> {
    pub(super) block: B,
    pub(super) x: Tensor,
    pub(super) skip: Tensor,
}

/// Fresh weights, drawn by each layer's own initialisation.
pub(super) fn random_vb() -> (VarMap, VarBuilder<'static>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (varmap, vb)
}

/// Linear, then `act`, then Linear, reshaped or not to `[N, emb, 1, 1]`.
fn embed_with(
    i: &BlockInput<(VarMap, EmbedBlock)>,
    act: fn(&Tensor) -> candle_core::Result<Tensor>,
    unflatten: bool,
) -> Result<Values> {
    let b = &i.block.1;
    let x = act(&b.lin1.forward(&i.x)?)?;
    let x = b.lin2.forward(&x)?;
    if unflatten {
        let (n, e) = x.dims2()?;
        Values::of(&x.reshape((n, e, 1, 1))?)
    } else {
        Values::of(&x)
    }
}

/// Checks `embed_block(block, x)`, notebook 03's `EmbedBlock.forward`: `Linear → GELU (exact) →
/// Linear → Unflatten`, `[N, input_dim] -> [N, emb_dim, 1, 1]`.
pub fn embed_block(student: impl Fn(&EmbedBlock, &Tensor) -> Result<Tensor>) -> Verdict {
    let mut rng = Rng::from_entropy();
    let mut judge = Judge::new("embed_block", |i: &BlockInput<(VarMap, EmbedBlock)>| Values::of(&i.block.1.forward(&i.x)?))
        .mistake("notebook 03's EmbedBlock uses GELU between the two Linear layers, not ReLU", |i| embed_with(i, |x| x.relu(), true))
        .mistake("nn.GELU() is the exact (erf) GELU: `gelu_erf()`, not the tanh approximation `gelu()`", |i| embed_with(i, |x| x.gelu(), true))
        .mistake(
            "the embedding is unflattened to [N, emb_dim, 1, 1], so that it adds to every pixel of a feature map",
            |i| embed_with(i, |x| x.gelu_erf(), false),
        );
    for (n, input_dim, emb_dim) in [(5, 8, 16), (2, 10, 12)] {
        let case = (|| -> Result<BlockInput<(VarMap, EmbedBlock)>> {
            let (varmap, vb) = random_vb();
            let block = EmbedBlock::with_activation(input_dim, emb_dim, Activation::Gelu, vb)?;
            let x = rng.randn((n, input_dim), &Device::Cpu)?;
            Ok(BlockInput {
                block: (varmap, block),
                skip: x.clone(),
                x,
            })
        })();
        if let Ok(case) = case {
            judge = judge.case(format!("batch {n}, {input_dim} -> {emb_dim}"), case);
        }
    }
    judge.run(|i| Values::of(&student(&i.block.1, &i.x)?))
}

// ---------------------------------------------------------------------------------------------
// UpBlock

fn up_with(i: &BlockInput<(VarMap, UpBlock)>, skip_first: bool) -> Result<Values> {
    let b = &i.block.1;
    let parts = if skip_first {
        [&i.skip, &i.x]
    } else {
        [&i.x, &i.skip]
    };
    let mut x = b.up.forward(&Tensor::cat(&parts, 1)?)?;
    for conv in &b.convs {
        x = conv.forward(&x, false)?;
    }
    Values::of(&x)
}

/// The hint for a shape error in an up-block: the concatenation is on the channels.
pub(super) fn concat_hint(message: &str) -> Option<&'static str> {
    (message.contains("shape") || message.contains("channel")).then_some(
        "concatenate on the channel axis (1), so that 2 x in channels reach the transposed convolution",
    )
}

/// Adds one case per `(batch, channels, side)`: a block made by `build(channels, vb)` with fresh
/// weights, and random `x` and `skip` of shape `[batch, channels, side, side]`.
pub(super) fn up_cases<B>(
    mut judge: Judge<BlockInput<(VarMap, B)>>,
    shapes: &[(usize, usize, usize)],
    build: impl Fn(usize, VarBuilder<'static>) -> Result<B>,
) -> Judge<BlockInput<(VarMap, B)>> {
    let mut rng = Rng::from_entropy();
    for &(n, ch, side) in shapes {
        let case = (|| -> Result<BlockInput<(VarMap, B)>> {
            let (varmap, vb) = random_vb();
            let block = build(ch, vb)?;
            let x = rng.randn((n, ch, side, side), &Device::Cpu)?;
            let skip = rng.randn((n, ch, side, side), &Device::Cpu)?;
            Ok(BlockInput {
                block: (varmap, block),
                x,
                skip,
            })
        })();
        if let Ok(case) = case {
            judge = judge.case(format!("batch {n}, {ch} channels, {side} x {side}"), case);
        }
    }
    judge
}

/// Checks `up_block(block, x, skip, train)`, notebook 03's `UpBlock.forward`: concatenate
/// `(x, skip)` on the channels, then the transposed convolution and the four GELU conv blocks,
/// `[N, in, H, W] x 2 -> [N, out, 2H, 2W]`. Run in evaluation mode.
pub fn up_block(student: impl Fn(&UpBlock, &Tensor, &Tensor, bool) -> Result<Tensor>) -> Verdict {
    let judge = Judge::new("up_block", |i: &BlockInput<(VarMap, UpBlock)>| {
        Values::of(&i.block.1.forward(&i.x, &i.skip, false)?)
    })
    .mistake(
        "the course concatenates (x, skip) in that order: torch.cat((x, skip), 1)",
        |i| up_with(i, true),
    )
    .on_error(concat_hint);
    let judge = up_cases(judge, &[(2, 16, 4), (1, 8, 2)], |ch, vb| {
        UpBlock::new(ch, ch, 4, Changes::ALL, vb)
    });
    judge.run(|i| Values::of(&student(&i.block.1, &i.x, &i.skip, false)?))
}
