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
    /// One of a few accepted forms (matched ignoring case and all whitespace); `shown` is the
    /// form the report prints as the expected answer, and is always accepted itself.
    Choice {
        accepted: Vec<String>,
        shown: String,
    },
    /// Two or more answers that are each right under a convention the question leaves open
    /// (e.g. the population or the sample standard deviation), each named by a short label.
    AnyOf(Vec<(String, Expected)>),
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
    choice_shown(accepted, accepted.first().copied().unwrap_or_default())
}

/// A choice accepting any of `accepted` and `shown`, the form the report prints.
pub fn choice_shown(accepted: &[&str], shown: &str) -> Expected {
    let mut accepted: Vec<String> = accepted.iter().map(|s| s.to_string()).collect();
    if !accepted.iter().any(|a| a == shown) {
        accepted.push(shown.to_string());
    }
    Expected::Choice {
        accepted,
        shown: shown.to_string(),
    }
}

/// Any of the labelled answers.
pub fn any_of(options: Vec<(&str, Expected)>) -> Expected {
    Expected::AnyOf(
        options
            .into_iter()
            .map(|(label, e)| (label.to_string(), e))
            .collect(),
    )
}
