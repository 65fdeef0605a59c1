//! `hubkeeper up` with no URLs: starts its own Postgres and nats-server, reaches ready, leaves no
//! process behind on Ctrl-C (SIGINT), and reuses its data on the next start.

use std::time::Duration;

use hubkeeper_testkit::{free_port, wait_until, Server};

/// Processes whose command line mentions `needle` (our data dir), from /proc.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = entry.path().join("cmdline");
        if let Ok(raw) = std::fs::read(&cmdline) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(needle) {
                found.push(text);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_everything_and_leaves_nothing_behind() {
    let dir = tempfile::Builder::new().prefix("hk-up-").tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let data_dir = dir.path().join("state");
    let data = data_dir.display().to_string();
    let port = free_port();
    let env = vec![
        ("HK_DATA_DIR".to_string(), data.clone()),
        ("HK_LOCAL_PG_PORT".to_string(), free_port().to_string()),
        ("HK_LOCAL_NATS_PORT".to_string(), free_port().to_string()),
        ("HK_LOG_FORMAT".to_string(), "json".to_string()),
    ];
    let env: Vec<(String, String)> = env;
    let logs = dir.path().join("logs");

    let mut first_start: Option<(Vec<u8>, String)> = None;
    for round in 0..2 {
        let Server {
            process: mut up, ..
        } = Server::start(
            port,
            &format!("up-{round}"),
            &["up"],
            &env_without_urls(&env),
            &logs,
        )
        .await;
        assert!(
            processes_mentioning(&data)
                .iter()
                .any(|p| p.contains("postgres")),
            "a local postgres runs in the data dir"
        );
        assert!(
            processes_mentioning(&data)
                .iter()
                .any(|p| p.contains("nats-server")),
            "a local nats-server runs in the data dir"
        );
        let pg_version = data_dir.join("postgres/data/PG_VERSION");
        assert!(
            pg_version.exists(),
            "cluster initialised under the data dir"
        );
        // The cluster's identity (the system identifier at the head of pg_control, set by
        // initdb) and the admin key written on the first start, which only the first start's
        // database knows.
        let control =
            std::fs::read(data_dir.join("postgres/data/global/pg_control")).expect("pg_control");
        let identity = control[..8].to_vec();
        let admin_key = std::fs::read_to_string(data_dir.join("admin-key"))
            .expect("up wrote the first admin key")
            .trim()
            .to_owned();
        match &first_start {
            None => first_start = Some((identity, admin_key)),
            Some((first_identity, first_key)) => {
                assert_eq!(
                    &identity, first_identity,
                    "the second start reuses the cluster (same system identifier)"
                );
                assert_eq!(&admin_key, first_key, "the admin key file is kept");
                let login = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{port}/auth/login"))
                    .json(&serde_json::json!({ "api_key": first_key }))
                    .send()
                    .await
                    .expect("login");
                assert_eq!(
                    login.status(),
                    200,
                    "the first start's admin key is still in the database"
                );
                assert!(
                    !up.log_text()
                        .contains("initialising a local Postgres cluster"),
                    "the second start does not run initdb"
                );
            }
        }

        // Ctrl-C is SIGINT to the process.
        let pid = up.pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        wait_until("up exits", Duration::from_secs(60), || {
            let running = up.is_running();
            async move { !running }
        })
        .await;
        let left = processes_mentioning(&data);
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }
}

fn env_without_urls(env: &[(String, String)]) -> Vec<(String, String)> {
    // The test process may have URLs configured; `up` must start its own servers here.
    let mut vars = env.to_vec();
    vars.push(("DATABASE_URL".into(), String::new()));
    vars.push(("NATS_URL".into(), String::new()));
    vars
}
