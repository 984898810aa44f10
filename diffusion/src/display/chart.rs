//! Line charts (title, axis labels, named series, optional log-scale y) drawn with `plotters`,
//! as SVG for the notebook and SVG or PNG files.
//!
//! Text is laid out with the embedded DejaVu Sans (see [`font`](super::font)); in SVG it stays
//! text (`<text>` elements with `font-family="sans-serif"`), in PNG it is rasterised.

use super::bitmap::Bitmap;
use super::font::{ensure_font, FAMILY};
use super::output::{extension, print_evcxr, write_atomic};
use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use std::ops::Range;
use std::path::Path;

/// Font size of legend entries.
const LEGEND_FONT: f64 = 15.0;

/// Default chart size in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (640, 400);

/// The colours given to series in order (the "tableau 10" palette).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// One named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name shown in the legend.
    pub name: String,
    /// Points in drawing order; non-finite points (and `y <= 0` on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Colour; `None` takes the next colour of [`PALETTE`].
    pub color: Option<(u8, u8, u8)>,
    /// Line width in pixels.
    pub width: u32,
    /// Opacity in `[0, 1]`.
    pub opacity: f64,
}

impl Series {
    /// A series from `(x, y)` points, 2 px wide, opaque.
    pub fn new(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points: points.into_iter().collect(),
            color: None,
            width: 2,
            opacity: 1.0,
        }
    }

    /// A series from y values at `x = 0, 1, 2, ...` (for example a schedule against `t`).
    pub fn from_y(name: impl Into<String>, ys: impl IntoIterator<Item = f64>) -> Self {
        Self::new(name, ys.into_iter().enumerate().map(|(i, y)| (i as f64, y)))
    }

    /// Sets the colour.
    pub fn color(mut self, r: u8, g: u8, b: u8) -> Self {
        self.color = Some((r, g, b));
        self
    }

    /// Sets the line width in pixels.
    pub fn width(mut self, px: u32) -> Self {
        self.width = px;
        self
    }

    /// A thin, see-through line (width 1, opacity 0.5), for noisy raw data under a smooth one.
    pub fn faint(mut self) -> Self {
        self.width = 1;
        self.opacity = 0.5;
        self
    }
}

/// Where the legend sits inside the plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Legend {
    UpperLeft,
    #[default]
    UpperRight,
    LowerLeft,
    LowerRight,
    MiddleRight,
    /// To the right of the plotting area, outside it (the plot gets narrower).
    OutsideRight,
    /// No legend.
    Hidden,
}

/// A line chart of one or more named series.
///
/// ```
/// use diffusion::display::LineChart;
/// let chart = LineChart::new("squares")
///     .x_label("x")
///     .y_label("x^2")
///     .series("x^2", (0..10).map(|i| (i as f64, (i * i) as f64)));
/// let svg = chart.to_svg().unwrap();
/// assert!(svg.contains("squares"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    log_y: bool,
    legend: Legend,
    size: (u32, u32),
}

/// A finite series ready to draw, with its resolved colour.
struct Prepared {
    name: String,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
}

impl LineChart {
    /// An empty chart with a title; add at least one series before drawing.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_y: false,
            legend: Legend::default(),
            size: DEFAULT_SIZE,
        }
    }

    /// Sets the label under the x axis.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Sets the label beside the y axis.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Draws the y axis on a log scale (base 10); points with `y <= 0` are then skipped.
    pub fn log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }

    /// Places the legend.
    pub fn legend(mut self, position: Legend) -> Self {
        self.legend = position;
        self
    }

    /// Sets the size in pixels (SVG units), at least 100 x 80 when drawn.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Adds a series of `(x, y)` points.
    pub fn series(
        self,
        name: impl Into<String>,
        points: impl IntoIterator<Item = (f64, f64)>,
    ) -> Self {
        self.with(Series::new(name, points))
    }

    /// Adds a series of y values at `x = 0, 1, 2, ...`.
    pub fn series_y(self, name: impl Into<String>, ys: impl IntoIterator<Item = f64>) -> Self {
        self.with(Series::from_y(name, ys))
    }

    /// Adds a styled series.
    pub fn with(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Adds a styled series in place.
    pub fn add(&mut self, series: Series) {
        self.series.push(series);
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The series, in the order added.
    pub fn series_list(&self) -> &[Series] {
        &self.series
    }

    /// Whether the y axis is logarithmic.
    pub fn is_log_y(&self) -> bool {
        self.log_y
    }

    /// The size in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        self.size
    }

    /// The chart as an SVG document (text stays text).
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
            self.draw(&root)?;
            root.present()
                .map_err(|e| anyhow!("could not finish the SVG: {e}"))?;
        }
        Ok(svg)
    }

    /// The chart as PNG bytes (RGB, white background).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h) = self.size;
        let mut rgb = vec![255u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, self.size).into_drawing_area();
            self.draw(&root)?;
            root.present()
                .map_err(|e| anyhow!("could not finish the bitmap: {e}"))?;
        }
        Bitmap::new(w as usize, h as usize, 3, rgb)?.to_png()
    }

    /// Writes the chart to `path`; the extension picks the format: `.svg` or `.png`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = match extension(path, &["svg", "png"])?.as_str() {
            "svg" => self.to_svg()?.into_bytes(),
            _ => self.to_png()?,
        };
        write_atomic(path, &bytes)
    }

    /// What [`evcxr_display`](Self::evcxr_display) shows: `("image/svg+xml", svg)`.
    pub fn evcxr_content(&self) -> Result<(&'static str, String)> {
        Ok(("image/svg+xml", self.to_svg()?))
    }

    /// Shows the chart (SVG) in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        print_evcxr(self.evcxr_content());
    }

    /// The drawable series (finite points, positive y on a log axis) and the axis ranges.
    fn prepare(&self) -> Result<(Vec<Prepared>, Range<f64>, Range<f64>)> {
        if self.series.is_empty() {
            bail!(
                "the chart \"{}\" has no series; add one with .series(name, points)",
                self.title
            );
        }
        let (w, h) = self.size;
        if w < 100 || h < 80 {
            bail!("a chart must be at least 100 x 80 pixels, got {w} x {h}");
        }
        let mut palette = PALETTE.iter().cycle();
        let mut prepared = Vec::new();
        for s in &self.series {
            let (r, g, b) = match s.color {
                Some(c) => c,
                None => *palette.next().unwrap_or(&PALETTE[0]),
            };
            let opacity = if s.opacity.is_finite() {
                s.opacity.clamp(0.0, 1.0)
            } else {
                1.0
            };
            let points = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || *y > 0.0))
                .collect();
            prepared.push(Prepared {
                name: s.name.clone(),
                points,
                style: RGBColor(r, g, b).mix(opacity).stroke_width(s.width.max(1)),
            });
        }
        let all = || prepared.iter().flat_map(|p| p.points.iter());
        if all().next().is_none() {
            bail!(
                "the chart \"{}\" has no point to draw (all are empty, NaN or infinite{})",
                self.title,
                if self.log_y {
                    ", or <= 0 on the log axis"
                } else {
                    ""
                }
            );
        }
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 == x1 {
            (x0, x1) = (x0 - 1.0, x1 + 1.0);
        }
        let (y0, y1) = if self.log_y {
            if y0 == y1 {
                (y0 / 2.0, y1 * 2.0)
            } else {
                (y0 / 1.1, y1 * 1.1)
            }
        } else if y0 == y1 {
            let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
            (y0 - pad, y1 + pad)
        } else {
            let pad = (y1 - y0) * 0.05;
            (y0 - pad, y1 + pad)
        };
        Ok((prepared, x0..x1, y0..y1))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        ensure_font()?;
        let (series, xr, yr) = self.prepare()?;
        root.fill(&WHITE)
            .map_err(|e| anyhow!("could not clear the chart: {e}"))?;
        let legend_width = if self.legend == Legend::OutsideRight {
            let style = TextStyle::from((FAMILY, LEGEND_FONT).into_font());
            let mut widest = 0;
            for s in &series {
                let (w, _) = root
                    .estimate_text_size(&s.name, &style)
                    .map_err(|e| anyhow!("could not measure the legend: {e}"))?;
                widest = widest.max(w);
            }
            widest + 50
        } else {
            0
        };
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(&self.title, (FAMILY, 22))
            .margin(12)
            .margin_right(12 + legend_width)
            .x_label_area_size(if self.x_label.is_empty() { 30 } else { 48 })
            .y_label_area_size(if self.y_label.is_empty() { 50 } else { 72 });
        if self.log_y {
            self.draw_series(root, &mut builder, xr, yr.log_scale(), series)
        } else {
            self.draw_series(root, &mut builder, xr, yr, series)
        }
    }

    fn draw_series<DB, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        builder: &mut ChartBuilder<DB>,
        xr: Range<f64>,
        yr: Y,
        series: Vec<Prepared>,
    ) -> Result<()>
    where
        DB: DrawingBackend,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = builder
            .build_cartesian_2d(xr, yr)
            .map_err(|e| anyhow!("could not lay out the chart: {e}"))?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|v| format_tick(*v))
            .y_label_formatter(&|v| format_tick(*v))
            .y_labels(if self.log_y { 6 } else { 10 })
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(|e| anyhow!("could not draw the axes: {e}"))?;
        let entries: Vec<(String, ShapeStyle)> =
            series.iter().map(|s| (s.name.clone(), s.style)).collect();
        for s in series {
            let style = s.style;
            chart
                .draw_series(LineSeries::new(s.points, style))
                .map_err(|e| anyhow!("could not draw the series {}: {e}", s.name))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], style.stroke_width(3))
                });
        }
        let position = match self.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
            Legend::MiddleRight => SeriesLabelPosition::MiddleRight,
            Legend::OutsideRight => {
                // plotters clips its legend to the plotting area, so draw this one on the root.
                let (px, py) = chart.plotting_area().get_base_pixel();
                let (pw, _) = chart.plotting_area().dim_in_pixel();
                let (rx, ry) = root.get_base_pixel();
                let x = px - rx + pw as i32 + 14;
                let font = TextStyle::from((FAMILY, LEGEND_FONT).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center));
                for (i, (name, style)) in entries.into_iter().enumerate() {
                    let y = py - ry + 12 + i as i32 * 22;
                    root.draw(&PathElement::new(
                        vec![(x, y), (x + 22, y)],
                        style.stroke_width(3),
                    ))
                    .and_then(|_| root.draw(&Text::new(name, (x + 30, y), font.clone())))
                    .map_err(|e| anyhow!("could not draw the legend: {e}"))?;
                }
                return Ok(());
            }
            Legend::Hidden => return Ok(()),
        };
        chart
            .configure_series_labels()
            .position(position)
            .label_font((FAMILY, LEGEND_FONT))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|e| anyhow!("could not draw the legend: {e}"))?;
        Ok(())
    }
}

/// A tick label with about three significant digits and no trailing zeros; scientific
/// notation below 0.001 or from 100000 on (`0.02 -> "0.02"`, `150 -> "150"`,
/// `0.0001 -> "1e-4"`).
pub fn format_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 5) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> LineChart {
        LineChart::new("Loss & <noise>")
            .x_label("step")
            .y_label("MSE")
            .series("raw", [(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)])
            .series_y("smooth", [0.9, 0.6, 0.3])
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(0.02), "0.02");
        assert_eq!(format_tick(0.0200001), "0.02");
        assert_eq!(format_tick(0.15), "0.15");
        assert_eq!(format_tick(150.0), "150");
        assert_eq!(format_tick(12.5), "12.5");
        assert_eq!(format_tick(-0.4), "-0.4");
        assert_eq!(format_tick(0.0001), "1e-4");
        assert_eq!(format_tick(250000.0), "2.5e5");
        assert_eq!(format_tick(0.30000000000000004), "0.3");
    }

    #[test]
    fn svg_keeps_title_labels_and_legend_as_escaped_text() {
        let svg = chart().to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains(r#"width="640" height="400""#));
        assert!(
            svg.contains(">\nLoss &amp; &lt;noise&gt;\n</text>"),
            "title missing"
        );
        for label in ["step", "MSE", "raw", "smooth"] {
            assert!(
                svg.contains(&format!(">\n{label}\n</text>")),
                "{label} missing"
            );
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn png_has_the_requested_size_and_dark_text_pixels() {
        let png = chart().size(320, 200).to_png().unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (320, 200));
        // The corner is background; the title band holds dark glyph pixels.
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        let dark = (0..320)
            .flat_map(|x| (0..30).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|c| *c < 100))
            .count();
        assert!(dark > 30, "only {dark} dark pixels in the title band");
    }

    #[test]
    fn log_axis_drops_non_positive_values() {
        let c = LineChart::new("log")
            .log_y(true)
            .series("y", [(0.0, 0.0), (1.0, 0.1), (2.0, 10.0)]);
        let svg = c.to_svg().unwrap();
        assert!(svg.contains("<polyline"));
        let all_bad = LineChart::new("log").log_y(true).series("y", [(0.0, -1.0)]);
        let e = all_bad.to_svg().unwrap_err().to_string();
        assert!(e.contains("log axis"), "{e}");
    }

    #[test]
    fn empty_and_degenerate_charts() {
        let e = LineChart::new("none").to_svg().unwrap_err().to_string();
        assert!(e.contains("no series"), "{e}");
        let nan = LineChart::new("nan").series("y", [(0.0, f64::NAN)]);
        assert!(nan.to_png().is_err());
        // A single point still draws (ranges are padded).
        LineChart::new("one")
            .series("y", [(3.0, 0.0)])
            .to_svg()
            .unwrap();
        assert!(LineChart::new("tiny")
            .size(10, 10)
            .series_y("y", [1.0])
            .to_svg()
            .is_err());
    }

    #[test]
    fn save_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        chart().save(dir.path().join("c.svg")).unwrap();
        chart().save(dir.path().join("c.png")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("c.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
        let png = image::open(dir.path().join("c.png")).unwrap();
        assert_eq!((png.width(), png.height()), DEFAULT_SIZE);
        assert!(chart().save(dir.path().join("c.pdf")).is_err());
    }

    #[test]
    fn evcxr_content_is_svg() {
        let (mime, body) = chart().evcxr_content().unwrap();
        assert_eq!(mime, "image/svg+xml");
        assert!(body.starts_with("<svg"));
    }
}
