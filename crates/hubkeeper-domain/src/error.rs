use thiserror::Error;

/// A value from outside (URL path, config, stored metadata) could not be read as a domain type.
///
/// Aggregate rule violations are [`AppError`](crate::app::AppError) and
/// [`InstallationError`](crate::installation::InstallationError); this one is only about
/// syntax, before any command is built. The offending input is echoed (shortened) because
/// these values are ids and enum names, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            what,
            input: crate::validate::shorten(input, 64),
            reason,
        }
    }

    /// What kind of value was being parsed (e.g. `"hub id"`).
    pub fn what(&self) -> &'static str {
        self.what
    }
}
