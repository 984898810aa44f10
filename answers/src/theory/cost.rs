//! Back-of-the-envelope cost of sampling: a diffusion sampler runs the network once per step.
//!
//! ```text
//! frame budget (ms)        = 1000 / fps
//! network passes / second  = fps * steps
//! sampling time            = steps * time of one pass
//! ```

use anyhow::{bail, Result};

/// Milliseconds available per frame at `fps` frames per second.
pub fn frame_budget_ms(fps: f64) -> Result<f64> {
    if !(fps > 0.0 && fps.is_finite()) {
        bail!("frames per second must be positive, got {fps}");
    }
    Ok(1000.0 / fps)
}

/// Network evaluations per second when each frame needs `steps` sampling steps.
pub fn passes_per_second(fps: f64, steps: usize) -> Result<f64> {
    frame_budget_ms(fps)?;
    Ok(fps * steps as f64)
}

/// Seconds to draw one sample with `steps` network passes of `ms_per_pass` milliseconds each.
pub fn sampling_seconds(steps: usize, ms_per_pass: f64) -> f64 {
    steps as f64 * ms_per_pass / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    // These functions are definitions (the formulas above); the tests pin the numbers the pages
    // state and the error cases, and verify nothing beyond that.

    #[test]
    fn video_budget() {
        // 1000 / 30 = 33.33 ms; 30 frames * 50 steps = 1500 passes per second.
        assert!((frame_budget_ms(30.0).unwrap() - 100.0 / 3.0).abs() < 1e-12);
        assert_eq!(passes_per_second(30.0, 50).unwrap(), 1500.0);
        assert_eq!(passes_per_second(30.0, 1000).unwrap(), 30_000.0);
        assert!(frame_budget_ms(0.0).is_err());
    }

    #[test]
    fn steps_scale_the_time() {
        // At 20 ms per pass: 1000 steps take 20 s, 50 steps 1 s, one pass 0.02 s.
        assert!((sampling_seconds(1000, 20.0) - 20.0).abs() < 1e-12);
        assert!((sampling_seconds(50, 20.0) - 1.0).abs() < 1e-12);
        assert!((sampling_seconds(1, 20.0) - 0.02).abs() < 1e-12);
    }
}
