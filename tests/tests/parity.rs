//! Parity with the PyTorch original: the fixtures in `tests/fixtures/` were written by
//! `tests/fixtures/make_fixtures.py` from the course's network in PyTorch. The same weights must
//! give the same outputs (relative error <= 1e-4), loss, gradients (<= 1e-3) and running
//! statistics.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Device, Tensor};
use diffusion::checkpoint::{load_unet, new_unet, read_tensors, state_dict};
use diffusion::{get_loss_with_noise, q_with_noise, reverse_q_with_noise, Schedule};
use diffusion_tests::parity::{
    assert_gradients_match, assert_running_statistics_match, assert_same_layout, rel_err,
};
use diffusion_tests::{fixture, fixture_tensors};

fn parity() -> HashMap<String, Tensor> {
    fixture_tensors("parity.safetensors")
}

#[test]
fn schedule_matches_pytorch() {
    let p = parity();
    let s = Schedule::course(&Device::Cpu).unwrap();
    for (name, t) in [
        ("B", &s.b),
        ("a", &s.a),
        ("a_bar", &s.a_bar),
        ("sqrt_a_bar", &s.sqrt_a_bar),
        ("sqrt_one_minus_a_bar", &s.sqrt_one_minus_a_bar),
        ("sqrt_a_inv", &s.sqrt_a_inv),
        ("pred_noise_coeff", &s.pred_noise_coeff),
    ] {
        let e = rel_err(t, &p[&format!("schedule.{name}")]);
        assert!(e < 1e-6, "schedule.{name}: relative error {e}");
    }
}

#[test]
fn q_matches_pytorch() {
    let p = parity();
    let s = Schedule::course(&Device::Cpu).unwrap();
    let x_t = q_with_noise(&s, &p["x0"], &p["t"], &p["noise"]).unwrap();
    let e = rel_err(&x_t, &p["x_t"]);
    assert!(e < 1e-6, "q: relative error {e}");
}

#[test]
fn reverse_q_matches_pytorch() {
    let p = parity();
    let s = Schedule::course(&Device::Cpu).unwrap();
    for t in [0usize, 1, 149] {
        let r = reverse_q_with_noise(&s, &p["reverse.x_t"], t, &p["reverse.e_t"], &p["reverse.z"])
            .unwrap();
        let e = rel_err(&r, &p[&format!("reverse.t{t}")]);
        assert!(e < 1e-6, "reverse_q at t = {t}: relative error {e}");
    }
}

#[test]
fn evaluation_output_matches_pytorch() {
    let p = parity();
    let (unet, _) = load_unet(&fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let out = unet.forward_t(&p["x_t"], &p["t"], false).unwrap();
    let e = rel_err(&out, &p["out_eval"]);
    assert!(e <= 1e-4, "evaluation output: relative error {e}");
}

/// One training-mode pass on the fixture's weights, as the fixture script did it:
/// `out = model(x_t, t)`, `loss = mse(out, noise)`, gradients of `loss`.
fn train_pass() -> (
    HashMap<String, Tensor>,
    Tensor,
    Tensor,
    GradStore,
    diffusion::UNet,
    candle_nn::VarMap,
) {
    let p = parity();
    let (unet, varmap) = load_unet(&fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let out = unet.forward_t(&p["x_t"], &p["t"], true).unwrap();
    let loss = diffusion::layers::mse(&out, &p["noise"]).unwrap();
    let grads = loss.backward().unwrap();
    (p, out, loss, grads, unet, varmap)
}

#[test]
fn get_loss_matches_pytorch() {
    let p = parity();
    let s = Schedule::course(&Device::Cpu).unwrap();
    let (unet, _) = load_unet(&fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let loss = get_loss_with_noise(&unet, &s, &p["x0"], &p["t"], &p["noise"]).unwrap();
    let e = rel_err(&loss, &p["loss"]);
    assert!(e <= 1e-4, "get_loss: relative error {e}");
}

#[test]
fn training_output_loss_gradients_and_statistics_match_pytorch() {
    let (p, out, loss, grads, unet, varmap) = train_pass();
    let e = rel_err(&out, &p["out_train"]);
    assert!(e <= 1e-4, "training output: relative error {e}");
    let e = rel_err(&loss, &p["loss"]);
    assert!(e <= 1e-4, "loss: relative error {e}");

    let zero_grad = assert_gradients_match(&p, &grads, &varmap);
    assert_eq!(
        zero_grad, 11,
        "the eleven convolutions in front of a BatchNorm"
    );
    assert_running_statistics_match(&p, &unet.batch_norms());
}

#[test]
fn max_pool_gradient_is_pytorchs_whole_gradient() {
    let p = parity();
    let x = candle_core::Var::from_tensor(&p["pool.x"]).unwrap();
    let y = diffusion::layers::max_pool2x2(x.as_tensor()).unwrap();
    let loss = (y * &p["pool.grad_out"]).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let ours = g.get(x.as_tensor()).unwrap();
    let e = rel_err(ours, &p["pool.grad_in"]);
    assert!(e < 1e-6, "max-pool gradient: relative error {e}");

    // candle 0.11's own max_pool2d passed a quarter of it, which is why the crate has its own.
    // Say which behaviour this candle has, without failing on a fixed one.
    let y = x.as_tensor().max_pool2d(2).unwrap();
    let loss = (y * &p["pool.grad_out"]).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let candle = g.get(x.as_tensor()).unwrap();
    if rel_err(candle, &p["pool.grad_in"]) < 1e-6 {
        eprintln!("note: candle's own max_pool2d backward now matches PyTorch");
    } else {
        let quarter = (&p["pool.grad_in"] * 0.25).unwrap();
        let e = rel_err(candle, &quarter);
        eprintln!("note: candle's own max_pool2d backward differs from PyTorch (quarter: {e:.1e})");
    }
}

#[test]
fn checkpoint_written_here_has_pytorch_keys_shapes_and_dtypes() {
    let want = read_tensors(&fixture("weights.safetensors")).unwrap();
    let (_, varmap) = new_unet(&Device::Cpu).unwrap();
    assert_same_layout(&want, &state_dict(&varmap).unwrap());
}

/// The whole DDPM sampler against PyTorch's (`tests/fixtures/make_sampler_fixture.py`): the same
/// weights, the same starting noise and the same noise at every step, 150 network calls.
///
/// The two differ only by f32 rounding, about 1e-7 relative per network call and per step. The
/// steps multiply an error by `sqrt_a_inv[t]` (all 150 together by `1 / sqrt(a_bar[149]) = 2.14`)
/// and by what the network passes on, so an error may grow over the chain, but a wrong
/// coefficient, noise index or timestep fed to the network moves the result by 1e-2 or more:
/// the states after t = 100, 50 and 0 must agree to 1e-5 relative (measured: about 1e-7).
#[test]
fn ddpm_sampler_matches_pytorch_end_to_end() {
    let f = read_tensors(&fixture("sampler.safetensors")).unwrap();
    let (unet, _) = load_unet(&fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let s = Schedule::course(&Device::Cpu).unwrap();
    let z = &f["z"];
    let samples =
        diffusion::sample_images_from(&unet, &s, f["x_T"].clone(), 3, |t, _| Ok(z.get(t)?))
            .unwrap();
    // ncols = 3 keeps the states after t = 100, 50 and 0
    assert_eq!(
        samples.frame_steps,
        vec![None, Some(100), Some(50), Some(0)]
    );
    for (frame, name) in samples.frames[1..]
        .iter()
        .zip(["x_after_100", "x_after_50", "x_0"])
    {
        let e = rel_err(frame, &f[name]);
        println!("{name}: relative error {e:.3e}");
        assert!(e <= 1e-5, "{name}: relative error {e}");
    }
    assert_eq!(
        rel_err(&samples.images, &f["x_0"]),
        rel_err(&samples.frames[3], &f["x_0"])
    );
}
