//! Getting a picture out: the evcxr (Jupyter) display block and writing files safely.

use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;

/// The text that makes the evcxr kernel show `content` as `mime`:
///
/// ```text
/// EVCXR_BEGIN_CONTENT <mime>
/// <content>
/// EVCXR_END_CONTENT
/// ```
///
/// `content` is base64 for `image/png` and raw text for `text/html` and `image/svg+xml`.
pub fn evcxr_block(mime: &str, content: &str) -> String {
    format!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT\n")
}

/// Prints [`evcxr_block`] to stdout in one write, or the error to stderr.
///
/// Within one notebook cell evcxr keeps only the last output of each MIME type, so a cell that
/// shows several things should combine them in one [`Figure`](super::Figure).
pub fn print_evcxr(content: Result<(&'static str, String)>) {
    match content {
        Ok((mime, content)) => {
            let block = evcxr_block(mime, &content);
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(block.as_bytes()).and_then(|_| out.flush()) {
                eprintln!("could not write the picture to stdout: {e}");
            }
        }
        Err(e) => eprintln!("could not draw the picture: {e:#}"),
    }
}

/// Standard base64 (with padding, no line breaks), as data URIs and Jupyter expect.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The lower-case extension of `path`, or an error naming the accepted ones.
pub(crate) fn extension(path: &Path, accepted: &[&str]) -> Result<String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !accepted.contains(&ext.as_str()) {
        bail!(
            "cannot tell the format of {}: expected a file name ending in {}",
            path.display(),
            accepted
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    Ok(ext)
}

pub use crate::files::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evcxr_block_has_the_protocol_lines() {
        assert_eq!(
            evcxr_block("text/html", "<b>x</b>"),
            "EVCXR_BEGIN_CONTENT text/html\n<b>x</b>\nEVCXR_END_CONTENT\n"
        );
    }

    #[test]
    fn base64_matches_rfc4648_examples() {
        // RFC 4648, section 10.
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn extension_is_checked_case_insensitively() {
        assert_eq!(extension(Path::new("a/B.PNG"), &["png"]).unwrap(), "png");
        let err = extension(Path::new("a/b.jpg"), &["svg", "png"]).unwrap_err();
        assert!(err.to_string().contains(".svg or .png"), "{err}");
        assert!(extension(Path::new("noext"), &["png"]).is_err());
    }
}
