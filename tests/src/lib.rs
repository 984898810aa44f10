//! Cross-cutting tests live in `tests/`; the walkthroughs' Rust blocks run as this crate's
//! doctests (`cargo test -p diffusion-tests --doc`). What several tests share is here.

mod walkthrough;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

/// Fails unless `a` and `b` hold the same names, each with the same shape, dtype and values
/// (exactly: a saved and reloaded, or a restored, state).
pub fn assert_same_state(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len(), "different numbers of tensors");
    for (k, v) in a {
        let w = b.get(k).unwrap_or_else(|| panic!("`{k}` is missing"));
        assert_eq!((v.dims(), v.dtype()), (w.dims(), w.dtype()), "{k}");
        let d = (v.to_dtype(DType::F64).unwrap() - w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(d, 0.0, "`{k}` differs");
    }
}
