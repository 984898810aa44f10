//! Checking timesteps: integer tensors `t` of shape `[batch]` with values in `0..T`.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// Validates a timestep tensor and returns its values.
///
/// `t` must be a 1-D integer tensor (U8, U32 or I64) of length `batch`, each value in `0..steps`.
pub fn check(t: &Tensor, batch: usize, steps: usize) -> Result<Vec<i64>> {
    if t.rank() != 1 {
        bail!(
            "timesteps must be a 1-D tensor of shape [{batch}] (one per image), got shape {:?}",
            t.dims()
        );
    }
    if t.dim(0)? != batch {
        bail!(
            "timesteps must have one value per image: expected shape [{batch}], got {:?}",
            t.dims()
        );
    }
    let values: Vec<i64> = match t.dtype() {
        DType::I64 => t.to_vec1::<i64>()?,
        DType::U32 => t.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
        DType::U8 => t.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
        other => bail!("timesteps must be integers (U8, U32 or I64), got {other:?}"),
    };
    if let Some(v) = values.iter().find(|v| **v < 0 || **v >= steps as i64) {
        bail!(
            "timestep {v} is out of range: timesteps run from 0 to T-1 = {}",
            steps - 1
        );
    }
    Ok(values)
}

/// Checks a single timestep `t` against `0..steps`.
pub fn check_one(t: usize, steps: usize) -> Result<()> {
    if t >= steps {
        bail!(
            "timestep {t} is out of range: timesteps run from 0 to T-1 = {}",
            steps - 1
        );
    }
    Ok(())
}
