//! `hubkeeper bench` at toy sizes: each scenario that drives the install flow, the proxy or the
//! notifier runs end to end against its own Postgres, NATS and simulator, writes its JSON report
//! with figures from real calls, and ends with one `goal ...` line per goal. Figures are not
//! judged here (speed is measured by the benches, never asserted by tests); what is checked is
//! that the benches still work, since a bench that broke with the code it measures would
//! silently stop reporting.

use std::path::Path;
use std::process::Command;

use hubkeeper_testkit::hubkeeper_binary;
use serde_json::Value;

/// Runs `hubkeeper bench <args>` in a scratch directory; returns (stdout, the JSON report).
fn bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(hubkeeper_binary());
    command.arg("bench").args(args);
    for (key, _) in std::env::vars() {
        if (key.starts_with("HK_") && key != "HK_NATS_SERVER_BIN")
            || key == "DATABASE_URL"
            || key == "NATS_URL"
        {
            command.env_remove(key);
        }
    }
    let out = command
        .env("HK_DATA_DIR", dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .expect("run hubkeeper bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stderr}",
        out.status
    );
    let report = report(&dir.path().join("bench-results"));
    (stdout, report)
}

fn report(dir: &Path) -> Value {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("bench-results written")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one report per run: {files:?}");
    let text = std::fs::read_to_string(files.remove(0)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The run ends with exactly the goals of its JSON, one line each, in order.
fn assert_ends_with_goals(stdout: &str, report: &Value, names: &[&str]) {
    let goals = report["goals"].as_array().expect("goals in the report");
    let listed: Vec<&str> = goals.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "the scenario's goals");
    let lines: Vec<&str> = stdout.lines().collect();
    let tail = &lines[lines.len() - goals.len()..];
    for (line, goal) in tail.iter().zip(goals) {
        let verdict = if goal["met"].as_bool().unwrap() {
            "met"
        } else {
            "not met"
        };
        assert!(
            line.starts_with(&format!("goal {}: ", goal["name"].as_str().unwrap()))
                && line.ends_with(&format!(" {verdict}"))
                && (verdict == "not met" || !line.ends_with(" not met")),
            "line {line:?} for goal {goal}"
        );
    }
}

#[test]
fn proxy_bench_compares_proxied_and_direct_calls() {
    let (stdout, report) = bench(&[
        "proxy",
        "--installations",
        "3",
        "--concurrency",
        "1,2",
        "--seconds",
        "1",
        // Three portals at HubSpot's 110 per 10 s would throttle even a toy run.
        "--portal-limit",
        "100000",
    ]);
    let levels = report["figures"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for level in levels {
        for path in ["proxied", "direct"] {
            assert!(
                level[path]["requests"].as_u64().unwrap() > 0,
                "{path} calls succeeded: {level}"
            );
            assert_eq!(level[path]["errors"].as_u64(), Some(0), "{path}: {level}");
        }
    }
    assert_ends_with_goals(
        &stdout,
        &report,
        &["proxy_added_p50_at_1", "proxy_added_p99_at_1"],
    );
}

#[test]
fn notify_bench_delivers_the_backlog_and_the_steady_events() {
    let (stdout, report) = bench(&[
        "notify",
        "--backlog",
        "40",
        "--rate",
        "10",
        "--seconds",
        "1",
    ]);
    let figures = &report["figures"];
    assert_eq!(figures["backlog"].as_u64(), Some(40));
    assert_eq!(figures["steady_events"].as_u64(), Some(10), "{figures}");
    assert!(figures["deliveries_per_second"].as_f64().unwrap() > 0.0);
    assert!(figures["lag_p99_ms"].as_f64().unwrap() > 0.0, "{figures}");
    assert_ends_with_goals(
        &stdout,
        &report,
        &["notify_deliveries_per_second", "notify_lag_p99"],
    );
}

#[test]
fn token_bench_installs_through_the_flow_and_reports_unmeasured_goals() {
    let (stdout, report) = bench(&[
        "token",
        "--installations",
        "3",
        "--concurrency",
        "1",
        "--seconds",
        "1",
    ]);
    let level = &report["figures"]["levels"][0];
    assert!(level["cached"]["requests"].as_u64().unwrap() > 0, "{level}");
    assert!(
        level["baseline"]["requests"].as_u64().unwrap() > 0,
        "{level}"
    );
    // Neither goal's level (64 and 16 clients) ran: both are reported, unmeasured, not met.
    assert_ends_with_goals(
        &stdout,
        &report,
        &["token_speedup_at_64", "token_p99_at_16"],
    );
    for goal in report["goals"].as_array().unwrap() {
        assert!(goal["figure"].is_null(), "{goal}");
        assert_eq!(goal["met"].as_bool(), Some(false));
    }
    assert!(stdout.contains("goal token_p99_at_16: not measured vs < 2 ms not met"));
}
