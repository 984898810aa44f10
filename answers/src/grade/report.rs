//! Grading a submission against a question set, and the report it gives.
//!
//! Each question gets one verdict:
//!
//! | verdict | when |
//! | --- | --- |
//! | `correct` | the value matches (numbers within the question's tolerance, choices ignoring case and whitespace) |
//! | `incorrect` | readable but wrong; the report shows the expected value and a hint |
//! | `missing` | no key for the question, or an empty string / empty list |
//! | `unparseable` | the value cannot be read as the question's type (see [`super::value`]) |
//! | `manual` | a free-text question: graded by hand against the linked worked answer |
//!
//! Score = correct / gradable, where gradable counts every question that is not free text.

use super::question::{Expected, QuestionSet};
use super::value::{is_blank, read_choice, read_number, read_vector, within};
use anyhow::{anyhow, Context, Result};
use serde_json::json;
use std::fmt::Write as _;

/// The verdict on one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Correct,
    Incorrect,
    Missing,
    Unparseable,
    Manual,
}

impl Verdict {
    /// The verdict's name as printed and as written in `*.expected.toml` files.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Correct => "correct",
            Verdict::Incorrect => "incorrect",
            Verdict::Missing => "missing",
            Verdict::Unparseable => "unparseable",
            Verdict::Manual => "manual",
        }
    }

    /// The verdict of that name, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Verdict::Correct,
            Verdict::Incorrect,
            Verdict::Missing,
            Verdict::Unparseable,
            Verdict::Manual,
        ]
        .into_iter()
        .find(|v| v.as_str() == name.trim().to_lowercase())
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The grading of one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The question id.
    pub id: String,
    /// What the question asks (one line).
    pub prompt: String,
    pub verdict: Verdict,
    /// The expected answer, as text (`None` for free text).
    pub expected: Option<String>,
    /// The given value as written in the TOML (`None` when missing).
    pub given: Option<String>,
    /// Why the value could not be read, or what differs (e.g. a wrong length).
    pub detail: Option<String>,
    /// A one-line hint, for incorrect answers.
    pub hint: Option<String>,
    /// The worked answer, relative to the repository root.
    pub link: String,
    /// The share of the question's point earned, when it can be partial (a notebook check:
    /// the share of its cases that passed); `None`: 1 if correct, else 0.
    pub credit: Option<f64>,
}

impl Item {
    /// The point earned, from 0 to 1.
    pub fn earned(&self) -> f64 {
        match (self.credit, self.verdict) {
            (Some(c), _) => c,
            (None, Verdict::Correct) => 1.0,
            (None, _) => 0.0,
        }
    }
}

/// The grading of a whole submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub set_id: String,
    pub title: String,
    /// One item per question of the set, in the set's order.
    pub items: Vec<Item>,
    /// Keys of the submission that are no question of the set (reported, otherwise ignored).
    pub unknown_ids: Vec<String>,
    /// What happened to the submission as a whole (a notebook that timed out, say).
    pub notes: Vec<String>,
}

impl Report {
    /// The verdict for a question id.
    pub fn verdict(&self, id: &str) -> Option<Verdict> {
        self.items.iter().find(|i| i.id == id).map(|i| i.verdict)
    }

    /// Number of correct answers.
    pub fn correct(&self) -> usize {
        self.count(Verdict::Correct)
    }

    /// Number of questions graded automatically (all but free text).
    pub fn gradable(&self) -> usize {
        self.items.len() - self.count(Verdict::Manual) - self.missing_free_text()
    }

    /// The points earned: one per correct answer, a share of one for a partly passed check.
    pub fn points(&self) -> f64 {
        self.items.iter().map(Item::earned).sum()
    }

    /// `points / gradable`, or `None` when nothing is gradable (for a TOML submission, where
    /// points are whole, `correct / gradable`).
    pub fn score(&self) -> Option<f64> {
        let g = self.gradable();
        (g > 0).then(|| self.points() / g as f64)
    }

    fn count(&self, v: Verdict) -> usize {
        self.items.iter().filter(|i| i.verdict == v).count()
    }

    fn missing_free_text(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.verdict == Verdict::Missing && i.expected.is_none())
            .count()
    }

    /// A readable report: a score line, one line per question, hints and links under wrong or
    /// hand-graded answers, and the unknown ids.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}: {}", self.set_id, self.title);
        for note in &self.notes {
            let _ = writeln!(s, "note: {note}");
        }
        let partial = self.items.iter().any(|i| i.credit.is_some());
        let score = match self.score() {
            Some(f) if partial => format!(
                "{} of {} checks passed, {} points of {} ({:.1}%)",
                self.correct(),
                self.gradable(),
                fmt_number((self.points() * 100.0).round() / 100.0),
                self.gradable(),
                100.0 * f
            ),
            Some(f) => format!(
                "{} of {} automatically graded answers correct ({:.1}%)",
                self.correct(),
                self.gradable(),
                100.0 * f
            ),
            None => "no automatically graded questions".to_string(),
        };
        let _ = writeln!(
            s,
            "score: {score}; {} to grade by hand; {} missing; {} unparseable",
            self.count(Verdict::Manual),
            self.count(Verdict::Missing),
            self.count(Verdict::Unparseable)
        );
        let width = self.items.iter().map(|i| i.id.len()).max().unwrap_or(2);
        for item in &self.items {
            let tag = format!("[{}]", item.verdict);
            let body = match item.verdict {
                Verdict::Correct => item.given.clone().unwrap_or_default(),
                Verdict::Incorrect => format!(
                    "expected {}, given {}",
                    item.expected.as_deref().unwrap_or("?"),
                    item.given.as_deref().unwrap_or("?")
                ),
                Verdict::Missing => match &item.detail {
                    Some(d) => format!("{d} ({})", item.prompt),
                    None => format!("no answer ({})", item.prompt),
                },
                Verdict::Unparseable => format!(
                    "given {}: {}",
                    item.given.as_deref().unwrap_or("?"),
                    item.detail.as_deref().unwrap_or("")
                ),
                Verdict::Manual => format!("grade by hand against {}", item.link),
            };
            let _ = writeln!(s, "{tag:<14}{:<width$}  {body}", item.id);
            let indent = " ".repeat(14 + width + 2);
            if item.verdict == Verdict::Incorrect {
                if let Some(d) = &item.detail {
                    let _ = writeln!(s, "{indent}{d}");
                }
                if let Some(h) = &item.hint {
                    let _ = writeln!(s, "{indent}hint: {h}");
                }
                let _ = writeln!(s, "{indent}worked answer: {}", item.link);
            }
        }
        if !self.unknown_ids.is_empty() {
            let _ = writeln!(
                s,
                "unknown ids (not questions of {}, ignored): {}",
                self.set_id,
                self.unknown_ids.join(", ")
            );
        }
        s
    }

    /// The report as pretty-printed JSON: `set`, `title`, `score` (`correct`, `gradable`,
    /// `fraction`), `questions` (one object per item) and `unknown_ids`. Expected and given
    /// values are strings, so that infinities survive.
    pub fn to_json(&self) -> String {
        let questions: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|i| {
                json!({
                    "id": i.id,
                    "prompt": i.prompt,
                    "verdict": i.verdict.as_str(),
                    "expected": i.expected,
                    "given": i.given,
                    "detail": i.detail,
                    "hint": i.hint,
                    "link": i.link,
                    "points": i.earned(),
                })
            })
            .collect();
        let value = json!({
            "set": self.set_id,
            "title": self.title,
            "score": {
                "correct": self.correct(),
                "gradable": self.gradable(),
                "points": self.points(),
                "fraction": self.score(),
            },
            "questions": questions,
            "unknown_ids": self.unknown_ids,
            "notes": self.notes,
        });
        format!("{value:#}")
    }
}

/// A number as the report prints it: integers plainly, others to 6 significant digits.
pub fn fmt_number(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == x.trunc() && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    if x.abs() >= 1e-4 && x.abs() < 1e6 {
        let digits = (5 - x.abs().log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.digits$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_string();
    }
    let s = format!("{x:.5e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if mantissa.contains('.') => {
            format!(
                "{}e{exp}",
                mantissa.trim_end_matches('0').trim_end_matches('.')
            )
        }
        _ => s,
    }
}

fn fmt_tol(value: f64, abs_tol: f64, rel_tol: f64) -> String {
    if value.is_infinite() {
        return String::new();
    }
    let tol = abs_tol + rel_tol * value.abs();
    if tol > 0.0 {
        format!(" (± {})", fmt_number(tol))
    } else {
        String::new()
    }
}

fn fmt_vector(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| fmt_number(*x)).collect();
    format!("[{}]", parts.join(", "))
}

/// What [`judge`] makes of one answer.
struct Judged {
    /// The expected answer as the report prints it (`None` for free text).
    shown: Option<String>,
    /// `None`: no answer; `Some(Ok(right))`; `Some(Err(why))`: unreadable.
    outcome: Option<Result<bool, String>>,
    /// What differs, when that is more than the values (e.g. a wrong length).
    detail: Option<String>,
}

/// Compares one given value (if any) with what the question expects.
fn judge(expected: &Expected, given: Option<&toml::Value>) -> Judged {
    let given = given.filter(|v| !is_blank(v));
    let mut detail = None;
    let (shown, outcome) = match expected {
        Expected::Number {
            value,
            abs_tol,
            rel_tol,
        } => (
            Some(format!(
                "{}{}",
                fmt_number(*value),
                fmt_tol(*value, *abs_tol, *rel_tol)
            )),
            given.map(|v| read_number(v).map(|x| within(x, *value, *abs_tol, *rel_tol))),
        ),
        Expected::Vector {
            values,
            abs_tol,
            rel_tol,
        } => {
            let outcome = given.map(|v| {
                read_vector(v).map(|g| {
                    if g.len() != values.len() {
                        detail = Some(format!("expected {} values, got {}", values.len(), g.len()));
                        return false;
                    }
                    g.iter()
                        .zip(values)
                        .all(|(g, e)| within(*g, *e, *abs_tol, *rel_tol))
                })
            });
            let tol = values
                .iter()
                .map(|v| fmt_tol(*v, *abs_tol, *rel_tol))
                .find(|t| !t.is_empty())
                .map(|t| format!("{t} each"))
                .unwrap_or_default();
            (Some(format!("{}{tol}", fmt_vector(values))), outcome)
        }
        Expected::Choice { accepted, shown } => (
            Some(format!("\"{shown}\"")),
            given.map(|v| {
                read_choice(v).map(|c| {
                    accepted
                        .iter()
                        .any(|a| super::value::normalize_choice(a) == c)
                })
            }),
        ),
        Expected::AnyOf(options) => {
            let judged: Vec<(&String, Judged)> = options
                .iter()
                .map(|(label, e)| (label, judge(e, given)))
                .collect();
            let shown = judged
                .iter()
                .map(|(label, j)| format!("{} ({label})", j.shown.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" or ");
            let outcome = given.map(|_| {
                let outcomes = || judged.iter().filter_map(|(_, j)| j.outcome.clone());
                if outcomes().any(|o| o == Ok(true)) {
                    Ok(true)
                } else if let Some(ok) = outcomes().find(|o| o.is_ok()) {
                    ok
                } else {
                    outcomes().next().unwrap_or(Ok(false))
                }
            });
            if outcome != Some(Ok(true)) {
                detail = judged.into_iter().find_map(|(_, j)| j.detail);
            }
            (Some(shown), outcome)
        }
        Expected::FreeText => (None, given.map(|_| Err(String::new()))),
    };
    Judged {
        shown,
        outcome,
        detail,
    }
}

/// Grades a parsed submission against a set.
pub fn grade_table(set: &QuestionSet, table: &toml::Table) -> Result<Report> {
    let questions = (set.questions)();
    let mut items = Vec::with_capacity(questions.len());
    for q in &questions {
        let expected = (q.expected)()
            .with_context(|| format!("computing the expected answer of {} / {}", set.id, q.id))?;
        let given = table.get(q.id);
        let mut item = Item {
            id: q.id.to_string(),
            prompt: q.prompt.to_string(),
            verdict: Verdict::Missing,
            expected: None,
            given: given.map(|v| v.to_string()),
            detail: None,
            hint: None,
            link: q.link.to_string(),
            credit: None,
        };
        let Judged {
            shown,
            outcome,
            detail,
        } = judge(&expected, given);
        item.detail = detail;
        item.expected = shown;
        item.verdict = match (&expected, outcome) {
            (_, None) => Verdict::Missing,
            (Expected::FreeText, Some(_)) => Verdict::Manual,
            (_, Some(Ok(true))) => Verdict::Correct,
            (_, Some(Ok(false))) => {
                item.hint = Some(q.hint.to_string());
                Verdict::Incorrect
            }
            (_, Some(Err(why))) => {
                item.detail = Some(why);
                Verdict::Unparseable
            }
        };
        items.push(item);
    }
    let mut unknown_ids: Vec<String> = table
        .keys()
        .filter(|k| !questions.iter().any(|q| q.id == k.as_str()))
        .cloned()
        .collect();
    unknown_ids.sort();
    Ok(Report {
        set_id: set.id.to_string(),
        title: set.title.to_string(),
        items,
        unknown_ids,
        notes: Vec::new(),
    })
}

/// Parses TOML text into a table, with the parser's line and column on error.
pub fn parse_submission(toml_str: &str) -> Result<toml::Table> {
    toml::from_str::<toml::Table>(toml_str).map_err(|e| {
        let full = e.to_string();
        let place = full.lines().next().unwrap_or("TOML parse error").trim();
        anyhow!(
            "the submission is not valid TOML ({place}: {}); write one `id = value` line per \
             question, e.g. `q6a = 7` or `q2 = [0.84, 0.54]`",
            e.message().trim().replace('\n', ", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_briefly() {
        assert_eq!(fmt_number(7.0), "7");
        assert_eq!(fmt_number(-std::f64::consts::LN_2), "-0.693147");
        assert_eq!(fmt_number(2.0 * 0.72f64.sqrt()), "1.69706");
        assert_eq!(fmt_number(0.28), "0.28");
        assert_eq!(fmt_number(f64::NEG_INFINITY), "-inf");
        assert_eq!(fmt_number(1e-7), "1e-7");
        assert_eq!(fmt_number(1.25e-8), "1.25e-8");
    }

    #[test]
    fn verdict_names_round_trip() {
        for v in ["correct", "incorrect", "missing", "unparseable", "manual"] {
            assert_eq!(Verdict::parse(v).map(|v| v.as_str()), Some(v));
        }
        assert_eq!(Verdict::parse("Correct"), Some(Verdict::Correct));
        assert_eq!(Verdict::parse("unknown"), None);
    }
}
