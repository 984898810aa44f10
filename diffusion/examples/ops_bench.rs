//! Times the kernels of `diffusion-kernels` at the U-Net's shapes (batch 128), the fast CPU path
//! against the reference one, and whole training steps and samples.
//!
//! ```text
//! cargo run --release -p diffusion --example ops_bench -- ops [runs]
//! cargo run --release -p diffusion --example ops_bench -- train [steps] [reference]
//! cargo run --release -p diffusion --example ops_bench -- sample [images] [reference]
//! cargo run --release -p diffusion --example ops_bench -- direct [runs]
//! ```
//!
//! Each figure is the median wall time and the median CPU time (all threads) in milliseconds.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use diffusion::{sample_images, Rng, TrainConfig, Trainer};
use diffusion_kernels::{self as ops, with_path, KernelPath};

/// CPU time of all the process's threads, in milliseconds.
fn cpu_ms() -> f64 {
    let mut total = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total as f64 / 1e6
}

/// Time stolen from this virtual machine by the host so far, in jiffies (all CPUs).
fn steal_jiffies() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0)
}

/// Medians of wall and CPU time of `f` over `runs` calls, after one warm-up.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let (mut wall, mut cpu) = (vec![], vec![]);
    for _ in 0..runs.max(1) {
        let (w0, c0) = (Instant::now(), cpu_ms());
        f()?;
        wall.push(w0.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - c0);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok((med(wall), med(cpu)))
}

fn line(name: &str, fast: (f64, f64), slow: (f64, f64)) {
    println!(
        "{name:<34} fast {:>8.2} ms (cpu {:>8.2})   reference {:>8.2} ms (cpu {:>8.2})",
        fast.0, fast.1, slow.0, slow.1
    );
}

/// Forward, and forward + backward, of one kernel on both paths.
fn op_pair(
    name: &str,
    runs: usize,
    inputs: &[Var],
    f: impl Fn(&[&Tensor]) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let ts: Vec<&Tensor> = inputs.iter().map(|v| v.as_tensor()).collect();
    let mut results = vec![];
    for path in [KernelPath::Fast, KernelPath::Reference] {
        let (fwd, both) = with_path(path, || -> Result<_> {
            let fwd = time(runs, || {
                f(&ts)?;
                Ok(())
            })?;
            let both = time(runs, || {
                f(&ts)?.sum_all()?.backward()?;
                Ok(())
            })?;
            Ok((fwd, both))
        })?;
        results.push((fwd, both));
    }
    line(&format!("{name} fwd"), results[0].0, results[1].0);
    line(&format!("{name} fwd+bwd"), results[0].1, results[1].1);
    Ok(())
}

/// The fast path alone, with the rate of multiply-adds: `macs` per forward pass, three times
/// that for forward and backward.
fn fast_rate(
    name: &str,
    runs: usize,
    macs: f64,
    inputs: &[Var],
    f: impl Fn(&[&Tensor]) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let ts: Vec<&Tensor> = inputs.iter().map(|v| v.as_tensor()).collect();
    let fwd = time(runs, || {
        f(&ts)?;
        Ok(())
    })?;
    let both = time(runs, || {
        let y = f(&ts)?;
        y.backward()?;
        Ok(())
    })?;
    println!(
        "{name:<22} fwd {:>7.2} ms ({:>5.1} GFLOP/s)  fwd+bwd {:>7.2} ms ({:>5.1} GFLOP/s)",
        fwd.1,
        2.0 * macs / fwd.1 / 1e6,
        both.1,
        6.0 * macs / both.1 / 1e6
    );
    Ok(())
}

fn rates(runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let mut var =
        |shape: &[usize]| -> Result<Var> { Ok(Var::from_tensor(&rng.randn(shape, &dev)?)?) };
    let n = 128;
    let eps = 1e-5;
    for (c, o, s) in [
        (1, 16, 16),
        (16, 32, 16),
        (32, 32, 16),
        (32, 64, 8),
        (64, 64, 8),
        (64, 64, 4),
        (32, 32, 8),
        (16, 16, 16),
    ] {
        let v = [
            var(&[n, c, s, s])?,
            var(&[o, c, 3, 3])?,
            var(&[o])?,
            var(&[o])?,
            var(&[o])?,
        ];
        let macs = (n * o * c * 9 * s * s) as f64;
        fast_rate(&format!("cbr {c}->{o} @{s}"), runs, macs, &v, |t| {
            let p = conv_bn(ops::ConvKind::Conv3x3, t, eps);
            ops::conv_bn_relu_train(t[0], &p)?.0.sum_all()
        })?;
    }
    for (c, o, s) in [(128, 32, 4), (64, 16, 8)] {
        let v = [
            var(&[n, c, s, s])?,
            var(&[c, o, 3, 3])?,
            var(&[o])?,
            var(&[o])?,
            var(&[o])?,
        ];
        let macs = (n * o * c * 9 * s * s) as f64;
        fast_rate(&format!("ctbr {c}->{o} @{s}"), runs, macs, &v, |t| {
            let p = conv_bn(ops::ConvKind::Transpose3x3S2, t, eps);
            ops::conv_bn_relu_train(t[0], &p)?.0.sum_all()
        })?;
    }
    let v = [var(&[n, 16, 16, 16])?, var(&[1, 16, 3, 3])?, var(&[1])?];
    fast_rate("conv 16->1 @16", runs, (n * 16 * 9 * 256) as f64, &v, |t| {
        ops::conv3x3(t[0], t[1], t[2])?.sum_all()
    })?;
    Ok(())
}

fn ops_table(runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let mut var =
        |shape: &[usize]| -> Result<Var> { Ok(Var::from_tensor(&rng.randn(shape, &dev)?)?) };
    let n = 128;
    for (c, o, s) in [
        (1, 16, 16),
        (16, 32, 16),
        (32, 32, 16),
        (32, 64, 8),
        (64, 64, 8),
        (64, 64, 4),
        (32, 32, 8),
        (16, 16, 16),
        (16, 1, 16),
    ] {
        let v = [var(&[n, c, s, s])?, var(&[o, c, 3, 3])?, var(&[o])?];
        op_pair(&format!("conv {c}->{o} @{s}"), runs, &v, |t| {
            ops::conv3x3(t[0], t[1], t[2])
        })?;
    }
    for (c, o, s) in [(128, 32, 4), (64, 16, 8)] {
        let v = [var(&[n, c, s, s])?, var(&[c, o, 3, 3])?, var(&[o])?];
        op_pair(&format!("convT {c}->{o} @{s}"), runs, &v, |t| {
            ops::conv_transpose3x3_s2(t[0], t[1], t[2])
        })?;
    }
    for (c, s) in [(16, 16), (32, 16), (64, 8), (32, 8), (64, 4)] {
        let v = [var(&[n, c, s, s])?, var(&[c])?, var(&[c])?];
        op_pair(&format!("bn {c} @{s}"), runs, &v, |t| {
            Ok(ops::batch_norm_train(t[0], t[1], t[2], 1e-5)?.0)
        })?;
        let v = [var(&[n, c, s, s])?];
        op_pair(&format!("relu {c} @{s}"), runs, &v, |t| t[0].relu())?;
    }
    for (c, s) in [(32, 16), (64, 8)] {
        let v = [var(&[n, c, s, s])?];
        op_pair(&format!("pool {c} @{s}"), runs, &v, |t| {
            ops::max_pool2x2(t[0])
        })?;
    }
    Ok(())
}

/// A training step cut into its phases: the loss (forward), `backward`, the optimizer's update.
fn phases(runs: usize) -> Result<()> {
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    let dev = Device::Cpu;
    let (model, varmap) = diffusion::checkpoint::new_unet(&dev)?;
    let schedule = diffusion::Schedule::course(&dev)?;
    let vars: Vec<Var> = varmap
        .all_vars()
        .into_iter()
        .filter(|v| v.dtype() == candle_core::DType::F32)
        .collect();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(0);
    let x_0 = rng.randn((128, 1, 16, 16), &dev)?.clamp(-1f32, 1f32)?;
    let (mut fwd, mut bwd, mut upd) = (vec![], vec![], vec![]);
    for i in 0..=runs {
        let t = rng.timesteps(128, schedule.len(), &dev)?;
        let noise = rng.randn_like(&x_0)?;
        let c0 = (Instant::now(), cpu_ms());
        let loss = diffusion::get_loss_with_noise(&model, &schedule, &x_0, &t, &noise)?;
        let c1 = (Instant::now(), cpu_ms());
        let grads = loss.backward()?;
        let c2 = (Instant::now(), cpu_ms());
        opt.step(&grads)?;
        drop(grads);
        let c3 = (Instant::now(), cpu_ms());
        if i > 0 {
            fwd.push(((c1.0 - c0.0).as_secs_f64() * 1e3, c1.1 - c0.1));
            bwd.push(((c2.0 - c1.0).as_secs_f64() * 1e3, c2.1 - c1.1));
            upd.push(((c3.0 - c2.0).as_secs_f64() * 1e3, c3.1 - c2.1));
        }
    }
    for (name, v) in [("forward", fwd), ("backward", bwd), ("update", upd)] {
        let mut w: Vec<f64> = v.iter().map(|p| p.0).collect();
        let mut c: Vec<f64> = v.iter().map(|p| p.1).collect();
        w.sort_by(|a, b| a.total_cmp(b));
        c.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:<9} wall median {:>7.1} min {:>7.1} ms, cpu median {:>7.1} min {:>7.1} ms",
            w[w.len() / 2],
            w[0],
            c[c.len() / 2],
            c[0]
        );
    }
    Ok(())
}

/// The parameters of a fused op from its inputs `[x, w, b, gamma, beta]` (training reads no
/// running statistics).
fn conv_bn<'a>(kind: ops::ConvKind, t: &[&'a Tensor], eps: f64) -> ops::ConvBn<'a> {
    let bn = ops::BatchNormParams {
        gamma: t[3],
        beta: t[4],
        running_mean: t[3],
        running_var: t[4],
        eps,
    };
    ops::ConvBn {
        kind,
        w: t[1],
        b: t[2],
        bn,
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("ops");
    let count: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let path = match args.get(2) {
        Some(s) if s == "reference" => KernelPath::Reference,
        _ => KernelPath::Fast,
    };
    with_path(path, || measure(what, count))
}

fn measure(what: &str, count: usize) -> Result<()> {
    let dev = Device::Cpu;
    match what {
        "ops" => ops_table(count)?,
        "train" => {
            let mut trainer = Trainer::new(TrainConfig::course(), &dev)?;
            let x_0 = Rng::new(0)
                .randn((128, 1, 16, 16), &dev)?
                .clamp(-1f32, 1f32)?;
            let mut walls = vec![];
            let steal0 = steal_jiffies();
            let (w, c) = time(count, || {
                let t0 = Instant::now();
                trainer.train_step(&x_0)?;
                walls.push(t0.elapsed().as_secs_f64() * 1e3);
                Ok(())
            })?;
            let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
            let steal = steal_jiffies() - steal0;
            println!(
                "train_step wall {w:.1} ms (min {min:.1}), cpu {c:.1} ms, steal {steal} jiffies"
            );
        }
        "sample" => {
            let trainer = Trainer::new(TrainConfig::course(), &dev)?;
            let mut rng = Rng::new(0);
            let (w, c) = time(3, || {
                sample_images(&trainer.model, &trainer.schedule, count, 0, &mut rng).map(|_| ())
            })?;
            println!("sample150 x{count} wall {w:.1} ms, cpu {c:.1} ms");
        }
        "phases" => phases(count)?,
        "rates" => rates(count)?,
        "direct" => direct_vs_gemm(count)?,
        other => anyhow::bail!("unknown measurement {other:?}: use ops, train, phases or sample"),
    }
    Ok(())
}

/// Wall time of the direct and the matrix-product 3x3 convolutions at the network's shapes
/// (batch 128): forward (also the input gradient's kernel) and weight gradient.
fn direct_vs_gemm(runs: usize) -> Result<()> {
    use diffusion_kernels::conv;
    let n = 128;
    let mut rng = Rng::new(0);
    let dev = Device::Cpu;
    let mut data = |len: usize| -> Result<Vec<f32>> { Ok(rng.randn(len, &dev)?.to_vec1()?) };
    for (c, o, s) in [
        (16, 32, 16),
        (32, 32, 16),
        (16, 16, 16),
        (16, 1, 16),
        (32, 64, 8),
        (64, 64, 8),
        (32, 32, 8),
        (64, 64, 4),
    ] {
        let (x, wt, dy) = (data(n * c * s * s)?, data(o * c * 9)?, data(n * o * s * s)?);
        let mut y = vec![0f32; n * o * s * s];
        let mut row = vec![];
        for path in [KernelPath::Fast, KernelPath::MatrixProducts] {
            let (f, g) = with_path(path, || -> Result<_> {
                let f = time(runs, || {
                    let shape = ops::ConvShape::new(n, c, s, s, o);
                    conv::conv3x3_forward_into(&x, shape, ops::Filter::new(&wt, None), &mut y);
                    Ok(())
                })?;
                let g = time(runs, || {
                    conv::conv3x3_weight_grad(&x, &dy, ops::ConvShape::new(n, c, s, s, o));
                    Ok(())
                })?;
                Ok((f, g))
            })?;
            row.push((f.0, g.0));
        }
        println!(
            "conv {c:>2}->{o:<2} @{s:<2}  forward direct {:>6.2} gemm {:>6.2} ms   weight grad direct {:>6.2} gemm {:>6.2} ms",
            row[0].0, row[1].0, row[0].1, row[1].1
        );
    }
    Ok(())
}
