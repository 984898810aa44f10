//! `DIFFUSION_MAX_STEPS` caps every call of `Trainer::train` (the notebooks' headless tests rely
//! on it). Its own test binary: the variable is process-wide, and no other test may see it.

use candle_core::Device;
use diffusion::{Rng, TrainConfig, Trainer};

#[test]
fn the_environment_caps_the_steps_of_each_call() {
    let images = Rng::new(0).randn((64, 1, 16, 16), &Device::Cpu).unwrap();
    let config = TrainConfig {
        batch_size: 16,
        epochs: 2,
        ..TrainConfig::course()
    };
    let mut trainer = Trainer::new(config, &Device::Cpu).unwrap();

    std::env::set_var("DIFFUSION_MAX_STEPS", "3");
    let p = trainer.train(&images, 0, |_, _| Ok(())).unwrap();
    assert_eq!((p.call_steps, trainer.step), (3, 3));

    std::env::set_var("DIFFUSION_MAX_STEPS", "many");
    let e = trainer.train(&images, 0, |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("DIFFUSION_MAX_STEPS"), "{e}");
    assert_eq!(trainer.step, 3, "a bad value trains nothing");

    std::env::remove_var("DIFFUSION_MAX_STEPS");
    let p = trainer.train(&images, 0, |_, _| Ok(())).unwrap();
    assert_eq!(p.call_steps, 8, "unset: 2 epochs of 64 / 16 = 4 steps");
    assert_eq!(trainer.step, 11);
}
