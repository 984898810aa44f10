//! The Rust blocks of `walkthroughs/02_diffusion.md`, run as doctests
//! (`cargo test -p diffusion --doc`).

/// `walkthroughs/02_diffusion.md`.
#[cfg(doctest)]
#[doc = include_str!("../../walkthroughs/02_diffusion.md")]
pub struct WalkthroughDoctests;
