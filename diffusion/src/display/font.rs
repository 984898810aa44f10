//! The font charts are drawn with, carried inside the crate.
//!
//! `plotters` is built with its `ab_glyph` text renderer and without system font lookup, so it
//! knows no font until one is registered. The crate embeds DejaVu Sans
//! (`assets/fonts/DejaVuSans.ttf`, license in `assets/fonts/LICENSE`) and registers it once,
//! under every family name `plotters` may ask for, before the first chart is drawn. Charts
//! therefore render the same on a machine without fontconfig, freetype or any installed font.

use anyhow::{anyhow, Result};
use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

/// DejaVu Sans 2.37, a TrueType font under the Bitstream Vera license.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family every chart text uses.
pub const FAMILY: &str = "sans-serif";

/// Registers [`DEJAVU_SANS`] with `plotters` (first call only) and says whether that worked.
///
/// It is registered as `sans-serif`, `serif` and `monospace`, normal style; `plotters` falls back
/// from bold and italic to the normal style of the same family.
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in [FAMILY, "serif", "monospace"] {
                register_font(family, FontStyle::Normal, DEJAVU_SANS).map_err(|_| {
                    format!("the embedded font DejaVuSans.ttf could not be parsed as {family}")
                })?;
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow!("{e}; the crate's assets/fonts/DejaVuSans.ttf is damaged"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_is_a_truetype_file() {
        // A TrueType file starts with the sfnt version 0x00010000.
        assert_eq!(&DEJAVU_SANS[..4], &[0, 1, 0, 0]);
        assert!(DEJAVU_SANS.len() < 1_000_000);
    }

    #[test]
    fn registration_succeeds_and_is_repeatable() {
        ensure_font().unwrap();
        ensure_font().unwrap();
    }
}
