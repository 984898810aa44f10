//! The training loop: the loss falls, training continues where it stopped, a NaN stops it
//! cleanly, and the process noises and samplers have the right shapes.

use candle_core::{Device, Tensor};
use diffusion::{sample_ddim, sample_images, Rng, Schedule, TrainConfig, Trainer};

/// 256 simple 16x16 images in [-1, 1]: a bright square at one of four places.
fn toy_images() -> Tensor {
    let mut v = vec![-1f32; 256 * 256];
    for i in 0..256 {
        let (oy, ox) = [(2, 2), (2, 9), (9, 2), (9, 9)][i % 4];
        for y in oy..oy + 5 {
            for x in ox..ox + 5 {
                v[i * 256 + y * 16 + x] = 1.0;
            }
        }
    }
    Tensor::from_vec(v, (256, 1, 16, 16), &Device::Cpu).unwrap()
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 32,
        epochs: 100,
        max_steps: Some(steps),
        seed: 7,
        ..TrainConfig::course()
    }
}

/// A trainer for `steps` steps per call whose weights are the PyTorch fixture's: the
/// initialisation is random, so two runs compared step by step must start from the same weights.
fn fixture_trainer(steps: usize) -> Trainer {
    let mut t = Trainer::new(config(steps), &Device::Cpu).unwrap();
    t.varmap
        .load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/weights.safetensors"
        ))
        .unwrap();
    t
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn loss_falls_and_a_second_call_continues() {
    let images = toy_images();
    let mut trainer = Trainer::new(config(40), &Device::Cpu).unwrap();
    let mut seen = vec![];
    let p = trainer
        .train(&images, 10, |p, _| {
            seen.push(p.step);
            Ok(())
        })
        .unwrap();
    assert_eq!(p.step, 40);
    assert_eq!(seen, vec![10, 20, 30, 40]);
    // 256 images / 32 = 8 steps per epoch: 40 steps are 5 epochs
    assert_eq!(trainer.epoch, 5);
    let l = &trainer.losses;
    assert_eq!(l.len(), 40);
    // the loss starts near 1 (predicting unit-variance noise) and falls
    assert!(mean(&l[..5]) > 0.5, "{l:?}");
    assert!(mean(&l[35..]) < 0.75 * mean(&l[..5]), "{l:?}");

    let p2 = trainer.train(&images, 0, |_, _| Ok(())).unwrap();
    assert_eq!(p2.step, 80, "the second call continues from step 40");
    assert_eq!(trainer.losses.len(), 80);
}

#[test]
fn same_seed_same_losses() {
    let images = toy_images();
    let run = || {
        let mut t = fixture_trainer(3);
        t.train(&images, 0, |_, _| Ok(())).unwrap();
        t.losses.clone()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_state() {
    let mut trainer = Trainer::new(config(5), &Device::Cpu).unwrap();
    let good = toy_images().narrow(0, 0, 32).unwrap();
    trainer.train_step(&good).unwrap();
    let before = diffusion::checkpoint::state_dict(&trainer.varmap).unwrap();
    let nan = Tensor::full(f32::NAN, (32, 1, 16, 16), &Device::Cpu).unwrap();
    let bad = (&good + nan).unwrap();
    let e = trainer.train_step(&bad).unwrap_err().to_string();
    assert!(e.contains("NaN") && e.contains("step 2"), "{e}");
    assert_eq!(trainer.step, 1);
    let after = diffusion::checkpoint::state_dict(&trainer.varmap).unwrap();
    diffusion_tests::assert_same_state(&before, &after);
}

#[test]
fn too_few_images_for_a_batch_is_an_error() {
    let mut trainer = Trainer::new(config(5), &Device::Cpu).unwrap();
    let few = toy_images().narrow(0, 0, 10).unwrap();
    let e = trainer
        .train(&few, 0, |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no full batch of 32"), "{e}");
}

#[test]
fn samplers_return_images_and_strips() {
    let dev = Device::Cpu;
    let (unet, _) = diffusion::checkpoint::new_unet(&dev).unwrap();
    let s = Schedule::course(&dev).unwrap();
    let out = sample_images(&unet, &s, 3, 15, &mut Rng::new(1)).unwrap();
    assert_eq!(out.images.dims(), &[3, 1, 16, 16]);
    assert_eq!(
        out.frames.len(),
        16,
        "ncols + 1 frames: the noise and 15 snapshots"
    );
    let steps: Vec<_> = out.frame_steps.iter().skip(1).map(|s| s.unwrap()).collect();
    assert_eq!(steps, (0..15).rev().map(|k| 10 * k).collect::<Vec<_>>());
    assert_eq!(out.strips().unwrap().dims(), &[48, 1, 16, 16]);

    let a = sample_ddim(&unet, &s, 2, 10, &mut Rng::new(4)).unwrap();
    let b = sample_ddim(&unet, &s, 2, 10, &mut Rng::new(4)).unwrap();
    assert_eq!(a.frames.len(), 11);
    let d: f32 = (a.images - b.images)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(
        d, 0.0,
        "DDIM with eta = 0 is deterministic given the starting noise"
    );
    assert!(sample_ddim(&unet, &s, 2, 0, &mut Rng::new(4)).is_err());
    assert!(sample_ddim(&unet, &s, 2, 151, &mut Rng::new(4)).is_err());
    assert!(sample_images(&unet, &s, 0, 15, &mut Rng::new(4)).is_err());
}

#[test]
fn ddim_with_every_step_visits_every_timestep() {
    let ts = diffusion::sample::ddim_timesteps(150, 150).unwrap();
    assert_eq!(ts, (0..150).rev().collect::<Vec<_>>());
    assert_eq!(diffusion::sample::ddim_timesteps(150, 1).unwrap(), vec![0]);
    let ts = diffusion::sample::ddim_timesteps(150, 4).unwrap();
    assert_eq!(ts, vec![149, 99, 50, 0]);
}

/// `e = sqrt(w) x_t` with one weight `w`: at `w = 0` the loss is finite but its gradient is not
/// (the derivative of the square root at 0); at a huge `w` the loss itself overflows.
struct SqrtNet {
    w: Tensor,
    init: f64,
}

impl diffusion::Network for SqrtNet {
    type Config = f64;
    fn build(init: f64, vb: candle_nn::VarBuilder) -> anyhow::Result<Self> {
        let w = vb.get_with_hints(1, "w", candle_nn::Init::Const(init))?;
        Ok(Self { w, init })
    }
    fn config(&self) -> f64 {
        self.init
    }
    fn image_shape(&self) -> [usize; 3] {
        [1, 16, 16]
    }
}

impl diffusion::NoisePredictor for SqrtNet {
    fn steps(&self) -> usize {
        150
    }
    fn predict_noise(&self, x_t: &Tensor, _: &Tensor, _: bool) -> anyhow::Result<Tensor> {
        Ok(x_t.broadcast_mul(&self.w.sqrt()?)?)
    }
}

fn sqrt_trainer(init: f64) -> Trainer<SqrtNet> {
    Trainer::<SqrtNet>::for_network(init, config(3), &Device::Cpu).unwrap()
}

fn w_of(t: &Trainer<SqrtNet>) -> f32 {
    t.model.w.to_vec1::<f32>().unwrap()[0]
}

#[test]
fn a_finite_loss_with_a_non_finite_gradient_updates_nothing() {
    let mut trainer = sqrt_trainer(0.0);
    let batch = toy_images().narrow(0, 0, 32).unwrap();
    let e = format!("{:#}", trainer.train_step(&batch).unwrap_err());
    assert!(e.contains("not finite") && e.contains("`w`"), "{e}");
    assert!(e.contains("weights are those of step 0"), "{e}");
    assert_eq!(w_of(&trainer), 0.0, "the weight stays as it was, not NaN");
    assert_eq!(trainer.step, 0);
    assert!(trainer.losses.is_empty());
    // train() stops with the same error and returns it
    let e = trainer.train(&toy_images(), 0, |_, _| Ok(())).unwrap_err();
    assert!(format!("{e:#}").contains("not finite"), "{e:#}");
    assert_eq!(w_of(&trainer), 0.0);
}

#[test]
fn an_infinite_loss_stops_training_before_any_update() {
    let mut trainer = sqrt_trainer(1e38);
    let batch = (toy_images().narrow(0, 0, 32).unwrap() * 10.0).unwrap();
    let e = trainer.train_step(&batch).unwrap_err().to_string();
    assert!(
        e.contains("the loss became inf") && e.contains("step 1"),
        "{e}"
    );
    assert_eq!(w_of(&trainer), 1e38);
    assert_eq!(trainer.step, 0);
}

/// The named settings are the course notebooks' (`shared/course/notebook0N.md`): notebook 02
/// trains 3 epochs at batch 128 with Adam lr 0.001 and random flips, notebook 03 the same for 5
/// epochs, notebook 01 2 epochs at lr 0.0001.
#[test]
fn the_named_settings_are_the_course_notebooks() {
    let course = TrainConfig::course();
    assert_eq!(
        (course.epochs, course.batch_size, course.lr, course.hflip),
        (3, 128, 0.001, true)
    );
    assert_eq!((course.max_steps, course.ema, course.seed), (None, None, 0));
    assert_eq!(course.schedule, diffusion::schedule::ScheduleKind::Linear);
    assert_eq!(TrainConfig::default(), course);
    let nb03 = TrainConfig::notebook03();
    assert_eq!(
        nb03,
        TrainConfig {
            epochs: 5,
            ..course.clone()
        }
    );
    let nb01 = TrainConfig::notebook01();
    assert_eq!(
        nb01,
        TrainConfig {
            epochs: 2,
            lr: 0.0001,
            ..course
        }
    );
}

/// Without a step budget a call runs every epoch: 64 images in batches of 32 are 2 steps an
/// epoch, so 3 epochs are 6 steps.
#[test]
fn without_a_step_budget_a_call_runs_its_epochs() {
    let images = toy_images().narrow(0, 0, 64).unwrap();
    let config = TrainConfig {
        epochs: 3,
        max_steps: None,
        ..config(0)
    };
    let mut trainer = Trainer::new(config, &Device::Cpu).unwrap();
    let p = trainer.train(&images, 0, |_, _| Ok(())).unwrap();
    assert_eq!((p.call_steps, p.call_step, p.step), (6, 6, 6));
    assert_eq!((trainer.epoch, trainer.losses.len()), (3, 6));
}
