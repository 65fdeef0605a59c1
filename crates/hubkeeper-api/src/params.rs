//! Reading parameter values whose type the query struct leaves open (`Option<String>` fields):
//! each helper names the parameter in its 400. Empty and repeated parameters never get here:
//! [`crate::extract::Query`] refuses them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use hubkeeper_domain::ParseError;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use hubkeeper_core::access::Permission;

pub fn uuid(parameter: &'static str, value: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            Uuid::parse_str(v.trim())
                .map_err(|_| ApiError::invalid_parameter(parameter, "expected a UUID"))
        })
        .transpose()
}

pub fn time(
    parameter: &'static str,
    value: &Option<String>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid_parameter(
                        parameter,
                        "expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    )
                })
        })
        .transpose()
}

pub fn int(parameter: &'static str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_parameter(parameter, "expected an integer"))
        })
        .transpose()
}

/// An integer within `range`, or `default` when absent.
pub fn int_within(
    parameter: &'static str,
    value: &Option<String>,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> Result<i64, ApiError> {
    match int(parameter, value)? {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_parameter(
            parameter,
            format!("must be between {} and {}", range.start(), range.end()),
        )),
    }
}

/// A two-way parameter: absent or one of `off` is `false`, one of `on` is `true`, anything else
/// is refused with `expected`.
pub fn switch(
    parameter: &'static str,
    value: &Option<String>,
    off: &[&str],
    on: &[&str],
    expected: &str,
) -> Result<bool, ApiError> {
    match value.as_deref().map(str::trim) {
        None => Ok(false),
        Some(v) if off.contains(&v) => Ok(false),
        Some(v) if on.contains(&v) => Ok(true),
        Some(_) => Err(ApiError::invalid_parameter(parameter, expected)),
    }
}

/// Longest free-text parameter accepted.
pub const MAX_TEXT: usize = 500;

/// A free-text parameter, trimmed: at most [`MAX_TEXT`] characters and no control characters
/// (Postgres refuses a NUL byte in text, and no name or search term has one).
pub fn text(parameter: &'static str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_parameter(
            parameter,
            format!("longer than {MAX_TEXT} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid_parameter(
            parameter,
            "contains control characters",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// A path parameter parsed with the domain's own parser, whose message says what was expected.
pub fn path<T: FromStr<Err = ParseError>>(
    parameter: &'static str,
    raw: &str,
) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|e: ParseError| ApiError::invalid_parameter(parameter, e.to_string()))
}

/// The resource a handler acts on, after checking the caller may: the permission first, so a
/// caller without it learns nothing from how its id parses.
pub fn target<T: FromStr<Err = ParseError>>(
    caller: &Caller,
    permission: Permission,
    raw_id: &str,
) -> Result<T, ApiError> {
    caller.require(permission)?;
    path("id", raw_id)
}

/// A body value parsed with the domain's own parser: a broken rule, named by its message.
pub fn value<T: FromStr<Err = ParseError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|e: ParseError| ApiError::validation(e.to_string()))
}
