//! Times the pieces of notebook 03's U-Net at batch 128, forward and forward + backward:
//! `cargo run --release -p diffusion --example unet03_ops -- [runs] [train]` (with `train`, whole
//! training steps instead).

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Module, Var};
use diffusion::layers::{gelu, space_to_depth, Conv2d, ConvTranspose2x2, GroupNorm};
use diffusion::Rng;

fn time<E: Into<anyhow::Error>>(
    runs: usize,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> Result<f64> {
    f().map_err(Into::into)?;
    let mut v = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        f().map_err(Into::into)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    if std::env::args().nth(2).as_deref() == Some("train") {
        let mut trainer = diffusion::Trainer::<diffusion::notebook03::UNet>::for_network(
            Default::default(),
            diffusion::TrainConfig::notebook03(),
            &dev,
        )?;
        let x = Rng::new(0)
            .randn((128, 1, 16, 16), &dev)?
            .clamp(-1f32, 1f32)?;
        let ms = time(runs, || trainer.train_step(&x).map(|_| ()))?;
        println!("training step, batch 128: {ms:.0} ms");
        return Ok(());
    }
    let mut rng = Rng::new(0);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev);
    for (c_in, c, side) in [
        (64, 64, 16),
        (256, 64, 8),
        (128, 128, 8),
        (64, 64, 8),
        (128, 64, 16),
    ] {
        let x = Var::from_tensor(&rng.randn((128, c_in, side, side), &dev)?)?;
        let conv = Conv2d::new(c_in, c, vb.pp(format!("c{c_in}_{c}_{side}")))?;
        let gn = GroupNorm::new(32, c, vb.pp(format!("g{c_in}_{c}_{side}")))?;
        let y = conv.forward(x.as_tensor())?;
        let label = format!("[128, {c_in} -> {c}, {side}x{side}]");
        let f = time(runs, || conv.forward(x.as_tensor()).map(drop))?;
        let fb = time(runs, || {
            conv.forward(x.as_tensor())?.sum_all()?.backward().map(drop)
        })?;
        println!("{label} conv3x3 fwd {f:.1} ms, fwd+bwd {fb:.1} ms");
        let yv = Var::from_tensor(&y)?;
        let f = time(runs, || gn.forward(yv.as_tensor()).map(drop))?;
        let fb = time(runs, || {
            gn.forward(yv.as_tensor())?.sum_all()?.backward().map(drop)
        })?;
        println!("{label} groupnorm fwd {f:.1} ms, fwd+bwd {fb:.1} ms");
        let f = time(runs, || gelu(yv.as_tensor()).map(drop))?;
        let fb = time(runs, || {
            gelu(yv.as_tensor())?.sum_all()?.backward().map(drop)
        })?;
        println!("{label} gelu fwd {f:.1} ms, fwd+bwd {fb:.1} ms");
    }
    let x = Var::from_tensor(&rng.randn((128, 64, 16, 16), &dev)?)?;
    let f = time(runs, || -> Result<()> {
        space_to_depth(x.as_tensor())?.sum_all()?.backward()?;
        Ok(())
    })?;
    println!("space_to_depth [128, 64, 16, 16] fwd+bwd {f:.1} ms");
    let up = ConvTranspose2x2::new(256, 64, vb.pp("up"))?;
    let x = Var::from_tensor(&rng.randn((128, 256, 4, 4), &dev)?)?;
    let f = time(runs, || {
        up.forward(x.as_tensor())?.sum_all()?.backward().map(drop)
    })?;
    println!("convT 2x2 [128, 256 -> 64, 4 -> 8] fwd+bwd {f:.1} ms");
    Ok(())
}
