//! Cross-cutting tests live in `tests/`; the walkthroughs' Rust blocks run as this crate's
//! doctests (`cargo test -p diffusion-tests --doc`). What several tests share is here.

pub mod parity;
mod walkthrough;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

/// The largest `|a - b|` over all elements (same shapes), in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (
        a.to_dtype(DType::F64).unwrap(),
        b.to_dtype(DType::F64).unwrap(),
    );
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Fails unless `a` and `b` hold the same names, each with the same shape, dtype and values
/// (exactly: a saved and reloaded, or a restored, state).
pub fn assert_same_state(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len(), "different numbers of tensors");
    for (k, v) in a {
        let w = b.get(k).unwrap_or_else(|| panic!("`{k}` is missing"));
        assert_eq!((v.dims(), v.dtype()), (w.dims(), w.dtype()), "{k}");
        let d = (v.to_dtype(DType::F64).unwrap() - w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(d, 0.0, "`{k}` differs");
    }
}

/// Checks that `text` states `shown` and that `shown` is `value` rounded as written: `"45.1%"`
/// for 0.451005, `"-0.4265"` for -0.426450.
pub fn states(text: &str, shown: &str, value: f64) {
    assert!(
        text.contains(shown),
        "the walkthrough no longer states {shown}"
    );
    let (digits, scale) = match shown.strip_suffix('%') {
        Some(d) => (d, 100.0),
        None => (shown, 1.0),
    };
    let number: f64 = digits
        .trim_matches('`')
        .parse()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let decimals = digits
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_matches('`').len());
    let half_unit = 0.5 * 10f64.powi(-(decimals as i32));
    assert!(
        (number - value * scale).abs() <= half_unit + 1e-12,
        "the walkthrough states {shown}, the value is {}",
        value * scale
    );
}

/// A path relative to the repository root.
pub fn repo_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The text of a file of the repository (`path` relative to its root).
pub fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The FashionMNIST folder, which must hold the data: tests that need it say how to fetch it.
pub fn fashion_mnist_dir() -> std::path::PathBuf {
    let dir = diffusion::data::data_dir(None);
    assert!(
        diffusion::data::files_present(&dir),
        "the FashionMNIST files are not in {}: fetch them with `make setup` or \
         `cargo run --release -p diffusion-cli -- data`",
        dir.display()
    );
    dir
}

/// `shown` (a number as a text writes it) is `value` to the digits shown, give or take `slack`
/// (for another CPU's rounding); `what` names it in the failure.
pub fn near(what: &str, shown: &str, value: f64, slack: f64) {
    let number: f64 = shown
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {shown}: {e}"));
    let decimals = shown
        .trim_end_matches('%')
        .split_once('.')
        .map_or(0, |(_, f)| f.len());
    let half_unit = 0.5 * 10f64.powi(-(decimals as i32));
    assert!(
        (number - value).abs() <= half_unit + slack,
        "{what}: the text shows {shown}, the value is {value}"
    );
}

/// The cells after the first of the Markdown table row that starts with `| name |`.
pub fn table_row<'a>(md: &'a str, name: &str) -> Vec<&'a str> {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("no table row `{name}`"));
    line.trim_matches('|')
        .split('|')
        .map(str::trim)
        .skip(1)
        .collect()
}

/// A file of `tests/fixtures/`.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The tensors of the safetensors file `tests/fixtures/<name>`.
pub fn fixture_tensors(name: &str) -> HashMap<String, Tensor> {
    diffusion::checkpoint::read_tensors(&fixture(name))
        .unwrap_or_else(|e| panic!("tests/fixtures/{name}: {e:#}"))
}

/// Everything the committed notebook at `path` (relative to the repository root) printed, in
/// the order of its cells.
pub fn notebook_stdout(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    let nb: serde_json::Value = serde_json::from_str(&text).expect("the notebook parses");
    nb["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["outputs"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| {
            o["text"]
                .as_array()
                .map(|t| t.iter().filter_map(|x| x.as_str()).collect::<String>())
        })
        .collect()
}
