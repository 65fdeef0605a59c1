//! Who may call which route, enforced in one layer before any handler runs.
//!
//! The OpenAPI document ([`crate::openapi`]) is the policy: each operation lists its accepted
//! credentials (`security`: bearer key, session cookie, or none for public routes) and the
//! permission it needs (`x-permission`). Checking here rather than only in handlers means a
//! read-only key is refused before the request body is even parsed, so "an auditor cannot change
//! anything" holds for every documented route whatever its handler does; handlers still call
//! `caller.require(…)` as a second line.
//!
//! A route missing from the document is passed through to its handler (which authenticates with
//! the [`Caller`](crate::auth::Caller) extractor); the route-coverage test keeps that set empty.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{authenticate, AuthMethod, Permission};
use crate::error::ApiError;
use crate::state::AppState;

/// What one operation requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// No credentials needed (login, health, the dashboard's static files, OAuth redirects).
    pub public: bool,
    pub bearer: bool,
    pub session: bool,
    /// `None`: any authenticated caller.
    pub permission: Option<Permission>,
}

/// Rules by (method, path template as registered in the router).
#[derive(Debug, Default)]
pub struct Policy {
    rules: HashMap<(Method, String), Rule>,
}

impl Policy {
    /// Reads the rules out of an OpenAPI document. Operations with an unknown `x-permission`
    /// are an error: a typo must not silently mean "any caller".
    pub fn from_openapi(doc: &serde_json::Value) -> Result<Policy, String> {
        let default_security = doc.get("security");
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or("the document has no paths")?;
        let mut rules = HashMap::new();
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                if !crate::openapi::HTTP_METHODS.contains(&method.as_str()) {
                    continue;
                }
                let security = op
                    .get("security")
                    .or(default_security)
                    .and_then(|s| s.as_array())
                    .ok_or_else(|| format!("{method} {path}: no security requirement"))?;
                let schemes: Vec<&str> = security
                    .iter()
                    .filter_map(|req| req.as_object())
                    .flat_map(|req| req.keys().map(String::as_str))
                    .collect();
                let permission = match op.get("x-permission").and_then(|p| p.as_str()) {
                    // Any authenticated caller, whatever its role.
                    Some("authenticated") => None,
                    Some(name) => Some(
                        name.parse::<Permission>()
                            .map_err(|e| format!("{method} {path}: {e}"))?,
                    ),
                    None => None,
                };
                let rule = Rule {
                    public: security.is_empty(),
                    bearer: schemes.contains(&"bearer"),
                    session: schemes.contains(&"session"),
                    permission,
                };
                rules.insert((method, crate::openapi::normalize_path(path)), rule);
            }
        }
        Ok(Policy { rules })
    }

    pub fn rule(&self, method: &Method, path: &str) -> Option<&Rule> {
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.rules
            .get(&(method.clone(), crate::openapi::normalize_path(path)))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The policy of the embedded document, read once.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| match Policy::from_openapi(crate::openapi::document()) {
        Ok(policy) => policy,
        Err(e) => {
            // The unit tests parse the same document, so this cannot ship; if it did, routes
            // fall back to their handlers' own checks.
            tracing::error!(error = %e, "the embedded OpenAPI document is invalid");
            Policy::default()
        }
    })
}

/// The layer: authenticates and authorizes documented, non-public routes.
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(rule) = policy().rule(req.method(), &path) else {
        tracing::debug!(%path, method = %req.method(), "route not in the OpenAPI document");
        return next.run(req).await;
    };
    if rule.public {
        return next.run(req).await;
    }
    let who = match authenticate(state.auth(), req.method(), req.headers()).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let allowed_method = match who.method {
        AuthMethod::ApiKey => rule.bearer,
        AuthMethod::Session { .. } => rule.session,
    };
    if !allowed_method {
        let how = if rule.bearer {
            "an API key (Authorization: Bearer …)"
        } else {
            "a dashboard session"
        };
        return ApiError::forbidden(format!("this endpoint must be called with {how}"))
            .into_response();
    }
    if let Some(permission) = rule.permission {
        if let Err(e) = who.caller.require(permission) {
            tracing::info!(
                key_id = %who.caller.key_id,
                role = who.caller.role.as_str(),
                %path,
                "refused: role lacks permission"
            );
            return e.into_response();
        }
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_embedded_document_is_a_valid_policy() {
        let policy = Policy::from_openapi(crate::openapi::document()).unwrap();
        assert!(policy.len() > 5);
        let login = policy.rule(&Method::POST, "/auth/login").unwrap();
        assert!(login.public);
        let me = policy.rule(&Method::GET, "/auth/me").unwrap();
        assert!(!me.public && me.bearer && me.session);
    }

    #[test]
    fn rules_come_from_security_and_x_permission() {
        let doc = json!({
            "security": [{"bearer": []}, {"session": []}],
            "paths": {
                "/a/{id}": {
                    "get": {"x-permission": "read"},
                    "post": {"x-permission": "administer", "security": [{"bearer": []}]},
                    "parameters": []
                },
                "/open": {"get": {"security": []}}
            }
        });
        let policy = Policy::from_openapi(&doc).unwrap();
        assert_eq!(policy.len(), 3);
        let get = policy.rule(&Method::GET, "/a/{id}").unwrap();
        assert_eq!(get.permission, Some(Permission::Read));
        assert!(get.bearer && get.session && !get.public);
        assert_eq!(policy.rule(&Method::HEAD, "/a/{id}"), Some(get));
        let post = policy.rule(&Method::POST, "/a/{id}").unwrap();
        assert!(post.bearer && !post.session);
        assert!(policy.rule(&Method::GET, "/open").unwrap().public);
        assert!(policy.rule(&Method::DELETE, "/a/{id}").is_none());
    }

    #[test]
    fn an_unknown_permission_is_an_error_not_an_open_door() {
        let doc = json!({"paths": {"/x": {"post": {"security": [{"bearer": []}], "x-permission": "writ"}}}});
        assert!(Policy::from_openapi(&doc).is_err());
        let doc = json!({"paths": {"/x": {"post": {}}}});
        assert!(Policy::from_openapi(&doc).is_err(), "no security at all");
    }
}
