//! What a check says: how many of its cases passed, and the first failure with its hint.

use serde_json::json;
use std::fmt;
use std::io::Write;

/// The environment variable naming the file that verdicts are appended to (one JSON line each).
pub const LOG_VARIABLE: &str = "DIFFUSION_CHECK_LOG";

/// The first case of a check that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The inputs of the case, in words (`"batch 16, t = 0"`).
    pub case: String,
    /// What went wrong: the error or panic, the shapes, or the first differing value.
    pub message: String,
    /// What the usual mistake behind it is, when the result gave it away.
    pub hint: Option<String>,
}

/// The result of one check: `passed` of `total` cases, and the first failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The check's name (`"q"`), one of [`CHECKS`](super::CHECKS).
    pub check: String,
    pub passed: usize,
    pub total: usize,
    pub failure: Option<Failure>,
}

impl Verdict {
    /// Whether every case passed.
    pub fn is_pass(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }

    /// The share of cases that passed, the partial credit: `passed / total`.
    pub fn credit(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }

    /// The verdict as one JSON object (`check`, `passed`, `total`, `case`, `message`, `hint`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "check": self.check,
            "passed": self.passed,
            "total": self.total,
            "case": self.failure.as_ref().map(|f| &f.case),
            "message": self.failure.as_ref().map(|f| &f.message),
            "hint": self.failure.as_ref().and_then(|f| f.hint.as_ref()),
        })
    }

    /// Appends the verdict to the file named by [`LOG_VARIABLE`], if it is set. A log that cannot
    /// be written is reported on stderr; the verdict itself is still shown.
    pub(crate) fn log(&self) {
        let Some(path) = std::env::var_os(LOG_VARIABLE) else {
            return;
        };
        let line = format!("{}\n", self.to_json());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "could not record the verdict in {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }

    /// Shows the verdict in the notebook: a green or red box.
    pub fn evcxr_display(&self) {
        let (colour, background) = if self.is_pass() {
            ("#1a7f37", "#eaf7ee")
        } else {
            ("#b42318", "#fdecea")
        };
        let text = escape(&self.to_string());
        let html = format!(
            "<div style=\"border-left: 4px solid {colour}; background: {background}; \
             padding: 6px 10px; white-space: pre-wrap; font-family: monospace\">{text}</div>"
        );
        crate::display::output::print_evcxr(Ok(("text/html", html)));
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_pass() {
            return write!(
                f,
                "PASS {}: all {} cases match the reference",
                self.check, self.total
            );
        }
        write!(
            f,
            "FAIL {}: {} of {} cases match the reference",
            self.check, self.passed, self.total
        )?;
        if let Some(failure) = &self.failure {
            write!(f, "\nfirst failure ({}): {}", failure.case, failure.message)?;
            if let Some(hint) = &failure.hint {
                write!(f, "\nhint: {hint}")?;
            }
        }
        Ok(())
    }
}
