use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use hubkeeper_crypto::{seal, Aad, DataKey};

use super::*;
use crate::clock::DomainServices;
use cqrs_es::Aggregate;

type InstallationTest = TestFramework<Installation>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

fn mins(n: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(n)
}

fn app() -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a3c4_0000_7000_8000_0000_0000_0001,
    ))
}

fn hub() -> HubId {
    HubId(4_242_424)
}

fn id() -> InstallationId {
    InstallationId::derive(app(), hub(), None)
}

/// A fresh sealed pair; every call gives distinct ciphertexts, like a real token exchange.
fn tokens(expires_at: DateTime<Utc>) -> SealedTokens {
    let key = DataKey::generate();
    let owner = id().to_string();
    SealedTokens {
        access: seal(&key, b"access", &Aad::access_token(owner.clone())).expect("seal"),
        refresh: seal(&key, b"refresh", &Aad::refresh_token(owner)).expect("seal"),
        access_expires_at: expires_at,
    }
}

fn installer() -> Installer {
    Installer {
        user_id: Some(UserId(77)),
        email: Some("ops@acme.example".into()),
    }
}

fn connect_cmd(tokens: &SealedTokens) -> Connect {
    Connect {
        app_id: app(),
        hub_id: hub(),
        user_id: None,
        hub_domain: "acme.example".into(),
        installer: installer(),
        scopes: vec!["oauth".into(), "crm.objects.contacts.read".into()],
        tokens: tokens.clone(),
        app_version: Some("1.4.0".into()),
        customer: None,
    }
}

fn connected(tokens: &SealedTokens) -> InstallationEvent {
    InstallationEvent::Connected(InstallationConnected {
        installation_id: id(),
        app_id: app(),
        hub_id: hub(),
        user_id: None,
        hub_domain: "acme.example".into(),
        installer: installer().into(),
        scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
        tokens: tokens.clone().into(),
        app_version: Some("1.4.0".into()),
        external_ref: None,
        metadata: None,
        generation: 1,
        connected_at: t0(),
    })
}

fn refreshed(tokens: &SealedTokens, generation: u64, at: DateTime<Utc>) -> InstallationEvent {
    InstallationEvent::TokensRefreshed(TokensRefreshed {
        tokens: tokens.clone().into(),
        generation,
        refreshed_at: at,
    })
}

fn disconnected(at: DateTime<Utc>) -> InstallationEvent {
    InstallationEvent::Disconnected(InstallationDisconnected {
        cause: StoredDisconnectCause::Operator,
        reason: Some("customer cancelled".into()),
        disconnected_at: at,
    })
}

fn revoked(at: DateTime<Utc>) -> InstallationEvent {
    InstallationEvent::Revoked(InstallationRevoked {
        reason: "security incident".into(),
        revoked_at: at,
    })
}

fn reauth_required(at: DateTime<Utc>) -> InstallationEvent {
    InstallationEvent::ReauthorizationRequired(ReauthorizationRequired {
        class: StoredRefreshFailureClass::InvalidGrant,
        message: "BAD_REFRESH_TOKEN".into(),
        generation: 1,
        failed_at: at,
    })
}

fn at(now: DateTime<Utc>) -> InstallationTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn state(events: Vec<InstallationEvent>) -> Installation {
    let mut installation = Installation::default();
    for event in events {
        installation.apply(event);
    }
    installation
}

fn single_event(result: Result<Vec<InstallationEvent>, InstallationError>) -> InstallationEvent {
    let mut events = result.expect("command accepted");
    assert_eq!(events.len(), 1, "expected exactly one event: {events:?}");
    events.remove(0)
}

// ---- ids --------------------------------------------------------------------------------

#[test]
fn installation_ids_are_deterministic_and_distinct() {
    assert_eq!(id(), InstallationId::derive(app(), hub(), None));
    assert_ne!(id(), InstallationId::derive(app(), HubId(1), None));
    assert_ne!(id(), InstallationId::derive(app(), hub(), Some(UserId(77))));
    assert_ne!(
        InstallationId::derive(app(), hub(), Some(UserId(1))),
        InstallationId::derive(app(), hub(), Some(UserId(2)))
    );
    assert_eq!(id().as_uuid().get_version_num(), 5);
    // Pinned: a change here means every existing installation would get a new id.
    assert_eq!(id().to_string(), PINNED_ID);
    assert_eq!(id().to_string().parse::<InstallationId>(), Ok(id()));
}

const PINNED_ID: &str = "e4b57bf8-a704-5784-9fe4-31c6ed2ef766";

// ---- connect ----------------------------------------------------------------------------

#[tokio::test]
async fn first_connect_records_everything_with_generation_one() {
    let pair = tokens(mins(30));
    at(t0())
        .given_no_previous_events()
        .when_async(InstallationCommand::Connect(connect_cmd(&pair)))
        .await
        .then_expect_events(vec![connected(&pair)]);
}

#[test]
fn connected_state_exposes_read_helpers() {
    let pair = tokens(mins(30));
    let inst = state(vec![connected(&pair)]);
    assert_eq!(inst.status_at(t0()), Some(InstallationStatus::Connected));
    assert_eq!(inst.access_expires_at(), Some(mins(30)));
    assert_eq!(inst.sealed_tokens(), Some(&pair));
    assert_eq!(inst.generation(), 1);
    assert_eq!(inst.installation_id(), Some(id()));
    assert_eq!(inst.app_id(), Some(app()));
    assert_eq!(inst.hub_id(), Some(hub()));
    assert_eq!(inst.user_id(), None);
    assert_eq!(inst.hub_domain(), "acme.example");
    assert_eq!(inst.installer(), &installer());
    assert_eq!(inst.app_version(), Some("1.4.0"));
    assert_eq!(inst.first_connected_at(), Some(t0()));
    assert!(inst.is_refreshable());
    assert_eq!(inst.refresh_due_at(Duration::minutes(5)), Some(mins(25)));
    assert_eq!(
        inst.history(),
        &[HistoryEntry {
            at: t0(),
            change: HistoryChange::Installed {
                scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
                app_version: Some("1.4.0".into()),
            },
        }]
    );
    assert_eq!(Installation::default().status_at(t0()), None);
    assert_eq!(Installation::default().generation(), 0);
}

#[test]
fn expired_is_derived_from_time_not_recorded() {
    let inst = state(vec![connected(&tokens(mins(30)))]);
    assert_eq!(
        inst.status_at(mins(29)),
        Some(InstallationStatus::Connected)
    );
    assert_eq!(inst.status_at(mins(30)), Some(InstallationStatus::Expired));
    assert_eq!(inst.status_at(mins(600)), Some(InstallationStatus::Expired));
    assert!(inst.is_refreshable(), "expired tokens are refreshable");
}

#[tokio::test]
async fn user_level_installations_carry_the_user() {
    let pair = tokens(mins(30));
    let mut cmd = connect_cmd(&pair);
    cmd.user_id = Some(UserId(77));
    let event = single_event(
        at(t0())
            .given_no_previous_events()
            .when_async(InstallationCommand::Connect(cmd))
            .await
            .inspect_result(),
    );
    let InstallationEvent::Connected(e) = &event else {
        panic!("expected Connected, got {event:?}");
    };
    assert_eq!(e.user_id, Some(UserId(77)));
    assert_eq!(
        e.installation_id,
        InstallationId::derive(app(), hub(), Some(UserId(77)))
    );
}

#[tokio::test]
async fn connect_for_another_identity_is_refused() {
    let pair = tokens(mins(30));
    let mut cmd = connect_cmd(&tokens(mins(40)));
    cmd.hub_id = HubId(1);
    at(mins(10))
        .given(vec![connected(&pair)])
        .when_async(InstallationCommand::Connect(cmd))
        .await
        .then_expect_error(InstallationError::IdentityMismatch {
            derived: InstallationId::derive(app(), HubId(1), None),
            expected: id(),
        });
}

#[tokio::test]
async fn connect_validates_its_input() {
    let pair = tokens(mins(30));
    type Mutation = Box<dyn Fn(&mut Connect)>;
    let cases: Vec<(Mutation, InstallationError)> = vec![
        (
            Box::new(|c| c.hub_domain = " ".into()),
            InstallationError::InvalidHubDomain {
                reason: "must not be empty",
            },
        ),
        (
            Box::new(|c| c.hub_domain = "acme example".into()),
            InstallationError::InvalidHubDomain {
                reason: "must be a host name (letters, digits, '.' and '-')",
            },
        ),
        (
            Box::new(|c| c.scopes = vec!["oauth".into(), "bad scope!".into()]),
            InstallationError::InvalidScope {
                scope: "bad scope!".into(),
                hint: "scopes contain only letters, digits, '.', '-' and '_'",
            },
        ),
        (
            Box::new(|c| c.installer.email = Some("not-an-email".into())),
            InstallationError::InvalidInstallerEmail,
        ),
        (
            Box::new(|c| c.app_version = Some("x".repeat(65))),
            InstallationError::InvalidAppVersion {
                reason: "is too long",
            },
        ),
        (
            Box::new(|c| c.tokens.access_expires_at = t0()),
            InstallationError::TokenAlreadyExpired {
                expires_at: t0(),
                reference: t0(),
            },
        ),
    ];
    for (mutate, expected) in cases {
        let mut cmd = connect_cmd(&pair);
        mutate(&mut cmd);
        at(t0())
            .given_no_previous_events()
            .when_async(InstallationCommand::Connect(cmd))
            .await
            .then_expect_error(expected);
    }
}

#[tokio::test]
async fn connect_normalises_optional_fields() {
    let pair = tokens(mins(30));
    let mut cmd = connect_cmd(&pair);
    cmd.installer.email = Some("  ".into());
    cmd.app_version = Some(String::new());
    cmd.hub_domain = " acme.example ".into();
    let event = single_event(
        at(t0())
            .given_no_previous_events()
            .when_async(InstallationCommand::Connect(cmd))
            .await
            .inspect_result(),
    );
    let InstallationEvent::Connected(e) = event else {
        panic!("expected Connected");
    };
    assert_eq!(e.installer.email, None);
    assert_eq!(e.app_version, None);
    assert_eq!(e.hub_domain, "acme.example");
}

#[tokio::test]
async fn redelivered_connect_is_idempotent() {
    let pair = tokens(mins(30));
    at(mins(1))
        .given(vec![connected(&pair)])
        .when_async(InstallationCommand::Connect(connect_cmd(&pair)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn reconnect_while_connected_starts_a_new_generation() {
    let old = tokens(mins(30));
    let new = tokens(mins(40));
    let mut cmd = connect_cmd(&new);
    cmd.scopes.push("tickets".into());
    at(mins(10))
        .given(vec![connected(&old)])
        .when_async(InstallationCommand::Connect(cmd))
        .await
        .then_expect_events(vec![InstallationEvent::Reconnected(
            InstallationReconnected {
                installation_id: id(),
                hub_domain: "acme.example".into(),
                installer: installer().into(),
                scopes: vec![
                    "crm.objects.contacts.read".into(),
                    "oauth".into(),
                    "tickets".into(),
                ],
                tokens: new.clone().into(),
                app_version: Some("1.4.0".into()),
                external_ref: None,
                metadata: None,
                previous_status: StoredInstallationStatus::Connected,
                generation: 2,
                connected_at: mins(10),
            },
        )]);
}

#[tokio::test]
async fn reconnect_records_the_previous_status() {
    let cases = vec![
        (vec![], mins(31), InstallationStatus::Expired),
        (
            vec![reauth_required(mins(5))],
            mins(10),
            InstallationStatus::NeedsReauthorization,
        ),
        (
            vec![disconnected(mins(5))],
            mins(10),
            InstallationStatus::Disconnected,
        ),
        (
            vec![revoked(mins(5))],
            mins(10),
            InstallationStatus::Revoked,
        ),
    ];
    for (history, now, previous) in cases {
        let mut given = vec![connected(&tokens(mins(30)))];
        given.extend(history);
        let new = tokens(now + Duration::minutes(30));
        let event = single_event(
            at(now)
                .given(given)
                .when_async(InstallationCommand::Connect(connect_cmd(&new)))
                .await
                .inspect_result(),
        );
        let InstallationEvent::Reconnected(e) = event else {
            panic!("expected Reconnected");
        };
        assert_eq!(e.previous_status, previous.into());
        assert_eq!(e.generation, 2);
    }
}

#[test]
fn reconnect_after_revoke_restores_access_and_tracks_history() {
    let first = tokens(mins(30));
    let second = tokens(mins(100));
    let inst = state(vec![
        connected(&first),
        revoked(mins(5)),
        InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id(),
            hub_domain: "acme.example".into(),
            installer: StoredInstaller::default(),
            scopes: vec!["oauth".into(), "tickets".into()],
            tokens: second.clone().into(),
            app_version: Some("2.0.0".into()),
            external_ref: None,
            metadata: None,
            previous_status: StoredInstallationStatus::Revoked,
            generation: 2,
            connected_at: mins(70),
        }),
    ]);
    assert_eq!(
        inst.status_at(mins(71)),
        Some(InstallationStatus::Connected)
    );
    assert_eq!(inst.sealed_tokens(), Some(&second));
    assert_eq!(inst.generation(), 2);
    assert_eq!(inst.first_connected_at(), Some(t0()));
    assert_eq!(inst.last_connected_at(), Some(mins(70)));
    assert_eq!(inst.app_version(), Some("2.0.0"));
    let changes: Vec<&HistoryChange> = inst.history().iter().map(|h| &h.change).collect();
    assert_eq!(
        changes[1..],
        [
            &HistoryChange::Revoked {
                reason: "security incident".into()
            },
            &HistoryChange::Reconnected {
                previous_status: InstallationStatus::Revoked
            },
            &HistoryChange::ScopesChanged {
                added: vec!["tickets".into()],
                removed: vec!["crm.objects.contacts.read".into()],
            },
            &HistoryChange::AppVersionChanged {
                from: Some("1.4.0".into()),
                to: "2.0.0".into(),
            },
        ]
    );
}

// ---- refresh ----------------------------------------------------------------------------

#[tokio::test]
async fn successful_refresh_stores_the_new_pair() {
    let old = tokens(mins(30));
    let new = tokens(mins(55));
    at(mins(26))
        .given(vec![connected(&old)])
        .when_async(InstallationCommand::RecordRefresh {
            tokens: new.clone(),
            refreshed_at: mins(25),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![refreshed(&new, 2, mins(25))]);
}

#[test]
fn refresh_resets_failures_and_updates_helpers() {
    let new = tokens(mins(55));
    let inst = state(vec![
        connected(&tokens(mins(30))),
        InstallationEvent::RefreshFailed(RefreshFailed {
            class: StoredRefreshFailureClass::ServerError,
            message: "502".into(),
            generation: 1,
            consecutive_failures: 1,
            failed_at: mins(24),
        }),
        refreshed(&new, 2, mins(25)),
    ]);
    assert_eq!(inst.generation(), 2);
    assert_eq!(inst.sealed_tokens(), Some(&new));
    assert_eq!(inst.access_expires_at(), Some(mins(55)));
    assert_eq!(inst.last_refreshed_at(), Some(mins(25)));
    assert_eq!(inst.consecutive_failures(), 0);
    assert_eq!(inst.last_failure(), None);
    assert_eq!(
        inst.history().len(),
        1,
        "refreshes are not lifecycle history"
    );
}

#[tokio::test]
async fn refresh_with_a_stale_generation_is_refused() {
    let first = tokens(mins(30));
    let second = tokens(mins(55));
    at(mins(26))
        .given(vec![connected(&first), refreshed(&second, 2, mins(25))])
        .when_async(InstallationCommand::RecordRefresh {
            tokens: tokens(mins(56)),
            refreshed_at: mins(26),
            expected_generation: 1,
        })
        .await
        .then_expect_error(InstallationError::StaleGeneration {
            expected: 1,
            current: 2,
        });
}

#[tokio::test]
async fn redelivered_refresh_is_idempotent() {
    let first = tokens(mins(30));
    let second = tokens(mins(55));
    at(mins(26))
        .given(vec![connected(&first), refreshed(&second, 2, mins(25))])
        .when_async(InstallationCommand::RecordRefresh {
            tokens: second.clone(),
            refreshed_at: mins(25),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn refresh_with_an_expiry_before_the_refresh_is_refused() {
    at(mins(26))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::RecordRefresh {
            tokens: tokens(mins(20)),
            refreshed_at: mins(25),
            expected_generation: 1,
        })
        .await
        .then_expect_error(InstallationError::TokenAlreadyExpired {
            expires_at: mins(20),
            reference: mins(25),
        });
}

#[tokio::test]
async fn refresh_outcomes_on_disconnected_revoked_or_new_installations_are_errors() {
    let cases = vec![
        (vec![], InstallationError::NotConnected),
        (
            vec![connected(&tokens(mins(30))), disconnected(mins(5))],
            InstallationError::Disconnected,
        ),
        (
            vec![connected(&tokens(mins(30))), revoked(mins(5))],
            InstallationError::Revoked,
        ),
    ];
    for (given, expected) in cases {
        at(mins(10))
            .given(given.clone())
            .when_async(InstallationCommand::RecordRefresh {
                tokens: tokens(mins(60)),
                refreshed_at: mins(10),
                expected_generation: 1,
            })
            .await
            .then_expect_error(expected.clone());
        at(mins(10))
            .given(given)
            .when_async(InstallationCommand::RecordRefreshFailure {
                class: RefreshFailureClass::Network,
                reauth_required: false,
                message: "timeout".into(),
                expected_generation: 1,
            })
            .await
            .then_expect_error(expected);
    }
}

#[tokio::test]
async fn successful_refresh_after_reauthorization_required_recovers() {
    let new = tokens(mins(60));
    let given = vec![connected(&tokens(mins(30))), reauth_required(mins(25))];
    at(mins(30))
        .given(given.clone())
        .when_async(InstallationCommand::RecordRefresh {
            tokens: new.clone(),
            refreshed_at: mins(30),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![refreshed(&new, 2, mins(30))]);
    let mut events = given;
    events.push(refreshed(&new, 2, mins(30)));
    assert_eq!(
        state(events).status_at(mins(31)),
        Some(InstallationStatus::Connected)
    );
}

// ---- refresh failures -------------------------------------------------------------------

#[tokio::test]
async fn transient_failures_count_up() {
    let first_failure = InstallationEvent::RefreshFailed(RefreshFailed {
        class: StoredRefreshFailureClass::RateLimited,
        message: "429".into(),
        generation: 1,
        consecutive_failures: 1,
        failed_at: mins(24),
    });
    at(mins(26))
        .given(vec![connected(&tokens(mins(30))), first_failure])
        .when_async(InstallationCommand::RecordRefreshFailure {
            class: RefreshFailureClass::ServerError,
            reauth_required: false,
            message: "  HubSpot returned 503 ".into(),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![InstallationEvent::RefreshFailed(RefreshFailed {
            class: StoredRefreshFailureClass::ServerError,
            message: "HubSpot returned 503".into(),
            generation: 1,
            consecutive_failures: 2,
            failed_at: mins(26),
        })]);
}

#[test]
fn transient_failure_keeps_the_installation_refreshable() {
    let inst = state(vec![
        connected(&tokens(mins(30))),
        InstallationEvent::RefreshFailed(RefreshFailed {
            class: StoredRefreshFailureClass::Network,
            message: "timeout".into(),
            generation: 1,
            consecutive_failures: 1,
            failed_at: mins(26),
        }),
    ]);
    assert_eq!(
        inst.status_at(mins(27)),
        Some(InstallationStatus::Connected)
    );
    assert!(inst.is_refreshable());
    assert_eq!(inst.consecutive_failures(), 1);
    assert_eq!(
        inst.last_failure(),
        Some(&LastFailure {
            class: RefreshFailureClass::Network,
            message: "timeout".into(),
            at: mins(26),
        })
    );
}

#[tokio::test]
async fn dead_refresh_token_requires_reauthorization() {
    at(mins(25))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::RecordRefreshFailure {
            class: RefreshFailureClass::InvalidGrant,
            reauth_required: true,
            message: "BAD_REFRESH_TOKEN".into(),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![reauth_required(mins(25))]);
}

#[test]
fn needs_reauthorization_state() {
    let pair = tokens(mins(30));
    let inst = state(vec![connected(&pair), reauth_required(mins(25))]);
    assert_eq!(
        inst.status_at(mins(26)),
        Some(InstallationStatus::NeedsReauthorization)
    );
    assert!(!inst.is_refreshable());
    assert_eq!(inst.refresh_due_at(Duration::minutes(5)), None);
    assert_eq!(
        inst.sealed_tokens(),
        Some(&pair),
        "access token kept: it works until it expires"
    );
}

#[tokio::test]
async fn repeated_reauthorization_report_is_idempotent() {
    at(mins(27))
        .given(vec![
            connected(&tokens(mins(30))),
            reauth_required(mins(25)),
        ])
        .when_async(InstallationCommand::RecordRefreshFailure {
            class: RefreshFailureClass::InvalidGrant,
            reauth_required: true,
            message: "BAD_REFRESH_TOKEN".into(),
            expected_generation: 1,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn stale_failure_cannot_mark_a_fresh_grant_as_needing_reauthorization() {
    // A refresh with the old grant fails after the user already reconnected.
    let reconnect = InstallationEvent::Reconnected(InstallationReconnected {
        installation_id: id(),
        hub_domain: "acme.example".into(),
        installer: installer().into(),
        scopes: vec!["oauth".into()],
        tokens: tokens(mins(50)).into(),
        app_version: None,
        external_ref: None,
        metadata: None,
        previous_status: StoredInstallationStatus::Connected,
        generation: 2,
        connected_at: mins(20),
    });
    at(mins(21))
        .given(vec![connected(&tokens(mins(30))), reconnect])
        .when_async(InstallationCommand::RecordRefreshFailure {
            class: RefreshFailureClass::InvalidGrant,
            reauth_required: true,
            message: "BAD_REFRESH_TOKEN".into(),
            expected_generation: 1,
        })
        .await
        .then_expect_error(InstallationError::StaleGeneration {
            expected: 1,
            current: 2,
        });
}

#[tokio::test]
async fn failure_messages_are_bounded() {
    let event = single_event(
        at(mins(25))
            .given(vec![connected(&tokens(mins(30)))])
            .when_async(InstallationCommand::RecordRefreshFailure {
                class: RefreshFailureClass::Other,
                reauth_required: false,
                message: "x".repeat(5_000),
                expected_generation: 1,
            })
            .await
            .inspect_result(),
    );
    let InstallationEvent::RefreshFailed(e) = event else {
        panic!("expected RefreshFailed");
    };
    assert_eq!(
        e.message.chars().count(),
        MAX_FAILURE_MESSAGE_CHARS + 1,
        "500 + ellipsis"
    );
}

// ---- revoke -----------------------------------------------------------------------------

#[tokio::test]
async fn revoke_removes_tokens() {
    at(mins(5))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::Revoke {
            reason: " security incident ".into(),
        })
        .await
        .then_expect_events(vec![revoked(mins(5))]);
    let inst = state(vec![connected(&tokens(mins(30))), revoked(mins(5))]);
    assert_eq!(inst.status_at(mins(6)), Some(InstallationStatus::Revoked));
    assert_eq!(inst.sealed_tokens(), None);
    assert_eq!(inst.access_expires_at(), None);
    assert!(!inst.is_refreshable());
}

#[tokio::test]
async fn revoke_is_allowed_when_reauthorization_is_needed() {
    at(mins(26))
        .given(vec![
            connected(&tokens(mins(30))),
            reauth_required(mins(25)),
        ])
        .when_async(InstallationCommand::Revoke {
            reason: "security incident".into(),
        })
        .await
        .then_expect_events(vec![revoked(mins(26))]);
}

#[tokio::test]
async fn revoke_twice_is_idempotent() {
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), revoked(mins(5))])
        .when_async(InstallationCommand::Revoke {
            reason: "again".into(),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn revoke_rules() {
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), disconnected(mins(5))])
        .when_async(InstallationCommand::Revoke {
            reason: "cleanup".into(),
        })
        .await
        .then_expect_error(InstallationError::NothingToRevoke);
    at(mins(6))
        .given_no_previous_events()
        .when_async(InstallationCommand::Revoke {
            reason: "cleanup".into(),
        })
        .await
        .then_expect_error(InstallationError::NotConnected);
    at(mins(6))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::Revoke { reason: "".into() })
        .await
        .then_expect_error(InstallationError::InvalidReason {
            reason: "must not be empty",
        });
}

// ---- disconnect / uninstall -------------------------------------------------------------

#[tokio::test]
async fn operator_disconnect_removes_tokens_but_keeps_data() {
    at(mins(5))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::Disconnect {
            reason: "customer cancelled".into(),
        })
        .await
        .then_expect_events(vec![disconnected(mins(5))]);
    let inst = state(vec![connected(&tokens(mins(30))), disconnected(mins(5))]);
    assert_eq!(
        inst.status_at(mins(6)),
        Some(InstallationStatus::Disconnected)
    );
    assert_eq!(inst.sealed_tokens(), None);
    assert_eq!(inst.hub_domain(), "acme.example", "data retained");
    assert_eq!(inst.granted_scopes().len(), 2);
}

#[tokio::test]
async fn disconnect_is_idempotent_and_a_no_op_after_revoke() {
    for given in [
        vec![connected(&tokens(mins(30))), disconnected(mins(5))],
        vec![connected(&tokens(mins(30))), revoked(mins(5))],
    ] {
        at(mins(6))
            .given(given)
            .when_async(InstallationCommand::Disconnect {
                reason: "again".into(),
            })
            .await
            .then_expect_events(vec![]);
    }
    at(mins(6))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::Disconnect {
            reason: "line\nbreak".into(),
        })
        .await
        .then_expect_error(InstallationError::InvalidReason {
            reason: "must be a single line without control characters",
        });
    at(mins(6))
        .given_no_previous_events()
        .when_async(InstallationCommand::Disconnect { reason: "x".into() })
        .await
        .then_expect_error(InstallationError::NotConnected);
}

#[tokio::test]
async fn hubspot_uninstall_disconnects() {
    at(mins(10))
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::MarkUninstalled {
            occurred_at: mins(9),
        })
        .await
        .then_expect_events(vec![InstallationEvent::Disconnected(
            InstallationDisconnected {
                cause: StoredDisconnectCause::Uninstalled,
                reason: None,
                disconnected_at: mins(10),
            },
        )]);
}

#[tokio::test]
async fn late_uninstall_webhook_does_not_disconnect_a_newer_grant() {
    let reconnect = InstallationEvent::Reconnected(InstallationReconnected {
        installation_id: id(),
        hub_domain: "acme.example".into(),
        installer: installer().into(),
        scopes: vec!["oauth".into()],
        tokens: tokens(mins(90)).into(),
        app_version: None,
        external_ref: None,
        metadata: None,
        previous_status: StoredInstallationStatus::Disconnected,
        generation: 2,
        connected_at: mins(60),
    });
    at(mins(61))
        .given(vec![
            connected(&tokens(mins(30))),
            disconnected(mins(5)),
            reconnect,
        ])
        .when_async(InstallationCommand::MarkUninstalled {
            occurred_at: mins(4),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn uninstall_rules() {
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), revoked(mins(5))])
        .when_async(InstallationCommand::MarkUninstalled {
            occurred_at: mins(6),
        })
        .await
        .then_expect_events(vec![]);
    at(mins(6))
        .given_no_previous_events()
        .when_async(InstallationCommand::MarkUninstalled {
            occurred_at: mins(6),
        })
        .await
        .then_expect_error(InstallationError::NotConnected);
}

// ---- forget (crypto-shredding) ----------------------------------------------------------

#[tokio::test]
async fn forgetting_requires_tokens_to_be_gone_first() {
    for given in [
        vec![connected(&tokens(mins(30)))],
        vec![connected(&tokens(mins(30))), reauth_required(mins(25))],
    ] {
        at(mins(26))
            .given(given)
            .when_async(InstallationCommand::ForgetTenant {
                reason: "GDPR request 42".into(),
            })
            .await
            .then_expect_error(InstallationError::StillConnected);
    }
}

#[tokio::test]
async fn forget_after_disconnect_or_revoke_is_recorded_once() {
    let forgotten = InstallationEvent::TenantForgotten(TenantForgotten {
        reason: "GDPR request 42".into(),
        forgotten_at: mins(10),
    });
    for end in [disconnected(mins(5)), revoked(mins(5))] {
        at(mins(10))
            .given(vec![connected(&tokens(mins(30))), end.clone()])
            .when_async(InstallationCommand::ForgetTenant {
                reason: "GDPR request 42".into(),
            })
            .await
            .then_expect_events(vec![forgotten.clone()]);
        at(mins(11))
            .given(vec![connected(&tokens(mins(30))), end, forgotten.clone()])
            .when_async(InstallationCommand::ForgetTenant {
                reason: "again".into(),
            })
            .await
            .then_expect_events(vec![]);
    }
    at(mins(10))
        .given_no_previous_events()
        .when_async(InstallationCommand::ForgetTenant {
            reason: "GDPR request 42".into(),
        })
        .await
        .then_expect_error(InstallationError::NotConnected);
}

#[test]
fn reconnect_after_forget_clears_the_flag() {
    let forgotten = InstallationEvent::TenantForgotten(TenantForgotten {
        reason: "GDPR".into(),
        forgotten_at: mins(10),
    });
    let before = state(vec![
        connected(&tokens(mins(30))),
        disconnected(mins(5)),
        forgotten.clone(),
    ]);
    assert_eq!(before.forgotten_at(), Some(mins(10)));
    assert_eq!(
        before.history().last().map(|h| &h.change),
        Some(&HistoryChange::TenantForgotten)
    );
    let after = state(vec![
        connected(&tokens(mins(30))),
        disconnected(mins(5)),
        forgotten,
        InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id(),
            hub_domain: "acme.example".into(),
            installer: installer().into(),
            scopes: vec!["oauth".into()],
            tokens: tokens(mins(90)).into(),
            app_version: None,
            external_ref: None,
            metadata: None,
            previous_status: StoredInstallationStatus::Disconnected,
            generation: 2,
            connected_at: mins(60),
        }),
    ]);
    assert_eq!(after.forgotten_at(), None);
    assert_eq!(
        after.status_at(mins(61)),
        Some(InstallationStatus::Connected)
    );
}

// ---- serialization contract -------------------------------------------------------------

#[test]
fn event_types_match_serde_tags() {
    let pair = tokens(mins(30));
    let events = [
        connected(&pair),
        InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id(),
            hub_domain: "acme.example".into(),
            installer: StoredInstaller::default(),
            scopes: vec![],
            tokens: pair.clone().into(),
            app_version: None,
            external_ref: None,
            metadata: None,
            previous_status: StoredInstallationStatus::Expired,
            generation: 2,
            connected_at: t0(),
        }),
        refreshed(&pair, 3, t0()),
        InstallationEvent::RefreshFailed(RefreshFailed {
            class: StoredRefreshFailureClass::RateLimited,
            message: "429".into(),
            generation: 3,
            consecutive_failures: 1,
            failed_at: t0(),
        }),
        reauth_required(t0()),
        revoked(t0()),
        disconnected(t0()),
        InstallationEvent::TenantForgotten(TenantForgotten {
            reason: "r".into(),
            forgotten_at: t0(),
        }),
        scheduled(RemovalAction::Revoke, mins(65), t0()),
        InstallationEvent::RemovalCancelled(InstallationRemovalCancelled {
            action: StoredRemovalAction::Disconnect,
            effective_at: mins(65),
            reason: None,
            cancelled_at: t0(),
        }),
    ];
    let expected = [
        "InstallationConnected",
        "InstallationReconnected",
        "InstallationTokensRefreshed",
        "InstallationRefreshFailed",
        "InstallationReauthorizationRequired",
        "InstallationRevoked",
        "InstallationDisconnected",
        "InstallationTenantForgotten",
        "InstallationRemovalScheduled",
        "InstallationRemovalCancelled",
    ];
    for (event, event_type) in events.iter().zip(expected) {
        let json = serde_json::to_value(event).expect("serialize");
        let tag = json
            .as_object()
            .and_then(|o| o.keys().next())
            .expect("externally tagged");
        assert_eq!(tag, event_type);
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.event_version(), "1.0");
        let back: InstallationEvent = serde_json::from_value(json).expect("deserialize");
        assert_eq!(&back, event);
    }
}

#[test]
fn token_free_events_carry_no_sealed_values() {
    for event in [disconnected(t0()), revoked(t0()), reauth_required(t0())] {
        let json = serde_json::to_string(&event).expect("serialize");
        assert!(!json.contains("\"v1."), "no sealed value in {json}");
    }
    let json = serde_json::to_value(connected(&tokens(mins(30)))).expect("serialize");
    let tokens = &json["InstallationConnected"]["tokens"];
    assert!(tokens["access"]
        .as_str()
        .is_some_and(|s| s.starts_with("v1.dk")));
    assert!(tokens["refresh"]
        .as_str()
        .is_some_and(|s| s.starts_with("v1.dk")));
    assert_eq!(tokens["access_expires_at"], "2026-03-01T09:30:00Z");
}

#[test]
fn status_and_class_names_are_snake_case() {
    assert_eq!(
        serde_json::to_value(InstallationStatus::NeedsReauthorization).expect("serialize"),
        "needs_reauthorization"
    );
    assert_eq!(
        InstallationStatus::NeedsReauthorization.as_str(),
        "needs_reauthorization"
    );
    assert_eq!(
        serde_json::to_value(RefreshFailureClass::InvalidGrant).expect("serialize"),
        "invalid_grant"
    );
    assert_eq!(
        serde_json::to_value(DisconnectCause::Uninstalled).expect("serialize"),
        "uninstalled"
    );
}

#[test]
fn installation_state_round_trips_through_serde() {
    let inst = state(vec![
        connected(&tokens(mins(30))),
        reauth_required(mins(25)),
        disconnected(mins(26)),
    ]);
    let json = serde_json::to_string(&inst).expect("serialize");
    let back: Installation = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, inst);
}

fn customer(external_ref: &str, plan: &str) -> CustomerRef {
    let mut metadata = serde_json::Map::new();
    metadata.insert("plan".into(), serde_json::Value::String(plan.into()));
    CustomerRef {
        external_ref: external_ref.into(),
        metadata: Some(metadata),
    }
}

#[tokio::test]
async fn a_connect_through_a_session_records_the_apps_customer() {
    let t = tokens(mins(30));
    let mut cmd = connect_cmd(&t);
    cmd.customer = Some(customer("cust-17", "pro"));
    let InstallationEvent::Connected(mut expected) = connected(&t) else {
        unreachable!()
    };
    expected.external_ref = Some("cust-17".into());
    expected.metadata = customer("cust-17", "pro").metadata;
    at(t0())
        .given_no_previous_events()
        .when_async(InstallationCommand::Connect(cmd))
        .await
        .then_expect_events(vec![InstallationEvent::Connected(expected)]);
}

#[tokio::test]
async fn a_bad_customer_reference_or_metadata_is_refused() {
    let t = tokens(mins(30));
    let mut cmd = connect_cmd(&t);
    cmd.customer = Some(customer("has space", "pro"));
    let refused = at(t0())
        .given_no_previous_events()
        .when_async(InstallationCommand::Connect(cmd))
        .await
        .inspect_result();
    assert!(matches!(
        refused,
        Err(InstallationError::InvalidCustomer(
            CustomerRefError::InvalidExternalRef { .. }
        ))
    ));
    let mut cmd = connect_cmd(&t);
    let mut big = serde_json::Map::new();
    big.insert(
        "blob".into(),
        serde_json::Value::String("x".repeat(MAX_METADATA_BYTES)),
    );
    cmd.customer = Some(CustomerRef {
        external_ref: "cust-17".into(),
        metadata: Some(big),
    });
    let refused = at(t0())
        .given_no_previous_events()
        .when_async(InstallationCommand::Connect(cmd))
        .await
        .inspect_result();
    assert!(matches!(
        refused,
        Err(InstallationError::InvalidCustomer(
            CustomerRefError::MetadataTooLarge { .. }
        ))
    ));
}

#[test]
fn a_reconnect_keeps_the_customer_unless_a_session_names_another() {
    let first = tokens(mins(30));
    let mut state = Installation::default();
    let InstallationEvent::Connected(mut c) = connected(&first) else {
        unreachable!()
    };
    c.external_ref = Some("cust-17".into());
    c.metadata = customer("cust-17", "pro").metadata;
    state.apply(InstallationEvent::Connected(c));
    assert_eq!(state.external_ref(), Some("cust-17"));
    let reconnect = |external_ref: Option<&str>, generation: u64| {
        InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id(),
            hub_domain: "acme.example".into(),
            installer: installer().into(),
            scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
            tokens: tokens(mins(60)).into(),
            app_version: None,
            external_ref: external_ref.map(str::to_owned),
            metadata: external_ref.and_then(|r| customer(r, "enterprise").metadata),
            previous_status: StoredInstallationStatus::Connected,
            generation,
            connected_at: mins(10),
        })
    };
    // The install path (no session) keeps the customer and its metadata.
    state.apply(reconnect(None, 2));
    assert_eq!(state.external_ref(), Some("cust-17"));
    assert_eq!(state.metadata().unwrap()["plan"], "pro");
    // A session of the same customer updates the metadata, without a history entry.
    state.apply(reconnect(Some("cust-17"), 3));
    assert_eq!(state.metadata().unwrap()["plan"], "enterprise");
    assert!(!state
        .history()
        .iter()
        .any(|h| matches!(h.change, HistoryChange::CustomerChanged { .. })));
    // Another customer's session takes the installation over, in its history.
    state.apply(reconnect(Some("cust-99"), 4));
    assert_eq!(state.external_ref(), Some("cust-99"));
    assert_eq!(
        state.history().last().map(|h| &h.change),
        Some(&HistoryChange::CustomerChanged {
            from: Some("cust-17".into()),
            to: "cust-99".into(),
        })
    );
}

// ---- scheduled removal ------------------------------------------------------------------

fn schedule_cmd(action: RemovalAction, effective_at: DateTime<Utc>) -> InstallationCommand {
    InstallationCommand::ScheduleRemoval {
        action,
        reason: " contract ended ".into(),
        effective_at,
        scheduled_by: "key:ak_ops".into(),
    }
}

fn scheduled(
    action: RemovalAction,
    effective_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> InstallationEvent {
    InstallationEvent::RemovalScheduled(InstallationRemovalScheduled {
        action: action.into(),
        reason: "contract ended".into(),
        effective_at,
        scheduled_by: "key:ak_ops".into(),
        scheduled_at: at,
    })
}

#[tokio::test]
async fn a_removal_is_scheduled_and_the_state_knows_it() {
    for action in [RemovalAction::Revoke, RemovalAction::Disconnect] {
        at(mins(5))
            .given(vec![connected(&tokens(mins(30)))])
            .when_async(schedule_cmd(action, mins(65)))
            .await
            .then_expect_events(vec![scheduled(action, mins(65), mins(5))]);
    }
    let inst = state(vec![
        connected(&tokens(mins(30))),
        scheduled(RemovalAction::Revoke, mins(65), mins(5)),
    ]);
    assert_eq!(
        inst.scheduled_removal(),
        Some(&ScheduledRemoval {
            action: RemovalAction::Revoke,
            reason: "contract ended".into(),
            effective_at: mins(65),
            scheduled_by: "key:ak_ops".into(),
            scheduled_at: mins(5),
        })
    );
    // Scheduling changes nothing else: the tokens keep working until it is carried out.
    assert_eq!(inst.status_at(mins(6)), Some(InstallationStatus::Connected));
    assert!(inst.is_refreshable());
    // A removal may also be announced while the user must re-authorize.
    at(mins(26))
        .given(vec![
            connected(&tokens(mins(30))),
            reauth_required(mins(25)),
        ])
        .when_async(schedule_cmd(RemovalAction::Revoke, mins(90)))
        .await
        .then_expect_events(vec![scheduled(RemovalAction::Revoke, mins(90), mins(26))]);
}

#[tokio::test]
async fn a_removal_is_scheduled_only_where_it_could_be_done() {
    at(mins(6))
        .given_no_previous_events()
        .when_async(schedule_cmd(RemovalAction::Revoke, mins(65)))
        .await
        .then_expect_error(InstallationError::NotConnected);
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), revoked(mins(5))])
        .when_async(schedule_cmd(RemovalAction::Disconnect, mins(65)))
        .await
        .then_expect_error(InstallationError::Revoked);
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), disconnected(mins(5))])
        .when_async(schedule_cmd(RemovalAction::Revoke, mins(65)))
        .await
        .then_expect_error(InstallationError::NothingToRevoke);
    at(mins(6))
        .given(vec![connected(&tokens(mins(30))), disconnected(mins(5))])
        .when_async(schedule_cmd(RemovalAction::Disconnect, mins(65)))
        .await
        .then_expect_error(InstallationError::Disconnected);
}

#[tokio::test]
async fn the_removal_time_is_in_the_future_and_at_most_thirty_days_ahead() {
    let now = mins(5);
    for effective_at in [
        now,
        mins(4),
        now + Duration::days(MAX_REMOVAL_NOTICE_DAYS) + Duration::seconds(1),
    ] {
        at(now)
            .given(vec![connected(&tokens(mins(30)))])
            .when_async(schedule_cmd(RemovalAction::Revoke, effective_at))
            .await
            .then_expect_error(InstallationError::InvalidRemovalTime { effective_at, now });
    }
    let furthest = now + Duration::days(MAX_REMOVAL_NOTICE_DAYS);
    at(now)
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(schedule_cmd(RemovalAction::Revoke, furthest))
        .await
        .then_expect_events(vec![scheduled(RemovalAction::Revoke, furthest, now)]);
    at(now)
        .given(vec![connected(&tokens(mins(30)))])
        .when_async(InstallationCommand::ScheduleRemoval {
            action: RemovalAction::Revoke,
            reason: "".into(),
            effective_at: mins(65),
            scheduled_by: "key:ak_ops".into(),
        })
        .await
        .then_expect_error(InstallationError::InvalidReason {
            reason: "must not be empty",
        });
}

#[tokio::test]
async fn one_removal_is_pending_at_a_time() {
    let given = || {
        vec![
            connected(&tokens(mins(30))),
            scheduled(RemovalAction::Revoke, mins(65), mins(5)),
        ]
    };
    // The same schedule again is a retry.
    at(mins(6))
        .given(given())
        .when_async(schedule_cmd(RemovalAction::Revoke, mins(65)))
        .await
        .then_expect_events(vec![]);
    // Another one is refused, naming the pending one.
    at(mins(6))
        .given(given())
        .when_async(schedule_cmd(RemovalAction::Disconnect, mins(125)))
        .await
        .then_expect_error(InstallationError::RemovalAlreadyScheduled {
            action: RemovalAction::Revoke,
            effective_at: mins(65),
        });
}

#[tokio::test]
async fn a_pending_removal_is_cancelled_once() {
    let cancelled = InstallationEvent::RemovalCancelled(InstallationRemovalCancelled {
        action: StoredRemovalAction::Revoke,
        effective_at: mins(65),
        reason: Some("customer paid".into()),
        cancelled_at: mins(7),
    });
    at(mins(7))
        .given(vec![
            connected(&tokens(mins(30))),
            scheduled(RemovalAction::Revoke, mins(65), mins(5)),
        ])
        .when_async(InstallationCommand::CancelScheduledRemoval {
            reason: Some("customer paid".into()),
        })
        .await
        .then_expect_events(vec![cancelled.clone()]);
    let inst = state(vec![
        connected(&tokens(mins(30))),
        scheduled(RemovalAction::Revoke, mins(65), mins(5)),
        cancelled.clone(),
    ]);
    assert_eq!(inst.scheduled_removal(), None);
    at(mins(8))
        .given(vec![
            connected(&tokens(mins(30))),
            scheduled(RemovalAction::Revoke, mins(65), mins(5)),
            cancelled,
        ])
        .when_async(InstallationCommand::CancelScheduledRemoval { reason: None })
        .await
        .then_expect_error(InstallationError::NoRemovalScheduled);
    at(mins(8))
        .given_no_previous_events()
        .when_async(InstallationCommand::CancelScheduledRemoval { reason: None })
        .await
        .then_expect_error(InstallationError::NotConnected);
}

#[test]
fn whatever_ends_or_renews_the_grant_clears_the_pending_removal() {
    let pair = tokens(mins(30));
    let uninstalled = InstallationEvent::Disconnected(InstallationDisconnected {
        cause: StoredDisconnectCause::Uninstalled,
        reason: None,
        disconnected_at: mins(9),
    });
    let reconnected = InstallationEvent::Reconnected(InstallationReconnected {
        installation_id: id(),
        hub_domain: "acme.example".into(),
        installer: installer().into(),
        scopes: vec!["oauth".into()],
        tokens: tokens(mins(60)).into(),
        app_version: None,
        external_ref: None,
        metadata: None,
        previous_status: StoredInstallationStatus::Connected,
        generation: 2,
        connected_at: mins(9),
    });
    for ending in [
        revoked(mins(9)),
        disconnected(mins(9)),
        uninstalled,
        reconnected,
    ] {
        let inst = state(vec![
            connected(&pair),
            scheduled(RemovalAction::Disconnect, mins(65), mins(5)),
            ending.clone(),
        ]);
        assert_eq!(inst.scheduled_removal(), None, "after {ending:?}");
    }
}
