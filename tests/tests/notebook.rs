//! Runs the notebooks (`notebooks/01_unet.ipynb` to `notebooks/04_guidance.ipynb`) headless, as a
//! student would run them top to bottom, on a copy (the committed notebook is never written),
//! with a short training (`DIFFUSION_MAX_STEPS`) and at most [`MAX_SAMPLES`] images per sampling
//! call (`DIFFUSION_MAX_SAMPLES`), then checks their outputs:
//!
//! - no cell reports an error, neither as an error output (compilation errors, panics) nor on
//!   stderr (where evcxr prints an error returned by `?`);
//! - every cell tagged `figure` shows a picture (PNG, SVG, or HTML holding `<img` or `<svg`);
//! - every exercise's check (`diffusion::check::...`) shows PASS for the solution;
//! - the training cell's progress lines show the loss falling;
//! - running the training cell a second time (a copy of it appended at the end, after a cell that
//!   lowers the step limit) goes on from the step where the first run stopped, instead of
//!   starting again from step 0.
//!
//! It needs `make setup` (the Rust kernel in `.tools/`, JupyterLab in `.venv/`, the data), so it
//! is marked `#[ignore]`: a plain `cargo test --workspace` lists it as ignored in its summary, and
//! `make test` runs it (`-- --include-ignored`), failing with what is missing if set-up was not
//! done.
//!
//! Each notebook has its own checks of what its text claims (the score lines). The copies run in
//! `target/notebook-test/`, laid out like the repository (`notebooks/`, `diffusion` linked), with
//! one evcxr build directory that they share, one kernel at a time, and that never disturbs a
//! kernel open in JupyterLab. The first run compiles the dependencies (minutes); later runs, and
//! the second notebook, are warm.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use diffusion_cli::exercises::source_of;

/// One kernel at a time in the shared build directory.
static KERNEL: Mutex<()> = Mutex::new(());

/// Steps of training in the test run of notebooks 01 and 02: enough for two progress lines (one
/// every 100 steps, the last at the end). The wider networks of notebooks 03 and 04 (about 1.4
/// steps a second on 2 cores) get 30, the assessment's 28 x 28 one (0.4 a second) 10: a single
/// progress line, whose loss must still be below 0.8 x the untrained model's.
const MAX_STEPS: usize = 200;

/// Steps of the training cell's re-run: it only has to show that training goes on from where it
/// stopped.
const RERUN_STEPS: usize = 3;

/// Images per sampling call in the test run (the notebooks score 500): still more than the
/// classifier's 128 features, which the Fréchet distance's covariance needs.
const MAX_SAMPLES: usize = 150;

/// The end of a score line over [`MAX_SAMPLES`] samples and the rest of the 10,000 test images.
fn score_sizes() -> String {
    format!(
        "N = {MAX_SAMPLES} against {} real test images",
        10_000 - MAX_SAMPLES
    )
}

fn root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// What `make setup` provides; the first missing piece, if any.
fn missing_setup(root: &Path) -> Option<String> {
    let needed = [
        (".venv/bin/jupyter", "JupyterLab and nbconvert in .venv/"),
        (
            ".venv/share/jupyter/kernels/rust/kernel.json",
            "the Rust kernel's kernelspec",
        ),
        (
            ".tools/bin/evcxr_jupyter",
            "the Rust kernel evcxr_jupyter in .tools/",
        ),
    ];
    for (path, what) in needed {
        if !root.join(path).exists() {
            return Some(format!("{what} ({path} is missing)"));
        }
    }
    if !diffusion::data::files_present(&diffusion::data::data_dir(None)) {
        return Some("the FashionMNIST files (data/fashion-mnist)".to_string());
    }
    None
}

fn has_tag(cell: &Value, tag: &str) -> bool {
    cell["metadata"]["tags"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// All stdout text of a cell, in order.
fn stdout_of(cell: &Value) -> String {
    let mut text = String::new();
    for out in cell["outputs"].as_array().into_iter().flatten() {
        if out["output_type"] == "stream" && out["name"] == "stdout" {
            text.push_str(&text_of(&out["text"]));
        }
    }
    text
}

/// Whether a cell shows a picture.
fn has_figure(cell: &Value) -> bool {
    cell["outputs"].as_array().into_iter().flatten().any(|out| {
        let data = &out["data"];
        data.get("image/png").is_some()
            || data.get("image/gif").is_some()
            || data.get("image/svg+xml").is_some()
            || data.get("text/html").is_some_and(|h| {
                let h = text_of(h);
                h.contains("<img") || h.contains("<svg")
            })
    })
}

fn html_of(cell: &Value) -> String {
    let mut html = String::new();
    for out in cell["outputs"].as_array().into_iter().flatten() {
        if let Some(h) = out["data"].get("text/html") {
            html.push_str(&text_of(h));
        }
    }
    html
}

/// `(step, loss)` of every progress line `Epoch e | Step s | Loss: l` in `text`.
fn progress(text: &str) -> Vec<(usize, f64)> {
    let mut points = Vec::new();
    for line in text.lines() {
        let mut step = None;
        let mut loss = None;
        for part in line.split('|').map(str::trim) {
            if let Some(s) = part.strip_prefix("Step") {
                step = s.trim().parse::<usize>().ok();
            } else if let Some(l) = part.strip_prefix("Loss") {
                loss = l.trim_start_matches(':').trim().parse::<f64>().ok();
            }
        }
        if let (Some(s), Some(l)) = (step, loss) {
            points.push((s, l));
        }
    }
    points
}

fn new_code_cell(source: &str) -> Value {
    json!({
        "cell_type": "code",
        "execution_count": null,
        "metadata": {},
        "outputs": [],
        "source": source,
    })
}

/// Lays out `work/` like the repository: `notebooks/` with the evcxr settings and the notebook
/// copy, `diffusion` a link to the crate (the notebook's `:dep` says `../diffusion`).
fn prepare(root: &Path, work: &Path, name: &str, notebook: &Value) -> Result<PathBuf> {
    let nb_dir = work.join("notebooks");
    std::fs::create_dir_all(nb_dir.join(".evcxr"))?;
    let link = work.join("diffusion");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(root.join("diffusion"), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    std::fs::copy(root.join("notebooks/evcxr.toml"), nb_dir.join("evcxr.toml"))?;
    // Start from the build `make setup` warmed (notebooks/.evcxr): cargo reuses the compiled
    // registry crates and rebuilds only the project's own, whose paths differ here.
    let target = nb_dir.join(".evcxr/target");
    let warm = root.join("notebooks/.evcxr/target");
    if !target.exists() && warm.exists() {
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&warm)
            .arg(&target)
            .status();
        if !copied.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir_all(&target); // a cold build then, not a broken one
        }
    }
    let path = nb_dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(notebook)?)?;
    Ok(path)
}

/// All stdout lines of the notebook, in order.
fn stdout_lines(cells: &[Value]) -> Vec<String> {
    cells
        .iter()
        .flat_map(|c| stdout_of(c).lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// `(FD, its real floor)` of a score line `... FD f (real floor g) | ...`.
fn fd_and_floor(line: &str) -> Option<(f64, f64)> {
    let rest = &line[line.find("FD ")? + 3..];
    let numbers: Vec<f64> = rest
        .split(['(', ')', ' '])
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    (numbers.len() == 2).then(|| (numbers[0], numbers[1]))
}

/// Runs `notebooks/<name>` and makes the checks every notebook shares (see the top of the file);
/// returns the executed cells for the notebook's own checks.
fn run_notebook(name: &str, min_figures: usize, max_steps: usize) -> Result<Vec<Value>> {
    let _one_kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    if let Some(missing) = missing_setup(&root) {
        bail!("the notebook cannot run: {missing}; run `make setup` first");
    }

    let committed = root.join("notebooks").join(name);
    let mut notebook: Value = serde_json::from_str(&std::fs::read_to_string(&committed)?)?;
    let cells = notebook["cells"]
        .as_array()
        .context("notebook without cells")?;
    let figures_expected = cells.iter().filter(|c| has_tag(c, "figure")).count();
    assert!(
        figures_expected >= min_figures,
        "{name} should tag at least {min_figures} cells `figure`, found {figures_expected}"
    );
    let train_source = cells
        .iter()
        .find(|c| has_tag(c, "train"))
        .map(source_of)
        .context("no cell tagged `train`")?;
    // Running the training cell again must go on from where it stopped (the limit counts the
    // steps of one run of the cell): a cell that lowers the limit to [`RERUN_STEPS`], then a
    // copy of the training cell.
    let n_cells = cells.len();
    let cells = notebook["cells"]
        .as_array_mut()
        .context("notebook without cells")?;
    cells.push(new_code_cell(&format!(
        "unsafe {{ std::env::set_var(\"DIFFUSION_MAX_STEPS\", \"{RERUN_STEPS}\") }};"
    )));
    cells.push(new_code_cell(&train_source));

    let work = root.join("target/notebook-test");
    let copy = prepare(&root, &work, name, &notebook)?;
    let executed = work.join(format!("executed-{name}"));
    let _ = std::fs::remove_file(&executed);

    let started = std::time::Instant::now();
    let out = Command::new(root.join(".venv/bin/jupyter"))
        .args([
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            // keep going past a failing cell, so that the checks below name the first one
            // with its message (evcxr writes the message to stderr, not to the error reply)
            "--allow-errors",
            "--ExecutePreprocessor.timeout=1800",
            "--output",
        ])
        .arg(&executed)
        .arg(&copy)
        .env("DIFFUSION_MAX_STEPS", max_steps.to_string())
        .env("DIFFUSION_MAX_SAMPLES", MAX_SAMPLES.to_string())
        .output()
        .context("starting .venv/bin/jupyter nbconvert")?;
    eprintln!(
        "{name} executed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(6000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("the notebook failed to run ({}):\n{tail}", out.status);
    }

    let done: Value = serde_json::from_str(&std::fs::read_to_string(&executed)?)?;
    let cells = done["cells"]
        .as_array()
        .context("executed notebook without cells")?;
    assert_eq!(cells.len(), n_cells + 2, "cells were lost on the way");

    for (i, cell) in cells.iter().enumerate() {
        for out in cell["outputs"].as_array().into_iter().flatten() {
            assert_ne!(
                out["output_type"],
                "error",
                "cell {i} reported an error: {out}\nsource:\n{}",
                source_of(cell)
            );
            // evcxr prints an error returned by `?` to stderr (no error output), and only
            // errors go there.
            assert!(
                !(out["output_type"] == "stream" && out["name"] == "stderr"),
                "cell {i} wrote to stderr: {}\nsource:\n{}",
                text_of(&out["text"]),
                source_of(cell)
            );
        }
        if has_tag(cell, "figure") {
            assert!(
                has_figure(cell),
                "cell {i} should show a figure but shows none; source:\n{}",
                source_of(cell)
            );
        }
        // the solutions pass their own exercises' checks: one verdict per check call, each PASS
        let calls = source_of(cell).matches("diffusion::check::").count();
        if calls > 0 {
            let shown = format!("{}{}", stdout_of(cell), html_of(cell));
            let passes = shown.matches("PASS ").count();
            assert!(
                passes == calls && !shown.contains("FAIL "),
                "cell {i}: {calls} checks, {passes} shown as passed:\n{shown}"
            );
        }
    }

    // The training cell: progress lines with a falling loss, then one figure with the sample
    // strips, each captioned `Epoch e | Step s | Loss l`.
    let train = cells
        .iter()
        .find(|c| has_tag(c, "train"))
        .context("no cell tagged `train` after execution")?;
    // one line every 100 steps and one at the end; a short run must at least have learnt a little
    let lines = (max_steps / 100).clamp(1, 3);
    let trained = if max_steps >= 200 { 0.6 } else { 0.8 };
    let first = progress(&stdout_of(train));
    assert!(
        first.len() >= lines,
        "expected at least {lines} progress lines `Epoch e | Step s | Loss: l` in the training cell, got {first:?}"
    );
    let (s0, l0) = first[0];
    let (s1, l1) = first[first.len() - 1];
    assert!(
        s1 <= max_steps,
        "trained past DIFFUSION_MAX_STEPS: step {s1}"
    );
    // the untrained model's loss on one batch, printed before training (about 1: it predicts
    // unit-variance noise no better than zero would)
    let untrained = stdout_lines(cells)
        .iter()
        .find_map(|l| {
            l.strip_prefix("loss of the untrained model on one batch of 128: ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .context("no line `loss of the untrained model on one batch of 128: l`")?;
    assert!(
        l0 < trained * untrained && (first.len() == 1 || l1 < l0),
        "the loss should fall: untrained {untrained}, step {s0} loss {l0}, step {s1} loss {l1}"
    );
    let html = html_of(train);
    assert!(
        html.matches("Step ").count() >= lines && html.contains("Loss"),
        "the training figure should caption its strips `Epoch e | Step s | Loss l`"
    );

    // The re-run goes on from the step where the first run stopped.
    let rerun = &cells[n_cells + 1];
    let second = progress(&stdout_of(rerun));
    assert!(
        !second.is_empty(),
        "the re-run of the training cell printed no progress line"
    );
    let (r0, rl0) = second[0];
    assert!(
        r0 > s1,
        "the re-run should continue after step {s1}, but its first line is step {r0}"
    );
    assert!(
        rl0 < trained * untrained,
        "the re-run should start from the trained model (loss {rl0}), not from scratch \
         (untrained loss {untrained})"
    );
    let (r1, _) = second[second.len() - 1];
    assert!(
        r1 <= s1 + RERUN_STEPS,
        "the re-run trained past its limit: step {r1} after {s1} + {RERUN_STEPS}"
    );
    Ok(done["cells"].as_array().cloned().unwrap_or_default())
}

#[test]
#[ignore = "runs the notebook in the Rust kernel: needs `make setup`; `make test` runs it"]
fn notebook01_runs_top_to_bottom() -> Result<()> {
    let cells = run_notebook("01_unet.ipynb", 5, MAX_STEPS)?;
    let lines = stdout_lines(&cells);
    // The text says the answers on pure noise score far above the real floor, and further than
    // the cleaned noisy pictures.
    let score = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| fd_and_floor(l))
            .with_context(|| format!("no score line `{prefix}: FD f (real floor g) | ...`"))
    };
    let (noise_fd, floor) = score("answers on pure noise")?;
    let (cleaned_fd, _) = score("cleaned noisy pictures")?;
    assert!(
        noise_fd > cleaned_fd && cleaned_fd > floor && floor >= 0.0,
        "answers on noise FD {noise_fd}, cleaned FD {cleaned_fd}, floor {floor}"
    );
    // The statistics table: pure noise has std near 1, the training inputs near 0.6.
    let std_of = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split("std ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no statistics line `{prefix} ... std s ...`"))
    };
    let noise_std = std_of("pure noise")?;
    let input_std = std_of("training inputs")?;
    assert!((noise_std - 1.0).abs() < 0.05, "pure noise std {noise_std}");
    assert!(
        (input_std - 0.6).abs() < 0.05,
        "training inputs std {input_std}"
    );
    Ok(())
}

#[test]
#[ignore = "runs the notebook in the Rust kernel: needs `make setup`; `make test` runs it"]
fn notebook02_runs_top_to_bottom() -> Result<()> {
    let cells = run_notebook("02_diffusion.ipynb", 8, MAX_STEPS)?;
    // The score line of the results: the briefly trained model's samples are further from the
    // real test images than the real floor is.
    let score = stdout_lines(&cells)
        .into_iter()
        .find(|l| l.starts_with("FD "))
        .context("no score line `FD f (real floor g) | ...` after the results")?;
    let (fd, floor) = fd_and_floor(&score).context("a score line without FD and floor")?;
    assert!(
        fd > floor && floor >= 0.0,
        "the score line should give the samples' FD above the real floor: {score}"
    );
    assert!(score.contains(&score_sizes()), "{score}");
    Ok(())
}

#[test]
#[ignore = "runs the notebook in the Rust kernel: needs `make setup`; `make test` runs it"]
fn notebook03_runs_top_to_bottom() -> Result<()> {
    let cells = run_notebook("03_optimizations.ipynb", 4, 30)?;
    let lines = stdout_lines(&cells);
    // the normalisation demonstration: BatchNorm moves the image, GroupNorm does not
    let moved = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no line `{prefix} ...`"))
    };
    let bn = moved("BatchNorm: its pixels move by up to")?;
    let gn = moved("GroupNorm: its pixels move by up to")?;
    assert!(bn > 0.1 && gn == 0.0, "BatchNorm {bn}, GroupNorm {gn}");
    // both score lines, on the same meter and sample count
    for name in ["notebook 03", "notebook 02"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}: FD ")))
            .with_context(|| format!("no score line `{name}: FD ...`"))?;
        let (fd, floor) = fd_and_floor(line).context("FD and floor")?;
        assert!(fd > floor && line.contains(&score_sizes()), "{line}");
    }
    Ok(())
}

#[test]
#[ignore = "runs the notebook in the Rust kernel: needs `make setup`; `make test` runs it"]
fn notebook04_runs_top_to_bottom() -> Result<()> {
    let cells = run_notebook("04_guidance.ipynb", 6, 30)?;
    let lines = stdout_lines(&cells);
    // the mask keeps the label of about 90% of the images
    let kept = lines
        .iter()
        .find_map(|l| l.split("sees the label of ").nth(1))
        .and_then(|v| v.trim_end_matches("% of the images").parse::<f64>().ok())
        .context("no line `... sees the label of p% of the images`")?;
    assert!((89.5..=90.5).contains(&kept), "label kept for {kept}%");
    // every preview line names the class it drew, in turn from the first
    let classes: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("Epoch "))
        .filter_map(|l| l.rsplit("| C: ").next())
        .collect();
    assert_eq!(classes.first().copied(), Some("T-shirt/top"), "{classes:?}");
    // the animation keeps the course's snapshots: the noise, t = 140, 130, ..., 10, then 9..0
    assert!(
        lines.iter().any(|l| l.starts_with("25 frames")),
        "no line `25 frames, saved to ...`"
    );
    // the trade-off table read from docs/guidance04, with the real images' line
    assert!(
        lines.iter().any(|l| l.starts_with("| real test images |")),
        "the trade-off table was not printed"
    );
    Ok(())
}

#[test]
#[ignore = "runs the notebook in the Rust kernel: needs `make setup`; `make test` runs it"]
fn assessment_runs_top_to_bottom() -> Result<()> {
    let cells = run_notebook("assessment.ipynb", 3, 10)?;
    let lines = stdout_lines(&cells);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("UNet: 2547457 trainable parameters")),
        "the assessment's network should have the course's 2,547,457 parameters"
    );
    // the grader's report: one line per digit with five predictions, then the total
    for d in 0..10 {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("digit {d}: predicted [")))
            .with_context(|| format!("no report line for digit {d}"))?;
        let inside = line
            .split('[')
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or("");
        assert_eq!(inside.split(", ").count(), 5, "{line}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("final accuracy ")),
        "no `final accuracy ...` line"
    );
    Ok(())
}
