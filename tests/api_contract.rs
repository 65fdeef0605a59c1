//! The API keeps its own contract: what `/openapi.json` says is what the server does.
//!
//! - `generated_requests_for_every_operation_hold_to_the_served_document` runs schemathesis
//!   (installed by scripts/bootstrap.sh) against a live server with the document it serves: for
//!   every operation, valid and invalid input, no 5xx, no undocumented status or content type,
//!   every response in its documented schema, every invalid input refused. Schema-valid requests
//!   may still be refused with a 400 `validation_failed` (the document cannot express every rule
//!   of the domain: a redirect URI on https, a known currency), so that check is the one left
//!   out.
//! - `framework_rejections_parameters_and_request_ids_follow_the_contract` checks by hand the
//!   classes of defects that a generated run found before: `text/plain` rejections, empty or
//!   repeated parameters silently read as absent, a field whose type differs from the document,
//!   an export that broke midway on a bad filter, and client request ids taken as they came.

#[path = "auth_support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use hubkeeper_api::auth::Role;
use serde_json::{json, Value};
use support::{expect_json_error, http, Server};

/// Examples per operation and phase: enough to reach every documented parameter and body
/// field with valid and invalid values, small enough for a few minutes on two cores.
const DEFAULT_EXAMPLES: &str = "20";
/// A fixed seed makes a failure reproducible; `HK_CONTRACT_SEED` explores others.
const DEFAULT_SEED: &str = "20261206";

fn master_key() -> String {
    use base64::Engine;
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

/// A port nothing listens on: HubSpot calls (the self-test) fail at once instead of waiting
/// for the internet.
fn closed_port_url() -> String {
    let port = hubkeeper_testkit::free_port();
    format!("http://127.0.0.1:{port}/")
}

async fn contract_server() -> Server {
    let hubspot = closed_port_url();
    Server::api(&[
        ("HK_MASTER_KEYS", &master_key()),
        ("HK_HUBSPOT_API_URL", &hubspot),
        ("HK_HUBSPOT_APP_URL", &hubspot),
    ])
    .await
}

/// An app, so the event history and the lists have something to show and check.
async fn register_app(server: &Server, admin: &str, request_id: &str) -> Value {
    let response = http()
        .post(server.url("/v1/apps"))
        .bearer_auth(admin)
        .header("x-request-id", request_id)
        .json(&json!({
            "label": "Contract app",
            "environment": "development",
            "client_id": "12345678-abcd-ef01-2345-6789abcdef01",
            "client_secret": "contract-secret-0001",
            "redirect_uri": "https://contract.example/oauth/callback",
            "scopes": "oauth crm.objects.contacts.read"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the app is registered");
    response.json().await.unwrap()
}

fn schemathesis() -> PathBuf {
    let st = hubkeeper_testkit::tools_dir()
        .map(|tools| tools.join("schemathesis/bin/st"))
        .filter(|st| st.exists());
    st.unwrap_or_else(|| {
        panic!("schemathesis is not installed: run scripts/bootstrap.sh (it installs it into .hubkeeper/tools/schemathesis)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_for_every_operation_hold_to_the_served_document() {
    let st = schemathesis();
    let server = contract_server().await;
    let admin = server.key(Role::Admin).await;
    register_app(&server, &admin, "contract-seed").await;
    let examples =
        std::env::var("HK_CONTRACT_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.into());
    let seed = std::env::var("HK_CONTRACT_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let work = server.env.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    // The live activity stream never ends by itself: each generated request reads what the
    // stream sends within two seconds (its first rows), then moves on.
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\ninclude-path = \"/v1/activity/stream\"\nrequest-timeout = 2\n",
    )
    .unwrap();
    let schema = server.url("/openapi.json");
    let auth = format!("Authorization: Bearer {admin}");
    let started = Instant::now();
    let run = move || {
        let (st, work, config, schema, auth, examples, seed) = (
            st.clone(),
            work.clone(),
            config.clone(),
            schema.clone(),
            auth.clone(),
            examples.clone(),
            seed.clone(),
        );
        // Blocking on purpose: the run takes minutes and owns this test; the server is another
        // process.
        tokio::task::spawn_blocking(move || {
            Command::new(st)
                .current_dir(&work)
                .env("NO_COLOR", "1")
                .arg("--config-file")
                .arg(&config)
                .args([
                    "run",
                    &schema,
                    "--header",
                    &auth,
                    "--checks",
                    "all",
                    "--exclude-checks",
                    "positive_data_acceptance",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                    "--max-examples",
                    &examples,
                    "--seed",
                    &seed,
                    "--workers",
                    "2",
                    "--request-timeout",
                    "30",
                    "--no-color",
                    "--output-truncate",
                    "true",
                ])
                .output()
                .expect("run schemathesis")
        })
    };
    let mut output = run().await.unwrap();
    let mut report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() && only_the_tool_crashed(&report) {
        eprintln!(
            "schemathesis crashed inside itself, with no check failed: running it again with the \
             same seed:\n{}",
            summary(&report)
        );
        output = run().await.unwrap();
        report = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!(
        "schemathesis finished in {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        summary(&report)
    );
    assert!(
        output.status.success(),
        "schemathesis found contract violations (seed {}):\n{report}",
        std::env::var("HK_CONTRACT_SEED").unwrap_or_else(|_| DEFAULT_SEED.into())
    );
    // The run must really have exercised the API: every operation of the document.
    let figure = |label: &str| {
        report
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let tested: u32 = figure("Tested:").parse().unwrap_or(0);
    let total: u32 = figure("Operations:")
        .rsplit('/')
        .next()
        .and_then(|t| t.trim().trim_end_matches("total").trim().parse().ok())
        .unwrap_or(u32::MAX);
    assert!(
        tested == total && total >= 50,
        "{tested} of {total} operations tested:\n{report}"
    );
    assert!(
        server_is_alive(&server).await,
        "the server survived the run"
    );
}

/// The part of schemathesis's report after its summary header.
/// Whether a failed run's only verdict is schemathesis crashing inside itself: no check failed
/// (no "Failures:" section) and every error group is "Runtime Error", its name for an exception
/// it cannot classify (one seen: CPython 3.11's "AST constructor recursion depth mismatch" while
/// hypothesis described a filter). Such a run says nothing about the API; a server that failed
/// requests, hung or went away shows as failed checks or as other error groups ("Network Error",
/// "Server Unavailable"), which are not retried.
fn only_the_tool_crashed(report: &str) -> bool {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    if lines.contains(&"Failures:") {
        return false;
    }
    let Some(start) = lines.iter().position(|line| *line == "Errors:") else {
        return false;
    };
    let groups: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|line| !line.is_empty())
        .copied()
        .collect();
    !groups.is_empty()
        && groups.iter().all(|group| {
            group
                .trim_start_matches('\u{1f6ab}')
                .trim_start()
                .starts_with("Runtime Error:")
        })
}

#[test]
fn only_a_crash_of_the_tool_itself_is_run_again() {
    let crashed = "Tested: 88\n\nErrors:\n  \u{1f6ab} Runtime Error: 1\n\nWarnings:\n  x\n";
    assert!(only_the_tool_crashed(crashed));
    let failed =
        "Failures:\n  \u{274c} Server error: 1\n\nErrors:\n  \u{1f6ab} Runtime Error: 1\n\n";
    assert!(
        !only_the_tool_crashed(failed),
        "a failed check is a verdict"
    );
    let unreachable = "Errors:\n  \u{1f6ab} Runtime Error: 1\n  \u{1f6ab} Network Error: 3\n\n";
    assert!(
        !only_the_tool_crashed(unreachable),
        "a server that went away"
    );
    assert!(!only_the_tool_crashed("Tested: 88\n"), "no error at all");
}

fn summary(report: &str) -> &str {
    report.find("SUMMARY").map_or(report, |at| &report[at..])
}

async fn server_is_alive(server: &Server) -> bool {
    matches!(http().get(server.url("/healthz")).send().await, Ok(r) if r.status() == 200)
}

/// The JSON type name of a value, as JSON Schema spells it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `value` has one of the types the schema allows.
fn has_documented_type(schema: &Value, value: &Value) -> bool {
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    let actual = json_type(value);
    allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"))
}

async fn get(server: &Server, key: &str, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_rejections_parameters_and_request_ids_follow_the_contract() {
    let server = contract_server().await;
    let admin = server.key(Role::Admin).await;
    register_app(&server, &admin, "contract-request-7").await;

    // The framework's own rejections are the JSON error shape, with the parameter named.
    for (path, parameter) in [
        ("/v1/events?limit=1&limit=2", "limit"),
        ("/v1/events?limit=lots", "limit"),
        ("/v1/activity/stream?after=x", "after"),
        (
            "/v1/installations/0190c2a8-7b6e-7cc1-9d5e-3a1f2b4c5d6e/token?min_validity_secs=soon",
            "min_validity_secs",
        ),
    ] {
        let body = expect_json_error(get(&server, &admin, path).await, 400, path).await;
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    // Empty parameters are refused, not read as absent.
    for (path, parameter) in [
        ("/v1/events?to=", "to"),
        ("/v1/apps?include_deleted=", "include_deleted"),
        ("/v1/installations?q=", "q"),
        ("/v1/billing/overview?installation_id=", "installation_id"),
    ] {
        let body = expect_json_error(get(&server, &admin, path).await, 400, path).await;
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    let response = http()
        .delete(server.url("/v1/events"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    let body = expect_json_error(response, 405, "a method the route does not have").await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    expect_json_error(
        get(&server, &admin, "/v1/no-such-thing").await,
        404,
        "unknown route",
    )
    .await;
    let oversized = http()
        .post(server.url("/v1/plans"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    expect_json_error(oversized, 413, "a body over the limit").await;
    let wrong_type = http()
        .post(server.url("/v1/plans"))
        .bearer_auth(&admin)
        .json(&json!({ "code": 5 }))
        .send()
        .await
        .unwrap();
    expect_json_error(wrong_type, 400, "a body of the wrong shape").await;
    let not_json = http()
        .post(server.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    expect_json_error(not_json, 400, "a body that is not JSON").await;

    // Every field of an event has the type the served document gives it.
    let doc: Value = http()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["AuditEvent"];
    let page: Value = get(&server, &admin, "/v1/events?limit=5")
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(
        !items.is_empty(),
        "the app's registration is in the history"
    );
    for item in items {
        for (field, field_schema) in schema["properties"].as_object().unwrap() {
            if let Some(value) = item.get(field) {
                assert!(
                    has_documented_type(field_schema, value),
                    "AuditEvent.{field} is documented as {} but was {value}",
                    field_schema["type"]
                );
            }
        }
        for field in schema["required"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            assert!(
                item.get(field).is_some(),
                "AuditEvent.{field} is required: {item}"
            );
        }
    }
    // The position is the cursor clients resume from.
    let first = &items[0];
    let resumed: Value = get(
        &server,
        &admin,
        &format!("/v1/events?after={}", first["position"].as_str().unwrap()),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(resumed["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["position"] != first["position"]));

    // The export refuses a bad filter before streaming: a JSON 400, never a 200 that breaks.
    for (path, parameter) in [
        ("/v1/events/export?aggregate_type=app%00x", "aggregate_type"),
        ("/v1/events/export?event_type=%01", "event_type"),
        ("/v1/events/export?from=yesterday", "from"),
        ("/v1/events/export?after=12", "after"),
        (
            "/v1/events/export?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
        ),
        ("/v1/events/export?limit=10", "limit"),
    ] {
        let body = expect_json_error(get(&server, &admin, path).await, 400, path).await;
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    let export = get(&server, &admin, "/v1/events/export").await;
    assert_eq!(export.status(), 200);
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= items.len(), "the export holds the history");
    assert!(lines.iter().any(|e| e["event_type"] == "AppRegistered"));

    // Request ids: a plain one is kept (and recorded with the events it caused), anything else
    // is replaced.
    let recorded = lines
        .iter()
        .any(|e| e["metadata"]["request_id"] == "contract-request-7");
    assert!(recorded, "the client's request id is in the event metadata");
    let well_formed = |id: &str| {
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    for (sent, kept) in [
        ("abc-123-XYZ", true),
        ("has spaces in it", false),
        ("under_score", false),
        ("<script>alert(1)</script>", false),
        (&"x".repeat(65) as &str, false),
    ] {
        let response = http()
            .get(server.url("/healthz"))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(echoed == sent, kept, "{sent:?} -> {echoed:?}");
        assert!(well_formed(&echoed), "{echoed:?}");
    }
    assert!(server_is_alive(&server).await, "the server is still up");
}
