//! # answers
//!
//! Worked answers to the course's theory questions and their grader.
//!
//! - [`theory`]: the numbers behind the answer pages of `answers/` (`ddpm-math.md`,
//!   `assignment4.md`, `generative-models.md`, `vae-diffusion.md`); every value a page states is
//!   computed here, and the pages' Rust blocks run as this crate's doctests.
//! - [`grade`]: the grader of TOML submissions to those question sets (`diffusion grade`).

pub mod grade;
pub mod theory;
