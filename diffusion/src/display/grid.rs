//! A grid of images from a tensor, for the notebook and for PNG files.
//!
//! A pixel value `x` in `[-1, 1]` becomes the byte `round((clamp(x, -1, 1) + 1) / 2 * 255)`
//! (halves round away from zero, so `-1 -> 0`, `0 -> 128`, `1 -> 255`); NaN becomes 0.
//! Each image is enlarged by an integer factor with nearest-neighbour copying, so the pixels of a
//! 16 x 16 image stay sharp squares.

use super::bitmap::Bitmap;
use super::output::{base64, extension, print_evcxr, write_atomic};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// Side in screen pixels that the default scale aims at for one image.
pub const TARGET_SIDE: usize = 64;
/// Default gap between images, in screen pixels.
pub const DEFAULT_GAP: usize = 2;
/// Byte value of the gap and of empty cells (white).
pub const BACKGROUND: u8 = 255;
/// Largest picture drawn, in pixels, to keep a wrong scale from exhausting memory.
const MAX_PIXELS: usize = 64 * 1024 * 1024;

/// `round((clamp(x, -1, 1) + 1) / 2 * 255)`, NaN mapped to 0.
pub fn pixel_byte(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    ((x.clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).round() as u8
}

/// Images laid out in rows of `ncols`, scaled up, ready to show or save.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use diffusion::display::ImageGrid;
/// let x = Tensor::zeros((3, 1, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let grid = ImageGrid::new(&x, 2).unwrap(); // 2 columns, 2 rows, scale 4
/// assert_eq!((grid.width(), grid.height()), (2 * 64 + 2, 2 * 64 + 2));
/// let png: Vec<u8> = grid.to_png().unwrap();
/// # assert!(!png.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    n: usize,
    channels: usize,
    h: usize,
    w: usize,
    ncols: usize,
    scale: usize,
    gap: usize,
    /// Bytes in `[n, channels, h, w]` order.
    bytes: Vec<u8>,
}

impl ImageGrid {
    /// A grid of the images in `images`, `ncols` per row (fewer if there are fewer images).
    ///
    /// Accepted shapes: `[N, C, H, W]` with `C` 1 (grey) or 3 (RGB), `[N, H, W]` (grey),
    /// `[H, W]` (one grey image). Any float or integer dtype on any device; values are read
    /// as f32 on the CPU. The default scale is `max(1, 64 / max(H, W))`.
    pub fn new(images: &Tensor, ncols: usize) -> Result<Self> {
        let dims = images.dims();
        let (n, channels, h, w) = match *dims {
            [h, w] => (1, 1, h, w),
            [n, h, w] => (n, 1, h, w),
            [n, c, h, w] => (n, c, h, w),
            _ => bail!(
                "an image grid needs a tensor of shape [N, C, H, W], [N, H, W] or [H, W], \
                 got shape {dims:?} (rank {}); reshape it first",
                dims.len()
            ),
        };
        if n == 0 {
            bail!("an image grid needs at least one image, got shape {dims:?}");
        }
        if h == 0 || w == 0 {
            bail!("images must be at least 1 x 1 pixel, got shape {dims:?}");
        }
        if channels != 1 && channels != 3 {
            bail!(
                "images must have 1 (grey) or 3 (RGB) channels, got {channels} in shape \
                 {dims:?}; for [N, H, W] grey images pass a rank-3 tensor"
            );
        }
        if ncols == 0 {
            bail!("an image grid needs at least one column, got ncols = 0");
        }
        let values = images
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .context("could not copy the images to the CPU as f32")?;
        Ok(Self {
            n,
            channels,
            h,
            w,
            ncols: ncols.min(n),
            scale: (TARGET_SIDE / h.max(w)).max(1),
            gap: DEFAULT_GAP,
            bytes: values.into_iter().map(pixel_byte).collect(),
        })
    }

    /// Enlarges every image pixel to a `k x k` square (k >= 1; 0 is refused when drawing).
    pub fn scale(mut self, k: usize) -> Self {
        self.scale = k;
        self
    }

    /// Sets the gap between images, in screen pixels (0 for none).
    pub fn gap(mut self, px: usize) -> Self {
        self.gap = px;
        self
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a grid holds at least one image.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Columns used: `min(ncols, N)`.
    pub fn columns(&self) -> usize {
        self.ncols
    }

    /// Rows used: `ceil(N / columns)`.
    pub fn rows(&self) -> usize {
        self.n.div_ceil(self.ncols)
    }

    /// Channels of each image (1 or 3).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The scale factor in use.
    pub fn scale_factor(&self) -> usize {
        self.scale
    }

    /// Width of the picture: `columns * W * scale + (columns - 1) * gap`.
    pub fn width(&self) -> usize {
        self.ncols * self.w * self.scale + (self.ncols - 1) * self.gap
    }

    /// Height of the picture: `rows * H * scale + (rows - 1) * gap`.
    pub fn height(&self) -> usize {
        self.rows() * self.h * self.scale + (self.rows() - 1) * self.gap
    }

    /// Top-left corner `(x, y)` of image `i` in the picture: image `i` sits in row
    /// `i / columns` and column `i % columns`, each cell `W * scale + gap` wide.
    pub fn cell_origin(&self, i: usize) -> Option<(usize, usize)> {
        (i < self.n).then(|| {
            let (row, col) = (i / self.ncols, i % self.ncols);
            (
                col * (self.w * self.scale + self.gap),
                row * (self.h * self.scale + self.gap),
            )
        })
    }

    /// The picture: grey for 1 channel, RGB for 3.
    pub fn to_bitmap(&self) -> Result<Bitmap> {
        if self.scale == 0 {
            bail!("the scale of an image grid must be at least 1, got 0");
        }
        let (width, height) = (self.width(), self.height());
        if width.saturating_mul(height) > MAX_PIXELS {
            bail!(
                "the grid would be {width} x {height} pixels, more than {MAX_PIXELS}; \
                 use a smaller scale or fewer images"
            );
        }
        let (c, h, w, k) = (self.channels, self.h, self.w, self.scale);
        let mut out = vec![BACKGROUND; width * height * c];
        for i in 0..self.n {
            let Some((x0, y0)) = self.cell_origin(i) else {
                continue;
            };
            let image = &self.bytes[i * c * h * w..(i + 1) * c * h * w];
            for y in 0..h * k {
                for x in 0..w * k {
                    let dst = ((y0 + y) * width + x0 + x) * c;
                    for ch in 0..c {
                        out[dst + ch] = image[ch * h * w + (y / k) * w + x / k];
                    }
                }
            }
        }
        Bitmap::new(width, height, c, out)
    }

    /// The picture as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.to_bitmap()?.to_png()
    }

    /// Writes the picture to a `.png` file (through a temporary file and a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        extension(path, &["png"])?;
        write_atomic(path, &self.to_png()?)
    }

    /// What [`evcxr_display`](Self::evcxr_display) shows: `("image/png", base64 of the PNG)`.
    pub fn evcxr_content(&self) -> Result<(&'static str, String)> {
        Ok(("image/png", base64(&self.to_png()?)))
    }

    /// Shows the grid in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        print_evcxr(self.evcxr_content());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn byte_mapping_follows_the_formula() {
        // (x + 1) / 2 * 255, rounded half away from zero.
        assert_eq!(pixel_byte(-1.0), 0);
        assert_eq!(pixel_byte(1.0), 255);
        assert_eq!(pixel_byte(0.0), 128); // 127.5
        assert_eq!(pixel_byte(0.5), 191); // 191.25
        assert_eq!(pixel_byte(-0.5), 64); // 63.75
        assert_eq!(pixel_byte(-3.0), 0);
        assert_eq!(pixel_byte(7.0), 255);
        assert_eq!(pixel_byte(f32::NAN), 0);
        assert_eq!(pixel_byte(f32::INFINITY), 255);
    }

    #[test]
    fn default_scale_aims_at_64_pixels() {
        let g = |h: usize, w: usize| {
            ImageGrid::new(&Tensor::zeros((h, w), DType::F32, &Device::Cpu).unwrap(), 1)
                .unwrap()
                .scale_factor()
        };
        assert_eq!(g(16, 16), 4);
        assert_eq!(g(28, 28), 2);
        assert_eq!(g(16, 32), 2);
        assert_eq!(g(100, 100), 1);
    }

    #[test]
    fn layout_sizes_and_origins() {
        // 5 images of 2 x 3 (H x W), 2 columns -> 3 rows; scale 2, gap 1.
        let x = Tensor::zeros((5, 1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let g = ImageGrid::new(&x, 2).unwrap().scale(2).gap(1);
        assert_eq!((g.columns(), g.rows()), (2, 3));
        assert_eq!(g.width(), 2 * 6 + 1);
        assert_eq!(g.height(), 3 * 4 + 2);
        assert_eq!(g.cell_origin(0), Some((0, 0)));
        assert_eq!(g.cell_origin(1), Some((7, 0)));
        assert_eq!(g.cell_origin(4), Some((0, 10)));
        assert_eq!(g.cell_origin(5), None);
        // More columns than images: the grid is one row of 5.
        let g = ImageGrid::new(&x, 15).unwrap();
        assert_eq!((g.columns(), g.rows()), (5, 1));
    }

    #[test]
    fn pixels_land_where_the_layout_says() {
        // Two 1 x 2 images: [-1, 1] and [0, 0.5]; one column, scale 2, gap 2.
        let x = t(&[-1.0, 1.0, 0.0, 0.5], &[2, 1, 1, 2]);
        let img = ImageGrid::new(&x, 1)
            .unwrap()
            .scale(2)
            .gap(2)
            .to_bitmap()
            .unwrap();
        assert_eq!((img.width, img.height, img.channels), (4, 2 + 2 + 2, 1));
        let rows: Vec<Vec<u8>> = (0..6)
            .map(|y| (0..4).map(|x| img.pixel(x, y)[0]).collect())
            .collect();
        assert_eq!(rows[0], vec![0, 0, 255, 255]);
        assert_eq!(rows[1], vec![0, 0, 255, 255]);
        assert_eq!(rows[2], vec![255; 4]); // gap
        assert_eq!(rows[3], vec![255; 4]);
        assert_eq!(rows[4], vec![128, 128, 191, 191]);
        assert_eq!(rows[5], vec![128, 128, 191, 191]);
    }

    #[test]
    fn empty_cells_are_background() {
        let x = t(&[-1.0; 3], &[3, 1, 1]);
        let img = ImageGrid::new(&x, 2)
            .unwrap()
            .scale(1)
            .gap(0)
            .to_bitmap()
            .unwrap();
        assert_eq!((img.width, img.height), (2, 2));
        assert_eq!(img.pixels, vec![0, 0, 0, 255]);
    }

    #[test]
    fn rgb_channels_are_kept() {
        // One 1 x 1 RGB image: r = 1, g = -1, b = 0.
        let x = t(&[1.0, -1.0, 0.0], &[1, 3, 1, 1]);
        let img = ImageGrid::new(&x, 1).unwrap().to_bitmap().unwrap();
        assert_eq!(img.channels, 3);
        assert_eq!(img.pixel(0, 0), &[255, 0, 128]);
    }

    #[test]
    fn other_dtypes_are_converted() {
        let x = t(&[-1.0, 1.0], &[1, 2]).to_dtype(DType::F16).unwrap();
        let img = ImageGrid::new(&x, 1).unwrap().scale(1).to_bitmap().unwrap();
        assert_eq!(img.pixels, vec![0, 255]);
        let x = t(&[-1.0, 1.0], &[1, 2]).to_dtype(DType::BF16).unwrap();
        let img = ImageGrid::new(&x, 1).unwrap().scale(1).to_bitmap().unwrap();
        assert_eq!(img.pixels, vec![0, 255]);
        let x = t(&[-1.0, 1.0], &[1, 2]).to_dtype(DType::F64).unwrap();
        let img = ImageGrid::new(&x, 1).unwrap().scale(1).to_bitmap().unwrap();
        assert_eq!(img.pixels, vec![0, 255]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let five = Tensor::zeros((1, 1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = ImageGrid::new(&five, 1).unwrap_err().to_string();
        assert!(e.contains("rank 5"), "{e}");
        let none = Tensor::zeros((0, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let e = ImageGrid::new(&none, 1).unwrap_err().to_string();
        assert!(e.contains("at least one image"), "{e}");
        let two_ch = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(ImageGrid::new(&two_ch, 1).is_err());
        let one = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(ImageGrid::new(&one, 0).is_err());
        let scalar = Tensor::new(1f32, &Device::Cpu).unwrap();
        assert!(ImageGrid::new(&scalar, 1).is_err());
        let g = ImageGrid::new(&one, 1).unwrap().scale(0);
        assert!(g.to_png().is_err());
    }

    #[test]
    fn save_refuses_other_extensions() {
        let one = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let g = ImageGrid::new(&one, 1).unwrap();
        assert!(g.save(dir.path().join("x.jpg")).is_err());
        g.save(dir.path().join("x.png")).unwrap();
        let back = image::open(dir.path().join("x.png")).unwrap();
        assert_eq!((back.width(), back.height()), (64, 64));
    }
}
