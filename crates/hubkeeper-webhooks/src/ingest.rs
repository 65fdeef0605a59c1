//! The receiving end of `POST /webhooks/hubspot/{app_id}`: size check, signature, batch shape,
//! then the raw batch is stored durably in JetStream before HubSpot gets its 200.
//!
//! Nothing else happens on this path (no database write, no routing): HubSpot waits 5 seconds
//! and retries anything slower, and a batch acknowledged by JetStream (file storage) is as safe
//! as a committed row. If JetStream does not acknowledge, the answer is 503 and HubSpot retries:
//! a 200 is never given for a batch that could be lost.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use hubkeeper_hubspot::signature::{
    self, IncomingRequest, SignatureError, SignatureVersion, VerifierConfig,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::batch::{validate_batch, BatchError};
use crate::cache::{CacheLimits, CredentialCache};
use crate::streams::batch_subject;

/// What the verifier needs to know about an app.
pub struct WebhookCredentials {
    /// The app's client secrets (HubSpot signs with them): the current one first, then, during
    /// a rotation's overlap, the previous one.
    pub client_secrets: Vec<ValidSecret>,
    /// Signature versions the app accepts.
    pub accepted: Vec<SignatureVersion>,
}

/// A client secret and the end of its validity (Unix milliseconds; `None`: no end).
pub struct ValidSecret {
    pub secret: SecretString,
    pub valid_until_ms: Option<i64>,
}

impl ValidSecret {
    fn valid_at(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_none_or(|until| now_ms < until)
    }
}

impl std::fmt::Debug for WebhookCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ends: Vec<Option<i64>> = self
            .client_secrets
            .iter()
            .map(|s| s.valid_until_ms)
            .collect();
        f.debug_struct("WebhookCredentials")
            .field(
                "client_secrets",
                &format!("[redacted; valid until {ends:?}]"),
            )
            .field("accepted", &self.accepted)
            .finish()
    }
}

/// Where webhook credentials come from (the App aggregate and the vault, in production).
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// `Ok(None)` when the app does not exist or was deleted.
    async fn webhook_credentials(
        &self,
        app_id: Uuid,
    ) -> Result<Option<WebhookCredentials>, hubkeeper_core::CoreError>;

    /// Changes whenever any app's credentials may have changed (a rotation, an update, a
    /// deletion, in this process or another): credentials cached under another generation are
    /// fetched again. The default never changes (the TTL alone bounds staleness).
    fn generation(&self) -> u64 {
        0
    }
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The public base URL HubSpot calls (scheme, host, optional path prefix), e.g.
    /// `https://hooks.example.com`; signatures v2/v3 cover the full URL, which behind a proxy is
    /// not what this server sees.
    pub public_url: String,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Oldest v3 timestamp accepted.
    pub max_age: Duration,
    /// Longest wait for JetStream's acknowledgement before answering 503.
    pub publish_timeout: Duration,
    /// How long verified credentials are reused without asking the source again.
    pub credentials_ttl: Duration,
    /// How long "no such app" is remembered, so a flood of requests for an unknown app asks the
    /// source once per period, not once per request.
    pub unknown_app_ttl: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 512 * 1024,
            max_age: Duration::from_secs(300),
            publish_timeout: Duration::from_secs(3),
            credentials_ttl: Duration::from_secs(30),
            unknown_app_ttl: Duration::from_secs(30),
        }
    }
}

/// The signature headers of a request (the API picks them out of its header map).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureHeaders<'a> {
    pub signature: Option<&'a str>,
    pub signature_version: Option<&'a str>,
    pub signature_v3: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// Why a webhook request was not accepted. Messages are safe to return to the sender.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no app {0}")]
    UnknownApp(Uuid),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("signature rejected: {0}")]
    Signature(#[from] SignatureError),
    #[error("malformed batch: {0}")]
    Malformed(#[from] BatchError),
    /// The batch could not be stored durably; HubSpot must retry.
    #[error("the batch could not be stored: {0}")]
    Unavailable(String),
}

impl IngestError {
    /// Stable label for metrics and the JSON `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::UnknownApp(_) => "unknown_app",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Signature(e) => e.class(),
            IngestError::Malformed(_) => "malformed_batch",
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub events: usize,
    /// JetStream already had this exact request (HubSpot retried after a lost answer).
    pub duplicate: bool,
    pub stream_sequence: u64,
    pub signature_version: SignatureVersion,
}

/// Verifies `request` with every secret valid at `now_ms`, current first: the first match wins;
/// when none matches, the current secret's verdict. `None` when there is no secret.
fn verify_with_any(
    verifier: &VerifierConfig,
    creds: &WebhookCredentials,
    request: &IncomingRequest<'_>,
    now_ms: i64,
) -> Option<Result<SignatureVersion, SignatureError>> {
    let mut verdict = None;
    for secret in creds.client_secrets.iter().filter(|s| s.valid_at(now_ms)) {
        match signature::verify(verifier, secret.secret.expose_secret(), request, now_ms) {
            Ok(version) => return Some(Ok(version)),
            Err(e) => {
                verdict.get_or_insert(Err(e));
            }
        }
    }
    verdict
}

/// What an unknown app's requests are checked against (a secret nobody knows), so they cost
/// what a known app's do.
static UNKNOWN_APP_CREDENTIALS: LazyLock<WebhookCredentials> =
    LazyLock::new(|| WebhookCredentials {
        client_secrets: vec![ValidSecret {
            secret: SecretString::from(Uuid::new_v4().to_string()),
            valid_until_ms: None,
        }],
        accepted: vec![SignatureVersion::V3],
    });

pub struct WebhookIngest {
    js: jetstream::Context,
    credentials: CredentialCache,
    config: IngestConfig,
}

impl WebhookIngest {
    pub fn new(
        js: jetstream::Context,
        credentials: Arc<dyn CredentialSource>,
        config: IngestConfig,
    ) -> Self {
        let credentials = CredentialCache::new(
            credentials,
            CacheLimits {
                ttl: config.credentials_ttl,
                unknown_ttl: config.unknown_app_ttl,
                ..CacheLimits::default()
            },
        );
        Self {
            js,
            credentials,
            config,
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// The full URL HubSpot signed for a request to `path_and_query`.
    pub fn public_uri(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.config.public_url.trim_end_matches('/'),
            path_and_query
        )
    }

    /// Verifies and stores one request. `path_and_query` is the request target as received
    /// (e.g. `/webhooks/hubspot/<id>`), `now_ms` the current Unix time in milliseconds.
    pub async fn accept(
        &self,
        app_id: Uuid,
        path_and_query: &str,
        headers: SignatureHeaders<'_>,
        body: Bytes,
        now_ms: i64,
    ) -> Result<Accepted, IngestError> {
        if body.len() > self.config.max_body_bytes {
            return Err(IngestError::TooLarge {
                limit: self.config.max_body_bytes,
            });
        }
        let uri = self.public_uri(path_and_query);
        let creds = match self.credentials.get(app_id).await {
            Ok(creds) => creds,
            Err(IngestError::UnknownApp(id)) => {
                // The same work as for a known app (a signature check), so neither the answer nor
                // its time tells an unknown app from a wrong signature.
                let _ = verify_with_any(
                    &VerifierConfig {
                        accepted: vec![
                            SignatureVersion::V1,
                            SignatureVersion::V2,
                            SignatureVersion::V3,
                        ],
                        max_age: self.config.max_age,
                        ..VerifierConfig::default()
                    },
                    &UNKNOWN_APP_CREDENTIALS,
                    &IncomingRequest {
                        method: "POST",
                        uri: &uri,
                        body: &body,
                        signature: headers.signature,
                        signature_version: headers.signature_version,
                        signature_v3: headers.signature_v3,
                        timestamp: headers.timestamp,
                    },
                    now_ms,
                );
                return Err(IngestError::UnknownApp(id));
            }
            Err(e) => return Err(e),
        };
        let verifier = VerifierConfig {
            accepted: creds.accepted.clone(),
            max_age: self.config.max_age,
            ..VerifierConfig::default()
        };
        let request = IncomingRequest {
            method: "POST",
            uri: &uri,
            body: &body,
            signature: headers.signature,
            signature_version: headers.signature_version,
            signature_v3: headers.signature_v3,
            timestamp: headers.timestamp,
        };
        let verdict = verify_with_any(&verifier, &creds, &request, now_ms);
        let version = match verdict {
            Some(verdict) => verdict?,
            // No secret at all: nothing could have signed for this app.
            None => return Err(IngestError::UnknownApp(app_id)),
        };
        let events = validate_batch(&body)?;

        // JetStream's duplicate detection drops an identical resend of a request. Its id is
        // derived from the signature that was just verified, not from the body: each version's
        // signature is a MAC of the body (v3 also of the timestamp), so identical requests share
        // it and different ones do not, and hashing it costs nothing where a second pass over a
        // body of up to 512 KB was a tenth of this path's CPU.
        let signed = match version {
            SignatureVersion::V3 => headers.signature_v3,
            _ => headers.signature,
        };
        let mut id = Sha256::new();
        id.update(app_id.as_bytes());
        id.update(version.as_str().as_bytes());
        id.update(signed.unwrap_or_default().as_bytes());
        let message = PublishMessage::build()
            .payload(body)
            .message_id(hex::encode(id.finalize()))
            .header("Hk-App-Id", app_id.to_string().as_str())
            .header("Hk-Signature-Version", version.as_str())
            .header("Hk-Received-At", now_ms.to_string().as_str());
        let publish = async {
            let ack = self
                .js
                .send_publish(batch_subject(app_id), message)
                .await
                .map_err(|e| IngestError::Unavailable(e.to_string()))?;
            ack.await
                .map_err(|e| IngestError::Unavailable(e.to_string()))
        };
        let ack = tokio::time::timeout(self.config.publish_timeout, publish)
            .await
            .map_err(|_| {
                IngestError::Unavailable("JetStream did not acknowledge in time".into())
            })??;
        Ok(Accepted {
            events,
            duplicate: ack.duplicate,
            stream_sequence: ack.sequence,
            signature_version: version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(previous_until_ms: i64) -> WebhookCredentials {
        WebhookCredentials {
            client_secrets: vec![
                ValidSecret {
                    secret: SecretString::from("new-secret".to_owned()),
                    valid_until_ms: None,
                },
                ValidSecret {
                    secret: SecretString::from("old-secret".to_owned()),
                    valid_until_ms: Some(previous_until_ms),
                },
            ],
            accepted: vec![SignatureVersion::V1],
        }
    }

    fn verify(creds: &WebhookCredentials, secret: &str, now_ms: i64) -> Option<SignatureVersion> {
        let body = br#"[{"eventId":1}]"#;
        let signature = signature::sign_v1(secret, body);
        let request = IncomingRequest {
            method: "POST",
            uri: "https://hooks.example.com/webhooks/hubspot/x",
            body,
            signature: Some(&signature),
            signature_version: Some("v1"),
            signature_v3: None,
            timestamp: None,
        };
        let verifier = VerifierConfig {
            accepted: creds.accepted.clone(),
            ..VerifierConfig::default()
        };
        verify_with_any(&verifier, creds, &request, now_ms).and_then(Result::ok)
    }

    #[test]
    fn either_secret_during_the_overlap_then_only_the_new_one() {
        let creds = creds(1_000);
        assert_eq!(
            verify(&creds, "new-secret", 999),
            Some(SignatureVersion::V1)
        );
        assert_eq!(
            verify(&creds, "old-secret", 999),
            Some(SignatureVersion::V1)
        );
        assert_eq!(
            verify(&creds, "new-secret", 1_000),
            Some(SignatureVersion::V1)
        );
        assert_eq!(verify(&creds, "old-secret", 1_000), None);
        assert_eq!(verify(&creds, "another", 999), None);
    }

    #[test]
    fn credentials_never_print_a_secret() {
        let text = format!("{:?}", creds(5));
        assert!(
            !text.contains("new-secret") && !text.contains("old-secret"),
            "{text}"
        );
    }
}
