//! Limits for a quick run of a notebook, set in the environment (the notebook tests set both;
//! a student on a slow machine can too):
//!
//! | variable | limits | to |
//! | --- | --- | --- |
//! | `DIFFUSION_MAX_STEPS` | the steps of one call of [`Trainer::train`](crate::Trainer::train) | its value |
//! | `DIFFUSION_MAX_SAMPLES` | the images one call of [`sample_images`](crate::sample_images) draws | its value |
//!
//! Unset, nothing is limited. A value that is not a whole number is an error that names the
//! variable.
//!
//! ```
//! use diffusion::limits::limit_from_env;
//! assert_eq!(limit_from_env("DIFFUSION_MAX_SAMPLES", "images", Some("150"))?, Some(150));
//! assert_eq!(limit_from_env("DIFFUSION_MAX_SAMPLES", "images", None)?, None);
//! # anyhow::Ok(())
//! ```

use anyhow::{Context, Result};

/// The variable that limits training steps.
pub const MAX_STEPS: &str = "DIFFUSION_MAX_STEPS";
/// The variable that limits the images of one sampling call.
pub const MAX_SAMPLES: &str = "DIFFUSION_MAX_SAMPLES";

/// The limit the variable `var` sets, given its value (`None` when unset); `unit` names what it
/// counts, for the error.
pub fn limit_from_env(var: &str, unit: &str, value: Option<&str>) -> Result<Option<usize>> {
    value
        .map(|v| {
            v.trim()
                .parse()
                .with_context(|| format!("{var} must be a whole number of {unit}, got {v:?}"))
        })
        .transpose()
}

/// The limit `var` sets in this process's environment.
pub fn limit(var: &str, unit: &str) -> Result<Option<usize>> {
    limit_from_env(var, unit, std::env::var(var).ok().as_deref())
}

/// `n`, or the limit [`MAX_SAMPLES`] sets when that is smaller.
pub fn samples(n: usize) -> Result<usize> {
    Ok(limit(MAX_SAMPLES, "images")?.map_or(n, |m| n.min(m.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_is_not_a_number_names_the_variable() {
        assert_eq!(
            limit_from_env(MAX_STEPS, "steps", Some(" 12 ")).unwrap(),
            Some(12)
        );
        let e = limit_from_env(MAX_SAMPLES, "images", Some("many"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DIFFUSION_MAX_SAMPLES must be a whole number of images")
                && e.contains("many"),
            "{e}"
        );
    }
}
