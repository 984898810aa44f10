//! The gradients asked for in the energy-model questions, worked by hand:
//!
//! ```text
//! y = x^2 + 3x              dy/dx = 2x + 3
//! y = w0 x^2 + w1 x         dy/dx = 2 w0 x + w1,   dy/dw0 = x^2,   dy/dw1 = x
//! ```
//!
//! (An energy-based model samples by following `-dE/dx`, which is why these derivatives matter
//! there; the candle computation of the same numbers is in [`super::autograd`].)

/// `y = x^2 + 3x`.
pub fn quadratic(x: f64) -> f64 {
    x * x + 3.0 * x
}

/// `dy/dx = 2x + 3`.
pub fn quadratic_grad(x: f64) -> f64 {
    2.0 * x + 3.0
}

/// `y = w0 x^2 + w1 x`.
pub fn weighted(x: f64, w: [f64; 2]) -> f64 {
    w[0] * x * x + w[1] * x
}

/// `(dy/dx, [dy/dw0, dy/dw1]) = (2 w0 x + w1, [x^2, x])`.
pub fn weighted_grads(x: f64, w: [f64; 2]) -> (f64, [f64; 2]) {
    (2.0 * w[0] * x + w[1], [x * x, x])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite difference, an independent check of the hand derivatives.
    fn fd(f: impl Fn(f64) -> f64, x: f64) -> f64 {
        let h = 1e-5;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn quadratic_at_2() {
        assert_eq!(quadratic_grad(2.0), 7.0);
        assert_eq!(quadratic(2.0), 10.0);
        for x in [-1.5, 0.0, 2.0, 3.7] {
            assert!((quadratic_grad(x) - fd(quadratic, x)).abs() < 1e-8);
        }
    }

    #[test]
    fn weighted_at_x2_w13() {
        let (dx, dw) = weighted_grads(2.0, [1.0, 3.0]);
        assert_eq!((dx, dw), (7.0, [4.0, 2.0]));
        assert_eq!(weighted(2.0, [1.0, 3.0]), 10.0);
        let w = [1.0, 3.0];
        assert!((dx - fd(|x| weighted(x, w), 2.0)).abs() < 1e-8);
        assert!((dw[0] - fd(|a| weighted(2.0, [a, 3.0]), 1.0)).abs() < 1e-8);
        assert!((dw[1] - fd(|b| weighted(2.0, [1.0, b]), 3.0)).abs() < 1e-8);
    }
}
