use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;

use super::*;
use crate::clock::DomainServices;
use cqrs_es::Aggregate;

type PlanTest = TestFramework<Plan>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

fn later() -> DateTime<Utc> {
    t0() + Duration::days(3)
}

fn plan_id() -> PlanId {
    PlanId::from_uuid(uuid::Uuid::from_u128(
        0x0190_a3c4_0000_7000_8000_0000_0000_0042,
    ))
}

fn usd() -> Currency {
    Currency::parse("USD").expect("listed")
}

fn at(now: DateTime<Utc>) -> PlanTest {
    TestFramework::with(DomainServices::fixed(now))
}

fn limits(pairs: &[(LimitKind, u64)]) -> UsageLimits {
    pairs.iter().copied().collect()
}

fn monthly(price_minor: i64) -> PricingInput {
    PricingInput {
        plan_type: PlanType::Recurring,
        interval: Some(BillingInterval::Monthly),
        price_minor,
        currency: "usd".into(),
        unit_pricing: None,
    }
}

fn monthly_terms(price_minor: i64) -> PlanTerms {
    PlanTerms {
        plan_type: PlanType::Recurring,
        interval: Some(BillingInterval::Monthly),
        price: Money {
            amount_minor: price_minor,
            currency: usd(),
        },
        unit_pricing: None,
    }
}

fn create_cmd() -> CreatePlan {
    CreatePlan {
        plan_id: plan_id(),
        code: "  Pro ".into(),
        name: " Pro Plan ".into(),
        description: Some("For growing teams".into()),
        app_id: None,
        pricing: monthly(2900),
        features: vec!["Bulk operations".into(), "Priority support".into()],
        limits: limits(&[(LimitKind::RequestsPerMonth, 10_000), (LimitKind::Users, 5)]),
        status: None,
    }
}

fn created() -> PlanEvent {
    PlanEvent::Created(PlanCreated {
        plan_id: plan_id(),
        code: "pro".into(),
        name: "Pro Plan".into(),
        description: "For growing teams".into(),
        app_id: None,
        terms: monthly_terms(2900).into(),
        features: vec!["Bulk operations".into(), "Priority support".into()],
        limits: [
            (StoredLimitKind::RequestsPerMonth, 10_000),
            (StoredLimitKind::Users, 5),
        ]
        .into(),
        status: StoredPlanStatus::Active,
        version: 1,
        created_at: t0(),
    })
}

fn state(events: Vec<PlanEvent>) -> Plan {
    let mut plan = Plan::default();
    for event in events {
        plan.apply(event);
    }
    plan
}

fn status_changed(from: PlanStatus, to: PlanStatus) -> PlanEvent {
    PlanEvent::StatusChanged(PlanStatusChanged {
        plan_id: plan_id(),
        from: from.into(),
        to: to.into(),
        subscribers: 0,
        changed_at: t0(),
    })
}

// ---- creation --------------------------------------------------------------------------

#[tokio::test]
async fn create_normalises_input_and_starts_at_version_1() {
    at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::CreatePlan(create_cmd()))
        .await
        .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn create_twice_is_refused() {
    at(t0())
        .given(vec![created()])
        .when_async(PlanCommand::CreatePlan(create_cmd()))
        .await
        .then_expect_error(PlanError::AlreadyExists(plan_id()));
}

#[tokio::test]
async fn plan_codes_follow_one_syntax() {
    assert_eq!(normalize_code(" Starter "), Ok("starter".into()));
    assert_eq!(normalize_code("pro_v2"), Ok("pro_v2".into()));
    assert_eq!(normalize_code("team-annual"), Ok("team-annual".into()));
    for bad in ["", "a", "2pro", "pro plan", "pro!", "_pro", &"p".repeat(41)] {
        let mut cmd = create_cmd();
        cmd.code = bad.into();
        let error = at(t0())
            .given_no_previous_events()
            .when_async(PlanCommand::CreatePlan(cmd))
            .await
            .inspect_result()
            .expect_err("invalid code");
        assert!(
            matches!(error, PlanError::InvalidCode { .. }),
            "{bad:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn currency_must_be_an_accepted_iso_4217_code() {
    for good in ["USD", "eur", "NOK", "GBP", "SEK", "DKK", "JPY"] {
        let mut cmd = create_cmd();
        cmd.pricing.currency = good.into();
        assert!(
            at(t0())
                .given_no_previous_events()
                .when_async(PlanCommand::CreatePlan(cmd))
                .await
                .inspect_result()
                .is_ok(),
            "{good} must be accepted"
        );
    }
    let mut cmd = create_cmd();
    cmd.pricing.currency = "NKO".into();
    at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::CreatePlan(cmd))
        .await
        .then_expect_error(PlanError::UnknownCurrency("NKO".into()));
}

#[tokio::test]
async fn every_plan_type_has_its_pricing_rules() {
    let unit = Some(UnitPricing {
        amount_minor: 10,
        per_units: 1000,
        metric: UsageMetric::Requests,
    });
    let input = |plan_type, interval, price_minor, unit_pricing| PricingInput {
        plan_type,
        interval,
        price_minor,
        currency: "USD".into(),
        unit_pricing,
    };
    let monthly = Some(BillingInterval::Monthly);
    let valid = [
        input(PlanType::Free, None, 0, None),
        input(PlanType::OneTime, None, 4900, None),
        input(
            PlanType::Recurring,
            Some(BillingInterval::Annual),
            29_000,
            None,
        ),
        input(PlanType::UsageBased, None, 0, unit),
        input(PlanType::Hybrid, monthly, 900, unit),
    ];
    for pricing in valid {
        let mut cmd = create_cmd();
        cmd.pricing = pricing.clone();
        assert!(
            at(t0())
                .given_no_previous_events()
                .when_async(PlanCommand::CreatePlan(cmd))
                .await
                .inspect_result()
                .is_ok(),
            "{pricing:?} must be accepted"
        );
    }
    let invalid = [
        (input(PlanType::Free, None, 100, None), "price of 0"),
        (
            input(PlanType::Free, monthly, 0, None),
            "no billing interval",
        ),
        (input(PlanType::OneTime, None, 0, None), "price above 0"),
        (
            input(PlanType::OneTime, monthly, 100, None),
            "no billing interval",
        ),
        (
            input(PlanType::Recurring, None, 100, None),
            "needs a billing interval",
        ),
        (
            input(PlanType::Recurring, monthly, 0, None),
            "price above 0",
        ),
        (
            input(PlanType::Recurring, monthly, 100, unit),
            "no usage price",
        ),
        (
            input(PlanType::UsageBased, None, 0, None),
            "needs a usage price",
        ),
        (
            input(PlanType::UsageBased, None, 100, unit),
            "no base price",
        ),
        (
            input(PlanType::Hybrid, monthly, 100, None),
            "needs a usage price",
        ),
        (
            input(PlanType::Hybrid, None, 100, unit),
            "needs a billing interval",
        ),
        (
            input(PlanType::Recurring, monthly, -1, None),
            "between 0 and",
        ),
        (
            input(PlanType::Recurring, monthly, MAX_AMOUNT_MINOR + 1, None),
            "between 0 and",
        ),
        (
            input(
                PlanType::UsageBased,
                None,
                0,
                Some(UnitPricing {
                    amount_minor: 10,
                    per_units: 0,
                    metric: UsageMetric::Requests,
                }),
            ),
            "block of at least 1",
        ),
        (
            input(
                PlanType::UsageBased,
                None,
                0,
                Some(UnitPricing {
                    amount_minor: 10,
                    per_units: 1,
                    metric: UsageMetric::Contacts,
                }),
            ),
            "monthly counter",
        ),
    ];
    for (pricing, expected) in invalid {
        let mut cmd = create_cmd();
        cmd.pricing = pricing.clone();
        let error = at(t0())
            .given_no_previous_events()
            .when_async(PlanCommand::CreatePlan(cmd))
            .await
            .inspect_result()
            .expect_err("invalid pricing");
        assert!(
            matches!(error, PlanError::InvalidPricing { .. })
                && error.to_string().contains(expected),
            "{pricing:?}: expected {expected:?}, got {error}"
        );
    }
}

#[tokio::test]
async fn features_are_single_lines_without_duplicates() {
    let cases = [
        (vec!["A".to_string(), "A".to_string()], "is listed twice"),
        (vec!["  ".to_string()], "must not be empty"),
        (vec!["two\nlines".to_string()], "single line"),
    ];
    for (features, expected) in cases {
        let mut cmd = create_cmd();
        cmd.features = features;
        let error = at(t0())
            .given_no_previous_events()
            .when_async(PlanCommand::CreatePlan(cmd))
            .await
            .inspect_result()
            .expect_err("invalid features");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let mut cmd = create_cmd();
    cmd.features = (0..=MAX_FEATURES).map(|i| format!("feature {i}")).collect();
    at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::CreatePlan(cmd))
        .await
        .then_expect_error(PlanError::TooManyFeatures);
}

#[tokio::test]
async fn a_new_plan_starts_active_or_inactive() {
    let mut cmd = create_cmd();
    cmd.status = Some(PlanStatus::Inactive);
    let events = at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::CreatePlan(cmd))
        .await
        .inspect_result()
        .expect("inactive is fine");
    assert!(
        matches!(&events[..], [PlanEvent::Created(e)] if e.status == StoredPlanStatus::Inactive)
    );
    for status in [PlanStatus::Deprecated, PlanStatus::Archived] {
        let mut cmd = create_cmd();
        cmd.status = Some(status);
        at(t0())
            .given_no_previous_events()
            .when_async(PlanCommand::CreatePlan(cmd))
            .await
            .then_expect_error(PlanError::InvalidInitialStatus(status));
    }
}

#[tokio::test]
async fn commands_before_creation_are_refused() {
    at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::UpdatePlan(UpdatePlan::default()))
        .await
        .then_expect_error(PlanError::NotFound);
    at(t0())
        .given_no_previous_events()
        .when_async(PlanCommand::DeletePlan { subscribers: 0 })
        .await
        .then_expect_error(PlanError::NotFound);
}

// ---- safe changes ----------------------------------------------------------------------

#[tokio::test]
async fn descriptions_added_features_and_raised_limits_apply_at_once() {
    let update = UpdatePlan {
        name: Some("Pro".into()),
        description: Some("For growing teams".into()), // unchanged: not in the event
        features: Some(vec![
            "Bulk operations".into(),
            "Priority support".into(),
            "API access".into(),
        ]),
        limits: Some(limits(&[(LimitKind::RequestsPerMonth, 20_000)])), // users: now unlimited
        pricing: Some(monthly(2900)),                                   // unchanged
        notice_days: None,
    };
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update))
        .await
        .then_expect_events(vec![PlanEvent::DetailsChanged(PlanDetailsChanged {
            plan_id: plan_id(),
            name: Some("Pro".into()),
            description: None,
            features: Some(vec![
                "Bulk operations".into(),
                "Priority support".into(),
                "API access".into(),
            ]),
            limits_raised: BTreeMap::from([
                (StoredLimitKind::RequestsPerMonth, Some(20_000)),
                (StoredLimitKind::Users, None),
            ]),
            changed_at: later(),
        })]);
}

#[tokio::test]
async fn a_resubmitted_form_records_nothing() {
    let update = UpdatePlan {
        name: Some("Pro Plan".into()),
        description: Some("For growing teams".into()),
        features: Some(vec!["Bulk operations".into(), "Priority support".into()]),
        limits: Some(limits(&[
            (LimitKind::RequestsPerMonth, 10_000),
            (LimitKind::Users, 5),
        ])),
        pricing: Some(monthly(2900)),
        notice_days: Some(10),
    };
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update))
        .await
        .then_expect_events(vec![]);
}

// ---- reductions with notice ------------------------------------------------------------

#[tokio::test]
async fn removing_a_feature_or_lowering_a_limit_is_announced_with_a_notice_date() {
    let update = UpdatePlan {
        features: Some(vec!["Bulk operations".into()]),
        limits: Some(limits(&[
            (LimitKind::RequestsPerMonth, 5_000),
            (LimitKind::Users, 5),
            (LimitKind::Contacts, 1_000), // unlimited before: a reduction too
        ])),
        ..UpdatePlan::default()
    };
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update))
        .await
        .then_expect_events(vec![PlanEvent::ReductionAnnounced(
            PlanReductionAnnounced {
                plan_id: plan_id(),
                features: Some(vec!["Bulk operations".into()]),
                features_removed: vec!["Priority support".into()],
                limits_lowered: BTreeMap::from([
                    (
                        StoredLimitKind::RequestsPerMonth,
                        StoredLimitReduction {
                            from: Some(10_000),
                            to: 5_000,
                        },
                    ),
                    (
                        StoredLimitKind::Contacts,
                        StoredLimitReduction {
                            from: None,
                            to: 1_000,
                        },
                    ),
                ]),
                announced_at: later(),
                effective_at: later() + Duration::days(i64::from(DEFAULT_NOTICE_DAYS)),
            },
        )]);
}

#[tokio::test]
async fn the_notice_period_is_the_callers_choice_within_bounds() {
    let update = |days| UpdatePlan {
        limits: Some(limits(&[
            (LimitKind::RequestsPerMonth, 1),
            (LimitKind::Users, 5),
        ])),
        notice_days: Some(days),
        ..UpdatePlan::default()
    };
    let events = at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update(7)))
        .await
        .inspect_result()
        .expect("accepted");
    let [PlanEvent::ReductionAnnounced(e)] = events.as_slice() else {
        panic!("expected a reduction, got {events:?}");
    };
    assert_eq!(e.effective_at, later() + Duration::days(7));
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update(MAX_NOTICE_DAYS + 1)))
        .await
        .then_expect_error(PlanError::InvalidNotice);
}

#[test]
fn existing_subscribers_keep_reduced_terms_until_the_notice_runs_out() {
    let plan = state(vec![
        created(),
        PlanEvent::ReductionAnnounced(PlanReductionAnnounced {
            plan_id: plan_id(),
            features: Some(vec!["Bulk operations".into()]),
            features_removed: vec!["Priority support".into()],
            limits_lowered: BTreeMap::from([(
                StoredLimitKind::RequestsPerMonth,
                StoredLimitReduction {
                    from: Some(10_000),
                    to: 5_000,
                },
            )]),
            announced_at: later(),
            effective_at: later() + Duration::days(30),
        }),
    ]);
    let before_change = t0() + Duration::hours(1);
    let after_change = later() + Duration::hours(1);
    let in_grace = later() + Duration::days(10);
    let after_grace = later() + Duration::days(31);
    // Joined before the announcement: old terms during the grace period...
    assert_eq!(
        plan.limits_for(before_change, in_grace)
            .get(&LimitKind::RequestsPerMonth),
        Some(&10_000)
    );
    assert!(plan
        .features_for(before_change, in_grace)
        .contains(&"Priority support".to_string()));
    // ...new terms afterwards.
    assert_eq!(
        plan.limits_for(before_change, after_grace)
            .get(&LimitKind::RequestsPerMonth),
        Some(&5_000)
    );
    assert!(!plan
        .features_for(before_change, after_grace)
        .contains(&"Priority support".to_string()));
    // Joined after the announcement: new terms at once.
    assert_eq!(
        plan.limits_for(after_change, in_grace)
            .get(&LimitKind::RequestsPerMonth),
        Some(&5_000)
    );
    assert_eq!(plan.notices().len(), 1);
}

// ---- prices and versions ---------------------------------------------------------------

#[tokio::test]
async fn a_price_change_creates_a_new_version() {
    let update = UpdatePlan {
        pricing: Some(monthly(3900)),
        ..UpdatePlan::default()
    };
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update))
        .await
        .then_expect_events(vec![PlanEvent::Repriced(PlanRepriced {
            plan_id: plan_id(),
            previous_version: 1,
            version: 2,
            previous_terms: monthly_terms(2900).into(),
            terms: monthly_terms(3900).into(),
            repriced_at: later(),
        })]);
}

#[test]
fn every_version_keeps_its_terms() {
    let plan = state(vec![
        created(),
        PlanEvent::Repriced(PlanRepriced {
            plan_id: plan_id(),
            previous_version: 1,
            version: 2,
            previous_terms: monthly_terms(2900).into(),
            terms: monthly_terms(3900).into(),
            repriced_at: later(),
        }),
    ]);
    let definition = plan.definition().expect("created");
    assert_eq!(definition.version, 2);
    assert_eq!(definition.terms.price.amount_minor, 3900);
    assert_eq!(
        plan.version(1).map(|v| v.terms.price.amount_minor),
        Some(2900)
    );
    assert_eq!(plan.versions().len(), 2);
}

#[tokio::test]
async fn changing_currency_or_interval_is_a_price_change_too() {
    let mut pricing = monthly(2900);
    pricing.currency = "NOK".into();
    pricing.interval = Some(BillingInterval::Annual);
    let events = at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(UpdatePlan {
            pricing: Some(pricing),
            ..UpdatePlan::default()
        }))
        .await
        .inspect_result()
        .expect("accepted");
    assert!(
        matches!(&events[..], [PlanEvent::Repriced(e)] if e.version == 2 && e.terms.price.currency.code() == "NOK")
    );
}

#[tokio::test]
async fn one_update_can_announce_a_reduction_and_reprice() {
    let update = UpdatePlan {
        name: Some("Pro 2026".into()),
        limits: Some(limits(&[(LimitKind::RequestsPerMonth, 1_000)])),
        pricing: Some(monthly(1900)),
        ..UpdatePlan::default()
    };
    let events = at(later())
        .given(vec![created()])
        .when_async(PlanCommand::UpdatePlan(update))
        .await
        .inspect_result()
        .expect("accepted");
    let types: Vec<String> = events.iter().map(DomainEvent::event_type).collect();
    assert_eq!(
        types,
        vec![
            "PlanDetailsChanged",
            "PlanReductionAnnounced",
            "PlanRepriced"
        ]
    );
}

// ---- status ----------------------------------------------------------------------------

#[tokio::test]
async fn status_moves_between_active_inactive_and_deprecated() {
    for (from, to) in [
        (PlanStatus::Active, PlanStatus::Inactive),
        (PlanStatus::Inactive, PlanStatus::Deprecated),
        (PlanStatus::Deprecated, PlanStatus::Active),
    ] {
        let mut given = vec![created()];
        if from != PlanStatus::Active {
            given.push(status_changed(PlanStatus::Active, from));
        }
        at(t0())
            .given(given)
            .when_async(PlanCommand::ChangeStatus {
                status: to,
                subscribers: 3,
            })
            .await
            .then_expect_events(vec![PlanEvent::StatusChanged(PlanStatusChanged {
                plan_id: plan_id(),
                from: from.into(),
                to: to.into(),
                subscribers: 3,
                changed_at: t0(),
            })]);
    }
    // Same status again: nothing to record.
    at(t0())
        .given(vec![created()])
        .when_async(PlanCommand::ChangeStatus {
            status: PlanStatus::Active,
            subscribers: 0,
        })
        .await
        .then_expect_events(vec![]);
}

#[test]
fn only_active_plans_take_new_sign_ups() {
    assert!(PlanStatus::Active.accepts_sign_ups());
    for status in [
        PlanStatus::Inactive,
        PlanStatus::Deprecated,
        PlanStatus::Archived,
    ] {
        assert!(!status.accepts_sign_ups(), "{status}");
    }
}

#[tokio::test]
async fn archiving_needs_an_empty_plan_and_freezes_it() {
    let error = at(t0())
        .given(vec![created()])
        .when_async(PlanCommand::ChangeStatus {
            status: PlanStatus::Archived,
            subscribers: 2,
        })
        .await
        .inspect_result()
        .expect_err("has subscribers");
    assert_eq!(
        error.to_string(),
        "plan has 2 subscriber(s); move them to another plan before you archive it"
    );
    let archived = vec![
        created(),
        status_changed(PlanStatus::Active, PlanStatus::Archived),
    ];
    at(t0())
        .given(archived.clone())
        .when_async(PlanCommand::UpdatePlan(UpdatePlan {
            name: Some("Revived".into()),
            ..UpdatePlan::default()
        }))
        .await
        .then_expect_error(PlanError::Archived);
    at(t0())
        .given(archived)
        .when_async(PlanCommand::ChangeStatus {
            status: PlanStatus::Active,
            subscribers: 0,
        })
        .await
        .then_expect_error(PlanError::Archived);
}

// ---- deletion --------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_plan_with_subscribers_is_refused_naming_how_many() {
    let error = at(t0())
        .given(vec![created()])
        .when_async(PlanCommand::DeletePlan { subscribers: 7 })
        .await
        .inspect_result()
        .expect_err("has subscribers");
    assert_eq!(
        error,
        PlanError::HasSubscribers {
            count: 7,
            action: "delete"
        }
    );
    assert!(error.to_string().contains("7 subscriber(s)"), "{error}");
}

#[tokio::test]
async fn an_empty_plan_can_be_deleted_and_then_accepts_nothing() {
    let deleted = PlanEvent::Deleted(PlanDeleted {
        plan_id: plan_id(),
        code: "pro".into(),
        deleted_at: later(),
    });
    at(later())
        .given(vec![created()])
        .when_async(PlanCommand::DeletePlan { subscribers: 0 })
        .await
        .then_expect_events(vec![deleted.clone()]);
    for command in [
        PlanCommand::DeletePlan { subscribers: 0 },
        PlanCommand::UpdatePlan(UpdatePlan::default()),
        PlanCommand::ChangeStatus {
            status: PlanStatus::Inactive,
            subscribers: 0,
        },
        PlanCommand::CreatePlan(create_cmd()),
    ] {
        at(later())
            .given(vec![created(), deleted.clone()])
            .when_async(command)
            .await
            .then_expect_error(PlanError::Deleted);
    }
}

// ---- wire format -----------------------------------------------------------------------

#[test]
fn events_have_a_stable_wire_form() {
    let json = serde_json::to_value(created()).expect("serializes");
    assert_eq!(json["PlanCreated"]["code"], "pro");
    assert_eq!(json["PlanCreated"]["terms"]["plan_type"], "recurring");
    assert_eq!(json["PlanCreated"]["terms"]["interval"], "monthly");
    assert_eq!(json["PlanCreated"]["terms"]["price"]["amount_minor"], 2900);
    assert_eq!(json["PlanCreated"]["terms"]["price"]["currency"], "USD");
    assert_eq!(json["PlanCreated"]["limits"]["requests_per_month"], 10_000);
    assert_eq!(json["PlanCreated"]["status"], "active");
    let back: PlanEvent = serde_json::from_value(json).expect("parses");
    assert_eq!(back, created());
    for (event, name) in [
        (created(), event_types::PLAN_CREATED),
        (
            status_changed(PlanStatus::Active, PlanStatus::Inactive),
            event_types::PLAN_STATUS_CHANGED,
        ),
    ] {
        assert_eq!(event.event_type(), name);
        assert_eq!(event.event_version(), "1.0");
    }
}
