//! The PyTorch fixtures in `tests/fixtures/` load with candle, name every tensor of the course
//! network with the shape its layer table gives, and agree with the crate's `Schedule`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffusion::Schedule;

fn load(name: &str) -> Result<HashMap<String, Tensor>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    candle_core::safetensors::load(&path, &Device::Cpu).with_context(|| {
        format!(
            "could not read {}; regenerate it as tests/fixtures/README.md says",
            path.display()
        )
    })
}

fn get<'a>(m: &'a HashMap<String, Tensor>, k: &str) -> Result<&'a Tensor> {
    m.get(k)
        .with_context(|| format!("fixture has no tensor {k}"))
}

/// Trainable tensors of the course U-Net with PyTorch shapes, written out from the layer table.
fn expected_parameters() -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut conv = |p: &str, o: usize, i: usize| {
        v.push((format!("{p}.weight"), vec![o, i, 3, 3]));
        v.push((format!("{p}.bias"), vec![o]));
    };
    conv("down0.0", 16, 1);
    conv("down1.model.0", 32, 16);
    conv("down1.model.3", 32, 32);
    conv("down2.model.0", 64, 32);
    conv("down2.model.3", 64, 64);
    conv("up0.1", 64, 64);
    conv("up1.model.3", 32, 32);
    conv("up2.model.3", 16, 16);
    conv("out.0", 16, 16);
    conv("out.3", 1, 16);
    // Transposed convolutions store [in, out, kh, kw].
    v.push(("up1.model.0.weight".into(), vec![128, 32, 3, 3]));
    v.push(("up1.model.0.bias".into(), vec![32]));
    v.push(("up2.model.0.weight".into(), vec![64, 16, 3, 3]));
    v.push(("up2.model.0.bias".into(), vec![16]));
    for (p, c) in batchnorms() {
        v.push((format!("{p}.weight"), vec![c]));
        v.push((format!("{p}.bias"), vec![c]));
    }
    for (p, o, i) in [
        ("dense_emb.0", 32, 1024),
        ("dense_emb.2", 32, 32),
        ("dense_emb.4", 1024, 32),
        ("temb_1.model.0", 64, 1),
        ("temb_1.model.2", 64, 64),
        ("temb_2.model.0", 32, 1),
        ("temb_2.model.2", 32, 32),
    ] {
        v.push((format!("{p}.weight"), vec![o, i]));
        v.push((format!("{p}.bias"), vec![o]));
    }
    v
}

fn batchnorms() -> [(&'static str, usize); 11] {
    [
        ("down0.1", 16),
        ("down1.model.1", 32),
        ("down1.model.4", 32),
        ("down2.model.1", 64),
        ("down2.model.4", 64),
        ("up0.2", 64),
        ("up1.model.1", 32),
        ("up1.model.4", 32),
        ("up2.model.1", 16),
        ("up2.model.4", 16),
        ("out.1", 16),
    ]
}

#[test]
fn weights_have_every_course_tensor_with_its_shape() -> Result<()> {
    let w = load("weights.safetensors")?;
    let params = expected_parameters();
    let count: usize = params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(count, 240_385, "the course network has 240,385 parameters");
    for (name, shape) in &params {
        let t = get(&w, name)?;
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        assert_eq!(t.dtype(), DType::F32, "{name}");
    }
    for (bn, c) in batchnorms() {
        for stat in ["running_mean", "running_var"] {
            let t = get(&w, &format!("{bn}.{stat}"))?;
            assert_eq!(t.dims(), &[c], "{bn}.{stat}");
        }
        let n = get(&w, &format!("{bn}.num_batches_tracked"))?;
        assert_eq!(n.dtype(), DType::I64);
        assert_eq!(n.rank(), 0, "num_batches_tracked is a scalar");
        assert_eq!(
            n.to_scalar::<i64>()?,
            5,
            "five training steps before saving"
        );
    }
    assert_eq!(
        w.len(),
        params.len() + 3 * batchnorms().len(),
        "no extra tensors"
    );
    Ok(())
}

#[test]
fn parity_batch_and_statistics_are_as_documented() -> Result<()> {
    let p = load("parity.safetensors")?;
    let t = get(&p, "t")?.to_vec1::<i64>()?;
    assert_eq!(t.len(), 16);
    assert_eq!((t[0], t[15]), (0, 149));
    assert_eq!(get(&p, "loss")?.rank(), 0);
    for (bn, _) in batchnorms() {
        let n = get(&p, &format!("after_train.{bn}.num_batches_tracked"))?;
        assert_eq!(n.to_scalar::<i64>()?, 6, "one more train-mode pass");
    }
    let grads = p.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(grads, expected_parameters().len());
    Ok(())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn schedule_matches_pytorch() -> Result<()> {
    let p = load("parity.safetensors")?;
    let s = Schedule::course(&Device::Cpu)?;
    for (name, ours) in [
        ("B", &s.b),
        ("a", &s.a),
        ("a_bar", &s.a_bar),
        ("sqrt_a_bar", &s.sqrt_a_bar),
        ("sqrt_one_minus_a_bar", &s.sqrt_one_minus_a_bar),
        ("sqrt_a_inv", &s.sqrt_a_inv),
        ("pred_noise_coeff", &s.pred_noise_coeff),
    ] {
        let theirs = get(&p, &format!("schedule.{name}"))?.to_vec1::<f32>()?;
        let d = max_abs_diff(&ours.to_vec1::<f32>()?, &theirs);
        ensure!(d <= 1e-7, "schedule.{name} differs from PyTorch by {d}");
    }
    Ok(())
}

/// x_t and the reverse steps, recomputed element by element from the schedule's f64 values.
#[test]
fn closed_form_and_reverse_step_match_pytorch() -> Result<()> {
    let p = load("parity.safetensors")?;
    let s = Schedule::course(&Device::Cpu)?;
    let v = s.values();

    let t = get(&p, "t")?.to_vec1::<i64>()?;
    let x0 = get(&p, "x0")?.flatten_from(1)?.to_vec2::<f32>()?;
    let noise = get(&p, "noise")?.flatten_from(1)?.to_vec2::<f32>()?;
    let x_t = get(&p, "x_t")?.flatten_from(1)?.to_vec2::<f32>()?;
    for (i, &ti) in t.iter().enumerate() {
        let ti = usize::try_from(ti)?;
        let want: Vec<f32> = x0[i]
            .iter()
            .zip(&noise[i])
            .map(|(x, n)| {
                (v.sqrt_a_bar[ti] * *x as f64 + v.sqrt_one_minus_a_bar[ti] * *n as f64) as f32
            })
            .collect();
        let d = max_abs_diff(&want, &x_t[i]);
        ensure!(d <= 1e-6, "x_t of sample {i} (t = {ti}) differs by {d}");
    }

    let x = get(&p, "reverse.x_t")?.flatten_all()?.to_vec1::<f32>()?;
    let e = get(&p, "reverse.e_t")?.flatten_all()?.to_vec1::<f32>()?;
    let z = get(&p, "reverse.z")?.flatten_all()?.to_vec1::<f32>()?;
    for step in [0usize, 1, 149] {
        let want: Vec<f32> = (0..x.len())
            .map(|k| {
                let u = v.sqrt_a_inv[step] * (x[k] as f64 - v.pred_noise_coeff[step] * e[k] as f64);
                let extra = if step == 0 {
                    0.0
                } else {
                    v.b[step - 1].sqrt() * z[k] as f64
                };
                (u + extra) as f32
            })
            .collect();
        let got = get(&p, &format!("reverse.t{step}"))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let d = max_abs_diff(&want, &got);
        ensure!(d <= 1e-5, "reverse step at t = {step} differs by {d}");
    }
    Ok(())
}
