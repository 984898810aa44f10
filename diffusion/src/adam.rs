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
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => (
                    ((m * b1)? + (g * (1.0 - b1))?)?,
                    ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                ),
                None => ((g * (1.0 - b1))?, (g.sqr()? * (1.0 - b2))?),
            };
            let denom = ((&v / unbias2)?.sqrt()? + self.eps)?;
            let update = ((&m / unbias1)? / denom)?;
            w.set(&(w.as_tensor() - (update * self.lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// `loss.backward()` followed by [`Adam::step`].
    pub fn backward_step(&mut self, params: &[(String, Var)], loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(params, &grads)
    }
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
