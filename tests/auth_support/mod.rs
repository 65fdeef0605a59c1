//! Shared by the auth_* tests: a `hubkeeper` process on a test Postgres/NATS,
//! API keys of each role, and a small HTTP client that keeps the session cookie by hand (so the
//! tests see exactly what a browser would be sent).

#![allow(dead_code)]

use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_testkit::TestEnv;
use secrecy::ExposeSecret;
use sqlx::PgPool;

/// One `hubkeeper <args>` process serving HTTP on a free port.
pub struct Server {
    pub env: TestEnv,
    pub server: hubkeeper_testkit::Server,
    pub base: String,
    pub port: u16,
    pub pool: PgPool,
}

impl Server {
    /// `hubkeeper api` with `extra` environment on top of the test's servers.
    pub async fn api(extra: &[(&str, &str)]) -> Server {
        Self::start(&["api"], extra).await
    }

    pub async fn start(args: &[&str], extra: &[(&str, &str)]) -> Server {
        let env = TestEnv::start().await;
        let mut vars = env.process_env();
        for (k, v) in extra {
            vars.push((k.to_string(), v.to_string()));
        }
        let server = hubkeeper_testkit::Server::start(
            hubkeeper_testkit::free_port(),
            "hubkeeper",
            args,
            &vars,
            &env.path().join("logs"),
        )
        .await;
        let pool = env.pool();
        Server {
            base: server.base.clone(),
            port: server.port,
            server,
            env,
            pool,
        }
    }

    /// A new key of `role`; returns the token.
    pub async fn key(&self, role: Role) -> String {
        create_key(&self.pool, &format!("test {}", role.as_str()), role, "test")
            .await
            .unwrap()
            .token
            .expose_secret()
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// reqwest without redirects or a cookie store: the tests handle cookies themselves.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A logged-in dashboard session.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
}

pub async fn login(server: &Server, key: &str) -> Session {
    let response = http()
        .post(server.url("/auth/login"))
        .json(&serde_json::json!({ "api_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login with a valid key");
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("login sets a cookie")
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let me: serde_json::Value = response.json().await.unwrap();
    Session {
        cookie,
        csrf: me["csrf_token"].as_str().unwrap().to_string(),
        set_cookie,
    }
}

/// Asserts a JSON error body with the given status; returns the body.
pub async fn expect_json_error(
    response: reqwest::Response,
    status: u16,
    what: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "{what}");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: JSON error expected, got content-type {content_type:?}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{what}: error shape, got {body}"
    );
    body
}

/// Every operation of the served OpenAPI document: (METHOD, path template, operation).
pub async fn operations(server: &Server) -> Vec<(String, String, serde_json::Value)> {
    let doc: serde_json::Value = http()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                ops.push((method, path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// A concrete URL for a path template (ids need only have the right shape).
pub fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let name = &rest[start + 1..end];
        out.push_str(match name {
            "seq" => "1",
            "path" => "x",
            _ => "0190c2a8-7b6e-7cc1-9d5e-3a1f2b4c5d6e",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

pub fn is_public(op: &serde_json::Value) -> bool {
    op["security"].as_array().is_some_and(|s| s.is_empty())
}
