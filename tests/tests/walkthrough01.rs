//! The numbers of `walkthroughs/01_unet.md` that its doctests cannot compute: what the trained
//! denoiser (`docs/denoiser.safetensors`, saved by the committed run of notebook 01) measures,
//! and what that run printed.
//!
//! The measurements are made again here with `diffusion_cli::figures01::measure`, the function
//! `diffusion figures01` wrote `walkthroughs/figures/01_README.md` with, and compared with the
//! walkthrough's table and text (to the digits shown, with a little slack for another CPU's
//! rounding). The data's mean and variance that the doctests use are checked against the data.
//!
//! These tests need the FashionMNIST files (`make setup`, or `diffusion data`).

use std::path::PathBuf;

use diffusion::data;
use diffusion::eval::ImageStats;
use diffusion_cli::figures01::{measure, Measurements};
use diffusion_tests::states;

fn read(path: &str) -> String {
    diffusion_tests::read_repo_file(path)
}

fn walkthrough() -> String {
    read("walkthroughs/01_unet.md")
}

fn data_dir() -> PathBuf {
    diffusion_tests::fashion_mnist_dir()
}

fn measured() -> Measurements {
    let model = diffusion::notebook01::UNet::load(
        &diffusion_tests::repo_path("docs/denoiser.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("docs/denoiser.safetensors loads");
    measure(&model, &data_dir(), 0, &candle_core::Device::Cpu).unwrap()
}

use diffusion_tests::{near, table_row as row};

#[test]
fn the_table_and_the_scores_are_what_the_checkpoint_measures() {
    let md = walkthrough();
    let readme = read("walkthroughs/figures/01_README.md");
    let m = measured();
    for (name, st) in &m.stats {
        let cells = row(&md, name);
        assert_eq!(cells.len(), 4, "{name}: mean, std, spread, background");
        near(&format!("{name} mean"), cells[0], st.mean, 2e-3);
        near(&format!("{name} std"), cells[1], st.std, 2e-3);
        near(&format!("{name} spread"), cells[2], st.spread, 2e-3);
        near(
            &format!("{name} background"),
            cells[3],
            100.0 * st.background,
            0.2,
        );
        // and the figures' README lists the same row
        assert_eq!(row(&readme, name), cells, "{name} in figures/01_README.md");
    }
    let fd = |r: &diffusion::eval::QualityReport| (r.samples.fd, r.floor.fd);
    let (noise, floor) = fd(&m.from_noise);
    let (cleaned, _) = fd(&m.cleaned);
    near("FD on pure noise", "347.6", noise, 0.3);
    near("FD of the cleaned pictures", "90.4", cleaned, 0.3);
    near("FD floor", "3.5", floor, 0.05);
    for shown in ["**FD 347.6**", "**FD 90.4**", "**3.5**"] {
        assert!(
            md.contains(shown),
            "the walkthrough no longer states {shown}"
        );
    }
    // the claims the text makes from the table
    let stat = |i: usize| m.stats[i].1;
    let (real, answers_on_noise) = (stat(0), stat(4));
    assert!(answers_on_noise.mean > real.mean + 0.3, "grey, not black");
    assert!(
        answers_on_noise.background < real.background / 10.0,
        "almost never black"
    );
    assert!(answers_on_noise.spread > 0.2, "each follows its own noise");
    assert!(noise > 3.0 * cleaned && cleaned > 10.0 * floor);
    assert!(
        (stat(1).background - 0.125).abs() < 0.01,
        "an eighth of the training inputs' pixels"
    );
}

#[test]
fn the_data_statistics_the_doctests_use() {
    let images = data::TrainingImages::All.load(&data_dir()).unwrap().images;
    let st = ImageStats::of(&images).unwrap();
    // the doctests' constants, and the text's rounding of them
    assert!((st.mean - -0.426048).abs() < 5e-7, "{}", st.mean);
    assert!(
        (st.std.powi(2) - 0.413979).abs() < 5e-7,
        "{}",
        st.std.powi(2)
    );
    let md = walkthrough();
    states(&md, "-0.426", st.mean);
    states(&md, "0.414", st.std.powi(2));
}

/// The committed run of notebook 01: its untrained loss and its last progress line.
#[test]
fn the_course_run_of_the_notebook() {
    let text = diffusion_tests::notebook_stdout("notebooks/01_unet.ipynb");
    let untrained = text
        .lines()
        .find_map(|l| l.strip_prefix("loss of the untrained model on one batch of 128: "))
        .expect("the untrained loss line");
    let last = text
        .lines()
        .rfind(|l| l.starts_with("Epoch "))
        .expect("progress lines");
    assert!(
        last.contains("| Step 1092 |"),
        "the course's 2 epochs: {last}"
    );
    let loss = last
        .split("Loss: ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    let md = walkthrough();
    assert!(
        md.contains(&format!("scores {untrained} on its first batch")),
        "{untrained}"
    );
    assert!(
        md.contains(&format!("loss of\n{loss}")) || md.contains(&format!("loss of {loss}")),
        "{loss}"
    );
}
