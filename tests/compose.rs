//! docker-compose.yml as Docker would read it. Docker itself does not run here, but Compose's
//! `config` needs no engine: it interpolates `.env`-style variables, validates the file against
//! the Compose schema and prints the resolved file. scripts/bootstrap.sh installs Compose
//! (Debian's `docker-compose`; `config` here is the same validation `docker compose up` does
//! first). The resolved file (YAML, converted to JSON with the PyYAML Compose itself runs on)
//! is then checked for what a deployment relies on.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `docker-compose config` with `vars` as the only Compose variables; (success, stdout, stderr).
fn compose_config(vars: &[(&str, &str)]) -> (bool, String, String) {
    // A developer's own .env must not decide the outcome: an empty project env file.
    let scratch = tempfile::tempdir().unwrap();
    let empty_env = scratch.path().join("empty.env");
    std::fs::write(&empty_env, "").unwrap();
    let mut command = Command::new("docker-compose");
    command
        .current_dir(root())
        .arg("--env-file")
        .arg(&empty_env)
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("HK_MASTER_KEYS")
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("HK_PUBLIC_URL");
    for (key, value) in vars {
        command.env(key, value);
    }
    let out = command
        .output()
        .expect("docker-compose is missing: run scripts/bootstrap.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn yaml_to_json(yaml: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML to JSON failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn command_of(service: &Value) -> Vec<String> {
    service["command"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The NATS password of every user, as `.env` would hold them.
const NATS_PASSWORDS: [(&str, &str); 8] = [
    ("HK_NATS_API_PASSWORD", "pw-api"),
    ("HK_NATS_RELAY_PASSWORD", "pw-relay"),
    ("HK_NATS_SCHEDULER_PASSWORD", "pw-scheduler"),
    ("HK_NATS_REFRESHER_PASSWORD", "pw-refresher"),
    ("HK_NATS_PROJECTOR_PASSWORD", "pw-projector"),
    ("HK_NATS_WEBHOOKS_PASSWORD", "pw-webhooks"),
    ("HK_NATS_NOTIFIER_PASSWORD", "pw-notifier"),
    ("HK_NATS_ALL_PASSWORD", "pw-all"),
];

#[test]
fn compose_refuses_to_start_without_nats_passwords() {
    let master = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for missing in NATS_PASSWORDS.map(|(name, _)| name) {
        let mut vars: Vec<(&str, &str)> = NATS_PASSWORDS
            .into_iter()
            .filter(|(name, _)| *name != missing)
            .collect();
        vars.push(("HK_MASTER_KEYS", master));
        let (ok, _, stderr) = compose_config(&vars);
        assert!(!ok, "compose must not start NATS without {missing}");
        assert!(
            stderr.contains(missing),
            "the error names {missing}: {stderr}"
        );
    }
}

#[test]
fn compose_refuses_to_start_without_master_keys() {
    let (ok, _, stderr) = compose_config(&NATS_PASSWORDS);
    assert!(
        !ok,
        "compose must not start the refreshers without master keys"
    );
    assert!(
        stderr.contains("HK_MASTER_KEYS") && stderr.contains("README.md"),
        "the error says what to set and where the steps are: {stderr}"
    );
}

#[test]
fn compose_file_is_valid_and_runs_every_role_healthily() {
    let master = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let mut vars = NATS_PASSWORDS.to_vec();
    vars.push(("HK_MASTER_KEYS", master));
    let (ok, stdout, stderr) = compose_config(&vars);
    assert!(ok, "docker-compose config failed: {stderr}");
    let config = yaml_to_json(&stdout);
    let services = config["services"].as_object().expect("services");

    let hubkeeper: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["image"] == "hubkeeper:local")
        .collect();
    let mut roles = Vec::new();
    for (name, service) in &hubkeeper {
        let command = command_of(service);
        assert_eq!(
            service["environment"]["HK_MASTER_KEYS"], master,
            "{name} gets the master keys"
        );
        if command == ["migrate"] {
            assert!(
                service["environment"]["HK_NATS_USER"].is_null(),
                "migrate does not use NATS"
            );
            continue;
        }
        // Each role connects to NATS as its own user, with that user's password.
        let user = if command == ["api"] {
            "api".to_string()
        } else {
            command.last().cloned().unwrap_or_default()
        };
        assert_eq!(
            service["environment"]["HK_NATS_USER"],
            user.as_str(),
            "{name}"
        );
        assert_eq!(
            service["environment"]["HK_NATS_PASSWORD"],
            format!("pw-{user}").as_str(),
            "{name}"
        );
        let test: Vec<&str> = service["healthcheck"]["test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no healthcheck"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(test, ["CMD", "hubkeeper", "health"], "{name}");
        if command.first().map(String::as_str) == Some("worker") {
            // `hubkeeper health` probes the worker's own health listener.
            assert!(
                service["environment"]["HK_METRICS_BIND"].is_string(),
                "{name} serves its health"
            );
        } else {
            assert_eq!(command, ["api"], "{name}");
            assert!(service["environment"]["HK_METRICS_BIND"].is_null());
        }
        let volumes = service["volumes"].to_string();
        assert!(
            volumes.contains("/var/lib/hubkeeper/backups"),
            "{name} sees the backups volume: {volumes}"
        );
        roles.push(command.join(" "));
    }
    let count = |role: &str| roles.iter().filter(|r| *r == role).count();
    assert_eq!(count("worker relay"), 2, "{roles:?}");
    assert_eq!(count("worker scheduler"), 2, "{roles:?}");
    for role in [
        "api",
        "worker refresher",
        "worker projector",
        "worker webhooks",
        "worker notifier",
    ] {
        assert!(count(role) >= 1, "{role} runs: {roles:?}");
    }
    assert!(config["volumes"]["backups"].is_object() || config["volumes"]["backups"].is_null());
    assert!(config["volumes"]
        .as_object()
        .unwrap()
        .contains_key("backups"));

    // The same nats-server as the tests.
    let bootstrap = std::fs::read_to_string(root().join("scripts/bootstrap.sh")).unwrap();
    let version = bootstrap
        .lines()
        .find_map(|l| l.strip_prefix("NATS_VERSION="))
        .expect("NATS_VERSION in bootstrap.sh");
    assert_eq!(
        services["nats"]["image"],
        format!("nats:{version}-alpine"),
        "compose runs the nats-server version the tests run"
    );
    // The server gets every user's password and the generated authorization file.
    for (name, password) in NATS_PASSWORDS {
        assert_eq!(services["nats"]["environment"][name], password, "{name}");
    }
    assert!(
        services["nats"]["volumes"]
            .to_string()
            .contains("/etc/nats/authorization.conf"),
        "nats mounts nats/authorization.conf"
    );
}

#[test]
fn the_image_keeps_its_state_and_backups_on_a_volume_it_can_write() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for needle in [
        "WORKDIR /var/lib/hubkeeper",
        "VOLUME /var/lib/hubkeeper",
        "HK_BACKUP_DIR=/var/lib/hubkeeper/backups",
        "chown -R hubkeeper:hubkeeper /var/lib/hubkeeper",
        "cargo build --release --locked",
        "HEALTHCHECK",
        "postgresql-client-17",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks `{needle}`");
    }
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == ".env"),
        ".env never goes into the build context"
    );
}
