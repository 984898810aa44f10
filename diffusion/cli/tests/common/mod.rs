//! What the command-line tests share: running the binary, and small FashionMNIST-shaped data.

use std::path::Path;
use std::process::{Command, Output};

use diffusion::data::{write_idx_images, write_idx_labels, IdxImages};

/// Runs the `diffusion` binary with `args`, ignoring any `DIFFUSION_DATA` of the caller.
pub fn diffusion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffusion"))
        .args(args)
        .env_remove("DIFFUSION_DATA")
        .output()
        .expect("the diffusion binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `n_train` train and `n_test` test images of 28x28 as gzipped IDX files in `dir`: stripes
/// whose position depends on the label.
pub fn tiny_data(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", n_train), ("t10k", n_test)] {
        let mut pixels = vec![0u8; n * 784];
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (i, l) in labels.iter().enumerate() {
            for y in 0..28 {
                let x0 = 2 * *l as usize;
                for x in x0..x0 + 6 {
                    pixels[i * 784 + y * 28 + x] = 255;
                }
            }
        }
        let images = IdxImages::new(n, 28, 28, pixels).unwrap();
        write_idx_images(&dir.join(format!("{split}-images-idx3-ubyte.gz")), &images).unwrap();
        write_idx_labels(&dir.join(format!("{split}-labels-idx1-ubyte.gz")), &labels).unwrap();
    }
}
