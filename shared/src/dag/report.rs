//! The collector of problems and warnings one parse produces, and field-path helpers.

use super::{DagError, DagErrors, MAX_ERRORS};

/// Problems and warnings gathered while parsing one file; errors beyond [`MAX_ERRORS`] are
/// only counted.
#[derive(Debug, Default)]
pub(super) struct Report {
    errors: Vec<DagError>,
    dropped: usize,
    warnings: Vec<String>,
}

impl Report {
    /// Record a problem at `field`.
    pub(super) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.has_room() {
            self.errors.push(DagError::new(field, message));
        } else {
            self.dropped += 1;
        }
    }

    /// Record a non-fatal remark.
    pub(super) fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// How many problems were recorded so far (listed or only counted).
    pub(super) fn error_count(&self) -> usize {
        self.errors.len() + self.dropped
    }

    /// Whether another error would still be listed; callers skip costly messages otherwise.
    pub(super) fn has_room(&self) -> bool {
        self.errors.len() < MAX_ERRORS
    }

    /// The warnings when no error was recorded, else all errors (never empty).
    pub(super) fn finish(self) -> Result<Vec<String>, DagErrors> {
        if self.errors.is_empty() {
            return Ok(self.warnings);
        }
        let mut errors = self.errors;
        if self.dropped > 0 {
            errors.push(DagError::new(
                "",
                format!(
                    "… and {} more problems not listed; fix the ones above and parse again",
                    self.dropped
                ),
            ));
        }
        Err(DagErrors(errors))
    }
}

/// The path of `key` inside the map at `parent` (`""` is the top level).
pub(super) fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of item `index` of the list at `parent`.
pub(super) fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}
