//! Helpers for the kernels' tests: random inputs, a relative-error check and gradients.

use candle_core::{DType, Device, Result, Tensor};

/// Standard normal values of the given shape, from a fixed seed.
pub fn random(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    crate::Rng::new(seed)
        .randn(shape, device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
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
