//! The command line, end to end on small data made here.

mod common;
use common::{diffusion, stderr, tiny_data};

#[test]
fn train_then_sample_writes_checkpoint_losses_grid_and_npy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    tiny_data(&data, 256, 16);
    let o = diffusion(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "2",
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Epoch 0 | Step 002 | Loss:"), "{stdout}");
    for f in ["model.safetensors", "losses.csv", "samples.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("step,loss\n1,"));

    let ckpt = out.join("model.safetensors");
    let o = diffusion(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--n",
        "3",
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let npy = std::fs::read(out.join("samples.npy")).unwrap();
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = String::from_utf8_lossy(&npy[10..10 + hlen]);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("(3, 1, 16, 16)"),
        "{header}"
    );
    assert_eq!(npy.len() - 10 - hlen, 3 * 256 * 4);
    let values: Vec<f32> = npy[10 + hlen..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // the file holds the sampler's images for that seed (clamped to [-1, 1] for the picture and
    // the file alike), not merely values in range
    let dev = candle_core::Device::Cpu;
    let (unet, _) = diffusion::checkpoint::load_unet(&ckpt, &dev).unwrap();
    let schedule = diffusion::Schedule::course(&dev).unwrap();
    let want = diffusion::sample_ddim(&unet, &schedule, 3, 5, &mut diffusion::Rng::new(0))
        .unwrap()
        .images
        .clamp(-1f32, 1f32)
        .unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let diff = values
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff < 1e-5,
        "samples.npy differs from the sampler's images by {diff}"
    );
    assert!(
        values.iter().any(|v| v.abs() > 0.01),
        "the images are not blank"
    );
    let png = image::open(out.join("samples.png")).unwrap();
    assert!(png.width() > 16 && png.height() > 16);
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("none.safetensors");
    let o = diffusion(&[
        "sample",
        "--checkpoint",
        missing.to_str().unwrap(),
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("none.safetensors") && stderr(&o).contains("diffusion train"),
        "{}",
        stderr(&o)
    );

    // a corrupt data file is named, with the fix
    let data = tmp.path().join("data");
    tiny_data(&data, 256, 16);
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), b"not gzip at all").unwrap();
    let o = diffusion(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "1",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("train-images-idx3-ubyte.gz"),
        "{}",
        stderr(&o)
    );

    // runtime errors exit with 1, usage errors (clap) with 2
    assert_eq!(o.status.code(), Some(1));
    let o = diffusion(&["train", "--epochs", "many"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("invalid value 'many'"),
        "{}",
        stderr(&o)
    );
    let o = diffusion(&["sample", "--sampler", "euler"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ddpm") && stderr(&o).contains("ddim"),
        "{}",
        stderr(&o)
    );
}

/// A run whose loss turns non-finite exits with 1, says why and where the weights are, leaves
/// the previous run's checkpoint as it was and keeps the last finished step's weights beside it.
#[test]
fn a_diverging_run_keeps_the_checkpoint_and_the_last_finite_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    tiny_data(&data, 256, 16);
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "--data", data.to_str().unwrap()];
        args.extend_from_slice(&["--samples", "1", "--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        diffusion(&args)
    };
    let o = run(&["--max-steps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("model.safetensors");
    let before = std::fs::read(&ckpt).unwrap();

    // Adam moves every weight by about lr on the first step: 1e30 overflows the next loss.
    let o = run(&["--max-steps", "4", "--lr", "1e30"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("the loss became NaN at step 2"), "{err}");
    assert!(
        err.contains("model-step1.safetensors: the weights of step 1"),
        "{err}"
    );
    assert!(
        err.contains("model.safetensors: not written by this run"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the earlier checkpoint is untouched"
    );
    let dev = candle_core::Device::Cpu;
    let kept = out.join("model-step1.safetensors");
    let (unet, _) = diffusion::checkpoint::load_unet(&kept, &dev).unwrap();
    let x = candle_core::Tensor::zeros((1, 1, 16, 16), candle_core::DType::F32, &dev).unwrap();
    let t = candle_core::Tensor::new(&[3u32], &dev).unwrap();
    assert!(
        unet.forward_t(&x, &t, false).is_ok(),
        "the kept weights load and run"
    );
    let csv = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "the finished step's loss is kept: {csv}"
    );
}

/// `--n 0` is refused for what it is, with a checkpoint that exists.
#[test]
fn sampling_zero_images_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/weights.safetensors"
    );
    let out = tmp.path().join("out");
    let o = diffusion(&[
        "sample",
        "--n",
        "0",
        "--checkpoint",
        ckpt,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("asked for 0 images"), "{}", stderr(&o));
    assert!(!out.join("samples.npy").exists(), "nothing is written");
}

#[test]
fn data_finds_the_files_and_reports_each_split() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_data(&data, 40, 20);
    let o = diffusion(&["data", "--data", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("already in"), "{stdout}");
    assert!(stdout.contains("40 images [40, 1, 16, 16]"), "{stdout}");
    assert!(stdout.contains("20 images [20, 1, 16, 16]"), "{stdout}");
}

#[test]
fn bench_prints_its_three_timings() {
    let o = diffusion(&["bench", "--runs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    let ms: Vec<f64> = ["train_step_ms=", "sample150_ms=", "sample150x64_ms="]
        .iter()
        .map(|key| {
            let rest = line
                .split(key)
                .nth(1)
                .unwrap_or_else(|| panic!("{key} in {line}"));
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(ms.iter().all(|&v| v > 0.0), "{line}");
    assert!(ms[2] > ms[1], "64 images take longer than one: {line}");
}

#[test]
fn grade_lists_sets_and_grades_an_example() {
    let o = diffusion(&["grade", "--list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list = String::from_utf8_lossy(&o.stdout);
    for set in [
        "ddpm-math",
        "assignment4",
        "generative-models",
        "vae-diffusion",
    ] {
        assert!(list.contains(set), "{list}");
    }
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../answers/examples/assignment4-mistakes.toml"
    );
    let o = diffusion(&["grade", "--set", "assignment4", example, "--json"]);
    assert!(
        o.status.success(),
        "a graded file exits 0 whatever the score: {}",
        stderr(&o)
    );
    // what the example file's comments say of each answer
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["set"], "assignment4");
    let verdict = |id: &str| {
        let q = json["questions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == id);
        q.unwrap_or_else(|| panic!("{id} not in the report"))["verdict"].clone()
    };
    assert_eq!(verdict("q1"), "manual");
    assert_eq!(verdict("q3"), "missing");
    assert_eq!(verdict("q4"), "correct");
    assert_eq!(verdict("q5"), "missing");
    assert_eq!(verdict("q6a"), "unparseable");
    assert_eq!(verdict("q6c"), "correct");
    assert_eq!(json["unknown_ids"], serde_json::json!(["q7_b"]));
    let correct = json["questions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["verdict"] == "correct");
    assert_eq!(json["score"]["correct"], correct.count());

    let o = diffusion(&["grade", "--set", "no-such-set", example]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("assignment4"),
        "lists the known sets: {}",
        stderr(&o)
    );
    let o = diffusion(&["grade", "--set", "assignment4", "/nonexistent/answers.toml"]);
    assert!(!o.status.success());
}

/// `score` reports the distance of the samples and of a real set of the same size to the real
/// reference, with the class histogram; a file too small for a covariance is refused for that.
#[test]
fn score_reports_the_distance_and_its_floor_and_refuses_too_few_images() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_data(&data, 16, 600);
    let classifier = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/classifier.safetensors"
    );
    let dev = candle_core::Device::Cpu;
    let write = |n: usize| {
        let x = diffusion::Rng::new(n as u64)
            .randn((n, 1, 16, 16), &dev)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap();
        let path = tmp.path().join(format!("noise{n}.npy"));
        diffusion_cli::npy::save_npy(&x, &path).unwrap();
        path
    };
    let score = |path: &std::path::Path| {
        diffusion(&[
            "score",
            path.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--classifier",
            classifier,
        ])
    };
    let o = score(&write(200));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let fd = |row: &str| -> f64 {
        // the table's rows: name, N, FD, KID, evenness
        let numbers = |l: &str| -> Option<Vec<f64>> {
            let v: Vec<f64> = l
                .split_whitespace()
                .rev()
                .take(4)
                .flat_map(str::parse)
                .collect();
            (v.len() == 4).then_some(v)
        };
        let line = out
            .lines()
            .find(|l| l.starts_with(row) && numbers(l).is_some());
        numbers(line.unwrap_or_else(|| panic!("no row {row}: {out}"))).unwrap()[2]
    };
    // noise is far from real images; two real sets of the same size are close
    assert!(fd("samples") > 10.0 * fd("real floor"), "{out}");
    assert!(
        out.contains("T-shirt/top") && out.contains("Ankle boot"),
        "{out}"
    );

    let o = score(&write(20));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("129"), "{}", stderr(&o));
}

/// Past the course: `--ema` saves the averaged weights beside the checkpoint, `--schedule cosine`
/// trains on the cosine schedule, and `sample` takes either back.
#[test]
fn train_with_an_average_and_the_cosine_schedule_then_sample_both() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    tiny_data(&data, 256, 16);
    let o = diffusion(&[
        "train",
        "--model",
        "optimized",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "2",
        "--samples",
        "2",
        "--ema",
        "0.99",
        "--schedule",
        "cosine",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (raw, ema) = (
        out.join("model.safetensors"),
        out.join("model-ema.safetensors"),
    );
    let a = diffusion::checkpoint::read_tensors(&raw).unwrap();
    let b = diffusion::checkpoint::read_tensors(&ema).unwrap();
    assert_eq!(a.len(), b.len(), "the same tensors under the same names");
    let name = "down0.conv1.model.0.weight";
    let diff = (&a[name] - &b[name])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(
        diff.to_scalar::<f32>().unwrap() > 0.0,
        "the average lags the weights"
    );
    for ckpt in [&raw, &ema] {
        let o = diffusion(&[
            "sample",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--n",
            "2",
            "--schedule",
            "cosine",
            "--out",
            tmp.path().join("s").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    let o = diffusion(&[
        "train",
        "--ema",
        "1.5",
        "--max-steps",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("EMA decay"), "{}", stderr(&o));
}

#[test]
fn an_unknown_ablation_run_names_the_valid_ones() {
    let o = diffusion(&["ablation", "--only", "no-attention"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no-attention") && e.contains("no-rearrange-pool") && e.contains("cosine"),
        "{e}"
    );
}

/// Notebook 04: `train --model guided` learns from the labels and writes the course's grid and
/// its animation; `sample --class --w` draws the classes asked for, by name or index, and an
/// unknown class names the valid ones.
#[test]
fn train_the_guided_network_then_sample_asked_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    tiny_data(&data, 256, 16);
    let o = diffusion(&[
        "train",
        "--model",
        "guided",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gif = std::fs::read(out.join("samples.gif")).unwrap();
    assert_eq!(&gif[..6], b"GIF89a", "an animated GIF");
    let grid = image::open(out.join("samples.png")).unwrap();
    // 10 columns (classes) and 7 rows (weights) of 16 x 16 images at scale 4, gaps of 2 px.
    assert_eq!((grid.width(), grid.height()), (10 * 66 - 2, 7 * 66 - 2));

    let ckpt = out.join("model.safetensors");
    let s = tmp.path().join("s");
    let o = diffusion(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--class",
        "sneaker,Ankle boot",
        "--class",
        "0",
        "--w",
        "-1.5",
        "--n",
        "5",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels = std::fs::read_to_string(s.join("samples-labels.txt")).unwrap();
    let labels: Vec<&str> = labels.lines().collect();
    assert_eq!(
        labels,
        [
            "Sneaker",
            "Ankle boot",
            "T-shirt/top",
            "Sneaker",
            "Ankle boot"
        ]
    );
    let npy = diffusion_cli::npy::load_npy(&s.join("samples.npy")).unwrap();
    assert_eq!(npy.dims(), [5, 1, 16, 16]);

    let o = diffusion(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--class",
        "sock",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("\"sock\"") && e.contains("\"sneaker\"") && e.contains("0-9"),
        "{e}"
    );
}
