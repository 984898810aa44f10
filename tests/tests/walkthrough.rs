//! The numbers of `walkthroughs/02_diffusion.md` that its doctests cannot compute: those that need
//! the FashionMNIST files or the course run's loss history, and what the text says about the
//! committed figures.
//!
//! The expected values of the data and of the loss history were printed by
//! `walkthroughs/data_stats.py`, which computes them with Pillow and NumPy alone: its own IDX
//! decoding, Pillow's own resize, the schedule rebuilt with NumPy. Here the crate computes them
//! again (`diffusion::data::load`, `diffusion_cli::figures`), and each is compared with the value the
//! text states, so that a change of the data, of the crate or of the text fails here.
//!
//! The figures' measurements (samples, loss by timestep) come from a trained network and have no
//! second computation; for them this file checks that the text quotes `figures/README.md`, the
//! file `diffusion figures` wrote with the figures, and that the claims the text makes about them
//! hold in it.
//!
//! The data tests need the FashionMNIST files (`make setup`, or `diffusion data`).

use std::path::{Path, PathBuf};

use answers::theory::ddpm::course_values;
use answers::theory::gaussian::std_normal_cdf;
use diffusion::data;
use diffusion::eval::ImageStats;
use diffusion_cli::figures::{per_pixel_floor, pixel_variances, read_losses};
use diffusion_tests::states;

/// Printed by `walkthroughs/data_stats.py` on the course's 70,000 training images.
mod python {
    pub const MEAN: f64 = -0.426048;
    pub const VARIANCE: f64 = 0.413979;
    pub const BACKGROUND: f64 = 0.451045;
    pub const IMAGE_MEAN_STD: f64 = 0.252585;
    pub const ONE_PIXEL_FLOOR: f64 = 0.412515;
    pub const X149_INSIDE: f64 = 0.285274;
    /// Mean loss of the steps of `docs/losses-3-epochs.csv` in each range.
    pub const LOSS_MEANS: [(usize, usize, f64); 5] = [
        (1, 10, 0.967474),
        (11, 100, 0.563871),
        (101, 546, 0.271247),
        (547, 1092, 0.198850),
        (1093, 1638, 0.172572),
    ];
}

fn root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn walkthrough() -> String {
    read("walkthroughs/02_diffusion.md")
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: the crate gives {got}, data_stats.py {want}"
    );
}

/// The training images as the course prepares them: train and test splits, 70,000.
fn train_images() -> candle_core::Tensor {
    let dir = data::data_dir(None);
    assert!(
        data::files_present(&dir),
        "the FashionMNIST files are not in {}: fetch them with `make setup` or \
         `cargo run --release -p diffusion-cli -- data` (or set {} to where they are)",
        dir.display(),
        data::DATA_ENV
    );
    data::TrainingImages::All
        .load(&dir)
        .expect("the FashionMNIST training images load")
        .images
}

#[test]
fn statistics_of_the_data() {
    let images = train_images();
    let (n, side) = (images.dim(0).unwrap(), images.dim(2).unwrap());
    assert_eq!((n, side), (70_000, 16));
    let pixels: Vec<f64> = images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let count = pixels.len() as f64;
    let mean = pixels.iter().sum::<f64>() / count;
    let variance = pixels.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / count;
    let stats = ImageStats::of(&images).unwrap();
    let image_means: Vec<f64> = pixels
        .chunks(side * side)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let image_mean_std = (image_means.iter().map(|m| (m - mean).powi(2)).sum::<f64>()
        / image_means.len() as f64)
        .sqrt();
    close("mean pixel", mean, python::MEAN, 1e-6);
    close("mean pixel (pixel_stats)", stats.mean, python::MEAN, 1e-6);
    close("pixel variance", variance, python::VARIANCE, 1e-6);
    close(
        "background share",
        stats.background,
        python::BACKGROUND,
        1e-6,
    );
    close(
        "std of the per-image mean",
        image_mean_std,
        python::IMAGE_MEAN_STD,
        1e-6,
    );

    // the one-pixel linear predictor's loss, averaged over the 150 timesteps
    let v = course_values().unwrap();
    let vars = pixel_variances(&images).unwrap();
    assert_eq!(vars.len(), 256);
    let floor = v
        .a_bar
        .iter()
        .map(|ab| per_pixel_floor(*ab, &vars))
        .sum::<f64>()
        / v.a_bar.len() as f64;
    close("one-pixel floor", floor, python::ONE_PIXEL_FLOOR, 1e-6);

    // the average pixel of x_149 is N(sqrt(a_bar) m, (1 - a_bar) / 256) for an image of average m
    let (c, sd) = (v.sqrt_a_bar[149], v.sqrt_one_minus_a_bar[149] / 16.0);
    let inside = image_means
        .iter()
        .map(|m| std_normal_cdf((0.125 - c * m) / sd) - std_normal_cdf((-0.125 - c * m) / sd))
        .sum::<f64>()
        / image_means.len() as f64;
    close("x_149 inside +-0.125", inside, python::X149_INSIDE, 1e-6);

    let md = walkthrough();
    states(&md, "`-0.4260`", python::MEAN);
    states(&md, "45.1%", python::BACKGROUND);
    states(&md, "0.2526", python::IMAGE_MEAN_STD);
    states(&md, "0.4140", python::VARIANCE);
    states(&md, "0.4125", python::ONE_PIXEL_FLOOR);
    states(&md, "28.5%", python::X149_INSIDE);
}

/// The rows of the Markdown table under `heading` in `text`, header and rule left out, each cell
/// trimmed (an escaped `\|` stays inside its cell).
fn table(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in figures/README.md"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.replace("\\|", "\u{1}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('\u{1}', "|"))
                .collect()
        })
        .collect()
}

fn number(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|e| panic!("{cell:?} is not a number: {e}"))
}

fn figures_readme() -> String {
    read("walkthroughs/figures/README.md")
}

#[test]
fn the_loss_history_of_the_course_run() {
    let losses = read_losses(&root().join("docs/losses-3-epochs.csv")).unwrap();
    assert_eq!(losses.len(), 1_638);
    let readme = figures_readme();
    let rows = table(&readme, "## Training loss");
    assert_eq!(rows.len(), python::LOSS_MEANS.len());
    for ((lo, hi, want), row) in python::LOSS_MEANS.into_iter().zip(&rows) {
        let v: Vec<f64> = losses
            .iter()
            .filter(|(s, _)| (lo..=hi).contains(s))
            .map(|(_, l)| *l)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        close(&format!("mean loss of steps {lo}..{hi}"), mean, want, 1e-6);
        assert_eq!(row[0], format!("{lo}..{hi}"));
        assert!(
            (number(&row[1]) - want).abs() <= 5e-5,
            "{row:?} against {want}"
        );
    }
    let md = walkthrough();
    let [first, early, epoch1, epoch2, epoch3] = python::LOSS_MEANS.map(|(_, _, m)| m);
    states(&md, "0.9675", first);
    states(&md, "0.5639", early);
    states(&md, "0.2712", epoch1);
    states(&md, "0.1989", epoch2);
    states(&md, "0.1726", epoch3);
    // below the one-pixel predictor from the first epoch on; the third epoch still gains
    assert!(epoch1 < python::ONE_PIXEL_FLOOR);
    states(&md, "13.2%", 1.0 - epoch3 / epoch2);
}

#[test]
fn the_figures_were_drawn_by_the_course_run() {
    let readme = figures_readme();
    assert!(
        readme.contains("model: checkpoint docs/model.safetensors (1638 training steps), seed 0"),
        "{readme}"
    );
    // every figure the walkthrough shows is there, and listed in figures/README.md
    let md = walkthrough();
    for f in diffusion_cli::figures::FILES {
        assert!(root().join("walkthroughs/figures").join(f).is_file(), "{f}");
        if f != "README.md" {
            assert!(
                md.contains(&format!("(figures/{f})")),
                "the text does not show {f}"
            );
            assert!(
                readme.contains(&format!("]({f})")),
                "figures/README.md omits {f}"
            );
        }
    }
}

#[test]
fn the_loss_by_timestep() {
    let readme = figures_readme();
    let rows: Vec<(usize, f64, f64)> = table(&readme, "## Loss by timestep")
        .iter()
        .map(|r| (r[0].parse().unwrap(), number(&r[1]), number(&r[2])))
        .collect();
    assert_eq!(rows.len(), 16);
    let at = |t: usize| *rows.iter().find(|r| r.0 == t).expect("a measured t");
    // the one-pixel bound lies between 0 and the loss of predicting no noise at all (1)
    for (t, _, floor) in &rows {
        assert!(*floor > 0.0 && *floor < 1.0, "{t}");
    }
    let md = walkthrough();
    // on average over t the model beats the one-pixel predictor by far ...
    let mean = |f: fn(&(usize, f64, f64)) -> f64| rows.iter().map(f).sum::<f64>() / 16.0;
    assert!(mean(|r| r.1) < 0.5 * mean(|r| r.2));
    let (_, m10, f10) = at(10);
    states(&md, "0.3750", m10);
    states(&md, "0.9062", f10);
    // ... but not at the timestep where sampling starts
    let (_, m149, f149) = at(149);
    assert!(m149 > f149);
    states(&md, "0.0746", m149);
    states(&md, "0.0694", f149);
}

#[test]
fn what_the_samples_measure() {
    let readme = figures_readme();
    let rows = table(&readme, "## Samples");
    let find = |name: &str| {
        let r = rows
            .iter()
            .find(|r| r[0].starts_with(name))
            .unwrap_or_else(|| panic!("no row {name:?} in {rows:?}"));
        (number(&r[2]), number(&r[3]))
    };
    let test = find("test images");
    let noise = find("DDPM from N(0, I)");
    let true_start = find("DDPM from x_149");
    let ddim50 = find("DDIM, 50 steps");
    let ddim10 = find("DDIM, 10 steps");
    assert!(readme.contains("over 64 images"));
    let md = walkthrough();
    states(&md, "-0.3818", test.0);
    states(&md, "45.1%", test.1);
    states(&md, "-0.1950", noise.0);
    states(&md, "21.6%", noise.1);
    states(&md, "-0.3314", true_start.0);
    states(&md, "37.7%", true_start.1);
    states(&md, "-0.0921", ddim50.0);
    states(&md, "4.0%", ddim50.1);
    states(&md, "-0.1102", ddim10.0);
    states(&md, "5.3%", ddim10.1);
    // lighter than the data from noise; a true x_149 as the start gets most of the way back
    assert!(noise.0 > true_start.0 && true_start.0 > test.0);
    assert!(true_start.1 > 1.5 * noise.1);
    // the shifts, and the yardstick: one standard error of a 64-image mean of the data
    let se = python::IMAGE_MEAN_STD / 64f64.sqrt();
    states(&md, "0.0316", se);
    states(&md, "0.187", noise.0 - test.0);
    states(&md, "0.050", true_start.0 - test.0);
    assert!(md.contains("almost six standard errors"));
    assert!(((noise.0 - test.0) / se - 5.9).abs() <= 0.05);
    assert!(md.contains("1.6 standard errors"));
    assert!(((true_start.0 - test.0) / se - 1.6).abs() <= 0.05);
    // DDIM, deterministic, keeps the light start to the end: less background than DDPM
    assert!(ddim50.1 < noise.1 && ddim10.1 < noise.1);
}

/// The score line quoted in "One number for the samples" is the one the committed notebook
/// printed, and the ratio and signs the text draws from it hold.
#[test]
fn the_score_line_of_the_notebook() {
    let line = diffusion_tests::notebook_stdout("notebooks/02_diffusion.ipynb")
        .lines()
        .map(str::to_owned)
        .find(|l| l.starts_with("FD "))
        .expect("the committed notebook prints a score line");
    let md = walkthrough();
    assert!(md.contains(&line), "the walkthrough does not quote {line}");
    let numbers: Vec<f64> = line
        .split(['(', ')', ' ', '|'])
        .filter_map(|w| w.parse().ok())
        .collect();
    // FD, floor, KID, floor, evenness, real evenness, N, reference
    let [fd, fd_floor, _kid, kid_floor, even, even_real, n, reference] = numbers[..] else {
        panic!("unexpected score line {line}: {numbers:?}")
    };
    assert_eq!((n, reference), (500.0, 9500.0));
    assert!(
        md.contains(&format!("reference, here {fd_floor}.")),
        "the floor {fd_floor}"
    );
    assert!(md.contains(&format!("{} times the floor", (fd / fd_floor).round())));
    assert!(kid_floor < 0.0 && md.contains("slightly below"));
    assert!(even < even_real);
}
