//! The numbers of `walkthroughs/04_guidance.md` that its doctests cannot compute: the course's
//! training run (`docs/unet04/`) and the measured guidance trade-off (`docs/guidance04/`).
//!
//! The committed samples of every weight are measured again here with the quality meter
//! (`docs/classifier.safetensors` and the real test images) and compared with the table that
//! `diffusion guidance` wrote and the walkthrough shows. These tests need the FashionMNIST files
//! (`make setup`, or `diffusion data`).

use candle_core::{Device, Tensor};
use diffusion::data::{self, Split};
use diffusion::eval::{asked_class_share, real_split, Classifier, Reference};
use diffusion::notebook04::mean_pairwise_distance;
use diffusion::notebook04::tradeoff::TradeoffSummary;
use diffusion_cli::npy::load_npy;
use diffusion_tests::{read_repo_file, repo_path, table_row};

fn walkthrough() -> String {
    read_repo_file("walkthroughs/04_guidance.md")
}

/// The table of the course's weights, or with `"beyond/"` that of w = 4 and 8.
fn summary_in(dir: &str) -> TradeoffSummary {
    TradeoffSummary::from_csv(&read_repo_file(&format!(
        "docs/guidance04/{dir}tradeoff.csv"
    )))
    .unwrap()
}

fn summary() -> TradeoffSummary {
    summary_in("")
}

/// The walkthrough shows the table `diffusion guidance` wrote, row for row.
#[test]
fn the_walkthrough_shows_the_measured_table() {
    let md = walkthrough();
    for dir in ["", "beyond/"] {
        let t = summary_in(dir);
        let written = read_repo_file(&format!("docs/guidance04/{dir}tradeoff.md"));
        for line in t.markdown().lines() {
            assert!(written.contains(line), "{dir}tradeoff.md lacks {line}");
            assert!(md.contains(line), "the walkthrough lacks the row {line}");
        }
    }
}

/// Each weight's committed samples, classified and measured again, give the table's asked
/// share, spread and FD.
#[test]
fn the_committed_samples_score_as_the_table_says() {
    let classifier =
        Classifier::load(&repo_path("docs/classifier.safetensors"), &Device::Cpu).unwrap();
    let test = data::load(&diffusion_tests::fashion_mnist_dir(), Split::Test).unwrap();
    let n = load_npy(&repo_path("docs/guidance04/samples-w0.npy"))
        .unwrap()
        .dim(0)
        .unwrap();
    let (reference, _) = real_split(&test, n, None, 0).unwrap();
    let reference = Reference::new(&classifier.classify(&reference).unwrap()).unwrap();
    let rows = [summary_in("").rows, summary_in("beyond/").rows];
    let dirs = ["", "beyond/"];
    for (dir, row) in dirs
        .iter()
        .zip(&rows)
        .flat_map(|(d, r)| r.iter().map(move |x| (d, x)))
    {
        let path = format!("docs/guidance04/{dir}samples-w{}.npy", row.w);
        let samples = load_npy(&repo_path(&path)).unwrap();
        assert_eq!(samples.dims(), [n, 1, 16, 16], "{path}");
        let got = classifier.classify(&samples).unwrap();
        let asked: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let share = asked_class_share(&got.labels, &asked).unwrap();
        assert!(
            (share - row.asked_share).abs() < 1e-9,
            "w = {}: {share}",
            row.w
        );
        let fd = reference.score(&got).unwrap().fd;
        assert!(
            (fd - row.fd).abs() < 1e-3 * row.fd,
            "w = {}: FD {fd}",
            row.w
        );
        let spread: f64 = (0..10)
            .map(|c| {
                let idx: Vec<u32> = (c..n as u32).step_by(10).collect();
                let ids = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
                mean_pairwise_distance(&samples.index_select(&ids, 0).unwrap()).unwrap()
            })
            .sum::<f64>()
            / 10.0;
        assert!(
            (spread - row.spread).abs() < 1e-6,
            "w = {}: spread {spread}",
            row.w
        );
    }
}

/// The course's training run: 1,638 steps, and the final loss the walkthrough quotes.
#[test]
fn the_training_run_is_the_one_described() {
    let losses = |path: &str| -> Vec<f64> {
        read_repo_file(path)
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let four = losses("docs/unet04/losses.csv");
    let three = losses("docs/unet03/losses.csv");
    assert_eq!(four.len(), 1638, "3 epochs of 546 steps");
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let (a, b) = (mean(&four[1588..]), mean(&three[1588..1638]));
    let md = walkthrough();
    let cells = table_row(&md, "mean loss of the last 50 steps");
    diffusion_tests::near("notebook 04's final loss", cells[0], a, 0.0);
    diffusion_tests::near("notebook 03's loss at step 1,638", cells[1], b, 0.0);
    assert!(a < b, "the label lowers the loss: {a} vs {b}");
}

/// The per-class table of the walkthrough (asked share and spread at w = 0 and w = 2) is the one
/// `diffusion guidance` wrote in `tradeoff-per-class.csv`.
#[test]
fn the_per_class_table_is_the_measured_one() {
    let md = walkthrough();
    let csv = read_repo_file("docs/guidance04/tradeoff-per-class.csv");
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("w,class,asked_share,class_kid,class_fd,spread")
    );
    let value = |w: &str, class: &str, column: usize| -> f64 {
        csv.lines()
            .find(|l| l.starts_with(&format!("{w},{class},")))
            .and_then(|l| l.split(',').nth(column))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no row for w = {w}, {class}"))
    };
    for class in diffusion::data::CLASS_NAMES {
        let cells = table_row(&md, class);
        assert_eq!(cells.len(), 4, "{class}: two shares, two spreads");
        for (k, w) in ["0", "2"].into_iter().enumerate() {
            diffusion_tests::near(class, cells[k], value(w, class, 2), 0.0);
            diffusion_tests::near(class, cells[2 + k], value(w, class, 5), 0.0);
        }
    }
}

/// What the walkthrough reads from the table holds for the measured numbers.
#[test]
fn the_claims_drawn_from_the_table_hold() {
    let t = summary();
    let at = |w: f64| *t.rows.iter().find(|r| r.w == w).unwrap();
    let ws: Vec<f64> = t.rows.iter().map(|r| r.w).collect();
    assert_eq!(ws, diffusion::notebook04::W_TESTS);
    // the share of the asked class climbs with w, to within 0.02 of real pictures at w = 2
    for pair in t.rows.windows(2) {
        assert!(pair[1].asked_share > pair[0].asked_share, "{pair:?}");
    }
    assert!(at(2.0).asked_share > 0.5 && t.real.asked_share - at(2.0).asked_share < 0.02);
    // w = -1 is the model without a label: chance, one in ten; w = -2 avoids the class
    assert!((at(-1.0).asked_share - 0.1).abs() <= 0.05);
    assert_eq!(at(-2.0).asked_share, 0.0);
    // the distances fall from w = 0 to w = 2, every step; negative weights score worse than 0
    for w in [0.0, 0.5, 1.0] {
        let (a, b) = (at(w), at(w + if w < 1.0 { 0.5 } else { 1.0 }));
        assert!(
            b.fd < a.fd && b.kid < a.kid && b.class_kid < a.class_kid,
            "{a:?} {b:?}"
        );
    }
    for w in [-2.0, -1.0, -0.5] {
        assert!(at(w).fd > at(0.0).fd, "w = {w}");
    }
    // the spread hardly moves from w = 0 to 2 and stays above the real pictures'
    let spreads: Vec<f64> = [0.0, 0.5, 1.0, 2.0].iter().map(|&w| at(w).spread).collect();
    let (lo, hi) = spreads
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &s| (l.min(s), h.max(s)));
    assert!(hi - lo < 0.1 && lo > t.real.spread, "{spreads:?}");
    assert!(at(-2.0).spread > at(0.0).spread);
    // past the course's range: the share passes real pictures', the distances turn, the spread
    // does not fall
    let beyond = summary_in("beyond/");
    let (four, eight) = (beyond.rows[0], beyond.rows[1]);
    assert_eq!((four.w, eight.w), (4.0, 8.0));
    assert!(four.asked_share > t.real.asked_share && eight.asked_share > four.asked_share);
    assert!(at(2.0).fd < four.fd && four.fd < eight.fd);
    assert!(eight.class_kid > at(0.0).class_kid);
    assert!(four.spread >= at(2.0).spread && eight.spread >= four.spread);
    // the standard error quoted for a share of 0.875 from 200 samples
    let se = (0.875f64 * 0.125 / 200.0).sqrt();
    assert!((se - 0.023).abs() < 0.0005, "{se}");
}

/// The notebook's reading of the committed table quotes its numbers.
#[test]
fn the_notebook_quotes_the_measured_shares() {
    let nb: serde_json::Value =
        serde_json::from_str(&read_repo_file("notebooks/04_guidance.ipynb")).unwrap();
    let text: String = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "markdown")
        .flat_map(|c| c["source"].as_array().unwrap().iter())
        .map(|l| l.as_str().unwrap())
        .collect();
    let t = summary();
    let at2 = t.rows.iter().find(|r| r.w == 2.0).unwrap();
    let shown = format!(
        "{:.3} of the samples are classified as\nasked, real pictures {:.3}",
        at2.asked_share, t.real.asked_share
    );
    assert!(text.contains(&shown), "the notebook should say {shown}");
}
