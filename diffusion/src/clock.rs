//! Timing a cell's work and printing durations.

use std::time::{Duration, Instant};

/// Runs `f` and returns its result with the time it took.
///
/// ```
/// let (sum, took) = diffusion::timed(|| Ok::<_, anyhow::Error>((1..=100).sum::<u32>())).unwrap();
/// assert_eq!(sum, 5050);
/// assert!(took.as_secs() < 60);
/// ```
pub fn timed<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<(T, Duration), E> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed()))
}

/// `1h02m03s`, `2m03s`, `3s`.
///
/// ```
/// use std::time::Duration;
/// use diffusion::clock::format_duration;
/// assert_eq!(format_duration(Duration::from_secs(3)), "3s");
/// assert_eq!(format_duration(Duration::from_secs(123)), "2m03s");
/// assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}
