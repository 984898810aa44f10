//! An animation: image grids of one layout shown one after the other, as an animated GIF
//! (JupyterLab plays `image/gif` inline).
//!
//! GIF counts delays in hundredths of a second: a frame shown `ms` milliseconds is stored as
//! `ms / 10` (rounded down).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::bitmap::Bitmap;
use super::grid::ImageGrid;
use super::output::write_atomic;
use super::output::{base64, print_evcxr};

/// Frames of equal size, each shown for `delay_ms`, the last one held longer; loops forever.
#[derive(Debug, Clone)]
pub struct Animation {
    frames: Vec<Bitmap>,
    /// Milliseconds each frame is shown.
    pub delay_ms: u32,
    /// Milliseconds the last frame is shown, before the loop starts again.
    pub hold_ms: u32,
}

impl Animation {
    /// One frame per grid (all of one size), at the scale each grid has.
    pub fn new(grids: &[ImageGrid]) -> Result<Self> {
        if grids.is_empty() {
            bail!("an animation needs at least one frame");
        }
        let frames = grids
            .iter()
            .map(|g| Ok(g.to_bitmap()?.to_rgba()))
            .collect::<Result<Vec<_>>>()?;
        let dims = |f: &Bitmap| (f.width, f.height);
        let size = dims(&frames[0]);
        if let Some(i) = frames.iter().position(|f| dims(f) != size) {
            bail!(
                "frame {i} is {:?} pixels but frame 0 is {size:?}: the grids of an animation must share their layout",
                dims(&frames[i])
            );
        }
        let max = u16::MAX as usize;
        if size.0 > max || size.1 > max {
            bail!("a GIF is at most {max} pixels on a side, the frames are {size:?}; use a smaller scale");
        }
        Ok(Self {
            frames,
            delay_ms: 120,
            hold_ms: 1500,
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there are no frames (never, for one made by [`Animation::new`]).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The animation as GIF bytes.
    pub fn to_gif(&self) -> Result<Vec<u8>> {
        let (w, h) = (self.frames[0].width as u16, self.frames[0].height as u16);
        let mut bytes = Vec::new();
        {
            let mut encoder =
                gif::Encoder::new(&mut bytes, w, h, &[]).context("could not start the GIF")?;
            encoder
                .set_repeat(gif::Repeat::Infinite)
                .context("could not start the GIF")?;
            let last = self.frames.len() - 1;
            for (i, f) in self.frames.iter().enumerate() {
                let ms = if i == last {
                    self.hold_ms
                } else {
                    self.delay_ms
                };
                // speed 10: a fast palette search (1 is the slowest and best)
                let mut rgba = f.pixels.clone();
                let mut frame = gif::Frame::from_rgba_speed(w, h, &mut rgba, 10);
                frame.delay = (ms / 10).min(u16::MAX as u32) as u16;
                encoder
                    .write_frame(&frame)
                    .context("could not encode a frame of the animation")?;
            }
        }
        Ok(bytes)
    }

    /// Writes the animation to a `.gif` file (through a temporary file and a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if path.extension().and_then(|e| e.to_str()) != Some("gif") {
            bail!("an animation is saved as .gif, got {}", path.display());
        }
        write_atomic(path, &self.to_gif()?)
    }

    /// What [`evcxr_display`](Self::evcxr_display) shows: `("image/gif", base64 of the GIF)`.
    pub fn evcxr_content(&self) -> Result<(&'static str, String)> {
        Ok(("image/gif", base64(&self.to_gif()?)))
    }

    /// Shows the animation in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        print_evcxr(self.evcxr_content());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use image::AnimationDecoder;

    /// A grid of two 4 x 4 grey images, filled with `a` and `b` (values in [-1, 1]).
    fn grid(a: f32, b: f32) -> ImageGrid {
        let mut v = vec![a; 16];
        v.extend([b; 16]);
        let x = Tensor::from_vec(v, (2, 1, 4, 4), &Device::Cpu).unwrap();
        ImageGrid::new(&x, 2).unwrap().scale(1).gap(1)
    }

    #[test]
    fn the_gif_plays_each_frame_for_its_delay_and_loops() {
        let grids = [grid(-1.0, 1.0), grid(0.0, 0.5), grid(1.0, -1.0)];
        let gif = Animation::new(&grids).unwrap().to_gif().unwrap();
        // another decoder than the encoder's crate reads it back
        let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&gif)).unwrap();
        let frames = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 3);
        let delays: Vec<u32> = frames
            .iter()
            .map(|f| f.delay().numer_denom_ms().0 / f.delay().numer_denom_ms().1)
            .collect();
        assert_eq!(delays, vec![120, 120, 1500]);
        for (f, g) in frames.iter().zip(&grids) {
            let want = g.to_bitmap().unwrap();
            let got = f.buffer();
            assert_eq!(got.dimensions(), (want.width as u32, want.height as u32));
            for (x, y, p) in got.enumerate_pixels() {
                let v = want.pixel(x as usize, y as usize)[0];
                assert!(
                    p.0[..3].iter().all(|&c| c.abs_diff(v) <= 2) && p.0[3] == 255,
                    "pixel ({x}, {y}): {:?}, want grey {v}",
                    p.0
                );
            }
        }
        // the loop: a NETSCAPE2.0 application block
        assert!(gif.windows(11).any(|w| w == b"NETSCAPE2.0"));
    }

    #[test]
    fn frames_of_other_sizes_are_refused() {
        let x = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let small = ImageGrid::new(&x, 1).unwrap().scale(1);
        let e = Animation::new(&[grid(0.0, 0.0), small])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must share their layout"), "{e}");
        assert!(Animation::new(&[]).is_err());
    }
}
