//! Comparisons with PyTorch's numbers, shared by the parity tests of every network.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Tensor};
use candle_nn::VarMap;
use diffusion::checkpoint::{feeds_batch_norm, is_trainable};
use diffusion::layers::BatchNorm2d;

/// `|a - b| / |b|` over the whole tensor (Frobenius norms).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let diff = norm(&(&a - &b).unwrap());
    diff / norm(&b).max(1e-30)
}

/// The Frobenius norm `sqrt(sum x^2)`.
pub fn norm(a: &Tensor) -> f64 {
    a.to_dtype(DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
}

/// Fails unless every trainable tensor of `varmap` has a gradient in `grads` within 1e-3 of
/// PyTorch's `grad.<name>` in `p`, relative to its own norm. The biases of convolutions that feed
/// a training-mode BatchNorm are the exception: the normalisation removes any constant shift, so
/// their true gradient is zero (PyTorch's are rounding noise), and they are measured against the
/// norm of all gradients. Returns how many such biases there were.
pub fn assert_gradients_match(
    p: &HashMap<String, Tensor>,
    grads: &GradStore,
    varmap: &VarMap,
) -> usize {
    let data = varmap.data().lock().unwrap();
    let names: Vec<&str> = data.keys().map(String::as_str).collect();
    let all: f64 = p
        .iter()
        .filter(|(k, _)| k.starts_with("grad."))
        .map(|(_, g)| norm(g).powi(2))
        .sum::<f64>()
        .sqrt();
    let trainable: Vec<_> = data.iter().filter(|(n, _)| is_trainable(n)).collect();
    let mut zero = 0;
    for (name, var) in &trainable {
        let want = &p[&format!("grad.{name}")];
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let scale = norm(want);
        let diff = norm(&(got - want).unwrap());
        let e = if feeds_batch_norm(name, &names) {
            zero += 1;
            diff / all
        } else {
            diff / scale
        };
        assert!(
            e <= 1e-3,
            "gradient of {name}: relative error {e} (|grad| = {scale}, all = {all})"
        );
    }
    let in_fixture = p.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(trainable.len(), in_fixture, "one gradient per parameter");
    assert!(trainable.len() >= 50, "{} parameters", trainable.len());
    zero
}

/// Fails unless each BatchNorm's running mean and variance (within 1e-4) and batch count
/// (exactly) are PyTorch's `after_train.<prefix>.*` in `p`.
pub fn assert_running_statistics_match(
    p: &HashMap<String, Tensor>,
    batch_norms: &[(&str, &BatchNorm2d)],
) {
    assert!(!batch_norms.is_empty());
    for (prefix, bn) in batch_norms {
        let e = rel_err(
            bn.running_mean.as_tensor(),
            &p[&format!("after_train.{prefix}.running_mean")],
        );
        assert!(e <= 1e-4, "{prefix}.running_mean: {e}");
        let e = rel_err(
            bn.running_var.as_tensor(),
            &p[&format!("after_train.{prefix}.running_var")],
        );
        assert!(e <= 1e-4, "{prefix}.running_var: {e}");
        let n: i64 = bn.num_batches_tracked.as_tensor().to_scalar().unwrap();
        let want: i64 = p[&format!("after_train.{prefix}.num_batches_tracked")]
            .to_scalar()
            .unwrap();
        assert_eq!(n, want, "{prefix}.num_batches_tracked");
    }
}

/// Fails unless `ours` holds exactly the names of `want`, each with its shape and dtype: a
/// checkpoint written by the crate has PyTorch's `state_dict` layout.
pub fn assert_same_layout(want: &HashMap<String, Tensor>, ours: &HashMap<String, Tensor>) {
    let mut a: Vec<_> = want.keys().collect();
    let mut b: Vec<_> = ours.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for (k, t) in want {
        assert_eq!(
            (t.dims(), t.dtype()),
            (ours[k].dims(), ours[k].dtype()),
            "{k}"
        );
    }
}
