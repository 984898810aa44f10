//! `diffusion::check`: every check passes a right answer written as a student would write it, and
//! fails each listed mistake with that mistake's hint; a panicking or unfinished answer is a
//! failure that names the panic, not a panic of the check.

use anyhow::Result;
use candle_core::{Module, Tensor};
use diffusion::check::{self, Probe, Verdict};
use diffusion::notebook02::EmbedBlock;
use diffusion::{NoisePredictor, Rng, Schedule};

fn assert_pass(v: Verdict) {
    assert!(v.is_pass(), "expected a pass, got:\n{v}");
    assert!(v.total >= 1, "a check without cases: {v:?}");
    assert_eq!(v.credit(), 1.0);
}

/// The verdict fails and its first failure's hint contains `hint`.
fn assert_fails_with(v: Verdict, hint: &str) {
    assert!(
        !v.is_pass(),
        "expected a failure with hint {hint:?}, got a pass:\n{v}"
    );
    let failure = v
        .failure
        .as_ref()
        .expect("a failed verdict names its first failure");
    let given = failure.hint.as_deref().unwrap_or("");
    assert!(
        given.contains(hint),
        "expected the hint to contain {hint:?}, got:\n{v}"
    );
    assert!(v.credit() < 1.0);
}

// ------------------------------------------------------------------ notebook 02

fn a_bar_right(a: &[f64]) -> Vec<f64> {
    let mut p = 1.0;
    a.iter()
        .map(|x| {
            p *= x;
            p
        })
        .collect()
}

#[test]
fn a_bar_passes_the_cumulative_product_and_names_the_usual_mistakes() {
    assert_pass(check::a_bar(a_bar_right));
    assert_fails_with(
        check::a_bar(|a| {
            let mut s = 0.0;
            a.iter()
                .map(|x| {
                    s += x;
                    s
                })
                .collect()
        }),
        "cumulative *product*",
    );
    assert_fails_with(
        check::a_bar(|a| {
            let mut p = 1.0;
            a.iter()
                .map(|x| {
                    let b = p;
                    p *= x;
                    b
                })
                .collect()
        }),
        "a_bar[0] = a[0]",
    );
    assert_fails_with(
        check::a_bar(|a| vec![a.iter().product(); a.len()]),
        "one value per timestep",
    );
}

fn q_right(s: &Schedule, x_0: &Tensor, t: &Tensor, noise: &Tensor) -> Result<Tensor> {
    let n = x_0.dim(0)?;
    let c_x = s.sqrt_a_bar.index_select(t, 0)?.reshape((n, 1, 1, 1))?;
    let c_e = s
        .sqrt_one_minus_a_bar
        .index_select(t, 0)?
        .reshape((n, 1, 1, 1))?;
    Ok((x_0.broadcast_mul(&c_x)? + noise.broadcast_mul(&c_e)?)?)
}

/// `q` with the coefficients taken from `coeffs` (per image, shaped for broadcasting).
fn q_from(x_0: &Tensor, t: &Tensor, noise: &Tensor, coeffs: (&Tensor, &Tensor)) -> Result<Tensor> {
    let n = x_0.dim(0)?;
    let c_x = coeffs.0.index_select(t, 0)?.reshape((n, 1, 1, 1))?;
    let c_e = coeffs.1.index_select(t, 0)?.reshape((n, 1, 1, 1))?;
    Ok((x_0.broadcast_mul(&c_x)? + noise.broadcast_mul(&c_e)?)?)
}

#[test]
fn q_passes_the_closed_form_and_names_the_usual_mistakes() {
    assert_pass(check::q(q_right));
    // the [batch] coefficient multiplied without reshaping: an error for most batches, silently
    // wrong when the batch equals the image width
    assert_fails_with(
        check::q(|s, x_0, t, noise| {
            let c_x = s.sqrt_a_bar.index_select(t, 0)?;
            let c_e = s.sqrt_one_minus_a_bar.index_select(t, 0)?;
            Ok((x_0.broadcast_mul(&c_x)? + noise.broadcast_mul(&c_e)?)?)
        }),
        "reshape it to [batch, 1, 1, 1]",
    );
    assert_fails_with(
        check::q(|s, x_0, t, noise| {
            let sqrt_a = s.a.sqrt()?;
            let sqrt_1_a = (1.0 - &s.a)?.sqrt()?;
            q_from(x_0, t, noise, (&sqrt_a, &sqrt_1_a))
        }),
        "uses a_bar",
    );
    assert_fails_with(
        check::q(|s, x_0, t, noise| {
            let one_minus = (1.0 - &s.a_bar)?;
            q_from(x_0, t, noise, (&s.a_bar, &one_minus))
        }),
        "square roots",
    );
    assert_fails_with(
        check::q(|s, x_0, t, noise| {
            q_from(x_0, t, noise, (&s.sqrt_one_minus_a_bar, &s.sqrt_a_bar))
        }),
        "not the other way round",
    );
}

fn reverse_q_right(
    s: &Schedule,
    x_t: &Tensor,
    t: usize,
    e_t: &Tensor,
    z: &Tensor,
) -> Result<Tensor> {
    let v = s.values();
    let u_t = ((x_t - (e_t * v.pred_noise_coeff[t])?)? * v.sqrt_a_inv[t])?;
    if t == 0 {
        return Ok(u_t);
    }
    Ok((u_t + (z * v.b[t - 1].sqrt())?)?)
}

/// The reverse step with the noise scaled by `sigma(t)`.
fn reverse_q_sigma(
    s: &Schedule,
    x_t: &Tensor,
    t: usize,
    e_t: &Tensor,
    z: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    let v = s.values();
    let u_t = ((x_t - (e_t * v.pred_noise_coeff[t])?)? * v.sqrt_a_inv[t])?;
    Ok((u_t + (z * sigma)?)?)
}

#[test]
fn reverse_q_passes_the_course_step_and_names_the_usual_mistakes() {
    assert_pass(check::reverse_q(reverse_q_right));
    // B[t] at every step: the first case, t = 0, gets noise
    assert_fails_with(
        check::reverse_q(|s, x, t, e, z| reverse_q_sigma(s, x, t, e, z, s.values().b[t].sqrt())),
        "add no noise",
    );
    // B[t] for t > 0 but no noise at t = 0
    assert_fails_with(
        check::reverse_q(|s, x, t, e, z| {
            let sigma = if t == 0 { 0.0 } else { s.values().b[t].sqrt() };
            reverse_q_sigma(s, x, t, e, z, sigma)
        }),
        "sqrt(B[t-1]), not sqrt(B[t])",
    );
    assert_fails_with(
        check::reverse_q(|s, x, t, e, z| {
            let sigma = if t == 0 { 0.0 } else { s.values().b[t - 1] };
            reverse_q_sigma(s, x, t, e, z, sigma)
        }),
        "not the variance",
    );
    assert_fails_with(
        check::reverse_q(|s, x, t, e, z| {
            let v = s.values();
            let u_t = ((x * v.sqrt_a_inv[t])? - (e * v.pred_noise_coeff[t])?)?;
            if t == 0 {
                return Ok(u_t);
            }
            Ok((u_t + (z * v.b[t - 1].sqrt())?)?)
        }),
        "subtracts the predicted noise first",
    );
}

fn get_loss_right<M: NoisePredictor>(
    model: &M,
    s: &Schedule,
    x_0: &Tensor,
    t: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let x_t = q_right(s, x_0, t, noise)?;
    let noise_pred = model.predict_noise(&x_t, t, true)?;
    Ok((noise_pred - noise)?.sqr()?.mean_all()?)
}

#[test]
fn get_loss_passes_the_mean_squared_error_and_names_the_usual_mistakes() {
    assert_pass(check::get_loss(get_loss_right));
    assert_fails_with(
        check::get_loss(|m: &Probe, s, x_0, t, noise| {
            let pred = m.predict_noise(&q_right(s, x_0, t, noise)?, t, true)?;
            Ok((pred - x_0)?.sqr()?.mean_all()?)
        }),
        "not x_0",
    );
    assert_fails_with(
        check::get_loss(|m: &Probe, _s, x_0, t, noise| {
            let pred = m.predict_noise(x_0, t, true)?;
            Ok((pred - noise)?.sqr()?.mean_all()?)
        }),
        "sees the noisy x_t",
    );
    assert_fails_with(
        check::get_loss(|m: &Probe, s, x_0, t, noise| {
            let pred = m.predict_noise(&q_right(s, x_0, t, noise)?, t, true)?;
            Ok((pred - noise)?.sqr()?.sum_all()?)
        }),
        "*mean* squared error",
    );
    assert_fails_with(
        check::get_loss(|m: &Probe, s, x_0, t, noise| {
            let pred = m.predict_noise(&q_right(s, x_0, t, noise)?, t, true)?;
            Ok((pred - noise)?.abs()?.mean_all()?)
        }),
        "squares the error",
    );
    assert_fails_with(
        check::get_loss(|m: &Probe, s, x_0, t, noise| {
            let pred = m.predict_noise(&q_right(s, x_0, t, noise)?, t, false)?;
            Ok((pred - noise)?.sqr()?.mean_all()?)
        }),
        "training mode",
    );
}

/// The sampling loop over the timesteps `ts`, in mode `train`.
fn sample_over<M: NoisePredictor>(
    model: &M,
    s: &Schedule,
    x_start: Tensor,
    rng: &mut Rng,
    ts: Vec<usize>,
    train: bool,
) -> Result<Tensor> {
    let mut x = x_start;
    for t in ts {
        let t_batch = Tensor::full(t as u32, x.dim(0)?, x.device())?;
        let e_t = model.predict_noise(&x, &t_batch, train)?;
        let z = rng.randn_like(&x)?;
        x = reverse_q_right(s, &x, t, &e_t, &z)?;
    }
    Ok(x)
}

#[test]
fn sample_passes_the_reverse_process_and_names_the_usual_mistakes() {
    assert_pass(check::sample(|m, s, x, rng| {
        sample_over(m, s, x, rng, (0..s.len()).rev().collect(), false)
    }));
    // the crate's own reverse_q, as a student may call it, passes as well
    assert_pass(check::sample(|m, s, x, rng| {
        let mut x = x;
        for t in (0..s.len()).rev() {
            let t_batch = Tensor::full(t as u32, x.dim(0)?, x.device())?;
            let e_t = m.predict_noise(&x, &t_batch, false)?;
            x = diffusion::reverse_q(s, &x, t, &e_t, rng)?;
        }
        Ok(x)
    }));
    assert_fails_with(
        check::sample(|m, s, x, rng| sample_over(m, s, x, rng, (0..s.len()).collect(), false)),
        "t = T-1, T-2, ..., 0",
    );
    assert_fails_with(
        check::sample(|m, s, x, rng| sample_over(m, s, x, rng, (0..s.len()).rev().collect(), true)),
        "evaluation mode",
    );
    assert_fails_with(
        check::sample(|m, s, x, rng| {
            sample_over(m, s, x, rng, (1..s.len()).rev().collect(), false)
        }),
        "must include it",
    );
}

// ------------------------------------------------------------------ notebook 03

#[test]
fn group_sizes_pass_the_course_and_explain_counts_and_divisibility() {
    assert_pass(check::group_sizes(|| (8, 32)));
    assert_fails_with(check::group_sizes(|| (6, 24)), "do not divide");
    assert_fails_with(check::group_sizes(|| (8, 2)), "number of groups");
    let half = check::group_sizes(|| (8, 16));
    assert_eq!((half.passed, half.total), (1, 2), "{half}");
    assert!((half.credit() - 0.5).abs() < 1e-12);
}

fn sinusoidal_right(time: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let scale = 10000f64.ln() / (half - 1) as f64;
    let f: Vec<f32> = (0..half)
        .map(|k| (-(k as f64) * scale).exp() as f32)
        .collect();
    let f = Tensor::from_vec(f, (1, half), time.device())?;
    let e = time.unsqueeze(1)?.broadcast_mul(&f)?;
    Ok(Tensor::cat(&[e.sin()?, e.cos()?], 1)?)
}

#[test]
fn sinusoidal_passes_the_course_embedding_and_names_the_usual_mistakes() {
    assert_pass(check::sinusoidal(sinusoidal_right));
    assert_fails_with(
        check::sinusoidal(|time, dim| {
            let e = sinusoidal_right(time, dim)?; // [N, dim] = [sin | cos]
            let (n, half) = (e.dim(0)?, dim / 2);
            let sin = e.narrow(1, 0, half)?.unsqueeze(2)?;
            let cos = e.narrow(1, half, half)?.unsqueeze(2)?;
            Ok(Tensor::cat(&[sin, cos], 2)?.reshape((n, dim))?) // sin0 cos0 sin1 cos1 ...
        }),
        "instead of interleaving",
    );
    assert_fails_with(
        check::sinusoidal(|time, dim| {
            let e = sinusoidal_right(time, dim)?;
            let half = dim / 2;
            Ok(Tensor::cat(
                &[e.narrow(1, half, half)?, e.narrow(1, 0, half)?],
                1,
            )?)
        }),
        "sines come first",
    );
    assert_fails_with(
        check::sinusoidal(|time, dim| {
            let half = dim / 2;
            let scale = 10000f64.ln() / half as f64;
            let f: Vec<f32> = (0..half)
                .map(|k| (-(k as f64) * scale).exp() as f32)
                .collect();
            let e = time.unsqueeze(1)?.broadcast_mul(&Tensor::from_vec(
                f,
                (1, half),
                time.device(),
            )?)?;
            Ok(Tensor::cat(&[e.sin()?, e.cos()?], 1)?)
        }),
        "half_dim - 1",
    );
}

fn embed_with(
    b: &EmbedBlock,
    x: &Tensor,
    act: fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let h = b.lin2.forward(&act(&b.lin1.forward(x)?)?)?;
    let (n, e) = h.dims2()?;
    Ok(h.reshape((n, e, 1, 1))?)
}

#[test]
fn embed_block_passes_the_course_forward_and_names_the_usual_mistakes() {
    assert_pass(check::embed_block(|b, x| {
        embed_with(b, x, |x| x.gelu_erf())
    }));
    assert_fails_with(
        check::embed_block(|b, x| embed_with(b, x, |x| x.relu())),
        "not ReLU",
    );
    assert_fails_with(
        check::embed_block(|b, x| embed_with(b, x, |x| x.gelu())),
        "gelu_erf",
    );
    assert_fails_with(
        check::embed_block(|b, x| Ok(b.lin2.forward(&b.lin1.forward(x)?.gelu_erf()?)?)),
        "unflattened",
    );
}

#[test]
fn up_block_passes_the_course_forward_and_names_the_usual_mistakes() {
    let forward = |b: &diffusion::notebook03::UpBlock,
                   first: &Tensor,
                   second: &Tensor,
                   dim: usize,
                   train: bool|
     -> Result<Tensor> {
        let mut x = b.up.forward(&Tensor::cat(&[first, second], dim)?)?;
        for conv in &b.convs {
            x = conv.forward(&x, train)?;
        }
        Ok(x)
    };
    assert_pass(check::up_block(|b, x, skip, train| {
        forward(b, x, skip, 1, train)
    }));
    assert_fails_with(
        check::up_block(|b, x, skip, train| forward(b, skip, x, 1, train)),
        "(x, skip) in that order",
    );
    assert_fails_with(
        check::up_block(|b, x, skip, train| forward(b, x, skip, 0, train)),
        "channel axis",
    );
}

// ------------------------------------------------------------------ notebook 04

fn mask_right(c: &Tensor, drop_prob: f64, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    let c_hot = diffusion::notebook04::one_hot(c, 10)?;
    let keep: Vec<f32> = (0..c_hot.elem_count())
        .map(|_| f32::from(u8::from(rng.unit() >= drop_prob)))
        .collect();
    let c_mask = Tensor::from_vec(keep, c_hot.shape(), c.device())?;
    Ok((c_hot, c_mask))
}

#[test]
fn context_mask_passes_the_course_mask_and_names_the_usual_mistakes() {
    assert_pass(check::context_mask(mask_right));
    assert_pass(check::context_mask(|c, p, rng| {
        diffusion::notebook04::get_context_mask(c, p, rng)
    }));
    // inverted: 1 where the context is dropped
    assert_fails_with(
        check::context_mask(|c, p, rng| mask_right(c, 1.0 - p, rng)),
        "where the context is *kept*",
    );
    // one draw per image
    assert_fails_with(
        check::context_mask(|c, p, rng| {
            let (hot, _) = mask_right(c, p, rng)?;
            let n = c.dim(0)?;
            let rows: Vec<f32> = (0..n)
                .flat_map(|_| vec![f32::from(u8::from(rng.unit() >= p)); 10])
                .collect();
            Ok((hot, Tensor::from_vec(rows, (n, 10), c.device())?))
        }),
        "per element",
    );
    // the context is the label itself, not one-hot
    let v = check::context_mask(|c, p, rng| {
        let (_, mask) = mask_right(c, p, rng)?;
        Ok((c.to_dtype(candle_core::DType::F32)?, mask))
    });
    assert_fails_with(v.clone(), "F.one_hot");
    assert_eq!(v.passed, 3, "the mask itself is right: {v}");
}

#[test]
fn guided_noise_passes_the_course_formula_and_names_the_usual_mistakes() {
    let mix =
        |k: &Tensor, d: &Tensor, a: f64, b: f64| -> Result<Tensor> { Ok(((k * a)? + (d * b)?)?) };
    assert_pass(check::guided_noise(|k, d, w| mix(k, d, 1.0 + w, -w)));
    assert_fails_with(
        check::guided_noise(|k, d, w| mix(k, d, -w, 1.0 + w)),
        "*with* the class",
    );
    assert_fails_with(
        check::guided_noise(|k, d, w| mix(k, d, w, 1.0 - w)),
        "not an average",
    );
    assert_fails_with(
        check::guided_noise(|k, d, w| mix(k, d, 1.0 + w, w)),
        "is subtracted",
    );
    assert_fails_with(
        check::guided_noise(|k, d, w| mix(k, d, w, -w)),
        "1 + w, not w",
    );
}

// ------------------------------------------------------------------ notebook 01

#[test]
fn notebook01_blocks_pass_the_course_forward_and_name_the_usual_mistakes() {
    use diffusion::layers::max_pool2x2;
    assert_pass(check::down_block01(|b, x, train| {
        let x = b.second.forward_t(&b.first.forward_t(x, train)?, train)?;
        Ok(max_pool2x2(&x)?)
    }));
    assert_fails_with(
        check::down_block01(|b, x, train| {
            let x = max_pool2x2(x)?;
            b.second.forward_t(&b.first.forward_t(&x, train)?, train)
        }),
        "pools after",
    );
    assert_fails_with(
        check::down_block01(|b, x, train| b.second.forward_t(&b.first.forward_t(x, train)?, train)),
        "MaxPool2d(2)",
    );
    assert_pass(check::up_block01(|b, x, skip, train| {
        b.forward_t(x, skip, train)
    }));
    assert_fails_with(
        check::up_block01(|b, x, skip, train| b.forward_t(skip, x, train)),
        "(x, skip) in that order",
    );
}

// ------------------------------------------------------------------ panics and logs

#[test]
fn a_panicking_or_unfinished_answer_is_a_failure_with_its_message() {
    let v =
        check::q(|_, _, _, _| todo!("the closed form: sqrt(a_bar) x_0 + sqrt(1 - a_bar) noise"));
    assert_eq!(v.passed, 0);
    let message = &v.failure.as_ref().unwrap().message;
    assert!(
        message.contains("not written yet") && message.contains("sqrt(a_bar) x_0"),
        "{v}"
    );

    let v = check::a_bar(|a| vec![a[a.len()]; a.len()]); // index out of range
    assert_eq!(v.passed, 0);
    assert!(
        v.failure.as_ref().unwrap().message.contains("panicked"),
        "{v}"
    );
}
