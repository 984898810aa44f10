//! Adam (Kingma and Ba, 2015) with PyTorch's defaults, the course's optimizer
//! (`torch.optim.Adam(model.parameters(), lr=0.001)`). For each weight `w` with gradient `g`, at
//! step `k = 1, 2, ...`:
//!
//! ```text
//! m = b1 m + (1 - b1) g            running mean of the gradient      (b1 = 0.9)
//! v = b2 v + (1 - b2) g^2          running mean of its square        (b2 = 0.999)
//! w = w - lr (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)         (eps = 1e-8)
//! ```
//!
//! The divisions by `1 - b^k` undo the bias of starting `m` and `v` at zero. The state is kept by
//! parameter name, so the weights it updates can be replaced by others of the same name (see
//! [`Trainer`](crate::Trainer)) without losing it.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam's settings and running averages.
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken so far (`k` above).
    steps: i32,
    /// `(m, v)` of each parameter, by name.
    moments: HashMap<String, (Tensor, Tensor)>,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults otherwise.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            moments: HashMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps as usize
    }

    /// One update of every parameter of `params` that has a gradient in `grads` (a weight
    /// without one is left alone, as PyTorch leaves a parameter whose `.grad` is `None`).
    pub fn step(&mut self, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let unbias1 = 1.0 - b1.powi(self.steps);
        let unbias2 = 1.0 - b2.powi(self.steps);
        for (name, w) in params {
            let Some(g) = grads.get(w.as_tensor()) else {
                continue;
            };
            let (m, v) = match self.moments.remove(name) {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let k = Coefficients {
                b1,
                b2,
                unbias1,
                unbias2,
                lr: self.lr,
                eps: self.eps,
            };
            let (m, v) = if is_cpu_f32(&[w.as_tensor(), g, &m, &v]) {
                update_cpu(w, g, &m, &v, k)?
            } else {
                update(w, g, &m, &v, k)?
            };
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// `loss.backward()` followed by [`Adam::step`], unless a gradient holds a NaN or an
    /// infinity: then nothing is updated (weights, moments and step count stay as they were) and
    /// the error names the first such parameter.
    pub fn backward_step(&mut self, params: &[(String, Var)], loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        for (name, w) in params {
            if let Some(g) = grads.get(w.as_tensor()) {
                let total = g.abs()?.sum_all()?.to_dtype(candle_core::DType::F64)?;
                if !total.to_scalar::<f64>()?.is_finite() {
                    candle_core::bail!(
                        "the gradient of `{name}` is not finite (NaN or infinite): no weight was updated"
                    );
                }
            }
        }
        self.step(params, &grads)
    }
}

/// The constants of one step.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    b1: f64,
    b2: f64,
    unbias1: f64,
    unbias2: f64,
    lr: f64,
    eps: f64,
}

/// One parameter's update with candle's operations (any device): returns the new `(m, v)`.
fn update(
    w: &Var,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: Coefficients,
) -> Result<(Tensor, Tensor)> {
    let m = ((m * k.b1)? + (g * (1.0 - k.b1))?)?;
    let v = ((v * k.b2)? + (g.sqr()? * (1.0 - k.b2))?)?;
    let denom = ((&v / k.unbias2)?.sqrt()? + k.eps)?;
    let step = ((&m / k.unbias1)? / denom)?;
    w.set(&(w.as_tensor() - (step * k.lr)?)?)?;
    Ok((m, v))
}

/// [`update`] in one pass over the values of CPU `f32` tensors (the same formulas, element by
/// element), instead of a dozen tensor operations per parameter.
fn update_cpu(
    w: &Var,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: Coefficients,
) -> Result<(Tensor, Tensor)> {
    let (gs, ms, vs, ws) = (
        g.flatten_all()?.to_vec1::<f32>()?,
        m.flatten_all()?.to_vec1::<f32>()?,
        v.flatten_all()?.to_vec1::<f32>()?,
        w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
    );
    let (mut m_new, mut v_new, mut w_new) = (ms, vs, ws);
    for (((gi, mi), vi), wi) in gs.iter().zip(&mut m_new).zip(&mut v_new).zip(&mut w_new) {
        let gi = *gi as f64;
        *mi = (k.b1 * *mi as f64 + (1.0 - k.b1) * gi) as f32;
        *vi = (k.b2 * *vi as f64 + (1.0 - k.b2) * gi * gi) as f32;
        let denom = (*vi as f64 / k.unbias2).sqrt() + k.eps;
        *wi = (*wi as f64 - k.lr * (*mi as f64 / k.unbias1) / denom) as f32;
    }
    let (shape, dev) = (w.shape().clone(), w.device().clone());
    w.set(&Tensor::from_vec(w_new, shape.clone(), &dev)?)?;
    Ok((
        Tensor::from_vec(m_new, shape.clone(), &dev)?,
        Tensor::from_vec(v_new, shape, &dev)?,
    ))
}

/// Are these all `f32` tensors on the CPU?
fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Adam on `loss = sum(c * w)`, whose gradient is `c` at every step, against the formula
    /// evaluated in f64 by hand.
    #[test]
    fn matches_the_formula_over_three_steps() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0, 0.5], &dev)?;
        let c = Tensor::new(&[0.3f32, -4.0, 0.0], &dev)?;
        let params = vec![("w".to_string(), w.clone())];
        let mut adam = Adam::new(0.01);
        let mut expected = [1.0f64, -2.0, 0.5];
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        for k in 1..=3 {
            let loss = (w.as_tensor() * &c)?.sum_all()?;
            adam.backward_step(&params, &loss)?;
            for i in 0..3 {
                let g = [0.3f64, -4.0, 0.0][i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let m_hat = m[i] / (1.0 - 0.9f64.powi(k));
                let v_hat = v[i] / (1.0 - 0.999f64.powi(k));
                expected[i] -= 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>()?;
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} against {expected:?}");
        }
        // a zero gradient never moves its weight; the others moved by about lr per step
        assert_eq!(got[2], 0.5);
        assert!((got[0] as f64 - (1.0 - 0.03)).abs() < 1e-4);
        assert_eq!(adam.steps(), 3);
        Ok(())
    }

    /// The one-pass CPU update and the tensor-operation one (used on other devices) agree, for
    /// gradients of order 1 and of order 1e-9, where `sqrt(v_hat)` is below `eps` and `eps`
    /// sets the step.
    #[test]
    fn both_updates_agree() -> anyhow::Result<()> {
        for scale in [1.0, 1e-9] {
            both_updates_agree_at(scale)?;
        }
        Ok(())
    }

    fn both_updates_agree_at(scale: f64) -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::Rng::new(5);
        let start = rng.randn((4, 7), &dev)?;
        let (w1, w2) = (Var::from_tensor(&start)?, Var::from_tensor(&start)?);
        let (mut m, mut v) = (start.zeros_like()?, start.zeros_like()?);
        let (mut m2, mut v2) = (m.clone(), v.clone());
        for step in 1..=3 {
            let g = (rng.randn((4, 7), &dev)? * scale)?;
            let k = Coefficients {
                b1: 0.9,
                b2: 0.999,
                unbias1: 1.0 - 0.9f64.powi(step),
                unbias2: 1.0 - 0.999f64.powi(step),
                lr: 0.01,
                eps: 1e-8,
            };
            (m, v) = update(&w1, &g, &m, &v, k)?;
            (m2, v2) = update_cpu(&w2, &g, &m2, &v2, k)?;
        }
        for (a, b) in [(w1.as_tensor(), w2.as_tensor()), (&m, &m2), (&v, &v2)] {
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                d < 1e-6,
                "the two updates differ by {d} (gradients of order {scale})"
            );
        }
        assert!(
            (w1.as_tensor() - &start)?
                .abs()?
                .min_all()?
                .to_scalar::<f32>()?
                > 0.0
        );
        Ok(())
    }

    /// An f64 weight takes the tensor-operation update (the one-pass one reads f32 values) and
    /// moves as the same f32 weight does.
    #[test]
    fn a_double_precision_weight_moves_as_a_single_precision_one() -> Result<()> {
        let dev = Device::Cpu;
        let moved = |dtype| -> Result<Vec<f64>> {
            let w = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &dev)?.to_dtype(dtype)?)?;
            let c = Tensor::new(&[0.3f64, -4.0], &dev)?.to_dtype(dtype)?;
            let params = vec![("w".to_string(), w.clone())];
            let mut adam = Adam::new(0.01);
            for _ in 0..2 {
                adam.backward_step(&params, &(w.as_tensor() * &c)?.sum_all()?)?;
            }
            w.as_tensor()
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()
        };
        let (single, double) = (
            moved(candle_core::DType::F32)?,
            moved(candle_core::DType::F64)?,
        );
        // two steps of about lr each, away from the gradient's sign
        let want = [1.0 - 0.02, -2.0 + 0.02];
        for ((s, d), w) in single.iter().zip(&double).zip(want) {
            assert!(
                (s - d).abs() < 1e-6,
                "f32 {single:?} against f64 {double:?}"
            );
            assert!((d - w).abs() < 1e-4, "{double:?} against about {want:?}");
        }
        Ok(())
    }

    #[test]
    fn a_parameter_without_gradient_is_left_alone() -> Result<()> {
        let dev = Device::Cpu;
        let (a, b) = (Var::new(&[1.0f32], &dev)?, Var::new(&[2.0f32], &dev)?);
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut adam = Adam::new(0.1);
        adam.backward_step(&params, &(a.as_tensor() * 3.0)?.sum_all()?)?;
        assert!(a.as_tensor().to_vec1::<f32>()?[0] < 1.0);
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, [2.0]);
        Ok(())
    }
}
