//! The integration self-test passes against the HubSpot simulator (through the API and the
//! CLI) and, when HubSpot is down, fails naming the step and the reason.

#[path = "tokens_support/mod.rs"]
mod support;

use std::process::Command;

use hubkeeper_sim::{FaultEndpoint, FaultMode, FaultRule, SimConfig};
use hubkeeper_testkit::{free_port, hubkeeper_binary, SecretKind};
use serde_json::Value;
use support::Harness;

const STEPS: [&str; 6] = [
    "database_schema",
    "oauth_initiation",
    "oauth_callback",
    "token_exchange_and_refresh",
    "hubspot_api",
    "rate_limit_enforcement",
];

fn cli(env: &[(String, String)]) -> (bool, String) {
    let mut command = Command::new(hubkeeper_binary());
    command.args(["selftest"]);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run hubkeeper selftest");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_self_test_passes_against_the_simulator_and_names_the_failing_step_when_hubspot_is_down(
) {
    let mut h = Harness::start(SimConfig::default()).await;
    // The self-test sends limit + 1 requests from one address: the harness's limit (10,000,
    // so installs are never limited) took longer than the window on a loaded machine.
    let api = h
        .spawn_api("api", &[("HK_OAUTH_RATE_LIMIT_MAX", "50")])
        .await;
    h.register_account(40_000_001).await;
    h.register_app(api, "secret-0123456789abcdef", "secret-0123456789abcdef")
        .await;

    // Through the API (the Settings page's button).
    let (status, report) = h.post(api, "/v1/selftest", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["simulator"], true);
    let names: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, STEPS);
    for name in STEPS {
        let s = step(&report, name);
        assert_eq!(s["status"], "passed", "{name}: {s}");
        assert!(s["duration_ms"].is_u64());
        assert!(!s["detail"].as_str().unwrap_or_default().is_empty());
    }
    let (status, last) = h
        .admin(
            axum::http::Method::GET,
            &format!("{}/v1/selftest", h.api(api)),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(last["last"]["passed"], true, "the report is recorded");
    // Nothing was installed: the self-test changes no tenant data.
    let installs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'InstallationConnected'",
    )
    .fetch_one(&h.pool)
    .await
    .expect("count");
    assert_eq!(installs, 0);

    // Through the CLI, with the same configuration.
    let env = h.api_env(free_port(), &[("HK_LOG", "warn")]);
    let (ok, text) = cli(&env);
    eprintln!("{text}");
    assert!(ok, "selftest CLI failed:\n{text}");
    assert_eq!(text.matches("PASS").count(), 6, "{text}");

    // HubSpot's endpoints go down (connections dropped): the API run fails at the first step
    // that talks to HubSpot, and says why.
    h.ctl
        .inject_fault(&FaultRule {
            endpoint: FaultEndpoint::Any,
            mode: FaultMode::Down,
            hub_id: None,
            times: None,
        })
        .await
        .expect("fault");
    let (status, report) = h.post(api, "/v1/selftest", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["passed"], false);
    assert_eq!(step(&report, "database_schema")["status"], "passed");
    let initiation = step(&report, "oauth_initiation");
    assert_eq!(initiation["status"], "failed", "{report:#}");
    assert!(
        initiation["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{initiation}"
    );
    assert_eq!(
        step(&report, "token_exchange_and_refresh")["status"],
        "failed"
    );
    assert_eq!(step(&report, "rate_limit_enforcement")["status"], "passed");

    // The simulator is gone altogether (nothing listens): the CLI exits non-zero naming the
    // step and the reason.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = h.api_env(
        free_port(),
        &[
            ("HK_LOG", "warn"),
            ("HK_HUBSPOT_API_URL", &dead),
            ("HK_HUBSPOT_APP_URL", &dead),
        ],
    );
    let (ok, text) = cli(&env);
    eprintln!("{text}");
    assert!(!ok, "the self-test must fail without HubSpot:\n{text}");
    assert!(
        text.contains("self-test failed at step oauth_initiation")
            && text.contains("connection refused"),
        "{text}"
    );
    assert!(text.contains("FAIL token_exchange_and_refresh"), "{text}");

    // The self-test exchanged a code and refreshed real tokens: none of them, nor the app's
    // secret, is stored or logged.
    h.scan_for_leaks(&SecretKind::ALL).await;
}
