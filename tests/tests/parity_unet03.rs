//! Notebook 03's U-Net against PyTorch: the fixtures were written by
//! `tests/fixtures/make_unet03_fixture.py` from the course's network (`unet03_torch.py`). The
//! same weights must give the same outputs (relative error <= 1e-4), loss and gradients (<= 1e-3
//! each against its own norm); the new pieces (sinusoidal embedding, space to depth, GroupNorm
//! with its gradients, GELU, the 2x2 transposed convolution) are compared one by one.

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor, Var};
use diffusion::checkpoint::{
    count_parameters, load_network, new_network, read_tensors, state_dict,
};
use diffusion::layers::{gelu, space_to_depth, ConvTranspose2x2, GroupNorm};
use diffusion::notebook03::{SinusoidalPositionEmbedBlock, UNet};
use diffusion::{get_loss_with_noise, Schedule};
use diffusion_tests::parity::{assert_gradients_match, assert_same_layout, rel_err};
use diffusion_tests::{fixture, fixture_tensors};

fn parity() -> HashMap<String, Tensor> {
    fixture_tensors("unet03.safetensors")
}

fn load() -> (UNet, candle_nn::VarMap) {
    load_network(
        &fixture("unet03_weights.safetensors"),
        Default::default(),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn the_network_has_the_courses_names_and_1979777_parameters() {
    let (_, varmap) = new_network::<UNet>(Default::default(), &Device::Cpu).unwrap();
    assert_eq!(count_parameters(&varmap), 1_979_777);
    let want = read_tensors(&fixture("unet03_weights.safetensors")).unwrap();
    assert_same_layout(&want, &state_dict(&varmap).unwrap());
}

#[test]
fn output_loss_and_every_gradient_match_pytorch() {
    let p = parity();
    let (unet, varmap) = load();
    let out = unet.forward(&p["x_t"], &p["t"]).unwrap();
    let e = rel_err(&out, &p["out_eval"]);
    assert!(e <= 1e-4, "output: relative error {e}");
    let e = rel_err(&out, &p["out_train"]);
    assert!(e <= 1e-4, "training-mode output: relative error {e}");

    let s = Schedule::course(&Device::Cpu).unwrap();
    let loss = get_loss_with_noise(&unet, &s, &p["x0"], &p["t"], &p["noise"]).unwrap();
    let e = rel_err(&loss, &p["loss"]);
    assert!(e <= 1e-4, "loss: relative error {e}");
    let grads = loss.backward().unwrap();
    let zero = assert_gradients_match(&p, &grads, &varmap);
    assert_eq!(
        zero, 0,
        "no BatchNorm: every gradient is measured against its own norm"
    );
}

#[test]
fn the_sinusoidal_embedding_matches_pytorch() {
    let p = parity();
    let block = SinusoidalPositionEmbedBlock::new(8).unwrap();
    let out = block.forward(&p["sinusoidal.t"]).unwrap();
    let e = rel_err(&out, &p["sinusoidal.out"]);
    assert!(e <= 1e-6, "sinusoidal embedding: relative error {e}");
}

#[test]
fn space_to_depth_is_the_courses_rearrange() {
    let p = parity();
    let out = space_to_depth(&p["rearrange.x"]).unwrap();
    assert_eq!(rel_err(&out, &p["rearrange.out"]), 0.0);
    let first: Vec<Vec<f32>> = out.get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
    assert_eq!(first, [[1., 3., 5.], [13., 15., 17.], [25., 27., 29.]]);
}

#[test]
fn group_norm_and_its_gradients_match_pytorch() {
    let p = parity();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let gn = GroupNorm::new(8, 64, vb).unwrap();
    // without affine (weight 1, bias 0)
    let e = rel_err(&gn.forward(&p["groupnorm.x"]).unwrap(), &p["groupnorm.out"]);
    assert!(e <= 1e-5, "group norm: relative error {e}");
    // with the fixture's weight and bias, and the gradients of (y * grad_out).sum()
    let weight = Var::from_tensor(&p["groupnorm.weight"]).unwrap();
    let bias = Var::from_tensor(&p["groupnorm.bias"]).unwrap();
    let x = Var::from_tensor(&p["groupnorm.x"]).unwrap();
    let gn = GroupNorm {
        num_groups: 8,
        weight: weight.as_tensor().clone(),
        bias: bias.as_tensor().clone(),
    };
    let y = gn.forward(x.as_tensor()).unwrap();
    let g = (y * &p["groupnorm.grad_out"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (var, name) in [
        (&x, "grad_in"),
        (&weight, "grad_weight"),
        (&bias, "grad_bias"),
    ] {
        let e = rel_err(
            g.get(var.as_tensor()).unwrap(),
            &p[&format!("groupnorm.{name}")],
        );
        assert!(e <= 1e-4, "group norm {name}: relative error {e}");
    }
}

#[test]
fn gelu_is_the_exact_erf_form() {
    let p = parity();
    let x = Var::from_tensor(&p["gelu.x"]).unwrap();
    let y = gelu(x.as_tensor()).unwrap();
    let e = rel_err(&y, &p["gelu.out"]);
    assert!(e <= 1e-6, "gelu: relative error {e}");
    let g = y.sum_all().unwrap().backward().unwrap();
    let e = rel_err(g.get(x.as_tensor()).unwrap(), &p["gelu.grad_in"]);
    assert!(e <= 1e-5, "gelu gradient: relative error {e}");
}

#[test]
fn the_2x2_transposed_convolution_matches_pytorch() {
    let p = parity();
    let up = ConvTranspose2x2 {
        weight: p["convt2.weight"].clone(),
        bias: p["convt2.bias"].clone(),
    };
    let e = rel_err(&up.forward(&p["convt2.x"]).unwrap(), &p["convt2.out"]);
    assert!(e <= 1e-6, "transposed convolution: relative error {e}");
}

#[test]
fn a_group_count_that_does_not_divide_the_channels_says_so() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let e = GroupNorm::new(3, 64, vb).unwrap_err().to_string();
    assert!(e.contains("number of groups") && e.contains("64"), "{e}");
}
