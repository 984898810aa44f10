//! `diffusion figures`, end to end on small data made here: it writes every file of
//! `diffusion::figures::FILES`, with captions that say where the model came from.

use std::path::Path;
use std::process::{Command, Output};

use diffusion::data::{write_idx_images, write_idx_labels, IdxImages};
use diffusion::figures::FILES;

fn diffusion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffusion"))
        .args(args)
        .env_remove("DIFFUSION_DATA")
        .output()
        .expect("the diffusion binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// 128 train images (one full batch) and 8 test images of 28 x 28: a bright block whose place
/// depends on the label.
fn tiny_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", 128usize), ("t10k", 8)] {
        let mut pixels = vec![0u8; n * 784];
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (i, l) in labels.iter().enumerate() {
            let x0 = 2 * *l as usize;
            for y in 4..24 {
                for x in x0..x0 + 8 {
                    pixels[i * 784 + y * 28 + x] = 200;
                }
            }
        }
        let images = IdxImages::new(n, 28, 28, pixels).unwrap();
        write_idx_images(&dir.join(format!("{split}-images-idx3-ubyte.gz")), &images).unwrap();
        write_idx_labels(&dir.join(format!("{split}-labels-idx1-ubyte.gz")), &labels).unwrap();
    }
}

/// Every file is there and is what its extension says.
fn check_files(out: &Path) -> String {
    for f in FILES {
        let bytes = std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        match f.rsplit('.').next() {
            Some("png") => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f}"),
            Some("svg") => assert!(String::from_utf8_lossy(&bytes).contains("<svg"), "{f}"),
            _ => assert!(!bytes.is_empty(), "{f}"),
        }
    }
    // the forward grid holds 150 images of 16 x 16 at scale 4 in 15 columns, under a caption
    let grid = image_size(&out.join("forward_grid.png"));
    assert!(grid.0 >= 15 * 64 && grid.1 > 10 * 64, "{grid:?}");
    std::fs::read_to_string(out.join("README.md")).unwrap()
}

/// Width and height from a PNG's IHDR chunk.
fn image_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn brief_training_writes_every_figure_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("figures");
    tiny_data(&data);
    let o = diffusion(&[
        "figures",
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "1",
        "--samples",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let readme = check_files(&out);
    assert!(
        readme.contains("trained by `diffusion figures` for only 1 steps"),
        "{readme}"
    );
    // one loss value, 16 timesteps measured, 5 rows of sample statistics
    assert!(readme.contains("| 1..1 |"), "{readme}");
    assert_eq!(readme.matches("\n| 149 |").count(), 1, "{readme}");
    assert!(readme.contains("| DDIM, 10 steps | 10 |"), "{readme}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 1 + FILES.len(), "{stdout}");
}

#[test]
fn a_checkpoint_and_its_losses_are_used_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("figures");
    tiny_data(&data);
    // the PyTorch fixture: weights after 5 training steps (tests/fixtures/README.md)
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/weights.safetensors");
    let losses = tmp.path().join("losses.csv");
    std::fs::write(&losses, "step,loss\n1,1.2\n2,0.9\n3,0.8\n4,0.7\n5,0.6\n").unwrap();
    let o = diffusion(&[
        "figures",
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--losses",
        losses.to_str().unwrap(),
        "--samples",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let readme = check_files(&out);
    assert!(
        readme.contains("model: checkpoint fixtures/weights.safetensors (5 training steps)"),
        "{readme}"
    );
    // mean of the first ten steps' losses (only five here): (1.2 + 0.9 + 0.8 + 0.7 + 0.6) / 5
    assert!(readme.contains("| 1..5 | 0.8400 |"), "{readme}");
}

#[test]
fn a_checkpoint_without_loss_history_is_an_error_that_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_data(&data);
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/weights.safetensors");
    let o = diffusion(&[
        "figures",
        "--out",
        tmp.path().join("figures").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--samples",
        "2",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("loss history") && e.contains("--losses"), "{e}");
}
