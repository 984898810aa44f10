//! `diffusion::check` records each verdict as a JSON line in the file `DIFFUSION_CHECK_LOG` names
//! (what `diffusion grade --notebook` reads). Alone in its test binary: it sets the variable.

use diffusion::check;

#[test]
fn verdicts_are_logged_as_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("checks.jsonl");
    std::env::set_var(check::LOG_VARIABLE, &log);
    let pass = check::guided_noise(|k, d, w| Ok(((k * (1.0 + w))? - (d * w)?)?));
    let fail = check::a_bar(|a| a.to_vec());
    std::env::remove_var(check::LOG_VARIABLE);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mine = |name: &str| {
        lines
            .iter()
            .rev()
            .find(|l| l["check"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(mine("guided_noise")["passed"], pass.passed);
    assert_eq!(mine("guided_noise")["total"], pass.total);
    assert_eq!(mine("a_bar")["passed"], fail.passed);
    assert!(mine("a_bar")["message"]
        .as_str()
        .unwrap()
        .contains("expected"));
}
