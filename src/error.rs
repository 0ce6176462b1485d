//! Per-row failures.
//!
//! A record that cannot be built (unreadable file, failed download, not an image, a
//! condition that cannot be computed) becomes a [`RowFailure`]: counted by class in the
//! shard's stats and listed with its key, never a crash. Errors that make the whole run
//! meaningless (a malformed annotation file, an unknown condition, a bad flag) are
//! `anyhow` errors that stop the run before anything is written.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    /// A short, stable class name such as `io`, `not_an_image`, `http_404`, `timeout`.
    pub class: String,
    /// What happened, for people.
    pub detail: String,
}

impl RowFailure {
    pub fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        RowFailure {
            class: class.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.detail)
    }
}

impl std::error::Error for RowFailure {}
