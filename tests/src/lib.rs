//! Cross-cutting tests live in `tests/`.
