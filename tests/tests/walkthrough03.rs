//! The numbers of `walkthroughs/03_optimizations.md` that its doctests cannot compute: the
//! scores of the committed samples of the 5-epoch run (`docs/unet03/`) and of notebook 02's
//! checkpoint, and the ablation's table (`docs/ablation03/`).
//!
//! The committed samples are scored again here with the quality meter (`docs/classifier.safetensors`)
//! and compared with what the walkthrough and the run's files say. These tests need the
//! FashionMNIST files (`make setup`, or `diffusion data`).

use candle_core::Device;
use diffusion::data::{self, Split};
use diffusion::eval::{real_split, score_samples, Classifier, Reference};
use diffusion_cli::npy::load_npy;
use diffusion_tests::{read_repo_file, repo_path, table_row};

fn walkthrough() -> String {
    read_repo_file("walkthroughs/03_optimizations.md")
}

fn test_split() -> data::FashionMnist {
    data::load(&diffusion_tests::fashion_mnist_dir(), Split::Test).unwrap()
}

fn classifier() -> Classifier {
    Classifier::load(&repo_path("docs/classifier.safetensors"), &Device::Cpu).unwrap()
}

/// The FD the meter gives the 1,000 committed samples at `path`, and the real floor's, with the
/// split of seed `seed`.
fn fd_of(path: &str, seed: u64) -> (f64, f64) {
    let samples = load_npy(&repo_path(path)).unwrap();
    assert_eq!(samples.dims(), [1000, 1, 16, 16], "{path}");
    let r = score_samples(&classifier(), &samples, &test_split(), None, seed).unwrap();
    (r.samples.fd, r.floor.fd)
}

/// Notebook 03 after the course's 5 epochs against notebook 02 after its 3, on the same meter,
/// at the same N, with two splits of the real images.
#[test]
fn the_five_epoch_run_scores_as_the_walkthrough_says() {
    let md = walkthrough();
    let mut measured = vec![];
    for (name, seed) in [("seed 0", 0), ("seed 1", 1)] {
        let (three, floor) = fd_of("docs/unet03/samples-1000.npy", seed);
        let (two, floor2) = fd_of("docs/samples-3-epochs-1000.npy", seed);
        assert_eq!(floor, floor2, "one floor per split");
        let cells = table_row(&md, &format!("split {name}"));
        assert_eq!(cells.len(), 3, "{name}: notebook 03, notebook 02, floor");
        close(cells[0], three);
        close(cells[1], two);
        close(cells[2], floor);
        assert!(three < 0.8 * two, "clearly better: {three} vs {two}");
        let ratio = three / two;
        assert!(
            (0.5..0.6).contains(&ratio),
            "a little more than half of notebook 02's distance: {ratio}"
        );
        assert!(floor < 2.0, "the floor is below 2: {floor}");
        measured.push((three, two));
    }
    let (a, b) = (measured[0], measured[1]);
    assert!(
        (a.0 - b.0).abs() < 1.0 && (a.1 - b.1).abs() < 1.0,
        "the two splits agree to within one unit: {measured:?}"
    );
}

/// `shown` is `value` to the digits shown, give or take 0.01 (another CPU's rounding).
fn close(shown: &str, value: f64) {
    diffusion_tests::near("a score", shown, value, 0.01);
}

/// The ablation's table, as `diffusion ablation` wrote it, is the walkthrough's, and the
/// committed samples of each run give the FD and KID it lists.
#[test]
fn the_ablation_table_is_what_its_samples_score() {
    let md = walkthrough();
    let table = read_repo_file("docs/ablation03/ablation.md");
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        assert!(md.contains(line), "the walkthrough lacks the row {line}");
    }
    let csv = read_repo_file("docs/ablation03/ablation.csv");
    let mut lines = csv.lines().skip(1).map(|l| {
        // name,"what",parameters,final_loss,train_secs,n,fd,kid,evenness
        let (name, rest) = l.split_once(',').unwrap();
        let rest = rest.rsplitn(7, ',').collect::<Vec<_>>();
        (
            name.to_string(),
            rest[3].parse::<usize>().unwrap(),
            rest[2].to_string(),
            rest[1].to_string(),
        )
    });
    let test = test_split();
    let classifier = classifier();
    let first = lines.next().unwrap();
    let n = first.1;
    let (reference, _) = real_split(&test, n, None, 0).unwrap();
    let reference = Reference::new(&classifier.classify(&reference).unwrap()).unwrap();
    let mut checked = 0;
    for (name, rows, fd, kid) in std::iter::once(first).chain(lines) {
        if name == "real-floor" {
            continue;
        }
        assert_eq!(rows, n, "{name}: every run scores as many samples");
        let samples = load_npy(&repo_path(&format!("docs/ablation03/{name}.npy"))).unwrap();
        let s = reference
            .score(&classifier.classify(&samples).unwrap())
            .unwrap();
        close(&fd, s.fd);
        close(&kid, s.kid);
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "the course run, its EMA, four ablations, the cosine run"
    );
}

/// The claims the walkthrough reads off the ablation's table.
#[test]
fn the_ablation_reading_follows_from_the_table() {
    let csv = read_repo_file("docs/ablation03/ablation.csv");
    // (name, loss, fd, evenness) from name,"what",parameters,final_loss,train_secs,n,fd,kid,evenness
    let rows: Vec<(String, f64, f64, f64)> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("real-floor"))
        .map(|l| {
            let name = l.split(',').next().unwrap().to_string();
            let r: Vec<&str> = l.rsplitn(7, ',').collect(); // evenness, kid, fd, n, secs, loss, ...
            let num = |s: &str| s.parse::<f64>().unwrap();
            (name, num(r[5]), num(r[2]), num(r[0]))
        })
        .collect();
    let get = |name: &str| rows.iter().find(|r| r.0 == name).unwrap().clone();
    let course = get("course");
    let ablations: Vec<_> = rows.iter().filter(|r| r.0.starts_with("no-")).collect();
    assert_eq!(ablations.len(), 4);
    // the best FD of all runs: max pooling
    let best = rows.iter().min_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
    assert_eq!(best.0, "no-rearrange-pool");
    // only the residual ablation scores worse than the course network, with the lowest evenness
    let worse: Vec<&str> = ablations
        .iter()
        .filter(|r| r.2 > course.2)
        .map(|r| r.0.as_str())
        .collect();
    assert_eq!(worse, ["no-residual"]);
    let least_even = ablations.iter().min_by(|a, b| a.3.total_cmp(&b.3)).unwrap();
    assert_eq!(least_even.0, "no-residual");
    // without the sinusoidal embedding: within 10 FD of the course network
    assert!((get("no-sinusoidal-time").2 - course.2).abs() < 10.0);
    // the linear-schedule runs' losses span 0.131 to 0.149, their FDs 177 to 305
    let linear: Vec<_> = rows.iter().filter(|r| r.0 != "cosine").collect();
    let span = |f: fn(&(String, f64, f64, f64)) -> f64| {
        let v: Vec<f64> = linear.iter().map(|r| f(r)).collect();
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        (lo, v.iter().cloned().fold(f64::MIN, f64::max))
    };
    let (lo, hi) = span(|r| r.1);
    assert!(
        (lo - 0.131).abs() < 5e-4 && (hi - 0.149).abs() < 5e-4,
        "{lo} {hi}"
    );
    let (lo, hi) = span(|r| r.2);
    assert!(
        (lo - 177.0).abs() < 0.5 && (hi - 305.0).abs() < 0.5,
        "{lo} {hi}"
    );
    // the average beats the last weights; the cosine schedule has the lowest loss, and fails
    let ema = get("course-ema");
    assert!(ema.2 < course.2 && ema.3 > course.3);
    let cosine = get("cosine");
    assert!(rows.iter().all(|r| r.1 >= cosine.1));
    assert!(cosine.2 > 5.0 * course.2);
}

#[test]
fn the_figures_are_listed_and_present() {
    let readme = read_repo_file("walkthroughs/figures/03_README.md");
    let md = walkthrough();
    for f in [
        "03_sinusoidal.svg",
        "03_samples.png",
        "03_ablation_loss.svg",
        "03_ablation.png",
    ] {
        assert!(readme.contains(f), "03_README.md lists {f}");
        assert!(
            md.contains(&format!("figures/{f}")),
            "the walkthrough shows {f}"
        );
        assert!(
            repo_path(&format!("walkthroughs/figures/{f}")).is_file(),
            "{f}"
        );
    }
}
