//! An animation: image grids of one layout shown one after the other, as an animated GIF
//! (JupyterLab plays `image/gif` inline).

use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};

use super::grid::ImageGrid;
use super::output::write_atomic;
use super::output::{base64, print_evcxr};

/// Frames of equal size, each shown for `delay_ms`, the last one held longer; loops forever.
#[derive(Debug, Clone)]
pub struct Animation {
    frames: Vec<RgbaImage>,
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
            .map(|g| Ok(g.to_image()?.to_rgba8()))
            .collect::<Result<Vec<_>>>()?;
        let size = frames[0].dimensions();
        if let Some(i) = frames.iter().position(|f| f.dimensions() != size) {
            bail!(
                "frame {i} is {:?} pixels but frame 0 is {size:?}: the grids of an animation must share their layout",
                frames[i].dimensions()
            );
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
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new_with_speed(Cursor::new(&mut bytes), 10);
            encoder.set_repeat(Repeat::Infinite)?;
            let last = self.frames.len() - 1;
            for (i, f) in self.frames.iter().enumerate() {
                let ms = if i == last {
                    self.hold_ms
                } else {
                    self.delay_ms
                };
                let delay = Delay::from_numer_denom_ms(ms, 1);
                encoder
                    .encode_frame(Frame::from_parts(f.clone(), 0, 0, delay))
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
