//! `diffusion grade --notebook` on the committed example submissions of notebook 02's exercises
//! (`answers/examples/notebooks/`): a correct one, one with the usual mistakes, one that does not
//! compile and one that loops forever, graded as one folder. Each runs in a fresh kernel; the
//! reports must say what each check found, and the submissions' folder must be left as it was.
//!
//! Like the notebook test it needs `make setup` (the kernel, JupyterLab), so it is `#[ignore]`d
//! by a plain `cargo test` and run by `make test`.

use answers::grade::{Report, Verdict};
use diffusion_cli::grade_notebook::{csv, grade_notebook, submissions, GradeSettings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn item<'a>(r: &'a Report, check: &str) -> &'a answers::grade::Item {
    r.items
        .iter()
        .find(|i| i.id == check)
        .unwrap_or_else(|| panic!("no item {check} in\n{}", r.to_text()))
}

#[test]
#[ignore = "needs `make setup` (the Rust kernel and JupyterLab); `make test` runs it"]
fn grading_the_example_submissions_gives_the_expected_reports() {
    let root = diffusion::data::workspace_root();
    let folder = root.join("answers/examples/notebooks");
    let before = snapshot(&folder);
    let mut settings = GradeSettings::new(&root);
    settings.work = root.join("target/grade-test");
    let mut reports = Vec::new();
    // the endless one last, with a shorter limit, once the others have compiled the crate in the
    // new build directory (the limit must leave time for its kernel start, first cell and the four
    // graded cells before the endless one: a whole submission takes 27-43 s on a 2-core machine)
    let mut all = submissions(&folder).unwrap();
    all.sort_by_key(|p| p.to_string_lossy().contains("loops-forever"));
    for s in all {
        let endless = s.to_string_lossy().contains("loops-forever");
        settings.time_limit = Duration::from_secs(if endless { 60 } else { 600 });
        let started = std::time::Instant::now();
        let r = grade_notebook(&settings, &s).unwrap();
        eprintln!(
            "{} graded in {:.0} s:\n{}",
            s.display(),
            started.elapsed().as_secs_f64(),
            r.to_text()
        );
        reports.push((s, r));
    }
    let by = |name: &str| {
        &reports
            .iter()
            .find(|(p, _)| p.file_stem().unwrap() == name)
            .unwrap()
            .1
    };
    let checks = ["a_bar", "q", "get_loss", "reverse_q", "sample"];

    let correct = by("02-correct");
    for c in checks {
        assert_eq!(
            item(correct, c).verdict,
            Verdict::Correct,
            "{}",
            correct.to_text()
        );
    }
    assert_eq!(correct.points(), 5.0);
    assert!(
        correct.notes[0].starts_with("ran to the end"),
        "{:?}",
        correct.notes
    );

    let mistakes = by("02-mistakes");
    let hint = |c: &str| item(mistakes, c).hint.clone().unwrap_or_default();
    assert!(
        hint("a_bar").contains("*product*"),
        "{}",
        mistakes.to_text()
    );
    assert!(
        hint("q").contains("[batch, 1, 1, 1]"),
        "{}",
        mistakes.to_text()
    );
    assert!(
        hint("reverse_q").contains("add no noise"),
        "{}",
        mistakes.to_text()
    );
    for c in checks {
        assert_eq!(
            item(mistakes, c).verdict,
            Verdict::Incorrect,
            "{c}: {}",
            mistakes.to_text()
        );
    }
    // q is right for a batch of one (nothing to broadcast): partial credit
    let q = item(mistakes, "q");
    assert!(
        q.earned() > 0.0 && q.earned() < 1.0,
        "{}",
        mistakes.to_text()
    );

    let broken = by("02-does-not-compile");
    for c in ["q", "get_loss"] {
        let i = item(broken, c);
        assert_eq!(i.verdict, Verdict::Missing, "{}", broken.to_text());
        assert!(
            i.detail
                .as_deref()
                .unwrap_or("")
                .contains("did not compile"),
            "{}",
            broken.to_text()
        );
    }
    for c in ["a_bar", "reverse_q", "sample"] {
        assert_eq!(
            item(broken, c).verdict,
            Verdict::Correct,
            "{c}: {}",
            broken.to_text()
        );
    }
    assert!(
        broken.notes.iter().any(|n| n.contains("first error")),
        "{:?}",
        broken.notes
    );

    let looping = by("02-loops-forever");
    assert!(
        looping.notes[0].contains("time limit"),
        "{:?}",
        looping.notes
    );
    let sample = item(looping, "sample");
    assert_eq!(sample.verdict, Verdict::Missing, "{}", looping.to_text());
    assert!(sample
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("time limit"));
    for c in ["a_bar", "q", "get_loss", "reverse_q"] {
        assert_eq!(
            item(looping, c).verdict,
            Verdict::Correct,
            "{c}: {}",
            looping.to_text()
        );
    }

    // one CSV row per student, and the JSON report names the points
    let table = csv(&reports);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[0].starts_with("student,exercise,points,of,a_bar,q,get_loss,reverse_q,sample"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("02-correct,02_diffusion,5.000,5,")),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&correct.to_json()).unwrap();
    assert_eq!(json["score"]["points"], 5.0);

    assert_eq!(
        snapshot(&folder),
        before,
        "grading modified the submissions' folder"
    );
}
