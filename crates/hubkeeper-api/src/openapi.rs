//! `/openapi.json`: the admin API described for people and tools, and the access policy the
//! [`crate::policy`] layer enforces (`security` and `x-permission` per operation).
//!
//! The document is hand-written (`crates/hubkeeper-api/openapi.json`) so it reads like
//! documentation; a test reads every `.route(…)` in this crate's sources and fails when a route is
//! missing from the document or the document names a route that does not exist.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The document as shipped in the binary.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Methods an OpenAPI path item can hold (upper case, as `http::Method` spells them).
pub const HTTP_METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

/// The parsed document (`Null` if it failed to parse, which the tests rule out).
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(DOCUMENT).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the embedded OpenAPI document does not parse");
            serde_json::Value::Null
        })
    })
}

async fn serve() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
}

/// Axum writes a catch-all segment as `{*name}`, OpenAPI as `{name}`.
pub fn normalize_path(path: &str) -> String {
    path.replace("{*", "{")
}

/// Every (METHOD, path) operation of an OpenAPI document.
pub fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    let upper = method.to_ascii_uppercase();
                    if HTTP_METHODS.contains(&upper.as_str()) {
                        ops.push((upper, normalize_path(path)));
                    }
                }
            }
        }
    }
    ops.sort();
    ops
}

/// Reads the routes out of this crate's sources; only the coverage test needs it.
#[cfg(test)]
mod route_scanner;

#[cfg(test)]
mod tests {
    use super::route_scanner::routes_in_source;
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }

    fn routes_of_this_crate() -> BTreeSet<(String, String)> {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let all: String = files.iter().map(|(_, s)| s.as_str()).collect();
        let mut routes = BTreeSet::new();
        for (name, src) in &files {
            for route in routes_in_source(src, &all).unwrap_or_else(|e| panic!("{name}: {e}")) {
                routes.insert(route);
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let routes = routes_of_this_crate();
        let documented: BTreeSet<(String, String)> = operations(document()).into_iter().collect();
        // The reader must actually be reading: these routes exist in this crate.
        for known in [
            ("POST", "/auth/login"),
            ("GET", "/healthz"),
            ("GET", "/openapi.json"),
        ] {
            let known = (known.0.to_string(), known.1.to_string());
            assert!(routes.contains(&known), "route reader missed {known:?}");
        }
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from crates/hubkeeper-api/openapi.json: {undocumented:?}"
        );
        let phantom: Vec<_> = documented.difference(&routes).collect();
        assert!(
            phantom.is_empty(),
            "openapi.json documents routes the router does not have: {phantom:?}"
        );
    }

    #[test]
    fn every_operation_states_its_errors_and_a_summary() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if !HTTP_METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                    continue;
                }
                assert!(op.get("summary").is_some(), "{method} {path}: no summary");
                let public = op
                    .get("security")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| s.is_empty());
                if !public {
                    let responses = op["responses"].as_object().unwrap();
                    for code in ["401", "403"] {
                        assert!(
                            responses.contains_key(code),
                            "{method} {path}: no {code} response"
                        );
                    }
                    assert!(
                        op.get("x-permission").is_some(),
                        "{method} {path}: protected but no x-permission"
                    );
                }
            }
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    }

    #[test]
    fn the_route_reader_reads_chains_consts_and_refuses_what_it_cannot_read() {
        let src = r#"
            const CALLBACK: &str = "/oauth/callback";
            Router::new()
                .route("/v1/apps", get(list).post(create))
                .route(
                    "/v1/apps/{id}",
                    routing::get(show).patch(update).delete(remove),
                )
                .route(CALLBACK, get(callback))
                .route("/files/{*path}", get(get_file))
        "#;
        let routes = routes_in_source(src, src).unwrap();
        let expected = [
            ("GET", "/v1/apps"),
            ("POST", "/v1/apps"),
            ("DELETE", "/v1/apps/{id}"),
            ("GET", "/v1/apps/{id}"),
            ("PATCH", "/v1/apps/{id}"),
            ("GET", "/oauth/callback"),
            ("GET", "/files/{path}"),
        ];
        assert_eq!(
            routes,
            expected
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(routes_in_source(r#".route("/x", any(h))"#, "").is_err());
        assert!(routes_in_source(r#".nest("/v1", api())"#, "").is_err());
        assert!(routes_in_source(r#".route(&format!("/x"), get(h))"#, "").is_err());
    }

    #[test]
    fn a_missing_route_is_detected() {
        // What the coverage test does, on a router with one undocumented route.
        let src = r#".route("/auth/login", post(login)).route("/v1/secret-new-thing", post(h))"#;
        let routes: BTreeSet<_> = routes_in_source(src, src).unwrap().into_iter().collect();
        let documented: BTreeSet<_> = operations(document()).into_iter().collect();
        let missing: Vec<_> = routes.difference(&documented).cloned().collect();
        assert_eq!(
            missing,
            vec![("POST".to_string(), "/v1/secret-new-thing".to_string())]
        );
    }
}
