//! Notebook 03's network with one of the course's changes taken out (the ablation), and the two
//! training options past the course: a moving average of the weights and the cosine schedule.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffusion::notebook03::{Change, Changes, UNet, UNetConfig};
use diffusion::schedule::ScheduleKind;
use diffusion::{Network, NoisePredictor, Rng, TrainConfig, Trainer};

fn build(config: UNetConfig) -> (UNet, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (UNet::with_config(config, vb).unwrap(), varmap)
}

fn names(varmap: &VarMap) -> HashSet<String> {
    varmap.data().lock().unwrap().keys().cloned().collect()
}

/// The parameter counts, worked out by hand from the layer sizes (PyTorch's, 16 x 16 x 1).
#[test]
fn each_change_removed_costs_the_parameters_it_brought() {
    let full = 1_979_777;
    // rearrange pooling: down1's GELUConvBlock(256 -> 64) and down2's (512 -> 128), each a
    // 3x3 convolution with bias and a GroupNorm's weight and bias
    let rearrange = (256 * 64 * 9 + 64 + 2 * 64) + (512 * 128 * 9 + 128 + 2 * 128);
    // sinusoidal time: temb_1's and temb_2's first Linear take 1 input instead of 8
    let sinusoidal = 7 * 128 + 7 * 64;
    // the global skip: out.0 takes 64 channels instead of 128
    let skip = 64 * 64 * 9;
    let cases = [
        (Change::GroupNormGelu, full), // BatchNorm has GroupNorm's weight and bias
        (Change::RearrangePool, full - rearrange),
        (Change::SinusoidalTime, full - sinusoidal),
        (Change::Residual, full - skip),
    ];
    assert_eq!(build(UNetConfig::default()).0.summary().parameters(), full);
    for (change, want) in cases {
        let (net, _) = build(UNetConfig::without(change));
        assert_eq!(net.summary().parameters(), want, "without {change:?}");
        assert!(
            net.summary().to_string().contains(change.replaced_by()),
            "the summary's title names what replaced {change:?}"
        );
    }
}

#[test]
fn the_ablated_networks_keep_pytorch_names_and_batch_norm_state() {
    let (_, full) = build(UNetConfig::default());
    let full = names(&full);
    let (bn_net, bn) = build(UNetConfig::without(Change::GroupNormGelu));
    let bn = names(&bn);
    // 18 normalisations (down0 2, down1 3, down2 3, up0 1, up1 4, up2 4, out 1), 3 buffers each
    assert_eq!(bn_net.buffers().len(), 18 * 3);
    assert_eq!(bn.difference(&full).count(), 18 * 3);
    assert!(bn.contains("down1.model.2.conv.model.1.running_var"));
    assert!(build(UNetConfig::default()).0.buffers().is_empty());

    let (_, pool) = build(UNetConfig::without(Change::RearrangePool));
    assert!(names(&pool)
        .iter()
        .all(|n| !n.starts_with("down1.model.2.")));
    assert!(names(&pool).is_subset(&full));
}

#[test]
fn every_ablated_network_predicts_noise_of_the_images_shape() {
    let mut rng = Rng::new(3);
    let x = rng.randn((3, 1, 16, 16), &Device::Cpu).unwrap();
    let t = Tensor::new(&[0u32, 75, 149], &Device::Cpu).unwrap();
    let (course, _) = build(UNetConfig::default());
    let reference = course.forward(&x, &t).unwrap();
    for change in Change::ALL {
        let (net, _) = build(UNetConfig::without(change));
        let e = net.predict_noise(&x, &t, true).unwrap();
        assert_eq!(e.dims(), [3, 1, 16, 16], "without {change:?}");
        let finite = e.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(finite.iter().all(|v| v.is_finite()));
        assert_ne!(
            e.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

/// BatchNorm (without the GroupNorm change) answers differently in training and evaluation;
/// the course's GroupNorm network does not.
#[test]
fn only_the_batch_norm_variant_depends_on_the_mode() {
    let mut rng = Rng::new(5);
    let x = rng.randn((4, 1, 16, 16), &Device::Cpu).unwrap();
    let t = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
    let gap = |config: UNetConfig| {
        let (net, _) = build(config);
        let a = net.forward_t(&x, &t, true).unwrap();
        let b = net.forward_t(&x, &t, false).unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(gap(UNetConfig::default()), 0.0);
    assert!(gap(UNetConfig::without(Change::GroupNormGelu)) > 1e-3);
}

fn images(n: usize) -> Tensor {
    Rng::new(1)
        .randn((n, 1, 16, 16), &Device::Cpu)
        .unwrap()
        .clamp(-1f32, 1f32)
        .unwrap()
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        max_steps: Some(steps),
        ..TrainConfig::notebook03()
    }
}

/// The averaged weights follow `ema <- d ema + (1 - d) w` after every step, are saved beside the
/// weights, and load back as a network that samples.
#[test]
fn the_moving_average_is_kept_saved_and_sampled_from() {
    let ema_config = TrainConfig {
        ema: Some(0.9),
        ..config(3)
    };
    let mut trainer =
        Trainer::<UNet>::for_network(Default::default(), ema_config, &Device::Cpu).unwrap();
    let x = images(16);
    let name = "down0.conv1.model.0.bias";
    let weight = |t: &Trainer<UNet>| -> Vec<f32> {
        let data = t.varmap.data().lock().unwrap();
        data[name].as_tensor().to_vec1().unwrap()
    };
    let mut want: Option<Vec<f32>> = None;
    for k in 0..3 {
        trainer.train_step(&x.narrow(0, 0, 8).unwrap()).unwrap();
        let w = weight(&trainer);
        want = Some(match want {
            None => w,
            Some(avg) => {
                let d = (0.9f64).min((1 + k) as f64 / (10 + k) as f64) as f32;
                avg.iter()
                    .zip(&w)
                    .map(|(a, w)| d * a + (1.0 - d) * w)
                    .collect()
            }
        });
    }
    let ema = trainer.ema.as_ref().unwrap();
    let got: Vec<f32> = ema
        .weights()
        .iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
        .to_vec1()
        .unwrap();
    let want = want.unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    assert_ne!(got, weight(&trainer), "the average lags the weights");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    trainer.save(&path).unwrap();
    let ema_path = diffusion::train::ema_path(&path);
    assert_eq!(ema_path, dir.path().join("model-ema.safetensors"));
    let loaded = UNet::load(&ema_path, &Device::Cpu).unwrap();
    let bias: Vec<f32> = loaded.down0.conv1.conv.bias.to_vec1().unwrap();
    assert_eq!(bias, got);
    let model = trainer.ema_model().unwrap().unwrap();
    let s = diffusion::sample_images(&model, &trainer.schedule, 2, 0, &mut Rng::new(0)).unwrap();
    assert_eq!(s.images.dims(), [2, 1, 16, 16]);

    // without the option nothing is averaged and nothing is written beside
    let plain = Trainer::<UNet>::for_network(Default::default(), config(1), &Device::Cpu).unwrap();
    assert!(plain.ema_model().unwrap().is_none());
    let other = dir.path().join("plain.safetensors");
    plain.save(&other).unwrap();
    assert!(!diffusion::train::ema_path(&other).exists());
}

#[test]
fn a_bad_decay_is_refused_before_training() {
    let bad = TrainConfig {
        ema: Some(1.5),
        ..config(1)
    };
    let e = Trainer::<UNet>::for_network(Default::default(), bad, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("EMA decay") && e.contains("1.5"), "{e}");
}

#[test]
fn the_trainer_builds_the_schedule_it_is_asked_for() {
    let cosine = TrainConfig {
        schedule: ScheduleKind::Cosine,
        ..config(1)
    };
    let t = Trainer::<UNet>::for_network(Default::default(), cosine, &Device::Cpu).unwrap();
    let want = diffusion::Schedule::cosine(150, &Device::Cpu).unwrap();
    assert_eq!(t.schedule.values(), want.values());
    let linear = Trainer::<UNet>::for_network(Default::default(), config(1), &Device::Cpu).unwrap();
    assert_eq!(
        linear.schedule.values(),
        diffusion::Schedule::course(&Device::Cpu).unwrap().values()
    );
    // the changes default to the course's
    assert_eq!(t.model.config().changes, Changes::ALL);
}
