//! Bad input gets an error that says what was expected, never a panic: one test per kind of
//! mistake a student makes with the course's functions.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use diffusion::{
    forward_step, q_with_noise, reverse_q_with_noise, sample_images, Rng, Schedule, TrainConfig,
    Trainer, UNet, UNetConfig,
};

fn dev() -> Device {
    Device::Cpu
}

fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("an error"))
}

fn images(n: usize) -> Tensor {
    Rng::new(0).randn((n, 1, 16, 16), &dev()).unwrap()
}

#[test]
fn schedule_arguments_are_checked() {
    let e = err(Schedule::linear(0, 1e-4, 0.02, &dev()));
    assert!(e.contains("at least one timestep"), "{e}");
    let e = err(Schedule::linear(150, 0.02, 0.01, &dev()));
    assert!(e.contains("start <= end"), "{e}");
    let e = err(Schedule::linear(150, 1e-4, 1.0, &dev()));
    assert!(e.contains("end < 1"), "{e}");
    // B = 0 adds no noise: refused by the linear schedule's own check, naming the start
    let e = err(Schedule::linear(150, 0.0, 0.02, &dev()));
    assert!(
        e.contains("0 < start") && e.contains("got start = 0,"),
        "{e}"
    );
    let e = err(Schedule::cosine(0, &dev()));
    assert!(e.contains("at least one timestep"), "{e}");
    // betas must lie strictly inside (0, 1): each bound, and a NaN, named with its index
    for (b, name) in [
        (0.0, "beta[1] = 0"),
        (1.0, "beta[1] = 1"),
        (f64::NAN, "beta[1] = NaN"),
    ] {
        let e = err(Schedule::from_betas(vec![0.5, b], &dev()));
        assert!(
            e.contains("beta must lie in (0, 1)") && e.contains(name),
            "{e}"
        );
    }
    let one = Schedule::from_betas(vec![0.5], &dev()).unwrap();
    assert_eq!((one.len(), one.is_empty()), (1, false));
}

#[test]
fn forward_step_arguments_are_checked() {
    let x = images(2);
    let e = err(forward_step(&x, 1.0, &x));
    assert!(e.contains("beta_t must lie in [0, 1)"), "{e}");
    let e = err(forward_step(&x, 0.1, &images(3)));
    assert!(e.contains("noise must have the image's shape"), "{e}");
}

#[test]
fn noise_and_predicted_noise_must_have_the_images_shape() {
    let s = Schedule::course(&dev()).unwrap();
    let t = Tensor::new(&[3u32, 7], &dev()).unwrap();
    let e = err(q_with_noise(&s, &images(2), &t, &images(3)));
    assert!(e.contains("noise must have the images' shape"), "{e}");
    let e = err(reverse_q_with_noise(
        &s,
        &images(2),
        5,
        &images(3),
        &images(2),
    ));
    assert!(
        e.contains("predicted noise e_t must have the shape of x_t"),
        "{e}"
    );
    let e = err(reverse_q_with_noise(
        &s,
        &images(2),
        150,
        &images(2),
        &images(2),
    ));
    assert!(e.contains("timestep 150 is out of range"), "{e}");
}

#[test]
fn timesteps_must_be_one_integer_per_image_in_range() {
    let s = Schedule::course(&dev()).unwrap();
    let x = images(2);
    let two_d = Tensor::new(&[[3u32], [7]], &dev()).unwrap();
    let e = err(q_with_noise(&s, &x, &two_d, &x));
    assert!(e.contains("1-D tensor of shape [2]"), "{e}");
    let floats = Tensor::new(&[3f32, 7.], &dev()).unwrap();
    let e = err(q_with_noise(&s, &x, &floats, &x));
    assert!(e.contains("timesteps must be integers"), "{e}");
    let too_big = Tensor::new(&[3i64, 150], &dev()).unwrap();
    let e = err(q_with_noise(&s, &x, &too_big, &x));
    assert!(
        e.contains("timestep 150 is out of range") && e.contains("T-1 = 149"),
        "{e}"
    );
    // u8 timesteps are integers too, and are accepted
    let small = Tensor::new(&[3u8, 7], &dev()).unwrap();
    assert!(q_with_noise(&s, &x, &small, &x).is_ok());
}

#[test]
fn the_unet_names_the_images_it_takes() {
    let (unet, _) = diffusion::checkpoint::new_unet(&dev()).unwrap();
    let t = Tensor::new(&[1u32, 2], &dev()).unwrap();
    let e = err(unet.forward_t(&images(2).to_dtype(DType::F64).unwrap(), &t, false));
    assert!(e.contains("f32 images"), "{e}");
    let empty = Tensor::zeros((0, 1, 16, 16), DType::F32, &dev()).unwrap();
    let none = Tensor::zeros(0, DType::U32, &dev()).unwrap();
    let e = err(unet.forward_t(&empty, &none, false));
    assert!(e.contains("[batch, 1, 16, 16] with batch >= 1"), "{e}");
    let flat = Tensor::zeros((2, 256), DType::F32, &dev()).unwrap();
    let e = err(unet.forward_t(&flat, &t, false));
    assert!(
        e.contains("[batch, 1, 16, 16]") && e.contains("[2, 256]"),
        "{e}"
    );
}

#[test]
fn a_model_and_schedule_of_different_t_do_not_sample() {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
    let config = UNetConfig {
        t: 100,
        ..UNetConfig::default()
    };
    let unet = UNet::with_config(config, vb).unwrap();
    let s = Schedule::course(&dev()).unwrap();
    let e = err(sample_images(&unet, &s, 1, 0, &mut Rng::new(0)));
    assert!(
        e.contains("built for T = 100 but the schedule has 150 steps"),
        "{e}"
    );
}

#[test]
fn the_trainer_takes_only_batches_of_images() {
    let config = TrainConfig {
        batch_size: 4,
        max_steps: Some(1),
        ..TrainConfig::course()
    };
    let mut trainer = Trainer::new(config, &dev()).unwrap();
    let flat = Tensor::zeros((8, 256), DType::F32, &dev()).unwrap();
    let e = err(trainer.train(&flat, 0, |_, _| Ok(())));
    assert!(
        e.contains("training images") && e.contains("[batch, 1, 16, 16]"),
        "{e}"
    );
    let e = err(trainer.train_step(&flat));
    assert!(e.contains("[batch, 1, 16, 16]"), "{e}");
    assert_eq!(trainer.step, 0, "nothing was trained");
}

#[test]
fn a_checkpoint_with_a_wrong_dtype_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (_, varmap) = diffusion::checkpoint::new_unet(&dev()).unwrap();
    let mut tensors = diffusion::checkpoint::state_dict(&varmap).unwrap();
    let name = "down1.model.0.weight";
    tensors.insert(name.into(), tensors[name].to_dtype(DType::F64).unwrap());
    diffusion::checkpoint::save_tensors(&tensors, &path).unwrap();
    let (_, target) = diffusion::checkpoint::new_unet(&dev()).unwrap();
    let before = diffusion::checkpoint::state_dict(&target).unwrap();
    let e = err(diffusion::checkpoint::load(&target, &path));
    assert!(
        e.contains(&format!("`{name}` is F64")) && e.contains("needs F32"),
        "{e}"
    );
    let after = diffusion::checkpoint::state_dict(&target).unwrap();
    diffusion_tests::assert_same_state(&before, &after);
}

#[test]
fn a_trainer_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let config = TrainConfig {
        batch_size: 8,
        max_steps: Some(2),
        ..TrainConfig::course()
    };
    let data = images(16).clamp(-1f32, 1f32).unwrap();
    let mut first = Trainer::new(config.clone(), &dev()).unwrap();
    first.train(&data, 0, |_, _| Ok(())).unwrap();
    first.save(&path).unwrap();
    let resumed = Trainer::from_checkpoint(&path, config, &dev()).unwrap();
    let a = diffusion::checkpoint::state_dict(&first.varmap).unwrap();
    let b = diffusion::checkpoint::state_dict(&resumed.varmap).unwrap();
    diffusion_tests::assert_same_state(&a, &b);
    // the BatchNorm statistics came back too: evaluation outputs agree
    let t = Tensor::new(&[10u32; 4], &dev()).unwrap();
    let x = images(4);
    let ya = first.model.forward_t(&x, &t, false).unwrap();
    let yb = resumed.model.forward_t(&x, &t, false).unwrap();
    let d = (ya - yb).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
}
