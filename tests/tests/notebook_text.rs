//! What the notebooks' own text promises: the numbers notebook 02's prose states about its own run,
//! checked against the outputs
//! the committed notebook carries (so that a re-run whose numbers move makes the text fail).

use serde_json::Value;

fn notebook() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../notebooks/02_diffusion.ipynb"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// The markdown of the cell whose first line is `heading`.
fn markdown(nb: &Value, heading: &str) -> String {
    nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["source"]))
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no cell {heading:?}"))
}

/// `(epoch, step, loss)` of the progress lines of the cell tagged `train`.
fn progress(nb: &Value) -> Vec<(usize, usize, f64)> {
    let cell = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["metadata"]["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "train"))
        })
        .expect("a cell tagged train");
    let mut out = vec![];
    for o in cell["outputs"].as_array().unwrap() {
        for line in text(&o["text"]).lines() {
            let parts: Vec<&str> = line.split('|').map(str::trim).collect();
            let num = |p: &str, key: &str| p.strip_prefix(key).map(|v| v.trim().to_string());
            if let (Some(e), Some(s), Some(l)) = (
                parts.first().and_then(|p| num(p, "Epoch")),
                parts.get(1).and_then(|p| num(p, "Step")),
                parts.get(2).and_then(|p| num(p, "Loss:")),
            ) {
                out.push((e.parse().unwrap(), s.parse().unwrap(), l.parse().unwrap()));
            }
        }
    }
    out
}

/// The two numbers of "between A and B" in `s`.
fn between(s: &str) -> (f64, f64) {
    let flat = s.replace('\n', " ");
    let rest = flat
        .split("lies between ")
        .nth(1)
        .expect("a range `lies between A and B`");
    let words: Vec<&str> = rest.split_whitespace().collect();
    let num = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
            .parse()
            .unwrap()
    };
    assert_eq!(words[1], "and");
    (num(words[0]), num(words[2]))
}

#[test]
fn the_training_text_states_the_committed_runs_loss_range_and_epoch_length() {
    let nb = notebook();
    let training = markdown(&nb, "## Training");
    let (lo, hi) = between(&training);
    let lines = progress(&nb);
    assert!(
        lines.len() >= 10,
        "the committed run's progress lines: {lines:?}"
    );
    let last_epoch = lines.iter().map(|l| l.0).max().unwrap();
    let last: Vec<f64> = lines
        .iter()
        .filter(|l| l.0 == last_epoch)
        .map(|l| l.2)
        .collect();
    assert!(
        last.iter().all(|&l| (lo..=hi).contains(&l)),
        "the text says the last epoch's losses lie in [{lo}, {hi}]; the run printed {last:?}"
    );
    // "One epoch is 70000 / 128 = 546 steps; the course trains for 3 epochs, 1,638 steps."
    let flat = training.replace('\n', " ");
    assert!(flat.contains("70000 / 128 = 546 steps"), "{training}");
    assert!(flat.contains("3 epochs, 1,638 steps"), "{training}");
    assert_eq!((70000 / 128, 3 * 546), (546, 1_638));
    let final_step = lines.iter().map(|l| l.1).max().unwrap();
    assert_eq!(final_step, 3 * 546, "three epochs of 546 steps");
}

/// The `:dep` lines of every notebook's first code cell: the kernel's build depends on them, and
/// the notebooks of the folder share one build only if they are the same.
#[test]
fn every_notebook_asks_for_the_same_dependencies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../notebooks");
    let mut deps = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".ipynb") && name.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let nb: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let first = nb["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cell_type"] == "code")
            .map(|c| text(&c["source"]))
            .unwrap_or_default();
        let lines: Vec<String> = first
            .lines()
            .filter(|l| l.trim_start().starts_with(":dep") || l.trim_start().starts_with("// :dep"))
            .map(str::to_owned)
            .collect();
        assert!(
            !lines.is_empty(),
            "{name} has no :dep line in its first code cell"
        );
        deps.push((name, lines));
    }
    assert!(deps.len() >= 2, "{deps:?}");
    for (name, lines) in &deps[1..] {
        assert_eq!(lines, &deps[0].1, "{name} and {} differ", deps[0].0);
    }
}
