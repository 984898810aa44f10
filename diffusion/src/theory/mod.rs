//! Closed-form quantities behind the worked answers in `answers/`, one file per topic.

pub mod ddpm;

/// The worked answers of `answers/ddpm-math.md`, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../answers/ddpm-math.md")]
pub struct DdpmMathAnswers;
