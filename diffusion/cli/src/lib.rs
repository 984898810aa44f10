//! # diffusion-cli
//!
//! What the `diffusion` command line does beyond the course library: notebook 03's ablation
//! ([`ablation`]), notebook 04's guidance trade-off ([`guidance`]), the walkthrough's figures
//! ([`figures`]), the speed measurements ([`bench`]), NumPy files of samples ([`npy`]), the
//! check of training on a GPU against the CPU ([`gpu_check`]) and the sample-quality scores
//! ([`score`]).

pub mod ablation;
pub mod assessment;
pub mod bench;
pub mod exercises;
pub mod figures;
pub mod figures01;
pub mod figures03;
pub mod gpu_check;
pub mod grade_notebook;
pub mod guidance;
pub mod npy;
pub mod score;

/// Writes a loss history as `step,loss` CSV (steps from 1), atomically.
pub fn write_losses(path: &std::path::Path, losses: &[f32]) -> anyhow::Result<()> {
    let csv: String = std::iter::once("step,loss\n".to_string())
        .chain(
            losses
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{},{l}\n", i + 1)),
        )
        .collect();
    diffusion::files::write_atomic(path, csv.as_bytes())?;
    Ok(())
}
