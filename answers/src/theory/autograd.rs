//! PyTorch's `requires_grad`, in candle.
//!
//! In candle a tensor is tracked by autograd only if it is a [`Var`] (or computed from one);
//! a plain [`Tensor`] is a constant. `y.backward()` returns a [`GradStore`]; `grads.get(&x)` is
//! `Some(dy/dx)` for a `Var` `x` and `None` for a constant, which plays the role of PyTorch's
//! `x.grad is None`. One difference: PyTorch's `y.backward()` raises an error when nothing in
//! `y`'s graph requires a gradient, while candle returns a store holding only `y`'s own
//! gradient. And read the store only for `Var`s: an operation that has one tracked operand also
//! stores a by-product entry for a constant operand, which is not that constant's full
//! derivative (see the test `a_constant_operand_can_get_a_partial_byproduct`).
//!
//! ```text
//! PyTorch                                   candle
//! torch.tensor(2.0)                         Tensor::new(2f64, &dev)        constant
//! torch.tensor(2.0, requires_grad=True)     Var::new(2f64, &dev)           tracked
//! y.backward(); x.grad                      let g = y.backward()?; g.get(&x)
//! ```

use anyhow::{Context, Result};
use candle_core::{backprop::GradStore, Device, Tensor, Var};

/// A leaf that is either tracked (`Var`) or a constant (`Tensor`).
enum Leaf {
    Tracked(Var),
    Constant(Tensor),
}

impl Leaf {
    fn new(values: &[f64], tracked: bool) -> Result<Self> {
        let dev = Device::Cpu;
        Ok(if tracked {
            Leaf::Tracked(Var::from_slice(values, values.len(), &dev)?)
        } else {
            Leaf::Constant(Tensor::from_slice(values, values.len(), &dev)?)
        })
    }

    fn tensor(&self) -> &Tensor {
        match self {
            Leaf::Tracked(v) => v.as_tensor(),
            Leaf::Constant(t) => t,
        }
    }

    fn grad(&self, grads: &GradStore) -> Result<Option<Vec<f64>>> {
        grads
            .get(self.tensor())
            .map(|g| g.to_vec1::<f64>())
            .transpose()
            .context("reading a gradient back")
    }
}

/// `y = x^2 + 3x` at `x`, backpropagated; returns `Some(dy/dx)` when `x` is a `Var`, `None`
/// when it is a constant tensor.
pub fn quadratic_grad(x: f64, requires_grad: bool) -> Result<Option<f64>> {
    let leaf = Leaf::new(&[x], requires_grad)?;
    let x = leaf.tensor();
    let y = (x.sqr()? + (x * 3.0)?)?.sum_all()?;
    let grads = y.backward()?;
    Ok(leaf.grad(&grads)?.and_then(|g| g.first().copied()))
}

/// `y = w[0] x^2 + w[1] x` (with `x` of shape `[1]` and `w` of shape `[2]`, as in the question),
/// backpropagated; returns the store's entries for `x` and `w` (for a constant leaf: `None`,
/// or a by-product when it is a direct operand of a tracked operation).
pub fn weighted_grads(
    x: f64,
    w: [f64; 2],
    x_requires_grad: bool,
    w_requires_grad: bool,
) -> Result<(Option<f64>, Option<Vec<f64>>)> {
    let xl = Leaf::new(&[x], x_requires_grad)?;
    let wl = Leaf::new(&w, w_requires_grad)?;
    let (x, w) = (xl.tensor(), wl.tensor());
    let y = ((w.narrow(0, 0, 1)? * x.sqr()?)? + (w.narrow(0, 1, 1)? * x)?)?;
    let grads = y.backward()?;
    Ok((
        xl.grad(&grads)?.and_then(|g| g.first().copied()),
        wl.grad(&grads)?,
    ))
}

/// Whether the result of `y.backward()` holds any gradient besides `y`'s own: false when no
/// input of `y = x^2 + 3x` is a `Var` (PyTorch would raise an error there instead).
pub fn backward_reaches_an_input(requires_grad: bool) -> Result<bool> {
    let leaf = Leaf::new(&[2.0], requires_grad)?;
    let x = leaf.tensor();
    let y = (x.sqr()? + (x * 3.0)?)?;
    let grads = y.backward()?;
    let reaches = grads.get_ids().any(|id| *id != y.id());
    Ok(reaches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_gets_its_gradient_constant_does_not() {
        // dy/dx = 2x + 3 = 7 at x = 2.
        assert_eq!(quadratic_grad(2.0, true).unwrap(), Some(7.0));
        assert_eq!(quadratic_grad(-1.5, true).unwrap(), Some(0.0));
        assert_eq!(quadratic_grad(2.0, false).unwrap(), None);
    }

    #[test]
    fn constant_graph_backward_returns_only_the_root() {
        assert!(backward_reaches_an_input(true).unwrap());
        assert!(!backward_reaches_an_input(false).unwrap());
    }

    #[test]
    fn constant_weights_have_no_gradient() {
        // x tracked, w constant: x.grad = 2 w0 x + w1 = 7, w.grad = None.
        let (gx, gw) = weighted_grads(2.0, [1.0, 3.0], true, false).unwrap();
        assert_eq!(gx, Some(7.0));
        assert_eq!(gw, None);
    }

    #[test]
    fn both_tracked() {
        // dy/dw = [x^2, x] = [4, 2].
        let (gx, gw) = weighted_grads(2.0, [1.0, 3.0], true, true).unwrap();
        assert_eq!(gx, Some(7.0));
        assert_eq!(gw, Some(vec![4.0, 2.0]));
    }

    #[test]
    fn a_constant_operand_can_get_a_partial_byproduct() {
        // Only w tracked. `x.sqr()` of a constant is a new constant, so the store's entry for x
        // comes only from the direct product w1 * x: 3, not dy/dx = 7. Entries for tensors that
        // are not Vars are by-products, not gradients.
        let (gx, gw) = weighted_grads(2.0, [1.0, 3.0], false, true).unwrap();
        assert_eq!((gx, gw), (Some(3.0), Some(vec![4.0, 2.0])));
    }
}
