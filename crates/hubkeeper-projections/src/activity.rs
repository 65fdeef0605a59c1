//! The activity log's wording: one human-readable line per event, with a level an operator can
//! filter on (`error` means someone has to act, `warn` means access was lost or is at risk).

use hubkeeper_domain::access::ApiKeyEvent;
use hubkeeper_domain::app::AppEvent;
use hubkeeper_domain::installation::{DisconnectCause, InstallationEvent};
use hubkeeper_domain::notification::EndpointEvent;
use hubkeeper_domain::operations::{OperationEvent, StoredBackupTrigger, StoredLogInRefusal};
use hubkeeper_domain::plan::{BillingInterval, Money, PlanEvent, PlanTerms, PlanType};
use hubkeeper_domain::settings::{SectionChanged, SettingsEvent};
use hubkeeper_domain::subscription::{
    ChangeDirection, ChangeTrigger, StoredPlanRef, SubscriptionEvent,
};
use hubkeeper_domain::webhook_log::WebhookLogEvent;
use serde::Serialize;

use crate::event::{DomainEvent, ProjectedEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            other => Err(format!(
                "unknown level `{other}` (expected info, warn or error)"
            )),
        }
    }
}

/// The snake_case name serde gives an enum value (the same text the API shows).
pub(crate) fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// What an activity line may name besides the event itself, looked up by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context<'a> {
    /// The hub of the installation the event concerns.
    pub hub_id: Option<i64>,
    /// The code of the plan a plan event concerns (only `PlanCreated` and `PlanDeleted` carry
    /// it themselves).
    pub plan_code: Option<&'a str>,
}

/// What the activity log says about `event`.
pub fn describe(
    event: &ProjectedEvent,
    decoded: &DomainEvent,
    context: Context<'_>,
) -> (Level, String) {
    let hub = context
        .hub_id
        .map_or_else(String::new, |h| format!(" (hub {h})"));
    match decoded {
        DomainEvent::Installation(e) => describe_installation(e, &hub),
        DomainEvent::App(e) => describe_app(e),
        DomainEvent::Plan(e) => describe_plan(e, context.plan_code),
        DomainEvent::Subscription(e) => describe_subscription(e, &hub),
        DomainEvent::Settings(e) => describe_settings(e, &actor_text(event.actor())),
        DomainEvent::Endpoint(e) => describe_endpoint(e),
        DomainEvent::ApiKey(e) => describe_key(e, &actor_text(event.actor())),
        DomainEvent::Operation(e) => describe_operation(e, &actor_text(event.actor())),
        // Said here for the as-of views and exports; the activity log itself gets no line per
        // webhook event (see docs/read-models.md).
        DomainEvent::WebhookLog(WebhookLogEvent::Received(e)) => (
            Level::Info,
            format!(
                "HubSpot sent {} (event {}) from hub {}",
                e.subscription_type, e.event_id, e.portal_id
            ),
        ),
        DomainEvent::Unknown => (
            Level::Info,
            format!(
                "{} on {} {}",
                event.event_type, event.aggregate_type, event.aggregate_id
            ),
        ),
        DomainEvent::Undecodable(_) => (
            Level::Error,
            format!(
                "{} on {} {} could not be read by this version",
                event.event_type, event.aggregate_type, event.aggregate_id
            ),
        ),
    }
}

fn describe_installation(event: &InstallationEvent, hub: &str) -> (Level, String) {
    match event {
        InstallationEvent::Connected(e) => (
            Level::Info,
            format!(
                "Installed in {} (hub {}){}; {} scope(s) granted",
                e.hub_domain,
                e.hub_id,
                e.installer
                    .email
                    .as_deref()
                    .map_or_else(String::new, |m| format!(" by {m}")),
                e.scopes.len()
            ),
        ),
        InstallationEvent::Reconnected(e) => (
            Level::Info,
            format!(
                "Reconnected{hub} after being {}",
                e.previous_status.as_str().replace('_', " ")
            ),
        ),
        InstallationEvent::TokensRefreshed(e) => (
            Level::Info,
            format!(
                "Access token refreshed{hub}; valid until {}",
                e.tokens.access_expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        InstallationEvent::RefreshFailed(e) => (
            Level::Warn,
            format!(
                "Token refresh failed{hub} ({}, {} in a row): {}",
                serde_name(&e.class).replace('_', " "),
                e.consecutive_failures,
                e.message
            ),
        ),
        InstallationEvent::ReauthorizationRequired(e) => (
            Level::Error,
            format!(
                "HubSpot rejected the refresh token{hub} ({}); the user must reconnect: {}",
                serde_name(&e.class).replace('_', " "),
                e.message
            ),
        ),
        InstallationEvent::Revoked(e) => {
            (Level::Warn, format!("Tokens revoked{hub}: {}", e.reason))
        }
        InstallationEvent::Disconnected(e) => match DisconnectCause::from(e.cause) {
            DisconnectCause::Uninstalled => (
                Level::Warn,
                format!("App uninstalled in HubSpot{hub}; tokens removed"),
            ),
            DisconnectCause::Operator => (
                Level::Warn,
                format!(
                    "Disconnected by an operator{hub}{}",
                    e.reason
                        .as_deref()
                        .map_or_else(String::new, |r| format!(": {r}"))
                ),
            ),
        },
        InstallationEvent::TenantForgotten(e) => (
            Level::Warn,
            format!("Tenant data key destroyed{hub}: {}", e.reason),
        ),
        InstallationEvent::RemovalScheduled(e) => (
            Level::Warn,
            format!(
                "{} scheduled{hub} for {}, the app told first: {}",
                match e.action.as_str() {
                    "revoke" => "Revoke",
                    _ => "Disconnect",
                },
                e.effective_at.format("%Y-%m-%d %H:%M:%S UTC"),
                e.reason
            ),
        ),
        InstallationEvent::RemovalCancelled(e) => (
            Level::Info,
            format!(
                "Scheduled {}{hub} (due {}) cancelled{}",
                e.action.as_str(),
                e.effective_at.format("%Y-%m-%d %H:%M:%S UTC"),
                e.reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {r}"))
            ),
        ),
    }
}

fn describe_app(event: &AppEvent) -> (Level, String) {
    match event {
        AppEvent::Registered(e) => (
            Level::Info,
            format!(
                "App \"{}\" registered ({}, {} scope(s))",
                e.label,
                e.environment,
                e.scopes.len()
            ),
        ),
        AppEvent::Updated(e) => {
            let mut changed = Vec::new();
            let fields = [
                ("label", e.label.is_some()),
                ("description", e.description.is_some()),
                ("environment", e.environment.is_some()),
                ("redirect URI", e.redirect_uri.is_some()),
                ("scopes", e.scopes.is_some()),
                ("optional scopes", e.optional_scopes.is_some()),
                ("OAuth endpoints", e.oauth_generation.is_some()),
                ("signature versions", e.signature_versions.is_some()),
            ];
            for (name, set) in fields {
                if set {
                    changed.push(name);
                }
            }
            // Scope and redirect changes affect installs in progress: worth a warning.
            let level = if e.scopes.is_some() || e.redirect_uri.is_some() {
                Level::Warn
            } else {
                Level::Info
            };
            (
                level,
                format!("App settings changed: {}", changed.join(", ")),
            )
        }
        AppEvent::ClientSecretRotated(e) => (
            Level::Info,
            format!(
                "App client secret rotated; the previous secret is accepted for webhook \
                 signatures until {}",
                e.previous_valid_until.format("%Y-%m-%d %H:%M UTC")
            ),
        ),
        AppEvent::CredentialsRejected(e) => (
            Level::Error,
            format!(
                "HubSpot rejected the app's client credentials ({}); its refreshes are parked \
                 until the secret is rotated or an operator resumes them",
                e.error
            ),
        ),
        AppEvent::RefreshesResumed(_) => (Level::Info, "App refreshes resumed".to_owned()),
        AppEvent::Deleted(e) => (
            Level::Warn,
            if e.forced {
                format!(
                    "App deleted with {} active installation(s) (forced)",
                    e.active_installations
                )
            } else {
                "App deleted".to_owned()
            },
        ),
    }
}

/// Who did it, in words: `key ak…`, `the command line`, `Hubkeeper`, `an anonymous client`.
pub(crate) fn actor_text(actor: &str) -> String {
    match actor {
        "cli" => "the command line".to_owned(),
        "system" | "system:scheduler" | "system:refresher" => "Hubkeeper".to_owned(),
        "hubspot" => "HubSpot".to_owned(),
        "anonymous" => "an anonymous client".to_owned(),
        other => match (
            other.strip_prefix("key:"),
            other.strip_prefix("scheduled-removal:by:"),
        ) {
            (Some(id), _) => format!("key {id}"),
            (_, Some(by)) => format!("the scheduled removal by {}", actor_text(by)),
            _ => other.to_owned(),
        },
    }
}

fn describe_key(event: &ApiKeyEvent, actor: &str) -> (Level, String) {
    match event {
        ApiKeyEvent::Created(e) => {
            let apps = if e.apps.is_empty() {
                String::new()
            } else {
                let apps: Vec<String> = e.apps.iter().map(ToString::to_string).collect();
                format!(", apps: {}", apps.join(", "))
            };
            (
                Level::Info,
                format!(
                    "Key `{}` ({}{apps}) created as {} by {actor}",
                    e.name, e.role, e.key_id
                ),
            )
        }
        ApiKeyEvent::Revoked(e) => (
            Level::Warn,
            match &e.name {
                Some(name) => format!("Key `{name}` ({}) revoked by {actor}", e.key_id),
                None => format!("Key {} revoked by {actor}", e.key_id),
            },
        ),
        ApiKeyEvent::LoggedIn(e) => (
            Level::Info,
            format!(
                "Key {} logged in to the dashboard{}",
                e.key_id,
                e.client
                    .as_deref()
                    .map_or_else(String::new, |c| format!(" from {c}"))
            ),
        ),
        ApiKeyEvent::LoggedOut(e) => (
            Level::Info,
            format!("Key {} logged out of the dashboard", e.key_id),
        ),
    }
}

fn describe_operation(event: &OperationEvent, actor: &str) -> (Level, String) {
    match event {
        OperationEvent::LogInFailed(e) => {
            let from = e
                .client
                .as_deref()
                .map_or_else(String::new, |c| format!(" from {c}"));
            let why = match (e.refusal, e.key_id.as_deref()) {
                (StoredLogInRefusal::UnknownKey, Some(id)) => {
                    format!("key {id} is unknown or revoked, or its secret is wrong")
                }
                (StoredLogInRefusal::UnknownKey, None) => "not an API key".to_owned(),
                (StoredLogInRefusal::RoleNotAllowed, id) => format!(
                    "key {} may not open the dashboard (a service key)",
                    id.unwrap_or("?")
                ),
            };
            (Level::Warn, format!("Failed log-in{from}: {why}"))
        }
        OperationEvent::RateLimitsCleared(_) => (
            Level::Info,
            format!("Rate limits cleared in every process by {actor}"),
        ),
        OperationEvent::ConfigurationReloaded(_) => (
            Level::Info,
            format!("Configuration reloaded in every process by {actor}"),
        ),
        OperationEvent::BackupStarted(e) => (
            Level::Info,
            format!(
                "Backup started by {actor} ({})",
                match e.trigger {
                    StoredBackupTrigger::Api => "API",
                    StoredBackupTrigger::CommandLine => "`hubkeeper backup`",
                }
            ),
        ),
        OperationEvent::SelfTestRun(e) => {
            let app = e
                .app_id
                .map_or_else(String::new, |a| format!(" with app {a}"));
            if e.passed {
                (
                    Level::Info,
                    format!("Self-test passed ({} steps){app}, run by {actor}", e.steps),
                )
            } else {
                (
                    Level::Warn,
                    format!(
                        "Self-test failed ({} of {} steps: {}){app}, run by {actor}",
                        e.failed_steps.len(),
                        e.steps,
                        e.failed_steps.join(", ")
                    ),
                )
            }
        }
    }
}

/// A setting's value in words (`unset` for a level left to each process).
fn setting_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "unset".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `` `section.field` from A to B `` for every field that changed.
fn changed_fields<T: Serialize>(section: &str, change: &SectionChanged<T>) -> Vec<String> {
    let (Ok(serde_json::Value::Object(before)), Ok(serde_json::Value::Object(after))) = (
        serde_json::to_value(&change.previous),
        serde_json::to_value(&change.current),
    ) else {
        return Vec::new();
    };
    let null = serde_json::Value::Null;
    after
        .iter()
        .filter(|(field, value)| before.get(*field).unwrap_or(&null) != *value)
        .map(|(field, value)| {
            format!(
                "`{section}.{field}` from {} to {}",
                setting_value(before.get(field).unwrap_or(&null)),
                setting_value(value)
            )
        })
        .collect()
}

fn describe_settings(event: &SettingsEvent, actor: &str) -> (Level, String) {
    let fields = match event {
        SettingsEvent::OAuthRateLimitChanged(e) => changed_fields("oauth_rate_limit", e),
        SettingsEvent::LoggingChanged(e) => changed_fields("logging", e),
        SettingsEvent::BackupsChanged(e) => changed_fields("backups", e),
    };
    let (first, rest) = match fields.split_first() {
        Some((first, rest)) => (first.clone(), rest),
        None => ("(no field)".to_owned(), &[][..]),
    };
    let mut message = format!("Setting {first}");
    for more in rest {
        message.push_str("; ");
        message.push_str(more);
    }
    // "Setting `a` from 1 to 2" reads as "changed": say it once.
    let message = message.replacen(" from ", " changed from ", 1);
    (Level::Info, format!("{message} by {actor}"))
}

fn describe_endpoint(event: &EndpointEvent) -> (Level, String) {
    match event {
        EndpointEvent::Added(e) => (
            Level::Info,
            format!(
                "Notification endpoint {} added: {} ({} type(s))",
                e.endpoint_id,
                e.url,
                e.event_types.len()
            ),
        ),
        EndpointEvent::Changed(e) => {
            let mut changed: Vec<String> = Vec::new();
            if let Some(url) = &e.url {
                changed.push(format!("URL now {url}"));
            }
            if let Some(types) = &e.event_types {
                changed.push(format!("types now {}", types.join(", ")));
            }
            if e.description.is_some() {
                changed.push("description".to_owned());
            }
            match e.enabled {
                Some(true) => changed.push("enabled".to_owned()),
                Some(false) => changed.push("paused".to_owned()),
                None => {}
            }
            (
                Level::Info,
                format!(
                    "Notification endpoint {} changed: {}",
                    e.endpoint_id,
                    changed.join("; ")
                ),
            )
        }
        EndpointEvent::SecretRotated(e) => (
            Level::Info,
            format!(
                "Notification endpoint {} signing secret rotated; the previous secret also signs                  until {}",
                e.endpoint_id,
                e.previous_valid_until.format("%Y-%m-%d %H:%M UTC")
            ),
        ),
        EndpointEvent::Disabled(e) => (
            Level::Warn,
            format!(
                "Notification endpoint {} disabled: {}",
                e.endpoint_id, e.reason
            ),
        ),
        EndpointEvent::Removed(e) => (
            Level::Info,
            format!("Notification endpoint {} removed", e.endpoint_id),
        ),
        EndpointEvent::DeliveryResent(e) => (
            Level::Info,
            format!(
                "Notification {} re-sent to endpoint {}",
                e.webhook_id, e.endpoint_id
            ),
        ),
    }
}

/// `12,345`: limits and usage are read by people.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn limit_value(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".to_owned(), thousands)
}

/// What a subscriber pays under `terms`: `free`, `49.00 EUR once`, `10.00 EUR per month`,
/// `0.10 EUR per 1,000 requests`, `10.00 EUR per month + 0.10 EUR per 1,000 requests`.
fn price(terms: &PlanTerms) -> String {
    let base = match terms.interval {
        Some(BillingInterval::Annual) => format!("{} per year", terms.price),
        Some(BillingInterval::Monthly) | None => format!("{} per month", terms.price),
    };
    let usage = terms.unit_pricing.map(|u| {
        let block = Money {
            amount_minor: u.amount_minor,
            currency: terms.price.currency,
        };
        format!("{block} per {} {}", thousands(u.per_units), u.metric)
    });
    match (terms.plan_type, usage) {
        (PlanType::Free, _) => "free".to_owned(),
        (PlanType::OneTime, _) => format!("{} once", terms.price),
        (PlanType::UsageBased, Some(usage)) => usage,
        (PlanType::Hybrid, Some(usage)) => format!("{base} + {usage}"),
        _ => base,
    }
}

/// Only the amounts when nothing but the amounts changed, the whole price otherwise.
fn price_change(from: &PlanTerms, to: &PlanTerms) -> String {
    let same_shape = from.plan_type == to.plan_type
        && from.interval == to.interval
        && from.unit_pricing == to.unit_pricing;
    if same_shape {
        format!("from {} to {}", from.price, to.price)
    } else {
        format!("from {} to {}", price(from), price(to))
    }
}

fn describe_plan(event: &PlanEvent, code: Option<&str>) -> (Level, String) {
    let plan =
        |code: Option<&str>| code.map_or_else(|| "Plan".to_owned(), |c| format!("Plan `{c}`"));
    match event {
        PlanEvent::Created(e) => (
            Level::Info,
            format!(
                "{} created: {}, {} (version {})",
                plan(Some(&e.code)),
                e.terms.plan_type,
                price(&PlanTerms::from(e.terms)),
                e.version
            ),
        ),
        PlanEvent::DetailsChanged(e) => {
            let mut changed: Vec<String> = Vec::new();
            if e.name.is_some() {
                changed.push("name".into());
            }
            if e.description.is_some() {
                changed.push("description".into());
            }
            if e.features.is_some() {
                changed.push("features".into());
            }
            for (limit, value) in &e.limits_raised {
                changed.push(format!("{limit} raised to {}", limit_value(*value)));
            }
            (
                Level::Info,
                format!("{} details changed: {}", plan(code), changed.join(", ")),
            )
        }
        PlanEvent::ReductionAnnounced(e) => {
            let mut reduced: Vec<String> = Vec::new();
            if !e.features_removed.is_empty() {
                reduced.push(format!(
                    "features removed: {}",
                    e.features_removed.join(", ")
                ));
            }
            for (limit, change) in &e.limits_lowered {
                reduced.push(format!(
                    "{limit} lowered from {} to {}",
                    limit_value(change.from),
                    thousands(change.to)
                ));
            }
            (
                Level::Warn,
                format!(
                    "{} reduced ({}); existing subscribers affected from {}",
                    plan(code),
                    reduced.join("; "),
                    e.effective_at.format("%Y-%m-%d")
                ),
            )
        }
        PlanEvent::Repriced(e) => (
            Level::Info,
            format!(
                "{} price changed {} (version {})",
                plan(code),
                price_change(&e.previous_terms.into(), &e.terms.into()),
                e.version
            ),
        ),
        PlanEvent::StatusChanged(e) => (
            Level::Info,
            format!(
                "{} is now {} (was {}; {} subscriber(s))",
                plan(code),
                e.to.as_str(),
                e.from.as_str(),
                e.subscribers
            ),
        ),
        PlanEvent::Deleted(e) => (Level::Warn, format!("{} deleted", plan(Some(&e.code)))),
    }
}

fn trigger_text(trigger: ChangeTrigger) -> &'static str {
    match trigger {
        ChangeTrigger::Registration => "registration",
        ChangeTrigger::SelfServe => "self-serve",
        ChangeTrigger::Admin => "admin",
        ChangeTrigger::LimitReached => "after reaching a usage limit",
    }
}

fn plan_name(plan: &StoredPlanRef) -> String {
    format!("`{}`", plan.code)
}

fn describe_subscription(event: &SubscriptionEvent, hub: &str) -> (Level, String) {
    match event {
        SubscriptionEvent::Started(e) => (
            Level::Info,
            format!(
                "Installation{hub} started on plan {} at {} ({} registration, {})",
                plan_name(&e.plan),
                price(&PlanTerms::from(e.plan.terms)),
                if e.started_paid { "paid" } else { "free" },
                trigger_text(e.trigger.into())
            ),
        ),
        SubscriptionEvent::PlanChanged(e) => {
            let direction = match ChangeDirection::from(e.direction) {
                ChangeDirection::Upgrade => "upgrade",
                ChangeDirection::Downgrade => "downgrade",
                ChangeDirection::Lateral => "same price",
            };
            (
                Level::Info,
                format!(
                    "Installation{hub} moved from {} to {} ({direction} to {}, {})",
                    plan_name(&e.from),
                    plan_name(&e.to),
                    price(&PlanTerms::from(e.to.terms)),
                    trigger_text(e.trigger.into())
                ),
            )
        }
        SubscriptionEvent::Renewed(e) => (
            Level::Info,
            format!(
                "Subscription{hub} to {} renewed until {} at {}{}",
                plan_name(&e.plan),
                e.renews_at.format("%Y-%m-%d"),
                price(&PlanTerms::from(e.plan.terms)),
                if e.from_version == e.plan.version {
                    format!(" (version {})", e.plan.version)
                } else {
                    format!(" (version {} to {})", e.from_version, e.plan.version)
                }
            ),
        ),
        SubscriptionEvent::UsageLimitReached(e) => (
            Level::Warn,
            format!(
                "Usage limit reached{hub}: {} {}/{} on plan `{}` ({}){}",
                e.limit,
                thousands(e.used),
                thousands(e.limit_value),
                e.plan_code,
                e.period,
                e.offer
                    .as_ref()
                    .map_or_else(String::new, |o| format!("; upgrade offer: `{}`", o.code))
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use hubkeeper_domain::plan::{
        Currency, PlanId, PlanRepriced, StoredLimitKind, UnitPricing, UsageMetric,
    };
    use hubkeeper_domain::subscription::{
        StoredChangeDirection, StoredChangeTrigger, StoredPlanOffer, SubscriptionPlanChanged,
        UsageLimitReached,
    };
    use hubkeeper_domain::InstallationId;

    fn eur(minor: i64) -> Money {
        Money {
            amount_minor: minor,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn recurring(minor: i64) -> PlanTerms {
        PlanTerms {
            plan_type: PlanType::Recurring,
            interval: Some(BillingInterval::Monthly),
            price: eur(minor),
            unit_pricing: None,
        }
    }

    fn free() -> PlanTerms {
        PlanTerms {
            plan_type: PlanType::Free,
            interval: None,
            price: eur(0),
            unit_pricing: None,
        }
    }

    fn plan_ref(code: &str, terms: PlanTerms) -> StoredPlanRef {
        StoredPlanRef {
            plan_id: PlanId::new(),
            code: code.into(),
            version: 1,
            terms: terms.into(),
        }
    }

    fn at() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap()
    }

    fn line(decoded: DomainEvent, context: Context<'_>) -> (Level, String) {
        let event = ProjectedEvent {
            global_position: 1,
            tx_id: 1,
            aggregate_type: "plan".into(),
            aggregate_id: "p".into(),
            sequence: 2,
            event_type: "X".into(),
            event_version: "1.0".into(),
            stored_version: "1.0".into(),
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            recorded_at: at(),
        };
        describe(&event, &decoded, context)
    }

    #[test]
    fn a_repricing_names_the_plan_both_prices_and_the_version() {
        let repriced = DomainEvent::Plan(PlanEvent::Repriced(PlanRepriced {
            plan_id: PlanId::new(),
            previous_version: 2,
            version: 3,
            previous_terms: recurring(1000).into(),
            terms: recurring(1200).into(),
            repriced_at: at(),
        }));
        let context = Context {
            hub_id: None,
            plan_code: Some("pro"),
        };
        assert_eq!(
            line(repriced, context),
            (
                Level::Info,
                "Plan `pro` price changed from 10.00 EUR to 12.00 EUR (version 3)".to_owned()
            )
        );
    }

    #[test]
    fn a_plan_change_names_both_plans_and_the_trigger() {
        let changed =
            DomainEvent::Subscription(SubscriptionEvent::PlanChanged(SubscriptionPlanChanged {
                installation_id: InstallationId::from_uuid(uuid::Uuid::nil()),
                from: plan_ref("free", free()),
                to: plan_ref("pro", recurring(1000)),
                direction: StoredChangeDirection::Upgrade,
                amount: eur(1000).into(),
                trigger: StoredChangeTrigger::Admin,
                changed_at: at(),
                renews_at: None,
            }));
        let (level, message) = line(
            changed,
            Context {
                hub_id: Some(42),
                plan_code: None,
            },
        );
        assert_eq!(level, Level::Info);
        assert_eq!(
            message,
            "Installation (hub 42) moved from `free` to `pro` (upgrade to 10.00 EUR per month, admin)"
        );
    }

    #[test]
    fn a_reached_limit_is_a_warning_with_usage_against_the_limit() {
        let reached =
            DomainEvent::Subscription(SubscriptionEvent::UsageLimitReached(UsageLimitReached {
                installation_id: InstallationId::from_uuid(uuid::Uuid::nil()),
                plan_id: PlanId::new(),
                plan_code: "starter".into(),
                limit: StoredLimitKind::RequestsPerMonth,
                limit_value: 10_000,
                used: 10_000,
                period: "2026-03".into(),
                offer: Some(StoredPlanOffer {
                    plan_id: PlanId::new(),
                    code: "pro".into(),
                }),
                reached_at: at(),
            }));
        assert_eq!(
            line(reached, Context::default()),
            (
                Level::Warn,
                "Usage limit reached: requests_per_month 10,000/10,000 on plan `starter` \
                 (2026-03); upgrade offer: `pro`"
                    .to_owned()
            )
        );
    }

    #[test]
    fn prices_read_like_prices() {
        assert_eq!(price(&free()), "free");
        assert_eq!(price(&recurring(4900)), "49.00 EUR per month");
        let hybrid = PlanTerms {
            plan_type: PlanType::Hybrid,
            interval: Some(BillingInterval::Annual),
            price: eur(100_000),
            unit_pricing: Some(UnitPricing {
                amount_minor: 10,
                per_units: 1000,
                metric: UsageMetric::Requests,
            }),
        };
        assert_eq!(
            price(&hybrid),
            "1000.00 EUR per year + 0.10 EUR per 1,000 requests"
        );
        // A change of shape shows whole prices, not just amounts.
        assert_eq!(
            price_change(&recurring(1000), &hybrid),
            "from 10.00 EUR per month to 1000.00 EUR per year + 0.10 EUR per 1,000 requests"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
