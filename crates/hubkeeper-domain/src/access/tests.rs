use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::clock::DomainServices;

type KeyTest = TestFramework<ApiKey>;

const KEY: &str = "ak0123456789ab";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

fn at(now: DateTime<Utc>) -> KeyTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn app(n: u128) -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(n))
}

fn create(role: KeyRole, apps: Vec<AppId>) -> ApiKeyCommand {
    ApiKeyCommand::Create {
        key_id: KEY.into(),
        name: "  ci-bot ".into(),
        role,
        apps,
    }
}

fn created(role: KeyRole, apps: Vec<AppId>) -> ApiKeyEvent {
    ApiKeyEvent::Created(ApiKeyCreated {
        key_id: KEY.into(),
        name: "ci-bot".into(),
        role: role.into(),
        apps,
        created_at: t0(),
    })
}

fn revoked(name: Option<&str>) -> ApiKeyEvent {
    ApiKeyEvent::Revoked(ApiKeyRevoked {
        key_id: KEY.into(),
        name: name.map(str::to_owned),
        revoked_at: t0(),
    })
}

#[tokio::test]
async fn a_service_key_is_created_with_its_apps_sorted_and_its_name_trimmed() {
    at(t0())
        .given_no_previous_events()
        .when_async(create(KeyRole::Service, vec![app(2), app(1), app(2)]))
        .await
        .then_expect_events(vec![created(KeyRole::Service, vec![app(1), app(2)])]);
}

#[tokio::test]
async fn a_key_is_created_once() {
    at(t0())
        .given(vec![created(KeyRole::Admin, vec![])])
        .when_async(create(KeyRole::Admin, vec![]))
        .await
        .then_expect_error(ApiKeyError::AlreadyCreated(KEY.into()));
}

#[tokio::test]
async fn only_service_keys_are_bound_to_apps() {
    at(t0())
        .given_no_previous_events()
        .when_async(create(KeyRole::Operator, vec![app(1)]))
        .await
        .then_expect_error(ApiKeyError::AppsOnNonServiceKey(KeyRole::Operator));
}

#[tokio::test]
async fn names_are_one_short_line() {
    for (name, reason) in [
        ("   ", "must not be empty"),
        ("a\nb", "must be a single line without control characters"),
    ] {
        at(t0())
            .given_no_previous_events()
            .when_async(ApiKeyCommand::Create {
                key_id: KEY.into(),
                name: name.into(),
                role: KeyRole::Auditor,
                apps: vec![],
            })
            .await
            .then_expect_error(ApiKeyError::BadName(reason));
    }
    at(t0())
        .given_no_previous_events()
        .when_async(ApiKeyCommand::Create {
            key_id: KEY.into(),
            name: "x".repeat(MAX_KEY_NAME_CHARS + 1),
            role: KeyRole::Auditor,
            apps: vec![],
        })
        .await
        .then_expect_error(ApiKeyError::BadName("is too long"));
}

#[tokio::test]
async fn key_ids_have_their_shape_and_belong_to_the_aggregate() {
    at(t0())
        .given_no_previous_events()
        .when_async(ApiKeyCommand::Revoke {
            key_id: "hk_secret".into(),
        })
        .await
        .then_expect_error(ApiKeyError::BadKeyId("hk_secret".into()));
    at(t0())
        .given(vec![created(KeyRole::Admin, vec![])])
        .when_async(ApiKeyCommand::LogOut {
            key_id: "ak00000000000f".into(),
        })
        .await
        .then_expect_error(ApiKeyError::WrongKey {
            aggregate: KEY.into(),
            command: "ak00000000000f".into(),
        });
}

#[tokio::test]
async fn a_revocation_names_the_key_and_happens_once() {
    at(t0())
        .given(vec![created(KeyRole::Admin, vec![])])
        .when_async(ApiKeyCommand::Revoke { key_id: KEY.into() })
        .await
        .then_expect_events(vec![revoked(Some("ci-bot"))]);
    at(t0())
        .given(vec![
            created(KeyRole::Admin, vec![]),
            revoked(Some("ci-bot")),
        ])
        .when_async(ApiKeyCommand::Revoke { key_id: KEY.into() })
        .await
        .then_expect_error(ApiKeyError::AlreadyRevoked(KEY.into()));
}

#[tokio::test]
async fn keys_made_before_key_events_can_log_in_and_be_revoked() {
    at(t0())
        .given_no_previous_events()
        .when_async(ApiKeyCommand::Revoke { key_id: KEY.into() })
        .await
        .then_expect_events(vec![revoked(None)]);
    at(t0())
        .given_no_previous_events()
        .when_async(ApiKeyCommand::LogIn {
            key_id: KEY.into(),
            client: Some("203.0.113.7".into()),
        })
        .await
        .then_expect_events(vec![ApiKeyEvent::LoggedIn(DashboardLoggedIn {
            key_id: KEY.into(),
            client: Some("203.0.113.7".into()),
            logged_in_at: t0(),
        })]);
}

#[tokio::test]
async fn a_revoked_key_cannot_log_in_but_its_user_may_log_out() {
    at(t0())
        .given(vec![
            created(KeyRole::Admin, vec![]),
            revoked(Some("ci-bot")),
        ])
        .when_async(ApiKeyCommand::LogIn {
            key_id: KEY.into(),
            client: None,
        })
        .await
        .then_expect_error(ApiKeyError::Revoked(KEY.into()));
    at(t0())
        .given(vec![
            created(KeyRole::Admin, vec![]),
            revoked(Some("ci-bot")),
        ])
        .when_async(ApiKeyCommand::LogOut { key_id: KEY.into() })
        .await
        .then_expect_events(vec![ApiKeyEvent::LoggedOut(DashboardLoggedOut {
            key_id: KEY.into(),
            logged_out_at: t0(),
        })]);
}

#[tokio::test]
async fn client_addresses_are_one_short_line() {
    at(t0())
        .given_no_previous_events()
        .when_async(ApiKeyCommand::LogIn {
            key_id: KEY.into(),
            client: Some("x".repeat(MAX_CLIENT_CHARS + 1)),
        })
        .await
        .then_expect_error(ApiKeyError::BadClient("is too long"));
}

#[test]
fn state_follows_the_history() {
    use cqrs_es::Aggregate;
    let mut key = ApiKey::default();
    key.apply(created(KeyRole::Service, vec![app(1)]));
    key.apply(ApiKeyEvent::LoggedIn(DashboardLoggedIn {
        key_id: KEY.into(),
        client: None,
        logged_in_at: t0(),
    }));
    assert_eq!(key.key_id(), Some(KEY));
    assert_eq!(key.name(), Some("ci-bot"));
    assert_eq!(key.role(), Some(KeyRole::Service));
    assert_eq!(key.apps(), &[app(1)]);
    assert_eq!(key.created_at(), Some(t0()));
    assert_eq!((key.logins(), key.last_login_at()), (1, Some(t0())));
    assert_eq!(key.revoked_at(), None);
    key.apply(revoked(Some("ci-bot")));
    assert_eq!(key.revoked_at(), Some(t0()));
}

#[test]
fn roles_parse_from_their_wire_names() {
    for role in [
        KeyRole::Admin,
        KeyRole::Operator,
        KeyRole::Auditor,
        KeyRole::Service,
    ] {
        assert_eq!(role.as_str().parse::<KeyRole>(), Ok(role));
        assert_eq!(StoredKeyRole::from(role).as_str(), role.as_str());
    }
    assert!("root".parse::<KeyRole>().is_err());
    assert!(is_key_id(KEY));
    assert!(!is_key_id("ak0123456789aZ"));
    assert!(!is_key_id("ak0123"));
}
