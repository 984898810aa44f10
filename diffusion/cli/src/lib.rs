//! # diffusion-cli
//!
//! What the `diffusion` command line does beyond the course library: the walkthrough's figures
//! ([`figures`]), the speed measurements ([`bench`]) and NumPy files of samples ([`npy`]).

pub mod bench;
pub mod figures;
pub mod npy;
