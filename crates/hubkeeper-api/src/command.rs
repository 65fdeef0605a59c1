//! What the command handlers of apps and installations share: who may act on which resource,
//! and how a bad path or body value becomes a 400 that names the problem.

use std::str::FromStr;

use hubkeeper_domain::ParseError;

use crate::auth::{Caller, Permission};
use crate::lifecycle::Problem;

/// A value parsed with the domain's own parser: its message says what was expected, so it goes
/// to the client as is.
pub(crate) fn parse<T: FromStr<Err = ParseError>>(raw: &str) -> Result<T, Problem> {
    raw.parse()
        .map_err(|e: ParseError| Problem::bad_request(e.to_string()))
}

/// The resource a handler acts on, after checking the caller may: the permission first, so a
/// caller without it learns nothing from how its id parses.
pub(crate) fn target<T: FromStr<Err = ParseError>>(
    caller: &Caller,
    permission: Permission,
    raw_id: &str,
) -> Result<T, Problem> {
    caller.require(permission)?;
    parse(raw_id)
}
