//! The exercise notebooks (`notebooks/exercises/`) are what `diffusion exercises` makes of the
//! solutions today, and none of a solution's code reaches them.

use diffusion_cli::exercises::{exercise_files, exercise_notebook, stale_exercises};
use serde_json::Value;
use std::path::PathBuf;

fn notebooks() -> PathBuf {
    diffusion::data::workspace_root().join("notebooks")
}

#[test]
fn the_committed_exercise_notebooks_are_up_to_date() {
    let stale = stale_exercises(&notebooks()).unwrap();
    assert!(
        stale.is_empty(),
        "run `cargo run -p diffusion-cli -- exercises`: these differ from their solutions: {stale:?}"
    );
    // one exercise notebook per course notebook, and the kernel settings
    let files = exercise_files(&notebooks()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for n in [
        "01_unet.ipynb",
        "02_diffusion.ipynb",
        "03_optimizations.ipynb",
        "04_guidance.ipynb",
        "evcxr.toml",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

fn code_of(nb: &Value) -> String {
    nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| match &c["source"] {
            Value::Array(l) => l.iter().filter_map(Value::as_str).collect::<String>(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_solution_line_leaks_and_every_region_becomes_a_todo() {
    for (path, text) in exercise_files(&notebooks()).unwrap() {
        if path.extension().is_none_or(|e| e != "ipynb") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let solution: Value =
            serde_json::from_str(&std::fs::read_to_string(notebooks().join(&name)).unwrap())
                .unwrap();
        let (_, regions) = exercise_notebook(&solution, &name).unwrap();
        assert!(!regions.is_empty(), "{name} has no exercises");
        let exercise: Value = serde_json::from_str(&text).unwrap();
        let code = code_of(&exercise);
        assert_eq!(
            code.matches("todo!(").count(),
            regions.len(),
            "{name}: one todo! per region"
        );
        assert!(
            !code.contains("BEGIN SOLUTION") && !code.contains("END SOLUTION"),
            "{name}"
        );
        // every solution line of substance is absent from the exercise, anywhere (a copy of the
        // answer left in an unmarked cell would leak it)
        for region in &regions {
            assert_ne!(region.hint, "", "{name}: a region without a HINT line");
            for line in &region.solution {
                let t = line.trim();
                if t.len() >= 12 && !t.starts_with("//") {
                    assert!(
                        !code.contains(t),
                        "{name}: the solution line `{t}` leaks into the exercise"
                    );
                }
            }
        }
        // no outputs, no execution counts
        for cell in exercise["cells"].as_array().unwrap() {
            if cell["cell_type"] == "code" {
                assert_eq!(cell["outputs"], Value::Array(vec![]), "{name}");
                assert!(cell["execution_count"].is_null(), "{name}");
            }
        }
        assert_eq!(
            exercise["metadata"]["diffusion"]["exercise"],
            name.trim_end_matches(".ipynb")
        );
        assert!(
            code.contains("path = \"../../diffusion\""),
            "{name}: the crate is two folders up"
        );
    }
}
