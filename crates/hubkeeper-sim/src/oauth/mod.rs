//! OAuth: consent pages, scripted consent, token endpoint (authorization_code and refresh_token
//! grants on both endpoint generations), introspection and revocation.
//!
//! * [`consent`]: the authorize URL, the consent pages and the scripted consent.
//! * [`token`]: the token endpoint (code exchange and refresh).
//! * [`legacy`]: the `v1` token information and refresh-token deletion endpoints.
//! * [`introspection`]: the dated introspection and revocation endpoints.
//!
//! Shared here: form decoding and client authentication.

mod consent;
mod introspection;
mod legacy;
mod token;

pub(crate) use consent::{
    authorize_account_page, authorize_decision, authorize_page, scripted_approve,
};
pub(crate) use introspection::{introspect, revoke};
pub(crate) use legacy::{
    expired_error, legacy_access_token_info, legacy_refresh_token_info, legacy_revoke,
};
pub(crate) use token::token;

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;

use crate::config::AppSpec;
use crate::respond::oauth_error;
use crate::state::Store;

/// Decodes a form or query string; the first occurrence of a key wins.
pub(crate) fn form_map(raw: &[u8]) -> Option<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).ok()?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    Some(map)
}

fn bad_client(message: &str) -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "BAD_CLIENT_ID",
        message,
        "invalid_client",
    )
}

/// Why client authentication failed; turned into HubSpot's 401 by [`ClientAuthError::response`].
enum ClientAuthError {
    MissingClientId,
    UnknownClient,
    BadSecret,
}

impl ClientAuthError {
    fn response(&self) -> Response {
        match self {
            ClientAuthError::MissingClientId => bad_client("missing client_id"),
            ClientAuthError::UnknownClient => bad_client("missing or unknown client id"),
            ClientAuthError::BadSecret => oauth_error(
                StatusCode::UNAUTHORIZED,
                "BAD_CLIENT_SECRET",
                "client secret is missing or does not match the client id",
                "invalid_client",
            ),
        }
    }
}

/// Client authentication shared by the token, introspect and revoke endpoints. Credentials are
/// read from the form body only, as HubSpot documents.
fn authenticate_client(
    store: &Store,
    form: &HashMap<String, String>,
) -> Result<AppSpec, ClientAuthError> {
    let Some(client_id) = form.get("client_id").filter(|c| !c.is_empty()) else {
        return Err(ClientAuthError::MissingClientId);
    };
    let Some(app) = store.apps.get(client_id) else {
        return Err(ClientAuthError::UnknownClient);
    };
    match form.get("client_secret") {
        Some(secret) if store.secret_matches(app, secret, std::time::Instant::now()) => {
            Ok(app.clone())
        }
        _ => Err(ClientAuthError::BadSecret),
    }
}
