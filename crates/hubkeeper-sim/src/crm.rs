//! A sliver of the CRM API: enough for a client to prove its tokens work, to hit expired-token and
//! missing-scope errors, and to run into the per-account rate limit.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::oauth::{expired_error, form_map};
use crate::respond::{api_error, rate_limit_error, with_meta, LogMeta};
use crate::state::{AccessCheck, RateDecision, SimState};
use crate::tokens::TokenHash;

const CONTACTS_SCOPE: &str = "crm.objects.contacts.read";
/// Fake contacts per account: enough for two pages at the default page size of 10.
const CONTACTS_PER_ACCOUNT: u64 = 25;

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn rate_headers(response: &mut Response, decision: &RateDecision, retry_after: bool) {
    let h = response.headers_mut();
    let pairs = [
        ("x-hubspot-ratelimit-max", decision.max.to_string()),
        (
            "x-hubspot-ratelimit-remaining",
            decision.remaining.to_string(),
        ),
        (
            "x-hubspot-ratelimit-interval-milliseconds",
            decision.window.as_millis().to_string(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if retry_after && !decision.allowed {
        let secs = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
    }
}

fn unauthenticated() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        "INVALID_AUTHENTICATION",
    )
}

fn missing_scope() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": crate::tokens::correlation_id(),
            "errors": [{
                "message": "One or more of the following scopes are required.",
                "context": { "requiredGranularScopes": [CONTACTS_SCOPE] },
            }],
            "category": "MISSING_SCOPES",
        })),
    )
        .into_response()
}

/// `GET /crm/v3/objects/contacts`.
pub(crate) async fn list_contacts(
    State(state): State<SimState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = Instant::now();
    let Some(token) = bearer(&headers) else {
        return unauthenticated();
    };
    let hash = TokenHash::of(token);
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let mut store = state.lock();
    let (key, scopes) = match store.check_access_token(&hash, now) {
        AccessCheck::Live(rec) => (rec.key.clone(), rec.scopes.clone()),
        AccessCheck::Expired { rec, ago } => {
            let key = rec.key.clone();
            store
                .counters
                .bump(Some(key.hub_id), Some(&key.client_id), |c| {
                    c.crm_calls += 1;
                    c.crm_calls_expired_token += 1;
                });
            meta.hub_id = Some(key.hub_id);
            meta.client_id = Some(key.client_id);
            return with_meta(expired_error(ago), meta);
        }
        AccessCheck::Dead(rec) => {
            let key = rec.key.clone();
            store
                .counters
                .bump(Some(key.hub_id), Some(&key.client_id), |c| {
                    c.crm_calls += 1;
                    c.crm_calls_invalid_token += 1;
                });
            meta.hub_id = Some(key.hub_id);
            meta.client_id = Some(key.client_id);
            return with_meta(unauthenticated(), meta);
        }
        AccessCheck::Unknown => {
            store
                .counters
                .bump(None, None, |c| c.crm_calls_invalid_token += 1);
            return with_meta(unauthenticated(), meta);
        }
    };
    meta.hub_id = Some(key.hub_id);
    meta.client_id = Some(key.client_id.clone());
    store
        .counters
        .bump(Some(key.hub_id), Some(&key.client_id), |c| c.crm_calls += 1);
    let decision = store.rate_check(key.hub_id, now);
    let retry_after = store.settings.rate_limit_retry_after;
    let mut response = if !decision.allowed {
        store
            .counters
            .bump(Some(key.hub_id), Some(&key.client_id), |c| {
                c.rate_limited += 1
            });
        rate_limit_error()
    } else if !scopes.iter().any(|s| s == CONTACTS_SCOPE) {
        missing_scope()
    } else {
        let params = form_map(query.unwrap_or_default().as_bytes()).unwrap_or_default();
        Json(contacts_page(state.base_url(), key.hub_id, &params)).into_response()
    };
    drop(store);
    rate_headers(&mut response, &decision, retry_after);
    with_meta(response, meta)
}

const FIRST_NAMES: [&str; 10] = [
    "Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia",
];
const LAST_NAMES: [&str; 10] = [
    "Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie", "Allen",
    "Thompson", "Perlman",
];

/// A deterministic page of contacts, so repeated calls (and tests) see stable data.
fn contacts_page(base_url: &str, hub_id: u64, params: &HashMap<String, String>) -> Value {
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after = params
        .get("after")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = Utc
        .with_ymd_and_hms(2024, 1, 15, 9, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let end = (after + limit).min(CONTACTS_PER_ACCOUNT);
    let results: Vec<Value> = (after..end)
        .map(|i| {
            let id = hub_id.wrapping_mul(1000).wrapping_add(i + 1);
            let first = FIRST_NAMES[(i % 10) as usize];
            let last = LAST_NAMES[((i / 10 + i) % 10) as usize];
            let created = (epoch + ChronoDuration::hours(i as i64)).to_rfc3339();
            json!({
                "id": id.to_string(),
                "properties": {
                    "createdate": created,
                    "email": format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase()),
                    "firstname": first,
                    "lastname": last,
                    "hs_object_id": id.to_string(),
                    "lastmodifieddate": created,
                },
                "createdAt": created,
                "updatedAt": created,
                "archived": false,
            })
        })
        .collect();
    let mut body = json!({ "results": results });
    if end < CONTACTS_PER_ACCOUNT {
        body["paging"] = json!({
            "next": {
                "after": end.to_string(),
                "link": format!("{base_url}/crm/v3/objects/contacts?after={end}&limit={limit}"),
            }
        });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_all_contacts() {
        let mut params = HashMap::new();
        params.insert("limit".to_string(), "10".to_string());
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let page = contacts_page("http://sim", 7, &params);
            seen += page["results"].as_array().map_or(0, Vec::len);
            pages += 1;
            match page["paging"]["next"]["after"].as_str() {
                Some(after) => {
                    params.insert("after".to_string(), after.to_string());
                }
                None => break,
            }
        }
        assert_eq!(seen as u64, CONTACTS_PER_ACCOUNT);
        assert_eq!(pages, 3);
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
