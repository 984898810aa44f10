//! The samplers' mathematics, checked on a network whose output is known: `e(x_t, t) = c x_t`.
//! The expected images are computed here in f64 from the formulas (the course's DDPM step and
//! DDIM with eta = 0) and a schedule built here from its definition, with the same normal draws
//! in the same order (the starting noise, then one draw per step for t > 0).

use std::cell::RefCell;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use diffusion::{
    sample_ddim, sample_images, sample_images_from, Network, NoisePredictor, Rng, Schedule,
};

const T: usize = 150;
const SHAPE: (usize, usize, usize, usize) = (3, 1, 2, 2);

/// `e = c x_t`; remembers each call's timestep and mode.
struct Scaled {
    c: f64,
    calls: RefCell<Vec<(u32, bool)>>,
}

impl Network for Scaled {
    type Config = ();
    fn build(_: (), _: VarBuilder) -> Result<Self> {
        bail!("not built from weights")
    }
    fn config(&self) {}
    fn image_shape(&self) -> [usize; 3] {
        [SHAPE.1, SHAPE.2, SHAPE.3]
    }
}

impl NoisePredictor for Scaled {
    fn steps(&self) -> usize {
        T
    }
    fn predict_noise(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        let ts = t.to_vec1::<u32>()?;
        assert!(ts.iter().all(|&v| v == ts[0]), "one timestep per call");
        self.calls.borrow_mut().push((ts[0], train));
        Ok((x_t * self.c)?)
    }
}

/// `(B, a, a_bar)` of the course's linear schedule, from its definition.
fn schedule_f64() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let b: Vec<f64> = (0..T)
        .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / (T - 1) as f64)
        .collect();
    let a: Vec<f64> = b.iter().map(|b| 1.0 - b).collect();
    let a_bar = a
        .iter()
        .scan(1.0, |p, a| {
            *p *= a;
            Some(*p)
        })
        .collect();
    (b, a, a_bar)
}

fn values(t: &Tensor) -> Vec<f64> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.into_iter().map(f64::from).collect()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn ddpm_sampling_is_the_course_step_from_t_149_down_to_0_in_evaluation_mode() {
    let dev = Device::Cpu;
    let net = Scaled {
        c: 0.3,
        calls: RefCell::new(vec![]),
    };
    let schedule = Schedule::course(&dev).unwrap();
    let got = sample_images(&net, &schedule, SHAPE.0, 0, &mut Rng::new(5)).unwrap();

    let (b, a, a_bar) = schedule_f64();
    let mut rng = Rng::new(5);
    let mut x = values(&rng.randn(SHAPE, &dev).unwrap());
    for t in (0..T).rev() {
        let coef = (1.0 - a[t]) / (1.0 - a_bar[t]).sqrt();
        let u: Vec<f64> = x
            .iter()
            .map(|x| (x - coef * 0.3 * x) / a[t].sqrt())
            .collect();
        x = if t > 0 {
            let z = values(&rng.randn(SHAPE, &dev).unwrap());
            u.iter()
                .zip(&z)
                .map(|(u, z)| u + b[t - 1].sqrt() * z)
                .collect()
        } else {
            u
        };
    }
    let e = max_rel(&values(&got.images), &x);
    assert!(e < 1e-4, "DDPM images off the formula by {e:e}");
    // no columns asked: the starting noise is the only frame
    assert_eq!(got.frame_steps, [None]);
    assert_eq!(got.frames.len(), 1);

    let calls = net.calls.borrow();
    let order: Vec<u32> = calls.iter().map(|c| c.0).collect();
    assert_eq!(order, (0..T as u32).rev().collect::<Vec<_>>());
    assert!(
        calls.iter().all(|c| !c.1),
        "sampling runs the network in evaluation mode"
    );
}

#[test]
fn ddim_sampling_is_the_eta_0_update_on_evenly_spaced_steps() {
    let dev = Device::Cpu;
    let steps = 10;
    let net = Scaled {
        c: 0.5,
        calls: RefCell::new(vec![]),
    };
    let schedule = Schedule::course(&dev).unwrap();
    let got = sample_ddim(&net, &schedule, SHAPE.0, steps, &mut Rng::new(9)).unwrap();

    let (_, _, a_bar) = schedule_f64();
    let ts: Vec<usize> = (0..steps)
        .rev()
        .map(|i| (i as f64 * (T - 1) as f64 / (steps - 1) as f64).round() as usize)
        .collect();
    let mut x = values(&Rng::new(9).randn(SHAPE, &dev).unwrap());
    for (i, &t) in ts.iter().enumerate() {
        let prev = ts.get(i + 1).map(|&p| a_bar[p]).unwrap_or(1.0);
        x = x
            .iter()
            .map(|x| {
                let e = 0.5 * x;
                let x0 = ((x - (1.0 - a_bar[t]).sqrt() * e) / a_bar[t].sqrt()).clamp(-1.0, 1.0);
                prev.sqrt() * x0 + (1.0 - prev).sqrt() * e
            })
            .collect();
    }
    let e = max_rel(&values(&got.images), &x);
    assert!(e < 1e-4, "DDIM images off the formula by {e:e}");

    let calls = net.calls.borrow();
    let order: Vec<usize> = calls.iter().map(|c| c.0 as usize).collect();
    assert_eq!(order, ts);
    assert_eq!(ts.first(), Some(&(T - 1)));
    assert_eq!(ts.last(), Some(&0));
    assert!(
        calls.iter().all(|c| !c.1),
        "sampling runs the network in evaluation mode"
    );
}

/// `sample_images_from` asks for a step's noise for t = T-1, ..., 1 (none at t = 0, which adds
/// none) and keeps a snapshot after each strip step (15 columns: t = 140, 130, ..., 0).
#[test]
fn the_given_noise_is_asked_for_t_above_0_and_snapshots_follow_the_strip_steps() {
    let dev = Device::Cpu;
    let net = Scaled {
        c: 0.3,
        calls: RefCell::new(vec![]),
    };
    let schedule = Schedule::course(&dev).unwrap();
    let start = Rng::new(1).randn(SHAPE, &dev).unwrap();
    let mut asked = vec![];
    let got = sample_images_from(&net, &schedule, start.clone(), 15, |t, x| {
        asked.push(t);
        Ok(x.zeros_like()?)
    })
    .unwrap();
    assert_eq!(asked, (1..T).rev().collect::<Vec<_>>());
    let strip: Vec<Option<usize>> = (0..15).rev().map(|k| Some(10 * k)).collect();
    assert_eq!(got.frame_steps[0], None);
    assert_eq!(got.frame_steps[1..], strip[..]);
    assert_eq!(got.frames.len(), 16);
    assert_eq!(values(&got.frames[0]), values(&start));
    assert_eq!(values(&got.frames[15]), values(&got.images));
}
