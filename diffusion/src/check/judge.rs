//! How every check judges: run the student's function on each case, catching errors and panics,
//! compare with the reference, and name the mistake whose result the student's matches.

use anyhow::Result;
use candle_core::{DType, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Failure, Verdict};

/// A result to compare: its shape and its values as f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Values {
    /// The shape and values of a tensor (any float or integer dtype).
    pub fn of(t: &Tensor) -> Result<Self> {
        Ok(Self {
            shape: t.dims().to_vec(),
            data: t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        })
    }

    /// A vector of numbers, shape `[len]`.
    pub fn of_vec(v: &[f64]) -> Self {
        Self {
            shape: vec![v.len()],
            data: v.to_vec(),
        }
    }

    /// Whether `self` and `other` have the same shape and values within `1e-4` relative (plus
    /// `1e-5` absolute) of each other.
    pub fn close_to(&self, other: &Values) -> bool {
        self.shape == other.shape && self.first_difference(other).is_none()
    }

    /// The first index whose values differ beyond the tolerance.
    fn first_difference(&self, other: &Values) -> Option<usize> {
        self.data.iter().zip(&other.data).position(|(a, b)| {
            // a NaN is never close
            let close = (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
            !close
        })
    }
}

/// How a verdict starts the message of a `todo!()` that is still there.
pub const NOT_WRITTEN: &str = "not written yet";

/// Runs `f`, turning a panic into an error that carries the panic's message. The default panic
/// message is not printed (the verdict reports it), and the previous panic hook is put back.
pub fn guarded<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    // The panic hook is global: one check at a time swaps it.
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            // the message, without the backtrace some errors carry on the following lines
            let text = format!("{e:#}");
            let first = text.lines().next().unwrap_or("").trim_end();
            Err(format!("your function returned an error: {first}"))
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            if let Some(hint) = msg.strip_prefix("not yet implemented: ") {
                Err(format!("{NOT_WRITTEN} (todo!): {hint}"))
            } else if msg.starts_with("not yet implemented") {
                Err(format!("{NOT_WRITTEN} (todo!)"))
            } else {
                Err(format!("your function panicked: {msg}"))
            }
        }
    }
}

/// One input of a check, with how the verdict names it.
pub struct Case<I> {
    pub label: String,
    pub input: I,
}

/// A well-known mistake: what it computes, and the hint shown when the student's result matches.
pub struct Mistake<I> {
    pub hint: &'static str,
    pub wrong: fn(&I) -> Result<Values>,
}

/// How a check is judged. `on_error` may give a hint for an error message (a shape mismatch, say).
pub struct Judge<I> {
    pub check: &'static str,
    pub cases: Vec<Case<I>>,
    pub reference: fn(&I) -> Result<Values>,
    pub mistakes: Vec<Mistake<I>>,
    pub on_error: fn(&str) -> Option<&'static str>,
}

fn no_hint(_: &str) -> Option<&'static str> {
    None
}

impl<I> Judge<I> {
    /// A check without mistakes to recognise yet.
    pub fn new(check: &'static str, reference: fn(&I) -> Result<Values>) -> Self {
        Self {
            check,
            cases: Vec::new(),
            reference,
            mistakes: Vec::new(),
            on_error: no_hint,
        }
    }

    pub fn case(mut self, label: impl Into<String>, input: I) -> Self {
        self.cases.push(Case {
            label: label.into(),
            input,
        });
        self
    }

    pub fn mistake(mut self, hint: &'static str, wrong: fn(&I) -> Result<Values>) -> Self {
        self.mistakes.push(Mistake { hint, wrong });
        self
    }

    pub fn on_error(mut self, on_error: fn(&str) -> Option<&'static str>) -> Self {
        self.on_error = on_error;
        self
    }

    /// Runs `student` on every case and returns (and records) the verdict.
    pub fn run(self, mut student: impl FnMut(&I) -> Result<Values>) -> Verdict {
        let mut passed = 0;
        let mut failure = None;
        for case in &self.cases {
            match self.judge_case(case, &mut student) {
                None => passed += 1,
                Some(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        let verdict = Verdict {
            check: self.check.to_string(),
            passed,
            total: self.cases.len(),
            failure,
        };
        verdict.log();
        verdict
    }

    fn judge_case(
        &self,
        case: &Case<I>,
        student: &mut impl FnMut(&I) -> Result<Values>,
    ) -> Option<Failure> {
        let fail = |message: String, hint: Option<&str>| {
            Some(Failure {
                case: case.label.clone(),
                message,
                hint: hint.map(str::to_string),
            })
        };
        let expected = match (self.reference)(&case.input) {
            Ok(v) => v,
            Err(e) => return fail(format!("the reference failed on this case: {e:#}"), None),
        };
        let got = match guarded(|| student(&case.input)) {
            Ok(v) => v,
            Err(message) => {
                let hint = if message.starts_with(NOT_WRITTEN) {
                    None // the todo!'s own hint is in the message
                } else {
                    (self.on_error)(&message)
                };
                return fail(message, hint);
            }
        };
        if got.close_to(&expected) {
            return None;
        }
        let hint = self
            .mistakes
            .iter()
            .find(|m| (m.wrong)(&case.input).is_ok_and(|wrong| got.close_to(&wrong)))
            .map(|m| m.hint);
        if got.shape != expected.shape {
            return fail(
                format!("expected shape {:?}, got {:?}", expected.shape, got.shape),
                hint,
            );
        }
        let i = got.first_difference(&expected).unwrap_or(0);
        fail(
            format!(
                "element {} (index {:?} of shape {:?}) is {:.6}, expected {:.6}",
                i,
                unravel(i, &expected.shape),
                expected.shape,
                got.data[i],
                expected.data[i]
            ),
            hint,
        )
    }
}

/// The multi-index of flat index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[k] = i % d;
            i /= d;
        }
    }
    index
}

/// The hint for a shape error from candle: a `[batch]` coefficient must be shaped
/// `[batch, 1, 1, 1]` before it multiplies images.
pub fn broadcast_hint(message: &str) -> Option<&'static str> {
    (message.contains("shape mismatch") || message.contains("broadcast")).then_some(BROADCAST_HINT)
}

pub const BROADCAST_HINT: &str = "a coefficient picked per image has shape [batch]: reshape it \
     to [batch, 1, 1, 1] (`.reshape((n, 1, 1, 1))?`) and multiply with `broadcast_mul`, so that \
     each image gets its own coefficient";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_gives_the_multi_index() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(7, &[2, 2, 2]), vec![1, 1, 1]);
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: std::result::Result<(), String> = guarded(|| panic!("index 3 out of range"));
        assert_eq!(
            r.unwrap_err(),
            "your function panicked: index 3 out of range"
        );
        let r: std::result::Result<(), String> = guarded(|| todo!("use a_bar"));
        assert!(r.unwrap_err().starts_with("not written yet"));
    }

    #[test]
    fn closeness_is_relative() {
        let a = Values::of_vec(&[1000.0, 1.0]);
        assert!(a.close_to(&Values::of_vec(&[1000.05, 1.0])));
        assert!(!a.close_to(&Values::of_vec(&[1000.5, 1.0])));
        assert!(!a.close_to(&Values::of_vec(&[1000.0])));
        assert!(!a.close_to(&Values::of_vec(&[1000.0, f64::NAN])));
    }
}
