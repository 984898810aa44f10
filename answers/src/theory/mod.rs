//! The numbers behind the answers in `answers/`: every value stated there is computed here and
//! asserted by a test (unit tests in each file, and the Markdown files' Rust blocks, which run as
//! doctests). Plain `f64` math, one topic per file.

pub mod autograd;
pub mod cost;
pub mod ddpm;
pub mod elbo;
pub mod embedding;
pub mod energy;
pub mod gaussian;
pub mod ideal_sampler;
pub mod latent_toy;
pub mod montecarlo;
pub mod shapes;
pub mod toy_chain;

/// The Rust blocks of `answers/ddpm-math.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../ddpm-math.md")]
pub struct DdpmMathAnswers;

/// The Rust blocks of `answers/assignment4.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../assignment4.md")]
pub struct Assignment4Answers;

/// The Rust blocks of `answers/generative-models.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../generative-models.md")]
pub struct GenerativeModelsAnswers;

/// The Rust blocks of `answers/vae-diffusion.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../vae-diffusion.md")]
pub struct VaeDiffusionAnswers;
