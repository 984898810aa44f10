//! What a question of a set expects, as the grader sees it.

/// The kind of answer a question takes, with its expected value.
///
/// Numeric expectations are computed by the crate when the grader runs (see `Question::expected`),
/// never stored as constants.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// A number, accepted within `abs_tol + rel_tol * |value|`.
    Number {
        value: f64,
        abs_tol: f64,
        rel_tol: f64,
    },
    /// A vector (or a shape), element by element with the same tolerance rule.
    Vector {
        values: Vec<f64>,
        abs_tol: f64,
        rel_tol: f64,
    },
    /// One of a few accepted forms (matched case-insensitively, surrounding spaces ignored);
    /// `shown` is the form the report prints as the expected answer.
    Choice {
        accepted: Vec<String>,
        shown: String,
    },
    /// Free text: graded by hand (`manual`), with a link to the worked answer.
    FreeText,
}

/// One question of a set.
pub struct Question {
    /// The key of the question in a submission's TOML (e.g. `"q3"` or `"num_b"`).
    pub id: &'static str,
    /// One line saying what is asked.
    pub prompt: &'static str,
    /// Computes the expected answer (with the crate, at grading time).
    pub expected: fn() -> anyhow::Result<Expected>,
    /// A one-line hint shown when the answer is incorrect.
    pub hint: &'static str,
    /// Link to the worked answer, relative to the repository root
    /// (e.g. `answers/ddpm-math.md#q3`).
    pub link: &'static str,
}

/// A question set: one Markdown file in `answers/`.
pub struct QuestionSet {
    /// The id used with `diffusion grade --set ID`.
    pub id: &'static str,
    /// Its title.
    pub title: &'static str,
    /// The questions, in order.
    pub questions: fn() -> Vec<Question>,
}

/// The expectation of a free-text question (graded by hand).
pub fn free() -> anyhow::Result<Expected> {
    Ok(Expected::FreeText)
}

/// A choice accepting any of `accepted`; the first is shown as the expected answer.
pub fn choice(accepted: &[&str]) -> Expected {
    Expected::Choice {
        accepted: accepted.iter().map(|s| s.to_string()).collect(),
        shown: accepted.first().copied().unwrap_or_default().to_string(),
    }
}
