//! The webhook intake under a flood of requests for unknown app ids: a real app's signed batch is
//! stored while every lookup of the flood is still waiting for its answer (credential lookups
//! are single-flight per app, not one at a time for all apps).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use hubkeeper_hubspot::signature::{sign_v3, SignatureVersion};
use hubkeeper_testkit::{wait_until, TestEnv};
use hubkeeper_webhooks::{
    ensure_webhook_streams, CredentialSource, IngestConfig, IngestError, SignatureHeaders,
    ValidSecret, WebhookCredentials, WebhookIngest, WebhookStreamsConfig,
};
use secrecy::SecretString;
use tokio::sync::Semaphore;
use uuid::Uuid;

const PUBLIC_URL: &str = "https://hooks.example.com";
const SECRET: &str = "real-app-secret";
const FLOOD: usize = 300;

/// Knows one app; a lookup of any other id waits until the gate opens, as a slow store would.
struct SlowForUnknownApps {
    real: Uuid,
    gate: Semaphore,
    unknown_waiting: AtomicUsize,
}

#[async_trait::async_trait]
impl CredentialSource for SlowForUnknownApps {
    async fn webhook_credentials(
        &self,
        app_id: Uuid,
    ) -> Result<Option<WebhookCredentials>, hubkeeper_core::CoreError> {
        if app_id == self.real {
            return Ok(Some(WebhookCredentials {
                client_secrets: vec![ValidSecret {
                    secret: SecretString::from(SECRET.to_owned()),
                    valid_until_ms: None,
                }],
                accepted: vec![SignatureVersion::V3],
            }));
        }
        self.unknown_waiting.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await;
        Ok(None)
    }
}

fn batch(portal: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([{
        "eventId": 1, "subscriptionId": 2, "portalId": portal, "appId": 3,
        "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 4
    }]))
    .expect("batch")
}

async fn send(
    ingest: &WebhookIngest,
    app: Uuid,
    secret: &str,
    portal: u64,
) -> Result<hubkeeper_webhooks::Accepted, IngestError> {
    let path = format!("/webhooks/hubspot/{app}");
    let body = batch(portal);
    let now = Utc::now().timestamp_millis();
    let signature = sign_v3(secret, "POST", &format!("{PUBLIC_URL}{path}"), &body, now);
    let timestamp = now.to_string();
    ingest
        .accept(
            app,
            &path,
            SignatureHeaders {
                signature_v3: Some(&signature),
                timestamp: Some(&timestamp),
                ..SignatureHeaders::default()
            },
            Bytes::from(body),
            now,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_app_is_served_while_a_flood_of_unknown_ids_waits() {
    let env = TestEnv::start().await;
    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    ensure_webhook_streams(&js, &WebhookStreamsConfig::default())
        .await
        .expect("webhook streams");
    let real = Uuid::new_v4();
    let source = Arc::new(SlowForUnknownApps {
        real,
        gate: Semaphore::new(0),
        unknown_waiting: AtomicUsize::new(0),
    });
    let ingest = Arc::new(WebhookIngest::new(
        js,
        source.clone(),
        IngestConfig {
            public_url: PUBLIC_URL.into(),
            ..IngestConfig::default()
        },
    ));

    // Hundreds of concurrent requests for ids nobody registered, each signed with a guess.
    let answered = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let ingest = ingest.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let outcome = send(&ingest, Uuid::new_v4(), "a-guess", i as u64).await;
                answered.fetch_add(1, Ordering::SeqCst);
                outcome
            })
        })
        .collect();
    wait_until(
        "the flood's lookups are in flight",
        Duration::from_secs(30),
        || {
            let source = source.clone();
            async move { source.unknown_waiting.load(Ordering::SeqCst) > 0 }
        },
    )
    .await;
    // Breaks the deadlock a shared lookup lock would cause, so such a regression fails on the
    // assertion below instead of hanging: the flood would then finish before the real batch.
    let opener = {
        let source = source.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            source.gate.add_permits(FLOOD);
        })
    };

    let accepted = send(&ingest, real, SECRET, 9)
        .await
        .expect("real batch stored");
    assert_eq!(accepted.events, 1);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "the real app's batch waited for the flood"
    );

    // Let the flood finish: every one of them is refused as unknown.
    opener.abort();
    source.gate.add_permits(FLOOD);
    for request in flood {
        assert!(matches!(
            request.await.expect("flood request"),
            Err(IngestError::UnknownApp(_))
        ));
    }
    // The real app's credentials are cached: a second batch needs no lookup.
    assert_eq!(
        send(&ingest, real, SECRET, 10).await.expect("again").events,
        1
    );
}
