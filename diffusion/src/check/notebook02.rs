//! Notebook 02's exercises: `a_bar`, `q`, `reverse_q`, the loss and the sampling loop.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::judge::{broadcast_hint, Judge, Values};
use super::{Probe, Verdict};
use crate::network::NoisePredictor;
use crate::{Rng, Schedule};

fn fresh() -> Rng {
    Rng::from_entropy()
}

// ---------------------------------------------------------------------------------------------
// a_bar

fn cumprod(a: &[f64]) -> Values {
    let mut p = 1.0;
    Values::of_vec(
        &a.iter()
            .map(|x| {
                p *= x;
                p
            })
            .collect::<Vec<_>>(),
    )
}

/// Checks `a_bar(a)`, the cumulative product `a_bar[t] = a[0] a[1] ... a[t]`, on the course's
/// `a` and on random ones.
pub fn a_bar(student: impl Fn(&[f64]) -> Vec<f64>) -> Verdict {
    let course = Schedule::course(&Device::Cpu).map(|s| s.values().a.clone());
    let mut rng = fresh();
    let mut judge = Judge::new("a_bar", |a: &Vec<f64>| Ok(cumprod(a)))
        .mistake(
            "a_bar is the cumulative *product* of a (torch.cumprod), not its sum",
            |a| {
                let mut s = 0.0;
                Ok(Values::of_vec(
                    &a.iter()
                        .map(|x| {
                            s += x;
                            s
                        })
                        .collect::<Vec<_>>(),
                ))
            },
        )
        .mistake(
            "a_bar[t] includes a[t] itself: a_bar[0] = a[0], not 1",
            |a| {
                let mut p = 1.0;
                Ok(Values::of_vec(
                    &a.iter()
                        .map(|x| {
                            let before = p;
                            p *= x;
                            before
                        })
                        .collect::<Vec<_>>(),
                ))
            },
        )
        .mistake(
            "one value per timestep: a_bar[t] multiplies a[0] to a[t], not all of a",
            |a| {
                let all: f64 = a.iter().product();
                Ok(Values::of_vec(&vec![all; a.len()]))
            },
        );
    if let Ok(a) = course {
        judge = judge.case("the course's a, T = 150", a);
    }
    for len in [5, 12] {
        let a: Vec<f64> = (0..len).map(|_| 0.6 + 0.4 * rng.unit()).collect();
        judge = judge.case(format!("random a of length {len}"), a);
    }
    judge.run(|a| Ok(Values::of_vec(&student(a))))
}

// ---------------------------------------------------------------------------------------------
// q

/// One input of `q`: the schedule, `x_0`, the timesteps and the noise.
pub struct QInput {
    schedule: Schedule,
    x_0: Tensor,
    t: Tensor,
    noise: Tensor,
}

/// `x_t = c_x[t] x_0 + c_e[t] noise`, per image, computed element by element.
fn combine(i: &QInput, coeffs: impl Fn(&Schedule, usize) -> (f64, f64)) -> Result<Values> {
    let x = Values::of(&i.x_0)?;
    let e = Values::of(&i.noise)?;
    let t: Vec<u32> = i.t.to_vec1()?;
    let per = x.data.len() / t.len();
    let data = (0..x.data.len())
        .map(|k| {
            let (cx, ce) = coeffs(&i.schedule, t[k / per] as usize);
            cx * x.data[k] + ce * e.data[k]
        })
        .collect();
    Ok(Values {
        shape: x.shape,
        data,
    })
}

fn q_input(
    rng: &mut Rng,
    schedule: &Schedule,
    batch: usize,
    ts: Option<Vec<u32>>,
) -> Result<QInput> {
    let dev = Device::Cpu;
    let t = match ts {
        Some(ts) => Tensor::new(ts, &dev)?,
        None => rng.timesteps(batch, schedule.len(), &dev)?,
    };
    Ok(QInput {
        schedule: schedule.clone(),
        x_0: rng.uniform((batch, 1, 16, 16), 1.0, &dev)?,
        t,
        noise: rng.randn((batch, 1, 16, 16), &dev)?,
    })
}

/// Checks `q(schedule, x_0, t, noise)`, the closed form
/// `x_t = sqrt(a_bar[t]) x_0 + sqrt(1 - a_bar[t]) noise` with one timestep per image.
pub fn q(student: impl Fn(&Schedule, &Tensor, &Tensor, &Tensor) -> Result<Tensor>) -> Verdict {
    let mut rng = fresh();
    let mut judge = Judge::new("q", |i: &QInput| {
        Values::of(&crate::q_with_noise(&i.schedule, &i.x_0, &i.t, &i.noise)?)
    })
    .on_error(broadcast_hint)
    .mistake(super::judge::BROADCAST_HINT, |i| {
        // a [batch] coefficient multiplied as is lines up with the images' last axis (width)
        let v = i.schedule.values();
        let t: Vec<u32> = i.t.to_vec1()?;
        let x = Values::of(&i.x_0)?;
        let e = Values::of(&i.noise)?;
        let w = *x.shape.last().unwrap_or(&1);
        let data = (0..x.data.len())
            .map(|k| {
                let ti = t[(k % w) % t.len()] as usize;
                v.sqrt_a_bar[ti] * x.data[k] + v.sqrt_one_minus_a_bar[ti] * e.data[k]
            })
            .collect();
        Ok(Values {
            shape: x.shape,
            data,
        })
    })
    .mistake(
        "the closed form uses a_bar (the product up to t), not a",
        |i| {
            combine(i, |s, t| {
                let a = s.values().a[t];
                (a.sqrt(), (1.0 - a).sqrt())
            })
        },
    )
    .mistake(
        "the coefficients are square roots: sqrt(a_bar[t]) and sqrt(1 - a_bar[t])",
        |i| {
            combine(i, |s, t| {
                let a_bar = s.values().a_bar[t];
                (a_bar, 1.0 - a_bar)
            })
        },
    )
    .mistake(
        "sqrt(a_bar[t]) scales x_0 and sqrt(1 - a_bar[t]) the noise, not the other way round",
        |i| {
            combine(i, |s, t| {
                let v = s.values();
                (v.sqrt_one_minus_a_bar[t], v.sqrt_a_bar[t])
            })
        },
    );
    if let Ok(schedule) = Schedule::course(&Device::Cpu) {
        let last = schedule.len() as u32 - 1;
        let cases = [
            ("batch 16 (as wide as an image), random t", 16, None),
            ("batch 3, t = 0, 75 and T-1", 3, Some(vec![0, 75, last])),
            ("batch 1, random t", 1, None),
        ];
        for (label, batch, ts) in cases {
            match q_input(&mut rng, &schedule, batch, ts) {
                Ok(input) => judge = judge.case(label, input),
                Err(e) => eprintln!("could not make the inputs of q: {e:#}"),
            }
        }
    }
    judge.run(|i| Values::of(&student(&i.schedule, &i.x_0, &i.t, &i.noise)?))
}

// ---------------------------------------------------------------------------------------------
// reverse_q

/// One input of `reverse_q`: the schedule, `x_t`, `t`, the predicted noise and the fresh noise.
pub struct ReverseInput {
    schedule: Schedule,
    x_t: Tensor,
    t: usize,
    e_t: Tensor,
    z: Tensor,
}

/// `sqrt_a_inv[t] (x_t - pred_noise_coeff[t] e_t) + sigma z`, element by element.
fn reverse_with(i: &ReverseInput, sigma: f64) -> Result<Values> {
    let v = i.schedule.values();
    let x = Values::of(&i.x_t)?;
    let e = Values::of(&i.e_t)?;
    let z = Values::of(&i.z)?;
    let data = (0..x.data.len())
        .map(|k| {
            v.sqrt_a_inv[i.t] * (x.data[k] - v.pred_noise_coeff[i.t] * e.data[k])
                + sigma * z.data[k]
        })
        .collect();
    Ok(Values {
        shape: x.shape,
        data,
    })
}

/// Checks `reverse_q(schedule, x_t, t, e_t, z)`, one reverse step:
/// `u_t = sqrt_a_inv[t] (x_t - pred_noise_coeff[t] e_t)`, then `u_t + sqrt(B[t-1]) z` for
/// `t > 0` and `u_0` at `t = 0`.
pub fn reverse_q(
    student: impl Fn(&Schedule, &Tensor, usize, &Tensor, &Tensor) -> Result<Tensor>,
) -> Verdict {
    let mut rng = fresh();
    let mut judge = Judge::new("reverse_q", |i: &ReverseInput| {
        Values::of(&crate::reverse_q_with_noise(&i.schedule, &i.x_t, i.t, &i.e_t, &i.z)?)
    })
    .on_error(broadcast_hint)
    .mistake(
        "t = 0 is the last step: return the mean u_0 and add no noise",
        |i| {
            let b = i.schedule.values().b[i.t];
            if i.t == 0 { reverse_with(i, b.sqrt()) } else { anyhow::bail!("only at t = 0") }
        },
    )
    .mistake(
        "the course adds noise with the variance of the step before: sqrt(B[t-1]), not sqrt(B[t])",
        |i| reverse_with(i, if i.t == 0 { 0.0 } else { i.schedule.values().b[i.t].sqrt() }),
    )
    .mistake(
        "the noise's scale is the standard deviation sqrt(B[t-1]), not the variance B[t-1]",
        |i| reverse_with(i, if i.t == 0 { 0.0 } else { i.schedule.values().b[i.t - 1] }),
    )
    .mistake(
        "u_t subtracts the predicted noise first, then scales: sqrt_a_inv[t] * (x_t - pred_noise_coeff[t] * e_t)",
        |i| {
            let v = i.schedule.values();
            let x = Values::of(&i.x_t)?;
            let e = Values::of(&i.e_t)?;
            let z = Values::of(&i.z)?;
            let sigma = if i.t == 0 { 0.0 } else { v.b[i.t - 1].sqrt() };
            let data = (0..x.data.len())
                .map(|k| v.sqrt_a_inv[i.t] * x.data[k] - v.pred_noise_coeff[i.t] * e.data[k] + sigma * z.data[k])
                .collect();
            Ok(Values { shape: x.shape, data })
        },
    );
    if let Ok(schedule) = Schedule::course(&Device::Cpu) {
        let dev = Device::Cpu;
        let middle = 1 + rng.below(schedule.len() - 2).unwrap_or(0);
        for t in [0, 1, middle, schedule.len() - 1] {
            let input = (|| -> Result<ReverseInput> {
                Ok(ReverseInput {
                    schedule: schedule.clone(),
                    x_t: rng.randn((4, 1, 16, 16), &dev)?,
                    t,
                    e_t: rng.randn((4, 1, 16, 16), &dev)?,
                    z: rng.randn((4, 1, 16, 16), &dev)?,
                })
            })();
            if let Ok(input) = input {
                judge = judge.case(format!("batch 4, t = {t}"), input);
            }
        }
    }
    judge.run(|i| Values::of(&student(&i.schedule, &i.x_t, i.t, &i.e_t, &i.z)?))
}

// ---------------------------------------------------------------------------------------------
// get_loss

/// One input of the loss: a probe network, the schedule, `x_0`, `t` and the noise.
pub struct LossInput {
    q: QInput,
}

/// The loss computed element by element from the probe's formula, with a choice of what the
/// network sees, what it is compared with and how.
fn loss_with(
    i: &LossInput,
    feed_x0: bool,
    target_x0: bool,
    train: bool,
    squared: bool,
    mean: bool,
) -> Result<Values> {
    let x_t = combine(&i.q, |s, t| {
        let v = s.values();
        (v.sqrt_a_bar[t], v.sqrt_one_minus_a_bar[t])
    })?;
    let x_0 = Values::of(&i.q.x_0)?;
    let e = Values::of(&i.q.noise)?;
    let t: Vec<u32> = i.q.t.to_vec1()?;
    let per = x_t.data.len() / t.len();
    let mut total = 0.0;
    for k in 0..x_t.data.len() {
        let seen = if feed_x0 { x_0.data[k] } else { x_t.data[k] };
        let pred = Probe::formula(seen, f64::from(t[k / per]), train);
        let target = if target_x0 { x_0.data[k] } else { e.data[k] };
        let d = pred - target;
        total += if squared { d * d } else { d.abs() };
    }
    if mean {
        total /= x_t.data.len() as f64;
    }
    Ok(Values::of_vec(&[total]))
}

/// Checks `get_loss(model, schedule, x_0, t, noise)`: noise `x_0` to `x_t` with the given noise,
/// let the network (in training mode) predict the noise, and return the mean squared error. The
/// network is a [`Probe`] whose prediction is known.
pub fn get_loss(
    student: impl Fn(&Probe, &Schedule, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Verdict {
    let mut rng = fresh();
    let mut judge = Judge::new("get_loss", |i: &LossInput| {
        loss_with(i, false, false, true, true, true)
    })
    .on_error(broadcast_hint)
    .mistake(
        "the network's target is the noise that was added, not x_0",
        |i| loss_with(i, false, true, true, true, true),
    )
    .mistake(
        "the network sees the noisy x_t = q(x_0, t), not the clean x_0",
        |i| loss_with(i, true, false, true, true, true),
    )
    .mistake(
        "the loss is the *mean* squared error (F.mse_loss), not the sum",
        |i| loss_with(i, false, false, true, true, false),
    )
    .mistake(
        "the loss squares the error (mean squared error), not its absolute value",
        |i| loss_with(i, false, false, true, false, true),
    )
    .mistake(
        "during training the network runs in training mode: predict_noise(&x_t, t, true)",
        |i| loss_with(i, false, false, false, true, true),
    );
    if let Ok(schedule) = Schedule::course(&Device::Cpu) {
        for batch in [8, 2] {
            if let Ok(q) = q_input(&mut rng, &schedule, batch, None) {
                judge = judge.case(format!("batch {batch}, random t"), LossInput { q });
            }
        }
    }
    judge.run(|i| {
        let probe = Probe::new([1, 16, 16], i.q.schedule.len());
        let loss = student(&probe, &i.q.schedule, &i.q.x_0, &i.q.t, &i.q.noise)?;
        let n = loss.elem_count();
        if n != 1 {
            anyhow::bail!(
                "the loss must be one number (a scalar tensor), got shape {:?}",
                loss.dims()
            );
        }
        Ok(Values::of_vec(&[
            loss.flatten_all()?.to_vec1::<f32>()?[0].into()
        ]))
    })
}

// ---------------------------------------------------------------------------------------------
// sample

/// One input of the sampling loop: a short schedule, the starting noise, and the seed of the
/// noise drawn along the way.
pub struct SampleInput {
    schedule: Schedule,
    x_start: Tensor,
    seed: u64,
}

/// The loop run with the probe: `order` of the timesteps, `train` mode, the noise of each step
/// drawn from the seed's generator before the step (at `t = 0` too when `draw_at_zero`, as a loop
/// that always draws does; `diffusion::reverse_q` does not).
fn sample_with(
    i: &SampleInput,
    order: &[usize],
    train: bool,
    draw_at_zero: bool,
) -> Result<Values> {
    let probe = Probe::new([1, 4, 4], i.schedule.len());
    let mut rng = Rng::new(i.seed);
    let mut x = i.x_start.clone();
    for &t in order {
        let t_batch = Tensor::full(t as u32, x.dim(0)?, x.device())?;
        let e_t = probe.predict_noise(&x, &t_batch, train)?;
        let z = if t > 0 || draw_at_zero {
            rng.randn_like(&x)?
        } else {
            x.zeros_like()?
        };
        x = crate::reverse_q_with_noise(&i.schedule, &x, t, &e_t, &z)?;
    }
    Values::of(&x)
}

fn down(i: &SampleInput) -> Vec<usize> {
    (0..i.schedule.len()).rev().collect()
}

fn up(i: &SampleInput) -> Vec<usize> {
    (0..i.schedule.len()).collect()
}

const ORDER_HINT: &str = "the reverse process runs t = T-1, T-2, ..., 0: `for t in (0..T).rev()`";

/// Checks `sample(model, schedule, x_T, rng)`, the reverse process: for `t = T-1` down to `0`,
/// predict the noise in evaluation mode and take one `reverse_q` step (drawing its noise from
/// `rng`). Run with a [`Probe`] and a 10-step schedule.
pub fn sample(student: impl Fn(&Probe, &Schedule, Tensor, &mut Rng) -> Result<Tensor>) -> Verdict {
    let mut rng = fresh();
    let steps = 10;
    let mut judge = Judge::new("sample", |i: &SampleInput| {
        sample_with(i, &down(i), false, false)
    })
    .mistake(ORDER_HINT, |i| sample_with(i, &up(i), false, true))
    .mistake(ORDER_HINT, |i| sample_with(i, &up(i), false, false))
    .mistake(
        "sampling runs the network in evaluation mode: predict_noise(&x, &t, false)",
        |i| sample_with(i, &down(i), true, false),
    )
    .mistake(
        "the last step is t = 0: the loop must include it (`(0..T).rev()`, not `(1..T).rev()`)",
        |i| sample_with(i, &down(i)[..i.schedule.len() - 1], false, false),
    );
    if let Ok(schedule) = Schedule::linear(steps, 0.0001, 0.02, &Device::Cpu) {
        for n in [2, 1] {
            if let Ok(x_start) = rng.randn((n, 1, 4, 4), &Device::Cpu) {
                let seed = rng.below(1 << 30).unwrap_or(1) as u64;
                judge = judge.case(
                    format!("{n} image(s) of 1 x 4 x 4, T = {steps}"),
                    SampleInput {
                        schedule: schedule.clone(),
                        x_start,
                        seed,
                    },
                );
            }
        }
    }
    judge.run(|i| {
        let probe = Probe::new([1, 4, 4], i.schedule.len());
        let mut rng = Rng::new(i.seed);
        Values::of(&student(&probe, &i.schedule, i.x_start.clone(), &mut rng)?)
    })
}
