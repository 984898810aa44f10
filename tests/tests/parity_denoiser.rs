//! Notebook 01's denoiser against PyTorch: the fixtures were written by
//! `tests/fixtures/make_denoiser_fixture.py` from the course's network (`denoiser_torch.py`).
//! The same weights must give the same outputs (relative error <= 1e-4), loss, gradients
//! (<= 1e-3) and running statistics; the transposed-convolution demonstrations must be exact.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use diffusion::checkpoint::{
    count_parameters, load_network, new_network, read_tensors, state_dict,
};
use diffusion::conv_arithmetic::{conv_transpose2d, transposed_output_size};
use diffusion::notebook01::{add_noise_with, denoising_loss, UNet};
use diffusion_tests::parity::{
    assert_gradients_match, assert_running_statistics_match, assert_same_layout, rel_err,
};
use diffusion_tests::{fixture, fixture_tensors};

fn parity() -> HashMap<String, Tensor> {
    fixture_tensors("denoiser.safetensors")
}

fn load() -> (UNet, candle_nn::VarMap) {
    load_network(
        &fixture("denoiser_weights.safetensors"),
        Default::default(),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn the_network_has_the_courses_names_and_234977_parameters() {
    let (_, varmap) = new_network::<UNet>(Default::default(), &Device::Cpu).unwrap();
    assert_eq!(count_parameters(&varmap), 234_977);
    let want = read_tensors(&fixture("denoiser_weights.safetensors")).unwrap();
    assert_same_layout(&want, &state_dict(&varmap).unwrap());
    assert!(
        !want.keys().any(|k| k.starts_with("temb")),
        "no time embedding"
    );
}

#[test]
fn add_noise_and_the_evaluation_output_match_pytorch() {
    let p = parity();
    let x_noisy = add_noise_with(&p["x0"], &p["noise"]).unwrap();
    let e = rel_err(&x_noisy, &p["x_noisy"]);
    assert!(e < 1e-6, "add_noise: relative error {e}");
    let (unet, _) = load();
    let out = unet.forward(&p["x_noisy"]).unwrap();
    let e = rel_err(&out, &p["out_eval"]);
    assert!(e <= 1e-4, "evaluation output: relative error {e}");
}

#[test]
fn training_output_loss_gradients_and_statistics_match_pytorch() {
    let p = parity();
    let (unet, varmap) = load();
    let loss = denoising_loss(&unet, &p["x0"], &p["noise"]).unwrap();
    let e = rel_err(&loss, &p["loss"]);
    assert!(e <= 1e-4, "loss: relative error {e}");
    let grads = loss.backward().unwrap();
    let zero_grad = assert_gradients_match(&p, &grads, &varmap);
    assert_eq!(
        zero_grad, 11,
        "the eleven convolutions in front of a BatchNorm"
    );
    assert_running_statistics_match(&p, &unet.batch_norms());

    // and the training-mode output itself, from the running statistics the fixture started with
    let (unet, _) = load();
    let out = unet.forward_t(&p["x_noisy"], true).unwrap();
    let e = rel_err(&out, &p["out_train"]);
    assert!(e <= 1e-4, "training output: relative error {e}");
}

#[test]
fn transposed_convolution_demonstrations_match_pytorch() {
    let p = parity();
    let x = &p["demo.x"];
    for (name, k, stride, padding, output_padding) in [
        ("k1_s1", 1, 1, 0, 0),
        ("k3_s1", 3, 1, 0, 0),
        ("k2_s2", 2, 2, 0, 0),
        ("k3_s2", 3, 2, 0, 0),
        ("k3_s2_p1_op1", 3, 2, 1, 1),
    ] {
        let kernel = Tensor::ones((1, 1, k, k), candle_core::DType::F32, &Device::Cpu).unwrap();
        let ours = conv_transpose2d(x, &kernel, stride, padding, output_padding).unwrap();
        let want = &p[&format!("demo.{name}")];
        assert_eq!(ours.dims(), want.dims(), "{name}");
        let side = transposed_output_size(3, k, stride, padding, output_padding);
        assert_eq!(want.dims(), [1, 1, side, side], "{name}: the size formula");
        assert_eq!(rel_err(&ours, want), 0.0, "{name}");
    }
}

#[test]
fn bad_transposed_convolutions_say_what_is_wrong() {
    let x = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let k = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = conv_transpose2d(&x, &k, 2, 0, 0).unwrap_err().to_string();
    assert!(e.contains("[C_in, C_out, k, k]"), "{e}");
    let k = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = conv_transpose2d(&x, &k, 2, 0, 2).unwrap_err().to_string();
    assert!(e.contains("output_padding"), "{e}");
    let e = conv_transpose2d(&x, &k, 0, 0, 0).unwrap_err().to_string();
    assert!(e.contains("stride"), "{e}");
}
