//! Grades the example submissions of `answers/examples/` for every question set:
//! `<set>-correct.toml` must be fully correct (free text: `manual`), and `<set>-mistakes.toml`
//! must get exactly the verdicts listed in `<set>-mistakes.expected.toml`.

use answers::grade::{grade_submission, sets, Expected, Verdict};
use std::path::PathBuf;

fn answers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../answers")
}

fn read(name: &str) -> String {
    let path = answers_dir().join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn correct_examples_are_fully_correct() {
    for set in sets() {
        let text = read(&format!("{}-correct.toml", set.id));
        let report = grade_submission(&set, &text).unwrap();
        assert!(
            report.unknown_ids.is_empty(),
            "{}: unknown ids {:?}",
            set.id,
            report.unknown_ids
        );
        for (q, item) in (set.questions)().iter().zip(&report.items) {
            let want = if (q.expected)().unwrap() == Expected::FreeText {
                Verdict::Manual
            } else {
                Verdict::Correct
            };
            assert_eq!(
                item.verdict,
                want,
                "{} / {}: {:?}\n{}",
                set.id,
                item.id,
                item.detail,
                report.to_text()
            );
        }
        assert!(report.gradable() > 0, "{} has nothing to grade", set.id);
        assert_eq!(report.score(), Some(1.0), "{}", set.id);
    }
}

#[test]
fn mistakes_examples_get_the_expected_verdicts() {
    for set in sets() {
        let report = grade_submission(&set, &read(&format!("{}-mistakes.toml", set.id))).unwrap();
        let expected: toml::Table = read(&format!("{}-mistakes.expected.toml", set.id))
            .parse()
            .unwrap();
        let mut unknown: Vec<String> = Vec::new();
        for (id, verdict) in &expected {
            let verdict = verdict
                .as_str()
                .unwrap_or_else(|| panic!("{id}: not a string"));
            if verdict == "unknown" {
                unknown.push(id.clone());
                continue;
            }
            let want = Verdict::parse(verdict).unwrap_or_else(|| panic!("{id}: bad verdict"));
            assert_eq!(
                report.verdict(id),
                Some(want),
                "{} / {id}\n{}",
                set.id,
                report.to_text()
            );
        }
        unknown.sort();
        assert_eq!(report.unknown_ids, unknown, "{}: unknown ids", set.id);
        // Every question of the set has an expected verdict.
        for q in (set.questions)() {
            assert!(
                expected.contains_key(q.id),
                "{}-mistakes.expected.toml lacks {}",
                set.id,
                q.id
            );
        }
        // The examples exercise the verdicts that matter.
        let has = |v: Verdict| report.items.iter().any(|i| i.verdict == v);
        assert!(
            has(Verdict::Incorrect) && has(Verdict::Missing),
            "{}",
            set.id
        );
    }
}

#[test]
fn readme_documents_every_id() {
    let readme = std::fs::read_to_string(answers_dir().join("README.md")).unwrap();
    for set in sets() {
        assert!(readme.contains(&format!("#### {}", set.id)), "{}", set.id);
        for q in (set.questions)() {
            assert!(
                readme.contains(&format!("`{}`", q.id)),
                "answers/README.md does not list {} / {}",
                set.id,
                q.id
            );
        }
    }
}

#[test]
fn links_point_at_existing_anchors() {
    for set in sets() {
        for q in (set.questions)() {
            let (file, anchor) = q.link.split_once('#').unwrap();
            let path = answers_dir().join("..").join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                text.contains(&format!("<a id=\"{anchor}\"></a>")),
                "{} has no anchor {anchor}",
                file
            );
        }
    }
}
