//! The whole U-Net of notebook 02 on each kernel path against the reference path.

use candle_core::{backprop::GradStore, Device, Tensor};
use diffusion_kernels::testing::{check_close, rel_err};
use diffusion_kernels::{with_path, KernelPath};

use diffusion::checkpoint::{self, is_trainable};
use diffusion::layers::mse;
use diffusion::{Rng, UNet};

struct Pass {
    out: Tensor,
    loss: Tensor,
    grads: GradStore,
    stats: Vec<Tensor>,
    eval: Tensor,
}

/// A training-mode pass with gradients, then an evaluation-mode one, on the kernels of `path`;
/// the BatchNorm statistics are put back afterwards.
fn pass(unet: &UNet, x: &Tensor, t: &Tensor, noise: &Tensor, path: KernelPath) -> Pass {
    let saved: Vec<Tensor> = unet
        .batch_norms()
        .iter()
        .flat_map(|(_, bn)| [bn.running_mean.as_tensor(), bn.running_var.as_tensor()])
        .map(|t| t.copy().unwrap())
        .collect();
    let (out, loss, grads, eval) = with_path(path, || {
        let out = unet.forward_t(x, t, true).unwrap();
        let loss = mse(&out, noise).unwrap();
        let grads = loss.backward().unwrap();
        let eval = unet.forward_t(x, t, false).unwrap();
        (out, loss, grads, eval)
    });
    let mut stats = vec![];
    for ((_, bn), s) in unet.batch_norms().iter().zip(saved.chunks(2)) {
        stats.push(bn.running_mean.as_tensor().copy().unwrap());
        stats.push(bn.running_var.as_tensor().copy().unwrap());
        bn.running_mean.set(&s[0]).unwrap();
        bn.running_var.set(&s[1]).unwrap();
    }
    Pass {
        out,
        loss,
        grads,
        stats,
        eval,
    }
}

/// Seeded weights, the same in every run, with every BatchNorm shift away from zero: a channel
/// that is constant over the batch (all its inputs zero) leaves its BatchNorm at exactly the
/// shift, and at exactly 0 the two paths take different ReLU gradients (the fast one PyTorch's
/// 0, candle's 1).
fn seeded_unet(seed: u64) -> (UNet, candle_nn::VarMap) {
    let dev = Device::Cpu;
    let (unet, varmap) = checkpoint::new_unet(&dev).unwrap();
    let mut rng = Rng::new(seed);
    let mut data: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
    data.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in data.iter().filter(|(n, _)| is_trainable(n)) {
        let t = var.as_tensor();
        let noise = rng.randn(t.shape(), &dev).unwrap();
        let new = if name.ends_with(".bias") && is_batch_norm(&unet, name) {
            ((noise * 0.2).unwrap() + 0.3).unwrap()
        } else {
            (noise * (init_bound(&data, name) / 2.0)).unwrap()
        };
        var.set(&new).unwrap();
    }
    (unet, varmap)
}

/// The bound of the layer's default initialisation, `1 / sqrt(fan_in)` of its weight (a
/// BatchNorm's scale starts at 1): from shapes alone, so that the network does not depend on
/// the unseeded values the layers were created with.
fn init_bound(data: &[(String, candle_core::Var)], name: &str) -> f64 {
    let weight = name.strip_suffix(".bias").map(|p| format!("{p}.weight"));
    let weight = weight.as_deref().unwrap_or(name);
    let dims = data
        .iter()
        .find(|(n, _)| n == weight)
        .map(|(_, v)| v.dims().to_vec())
        .unwrap_or_default();
    if dims.len() < 2 {
        return 1.0;
    }
    let fan_in = dims[1..].iter().product::<usize>() as f64;
    1.0 / fan_in.sqrt()
}

fn is_batch_norm(unet: &UNet, name: &str) -> bool {
    unet.batch_norms()
        .iter()
        .any(|(p, _)| name.strip_suffix(".bias") == Some(p))
}

/// The whole U-Net on the fast kernels against the same network on the reference ones: the
/// outputs, loss and running statistics within 1e-5, and every parameter's gradient within
/// 5e-3 (a bias feeding a BatchNorm, whose true gradient is zero, measured against the norm
/// of all gradients). Gradients get a looser bound than the kernels' own tests (1e-4): the
/// two forward passes differ by rounding, and where two values of a max-pool window, or a
/// value and zero at a ReLU, lie closer than that, the paths route that gradient differently
/// (the reference path does so against itself when its input moves by 3e-7), which moves
/// some gradients by up to about 1e-3.
fn matches_the_reference_kernels(path: KernelPath) {
    let dev = Device::Cpu;
    let (unet, varmap) = seeded_unet(3);
    let mut rng = Rng::new(7);
    let x = rng.randn((16, 1, 16, 16), &dev).unwrap();
    let t = rng.timesteps(16, 150, &dev).unwrap();
    let noise = rng.randn((16, 1, 16, 16), &dev).unwrap();
    let fast = pass(&unet, &x, &t, &noise, path);
    let slow = pass(&unet, &x, &t, &noise, KernelPath::Reference);
    // Different kernels round differently: equal outputs would mean one path ran twice.
    assert!(rel_err(&fast.out, &slow.out).unwrap() > 0.0);
    check_close(&fast.out, &slow.out, 1e-5, "training output").unwrap();
    check_close(&fast.loss, &slow.loss, 1e-5, "loss").unwrap();
    check_close(&fast.eval, &slow.eval, 1e-5, "evaluation output").unwrap();
    for (i, (a, b)) in fast.stats.iter().zip(&slow.stats).enumerate() {
        check_close(a, b, 1e-5, &format!("running statistic {i}")).unwrap();
    }
    let data = varmap.data().lock().unwrap();
    let params: Vec<_> = data.iter().filter(|(n, _)| is_trainable(n)).collect();
    let all: f64 = params
        .iter()
        .map(|(_, v)| {
            let g = slow.grads.get(v.as_tensor()).unwrap();
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        })
        .sum::<f64>()
        .sqrt();
    assert!(params.len() >= 50);
    for (name, var) in params {
        let a = fast.grads.get(var.as_tensor()).unwrap();
        let b = slow.grads.get(var.as_tensor()).unwrap();
        let norm = b
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let e = if norm.sqrt() > 1e-3 * all {
            rel_err(a, b).unwrap()
        } else {
            let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
            (d.to_scalar::<f32>().unwrap() as f64).sqrt() / all
        };
        assert!(e <= 5e-3, "gradient of {name}: relative error {e:e}");
    }
}

#[test]
fn unet_on_fast_kernels_matches_the_reference_kernels() {
    matches_the_reference_kernels(KernelPath::Fast);
}

/// The kernels a processor without AVX-512 runs, forced on every machine.
#[test]
fn unet_on_matrix_product_kernels_matches_the_reference_kernels() {
    matches_the_reference_kernels(KernelPath::MatrixProducts);
}
