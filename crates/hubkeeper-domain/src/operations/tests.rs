use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::clock::DomainServices;

type OperationTest = TestFramework<Operation>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

fn at(now: DateTime<Utc>) -> OperationTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn reloaded() -> OperationEvent {
    OperationEvent::ConfigurationReloaded(ConfigurationReloaded { reloaded_at: t0() })
}

fn self_test(passed: bool, steps: u32, failed: &[&str], took: i64) -> OperationCommand {
    OperationCommand::RecordSelfTest {
        passed,
        app_id: None,
        steps,
        failed_steps: failed.iter().map(|s| (*s).to_owned()).collect(),
        started_at: t0() - Duration::seconds(5),
        finished_at: t0() - Duration::seconds(5) + Duration::seconds(took),
    }
}

#[tokio::test]
async fn a_failed_log_in_records_the_key_id_and_client_only() {
    at(t0())
        .given_no_previous_events()
        .when_async(OperationCommand::RecordFailedLogIn {
            refusal: LogInRefusal::UnknownKey,
            key_id: Some("ak0123456789ab".into()),
            client: Some(" 203.0.113.7 ".into()),
        })
        .await
        .then_expect_events(vec![OperationEvent::LogInFailed(LogInFailed {
            refusal: StoredLogInRefusal::UnknownKey,
            key_id: Some("ak0123456789ab".into()),
            client: Some("203.0.113.7".into()),
            failed_at: t0(),
        })]);
}

#[tokio::test]
async fn anything_but_a_key_id_is_refused_so_no_secret_is_ever_recorded() {
    at(t0())
        .given_no_previous_events()
        .when_async(OperationCommand::RecordFailedLogIn {
            refusal: LogInRefusal::UnknownKey,
            key_id: Some("hk_ak0123456789ab_secretsecret".into()),
            client: None,
        })
        .await
        .then_expect_error(OperationError::BadKeyId(
            "hk_ak0123456789ab_secretsecret".into(),
        ));
}

#[tokio::test]
async fn an_operation_is_recorded_once() {
    at(t0())
        .given_no_previous_events()
        .when_async(OperationCommand::RecordConfigurationReloaded)
        .await
        .then_expect_events(vec![reloaded()]);
    at(t0())
        .given(vec![reloaded()])
        .when_async(OperationCommand::RecordRateLimitsCleared)
        .await
        .then_expect_error(OperationError::AlreadyRecorded);
}

#[tokio::test]
async fn clears_and_backups_record_when_and_from_where() {
    at(t0())
        .given_no_previous_events()
        .when_async(OperationCommand::RecordRateLimitsCleared)
        .await
        .then_expect_events(vec![OperationEvent::RateLimitsCleared(RateLimitsCleared {
            cleared_at: t0(),
        })]);
    at(t0())
        .given_no_previous_events()
        .when_async(OperationCommand::RecordBackupStarted {
            trigger: BackupTrigger::CommandLine,
        })
        .await
        .then_expect_events(vec![OperationEvent::BackupStarted(BackupStarted {
            trigger: StoredBackupTrigger::CommandLine,
            started_at: t0(),
        })]);
}

#[tokio::test]
async fn a_self_test_run_records_its_failed_steps() {
    at(t0())
        .given_no_previous_events()
        .when_async(self_test(false, 6, &["token hand-out"], 2))
        .await
        .then_expect_events(vec![OperationEvent::SelfTestRun(SelfTestRun {
            passed: false,
            app_id: None,
            steps: 6,
            failed_steps: vec!["token hand-out".into()],
            started_at: t0() - Duration::seconds(5),
            finished_at: t0() - Duration::seconds(3),
        })]);
}

#[tokio::test]
async fn inconsistent_self_test_reports_are_refused() {
    for (command, why) in [
        (
            self_test(true, 6, &["token hand-out"], 1),
            "a run passes exactly when no step failed",
        ),
        (
            self_test(false, 0, &["token hand-out"], 1),
            "more failed steps than steps run",
        ),
        (self_test(true, 6, &[], -1), "it ends before it starts"),
    ] {
        at(t0())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(OperationError::BadSelfTest(why));
    }
}

#[test]
fn state_says_what_was_recorded() {
    use cqrs_es::Aggregate;
    let mut operation = Operation::default();
    assert_eq!(operation.recorded(), None);
    operation.apply(reloaded());
    assert_eq!(
        operation.recorded(),
        Some(event_types::CONFIGURATION_RELOADED)
    );
    assert_eq!(operation.recorded_at(), Some(t0()));
}
