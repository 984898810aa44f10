//! `diffusion figures`, end to end on small data made here: it writes every file of
//! `diffusion_cli::figures::FILES`, with captions that say where the model came from.

use std::path::Path;

mod common;
use common::{diffusion, stderr, tiny_data};
use diffusion_cli::figures::FILES;

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
    tiny_data(&data, 128, 8);
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
    tiny_data(&data, 128, 8);
    // the PyTorch fixture: weights after 5 training steps (tests/fixtures/README.md)
    let ckpt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights.safetensors");
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
    tiny_data(&data, 128, 8);
    let ckpt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights.safetensors");
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
