use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use hubkeeper_crypto::{seal, Aad, DataKey, Sealed, SecretKind};

use super::*;
use crate::clock::DomainServices;

type EndpointTest = TestFramework<AppEndpoints>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

fn app_id() -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a3c4_0000_7000_8000_0000_0000_0001,
    ))
}

fn endpoint_id() -> EndpointId {
    EndpointId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a3c4_0000_7000_8000_0000_0000_00e1,
    ))
}

fn secret(text: &[u8]) -> Sealed {
    seal(
        &DataKey::generate(),
        text,
        &Aad::new(
            format!("endpoint:{}", endpoint_id()),
            SecretKind::SigningSecret,
        ),
    )
    .expect("seal")
}

fn services() -> DomainServices {
    DomainServices::fixed(t0())
}

fn add(secret: &Sealed) -> AddEndpoint {
    AddEndpoint {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        url: " https://app.example.com/hooks/hubkeeper ".into(),
        event_types: None,
        description: Some("production receiver".into()),
        secret: secret.clone(),
    }
}

fn added(secret: &Sealed) -> EndpointEvent {
    EndpointEvent::Added(EndpointAdded {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        url: "https://app.example.com/hooks/hubkeeper".into(),
        event_types: NotificationType::defaults()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        description: "production receiver".into(),
        secret: secret.clone(),
        added_at: t0(),
    })
}

fn change(id: EndpointId) -> ChangeEndpoint {
    ChangeEndpoint {
        endpoint_id: id,
        url: None,
        event_types: None,
        description: None,
        enabled: None,
    }
}

#[test]
fn an_endpoint_gets_every_type_but_refreshes_unless_named() {
    let s = secret(b"whsec_one");
    EndpointTest::with(services())
        .given_no_previous_events()
        .when(EndpointCommand::Add(add(&s)))
        .then_expect_events(vec![added(&s)]);
    assert!(!NotificationType::defaults().contains(&NotificationType::InstallationRefreshed));
    assert_eq!(
        NotificationType::defaults().len(),
        NotificationType::ALL.len() - 1
    );
}

#[test]
fn urls_must_be_https_or_loopback_http() {
    for good in [
        "https://x.example/h",
        "http://localhost:8080/h",
        "http://127.0.0.1:9/h",
        "http://[::1]:9/h",
        "http://127.0.0.2/h",
    ] {
        assert!(validate_url(good).is_ok(), "{good}");
    }
    for bad in [
        "http://example.com/h",
        "http://128.0.0.1/h",
        "ftp://localhost/h",
        "https://user:pw@x.example/h",
        "https://x.example/h#frag",
        "/relative",
        "",
    ] {
        assert!(
            matches!(validate_url(bad), Err(EndpointError::InvalidUrl { .. })),
            "{bad}"
        );
    }
    let s = secret(b"whsec_one");
    EndpointTest::with(services())
        .given_no_previous_events()
        .when(EndpointCommand::Add(AddEndpoint {
            url: "http://hooks.example.com/x".into(),
            ..add(&s)
        }))
        .then_expect_error_message(
            "endpoint URL must use https (http is only allowed for localhost)",
        );
}

#[test]
fn type_lists_are_validated() {
    let s = secret(b"whsec_one");
    EndpointTest::with(services())
        .given_no_previous_events()
        .when(EndpointCommand::Add(AddEndpoint {
            event_types: Some(vec!["installation.exploded".into()]),
            ..add(&s)
        }))
        .then_expect_error(EndpointError::UnknownType("installation.exploded".into()));
    EndpointTest::with(services())
        .given_no_previous_events()
        .when(EndpointCommand::Add(AddEndpoint {
            event_types: Some(vec![]),
            ..add(&s)
        }))
        .then_expect_error(EndpointError::NoTypes);
}

#[test]
fn changes_record_only_what_differs_and_nothing_for_a_resubmitted_form() {
    let s = secret(b"whsec_one");
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(EndpointCommand::Change(ChangeEndpoint {
            url: Some("https://app.example.com/hooks/hubkeeper".into()),
            event_types: Some(vec![
                "installation.refreshed".into(),
                "hubspot.webhook".into(),
            ]),
            ..change(endpoint_id())
        }))
        .then_expect_events(vec![EndpointEvent::Changed(EndpointChanged {
            app_id: app_id(),
            endpoint_id: endpoint_id(),
            url: None,
            event_types: Some(vec![
                "hubspot.webhook".into(),
                "installation.refreshed".into(),
            ]),
            description: None,
            enabled: None,
            changed_at: t0(),
        })]);
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(EndpointCommand::Change(ChangeEndpoint {
            enabled: Some(true),
            description: Some("production receiver".into()),
            ..change(endpoint_id())
        }))
        .then_expect_events(vec![]);
    let unknown = EndpointId::new();
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(EndpointCommand::Change(change(unknown)))
        .then_expect_error(EndpointError::UnknownEndpoint(unknown.to_string()));
}

#[test]
fn a_rotation_keeps_the_old_secret_signing_for_the_overlap() {
    let old = secret(b"whsec_old");
    let new = secret(b"whsec_new");
    let rotated = EndpointEvent::SecretRotated(EndpointSecretRotated {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        secret: new.clone(),
        previous_valid_until: t0() + Duration::hours(24),
        rotated_at: t0(),
    });
    EndpointTest::with(services())
        .given(vec![added(&old)])
        .when(EndpointCommand::RotateSecret {
            endpoint_id: endpoint_id(),
            secret: new.clone(),
            overlap: Duration::hours(24),
        })
        .then_expect_events(vec![rotated.clone()]);
    let mut state = AppEndpoints::default();
    state.evolve(added(&old));
    state.evolve(rotated);
    let endpoint = state.endpoint(&endpoint_id()).expect("endpoint");
    assert_eq!(endpoint.signing_secrets(t0()), vec![&new, &old]);
    assert_eq!(
        endpoint.signing_secrets(t0() + Duration::hours(25)),
        vec![&new]
    );
}

#[test]
fn a_gone_receiver_disables_once_and_an_operator_enables_again() {
    let s = secret(b"whsec_one");
    let disabled = EndpointEvent::Disabled(EndpointDisabled {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        reason: "the receiver answered 410 Gone".into(),
        disabled_at: t0(),
    });
    let disable = EndpointCommand::Disable {
        endpoint_id: endpoint_id(),
        reason: "the receiver answered 410 Gone".into(),
    };
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(disable.clone())
        .then_expect_events(vec![disabled.clone()]);
    EndpointTest::with(services())
        .given(vec![added(&s), disabled.clone()])
        .when(disable)
        .then_expect_events(vec![]);
    let mut state = AppEndpoints::default();
    state.evolve(added(&s));
    state.evolve(disabled);
    assert_eq!(
        state
            .receivers(NotificationType::InstallationConnected)
            .count(),
        0
    );
    state.evolve(EndpointEvent::Changed(EndpointChanged {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        url: None,
        event_types: None,
        description: None,
        enabled: Some(true),
        changed_at: t0(),
    }));
    assert_eq!(
        state
            .receivers(NotificationType::InstallationConnected)
            .count(),
        1
    );
    assert_eq!(
        state
            .receivers(NotificationType::InstallationRefreshed)
            .count(),
        0
    );
}

#[test]
fn removed_endpoints_accept_nothing_and_resends_are_recorded() {
    let s = secret(b"whsec_one");
    let removed = EndpointEvent::Removed(EndpointRemoved {
        app_id: app_id(),
        endpoint_id: endpoint_id(),
        removed_at: t0(),
    });
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(EndpointCommand::Remove {
            endpoint_id: endpoint_id(),
        })
        .then_expect_events(vec![removed.clone()]);
    EndpointTest::with(services())
        .given(vec![added(&s), removed])
        .when(EndpointCommand::Resend {
            endpoint_id: endpoint_id(),
            webhook_id: "msg_x".into(),
        })
        .then_expect_error(EndpointError::UnknownEndpoint(endpoint_id().to_string()));
    EndpointTest::with(services())
        .given(vec![added(&s)])
        .when(EndpointCommand::Resend {
            endpoint_id: endpoint_id(),
            webhook_id: "msg_x".into(),
        })
        .then_expect_events(vec![EndpointEvent::DeliveryResent(DeliveryResent {
            app_id: app_id(),
            endpoint_id: endpoint_id(),
            webhook_id: "msg_x".into(),
            resent_at: t0(),
        })]);
}

#[test]
fn type_names_round_trip() {
    for t in NotificationType::ALL {
        assert_eq!(t.as_str().parse::<NotificationType>(), Ok(t));
    }
    assert!("nope".parse::<NotificationType>().is_err());
}
