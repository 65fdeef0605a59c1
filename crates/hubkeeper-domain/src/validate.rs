//! Input rules shared by both aggregates.

use std::collections::BTreeSet;

use url::{Host, Url};

/// Longest scope name accepted; HubSpot's longest are well under 100 characters.
const MAX_SCOPE_LEN: usize = 128;

/// Cuts `text` to at most `max` characters (on a char boundary), marking the cut, so user
/// input echoed in errors or stored in events stays bounded.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Why a scope list was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadScope {
    pub(crate) scope: String,
    pub(crate) hint: &'static str,
}

/// Whether `scope` looks like a HubSpot scope (`crm.objects.contacts.read`, `oauth`,
/// `e-commerce`, `forms-uploaded-files`, ...).
pub(crate) fn check_scope(scope: &str) -> Result<(), BadScope> {
    let bad = |hint| BadScope {
        scope: shorten(scope, 64),
        hint,
    };
    if scope.contains(',') {
        return Err(bad("scopes are separated by spaces, not commas"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(bad("scope name is too long"));
    }
    let valid_chars = scope
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if scope.is_empty() || !valid_chars {
        return Err(bad("scopes contain only letters, digits, '.', '-' and '_'"));
    }
    Ok(())
}

/// Parses a space-separated scope list (as typed into the dashboard) into a set.
/// Duplicates collapse; order is irrelevant to HubSpot.
pub(crate) fn parse_scope_list(list: &str) -> Result<BTreeSet<String>, BadScope> {
    scope_set(list.split_whitespace())
}

/// Validates scopes that arrive already split (e.g. from HubSpot's token metadata).
pub(crate) fn scope_set<'a>(
    scopes: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<String>, BadScope> {
    scopes
        .into_iter()
        .map(|scope| check_scope(scope).map(|()| scope.to_owned()))
        .collect()
}

/// A short single-line human text (labels, reasons): trimmed, non-empty, no control
/// characters, at most `max` characters. Returns the trimmed text or a reason.
pub(crate) fn single_line(text: &str, max: usize) -> Result<String, &'static str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty");
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must be a single line without control characters");
    }
    if trimmed.chars().count() > max {
        return Err("is too long");
    }
    Ok(trimmed.to_owned())
}

/// The rule for every URL an app gives Hubkeeper to send someone to or to call (OAuth redirect
/// URI, connect return URL, notification endpoint): absolute, with a host, without whitespace,
/// fragment or credentials, and https, or plain http only to the machine itself (localhost or a
/// loopback address, for development). Callers add their own length limit and error type; the
/// reason reads after the field's name ("redirect URI must ...").
pub(crate) fn check_app_url(raw: &str) -> Result<Url, &'static str> {
    if raw.is_empty() {
        return Err("must not be empty");
    }
    if raw.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace");
    }
    if raw.contains('#') {
        return Err("must not contain a fragment (#...)");
    }
    let url = Url::parse(raw).map_err(|_| "must be an absolute http(s) URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials");
    }
    let is_local = match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("must have a host"),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_local => Ok(url),
        "http" => Err("must use https (http is only allowed for localhost)"),
        _ => Err("must be an absolute http(s) URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists() {
        let set = parse_scope_list("  oauth crm.objects.contacts.read\tcrm.objects.contacts.read ")
            .expect("valid");
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            vec!["crm.objects.contacts.read", "oauth"]
        );
        assert!(parse_scope_list("")
            .expect("empty is syntactically fine")
            .is_empty());
        let err = parse_scope_list("oauth,crm.objects.contacts.read").expect_err("comma");
        assert_eq!(err.hint, "scopes are separated by spaces, not commas");
        assert!(parse_scope_list("crm.objects.contacts.read ünïcode").is_err());
        assert!(parse_scope_list(&"a".repeat(129)).is_err());
        assert!(scope_set([
            "forms-uploaded-files",
            "e-commerce",
            "crm.schemas.custom_x.read"
        ])
        .is_ok());
        assert!(scope_set([""]).is_err());
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ææææææ", 3), "æææ…");
    }

    #[test]
    fn single_line_rules() {
        assert_eq!(single_line("  Prod app ", 20), Ok("Prod app".to_owned()));
        assert!(single_line("   ", 20).is_err());
        assert!(single_line("a\nb", 20).is_err());
        assert!(single_line("abcdef", 5).is_err());
    }
}
