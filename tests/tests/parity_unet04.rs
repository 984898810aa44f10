//! Notebook 04's conditional U-Net against PyTorch: the fixtures were written by
//! `tests/fixtures/make_unet04_fixture.py` from the course's network (`unet04_torch.py`). The
//! same weights, contexts and masks must give the same outputs (relative error <= 1e-4), loss and
//! gradients (<= 1e-3 each against its own norm), and the guided noise of `sample_w`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use diffusion::checkpoint::{
    count_parameters, load_network, new_network, read_tensors, state_dict,
};
use diffusion::notebook04::{get_loss_with_context, guided_prediction, one_hot, UNet};
use diffusion::Schedule;
use diffusion_tests::parity::{assert_gradients_match, assert_same_layout, rel_err};
use diffusion_tests::{fixture, fixture_tensors};

fn parity() -> HashMap<String, Tensor> {
    fixture_tensors("unet04.safetensors")
}

fn load() -> (UNet, candle_nn::VarMap) {
    load_network(
        &fixture("unet04_weights.safetensors"),
        Default::default(),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn the_network_has_the_courses_names_and_2002561_parameters() {
    let (unet, varmap) = new_network::<UNet>(Default::default(), &Device::Cpu).unwrap();
    assert_eq!(count_parameters(&varmap), 2_002_561);
    assert_eq!(unet.summary().parameters(), 2_002_561);
    let want = read_tensors(&fixture("unet04_weights.safetensors")).unwrap();
    assert_same_layout(&want, &state_dict(&varmap).unwrap());
    for name in ["t_emb1.model.0.weight", "c_embed2.model.2.bias"] {
        assert!(want.contains_key(name), "{name}");
    }
}

#[test]
fn the_one_hot_context_is_pytorchs() {
    let p = parity();
    let ours = one_hot(&p["labels"], 10).unwrap();
    assert_eq!(rel_err(&ours, &p["c_hot"]), 0.0);
}

#[test]
fn outputs_with_and_without_the_class_match_pytorch() {
    let p = parity();
    let (unet, _) = load();
    let out = unet
        .forward(&p["x_t"], &p["t"], &p["c_hot"], &p["c_mask"])
        .unwrap();
    for name in ["out_eval", "out_train"] {
        let e = rel_err(&out, &p[name]);
        assert!(e <= 1e-4, "{name}: relative error {e}");
    }
    let none = unet
        .forward(
            &p["x_t"],
            &p["t"],
            &p["c_hot"],
            &p["c_mask"].zeros_like().unwrap(),
        )
        .unwrap();
    let e = rel_err(&none, &p["out_no_class"]);
    assert!(e <= 1e-4, "without the class: relative error {e}");
    // The class changes the prediction: images 0-5 keep theirs, 7 has it masked out.
    let d = rel_err(
        &out.narrow(0, 0, 6).unwrap(),
        &none.narrow(0, 0, 6).unwrap(),
    );
    assert!(d > 1e-3, "the class made no difference ({d})");
    let same = rel_err(
        &out.narrow(0, 7, 1).unwrap(),
        &none.narrow(0, 7, 1).unwrap(),
    );
    assert!(
        same <= 1e-6,
        "a fully masked context is no context ({same})"
    );
}

#[test]
fn loss_and_every_gradient_match_pytorch() {
    let p = parity();
    let (unet, varmap) = load();
    let s = Schedule::course(&Device::Cpu).unwrap();
    let loss = get_loss_with_context(
        &unet,
        &s,
        &p["x0"],
        &p["t"],
        (&p["c_hot"], &p["c_mask"]),
        &p["noise"],
    )
    .unwrap();
    let e = rel_err(&loss, &p["loss"]);
    assert!(e <= 1e-4, "loss: relative error {e}");
    let grads = loss.backward().unwrap();
    let zero = assert_gradients_match(&p, &grads, &varmap);
    assert_eq!(zero, 0, "no BatchNorm: every gradient against its own norm");
}

#[test]
fn the_guided_noise_of_sample_w_matches_pytorch() {
    let p = parity();
    let (unet, _) = load();
    let e = guided_prediction(&unet, &p["x_t"], &p["t"], &p["c_hot"], &p["guided.w"]).unwrap();
    let err = rel_err(&e, &p["guided.e"]);
    assert!(err <= 1e-4, "guided noise: relative error {err}");
    // w = 0 (image 3) is the conditional prediction alone.
    let cond = unet
        .forward(
            &p["x_t"],
            &p["t"],
            &p["c_hot"],
            &p["c_hot"].ones_like().unwrap(),
        )
        .unwrap();
    let w: Vec<f32> = p["guided.w"]
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(w[3], 0.0);
    let err = rel_err(&e.narrow(0, 3, 1).unwrap(), &cond.narrow(0, 3, 1).unwrap());
    assert!(err <= 1e-6, "w = 0 must be the conditional model: {err}");
}
