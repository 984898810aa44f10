//! A picture in memory, row by row, one byte per channel: grey (1 channel), RGB (3) or RGBA (4),
//! and its PNG encoding.
//!
//! The byte of channel `c` of the pixel in column `x` and row `y` is at
//! `pixels[(y * width + x) * channels + c]`.

use anyhow::{bail, Context, Result};

/// Rows of 8-bit pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bytes per pixel: 1 (grey), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// `width * height * channels` bytes, the top row first.
    pub pixels: Vec<u8>,
}

impl Bitmap {
    /// A bitmap from its bytes, refused when their number does not match the size.
    pub fn new(width: usize, height: usize, channels: usize, pixels: Vec<u8>) -> Result<Self> {
        if ![1, 3, 4].contains(&channels) {
            bail!("a bitmap has 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {channels}");
        }
        let want = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(channels))
            .context("the bitmap's size overflows")?;
        if pixels.len() != want {
            bail!(
                "a {width} x {height} bitmap with {channels} channels has {want} bytes, got {}",
                pixels.len()
            );
        }
        Ok(Self {
            width,
            height,
            channels,
            pixels,
        })
    }

    /// The channels of the pixel in column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let at = (y * self.width + x) * self.channels;
        &self.pixels[at..at + self.channels]
    }

    /// The same picture as RGBA: grey `v` becomes `(v, v, v, 255)`, RGB gains an opaque alpha.
    pub fn to_rgba(&self) -> Bitmap {
        let pixels = match self.channels {
            4 => self.pixels.clone(),
            c => self
                .pixels
                .chunks_exact(c)
                .flat_map(|p| match p {
                    [v] => [*v, *v, *v, 255],
                    rgb => [rgb[0], rgb[1], rgb[2], 255],
                })
                .collect(),
        };
        Bitmap {
            width: self.width,
            height: self.height,
            channels: 4,
            pixels,
        }
    }

    /// The picture as PNG bytes, 8 bits per channel.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (Ok(w), Ok(h)) = (u32::try_from(self.width), u32::try_from(self.height)) else {
            bail!("a PNG is at most {} pixels on a side", u32::MAX);
        };
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(match self.channels {
            1 => png::ColorType::Grayscale,
            3 => png::ColorType::Rgb,
            _ => png::ColorType::Rgba,
        });
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .context("could not encode the picture as PNG")?;
        writer
            .write_image_data(&self.pixels)
            .context("could not encode the picture as PNG")?;
        writer
            .finish()
            .context("could not encode the picture as PNG")?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_do_not_match_are_refused() {
        assert!(Bitmap::new(2, 2, 1, vec![0; 4]).is_ok());
        let e = Bitmap::new(2, 2, 3, vec![0; 4]).unwrap_err().to_string();
        assert!(e.contains("has 12 bytes, got 4"), "{e}");
        let e = Bitmap::new(1, 1, 2, vec![0; 2]).unwrap_err().to_string();
        assert!(e.contains("1 (grey), 3 (RGB) or 4 (RGBA)"), "{e}");
    }

    #[test]
    fn grey_and_rgb_become_opaque_rgba() {
        let grey = Bitmap::new(2, 1, 1, vec![7, 200]).unwrap();
        assert_eq!(
            grey.to_rgba().pixels,
            vec![7, 7, 7, 255, 200, 200, 200, 255]
        );
        let rgb = Bitmap::new(1, 1, 3, vec![1, 2, 3]).unwrap();
        assert_eq!(rgb.to_rgba().pixel(0, 0), &[1, 2, 3, 255]);
    }

    #[test]
    fn the_png_decodes_to_the_same_pixels() {
        for channels in [1, 3, 4] {
            let pixels: Vec<u8> = (0..3 * 2 * channels)
                .map(|i| (i * 37 % 256) as u8)
                .collect();
            let b = Bitmap::new(3, 2, channels, pixels.clone()).unwrap();
            let png = b.to_png().unwrap();
            let decoder = png::Decoder::new(std::io::Cursor::new(png));
            let mut reader = decoder.read_info().unwrap();
            let mut out = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut out).unwrap();
            assert_eq!((info.width, info.height), (3, 2));
            assert_eq!(info.color_type.samples(), channels);
            assert_eq!(&out[..info.buffer_size()], &pixels[..]);
        }
    }
}
