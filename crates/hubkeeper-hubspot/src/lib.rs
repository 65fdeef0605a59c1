//! HubSpot protocol: the OAuth client (legacy v1 and date-versioned endpoints) and the request
//! signature algorithms (v1, v2, v3) that both the webhook verifier and the simulator use.
//!
//! The base URLs are configuration rather than constants so the same client talks to the
//! simulator in tests and to HubSpot in production.
//!
//! ```no_run
//! use hubkeeper_hubspot::{
//!     AppCredentials, HubSpotClient, HubSpotConfig, HubSpotError, OAuthEndpoints,
//! };
//! use secrecy::SecretString;
//!
//! # async fn run() -> Result<(), HubSpotError> {
//! let client = HubSpotClient::new(HubSpotConfig::default())?;
//! let creds = AppCredentials {
//!     client_id: "client-id".into(),
//!     client_secret: SecretString::from("client-secret"),
//!     redirect_uri: "https://hubkeeper.example.com/oauth/callback".into(),
//!     endpoints: OAuthEndpoints::V2026_03,
//! };
//!
//! // 1. Send the user to HubSpot's consent page.
//! let url = client.authorize_url(&creds, &["oauth".into()], &[], "csrf-state", None);
//! println!("visit {url}");
//!
//! // 2. The callback received `?code=…`: trade it (never retried, codes are single-use).
//! let tokens = client.exchange_code(&creds, "code-from-callback").await?;
//!
//! // 3. Before `expires_in` runs out, refresh, and always store the returned refresh token.
//! match client.refresh(&creds, &tokens.refresh_token, tokens.hub_id).await {
//!     Ok(fresh) => { /* persist fresh.access_token / fresh.refresh_token */ }
//!     Err(e) if e.is_reauth_required() => { /* mark the installation as needing re-install */ }
//!     Err(e) => tracing::warn!(class = e.class(), "refresh failed: {e}"),
//! }
//!
//! // 4. Self-test an installation.
//! let contacts: serde_json::Value = client
//!     .get_json(&tokens.access_token, "/crm/v3/objects/contacts?limit=1", tokens.hub_id)
//!     .await?;
//! # let _ = contacts;
//! # Ok(())
//! # }
//! ```
//!
//! Webhook requests are checked with [`signature::verify`]:
//!
//! ```
//! use hubkeeper_hubspot::signature::{self, IncomingRequest, SignatureVersion, VerifierConfig};
//!
//! let body = b"[]";
//! let uri = "https://hubkeeper.example.com/webhooks/hubspot";
//! let now_ms = 1_700_000_000_000;
//! let sig = signature::sign_v3("secret", "POST", uri, body, now_ms);
//! let ts = now_ms.to_string();
//! let req = IncomingRequest {
//!     method: "POST",
//!     uri,
//!     body,
//!     signature: None,
//!     signature_version: None,
//!     signature_v3: Some(&sig),
//!     timestamp: Some(&ts),
//! };
//! let version = signature::verify(&VerifierConfig::default(), "secret", &req, now_ms);
//! assert_eq!(version, Ok(SignatureVersion::V3));
//! ```

pub mod client;
pub mod config;
pub mod error;
pub mod limiter;
pub mod retry;
pub mod signature;
pub mod token;

pub use client::HubSpotClient;
pub use config::{HubSpotConfig, RateLimitConfig, RetryPolicy};
pub use error::{ErrorDetails, HubSpotError, TransientCause};
pub use limiter::AccountRateLimiter;
pub use signature::{SignatureError, SignatureVersion, VerifierConfig};
pub use token::{AccessToken, AppCredentials, OAuthEndpoints, RefreshToken, TokenInfo, TokenSet};
