//! `hubkeeper up` with no URLs: starts its own Postgres and nats-server, reaches ready, leaves no
//! process behind on Ctrl-C (SIGINT), and reuses its data on the next start.

use std::path::Path;
use std::time::Duration;

use hubkeeper_testkit::{wait_until, HkProcess};

const BIN: &str = env!("CARGO_BIN_EXE_hubkeeper");

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

async fn ready(port: u16) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
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
    let port = hubkeeper_embedded_free_port();
    let env = vec![
        ("HK_DATA_DIR".to_string(), data.clone()),
        ("HK_BIND".to_string(), format!("127.0.0.1:{port}")),
        (
            "HK_LOCAL_PG_PORT".to_string(),
            hubkeeper_embedded_free_port().to_string(),
        ),
        (
            "HK_LOCAL_NATS_PORT".to_string(),
            hubkeeper_embedded_free_port().to_string(),
        ),
        ("HK_LOG_FORMAT".to_string(), "json".to_string()),
    ];
    let env: Vec<(String, String)> = env;
    let logs = dir.path().join("logs");

    for round in 0..2 {
        let mut up = HkProcess::spawn(
            Path::new(BIN),
            &format!("up-{round}"),
            &["up"],
            &env_without_urls(&env),
            &logs,
        );
        wait_until("up reaches ready", Duration::from_secs(90), || ready(port)).await;
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
        if round == 1 {
            assert!(
                up.log_text()
                    .matches("initialising a local Postgres cluster")
                    .count()
                    == 0,
                "the second start reuses the cluster"
            );
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

fn hubkeeper_embedded_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
