//! The Rust blocks of the walkthroughs, run as doctests.

/// `walkthroughs/01_unet.md`.
#[cfg(doctest)]
#[doc = include_str!("../../walkthroughs/01_unet.md")]
pub struct Walkthrough01;

/// `walkthroughs/02_diffusion.md`.
#[cfg(doctest)]
#[doc = include_str!("../../walkthroughs/02_diffusion.md")]
pub struct Walkthrough02;

/// `walkthroughs/03_optimizations.md`.
#[cfg(doctest)]
#[doc = include_str!("../../walkthroughs/03_optimizations.md")]
pub struct Walkthrough03;

/// `walkthroughs/04_guidance.md`.
#[cfg(doctest)]
#[doc = include_str!("../../walkthroughs/04_guidance.md")]
pub struct Walkthrough04;
