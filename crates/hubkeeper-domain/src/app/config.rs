//! App configuration values, their validation and the warnings a change deserves.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{AppError, UpdateApp};
use crate::validate::{check_app_url, parse_scope_list, single_line, BadScope};
use crate::ParseError;

/// Longest label accepted (it is a short internal name).
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// Deployment tag of an app; purely informational, so changing it is always safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local or shared development.
    Development,
    /// Pre-production.
    Staging,
    /// Live customers.
    Production,
}

impl Environment {
    /// Stable lowercase name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = ParseError;

    /// Accepts the dashboard's short tags (`dev`, `prod`) as well as the full names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dev" | "development" => Ok(Self::Development),
            "staging" | "stage" => Ok(Self::Staging),
            "prod" | "production" => Ok(Self::Production),
            _ => Err(ParseError::new(
                "environment",
                s,
                "expected development, staging or production",
            )),
        }
    }
}

/// Which generation of HubSpot's OAuth endpoints the app talks to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum OAuthGeneration {
    /// The legacy `/oauth/v1/...` endpoints.
    #[serde(rename = "v1")]
    V1,
    /// The dated `2026-03` endpoints; the default for new apps.
    #[default]
    #[serde(rename = "2026-03")]
    V2026_03,
}

impl OAuthGeneration {
    /// Stable name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2026_03 => "2026-03",
        }
    }
}

impl fmt::Display for OAuthGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OAuthGeneration {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "v1" => Ok(Self::V1),
            "2026-03" => Ok(Self::V2026_03),
            _ => Err(ParseError::new(
                "OAuth endpoint generation",
                s,
                "expected v1 or 2026-03",
            )),
        }
    }
}

/// A HubSpot webhook signature scheme the app accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    /// SHA-256 of secret + body.
    V1,
    /// SHA-256 of secret + method + URI + body.
    V2,
    /// HMAC-SHA-256 with timestamp.
    V3,
}

impl SignatureVersion {
    /// Every version (what apps registered before v3 became the default accept).
    pub const ALL: [Self; 3] = [Self::V1, Self::V2, Self::V3];

    /// What a new app accepts unless told otherwise: v3 alone (HMAC with a timestamp; v1/v2 sign
    /// no timestamp, so a captured request could be replayed forever).
    pub const DEFAULT_FOR_NEW_APPS: [Self; 1] = [Self::V3];

    /// v1 or v2: no timestamp in the signature.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::V1 | Self::V2)
    }

    /// Stable name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

impl fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignatureVersion {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            "v3" => Ok(Self::V3),
            _ => Err(ParseError::new(
                "signature version",
                s,
                "expected v1, v2 or v3",
            )),
        }
    }
}

/// The current, validated configuration of an app: aggregate state, not an event payload.
///
/// Public so the API can compute [`change_warnings`] from [`AppConfig::updated`] before or
/// after issuing an update, and so read models can be built from it in tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// Internal name.
    pub label: String,
    /// Free text, possibly empty.
    pub description: String,
    /// Deployment tag.
    pub environment: Environment,
    /// HubSpot client id (UUID format), immutable.
    pub client_id: String,
    /// The client secret, sealed by the edge; immutable.
    pub client_secret: Sealed,
    /// Exact redirect URI as registered in HubSpot (kept byte for byte, not normalised).
    pub redirect_uri: String,
    /// Required scopes.
    pub scopes: BTreeSet<String>,
    /// Optional scopes.
    pub optional_scopes: BTreeSet<String>,
    /// OAuth endpoint generation.
    pub oauth_generation: OAuthGeneration,
    /// Accepted webhook signature versions (never empty).
    pub signature_versions: BTreeSet<SignatureVersion>,
    /// Where connect sessions may send the end user back to (scheme, host, port and path
    /// prefix; see [`match_return_url`]). Empty: sessions take no return URL.
    #[serde(default)]
    pub return_urls: Vec<String>,
    /// When the app was registered.
    pub registered_at: DateTime<Utc>,
}

impl AppConfig {
    /// The configuration `update` would produce, with every changed field validated.
    ///
    /// Fails for invalid values and for attempts to change the client id or secret. Fields
    /// that are `None`, or equal to the current value, stay as they are.
    pub fn updated(&self, update: &UpdateApp) -> Result<AppConfig, AppError> {
        if let Some(client_id) = &update.client_id {
            if client_id.trim() != self.client_id {
                return Err(AppError::ClientIdImmutable);
            }
        }
        if update.client_secret.is_some() {
            // Sealed values of the same secret differ (fresh nonce), so any secret supplied
            // is treated as an attempted change.
            return Err(AppError::ClientSecretImmutable);
        }
        let mut next = self.clone();
        if let Some(label) = &update.label {
            next.label = validate_label(label)?;
        }
        if let Some(description) = &update.description {
            next.description = validate_description(description)?;
        }
        if let Some(environment) = update.environment {
            next.environment = environment;
        }
        if let Some(uri) = &update.redirect_uri {
            next.redirect_uri = validate_redirect_uri(uri)?;
        }
        if let Some(scopes) = &update.scopes {
            next.scopes = validate_scopes(scopes)?;
        }
        if let Some(optional) = &update.optional_scopes {
            next.optional_scopes = validate_optional_scopes(optional)?;
        }
        check_scope_overlap(&next.scopes, &next.optional_scopes)?;
        if let Some(generation) = update.oauth_generation {
            next.oauth_generation = generation;
        }
        if let Some(versions) = &update.signature_versions {
            next.signature_versions = validate_signature_versions(versions)?;
            check_legacy_opt_in(
                &self.signature_versions,
                &next.signature_versions,
                update.allow_legacy_signatures,
            )?;
        }
        if let Some(urls) = &update.return_urls {
            next.return_urls = validate_return_urls(urls)?;
        }
        Ok(next)
    }
}

/// Warnings for an operator about to change `old` into `new`; empty when the change is safe.
///
/// Pure so the dashboard can show them before saving and the API can return them after.
/// Label, description and environment never warn.
pub fn change_warnings(old: &AppConfig, new: &AppConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    let removed: Vec<&str> = old
        .scopes
        .difference(&new.scopes)
        .map(String::as_str)
        .collect();
    if !removed.is_empty() {
        warnings.push(format!(
            "removing scopes may break existing features that rely on them: {}",
            removed.join(" ")
        ));
    }
    let added: Vec<&str> = new
        .scopes
        .difference(&old.scopes)
        .map(String::as_str)
        .collect();
    if !added.is_empty() {
        warnings.push(format!(
            "added required scopes ({}) must also be added to the app in HubSpot; existing \
             installations keep their granted scopes until the user re-authorizes",
            added.join(" ")
        ));
    }
    let removed_optional: Vec<&str> = old
        .optional_scopes
        .difference(&new.optional_scopes)
        .map(String::as_str)
        .collect();
    if !removed_optional.is_empty() {
        warnings.push(format!(
            "removing optional scopes may break features for installations that granted them: {}",
            removed_optional.join(" ")
        ));
    }
    if old.redirect_uri != new.redirect_uri {
        warnings.push(format!(
            "the redirect URI must match HubSpot's configuration exactly (protocol, host, port \
             and path): set it to {} in HubSpot too, or OAuth will fail",
            new.redirect_uri
        ));
    }
    if old.oauth_generation != new.oauth_generation {
        warnings.push(format!(
            "OAuth endpoint generation changes from {} to {}: token exchanges and refreshes use \
             the new endpoints immediately",
            old.oauth_generation, new.oauth_generation
        ));
    }
    let dropped: Vec<&str> = old
        .signature_versions
        .difference(&new.signature_versions)
        .map(|v| v.as_str())
        .collect();
    if !dropped.is_empty() {
        warnings.push(format!(
            "webhook requests signed with {} will be rejected from now on",
            dropped.join(", ")
        ));
    }
    let added_legacy: BTreeSet<SignatureVersion> = new
        .signature_versions
        .difference(&old.signature_versions)
        .copied()
        .filter(|v| v.is_legacy())
        .collect();
    warnings.extend(legacy_signature_warning(&added_legacy));
    warnings
}

/// The warning an app accepting v1/v2 deserves; `None` when it accepts neither.
pub fn legacy_signature_warning(versions: &BTreeSet<SignatureVersion>) -> Option<String> {
    let legacy: Vec<&str> = versions
        .iter()
        .filter(|v| v.is_legacy())
        .map(|v| v.as_str())
        .collect();
    (!legacy.is_empty()).then(|| {
        format!(
            "webhook signatures {} carry no timestamp: a captured request can be replayed \
             forever; accept them only while a sender cannot sign v3",
            legacy.join(", ")
        )
    })
}

/// Refuses `next` when it adds v1/v2 to `current` without the explicit opt-in.
pub(crate) fn check_legacy_opt_in(
    current: &BTreeSet<SignatureVersion>,
    next: &BTreeSet<SignatureVersion>,
    allowed: bool,
) -> Result<(), AppError> {
    let added: Vec<&str> = next
        .difference(current)
        .filter(|v| v.is_legacy())
        .map(|v| v.as_str())
        .collect();
    if added.is_empty() || allowed {
        return Ok(());
    }
    Err(AppError::LegacySignaturesNotAllowed {
        versions: added.join(", "),
    })
}

pub(crate) fn validate_label(label: &str) -> Result<String, AppError> {
    single_line(label, MAX_LABEL_CHARS).map_err(|reason| AppError::InvalidLabel { reason })
}

pub(crate) fn validate_description(description: &str) -> Result<String, AppError> {
    let trimmed = description.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::DescriptionTooLong {
            max: MAX_DESCRIPTION_CHARS,
        });
    }
    Ok(trimmed.to_owned())
}

/// HubSpot client ids are UUIDs in the hyphenated 8-4-4-4-12 form; other UUID spellings
/// (braces, URN, no hyphens) would be sent verbatim and rejected by HubSpot, so they are
/// refused here.
pub(crate) fn validate_client_id(client_id: &str) -> Result<String, AppError> {
    let id = client_id.trim();
    let well_formed = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(id.to_owned())
    } else {
        Err(AppError::InvalidClientId)
    }
}

/// The redirect URI is compared byte for byte by HubSpot, so it is validated but stored
/// exactly as typed (the `url` crate would normalise it, e.g. add a trailing `/`).
pub(crate) fn validate_redirect_uri(uri: &str) -> Result<String, AppError> {
    check_app_url(uri)
        .map(|_| uri.to_owned())
        .map_err(|reason| AppError::InvalidRedirectUri { reason })
}

fn bad_scope(list: &'static str) -> impl Fn(BadScope) -> AppError {
    move |bad| AppError::InvalidScope {
        list,
        scope: bad.scope,
        hint: bad.hint,
    }
}

pub(crate) fn validate_scopes(scopes: &str) -> Result<BTreeSet<String>, AppError> {
    let set = parse_scope_list(scopes).map_err(bad_scope("scopes"))?;
    if set.is_empty() {
        return Err(AppError::NoScopes);
    }
    Ok(set)
}

pub(crate) fn validate_optional_scopes(scopes: &str) -> Result<BTreeSet<String>, AppError> {
    parse_scope_list(scopes).map_err(bad_scope("optional scopes"))
}

pub(crate) fn check_scope_overlap(
    required: &BTreeSet<String>,
    optional: &BTreeSet<String>,
) -> Result<(), AppError> {
    match required.intersection(optional).next() {
        Some(scope) => Err(AppError::ScopeRequiredAndOptional {
            scope: scope.clone(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn validate_signature_versions(
    versions: &[SignatureVersion],
) -> Result<BTreeSet<SignatureVersion>, AppError> {
    let set: BTreeSet<_> = versions.iter().copied().collect();
    if set.is_empty() {
        return Err(AppError::NoSignatureVersions);
    }
    Ok(set)
}

/// Most return URLs an app may register.
pub const MAX_RETURN_URLS: usize = 20;
/// Longest return URL accepted (registered or requested).
pub const MAX_RETURN_URL_CHARS: usize = 2000;

/// Why a URL cannot be a return URL, or is not on the app's list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnUrlError {
    /// Not a usable absolute URL.
    #[error("return URL {reason}")]
    Invalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// Well formed, but no registered entry has its scheme, host, port and path prefix.
    #[error(
        "return URL {url} is not on the app's list of return URLs (scheme, host, port and path \
         prefix must match a registered entry{registered})"
    )]
    NotAllowed {
        /// The URL asked for (shortened).
        url: String,
        /// `": a, b"` listing the entries, or `"; the app has none"`.
        registered: String,
    },
}

/// Parses one return URL: absolute http(s) (http only for localhost), with a host, without
/// credentials or fragment, at most [`MAX_RETURN_URL_CHARS`] long.
pub fn parse_return_url(raw: &str) -> Result<Url, ReturnUrlError> {
    let invalid = |reason| ReturnUrlError::Invalid { reason };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.chars().count() > MAX_RETURN_URL_CHARS {
        return Err(invalid("is longer than 2000 characters"));
    }
    check_app_url(raw).map_err(invalid)
}

/// Validates an app's list of return URLs: each one as [`parse_return_url`] and without a
/// query (an entry is a prefix); kept in their normalised form, duplicates dropped, order kept.
pub fn validate_return_urls(urls: &[String]) -> Result<Vec<String>, AppError> {
    let mut out: Vec<String> = Vec::new();
    for raw in urls {
        let url = parse_return_url(raw).map_err(|e| AppError::InvalidReturnUrl {
            reason: e.to_string(),
        })?;
        if url.query().is_some() {
            return Err(AppError::InvalidReturnUrl {
                reason: format!(
                    "{} must not contain a query: a registered return URL is a prefix",
                    crate::validate::shorten(url.as_str(), 200)
                ),
            });
        }
        let text = url.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    if out.len() > MAX_RETURN_URLS {
        return Err(AppError::InvalidReturnUrl {
            reason: format!("at most {MAX_RETURN_URLS} return URLs can be registered"),
        });
    }
    Ok(out)
}

/// Whether `candidate` may be used as a session's return URL given the app's `allowed` list:
/// the same scheme, host and port (default ports count) as an entry, and a path that is the
/// entry's path or continues it after a `/` (dot segments are resolved before comparing, so
/// `/done/../admin` is `/admin`). Any query on the candidate is kept.
pub fn match_return_url(allowed: &[String], candidate: &str) -> Result<Url, ReturnUrlError> {
    let url = parse_return_url(candidate)?;
    let fits = |entry: &Url| {
        entry.scheme() == url.scheme()
            && entry.host_str() == url.host_str()
            && entry.port_or_known_default() == url.port_or_known_default()
            && path_has_prefix(url.path(), entry.path())
    };
    if allowed
        .iter()
        .filter_map(|entry| Url::parse(entry).ok())
        .any(|entry| fits(&entry))
    {
        return Ok(url);
    }
    let registered = if allowed.is_empty() {
        "; the app has none".to_owned()
    } else {
        format!(": {}", allowed.join(", "))
    };
    Err(ReturnUrlError::NotAllowed {
        url: crate::validate::shorten(url.as_str(), 200),
        registered,
    })
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix == "/" || path == prefix {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}
