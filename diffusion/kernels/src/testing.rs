//! Helpers for the kernels' tests: random inputs, a relative-error check and gradients.

use candle_core::{DType, Device, Result, Tensor};

/// `len` standard normal values from a fixed seed (SplitMix64 and the Box-Muller transform).
pub fn normal_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 // in [0, 1)
    };
    let mut v = Vec::with_capacity(len + 1);
    while v.len() < len {
        let r = (-2.0 * (1.0 - uniform()).ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * uniform();
        v.push((r * th.cos()) as f32);
        v.push((r * th.sin()) as f32);
    }
    v.truncate(len);
    v
}

/// Standard normal values of the given shape, from a fixed seed.
pub fn random(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let len = shape.iter().product();
    Tensor::from_vec(normal_values(len, seed), shape, device)
}

/// `|a - b| / |b|` (Frobenius norms), computed in `f64`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok((diff / norm.max(1e-300)).sqrt())
}

/// Fails unless `a` and `b` have the same shape and `rel_err(a, b) <= tol`.
pub fn check_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) -> Result<()> {
    if a.dims() != b.dims() {
        candle_core::bail!("{what}: shapes differ, {:?} and {:?}", a.dims(), b.dims());
    }
    let e = rel_err(a, b)?;
    if e.is_nan() || e > tol {
        candle_core::bail!("{what}: relative error {e:e} above {tol:e}");
    }
    Ok(())
}

/// The gradients of `sum(y * up)` with respect to `vars`.
pub fn grads_of(y: &Tensor, up: &Tensor, vars: &[&Tensor]) -> Result<Vec<Tensor>> {
    let g = (y * up)?.sum_all()?.backward()?;
    vars.iter()
        .map(|v| {
            g.get(v)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))
        })
        .collect()
}

/// Fails unless the gradients of `sum(fast * up)` and of `sum(slow * up)` with respect to each
/// of `vars` agree within `tol` (each named in the message); returns both sets, fast first.
pub fn check_grads(
    [fast, slow]: [&Tensor; 2],
    up: &Tensor,
    vars: &[(&Tensor, &str)],
    tol: f64,
    what: &str,
) -> Result<[Vec<Tensor>; 2]> {
    let ts: Vec<&Tensor> = vars.iter().map(|(t, _)| *t).collect();
    let (gf, gs) = (grads_of(fast, up, &ts)?, grads_of(slow, up, &ts)?);
    for ((f, s), (_, name)) in gf.iter().zip(&gs).zip(vars) {
        check_close(f, s, tol, &format!("{what} {name}"))?;
    }
    Ok([gf, gs])
}
