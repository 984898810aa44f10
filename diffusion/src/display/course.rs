//! The course's charts: the noise schedule against `t` and the training loss.

use super::chart::{Legend, LineChart, Series};
use super::figure::Figure;
use crate::Schedule;
use anyhow::{bail, Result};

/// One chart of the schedule against `t = 0..T-1`: `B`, `a_bar`, `sqrt(a_bar)` and
/// `sqrt(1 - a_bar)`.
///
/// With the course's betas (at most 0.02) the `B` curve lies close to zero on this scale;
/// [`schedule_figure`] gives it a chart of its own.
pub fn schedule_chart(schedule: &Schedule) -> Result<LineChart> {
    let v = schedule.values();
    Ok(
        LineChart::new(format!("Noise schedule (T = {})", schedule.len()))
            .x_label("timestep t")
            .y_label("value")
            .legend(Legend::OutsideRight)
            .series_y("B", v.b.iter().copied())
            .series_y("a_bar", v.a_bar.iter().copied())
            .series_y("sqrt(a_bar)", v.sqrt_a_bar.iter().copied())
            .series_y("sqrt(1 - a_bar)", v.sqrt_one_minus_a_bar.iter().copied()),
    )
}

/// Two charts side by side: `B` alone (its own y scale), and `a_bar`, `sqrt(a_bar)`,
/// `sqrt(1 - a_bar)`: how much of `x_0` and how much noise make up `x_t`.
pub fn schedule_figure(schedule: &Schedule) -> Result<Figure> {
    let v = schedule.values();
    let betas = LineChart::new("B_t: variance added at step t")
        .x_label("timestep t")
        .y_label("B")
        .size(460, 320)
        .legend(Legend::Hidden)
        .series_y("B", v.b.iter().copied());
    let mix = LineChart::new("What x_t is made of")
        .x_label("timestep t")
        .y_label("value")
        .size(460, 320)
        .legend(Legend::OutsideRight)
        .with(Series::from_y("a_bar", v.a_bar.iter().copied()).color(255, 127, 14))
        .with(Series::from_y("sqrt(a_bar)", v.sqrt_a_bar.iter().copied()).color(44, 160, 44))
        .with(
            Series::from_y("sqrt(1 - a_bar)", v.sqrt_one_minus_a_bar.iter().copied())
                .color(214, 39, 40),
        );
    Figure::new()
        .title(format!("Noise schedule (T = {})", schedule.len()))
        .wrap(true)
        .push_chart("B grows linearly from start to end", &betas)?
        .push_chart("x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) noise", &mix)
}

/// Loss values a [`loss_chart`] can draw: a plain list (x = 0, 1, 2, ...) or `(step, loss)`
/// pairs.
pub trait LossHistory {
    /// The `(step, loss)` points.
    fn loss_points(&self) -> Vec<(f64, f64)>;
}

impl LossHistory for [f32] {
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.iter()
            .enumerate()
            .map(|(i, l)| (i as f64, *l as f64))
            .collect()
    }
}

impl LossHistory for [f64] {
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.iter()
            .enumerate()
            .map(|(i, l)| (i as f64, *l))
            .collect()
    }
}

impl LossHistory for [(usize, f32)] {
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.iter().map(|(s, l)| (*s as f64, *l as f64)).collect()
    }
}

impl LossHistory for [(usize, f64)] {
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.iter().map(|(s, l)| (*s as f64, *l)).collect()
    }
}

impl<T> LossHistory for Vec<T>
where
    [T]: LossHistory,
{
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.as_slice().loss_points()
    }
}

impl<T, const N: usize> LossHistory for [T; N]
where
    [T]: LossHistory,
{
    fn loss_points(&self) -> Vec<(f64, f64)> {
        self.as_slice().loss_points()
    }
}

/// Trailing moving average: `m_i = mean(y_j for j in max(0, i - window + 1) ..= i)`, so the
/// first points average over fewer values. NaN and infinite values are left out of the means
/// (a point whose window holds none is left out entirely).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Result<Vec<(f64, f64)>> {
    if window == 0 {
        bail!("the moving-average window must be at least 1 step, got 0");
    }
    let mut out = Vec::with_capacity(points.len());
    for i in 0..points.len() {
        let lo = (i + 1).saturating_sub(window);
        let (sum, count) = points[lo..=i]
            .iter()
            .filter(|(_, y)| y.is_finite())
            .fold((0.0, 0usize), |(s, c), (_, y)| (s + y, c + 1));
        if count > 0 {
            out.push((points[i].0, sum / count as f64));
        }
    }
    Ok(out)
}

/// The training loss: the raw values (thin, faint) and their trailing moving average over
/// `window` steps (see [`moving_average`]).
///
/// ```
/// let losses: Vec<(usize, f32)> = vec![(0, 1.0), (1, 0.6), (2, 0.5)];
/// let chart = diffusion::display::loss_chart(&losses, 2).unwrap();
/// assert_eq!(chart.series_list().len(), 2);
/// ```
pub fn loss_chart<L: LossHistory + ?Sized>(losses: &L, window: usize) -> Result<LineChart> {
    let raw = losses.loss_points();
    if raw.is_empty() {
        bail!("there is no loss to plot yet (the history is empty)");
    }
    let smooth = moving_average(&raw, window)?;
    Ok(LineChart::new("Training loss")
        .x_label("step")
        .y_label("MSE loss")
        .with(Series::new("loss", raw).color(31, 119, 180).faint())
        .with(
            Series::new(format!("moving average ({window} steps)"), smooth)
                .color(214, 39, 40)
                .width(2),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn moving_average_by_hand() {
        let p = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)];
        assert_eq!(
            moving_average(&p, 2).unwrap(),
            vec![(0.0, 1.0), (1.0, 1.5), (2.0, 2.5), (3.0, 3.5)]
        );
        assert_eq!(
            moving_average(&p, 3).unwrap(),
            vec![(0.0, 1.0), (1.0, 1.5), (2.0, 2.0), (3.0, 3.0)]
        );
        assert_eq!(moving_average(&p, 1).unwrap(), p.to_vec());
        assert!(moving_average(&p, 0).is_err());
        let with_nan = [(0.0, f64::NAN), (1.0, 2.0), (2.0, 4.0)];
        assert_eq!(
            moving_average(&with_nan, 2).unwrap(),
            vec![(1.0, 2.0), (2.0, 3.0)]
        );
    }

    #[test]
    fn loss_history_forms() {
        let plain: Vec<f32> = vec![0.5, 0.25];
        assert_eq!(plain.loss_points(), vec![(0.0, 0.5), (1.0, 0.25)]);
        let stepped = [(100usize, 0.5f32), (200, 0.25)];
        assert_eq!(stepped.loss_points(), vec![(100.0, 0.5), (200.0, 0.25)]);
        let c = loss_chart(&stepped, 10).unwrap();
        let names: Vec<_> = c.series_list().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["loss", "moving average (10 steps)"]);
        assert_eq!(
            c.series_list()[1].points,
            vec![(100.0, 0.5), (200.0, 0.375)]
        );
        assert!(loss_chart(&Vec::<f32>::new(), 10).is_err());
        assert!(loss_chart(&plain, 0).is_err());
    }

    #[test]
    fn schedule_chart_series_follow_the_formulas() {
        let s = Schedule::linear(10, 0.1, 0.5, &Device::Cpu).unwrap();
        let c = schedule_chart(&s).unwrap();
        let series = c.series_list();
        assert_eq!(series.len(), 4);
        // B_t = 0.1 + t * (0.5 - 0.1) / 9; a_bar_1 = (1 - 0.1) * (1 - 0.1 - 0.4 / 9).
        let b1 = 0.1 + 0.4 / 9.0;
        assert!((series[0].points[1].1 - b1).abs() < 1e-12);
        assert!((series[1].points[1].1 - 0.9 * (1.0 - b1)).abs() < 1e-12);
        assert!((series[2].points[0].1 - 0.9f64.sqrt()).abs() < 1e-12);
        assert!((series[3].points[0].1 - 0.1f64.sqrt()).abs() < 1e-12);
        assert_eq!(series[3].points[9].0, 9.0);
        assert!(c.to_svg().unwrap().contains("sqrt(1 - a_bar)"));
    }

    #[test]
    fn schedule_figure_has_two_charts() {
        let s = Schedule::course(&Device::Cpu).unwrap();
        let html = schedule_figure(&s).unwrap().to_html();
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("T = 150"));
    }
}
