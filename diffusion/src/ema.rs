//! An exponential moving average (EMA) of the weights, kept beside the weights Adam trains.
//!
//! ```text
//! d_k   = min(decay, (1 + k) / (10 + k))     k = updates so far (a warm-up: early on, forget fast)
//! ema  <- d_k ema + (1 - d_k) w              after every optimizer step
//! ```
//!
//! Adam's last weights carry the noise of the last few batches; their average over the last
//! `~1 / (1 - decay)` steps (1,000 for `decay = 0.999`) does not. Sampling from the average is
//! a common step past the course (DDPM, Improved DDPM and most later models sample from it).
//! The warm-up keeps the average from remembering the random starting weights in a short run.
//!
//! ```
//! use diffusion::ema::Ema;
//! assert_eq!(Ema::new(0.999).decay_at(0), 0.1); // (1 + 0) / (10 + 0)
//! assert_eq!(Ema::new(0.999).decay_at(10_000), 0.999);
//! ```

use std::collections::HashMap;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

/// The averages of a network's trainable weights, by PyTorch name.
#[derive(Debug, Clone)]
pub struct Ema {
    /// The most the average keeps of itself at each update.
    pub decay: f64,
    /// Updates so far.
    pub updates: usize,
    averages: Vec<(String, Tensor)>,
}

impl Ema {
    /// An average that starts at the weights of the first [`update`](Self::update).
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            updates: 0,
            averages: vec![],
        }
    }

    /// Checks `decay` for a training run: in `[0, 1)`.
    pub fn checked(decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            bail!("the EMA decay must lie in [0, 1) (0.999 is usual), got {decay}");
        }
        Ok(Self::new(decay))
    }

    /// `d_k = min(decay, (1 + k) / (10 + k))`.
    pub fn decay_at(&self, k: usize) -> f64 {
        self.decay.min((1 + k) as f64 / (10 + k) as f64)
    }

    /// `ema <- d_k ema + (1 - d_k) w` for every trainable weight (`params`, sorted by name).
    pub fn update(&mut self, params: &[(String, Var)]) -> Result<()> {
        if self.averages.is_empty() {
            self.averages = params
                .iter()
                .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
                .collect::<Result<_>>()?;
        } else {
            let d = self.decay_at(self.updates);
            for ((name, avg), (p_name, w)) in self.averages.iter_mut().zip(params) {
                debug_assert_eq!(name, p_name);
                *avg = ((&*avg * d)? + (w.as_tensor().detach() * (1.0 - d))?)?;
            }
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged weights by name (empty before the first update).
    pub fn weights(&self) -> &[(String, Tensor)] {
        &self.averages
    }

    /// A copy of `varmap` with the averages in place of its trainable weights (BatchNorm's
    /// statistics, which Adam does not train, are copied as they are).
    pub fn varmap(&self, varmap: &VarMap) -> Result<VarMap> {
        let averages: HashMap<&str, &Tensor> =
            self.averages.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let out = VarMap::new();
        {
            let src = varmap
                .data()
                .lock()
                .expect("the VarMap lock is never poisoned");
            let mut dst = out.data().lock().expect("a new VarMap's lock is free");
            for (name, var) in src.iter() {
                let t = match averages.get(name.as_str()) {
                    Some(t) => (*t).copy()?,
                    None => var.as_tensor().copy()?,
                };
                dst.insert(name.clone(), Var::from_tensor(&t)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_average_follows_the_formula() {
        let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let params = vec![("w".to_string(), w.clone())];
        let mut ema = Ema::new(0.5);
        ema.update(&params).unwrap(); // starts at w
        w.set(&Tensor::new(&[3f32, 6.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&params).unwrap(); // d_1 = min(0.5, 2/11) = 2/11
        let d = 2.0 / 11.0;
        let got: Vec<f32> = ema.weights()[0].1.to_vec1().unwrap();
        let want = [d * 1.0 + (1.0 - d) * 3.0, d * 2.0 + (1.0 - d) * 6.0];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert_eq!(ema.updates, 2);
    }

    #[test]
    fn a_decay_outside_zero_one_is_refused() {
        for d in [1.0, -0.1, f64::NAN] {
            let e = Ema::checked(d).unwrap_err().to_string();
            assert!(e.contains("0.999"), "{e}");
        }
        assert!(Ema::checked(0.0).is_ok());
    }
}
