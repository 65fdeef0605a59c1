//! `hubkeeper doctor` against a working deployment (real Postgres and NATS, a master key, the
//! simulator as HubSpot, a writable backup directory) and against a broken one: it passes the
//! first, and for the second names every problem with what to fix, exits non-zero, and never
//! prints a password. The simulator runs as `hubkeeper sim --bind <addr>`, so this also shows
//! that `sim` listens where it is told.

use std::process::Command;
use std::time::Duration;

use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, HkProcess, TestEnv};

/// `hubkeeper doctor` with exactly these settings (the test's own environment cleared of
/// Hubkeeper variables): (exit success, stdout + stderr).
fn doctor(env: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(hubkeeper_binary());
    command.arg("doctor");
    for (key, _) in std::env::vars() {
        if key.starts_with("HK_") || key == "DATABASE_URL" || key == "NATS_URL" {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    // Run where no `.env` is found.
    let dir = tempfile::tempdir().unwrap();
    let out = command
        .current_dir(dir.path())
        .output()
        .expect("run doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn master_key() -> String {
    let out = Command::new(hubkeeper_binary())
        .args(["keys", "generate", "--kid", "doctor1"])
        .output()
        .expect("keys generate");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_working_setup() {
    let env = TestEnv::start().await;
    let sim_addr = format!("127.0.0.1:{}", free_port());
    let _sim = HkProcess::spawn(
        &hubkeeper_binary(),
        "sim",
        &["sim", "--bind", &sim_addr],
        &[],
        &env.path().join("logs"),
    );
    let sim_url = format!("http://{sim_addr}");
    wait_until(
        "the simulator listens on the --bind address",
        Duration::from_secs(30),
        || {
            let url = sim_url.clone();
            async move { reqwest::get(url).await.is_ok() }
        },
    )
    .await;

    let (ok, text) = doctor(&[
        ("DATABASE_URL", env.database_url()),
        ("NATS_URL", env.nats_url()),
        ("HK_MASTER_KEYS", master_key()),
        ("HK_HUBSPOT_API_URL", sim_url.clone()),
        (
            "HK_BACKUP_DIR",
            env.path().join("backups").display().to_string(),
        ),
    ]);
    assert!(ok, "doctor fails a working setup:\n{text}");
    for area in [
        "postgres",
        "migrations",
        "nats",
        "master keys",
        "hubspot",
        "backups",
        "pg_dump",
    ] {
        assert!(
            text.contains(&format!("  ok    {area:<12}")),
            "{area} is checked and fine:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_each_problem_and_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A backup "directory" below a regular file cannot be created.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let closed = free_port();
    let (ok, text) = doctor(&[
        (
            "DATABASE_URL",
            format!("postgres://hk:pa55word-not-printed@127.0.0.1:{closed}/hk"),
        ),
        ("NATS_URL", format!("nats://127.0.0.1:{closed}")),
        ("HK_HUBSPOT_API_URL", format!("http://127.0.0.1:{closed}")),
        ("HK_BACKUP_DIR", file.join("backups").display().to_string()),
    ]);
    assert!(!ok, "doctor passes a broken setup:\n{text}");
    for (area, fix) in [
        ("postgres", "DATABASE_URL"),
        ("nats", "JetStream"),
        ("master keys", "hubkeeper keys generate"),
        ("hubspot", "HK_HUBSPOT_API_URL"),
        ("backups", "HK_BACKUP_DIR"),
    ] {
        assert!(
            text.contains(&format!("  FAIL  {area:<12}")),
            "{area} fails:\n{text}"
        );
        assert!(
            text.contains(fix),
            "the fix for {area} names {fix}:\n{text}"
        );
    }
    assert!(text.contains("fix:"), "{text}");
    assert!(text.contains("check(s) failed"), "{text}");
    assert!(
        !text.contains("pa55word-not-printed"),
        "never prints a password:\n{text}"
    );

    // Nothing configured at all: says which URLs to set.
    let (ok, text) = doctor(&[]);
    assert!(!ok);
    assert!(
        text.contains("DATABASE_URL is not set") && text.contains("NATS_URL is not set"),
        "{text}"
    );
}
