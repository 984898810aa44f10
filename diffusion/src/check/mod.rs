//! # Checks a student runs in an exercise notebook
//!
//! After each exercise, a one-line cell hands the student's function to its check:
//!
//! ```text
//! diffusion::check::q(q)
//! ```
//!
//! The check runs the function on fresh random inputs (and the edge cases that matter, such as
//! `t = 0`), compares each result with the crate's reference, and shows a [`Verdict`]: passed, or
//! the first case that failed with the shapes and values and, when the result matches a
//! well-known mistake (a coefficient not broadcast, `B[t]` for `B[t-1]`, a sum for a product,
//! ...), the hint for that mistake. A panic in the student's code (an unfinished `todo!()`, an
//! index out of range) is caught and reported as a failure of that check, so the cell returns
//! normally and the kernel keeps the student's variables.
//!
//! | notebook | checks |
//! | --- | --- |
//! | 01 | [`down_block01`], [`up_block01`] |
//! | 02 | [`a_bar`], [`q`], [`reverse_q`], [`get_loss`], [`sample`] |
//! | 03 | [`group_sizes`], [`sinusoidal`], [`embed_block`], [`up_block`] |
//! | 04 | [`context_mask`], [`guided_noise`] |
//!
//! When the environment variable [`LOG_VARIABLE`] names a file, every verdict is also appended
//! to it as one JSON line: that is how `diffusion grade --notebook` collects them.

mod judge;
mod notebook01;
mod notebook02;
mod notebook03;
mod notebook04;
mod probe;
mod verdict;

pub use judge::Values;
pub use notebook01::{down_block01, up_block01};
pub use notebook02::{a_bar, get_loss, q, reverse_q, sample};
pub use notebook03::{embed_block, group_sizes, sinusoidal, up_block};
pub use notebook04::{context_mask, guided_noise};
pub use probe::Probe;
pub use verdict::{Failure, Verdict, LOG_VARIABLE};

/// The names of every check, in the order of the table above (the grader's list).
pub const CHECKS: [&str; 13] = [
    "down_block01",
    "up_block01",
    "a_bar",
    "q",
    "reverse_q",
    "get_loss",
    "sample",
    "group_sizes",
    "sinusoidal",
    "embed_block",
    "up_block",
    "context_mask",
    "guided_noise",
];
