//! An HTML figure that puts several pictures and texts together, for one notebook output.
//!
//! evcxr keeps only the last output of each MIME type per cell, so a cell that shows a loss
//! chart, sample strips and log lines builds one `Figure` and shows that. Image grids are
//! embedded as base64 PNG data URIs drawn with `image-rendering: pixelated`; charts as inline
//! SVG; captions and texts are HTML-escaped.

use super::chart::LineChart;
use super::grid::ImageGrid;
use super::output::{base64, extension, print_evcxr, write_atomic};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Grid {
        caption: String,
        png_base64: String,
        width: usize,
        height: usize,
    },
    Chart {
        caption: String,
        svg: String,
    },
    Text {
        text: String,
        monospace: bool,
    },
}

/// Pictures and texts with captions, one below the other (or side by side with
/// [`wrap`](Figure::wrap)).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use diffusion::display::{Figure, ImageGrid, LineChart};
/// let grid = ImageGrid::new(&Tensor::zeros((4, 1, 16, 16), DType::F32, &Device::Cpu)?, 4)?;
/// let chart = LineChart::new("loss").series_y("loss", [1.0, 0.5, 0.3]);
/// let fig = Figure::new()
///     .title("Step 100")
///     .push_grid("samples", &grid)?
///     .push_chart("training loss", &chart)?
///     .push_text("Epoch 0 | Step 100 | Loss: 0.300");
/// assert_eq!(fig.to_html().matches("<img").count(), 1);
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figure {
    title: Option<String>,
    items: Vec<Item>,
    wrap: bool,
}

impl Figure {
    /// An empty figure.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a heading shown above the items.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Places items side by side, wrapping to new rows as the page narrows, instead of one
    /// below the other.
    pub fn wrap(mut self, on: bool) -> Self {
        self.wrap = on;
        self
    }

    /// Adds an image grid (as PNG) with a caption.
    pub fn push_grid(mut self, caption: impl Into<String>, grid: &ImageGrid) -> Result<Self> {
        self.add_grid(caption, grid)?;
        Ok(self)
    }

    /// Adds a chart (as inline SVG) with a caption.
    pub fn push_chart(mut self, caption: impl Into<String>, chart: &LineChart) -> Result<Self> {
        self.add_chart(caption, chart)?;
        Ok(self)
    }

    /// Adds a paragraph of text (line breaks kept).
    pub fn push_text(mut self, text: impl Into<String>) -> Self {
        self.add_text(text);
        self
    }

    /// Adds text in a monospace font (line breaks kept), for logs and tables.
    pub fn push_pre(mut self, text: impl Into<String>) -> Self {
        self.add_pre(text);
        self
    }

    /// [`push_grid`](Self::push_grid) in place.
    pub fn add_grid(&mut self, caption: impl Into<String>, grid: &ImageGrid) -> Result<()> {
        self.items.push(Item::Grid {
            caption: caption.into(),
            png_base64: base64(&grid.to_png()?),
            width: grid.width(),
            height: grid.height(),
        });
        Ok(())
    }

    /// [`push_chart`](Self::push_chart) in place.
    pub fn add_chart(&mut self, caption: impl Into<String>, chart: &LineChart) -> Result<()> {
        self.items.push(Item::Chart {
            caption: caption.into(),
            svg: chart.to_svg()?,
        });
        Ok(())
    }

    /// [`push_text`](Self::push_text) in place.
    pub fn add_text(&mut self, text: impl Into<String>) {
        self.items.push(Item::Text {
            text: text.into(),
            monospace: false,
        });
    }

    /// [`push_pre`](Self::push_pre) in place.
    pub fn add_pre(&mut self, text: impl Into<String>) {
        self.items.push(Item::Text {
            text: text.into(),
            monospace: true,
        });
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The figure as an HTML fragment (one `<div>`), for a notebook output.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        h.push_str(
            "<div class=\"diffusion-figure\" style=\"font-family: sans-serif; color: #222;\">\n",
        );
        if let Some(title) = &self.title {
            let _ = writeln!(
                h,
                "<div style=\"font-size: 1.15em; font-weight: bold; margin: 4px 0 8px 0;\">{}</div>",
                escape_html(title)
            );
        }
        let direction = if self.wrap {
            "flex-direction: row; flex-wrap: wrap;"
        } else {
            "flex-direction: column;"
        };
        let _ = writeln!(
            h,
            "<div style=\"display: flex; {direction} gap: 14px; align-items: flex-start;\">"
        );
        for item in &self.items {
            match item {
                Item::Grid {
                    caption,
                    png_base64,
                    width,
                    height,
                } => {
                    let caption = escape_html(caption);
                    let _ = writeln!(
                        h,
                        "<figure style=\"margin: 0;\">\
                         <img src=\"data:image/png;base64,{png_base64}\" width=\"{width}\" \
                         height=\"{height}\" alt=\"{caption}\" \
                         style=\"image-rendering: crisp-edges; image-rendering: pixelated; \
                         max-width: 100%; height: auto;\">\
                         <figcaption style=\"font-size: 0.9em; margin-top: 4px;\">{caption}\
                         </figcaption></figure>"
                    );
                }
                Item::Chart { caption, svg } => {
                    let _ = writeln!(
                        h,
                        "<figure style=\"margin: 0;\">{svg}\
                         <figcaption style=\"font-size: 0.9em; margin-top: 4px;\">{}\
                         </figcaption></figure>",
                        escape_html(caption)
                    );
                }
                Item::Text { text, monospace } => {
                    let font = if *monospace {
                        "font-family: monospace; "
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        h,
                        "<div style=\"{font}white-space: pre-wrap; margin: 0;\">{}</div>",
                        escape_html(text)
                    );
                }
            }
        }
        h.push_str("</div>\n</div>\n");
        h
    }

    /// A standalone HTML page holding [`to_html`](Self::to_html).
    pub fn to_html_page(&self) -> String {
        let title = escape_html(self.title.as_deref().unwrap_or("figure"));
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n</head>\n<body>\n{}</body>\n</html>\n",
            self.to_html()
        )
    }

    /// Writes [`to_html_page`](Self::to_html_page) to a `.html` (or `.htm`) file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        extension(path, &["html", "htm"])?;
        write_atomic(path, self.to_html_page().as_bytes())
    }

    /// What [`evcxr_display`](Self::evcxr_display) shows: `("text/html", fragment)`.
    pub fn evcxr_content(&self) -> Result<(&'static str, String)> {
        Ok(("text/html", self.to_html()))
    }

    /// Shows the figure in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        print_evcxr(self.evcxr_content());
    }
}

/// Replaces `& < > " '` with their HTML entities.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn grid(n: usize) -> ImageGrid {
        let x = Tensor::ones((n, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        ImageGrid::new(&x, n).unwrap()
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html(r#"a<b> & "c" 'd'"#),
            "a&lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;"
        );
    }

    #[test]
    fn one_img_per_grid_and_escaped_captions() {
        let chart = LineChart::new("c").series_y("y", [1.0, 2.0]);
        let fig = Figure::new()
            .title("T <1>")
            .push_grid("x_0 < x_t", &grid(2))
            .unwrap()
            .push_chart("loss & more", &chart)
            .unwrap()
            .push_grid("second", &grid(3))
            .unwrap()
            .push_pre("Epoch 0 | Step 100 | Loss: <0.5>");
        let html = fig.to_html();
        assert_eq!(fig.len(), 4);
        assert_eq!(html.matches("<img").count(), 2);
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(html.contains("T &lt;1&gt;"));
        assert!(html.contains("x_0 &lt; x_t"));
        assert!(html.contains("loss &amp; more"));
        assert!(html.contains("Loss: &lt;0.5&gt;"));
        assert!(!html.contains("x_0 < x_t"));
        assert!(html.contains("image-rendering: pixelated"));
        // The 2-image grid: 2 x (2 * 32) + 2 = 130 wide, 64 high.
        assert!(html.contains("width=\"130\" height=\"64\""));
    }

    #[test]
    fn embedded_png_decodes_to_the_grid() {
        let g = grid(2);
        let html = Figure::new().push_grid("g", &g).unwrap().to_html();
        let start = html.find("base64,").unwrap() + "base64,".len();
        let end = start + html[start..].find('"').unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&html[start..end])
            .unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (g.width() as u32, g.height() as u32));
        assert_eq!(img.get_pixel(0, 0).0, [255]); // value 1.0
    }

    #[test]
    fn page_and_save() {
        let fig = Figure::new().title("page").push_text("hello");
        let page = fig.to_html_page();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>page</title>"));
        let dir = tempfile::tempdir().unwrap();
        fig.save(dir.path().join("f.html")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f.html")).unwrap(),
            page
        );
        assert!(fig.save(dir.path().join("f.png")).is_err());
    }

    #[test]
    fn evcxr_content_is_html() {
        let fig = Figure::new().push_text("x");
        let (mime, body) = fig.evcxr_content().unwrap();
        assert_eq!(mime, "text/html");
        assert_eq!(body, fig.to_html());
    }

    #[test]
    fn a_failing_chart_is_an_error_not_a_panic() {
        assert!(Figure::new()
            .push_chart("empty", &LineChart::new("e"))
            .is_err());
    }
}
