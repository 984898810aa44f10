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
    assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
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

    let o = diffusion(&[
        "sample",
        "--n",
        "0",
        "--checkpoint",
        missing.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
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
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(json.is_object());

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
