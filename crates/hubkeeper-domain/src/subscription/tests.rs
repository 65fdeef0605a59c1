use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::clock::DomainServices;
use crate::plan::{BillingInterval, Currency, Money, PlanType, StoredLimitKind};
use cqrs_es::Aggregate;

type SubTest = TestFramework<Subscription>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 9, 0, 0)
        .single()
        .expect("valid")
}

fn at(now: DateTime<Utc>) -> SubTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn installation() -> InstallationId {
    InstallationId::derive(app(), crate::HubId::from(40_000_001), None)
}

fn app() -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(1))
}

fn other_app() -> AppId {
    AppId::from_uuid(uuid::Uuid::from_u128(2))
}

fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: Currency::parse(currency).expect("listed"),
    }
}

fn free_terms() -> PlanTerms {
    PlanTerms {
        plan_type: PlanType::Free,
        interval: None,
        price: money(0, "USD"),
        unit_pricing: None,
    }
}

fn monthly_terms(amount_minor: i64) -> PlanTerms {
    PlanTerms {
        plan_type: PlanType::Recurring,
        interval: Some(BillingInterval::Monthly),
        price: money(amount_minor, "USD"),
        unit_pricing: None,
    }
}

fn snapshot(n: u128, code: &str, terms: PlanTerms) -> PlanSnapshot {
    PlanSnapshot {
        plan_id: PlanId::from_uuid(uuid::Uuid::from_u128(100 + n)),
        code: code.into(),
        version: 1,
        terms,
        status: PlanStatus::Active,
        app_id: None,
        deleted: false,
    }
}

fn free() -> PlanSnapshot {
    snapshot(1, "free", free_terms())
}

fn pro() -> PlanSnapshot {
    snapshot(2, "pro", monthly_terms(1000))
}

fn started(plan: &PlanSnapshot, trigger: ChangeTrigger) -> SubscriptionEvent {
    SubscriptionEvent::Started(SubscriptionStarted {
        installation_id: installation(),
        app_id: app(),
        plan: plan.reference().into(),
        started_paid: plan.terms.is_paid(),
        trigger: trigger.into(),
        started_at: t0(),
        renews_at: plan
            .terms
            .renewal_months()
            .and_then(|m| t0().checked_add_months(Months::new(m))),
    })
}

fn change(plan: PlanSnapshot, trigger: ChangeTrigger) -> SubscriptionCommand {
    SubscriptionCommand::ChangePlan {
        installation_id: installation(),
        app_id: app(),
        plan,
        trigger,
    }
}

fn limit(period: &str) -> SubscriptionCommand {
    SubscriptionCommand::RecordLimitReached {
        limit: LimitKind::RequestsPerMonth,
        limit_value: 100,
        used: 100,
        period: period.into(),
        offer: Some(PlanOffer {
            plan_id: pro().plan_id,
            code: "pro".into(),
        }),
    }
}

// ---- registration ----------------------------------------------------------------------

#[tokio::test]
async fn the_first_plan_is_the_registration_and_records_free_or_paid() {
    at(t0())
        .given_no_previous_events()
        .when_async(change(free(), ChangeTrigger::Registration))
        .await
        .then_expect_events(vec![started(&free(), ChangeTrigger::Registration)]);
    let events = at(t0())
        .given_no_previous_events()
        .when_async(change(pro(), ChangeTrigger::SelfServe))
        .await
        .inspect_result()
        .expect("starts");
    let [SubscriptionEvent::Started(e)] = events.as_slice() else {
        panic!("expected SubscriptionStarted, got {events:?}");
    };
    assert!(e.started_paid);
    // 31 January + one month: the end of February, not 3 March.
    assert_eq!(
        e.renews_at,
        Some(
            Utc.with_ymd_and_hms(2026, 2, 28, 9, 0, 0)
                .single()
                .expect("valid")
        )
    );
}

#[tokio::test]
async fn putting_a_tenant_on_its_plan_again_records_nothing() {
    at(t0())
        .given(vec![started(&free(), ChangeTrigger::Registration)])
        .when_async(change(free(), ChangeTrigger::Admin))
        .await
        .then_expect_events(vec![]);
    // A repeated default-plan assignment (a redelivered connect) is a no-op too.
    at(t0())
        .given(vec![started(&pro(), ChangeTrigger::SelfServe)])
        .when_async(change(free(), ChangeTrigger::Registration))
        .await
        .then_expect_events(vec![]);
}

// ---- upgrades and downgrades -----------------------------------------------------------

#[tokio::test]
async fn an_upgrade_records_date_from_to_amount_and_trigger() {
    let later = t0() + Duration::days(3);
    at(later)
        .given(vec![started(&free(), ChangeTrigger::Registration)])
        .when_async(change(pro(), ChangeTrigger::LimitReached))
        .await
        .then_expect_events(vec![SubscriptionEvent::PlanChanged(
            SubscriptionPlanChanged {
                installation_id: installation(),
                from: free().reference().into(),
                to: pro().reference().into(),
                direction: StoredChangeDirection::Upgrade,
                amount: money(1000, "USD").into(),
                trigger: StoredChangeTrigger::LimitReached,
                changed_at: later,
                renews_at: later.checked_add_months(Months::new(1)),
            },
        )]);
}

#[tokio::test]
async fn a_downgrade_is_recorded_as_such() {
    let events = at(t0())
        .given(vec![started(&pro(), ChangeTrigger::SelfServe)])
        .when_async(change(free(), ChangeTrigger::Admin))
        .await
        .inspect_result()
        .expect("changes");
    assert!(matches!(
        events.as_slice(),
        [SubscriptionEvent::PlanChanged(e)]
            if e.direction == StoredChangeDirection::Downgrade
                && Money::from(e.amount).is_zero()
                && e.trigger == StoredChangeTrigger::Admin
                && e.renews_at.is_none()
    ));
}

#[test]
fn direction_compares_monthly_equivalent_prices() {
    let annual = PlanTerms {
        interval: Some(BillingInterval::Annual),
        ..monthly_terms(9600) // 800 a month
    };
    assert_eq!(
        ChangeDirection::between(&monthly_terms(1000), &annual),
        ChangeDirection::Downgrade
    );
    assert_eq!(
        ChangeDirection::between(&annual, &monthly_terms(800)),
        ChangeDirection::Lateral
    );
    let nok = PlanTerms {
        price: money(5000, "NOK"),
        ..monthly_terms(0)
    };
    assert_eq!(
        ChangeDirection::between(&monthly_terms(1000), &nok),
        ChangeDirection::Lateral,
        "no exchange rates: different currencies do not compare"
    );
    assert_eq!(
        ChangeDirection::between(&free_terms(), &nok),
        ChangeDirection::Upgrade,
        "free is free in any currency"
    );
}

// ---- which plans can be joined ---------------------------------------------------------

#[tokio::test]
async fn only_active_plans_take_new_subscribers() {
    for status in [
        PlanStatus::Inactive,
        PlanStatus::Deprecated,
        PlanStatus::Archived,
    ] {
        let mut plan = pro();
        plan.status = status;
        at(t0())
            .given(vec![started(&free(), ChangeTrigger::Registration)])
            .when_async(change(plan, ChangeTrigger::Admin))
            .await
            .then_expect_error(SubscriptionError::PlanClosed {
                code: "pro".into(),
                status,
            });
    }
}

#[tokio::test]
async fn plans_of_another_app_and_deleted_plans_cannot_be_joined() {
    let mut foreign = pro();
    foreign.app_id = Some(other_app());
    at(t0())
        .given_no_previous_events()
        .when_async(change(foreign, ChangeTrigger::Admin))
        .await
        .then_expect_error(SubscriptionError::WrongApp { code: "pro".into() });
    let mut own = pro();
    own.app_id = Some(app());
    assert!(at(t0())
        .given_no_previous_events()
        .when_async(change(own, ChangeTrigger::Admin))
        .await
        .inspect_result()
        .is_ok());
    let mut deleted = pro();
    deleted.deleted = true;
    at(t0())
        .given_no_previous_events()
        .when_async(change(deleted, ChangeTrigger::Admin))
        .await
        .then_expect_error(SubscriptionError::PlanDeleted { code: "pro".into() });
    at(t0())
        .given(vec![started(&free(), ChangeTrigger::Registration)])
        .when_async(SubscriptionCommand::ChangePlan {
            installation_id: installation(),
            app_id: other_app(),
            plan: pro(),
            trigger: ChangeTrigger::Admin,
        })
        .await
        .then_expect_error(SubscriptionError::AppMismatch {
            expected: app(),
            given: other_app(),
        });
}

// ---- versions and renewal --------------------------------------------------------------

fn pro_v2() -> PlanSnapshot {
    PlanSnapshot {
        version: 2,
        terms: monthly_terms(1500),
        // Subscribers of a plan that was hidden since keep it and renew on it.
        status: PlanStatus::Inactive,
        ..pro()
    }
}

#[tokio::test]
async fn subscribers_keep_their_price_until_renewal() {
    let mut sub = Subscription::default();
    sub.apply(started(&pro(), ChangeTrigger::SelfServe));
    // The plan was repriced meanwhile: nothing happens to the subscriber...
    assert_eq!(
        sub.current()
            .map(|c| (c.plan.version, c.plan.terms.price.amount_minor)),
        Some((1, 1000))
    );
    // ...and renewal is refused before the period ends.
    let ends = t0().checked_add_months(Months::new(1)).expect("date");
    at(ends - Duration::seconds(1))
        .given(vec![started(&pro(), ChangeTrigger::SelfServe)])
        .when_async(SubscriptionCommand::Renew { plan: pro_v2() })
        .await
        .then_expect_error(SubscriptionError::RenewalNotDue { renews_at: ends });
}

#[tokio::test]
async fn renewal_moves_the_subscriber_to_the_current_version_without_gaps() {
    let feb_end = Utc
        .with_ymd_and_hms(2026, 2, 28, 9, 0, 0)
        .single()
        .expect("valid");
    let mar_end = Utc
        .with_ymd_and_hms(2026, 3, 28, 9, 0, 0)
        .single()
        .expect("valid");
    let apr_end = Utc
        .with_ymd_and_hms(2026, 4, 28, 9, 0, 0)
        .single()
        .expect("valid");
    let late = mar_end + Duration::days(2); // a whole period was missed
    at(late)
        .given(vec![started(&pro(), ChangeTrigger::SelfServe)])
        .when_async(SubscriptionCommand::Renew { plan: pro_v2() })
        .await
        .then_expect_events(vec![SubscriptionEvent::Renewed(SubscriptionRenewed {
            installation_id: installation(),
            from_version: 1,
            plan: pro_v2().reference().into(),
            renewed_at: late,
            period_start: mar_end,
            renews_at: apr_end,
        })]);
    assert!(feb_end < mar_end);
}

#[tokio::test]
async fn renewal_needs_a_renewing_plan_the_tenant_is_on() {
    at(t0())
        .given_no_previous_events()
        .when_async(SubscriptionCommand::Renew { plan: pro() })
        .await
        .then_expect_error(SubscriptionError::NotSubscribed);
    at(t0() + Duration::days(400))
        .given(vec![started(&free(), ChangeTrigger::Registration)])
        .when_async(SubscriptionCommand::Renew { plan: free() })
        .await
        .then_expect_error(SubscriptionError::NoRenewal {
            code: "free".into(),
        });
    at(t0() + Duration::days(40))
        .given(vec![started(&pro(), ChangeTrigger::SelfServe)])
        .when_async(SubscriptionCommand::Renew { plan: free() })
        .await
        .then_expect_error(SubscriptionError::NotCurrentPlan {
            current: "pro".into(),
            given: "free".into(),
        });
}

// ---- usage limits ----------------------------------------------------------------------

#[tokio::test]
async fn reaching_a_limit_is_recorded_once_per_period_with_an_offer() {
    let given = vec![started(&free(), ChangeTrigger::Registration)];
    let events = at(t0())
        .given(given.clone())
        .when_async(limit("2026-01"))
        .await
        .inspect_result()
        .expect("recorded");
    let [SubscriptionEvent::UsageLimitReached(reached)] = events.as_slice() else {
        panic!("expected UsageLimitReached, got {events:?}");
    };
    assert_eq!(reached.plan_code, "free");
    assert_eq!(reached.offer.as_ref().map(|o| o.code.as_str()), Some("pro"));
    let mut given_twice = given.clone();
    given_twice.push(events[0].clone());
    at(t0())
        .given(given_twice.clone())
        .when_async(limit("2026-01"))
        .await
        .then_expect_events(vec![]);
    // A new month counts again.
    let next = at(t0())
        .given(given_twice)
        .when_async(limit("2026-02"))
        .await
        .inspect_result()
        .expect("recorded");
    assert_eq!(next.len(), 1);
}

#[tokio::test]
async fn a_plan_change_resets_the_limits_reached() {
    let mut sub = Subscription::default();
    sub.apply(started(&free(), ChangeTrigger::Registration));
    sub.apply(SubscriptionEvent::UsageLimitReached(UsageLimitReached {
        installation_id: installation(),
        plan_id: free().plan_id,
        plan_code: "free".into(),
        limit: StoredLimitKind::RequestsPerMonth,
        limit_value: 100,
        used: 100,
        period: "2026-01".into(),
        offer: None,
        reached_at: t0(),
    }));
    assert!(sub.limit_reached_in(LimitKind::RequestsPerMonth, "2026-01"));
    sub.apply(SubscriptionEvent::PlanChanged(SubscriptionPlanChanged {
        installation_id: installation(),
        from: free().reference().into(),
        to: pro().reference().into(),
        direction: StoredChangeDirection::Upgrade,
        amount: money(1000, "USD").into(),
        trigger: StoredChangeTrigger::LimitReached,
        changed_at: t0(),
        renews_at: None,
    }));
    assert!(!sub.limit_reached_in(LimitKind::RequestsPerMonth, "2026-01"));
}

#[tokio::test]
async fn limits_need_a_plan_and_a_valid_period() {
    at(t0())
        .given_no_previous_events()
        .when_async(limit("2026-01"))
        .await
        .then_expect_error(SubscriptionError::NotSubscribed);
    for bad in [
        "2026-13", "2026-1", "26-01", "2026/01", "2026-00", "2026-+1",
    ] {
        at(t0())
            .given(vec![started(&free(), ChangeTrigger::Registration)])
            .when_async(limit(bad))
            .await
            .then_expect_error(SubscriptionError::InvalidPeriod(bad.into()));
    }
    assert_eq!(period_of(t0()), "2026-01");
}

#[test]
fn triggers_parse_from_their_wire_names() {
    for trigger in [
        ChangeTrigger::Registration,
        ChangeTrigger::SelfServe,
        ChangeTrigger::Admin,
        ChangeTrigger::LimitReached,
    ] {
        assert_eq!(trigger.as_str().parse::<ChangeTrigger>(), Ok(trigger));
        assert_eq!(
            serde_json::to_value(trigger).expect("serializes"),
            serde_json::Value::String(trigger.as_str().into())
        );
    }
    assert_eq!(
        "self-serve".parse::<ChangeTrigger>(),
        Ok(ChangeTrigger::SelfServe)
    );
    assert!("upgrade".parse::<ChangeTrigger>().is_err());
}
