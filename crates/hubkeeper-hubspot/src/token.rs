//! Credentials and tokens exchanged with HubSpot's OAuth endpoints.
//!
//! Every secret is wrapped so that `Debug`, `Display` and logging can never print it; reading the
//! value requires an explicit `expose()` call that is easy to audit.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

/// Which generation of HubSpot's OAuth endpoints an app talks to.
///
/// Chosen per app because HubSpot migrates apps individually; the legacy generation is retired
/// on 2027-02-16, hence the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthEndpoints {
    /// `/oauth/v1/token`, `GET /oauth/v1/{access,refresh}-tokens/{token}`,
    /// `DELETE /oauth/v1/refresh-tokens/{token}`.
    V1Legacy,
    /// `/oauth/2026-03/token`, `/oauth/2026-03/token/introspect`, `/oauth/2026-03/token/revoke`.
    #[default]
    #[serde(rename = "v2026_03")]
    V2026_03,
}

impl OAuthEndpoints {
    /// Stable label for configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthEndpoints::V1Legacy => "v1_legacy",
            OAuthEndpoints::V2026_03 => "v2026_03",
        }
    }
}

impl std::str::FromStr for OAuthEndpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "v1_legacy" | "legacy" => Ok(OAuthEndpoints::V1Legacy),
            "2026-03" | "v2026_03" | "v3" => Ok(OAuthEndpoints::V2026_03),
            other => Err(format!(
                "unknown OAuth endpoint generation `{other}` (expected v1_legacy or v2026_03)"
            )),
        }
    }
}

/// One HubSpot app's OAuth credentials.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
    /// Must equal the app's registered redirect URI byte for byte (HubSpot compares exactly).
    pub redirect_uri: String,
    pub endpoints: OAuthEndpoints,
}

macro_rules! secret_token {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The raw token; call only where it is sent to HubSpot or encrypted for storage.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!($label, "([REDACTED])"))
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<SecretString> for $name {
            fn from(value: SecretString) -> Self {
                Self(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::new)
            }
        }
    };
}

secret_token!(
    /// A bearer token for HubSpot's APIs (lives ~30 minutes).
    AccessToken,
    "AccessToken"
);
secret_token!(
    /// The long-lived token that mints access tokens; losing it means re-installing the app.
    RefreshToken,
    "RefreshToken"
);

/// The result of a successful code exchange or refresh.
///
/// HubSpot may or may not rotate refresh tokens, so callers must persist `refresh_token` from
/// every response rather than assuming it is unchanged.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: AccessToken,
    pub refresh_token: RefreshToken,
    /// Seconds until the access token expires, counted from when HubSpot answered.
    pub expires_in: u64,
    pub token_type: String,
    pub hub_id: Option<u64>,
    pub user_id: Option<u64>,
    /// Empty when HubSpot did not list scopes in the response.
    pub scopes: Vec<String>,
}

/// The longest access-token lifetime believed from an answer (HubSpot's are 30 minutes): a larger
/// `expires_in` only makes Hubkeeper refresh earlier than it had to.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

impl TokenSet {
    /// When the access token expires, for an answer received at `answered_at`: `expires_in`
    /// clamped to [`MAX_TOKEN_LIFETIME_SECS`] and added with checked arithmetic, so no value
    /// HubSpot (or anyone in between) sends can overflow or panic.
    pub fn expires_at(&self, answered_at: DateTime<Utc>) -> DateTime<Utc> {
        expiry_after(answered_at, self.expires_in)
    }
}

/// `answered_at` + `expires_in` seconds, clamped; see [`TokenSet::expires_at`].
pub fn expiry_after(answered_at: DateTime<Utc>, expires_in: u64) -> DateTime<Utc> {
    let seconds = i64::try_from(expires_in.min(MAX_TOKEN_LIFETIME_SECS)).unwrap_or(0);
    chrono::Duration::try_seconds(seconds)
        .and_then(|lifetime| answered_at.checked_add_signed(lifetime))
        .unwrap_or(answered_at)
}

/// HubSpot's token response as sent; private so a partially-filled set never escapes.
#[derive(Deserialize)]
pub(crate) struct RawTokenResponse {
    access_token: AccessToken,
    refresh_token: RefreshToken,
    expires_in: u64,
    #[serde(default = "default_token_type")]
    token_type: String,
    #[serde(default)]
    hub_id: Option<u64>,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// RFC 6749 form: a space-separated string.
    #[serde(default)]
    scope: Option<String>,
}

fn default_token_type() -> String {
    "bearer".to_owned()
}

impl From<RawTokenResponse> for TokenSet {
    fn from(raw: RawTokenResponse) -> Self {
        TokenSet {
            access_token: raw.access_token,
            refresh_token: raw.refresh_token,
            expires_in: raw.expires_in,
            token_type: raw.token_type,
            hub_id: raw.hub_id,
            user_id: raw.user_id,
            scopes: merge_scopes(raw.scopes, raw.scope),
        }
    }
}

/// What HubSpot reports about a token, normalised across both endpoint generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The legacy endpoints have no such flag: a token they describe is active, and one they
    /// do not know (404) is reported as inactive.
    pub active: bool,
    pub hub_id: Option<u64>,
    /// The installing user's e-mail address.
    pub user: Option<String>,
    pub user_id: Option<u64>,
    pub app_id: Option<u64>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    /// Access tokens only.
    pub expires_in: Option<u64>,
    pub hub_domain: Option<String>,
    pub token_type: Option<String>,
}

impl TokenInfo {
    pub(crate) fn inactive() -> Self {
        TokenInfo {
            active: false,
            hub_id: None,
            user: None,
            user_id: None,
            app_id: None,
            client_id: None,
            scopes: Vec::new(),
            expires_in: None,
            hub_domain: None,
            token_type: None,
        }
    }
}

/// Introspection response of either generation. The echoed `token` field is deliberately not
/// captured so the secret is dropped during parsing.
#[derive(Deserialize)]
pub(crate) struct RawTokenInfo {
    /// Absent on the legacy endpoints, where a 200 means the token is live.
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    hub_id: Option<u64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    app_id: Option<u64>,
    #[serde(default, deserialize_with = "client_id_as_string")]
    client_id: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    hub_domain: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
}

impl From<RawTokenInfo> for TokenInfo {
    fn from(raw: RawTokenInfo) -> Self {
        TokenInfo {
            active: raw.active.unwrap_or(true),
            hub_id: raw.hub_id,
            user: raw.user,
            user_id: raw.user_id,
            app_id: raw.app_id,
            client_id: raw.client_id,
            scopes: merge_scopes(raw.scopes, raw.scope),
            expires_in: raw.expires_in,
            hub_domain: raw.hub_domain,
            token_type: raw.token_type.or(raw.token_use),
        }
    }
}

/// Client ids are UUID strings in the docs but numeric in some older payloads.
fn client_id_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    }))
}

fn merge_scopes(list: Option<Vec<String>>, spaced: Option<String>) -> Vec<String> {
    match (list, spaced) {
        (Some(list), _) => list,
        (None, Some(s)) => s.split_whitespace().map(str::to_owned).collect(),
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_expires_in_is_clamped_and_never_panics() {
        let now = Utc::now();
        for huge in [
            u64::MAX,
            i64::MAX as u64,
            i64::MAX as u64 / 1000,
            10_u64.pow(13),
            MAX_TOKEN_LIFETIME_SECS + 1,
        ] {
            assert_eq!(
                expiry_after(now, huge),
                now + chrono::Duration::seconds(MAX_TOKEN_LIFETIME_SECS as i64),
                "{huge}"
            );
        }
        assert_eq!(
            expiry_after(now, 1800),
            now + chrono::Duration::seconds(1800)
        );
        assert_eq!(expiry_after(now, 0), now);
        // Near the end of time nothing overflows either.
        assert_eq!(
            expiry_after(DateTime::<Utc>::MAX_UTC, 1800),
            DateTime::<Utc>::MAX_UTC
        );
        let body =
            br#"{"access_token":"at","refresh_token":"rt","expires_in":18446744073709551615}"#;
        let raw: RawTokenResponse = serde_json::from_slice(body).expect("parses");
        let set = TokenSet::from(raw);
        assert!(set.expires_at(now) <= now + chrono::Duration::days(1));
    }

    #[test]
    fn tokens_never_print() {
        let a = AccessToken::new("CJSP-secret-access");
        let r = RefreshToken::new("de305d54-secret-refresh");
        assert_eq!(format!("{a:?}"), "AccessToken([REDACTED])");
        assert_eq!(format!("{r:?}"), "RefreshToken([REDACTED])");
        let creds = AppCredentials {
            client_id: "cid".into(),
            client_secret: SecretString::from("client-secret-value"),
            redirect_uri: "https://x/cb".into(),
            endpoints: OAuthEndpoints::default(),
        };
        assert!(!format!("{creds:?}").contains("client-secret-value"));
    }

    #[test]
    fn token_response_parses_both_scope_forms() {
        let body = r#"{"access_token":"at","refresh_token":"rt","expires_in":1800,
            "token_type":"bearer","token_use":"access_token","hub_id":42,"user_id":7,
            "scopes":["oauth","crm.objects.contacts.read"]}"#;
        let set: TokenSet = serde_json::from_str::<RawTokenResponse>(body)
            .map(Into::into)
            .unwrap();
        assert_eq!(set.access_token.expose(), "at");
        assert_eq!(set.refresh_token.expose(), "rt");
        assert_eq!(set.expires_in, 1800);
        assert_eq!(set.hub_id, Some(42));
        assert_eq!(set.user_id, Some(7));
        assert_eq!(set.scopes, vec!["oauth", "crm.objects.contacts.read"]);
        assert!(!format!("{set:?}").contains("\"at\""));

        let body = r#"{"access_token":"at","refresh_token":"rt","expires_in":60,"scope":"a b"}"#;
        let set: TokenSet = serde_json::from_str::<RawTokenResponse>(body)
            .map(Into::into)
            .unwrap();
        assert_eq!(set.scopes, vec!["a", "b"]);
        assert_eq!(set.token_type, "bearer");
        assert_eq!(set.hub_id, None);
    }

    #[test]
    fn introspection_parses_both_generations() {
        let legacy = r#"{"token":"secret","user":"a@b.c","hub_domain":"x.com","scopes":["oauth"],
            "hub_id":62515,"app_id":456,"expires_in":1754,"user_id":123,"token_type":"access"}"#;
        let info: TokenInfo = serde_json::from_str::<RawTokenInfo>(legacy).unwrap().into();
        assert!(info.active);
        assert_eq!(info.hub_id, Some(62515));
        assert_eq!(info.app_id, Some(456));
        assert_eq!(info.expires_in, Some(1754));
        assert_eq!(info.token_type.as_deref(), Some("access"));

        let current = r#"{"active":true,"app_id":456,"client_id":"c-1","hub_id":1,"user_id":2,
            "scopes":["oauth"],"token_use":"access_token","expires_in":100,"hub_domain":"d","user":"u"}"#;
        let info: TokenInfo = serde_json::from_str::<RawTokenInfo>(current)
            .unwrap()
            .into();
        assert!(info.active);
        assert_eq!(info.client_id.as_deref(), Some("c-1"));
        assert_eq!(info.token_type.as_deref(), Some("access_token"));

        let inactive: TokenInfo = serde_json::from_str::<RawTokenInfo>(r#"{"active":false}"#)
            .unwrap()
            .into();
        assert_eq!(inactive, TokenInfo::inactive());
    }

    #[test]
    fn endpoints_parse_and_default() {
        assert_eq!(OAuthEndpoints::default(), OAuthEndpoints::V2026_03);
        assert_eq!("v1".parse::<OAuthEndpoints>(), Ok(OAuthEndpoints::V1Legacy));
        assert_eq!(
            "2026-03".parse::<OAuthEndpoints>(),
            Ok(OAuthEndpoints::V2026_03)
        );
        assert!("v9".parse::<OAuthEndpoints>().is_err());
        assert_eq!(
            serde_json::to_string(&OAuthEndpoints::V2026_03).unwrap(),
            "\"v2026_03\""
        );
    }
}
