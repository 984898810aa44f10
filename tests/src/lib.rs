//! Cross-cutting tests live in `tests/`; the walkthroughs' Rust blocks run as this crate's
//! doctests (`cargo test -p diffusion-tests --doc`).

mod walkthrough;
