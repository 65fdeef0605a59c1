//! API key management: `POST /v1/keys` (the secret is in this answer only), `GET /v1/keys`
//! (never secrets or hashes), `DELETE /v1/keys/{id}` (revoke).
//!
//! Every creation and revocation is recorded as an event of the key with its actor
//! (`hubkeeper_core::access::AuditLog`). A revoked key stops working at once in every API
//! process: the revoking process drops its verified-key cache and broadcasts an invalidation
//! that every other API process's authenticator follows.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hubkeeper_core::access::{self, KeyListing, Role};
use hubkeeper_core::{Broadcaster, Invalidation};
use hubkeeper_domain::access::{is_key_id, MAX_KEY_NAME_CHARS};
use hubkeeper_domain::AppId;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::params::value;
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    role: String,
    name: String,
    #[serde(default)]
    apps: Vec<String>,
}

/// One key as listed: what it is, who made it, whether it is in use; never its secret or hash.
#[derive(Serialize)]
struct KeyView {
    id: String,
    name: String,
    role: String,
    apps: Vec<String>,
    created_at: DateTime<Utc>,
    created_by: String,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// Dashboard sessions of the key that have not expired.
    open_sessions: i64,
}

impl From<KeyListing> for KeyView {
    fn from(k: KeyListing) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role,
            apps: k.apps,
            created_at: k.created_at,
            created_by: k.created_by,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            open_sessions: k.open_sessions,
        }
    }
}

/// Checks a creation request and returns what to create; every problem named.
fn check_request(body: &CreateKey) -> Result<(Role, String, Vec<AppId>), ApiError> {
    let role: Role = body.role.parse().map_err(ApiError::validation)?;
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::validation("`name` must not be empty"));
    }
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(ApiError::validation(format!(
            "`name` is too long ({} characters; at most {MAX_KEY_NAME_CHARS})",
            name.chars().count()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "`name` must be a single line without control characters",
        ));
    }
    let apps = body
        .apps
        .iter()
        .map(|raw| value::<AppId>(raw))
        .collect::<Result<Vec<_>, _>>()?;
    match role {
        Role::Service if apps.is_empty() => Err(ApiError::validation(
            "a service key needs `apps`: the apps whose tokens it receives (it acts on no other)",
        )),
        Role::Service => Ok((role, name.to_owned(), apps)),
        _ if !apps.is_empty() => Err(ApiError::validation(format!(
            "only service keys are bound to apps; a {} key acts on every app its role allows: \
             leave `apps` out",
            role.as_str()
        ))),
        _ => Ok((role, name.to_owned(), apps)),
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    let (role, name, apps) = check_request(&body)?;
    let key = state
        .audit()
        .create_key(
            state.pool(),
            &name,
            role,
            &apps,
            &request.metadata(caller.actor()),
        )
        .await?;
    let listing = access::list_keys(state.pool())
        .await?
        .into_iter()
        .find(|k| k.id == key.id)
        .ok_or_else(|| ApiError::internal("the new key is not listed"))?;
    let mut answer = serde_json::to_value(KeyView::from(listing))
        .map_err(|e| ApiError::internal(format!("key view: {e}")))?;
    answer["api_key"] = serde_json::Value::String(key.token.expose_secret().to_owned());
    answer["note"] = serde_json::Value::String(
        "this is the only time the key is shown: store it now; it cannot be shown again".into(),
    );
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(answer),
    ))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let keys: Vec<KeyView> = access::list_keys(state.pool())
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    if !is_key_id(&id) {
        return Err(ApiError::invalid_parameter(
            "id",
            format!(
                "`{}` is not a key id (ak followed by 12 hex digits)",
                id.chars().take(40).collect::<String>()
            ),
        ));
    }
    let keys = access::list_keys(state.pool()).await?;
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(ApiError::not_found(format!("no key {id}")));
    };
    if key.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "revoked",
            format!("key {id} is already revoked"),
        ));
    }
    let other_admins = keys
        .iter()
        .filter(|k| k.id != id && k.role == Role::Admin.as_str() && k.revoked_at.is_none())
        .count();
    if key.role == Role::Admin.as_str() && other_admins == 0 {
        return Err(ApiError::conflict(
            "last_admin_key",
            format!(
                "key {id} is the last active admin key: create another admin key before revoking \
                 it, or nobody could manage keys any more"
            ),
        ));
    }
    let revoked = state
        .audit()
        .revoke_key(state.pool(), &id, &request.metadata(caller.actor()))
        .await?;
    if !revoked {
        return Err(ApiError::conflict(
            "revoked",
            format!("key {id} is already revoked"),
        ));
    }
    // This process at once; the others as soon as they hear the broadcast (and within the
    // cache's lifetime should the message be lost).
    state.auth().clear_cache();
    Broadcaster::new(state.nats().clone())
        .publish(&Invalidation::ApiKey { key_id: id.clone() })
        .await;
    let revoked_at = access::list_keys(state.pool())
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .and_then(|k| k.revoked_at);
    Ok(Json(serde_json::json!({
        "id": id,
        "revoked_at": revoked_at,
        "message": "the key and its dashboard sessions stopped working in every API process",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(role: &str, name: &str, apps: &[&str]) -> CreateKey {
        CreateKey {
            role: role.into(),
            name: name.into(),
            apps: apps.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    const APP: &str = "0190a3c4-0000-7000-8000-000000000001";

    #[test]
    fn creation_requests_are_checked_before_anything_is_created() {
        let refused = |r: CreateKey| check_request(&r).err().map(|e| e.message().to_owned());
        assert!(
            refused(request("root", "x", &[])).is_some_and(|m| m.contains("unknown role `root`"))
        );
        assert!(refused(request("service", "ci", &[])).is_some_and(|m| m.contains("`apps`")));
        assert!(refused(request("admin", "me", &[APP]))
            .is_some_and(|m| m.contains("only service keys")));
        assert!(refused(request("admin", "  ", &[])).is_some_and(|m| m.contains("empty")));
        assert!(refused(request("admin", &"n".repeat(101), &[]))
            .is_some_and(|m| m.contains("too long")));
        assert!(refused(request("service", "ci", &["nope"])).is_some_and(|m| m.contains("nope")));
        let (role, name, apps) = check_request(&request("service", " ci-bot ", &[APP])).unwrap();
        assert_eq!(
            (role, name.as_str(), apps.len()),
            (Role::Service, "ci-bot", 1)
        );
    }
}
