//! Reading one answer of a TOML submission as the type its question expects.
//!
//! Accepted forms:
//!
//! - a number: a TOML integer or float (`inf` and `-inf` included), or a string holding a
//!   decimal (`"0.5"`, `"1e-3"`), a fraction `"a/b"` (`"1/2"`, `"-7/4"`) or an infinity
//!   (`"inf"`, `"-inf"`, `"infinity"`, `"∞"`, `"-∞"`); `nan` is never a valid answer;
//!   A minus sign may be the ASCII hyphen or the Unicode minus `−` (U+2212) that word processors
//!   and many PDFs use (`"−0.69"`);
//! - a vector: a TOML array of such numbers, or a string of numbers separated by commas or by
//!   `x`, in brackets, parentheses or neither (`"0.9, 0.8, 0.72"`, `"[4, 2]"`,
//!   `"(128, 1, 16, 16)"`, `"8x8"`, `"8 × 8"`);
//! - a choice: a string (case and all whitespace ignored) or a boolean (`false` reads as
//!   `"false"`).
//!
//! Each reader returns `Err(reason)` with a sentence saying what form was expected.

/// Parses a number written as text: decimal, fraction `a/b`, or an infinity.
pub fn number_from_str(s: &str) -> Option<f64> {
    let t = s.trim().replace('\u{2212}', "-");
    let t = t.as_str();
    let lower = t.to_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" | "∞" | "+∞" => return Some(f64::INFINITY),
        "-inf" | "-infinity" | "-∞" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if lower.contains("nan") {
        return None;
    }
    if let Some((a, b)) = t.split_once('/') {
        let (a, b) = (decimal(a)?, decimal(b)?);
        if b == 0.0 {
            return None;
        }
        return Some(a / b);
    }
    decimal(t)
}

/// A finite decimal (Rust's float syntax, without `inf`/`nan` words).
fn decimal(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(|c| c.is_alphabetic() && c != 'e' && c != 'E') {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Reads a number.
pub fn read_number(v: &toml::Value) -> Result<f64, String> {
    const FORMS: &str =
        "write a number (0.5, -3, 1e-3), a fraction as a string (\"1/2\") or inf / -inf";
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(x) if x.is_nan() => Err(format!("nan is not an answer; {FORMS}")),
        toml::Value::Float(x) => Ok(*x),
        toml::Value::String(s) => {
            number_from_str(s).ok_or_else(|| format!("\"{s}\" is not a number; {FORMS}"))
        }
        toml::Value::Array(_) => Err(format!("expected one number, got a list; {FORMS}")),
        other => Err(format!(
            "expected a number, got a {}; {FORMS}",
            other.type_str()
        )),
    }
}

/// Reads a vector.
pub fn read_vector(v: &toml::Value) -> Result<Vec<f64>, String> {
    const FORMS: &str =
        "write a list of numbers such as [0.9, 0.8] (a shape may be \"8x8\" or \"(8, 8)\")";
    match v {
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                toml::Value::Array(_) => Err(format!("element {} is a list; {FORMS}", i + 1)),
                _ => read_number(item).map_err(|e| format!("element {}: {e}", i + 1)),
            })
            .collect(),
        toml::Value::String(s) => {
            let t = s.trim();
            let inner = t
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .or_else(|| t.strip_prefix('(').and_then(|t| t.strip_suffix(')')))
                .unwrap_or(t);
            let parts: Vec<&str> = if inner.contains(',') {
                inner.split(',').collect()
            } else {
                inner.split(['x', 'X', '×']).collect()
            };
            parts
                .iter()
                .map(|p| number_from_str(p))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| format!("\"{s}\" is not a list of numbers; {FORMS}"))
        }
        toml::Value::Integer(_) | toml::Value::Float(_) => {
            Err(format!("expected a list, got a single number; {FORMS}"))
        }
        other => Err(format!(
            "expected a list, got a {}; {FORMS}",
            other.type_str()
        )),
    }
}

/// Reads a choice, normalised (see [`normalize_choice`]).
pub fn read_choice(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(normalize_choice(s)),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected one of the named options as a string (e.g. \"none\"), got a {}",
            other.type_str()
        )),
    }
}

/// Lower case, all whitespace removed: `" (a) and (c) "` becomes `"(a)and(c)"`.
pub fn normalize_choice(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a value counts as no answer: an empty (or blank) string or an empty list.
pub fn is_blank(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.trim().is_empty(),
        toml::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `|given - expected| <= abs_tol + rel_tol |expected|`; an infinite expectation needs exactly
/// the same infinity.
pub fn within(given: f64, expected: f64, abs_tol: f64, rel_tol: f64) -> bool {
    if expected.is_infinite() || given.is_infinite() {
        return given == expected;
    }
    given.is_finite() && (given - expected).abs() <= abs_tol + rel_tol * expected.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_text() {
        assert_eq!(number_from_str("0.5"), Some(0.5));
        assert_eq!(number_from_str(" 1/2 "), Some(0.5));
        assert_eq!(number_from_str("-7/4"), Some(-1.75));
        assert_eq!(number_from_str("1e-3"), Some(0.001));
        assert_eq!(number_from_str("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(number_from_str("Infinity"), Some(f64::INFINITY));
        assert_eq!(number_from_str("∞"), Some(f64::INFINITY));
        // The Unicode minus of typeset text reads as a minus.
        assert_eq!(number_from_str("\u{2212}0.5"), Some(-0.5));
        assert_eq!(number_from_str("\u{2212}7/4"), Some(-1.75));
        assert_eq!(number_from_str("1e\u{2212}3"), Some(0.001));
        assert_eq!(number_from_str("\u{2212}∞"), Some(f64::NEG_INFINITY));
        for bad in [
            "", "seven", "nan", "1/0", "1/2/3", "sqrt(2)", "0x10", "1..2",
        ] {
            assert_eq!(number_from_str(bad), None, "{bad}");
        }
    }

    #[test]
    fn reading_values() {
        assert_eq!(read_number(&toml::Value::Integer(7)), Ok(7.0));
        assert!(read_number(&toml::Value::Float(f64::NAN)).is_err());
        assert!(read_number(&toml::Value::Boolean(true)).is_err());
        let arr = toml::Value::Array(vec![toml::Value::Integer(4), "2".into()]);
        assert_eq!(read_vector(&arr), Ok(vec![4.0, 2.0]));
        assert_eq!(read_vector(&"8x8".into()), Ok(vec![8.0, 8.0]));
        assert_eq!(read_vector(&"8 × 8".into()), Ok(vec![8.0, 8.0]));
        // A shape as Python prints it, and with a Unicode minus.
        assert_eq!(
            read_vector(&"(128, 1, 16, 16)".into()),
            Ok(vec![128.0, 1.0, 16.0, 16.0])
        );
        assert_eq!(read_vector(&"[\u{2212}1, 0.5]".into()), Ok(vec![-1.0, 0.5]));
        assert!(read_vector(&"(4, 2]".into()).is_err());
        assert_eq!(
            read_vector(&"[0.9, 0.8, 0.72]".into()),
            Ok(vec![0.9, 0.8, 0.72])
        );
        assert!(read_vector(&toml::Value::Integer(8)).is_err());
        assert!(read_vector(&"eight by eight".into()).is_err());
        let nested = toml::Value::Array(vec![toml::Value::Array(vec![])]);
        assert!(read_vector(&nested).is_err());
        assert_eq!(
            read_choice(&" (A) and (C) ".into()),
            Ok("(a)and(c)".to_string())
        );
        assert_eq!(
            read_choice(&toml::Value::Boolean(false)),
            Ok("false".to_string())
        );
        assert!(read_choice(&toml::Value::Integer(3)).is_err());
    }

    #[test]
    fn tolerance_edges() {
        // Bound 0.25 + 0 * 1: exactly on the edge is accepted, just outside is not.
        assert!(within(1.25, 1.0, 0.25, 0.0));
        assert!(within(0.75, 1.0, 0.25, 0.0));
        assert!(!within(1.2500001, 1.0, 0.25, 0.0));
        // Relative part: 100 +- (0 + 0.01 * 100) = 100 +- 1.
        assert!(within(101.0, 100.0, 0.0, 0.01));
        assert!(!within(101.5, 100.0, 0.0, 0.01));
        // Infinities only match themselves.
        assert!(within(f64::INFINITY, f64::INFINITY, 1e-3, 0.0));
        assert!(!within(f64::NEG_INFINITY, f64::INFINITY, 1e-3, 0.0));
        assert!(!within(1e300, f64::INFINITY, 1e-3, 0.0));
        assert!(!within(f64::INFINITY, 50.0, 1e-3, 0.1));
        assert!(!within(f64::NAN, 0.0, 1.0, 0.0));
    }

    #[test]
    fn blank_values() {
        assert!(is_blank(&"  ".into()));
        assert!(is_blank(&toml::Value::Array(vec![])));
        assert!(!is_blank(&toml::Value::Integer(0)));
    }
}
