//! The Prometheus alert rules parse (`promtool check rules`) and behave as intended on
//! synthetic series (`promtool test rules`, deploy/prometheus/alerts_test.yml). promtool comes
//! from Debian's `prometheus` package; scripts/bootstrap.sh installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found: run scripts/bootstrap.sh (installs Debian's prometheus package)"
        )
    })
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn run(args: &[&str]) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_parse_and_fire_on_the_series_they_are_meant_for() {
    let checked = run(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
    let tested = run(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yml")).expect("alerts.yml");
    let docs = std::fs::read_to_string(rules_dir().join("../../docs/operations.md"))
        .expect("docs/operations.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 14, "{alerts:?}");
    for alert in alerts {
        assert!(
            docs.contains(&format!("### {alert}")),
            "docs/operations.md has no section for {alert}"
        );
        assert!(
            rules.contains(&format!("docs/operations.md#{}", alert.to_lowercase())),
            "{alert} has no runbook link"
        );
    }
}
