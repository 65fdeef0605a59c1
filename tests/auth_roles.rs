//! Who may do what, for every route: the routes come from the served `/openapi.json`, which a
//! unit test keeps equal to the router's routes, so a route added later is covered here without
//! editing this file.

#[path = "auth_support/mod.rs"]
mod support;

use hubkeeper_api::auth::{Permission, Role};
use support::{concrete, expect_json_error, http, is_public, login, operations, Server};

fn permission(op: &serde_json::Value) -> Option<Permission> {
    op["x-permission"]
        .as_str()
        .filter(|p| *p != "authenticated")
        .map(|p| p.parse().unwrap())
}

fn request(
    client: &reqwest::Client,
    server: &Server,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let url = server.url(&concrete(path));
    let builder = client.request(method.parse().unwrap(), url);
    // A plausible body, so nothing but access control can be the reason for a refusal.
    if ["POST", "PATCH", "PUT"].contains(&method) {
        builder.json(&serde_json::json!({ "reason": "access-control test", "label": "x" }))
    } else {
        builder
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_service_keys_cannot_change_anything() {
    let server = Server::api(&[]).await;
    let client = http();
    let ops = operations(&server).await;
    let mutating: Vec<_> = ops
        .iter()
        .filter(|(m, _, op)| m != "GET" && !is_public(op))
        .collect();
    // The enumeration must be real: these mutating routes exist.
    for (method, path) in [
        ("POST", "/v1/apps"),
        ("PATCH", "/v1/apps/{id}"),
        ("DELETE", "/v1/apps/{id}"),
        ("POST", "/v1/installations/{id}/refresh"),
        ("POST", "/v1/installations/{id}/revoke"),
        ("POST", "/v1/installations/{id}/disconnect"),
    ] {
        assert!(
            mutating.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is enumerated"
        );
    }

    let auditor = server.key(Role::Auditor).await;
    let service = server.key(Role::Service).await;
    let operator = server.key(Role::Operator).await;
    let auditor_session = login(&server, &auditor).await;
    let operator_session = login(&server, &operator).await;

    let mut checked = 0;
    for (method, path, op) in &mutating {
        let what = format!("{method} {path}");
        // Auditor, by key and by dashboard session (with a valid CSRF token).
        expect_json_error(
            request(&client, &server, method, path)
                .bearer_auth(&auditor)
                .send()
                .await
                .unwrap(),
            403,
            &format!("auditor key on {what}"),
        )
        .await;
        expect_json_error(
            request(&client, &server, method, path)
                .header("cookie", &auditor_session.cookie)
                .header("x-csrf-token", &auditor_session.csrf)
                .send()
                .await
                .unwrap(),
            403,
            &format!("auditor session on {what}"),
        )
        .await;
        // Service keys only use tokens.
        if permission(op) != Some(Permission::UseTokens) {
            expect_json_error(
                request(&client, &server, method, path)
                    .bearer_auth(&service)
                    .send()
                    .await
                    .unwrap(),
                403,
                &format!("service key on {what}"),
            )
            .await;
        }
        // Operators may operate installations but not administer.
        if permission(op) == Some(Permission::Administer) {
            expect_json_error(
                request(&client, &server, method, path)
                    .header("cookie", &operator_session.cookie)
                    .header("x-csrf-token", &operator_session.csrf)
                    .send()
                    .await
                    .unwrap(),
                403,
                &format!("operator on {what}"),
            )
            .await;
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} mutating routes");

    // Reads: every role but service may read; audit reads need read_audit.
    for (method, path, op) in ops.iter().filter(|(m, _, op)| m == "GET" && !is_public(op)) {
        let what = format!("{method} {path}");
        match permission(op) {
            Some(Permission::UseTokens) => {
                expect_json_error(
                    request(&client, &server, method, path)
                        .bearer_auth(&auditor)
                        .send()
                        .await
                        .unwrap(),
                    403,
                    &format!("auditor on {what}"),
                )
                .await;
            }
            Some(_) => {
                expect_json_error(
                    request(&client, &server, method, path)
                        .bearer_auth(&service)
                        .send()
                        .await
                        .unwrap(),
                    403,
                    &format!("service key on {what}"),
                )
                .await;
            }
            None => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_calls_get_401_json_and_tokens_never_reach_a_browser_session() {
    let server = Server::api(&[]).await;
    let client = http();
    let ops = operations(&server).await;
    let protected: Vec<_> = ops.iter().filter(|(_, _, op)| !is_public(op)).collect();
    assert!(
        protected.len() >= 15,
        "only {} protected routes",
        protected.len()
    );
    let garbage = format!("hk_ak0123456789ab_{}", "y".repeat(43));
    for (method, path, _) in &protected {
        let what = format!("{method} {path}");
        expect_json_error(
            request(&client, &server, method, path)
                .send()
                .await
                .unwrap(),
            401,
            &format!("no credentials on {what}"),
        )
        .await;
        expect_json_error(
            request(&client, &server, method, path)
                .bearer_auth(&garbage)
                .send()
                .await
                .unwrap(),
            401,
            &format!("unknown key on {what}"),
        )
        .await;
        expect_json_error(
            request(&client, &server, method, path)
                .header("authorization", "Basic YWRtaW46YWRtaW4=")
                .send()
                .await
                .unwrap(),
            401,
            &format!("basic auth on {what}"),
        )
        .await;
    }
    // Public routes stay public.
    for path in ["/healthz", "/openapi.json", "/dashboard"] {
        assert_eq!(
            client.get(server.url(path)).send().await.unwrap().status(),
            200
        );
    }

    // Even an admin's dashboard session cannot fetch an access token: only keys can.
    let admin = server.key(Role::Admin).await;
    let session = login(&server, &admin).await;
    let token_path = ops
        .iter()
        .find(|(m, path, op)| {
            m == "GET" && path.ends_with("/token") && permission(op) == Some(Permission::UseTokens)
        })
        .map(|(_, path, _)| path.clone())
        .expect("the token hand-out is documented");
    let body = expect_json_error(
        client
            .get(server.url(&concrete(&token_path)))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap(),
        403,
        "token hand-out to a dashboard session",
    )
    .await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    // Nor an admin key: tokens go only to service keys bound to the installation's app.
    let body = expect_json_error(
        client
            .get(server.url(&concrete(&token_path)))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        403,
        "token hand-out to an admin key",
    )
    .await;
    assert_eq!(body["error"]["reason"], "service_key_required", "{body}");
    // A service key passes the role check and is then judged by its apps: this one is bound
    // to none, and the installation does not exist (404, not a token or a 500).
    let service = server.key(Role::Service).await;
    let by_service = client
        .get(server.url(&concrete(&token_path)))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(by_service.status().as_u16(), 404);
}
