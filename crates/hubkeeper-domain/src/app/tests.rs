use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use hubkeeper_crypto::{seal, Aad, DataKey, Sealed};

use super::*;
use crate::clock::DomainServices;
use cqrs_es::Aggregate;

type AppTest = TestFramework<App>;

const CLIENT_ID: &str = "5f2c9a1e-3b4d-4e6f-8a7b-9c0d1e2f3a4b";
const REDIRECT: &str = "https://oauth.test.pdl.no/oauth/callback";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

fn later() -> DateTime<Utc> {
    t0() + Duration::hours(2)
}

fn app_id() -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a3c4_0000_7000_8000_0000_0000_0001,
    ))
}

fn secret() -> Sealed {
    let key = DataKey::generate();
    seal(
        &key,
        b"client-secret",
        &Aad::client_secret(app_id().to_string()),
    )
    .expect("seal")
}

fn register_cmd(secret: &Sealed) -> RegisterApp {
    RegisterApp {
        app_id: app_id(),
        label: "  Production CRM sync ".into(),
        description: Some("Syncs contacts".into()),
        environment: Environment::Production,
        client_id: CLIENT_ID.into(),
        client_secret: secret.clone(),
        redirect_uri: REDIRECT.into(),
        scopes: "crm.objects.contacts.read  oauth crm.objects.companies.write".into(),
        optional_scopes: "tickets".into(),
        oauth_generation: None,
        signature_versions: None,
        allow_legacy_signatures: false,
        return_urls: Vec::new(),
    }
}

fn registered(secret: &Sealed) -> AppEvent {
    AppEvent::Registered(AppRegistered {
        app_id: app_id(),
        label: "Production CRM sync".into(),
        description: "Syncs contacts".into(),
        environment: StoredEnvironment::Production,
        client_id: CLIENT_ID.into(),
        client_secret: secret.clone(),
        redirect_uri: REDIRECT.into(),
        scopes: vec![
            "crm.objects.companies.write".into(),
            "crm.objects.contacts.read".into(),
            "oauth".into(),
        ],
        optional_scopes: vec!["tickets".into()],
        oauth_generation: StoredOAuthGeneration::V2026_03,
        signature_versions: vec![
            StoredSignatureVersion::V1,
            StoredSignatureVersion::V2,
            StoredSignatureVersion::V3,
        ],
        return_urls: Vec::new(),
        registered_at: t0(),
    })
}

fn deleted() -> AppEvent {
    AppEvent::Deleted(AppDeleted {
        app_id: app_id(),
        forced: false,
        active_installations: 0,
        deleted_at: t0(),
    })
}

fn at(now: DateTime<Utc>) -> AppTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn update_event() -> AppUpdated {
    AppUpdated {
        app_id: app_id(),
        label: None,
        description: None,
        environment: None,
        redirect_uri: None,
        scopes: None,
        optional_scopes: None,
        oauth_generation: None,
        signature_versions: None,
        return_urls: None,
        updated_at: later(),
    }
}

fn state(events: Vec<AppEvent>) -> App {
    let mut app = App::default();
    for event in events {
        app.apply(event);
    }
    app
}

// ---- registration ----------------------------------------------------------------------

#[tokio::test]
async fn register_app_normalises_and_applies_defaults() {
    let s = secret();
    let AppEvent::Registered(mut expected) = registered(&s) else {
        unreachable!()
    };
    // New apps accept v3 only unless told otherwise.
    expected.signature_versions = vec![StoredSignatureVersion::V3];
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(register_cmd(&s)))
        .await
        .then_expect_events(vec![AppEvent::Registered(expected)]);
}

#[tokio::test]
async fn legacy_signature_versions_need_the_explicit_opt_in() {
    let s = secret();
    for versions in [
        vec![SignatureVersion::V1],
        vec![SignatureVersion::V2, SignatureVersion::V3],
        SignatureVersion::ALL.to_vec(),
    ] {
        let mut cmd = register_cmd(&s);
        cmd.signature_versions = Some(versions.clone());
        let AppError::LegacySignaturesNotAllowed { versions: named } = at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd.clone()))
            .await
            .inspect_result()
            .expect_err("refused without the opt-in")
        else {
            panic!("wrong refusal for {versions:?}");
        };
        assert!(named.contains("v1") || named.contains("v2"), "{named}");
        assert!(AppError::LegacySignaturesNotAllowed { versions: named }
            .to_string()
            .contains("allow_legacy_signatures"));
        cmd.allow_legacy_signatures = true;
        let events = at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd))
            .await
            .inspect_result()
            .expect("accepted with the opt-in");
        let [AppEvent::Registered(e)] = events.as_slice() else {
            panic!("expected one AppRegistered, got {events:?}");
        };
        assert_eq!(e.signature_versions.len(), versions.len());
    }
    // The answer's warning.
    let warning = legacy_signature_warning(&BTreeSet::from([SignatureVersion::V1]))
        .expect("a warning for v1");
    assert!(
        warning.contains("v1") && warning.contains("replayed"),
        "{warning}"
    );
    assert_eq!(
        legacy_signature_warning(&BTreeSet::from([SignatureVersion::V3])),
        None
    );
}

#[tokio::test]
async fn adding_legacy_versions_by_update_needs_the_opt_in_keeping_them_does_not() {
    let s = secret();
    let AppEvent::Registered(mut strict) = registered(&s) else {
        unreachable!()
    };
    strict.signature_versions = vec![StoredSignatureVersion::V3];
    let widen = UpdateApp {
        signature_versions: Some(vec![SignatureVersion::V2, SignatureVersion::V3]),
        ..UpdateApp::default()
    };
    at(later())
        .given(vec![AppEvent::Registered(strict.clone())])
        .when_async(AppCommand::UpdateApp(widen.clone()))
        .await
        .then_expect_error(AppError::LegacySignaturesNotAllowed {
            versions: "v2".into(),
        });
    let opted_in = UpdateApp {
        allow_legacy_signatures: true,
        ..widen
    };
    let (_, warnings) = state(vec![AppEvent::Registered(strict.clone())])
        .preview_update(&opted_in)
        .expect("accepted with the opt-in");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("v2") && w.contains("replayed")),
        "{warnings:?}"
    );
    at(later())
        .given(vec![AppEvent::Registered(strict)])
        .when_async(AppCommand::UpdateApp(opted_in))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            signature_versions: Some(vec![StoredSignatureVersion::V2, StoredSignatureVersion::V3]),
            ..update_event()
        })]);
    // An app registered when every version was the default keeps them without opting in again.
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            signature_versions: Some(vec![SignatureVersion::V1, SignatureVersion::V3]),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            signature_versions: Some(vec![StoredSignatureVersion::V1, StoredSignatureVersion::V3]),
            ..update_event()
        })]);
}

#[tokio::test]
async fn register_keeps_explicit_generation_and_signature_versions() {
    let s = secret();
    let mut cmd = register_cmd(&s);
    cmd.oauth_generation = Some(OAuthGeneration::V1);
    cmd.signature_versions = Some(vec![SignatureVersion::V3, SignatureVersion::V3]);
    cmd.description = None;
    let events = at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .inspect_result()
        .expect("registers");
    let [AppEvent::Registered(e)] = events.as_slice() else {
        panic!("expected one AppRegistered, got {events:?}");
    };
    assert_eq!(e.oauth_generation, StoredOAuthGeneration::V1);
    assert_eq!(e.signature_versions, vec![StoredSignatureVersion::V3]);
    assert_eq!(e.description, "");
}

#[tokio::test]
async fn register_twice_is_refused() {
    let s = secret();
    at(t0())
        .given(vec![registered(&s)])
        .when_async(AppCommand::RegisterApp(register_cmd(&s)))
        .await
        .then_expect_error(AppError::AlreadyRegistered(app_id()));
}

#[tokio::test]
async fn register_validates_client_id_format() {
    let s = secret();
    for bad in [
        "5f2c9a1e3b4d4e6f8a7b9c0d1e2f3a4b",
        "{5f2c9a1e-3b4d-4e6f-8a7b-9c0d1e2f3a4b}",
        "5f2c9a1e-3b4d-4e6f-8a7b-9c0d1e2f3a4",
        "5f2c9a1e-3b4d-4e6f-8a7b_9c0d1e2f3a4b",
        "zf2c9a1e-3b4d-4e6f-8a7b-9c0d1e2f3a4b",
        "",
    ] {
        let mut cmd = register_cmd(&s);
        cmd.client_id = bad.into();
        at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd))
            .await
            .then_expect_error(AppError::InvalidClientId);
    }
}

#[tokio::test]
async fn register_validates_redirect_uri() {
    let s = secret();
    let cases = [
        (
            "http://oauth.example.com/cb",
            "must use https (http is only allowed for localhost)",
        ),
        (
            "https://example.com/cb#frag",
            "must not contain a fragment (#...)",
        ),
        ("/oauth/callback", "must be an absolute http(s) URL"),
        ("ftp://example.com/cb", "must be an absolute http(s) URL"),
        (
            "https://user:pw@example.com/cb",
            "must not contain credentials",
        ),
        (" https://example.com/cb", "must not contain whitespace"),
        ("", "must not be empty"),
    ];
    for (uri, reason) in cases {
        let mut cmd = register_cmd(&s);
        cmd.redirect_uri = uri.into();
        at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd))
            .await
            .then_expect_error(AppError::InvalidRedirectUri { reason });
    }
}

#[tokio::test]
async fn http_redirect_is_allowed_for_loopback_and_kept_verbatim() {
    let s = secret();
    for uri in [
        "http://localhost:3000/oauth/callback",
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "https://example.com",
    ] {
        let mut cmd = register_cmd(&s);
        cmd.redirect_uri = uri.into();
        let events = at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd))
            .await
            .inspect_result()
            .expect("accepted");
        let [AppEvent::Registered(e)] = events.as_slice() else {
            panic!("expected AppRegistered");
        };
        assert_eq!(e.redirect_uri, uri, "stored exactly as typed");
    }
}

#[tokio::test]
async fn register_validates_scopes() {
    let s = secret();
    let mut cmd = register_cmd(&s);
    cmd.scopes = "   ".into();
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::NoScopes);

    let mut cmd = register_cmd(&s);
    cmd.scopes = "oauth,crm.objects.contacts.read".into();
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error_message(
            "invalid entry \"oauth,crm.objects.contacts.read\" in scopes: scopes are separated \
             by spaces, not commas",
        );

    let mut cmd = register_cmd(&s);
    cmd.optional_scopes = "tickets crm/objects".into();
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::InvalidScope {
            list: "optional scopes",
            scope: "crm/objects".into(),
            hint: "scopes contain only letters, digits, '.', '-' and '_'",
        });

    let mut cmd = register_cmd(&s);
    cmd.optional_scopes = "oauth".into();
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::ScopeRequiredAndOptional {
            scope: "oauth".into(),
        });
}

#[tokio::test]
async fn register_validates_label_description_and_signature_versions() {
    let s = secret();
    let mut cmd = register_cmd(&s);
    cmd.label = " ".into();
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::InvalidLabel {
            reason: "must not be empty",
        });

    let mut cmd = register_cmd(&s);
    cmd.label = "x".repeat(MAX_LABEL_CHARS + 1);
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::InvalidLabel {
            reason: "is too long",
        });

    let mut cmd = register_cmd(&s);
    cmd.description = Some("d".repeat(MAX_DESCRIPTION_CHARS + 1));
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::DescriptionTooLong {
            max: MAX_DESCRIPTION_CHARS,
        });

    let mut cmd = register_cmd(&s);
    cmd.signature_versions = Some(vec![]);
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .then_expect_error(AppError::NoSignatureVersions);
}

// ---- updates ----------------------------------------------------------------------------

#[tokio::test]
async fn safe_fields_update_freely() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            label: Some("Renamed".into()),
            description: Some("".into()),
            environment: Some(Environment::Staging),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            label: Some("Renamed".into()),
            description: Some("".into()),
            environment: Some(StoredEnvironment::Staging),
            ..update_event()
        })]);
}

#[tokio::test]
async fn update_records_only_changed_fields() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            label: Some("Production CRM sync".into()),
            environment: Some(Environment::Production),
            client_id: Some(CLIENT_ID.into()),
            scopes: Some("oauth crm.objects.contacts.read".into()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            scopes: Some(vec!["crm.objects.contacts.read".into(), "oauth".into()]),
            ..update_event()
        })]);
}

#[tokio::test]
async fn resubmitting_identical_values_records_nothing() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            label: Some(" Production CRM sync".into()),
            redirect_uri: Some(REDIRECT.into()),
            scopes: Some("oauth crm.objects.companies.write crm.objects.contacts.read".into()),
            signature_versions: Some(SignatureVersion::ALL.to_vec()),
            return_urls: None,
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn risky_fields_update_and_are_validated() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            redirect_uri: Some("https://oauth.test.pdl.no/v2/callback".into()),
            optional_scopes: Some("".into()),
            oauth_generation: Some(OAuthGeneration::V1),
            signature_versions: Some(vec![SignatureVersion::V3]),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            redirect_uri: Some("https://oauth.test.pdl.no/v2/callback".into()),
            optional_scopes: Some(vec![]),
            oauth_generation: Some(StoredOAuthGeneration::V1),
            signature_versions: Some(vec![StoredSignatureVersion::V3]),
            return_urls: None,
            ..update_event()
        })]);

    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            redirect_uri: Some("http://example.com/cb".into()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_error(AppError::InvalidRedirectUri {
            reason: "must use https (http is only allowed for localhost)",
        });

    // Overlap is checked against the resulting lists, not just the submitted one.
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            scopes: Some("oauth tickets".into()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_error(AppError::ScopeRequiredAndOptional {
            scope: "tickets".into(),
        });
}

#[tokio::test]
async fn client_id_change_is_refused_with_guidance() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            label: Some("Other".into()),
            client_id: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_error_message(
            "the client id cannot be changed: it identifies the HubSpot app; create a new app \
             entry for a different HubSpot app",
        );
}

#[tokio::test]
async fn client_secret_change_is_refused_with_guidance() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            client_secret: Some(secret()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_error_message(
            "the client secret cannot be changed by an update: rotate it in HubSpot, then with \
             POST /v1/apps/{id}/rotate-secret",
        );
}

#[tokio::test]
async fn update_before_registration_is_refused() {
    at(later())
        .given_no_previous_events()
        .when_async(AppCommand::UpdateApp(UpdateApp {
            label: Some("x".into()),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_error(AppError::NotRegistered);
}

#[test]
fn applying_an_update_changes_the_config() {
    let s = secret();
    let app = state(vec![
        registered(&s),
        AppEvent::Updated(AppUpdated {
            label: Some("New".into()),
            scopes: Some(vec!["oauth".into()]),
            signature_versions: Some(vec![StoredSignatureVersion::V2]),
            return_urls: None,
            ..update_event()
        }),
    ]);
    let config = app.config().expect("registered");
    assert_eq!(config.label, "New");
    assert_eq!(config.scopes, BTreeSet::from(["oauth".to_owned()]));
    assert_eq!(
        config.signature_versions,
        BTreeSet::from([SignatureVersion::V2])
    );
    assert_eq!(config.redirect_uri, REDIRECT, "untouched fields stay");
    assert_eq!(config.client_secret, s);
    assert_eq!(app.updated_at(), Some(later()));
}

// ---- warnings ---------------------------------------------------------------------------

#[test]
fn safe_changes_produce_no_warnings() {
    let s = secret();
    let app = state(vec![registered(&s)]);
    let (next, warnings) = app
        .preview_update(&UpdateApp {
            label: Some("Renamed".into()),
            description: Some("new".into()),
            environment: Some(Environment::Development),
            ..UpdateApp::default()
        })
        .expect("valid");
    assert_eq!(next.label, "Renamed");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn risky_changes_produce_warnings() {
    let s = secret();
    let app = state(vec![registered(&s)]);
    let old = app.config().expect("registered").clone();
    let new = old
        .updated(&UpdateApp {
            scopes: Some("oauth crm.objects.deals.read".into()),
            optional_scopes: Some("".into()),
            redirect_uri: Some("https://oauth.test.pdl.no/new".into()),
            oauth_generation: Some(OAuthGeneration::V1),
            signature_versions: Some(vec![SignatureVersion::V3]),
            ..UpdateApp::default()
        })
        .expect("valid");
    let warnings = change_warnings(&old, &new);
    assert_eq!(
        warnings,
        vec![
            "removing scopes may break existing features that rely on them: \
             crm.objects.companies.write crm.objects.contacts.read"
                .to_owned(),
            "added required scopes (crm.objects.deals.read) must also be added to the app in \
             HubSpot; existing installations keep their granted scopes until the user \
             re-authorizes"
                .to_owned(),
            "removing optional scopes may break features for installations that granted them: \
             tickets"
                .to_owned(),
            "the redirect URI must match HubSpot's configuration exactly (protocol, host, port \
             and path): set it to https://oauth.test.pdl.no/new in HubSpot too, or OAuth will \
             fail"
                .to_owned(),
            "OAuth endpoint generation changes from 2026-03 to v1: token exchanges and \
             refreshes use the new endpoints immediately"
                .to_owned(),
            "webhook requests signed with v1, v2 will be rejected from now on".to_owned(),
        ]
    );
    assert!(change_warnings(&old, &old).is_empty());
}

#[test]
fn preview_fails_exactly_like_the_command() {
    let s = secret();
    let app = state(vec![registered(&s)]);
    assert_eq!(
        app.preview_update(&UpdateApp {
            client_secret: Some(s.clone()),
            ..UpdateApp::default()
        })
        .expect_err("refused"),
        AppError::ClientSecretImmutable
    );
    assert_eq!(
        state(vec![registered(&s), deleted()])
            .preview_update(&UpdateApp::default())
            .expect_err("deleted"),
        AppError::Deleted
    );
}

// ---- deletion ---------------------------------------------------------------------------

#[tokio::test]
async fn delete_without_installations() {
    let s = secret();
    at(t0())
        .given(vec![registered(&s)])
        .when_async(AppCommand::DeleteApp {
            force: false,
            active_installations: 0,
        })
        .await
        .then_expect_events(vec![deleted()]);
}

#[tokio::test]
async fn delete_with_active_installations_is_refused_naming_the_count() {
    let s = secret();
    at(t0())
        .given(vec![registered(&s)])
        .when_async(AppCommand::DeleteApp {
            force: false,
            active_installations: 3,
        })
        .await
        .then_expect_error_message(
            "app has 3 active installation(s) that would lose access and stop refreshing; \
             disconnect them first or delete with force",
        );
}

#[tokio::test]
async fn forced_delete_with_active_installations_is_recorded_as_forced() {
    let s = secret();
    at(t0())
        .given(vec![registered(&s)])
        .when_async(AppCommand::DeleteApp {
            force: true,
            active_installations: 2,
        })
        .await
        .then_expect_events(vec![AppEvent::Deleted(AppDeleted {
            app_id: app_id(),
            forced: true,
            active_installations: 2,
            deleted_at: t0(),
        })]);
}

#[tokio::test]
async fn deleted_app_refuses_every_command() {
    let s = secret();
    let commands = vec![
        AppCommand::RegisterApp(register_cmd(&s)),
        AppCommand::UpdateApp(UpdateApp {
            label: Some("x".into()),
            ..UpdateApp::default()
        }),
        AppCommand::DeleteApp {
            force: true,
            active_installations: 0,
        },
    ];
    for command in commands {
        at(later())
            .given(vec![registered(&s), deleted()])
            .when_async(command)
            .await
            .then_expect_error(AppError::Deleted);
    }
}

#[tokio::test]
async fn delete_before_registration_is_refused() {
    at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::DeleteApp {
            force: true,
            active_installations: 0,
        })
        .await
        .then_expect_error(AppError::NotRegistered);
}

#[test]
fn deleted_state_keeps_config_for_audit() {
    let s = secret();
    let app = state(vec![registered(&s), deleted()]);
    assert!(app.is_deleted());
    assert_eq!(app.deleted_at(), Some(t0()));
    assert_eq!(app.config().map(|c| c.client_id.as_str()), Some(CLIENT_ID));
}

// ---- serialization contract -------------------------------------------------------------

#[test]
fn event_types_match_serde_tags_and_versions_are_stable() {
    let s = secret();
    let events = [
        registered(&s),
        AppEvent::Updated(AppUpdated {
            label: Some("x".into()),
            ..update_event()
        }),
        deleted(),
    ];
    let expected = [
        ("AppRegistered", "1.1"),
        ("AppUpdated", "1.0"),
        ("AppDeleted", "1.0"),
    ];
    for (event, (event_type, version)) in events.iter().zip(expected) {
        let json = serde_json::to_value(event).expect("serialize");
        let tag = json
            .as_object()
            .and_then(|o| o.keys().next())
            .expect("externally tagged");
        assert_eq!(tag, event_type);
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.event_version(), version);
        let back: AppEvent = serde_json::from_value(json).expect("deserialize");
        assert_eq!(&back, event);
    }
}

#[test]
fn app_updated_omits_unchanged_fields_in_json() {
    let json = serde_json::to_value(AppEvent::Updated(AppUpdated {
        label: Some("x".into()),
        ..update_event()
    }))
    .expect("serialize");
    let inner = json["AppUpdated"].as_object().expect("object");
    let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["app_id", "label", "updated_at"]);
}

#[test]
fn registered_event_json_shape() {
    let s = secret();
    let json = serde_json::to_value(registered(&s)).expect("serialize");
    let inner = &json["AppRegistered"];
    assert_eq!(inner["environment"], "production");
    assert_eq!(inner["oauth_generation"], "2026-03");
    assert_eq!(
        inner["signature_versions"],
        serde_json::json!(["v1", "v2", "v3"])
    );
    assert_eq!(inner["client_secret"], serde_json::json!(s.to_string()));
    assert!(!json.to_string().contains("client-secret"), "no plaintext");
}

#[test]
fn enum_parsing_accepts_dashboard_spellings() {
    assert_eq!("dev".parse::<Environment>(), Ok(Environment::Development));
    assert_eq!(
        "Production".parse::<Environment>(),
        Ok(Environment::Production)
    );
    assert!("qa".parse::<Environment>().is_err());
    assert_eq!(
        "2026-03".parse::<OAuthGeneration>(),
        Ok(OAuthGeneration::V2026_03)
    );
    assert_eq!("v1".parse::<OAuthGeneration>(), Ok(OAuthGeneration::V1));
    assert!("v2".parse::<OAuthGeneration>().is_err());
    assert_eq!("V3".parse::<SignatureVersion>(), Ok(SignatureVersion::V3));
    assert!("v4".parse::<SignatureVersion>().is_err());
    assert_eq!(OAuthGeneration::default(), OAuthGeneration::V2026_03);
}

#[test]
fn app_state_round_trips_through_serde() {
    // Aggregates must serialize (snapshots); make sure state survives a round trip.
    let s = secret();
    let app = state(vec![registered(&s)]);
    let json = serde_json::to_string(&app).expect("serialize");
    let back: App = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, app);
}

// ---- client secret rotation and parked refreshes ----------------------------------------

fn other_secret() -> Sealed {
    let key = DataKey::generate();
    seal(
        &key,
        b"client-secret-2",
        &Aad::client_secret(app_id().to_string()),
    )
    .expect("seal")
}

fn rotated(new: &Sealed, overlap: Duration) -> AppEvent {
    AppEvent::ClientSecretRotated(AppClientSecretRotated {
        app_id: app_id(),
        client_secret: new.clone(),
        previous_valid_until: later() + overlap,
        rotated_at: later(),
    })
}

fn rejected(at: DateTime<Utc>) -> AppEvent {
    AppEvent::CredentialsRejected(AppCredentialsRejected {
        app_id: app_id(),
        error: "invalid_client".into(),
        message: "HubSpot rejected the app's client credentials".into(),
        rejected_at: at,
    })
}

#[tokio::test]
async fn rotating_records_the_new_sealed_secret_and_the_end_of_the_overlap() {
    let (s, new) = (secret(), other_secret());
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::RotateClientSecret {
            client_secret: new.clone(),
            overlap_secs: 86_400,
        })
        .await
        .then_expect_events(vec![rotated(&new, Duration::hours(24))]);
}

#[tokio::test]
async fn rotation_refuses_an_endless_overlap_and_deleted_or_unknown_apps() {
    let (s, new) = (secret(), other_secret());
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::RotateClientSecret {
            client_secret: new.clone(),
            overlap_secs: MAX_ROTATION_OVERLAP_SECS + 1,
        })
        .await
        .then_expect_error(AppError::OverlapTooLong {
            max: MAX_ROTATION_OVERLAP_SECS,
        });
    at(later())
        .given(vec![registered(&s), deleted()])
        .when_async(AppCommand::RotateClientSecret {
            client_secret: new.clone(),
            overlap_secs: 60,
        })
        .await
        .then_expect_error(AppError::Deleted);
    at(later())
        .given_no_previous_events()
        .when_async(AppCommand::RotateClientSecret {
            client_secret: new,
            overlap_secs: 60,
        })
        .await
        .then_expect_error(AppError::NotRegistered);
}

#[test]
fn both_secrets_are_valid_during_the_overlap_then_only_the_new_one() {
    let (s, new) = (secret(), other_secret());
    let app = state(vec![registered(&s), rotated(&new, Duration::hours(1))]);
    assert_eq!(app.config().map(|c| &c.client_secret), Some(&new));
    assert_eq!(app.secrets_valid_at(later()), vec![&new, &s]);
    assert_eq!(
        app.secrets_valid_at(later() + Duration::minutes(59)),
        vec![&new, &s]
    );
    assert_eq!(
        app.secrets_valid_at(later() + Duration::hours(1)),
        vec![&new]
    );
    assert_eq!(app.secret_rotated_at(), Some(later()));
    assert!(App::default().secrets_valid_at(t0()).is_empty());
}

#[tokio::test]
async fn a_credentials_rejection_parks_refreshes_once() {
    let s = secret();
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::RecordCredentialsRejected {
            error: " invalid_client ".into(),
            message: "HubSpot rejected the app's client credentials".into(),
        })
        .await
        .then_expect_events(vec![rejected(later())]);
    // Further refusals while parked (other installations, other processes) record nothing.
    at(later() + Duration::minutes(1))
        .given(vec![registered(&s), rejected(later())])
        .when_async(AppCommand::RecordCredentialsRejected {
            error: "invalid_client".into(),
            message: "again".into(),
        })
        .await
        .then_expect_events(vec![]);
    let parked = state(vec![registered(&s), rejected(later())]);
    assert_eq!(
        parked.refreshes_parked().map(|p| p.error.as_str()),
        Some("invalid_client")
    );
}

#[tokio::test]
async fn an_operator_resumes_parked_refreshes() {
    let s = secret();
    let resumed = AppEvent::RefreshesResumed(AppRefreshesResumed {
        app_id: app_id(),
        resumed_at: later(),
    });
    at(later())
        .given(vec![registered(&s), rejected(t0())])
        .when_async(AppCommand::ResumeRefreshes)
        .await
        .then_expect_events(vec![resumed.clone()]);
    assert!(state(vec![registered(&s), rejected(t0()), resumed])
        .refreshes_parked()
        .is_none());
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::ResumeRefreshes)
        .await
        .then_expect_error(AppError::RefreshesNotParked);
}

#[test]
fn rotating_the_secret_resumes_parked_refreshes() {
    let (s, new) = (secret(), other_secret());
    let app = state(vec![
        registered(&s),
        rejected(t0()),
        rotated(&new, Duration::hours(1)),
    ]);
    assert!(app.refreshes_parked().is_none());
}

#[test]
fn snapshots_written_before_rotation_existed_still_load() {
    let s = secret();
    let mut old = serde_json::to_value(state(vec![registered(&s)])).expect("json");
    let object = old.as_object_mut().expect("object");
    object.remove("previous_secret");
    object.remove("secret_rotated_at");
    object.remove("parked");
    let app: App = serde_json::from_value(old).expect("old snapshot loads");
    assert_eq!(app, state(vec![registered(&s)]));
}

#[tokio::test]
async fn return_urls_are_validated_normalised_and_updated() {
    let s = secret();
    let mut cmd = register_cmd(&s);
    cmd.return_urls = vec![
        "https://App.Example.com/hubspot/done".into(),
        "https://app.example.com/hubspot/done".into(),
        "http://localhost:3000/cb".into(),
    ];
    let events = at(t0())
        .given_no_previous_events()
        .when_async(AppCommand::RegisterApp(cmd))
        .await
        .inspect_result()
        .expect("registers");
    let [AppEvent::Registered(e)] = events.as_slice() else {
        panic!("expected one AppRegistered, got {events:?}");
    };
    assert_eq!(
        e.return_urls,
        vec![
            "https://app.example.com/hubspot/done".to_owned(),
            "http://localhost:3000/cb".to_owned()
        ],
        "normalised, duplicates dropped, order kept"
    );
    for bad in [
        "http://app.example.com/done",
        "https://app.example.com/done?x=1",
        "https://app.example.com/done#x",
        "https://user:pw@app.example.com/",
        "ftp://app.example.com/",
        "done",
    ] {
        let mut cmd = register_cmd(&s);
        cmd.return_urls = vec![bad.into()];
        let refused = at(t0())
            .given_no_previous_events()
            .when_async(AppCommand::RegisterApp(cmd))
            .await
            .inspect_result();
        assert!(
            matches!(refused, Err(AppError::InvalidReturnUrl { .. })),
            "{bad}: {refused:?}"
        );
    }
    at(later())
        .given(vec![registered(&s)])
        .when_async(AppCommand::UpdateApp(UpdateApp {
            return_urls: Some(vec!["https://app.example.com/x".into()]),
            ..UpdateApp::default()
        }))
        .await
        .then_expect_events(vec![AppEvent::Updated(AppUpdated {
            app_id: app_id(),
            label: None,
            description: None,
            environment: None,
            redirect_uri: None,
            scopes: None,
            optional_scopes: None,
            oauth_generation: None,
            signature_versions: None,
            return_urls: Some(vec!["https://app.example.com/x".into()]),
            updated_at: later(),
        })]);
}

#[test]
fn a_return_url_must_match_scheme_host_port_and_path_prefix() {
    let allowed = vec![
        "https://app.example.com/hubspot/done".to_owned(),
        "http://localhost:3000/".to_owned(),
    ];
    for ok in [
        "https://app.example.com/hubspot/done",
        "https://app.example.com/hubspot/done/tenant-1?tab=crm",
        "https://app.example.com:443/hubspot/done",
        "http://localhost:3000/anything",
    ] {
        assert!(match_return_url(&allowed, ok).is_ok(), "{ok}");
    }
    for off in [
        "https://app.example.com/hubspot/donezo",
        "https://app.example.com/hubspot/done/../../admin",
        "https://app.example.com/hubspot",
        "https://evil.example.com/hubspot/done",
        "https://app.example.com.evil.example/hubspot/done",
        "https://app.example.com:8443/hubspot/done",
        "http://localhost:3001/",
    ] {
        assert!(
            matches!(
                match_return_url(&allowed, off),
                Err(ReturnUrlError::NotAllowed { .. })
            ),
            "{off}"
        );
    }
    assert!(matches!(
        match_return_url(&allowed, "http://app.example.com/hubspot/done"),
        Err(ReturnUrlError::Invalid { .. })
    ));
    let none = match_return_url(&[], "https://app.example.com/").unwrap_err();
    assert!(none.to_string().contains("the app has none"), "{none}");
}
