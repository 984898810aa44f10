//! The grader: checks a student's TOML submission against a question set.
//!
//! ```text
//! diffusion grade --list                          the sets
//! diffusion grade --list --set assignment4        the questions of a set, with their types
//! diffusion grade --set assignment4 my.toml       a readable report
//! diffusion grade --set assignment4 my.toml --json
//! ```
//!
//! A submission has one `id = value` line per question (see `answers/README.md`). Expected
//! numbers are computed by [`crate::theory`] when grading, never stored.
//!
//! ```
//! use answers::grade::{find_set, grade_submission, Verdict};
//! let set = find_set("assignment4").unwrap();
//! let report = grade_submission(&set, "q6a = 7\nq7b_w = [4, 3]").unwrap();
//! assert_eq!(report.verdict("q6a"), Some(Verdict::Correct));
//! assert_eq!(report.verdict("q7b_w"), Some(Verdict::Incorrect));
//! assert_eq!(report.verdict("q2"), Some(Verdict::Missing));
//! ```

pub mod question;
pub mod report;
pub mod value;

pub mod assignment4;
pub mod ddpm_math;
pub mod generative_models;
pub mod vae_diffusion;

pub use question::{Expected, Question, QuestionSet};
pub use report::{Item, Report, Verdict};

use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Every question set, in the order `--list` prints them.
pub fn sets() -> Vec<QuestionSet> {
    vec![
        ddpm_math::set(),
        assignment4::set(),
        generative_models::set(),
        vae_diffusion::set(),
    ]
}

fn known_ids() -> String {
    sets().iter().map(|s| s.id).collect::<Vec<_>>().join(", ")
}

/// The set with this id (case-insensitive; `_` may stand for `-`).
pub fn find_set(id: &str) -> Result<QuestionSet> {
    let wanted = id.trim().to_lowercase().replace('_', "-");
    sets().into_iter().find(|s| s.id == wanted).ok_or_else(|| {
        anyhow!(
            "unknown question set '{id}'; known sets: {} (see `diffusion grade --list`)",
            known_ids()
        )
    })
}

/// Grades TOML text against a set. Errors only for invalid TOML (with the parser's line and
/// column) or an expected answer the crate fails to compute; anything wrong with single answers
/// is a verdict in the report.
pub fn grade_submission(set: &QuestionSet, toml_str: &str) -> Result<Report> {
    let table = report::parse_submission(toml_str)?;
    report::grade_table(set, &table)
}

/// The kind of answer a question takes, as listed: `number`, `vector`, `choice` or `text`.
pub fn kind(expected: &Expected) -> &'static str {
    match expected {
        Expected::Number { .. } => "number",
        Expected::Vector { .. } => "vector",
        Expected::Choice { .. } => "choice",
        Expected::AnyOf(options) => options.first().map(|(_, e)| kind(e)).unwrap_or("number"),
        Expected::FreeText => "text",
    }
}

/// Text listing the sets, or with `set` the questions of that set.
pub fn list_text(set: Option<&QuestionSet>) -> Result<String> {
    let mut s = String::new();
    match set {
        None => {
            let _ = writeln!(
                s,
                "question sets (grade with `diffusion grade --set ID FILE.toml`):"
            );
            for set in sets() {
                let n = (set.questions)().len();
                let _ = writeln!(s, "  {:<20}{n:>3} questions  {}", set.id, set.title);
            }
        }
        Some(set) => {
            let _ = writeln!(s, "{}: {}", set.id, set.title);
            for q in (set.questions)() {
                let e = (q.expected)().with_context(|| format!("question {}", q.id))?;
                let _ = writeln!(s, "  {:<8}{:<8}{}", q.id, kind(&e), q.prompt);
            }
        }
    }
    Ok(s)
}

fn list_json(set: Option<&QuestionSet>) -> Result<String> {
    let value = match set {
        None => serde_json::Value::Array(
            sets()
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id,
                        "title": s.title,
                        "questions": (s.questions)().len(),
                    })
                })
                .collect(),
        ),
        Some(set) => {
            let mut qs = Vec::new();
            for q in (set.questions)() {
                let e = (q.expected)().with_context(|| format!("question {}", q.id))?;
                qs.push(serde_json::json!({
                    "id": q.id,
                    "kind": kind(&e),
                    "prompt": q.prompt,
                    "link": q.link,
                }));
            }
            serde_json::json!({ "id": set.id, "title": set.title, "questions": qs })
        }
    };
    Ok(format!("{value:#}"))
}

/// What `diffusion grade` prints, for its arguments `--set`, `--list`, the submission file and
/// `--json`. Errors say what to pass instead.
pub fn run_grade_cli(
    set: Option<&str>,
    list: bool,
    file: Option<&Path>,
    json: bool,
) -> Result<String> {
    let set = set.map(find_set).transpose()?;
    if list {
        return if json {
            list_json(set.as_ref())
        } else {
            list_text(set.as_ref())
        };
    }
    let Some(set) = set else {
        bail!(
            "choose a question set: `diffusion grade --set ID FILE.toml` (known sets: {}), \
             or list them with `diffusion grade --list`",
            known_ids()
        );
    };
    let Some(file) = file else {
        bail!(
            "give the submission to grade: `diffusion grade --set {} FILE.toml` \
             (the format is described in answers/README.md)",
            set.id
        );
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the submission {}", file.display()))?;
    let report = grade_submission(&set, &text)
        .with_context(|| format!("grading {} against set {}", file.display(), set.id))?;
    Ok(if json {
        report.to_json()
    } else {
        report.to_text()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a4() -> QuestionSet {
        find_set("assignment4").unwrap()
    }

    fn gm() -> QuestionSet {
        find_set("generative-models").unwrap()
    }

    #[test]
    fn unknown_set_lists_the_known_ones() {
        let err = find_set("assignment5").err().unwrap().to_string();
        assert!(err.contains("assignment5"), "{err}");
        for s in sets() {
            assert!(err.contains(s.id), "{err}");
        }
        // `_` for `-` and upper case are accepted.
        assert_eq!(
            find_set("Generative_Models").unwrap().id,
            "generative-models"
        );
    }

    #[test]
    fn ids_are_unique_lower_case_and_linked() {
        for set in sets() {
            let qs = (set.questions)();
            for (i, q) in qs.iter().enumerate() {
                assert!(
                    q.id.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{}",
                    q.id
                );
                assert!(!qs[..i].iter().any(|p| p.id == q.id), "duplicate {}", q.id);
                assert!(q.link.starts_with("answers/") && q.link.contains(".md#"));
                let e = (q.expected)().unwrap();
                if e != Expected::FreeText {
                    assert!(!q.hint.is_empty(), "{} needs a hint", q.id);
                }
            }
        }
    }

    #[test]
    fn invalid_toml_reports_line_and_column() {
        let err = grade_submission(&a4(), "q6a = 7\nq2 = [1, 2\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        assert!(err.contains("line 2") || err.contains("line 3"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    #[test]
    fn missing_and_unknown_ids() {
        let r = grade_submission(&a4(), "q6a = 7\nq9 = 1\nq6_a = 7\nq5 = \"\"").unwrap();
        assert_eq!(r.verdict("q6a"), Some(Verdict::Correct));
        assert_eq!(r.verdict("q6c"), Some(Verdict::Missing));
        assert_eq!(r.verdict("q5"), Some(Verdict::Missing)); // blank free text
        assert_eq!(r.unknown_ids, vec!["q6_a".to_string(), "q9".to_string()]);
        assert!(r.to_text().contains("unknown ids"));
        // 8 gradable questions (11 minus 3 free text), 1 correct.
        assert_eq!((r.correct(), r.gradable()), (1, 8));
        assert_eq!(r.score(), Some(1.0 / 8.0));
    }

    #[test]
    fn choices_ignore_case_and_whitespace() {
        let r = grade_submission(
            &a4(),
            "q6b = \"  RuntimeError \"\nq7a = \"NONE\"\nq6c = false",
        )
        .unwrap();
        for id in ["q6b", "q7a", "q6c"] {
            assert_eq!(r.verdict(id), Some(Verdict::Correct), "{id}");
        }
        let r =
            grade_submission(&gm(), "1c = \"(A) and (C)\"\n1a = \"Normalizing  Flows\"").unwrap();
        assert_eq!(r.verdict("1c"), Some(Verdict::Correct));
        assert_eq!(r.verdict("1a"), Some(Verdict::Correct));
        let r = grade_submission(&a4(), "q6b = \"none\"\nq7a = 0").unwrap();
        assert_eq!(r.verdict("q6b"), Some(Verdict::Incorrect));
        assert_eq!(r.verdict("q7a"), Some(Verdict::Unparseable));
    }

    /// A submission that writes, for every question of every set, the expected answer the
    /// report shows: each must be graded correct (one submission per option where a question
    /// admits several).
    #[test]
    fn every_shown_answer_is_accepted() {
        fn answers(e: &Expected) -> Vec<toml::Value> {
            let num = |x: f64| toml::Value::Float(x);
            match e {
                Expected::Number { value, .. } => vec![num(*value)],
                Expected::Vector { values, .. } => {
                    vec![toml::Value::Array(values.iter().map(|x| num(*x)).collect())]
                }
                Expected::Choice { shown, .. } => vec![toml::Value::String(shown.clone())],
                Expected::AnyOf(options) => options.iter().flat_map(|(_, e)| answers(e)).collect(),
                Expected::FreeText => vec![],
            }
        }
        for set in sets() {
            for q in (set.questions)() {
                let expected = (q.expected)().unwrap();
                for given in answers(&expected) {
                    let mut table = toml::Table::new();
                    table.insert(q.id.to_string(), given.clone());
                    let r = report::grade_table(&set, &table).unwrap();
                    assert_eq!(
                        r.verdict(q.id),
                        Some(Verdict::Correct),
                        "{} / {}: {given}",
                        set.id,
                        q.id
                    );
                }
            }
        }
    }

    #[test]
    fn conventions_the_question_leaves_open_are_both_accepted() {
        // assignment4 q2: q1's formula as written (exponent i/d) and the shared-pair layout.
        let written = "q2 = [0.841471, 0.950415, 0.099833, 0.999500, 0.0099998, 0.999995, \
                       0.0010000, 1.0]";
        let pairs = "q2 = [0.841471, 0.540302, 0.099833, 0.995004, 0.0099998, 0.999950, \
                     0.0010000, 0.9999995]";
        for sub in [written, pairs] {
            let r = grade_submission(&a4(), sub).unwrap();
            assert_eq!(r.verdict("q2"), Some(Verdict::Correct), "{sub}");
        }
        let r = grade_submission(&a4(), "q2 = [1, 0, 0, 0, 0, 0, 0, 0]").unwrap();
        assert_eq!(r.verdict("q2"), Some(Verdict::Incorrect));
        let shown = r.items.iter().find(|i| i.id == "q2").unwrap();
        assert!(shown.expected.as_deref().unwrap_or("").contains(" or "));
        // ddpm-math q13b: the population and the sample standard deviation (0.3% apart, more
        // than the 0.1% tolerance) are both right; a value between them is not.
        let dm = find_set("ddpm-math").unwrap();
        for (value, verdict) in [
            ("1.7320", Verdict::Correct),
            ("1.7378", Verdict::Correct),
            ("1.7349", Verdict::Incorrect),
        ] {
            let r = grade_submission(&dm, &format!("q13b = {value}")).unwrap();
            assert_eq!(r.verdict("q13b"), Some(verdict), "q13b = {value}");
        }
        // ddpm-math q11c: the form the report shows is accepted as written.
        let r = grade_submission(&dm, "q11c = \"small t (little noise)\"").unwrap();
        assert_eq!(r.verdict("q11c"), Some(Verdict::Correct));
    }

    #[test]
    fn shapes_in_parentheses_and_unicode_minus() {
        let dm = find_set("ddpm-math").unwrap();
        let r = grade_submission(&dm, "q14a = \"(128, 1, 16, 16)\"").unwrap();
        assert_eq!(r.verdict("q14a"), Some(Verdict::Correct));
        let r = grade_submission(&gm(), "2a = \"\u{2212}0.6931\"").unwrap();
        assert_eq!(r.verdict("2a"), Some(Verdict::Correct));
    }

    #[test]
    fn unparseable_values() {
        let r = grade_submission(
            &a4(),
            "q6a = \"seven\"\nq4 = 8\nq7b_x = nan\nq7b_w = [4, \"two\"]\nq2 = { a = 1 }",
        )
        .unwrap();
        for id in ["q6a", "q4", "q7b_x", "q7b_w", "q2"] {
            assert_eq!(r.verdict(id), Some(Verdict::Unparseable), "{id}");
        }
        let item = r.items.iter().find(|i| i.id == "q4").unwrap();
        assert!(item.detail.as_deref().unwrap_or("").contains("list"));
    }

    #[test]
    fn numbers_as_strings_and_shapes() {
        let r = grade_submission(&a4(), "q6a = \"7/1\"\nq7b_x = \"7.0\"\nq4 = \"8x8\"").unwrap();
        for id in ["q6a", "q7b_x", "q4"] {
            assert_eq!(r.verdict(id), Some(Verdict::Correct), "{id}");
        }
        let r =
            grade_submission(&gm(), "2a = \"-0.6931\"\nnum_a = [\"9/10\", \"4/5\", 0.72]").unwrap();
        assert_eq!(r.verdict("2a"), Some(Verdict::Correct));
        assert_eq!(r.verdict("num_a"), Some(Verdict::Correct));
    }

    #[test]
    fn tolerance_edges_on_a_vector() {
        // q2 is checked to 1e-4 per entry.
        let exact = [
            1f64.sin(),
            1f64.cos(),
            0.1f64.sin(),
            0.1f64.cos(),
            0.01f64.sin(),
            0.01f64.cos(),
            0.001f64.sin(),
            0.001f64.cos(),
        ];
        let shifted = |d: f64| {
            let v: Vec<String> = exact.iter().map(|x| format!("{}", x + d)).collect();
            format!("q2 = [{}]", v.join(", "))
        };
        let inside = grade_submission(&a4(), &shifted(0.9e-4)).unwrap();
        assert_eq!(inside.verdict("q2"), Some(Verdict::Correct));
        let outside = grade_submission(&a4(), &shifted(-1.1e-4)).unwrap();
        assert_eq!(outside.verdict("q2"), Some(Verdict::Incorrect));
        let short = grade_submission(&a4(), "q2 = [0.841471, 0.540302]").unwrap();
        assert_eq!(short.verdict("q2"), Some(Verdict::Incorrect));
        let item = short.items.iter().find(|i| i.id == "q2").unwrap();
        assert_eq!(item.detail.as_deref(), Some("expected 8 values, got 2"));
    }

    #[test]
    fn infinities() {
        let r = grade_submission(&gm(), "2c = inf\n2e = \"-∞\"").unwrap();
        assert_eq!(r.verdict("2c"), Some(Verdict::Correct));
        assert_eq!(r.verdict("2e"), Some(Verdict::Correct));
        let r = grade_submission(&gm(), "2c = 1e308\n2e = -0.5").unwrap();
        assert_eq!(r.verdict("2c"), Some(Verdict::Incorrect));
        assert_eq!(r.verdict("2e"), Some(Verdict::Incorrect));
        assert!(r.to_json().contains("\"expected\": \"inf\""));
    }

    #[test]
    fn text_and_json_reports() {
        let r = grade_submission(&a4(), "q6a = 6\nq1 = \"sin and cos\"").unwrap();
        let text = r.to_text();
        assert!(
            text.contains("[incorrect]") && text.contains("expected 7 (± 1e-6), given 6"),
            "{text}"
        );
        assert!(text.contains("hint: dy/dx = 2x + 3"), "{text}");
        assert!(text.contains("answers/assignment4.md#q1"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["set"], "assignment4");
        assert_eq!(json["score"]["correct"], 0);
        assert_eq!(json["score"]["gradable"], 8);
        let q6a = json["questions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == "q6a")
            .unwrap();
        assert_eq!(q6a["verdict"], "incorrect");
        assert_eq!(q6a["given"], "6");
        assert_eq!(q6a["hint"], "dy/dx = 2x + 3");
    }

    #[test]
    fn command_line_entry() {
        let list = run_grade_cli(None, true, None, false).unwrap();
        for s in sets() {
            assert!(list.contains(s.id));
        }
        let q = run_grade_cli(Some("vae-diffusion"), true, None, false).unwrap();
        assert!(q.contains("q3d") && q.contains("number"));
        let j: serde_json::Value =
            serde_json::from_str(&run_grade_cli(None, true, None, true).unwrap()).unwrap();
        assert!(j.as_array().is_some_and(|a| a.len() == sets().len()));
        let no_set = run_grade_cli(None, false, None, false)
            .unwrap_err()
            .to_string();
        assert!(no_set.contains("--set"), "{no_set}");
        let no_file = run_grade_cli(Some("assignment4"), false, None, false)
            .unwrap_err()
            .to_string();
        assert!(no_file.contains("FILE.toml"), "{no_file}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing.toml");
        let err = run_grade_cli(Some("assignment4"), false, Some(&missing), false).unwrap_err();
        assert!(format!("{err:#}").contains("nothing.toml"));
        let file = dir.path().join("my.toml");
        std::fs::write(&file, "q6a = 7\n").unwrap();
        let out = run_grade_cli(Some("assignment4"), false, Some(&file), false).unwrap();
        assert!(out.contains("1 of 8"), "{out}");
        let out = run_grade_cli(Some("assignment4"), false, Some(&file), true).unwrap();
        assert!(out.trim_start().starts_with('{'));
        assert!(run_grade_cli(Some("nope"), true, None, false).is_err());
    }
}
