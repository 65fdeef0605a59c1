//! `hubkeeper up` and the first admin key: created once into `<data dir>/admin-key` (0600) with
//! instructions to log in, pointed at on later starts, or taken from HK_BOOTSTRAP_ADMIN_KEY.

#[path = "auth_support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hubkeeper_testkit::{free_port, wait_until, Server, TestEnv};
use support::http;

async fn up(env: &TestEnv, name: &str, extra: &[(&str, &str)]) -> Server {
    let mut vars = env.process_env();
    for (k, v) in extra {
        vars.push((k.to_string(), v.to_string()));
    }
    Server::start(free_port(), name, &["up"], &vars, &env.path().join("logs")).await
}

async fn can_log_in(base: &str, key: &str) -> bool {
    http()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({ "api_key": key }))
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

async fn admin_keys(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL")
        .fetch_one(&env.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_creates_the_first_admin_key_once_and_says_how_to_log_in() {
    let env = TestEnv::start().await;
    let data_dir = env.path().join("data");
    let key_file = data_dir.join("admin-key");

    let mut first = up(&env, "up-1", &[]).await;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is readable by its owner only");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("hk_ak"));
    let log = first.process.log_text();
    assert!(
        log.contains(&format!("{}/dashboard", first.base)),
        "up prints the dashboard URL:\n{log}"
    );
    assert!(
        log.contains(&key_file.display().to_string()),
        "up says where the key is:\n{log}"
    );
    assert!(!log.contains(&key), "the key itself is never printed");
    assert!(can_log_in(&first.base, &key).await);
    assert!(first.process.terminate(Duration::from_secs(30)));

    // Later starts point at the file and create nothing.
    let mut second = up(&env, "up-2", &[]).await;
    let log = second.process.log_text();
    assert!(
        log.contains(&format!(
            "log in with the admin key in {}",
            key_file.display()
        )),
        "{log}"
    );
    assert_eq!(admin_keys(&env).await, 1);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    assert!(second.process.terminate(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_installs_the_admin_key_it_is_given_and_refuses_a_malformed_one() {
    let env = TestEnv::start().await;
    let given = format!("hk_ak00112233aabb_{}", "Zk9-_".repeat(9));
    let mut started = up(&env, "up-given", &[("HK_BOOTSTRAP_ADMIN_KEY", &given)]).await;
    assert!(can_log_in(&started.base, &given).await);
    assert!(
        !env.path().join("data/admin-key").exists(),
        "a given key is not written to disk"
    );
    let log = started.process.log_text();
    assert!(log.contains("HK_BOOTSTRAP_ADMIN_KEY"), "{log}");
    assert!(!log.contains(&given), "the key itself is never printed");
    assert!(started.process.terminate(Duration::from_secs(30)));
    // Idempotent on the next start with the same key.
    let mut again = up(&env, "up-given-2", &[("HK_BOOTSTRAP_ADMIN_KEY", &given)]).await;
    assert_eq!(admin_keys(&env).await, 1);
    assert!(again.process.terminate(Duration::from_secs(30)));

    // A malformed key stops `up` with a message naming the variable.
    let mut vars = env.process_env();
    vars.push(("HK_BOOTSTRAP_ADMIN_KEY".into(), "letmein".into()));
    let Server {
        process: mut bad, ..
    } = Server::spawn(
        free_port(),
        "up-bad",
        &["up"],
        &vars,
        &env.path().join("logs"),
    );
    wait_until(
        "up refuses the malformed key",
        Duration::from_secs(60),
        || {
            let running = bad.is_running();
            async move { !running }
        },
    )
    .await;
    let log = bad.log_text();
    assert!(log.contains("HK_BOOTSTRAP_ADMIN_KEY"), "{log}");
    assert!(!log.contains("letmein"), "the value is not echoed");
}
