use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::clock::DomainServices;
use cqrs_es::Aggregate;

type SettingsTest = TestFramework<Settings>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

fn at(now: DateTime<Utc>) -> SettingsTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn update(
    oauth_rate_limit: Option<OAuthRateLimit>,
    logging: Option<Logging>,
    backups: Option<Backups>,
) -> SettingsCommand {
    SettingsCommand::Update {
        oauth_rate_limit,
        logging,
        backups,
    }
}

fn lenient() -> OAuthRateLimit {
    OAuthRateLimit {
        enabled: true,
        window_secs: 300,
        max_per_ip: 30,
    }
}

#[test]
fn defaults_are_the_settings_pages_recommendations() {
    let settings = Settings::default();
    let values = settings.values();
    assert_eq!(
        values.oauth_rate_limit,
        OAuthRateLimit {
            enabled: true,
            window_secs: 60,
            max_per_ip: 10
        }
    );
    assert!(!values.logging.verbose_requests);
    assert_eq!(values.logging.level, None);
    assert_eq!(values.logging.retention_days, 30);
    assert!(values.backups.enabled);
    assert_eq!(values.backups.daily_at.to_string(), "01:00");
    assert_eq!(values.backups.keep, 30);
    assert_eq!(settings.changed_at(), None);
}

#[tokio::test]
async fn each_changed_section_is_one_event_with_before_and_after() {
    let logging = Logging {
        verbose_requests: true,
        level: Some(LogLevel::Debug),
        retention_days: 7,
    };
    at(t0())
        .given_no_previous_events()
        .when_async(update(
            Some(lenient()),
            Some(logging),
            Some(Backups::default()),
        ))
        .await
        .then_expect_events(vec![
            SettingsEvent::OAuthRateLimitChanged(SectionChanged {
                previous: OAuthRateLimit::default().into(),
                current: lenient().into(),
                changed_at: t0(),
            }),
            SettingsEvent::LoggingChanged(SectionChanged {
                previous: Logging::default().into(),
                current: logging.into(),
                changed_at: t0(),
            }),
        ]);
}

#[tokio::test]
async fn unchanged_values_record_nothing() {
    let given = vec![SettingsEvent::OAuthRateLimitChanged(SectionChanged {
        previous: OAuthRateLimit::default().into(),
        current: lenient().into(),
        changed_at: t0(),
    })];
    at(t0())
        .given(given)
        .when_async(update(Some(lenient()), None, None))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn out_of_range_values_are_refused_and_nothing_is_applied() {
    let cases = [
        (
            update(
                Some(OAuthRateLimit {
                    window_secs: 0,
                    ..lenient()
                }),
                None,
                None,
            ),
            "oauth_rate_limit.window_secs",
        ),
        (
            update(
                Some(OAuthRateLimit {
                    max_per_ip: 0,
                    ..lenient()
                }),
                None,
                None,
            ),
            "oauth_rate_limit.max_per_ip",
        ),
        (
            update(
                Some(lenient()),
                Some(Logging {
                    retention_days: 0,
                    ..Logging::default()
                }),
                None,
            ),
            "logging.retention_days",
        ),
        (
            update(
                None,
                None,
                Some(Backups {
                    keep: 1001,
                    ..Backups::default()
                }),
            ),
            "backups.keep",
        ),
    ];
    for (command, setting) in cases {
        let error = at(t0())
            .given_no_previous_events()
            .when_async(command)
            .await
            .inspect_result()
            .expect_err("out of range");
        assert!(error.to_string().starts_with(setting), "{error}");
    }
}

#[test]
fn the_latest_change_wins() {
    let mut settings = Settings::default();
    settings.apply(SettingsEvent::BackupsChanged(SectionChanged {
        previous: Backups::default().into(),
        current: StoredBackups {
            enabled: false,
            daily_at: DailyTime::new(3, 30).expect("valid"),
            keep: 7,
        },
        changed_at: t0(),
    }));
    assert!(!settings.values().backups.enabled);
    assert_eq!(
        settings.customized(),
        Customized {
            oauth_rate_limit: false,
            logging: false,
            backups: true
        }
    );
    assert_eq!(settings.values().backups.daily_at.to_string(), "03:30");
    assert_eq!(settings.changed_at(), Some(t0()));
}

#[test]
fn daily_times_parse_and_schedule() {
    assert_eq!(
        "01:00".parse::<DailyTime>().map(|t| t.to_string()),
        Ok("01:00".into())
    );
    assert_eq!(
        "9:05".parse::<DailyTime>().map(|t| t.to_string()),
        Ok("09:05".into())
    );
    for bad in [
        "24:00", "12:60", "1200", "12:5", "ab:cd", "", "-1:00", "12:00:00",
    ] {
        assert!(bad.parse::<DailyTime>().is_err(), "{bad:?}");
    }
    let one = DailyTime::default();
    let before = Utc
        .with_ymd_and_hms(2026, 3, 1, 0, 30, 0)
        .single()
        .expect("valid");
    let after = Utc
        .with_ymd_and_hms(2026, 3, 1, 1, 0, 1)
        .single()
        .expect("valid");
    assert_eq!(
        one.next_after(before),
        Utc.with_ymd_and_hms(2026, 3, 1, 1, 0, 0)
            .single()
            .expect("valid")
    );
    assert_eq!(
        one.next_after(after),
        Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0)
            .single()
            .expect("valid")
    );
    let json = serde_json::to_string(&Backups::default()).expect("serializes");
    assert_eq!(json, r#"{"enabled":true,"daily_at":"01:00","keep":30}"#);
    assert!(
        serde_json::from_str::<Backups>(r#"{"enabled":true,"daily_at":"25:00","keep":30}"#)
            .is_err()
    );
}

#[test]
fn log_levels_parse_from_their_names() {
    for level in [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ] {
        assert_eq!(level.as_str().parse::<LogLevel>(), Ok(level));
    }
    assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warn));
    assert!("verbose".parse::<LogLevel>().is_err());
}
