//! NATS trusts no one: each role connects as its own user (`hubkeeper_bus::permissions`), and a
//! role cannot publish where it must not (forged webhook batches, control messages, relayed
//! events, refresh commands, dead letters, stream administration) nor read another role's
//! replies. The shipped `nats/authorization.conf` is the permission table, and every role runs
//! under its own user with nothing refused by the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hubkeeper_bus::permissions::{
    authorization_block, authorization_file, NatsUser, PasswordSource,
};
use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, HkProcess, Server, TestEnv};
use secrecy::ExposeSecret;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn password(user: NatsUser) -> String {
    format!("pw-{}-{}", user.name(), std::process::id())
}

const OBSERVER: &str = "observer";
const OBSERVER_PASSWORD: &str = "observer-password";

/// Every role's user, plus an observer that may subscribe to everything (test only): it sees
/// whatever the server lets through.
fn test_authorization() -> String {
    let literal = |user: NatsUser| password(user);
    let block = authorization_block(&NatsUser::ALL, PasswordSource::Literal(&literal));
    let observer = format!(
        "    {{ user: \"{OBSERVER}\", password: \"{OBSERVER_PASSWORD}\", \
         permissions: {{ publish: {{ allow: [\"observer.>\"] }}, subscribe: {{ allow: [\">\"] }} }} }}\n"
    );
    let end = "  ]\n}\n";
    assert!(block.ends_with(end), "{block}");
    format!("{}{observer}{end}", &block[..block.len() - end.len()])
}

/// A connection as `user` that records the errors the server sends it.
async fn connect_as(
    url: &str,
    user: &str,
    pass: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into())
        .custom_inbox_prefix(hubkeeper_bus::permissions::inbox_prefix(user))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    (client, errors)
}

/// Subjects a forger would want, and who may publish there.
fn sensitive_subjects() -> Vec<(&'static str, &'static [NatsUser])> {
    use NatsUser::*;
    vec![
        ("hk.webhook_batches.app-1", &[Api, All]),
        ("hk.control.settings", &[Api, All]),
        ("hk.control.clear-rate-limits", &[Api, All]),
        ("hk.control.reload", &[Api, All]),
        ("hk.events.installation.i-1", &[Relay, All]),
        ("hk.events.settings.s", &[Relay, All]),
        ("hk.refresh.i-1", &[Scheduler, Api, All]),
        ("hk.dlq.webhooks", &[Webhooks, All]),
        ("hk.dlq.refresh", &[Refresher, All]),
        ("hk.webhooks.app-1.33.contact.creation", &[Webhooks, All]),
        ("$JS.API.STREAM.DELETE.HK_EVENTS", &[All]),
        ("$JS.API.STREAM.PURGE.HK_WEBHOOKS", &[All]),
        (
            "$JS.API.CONSUMER.MSG.NEXT.HK_WEBHOOKS.webhooks",
            &[Webhooks, All],
        ),
        (
            "$JS.API.CONSUMER.MSG.NEXT.HK_REFRESH.refresher",
            &[Refresher, All],
        ),
        ("$JS.API.STREAM.MSG.DELETE.HK_DLQ", &[Api, All]),
        ("somewhere.else", &[]),
    ]
}

#[test]
fn the_shipped_authorization_is_the_permission_table_and_nats_server_accepts_it() {
    let path = root().join("nats/authorization.conf");
    let expected = authorization_file();
    if std::env::var_os("HK_WRITE_NATS_AUTHORIZATION").is_some() {
        std::fs::write(&path, &expected).expect("write nats/authorization.conf");
    }
    let shipped = std::fs::read_to_string(&path).expect("nats/authorization.conf");
    assert_eq!(
        shipped, expected,
        "nats/authorization.conf differs from hubkeeper_bus::permissions: regenerate it with \
         HK_WRITE_NATS_AUTHORIZATION=1 cargo nextest run -p hubkeeper --test nats_permissions"
    );
    // The server's own configuration check, on the file docker-compose mounts.
    let mut check = Command::new(hubkeeper_testkit::nats_server_binary());
    check
        .args(["-t", "-c"])
        .arg(root().join("nats/nats-server.conf"));
    for user in NatsUser::ALL {
        check.env(user.password_variable(), password(user));
    }
    let out = check.output().expect("run nats-server -t");
    assert!(
        out.status.success(),
        "nats-server refuses nats/nats-server.conf: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the passwords it refuses to start rather than run without authentication.
    let mut bare = Command::new(hubkeeper_testkit::nats_server_binary());
    bare.args(["-t", "-c"])
        .arg(root().join("nats/nats-server.conf"));
    for user in NatsUser::ALL {
        bare.env_remove(user.password_variable());
    }
    assert!(!bare.output().expect("run nats-server -t").status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_can_publish_where_it_must_not() {
    let env = TestEnv::start_with_nats_authorization(Some(test_authorization())).await;
    let url = env.nats_url();

    // Nobody gets in without a user.
    let anonymous = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(&url)).await;
    assert!(
        matches!(anonymous, Ok(Err(_))),
        "an anonymous client was let in"
    );

    let (observer, _) = connect_as(&url, OBSERVER, OBSERVER_PASSWORD).await;
    let mut seen = observer.subscribe(">").await.expect("observer subscribes");
    observer.flush().await.expect("flush");

    let mut refused = 0;
    let mut allowed = 0;
    for user in NatsUser::ALL {
        let (client, errors) = connect_as(&url, user.name(), &password(user)).await;
        for (subject, may) in sensitive_subjects() {
            let marker = format!("{}:{subject}", user.name());
            client
                .publish(subject.to_owned(), marker.clone().into())
                .await
                .expect("publish");
            // Every user may publish cache invalidations: once the observer has this one, the
            // forged message (sent before it on the same connection) would have arrived too.
            let canary = format!("canary:{marker}");
            client
                .publish("hk.cache.invalidate", canary.clone().into())
                .await
                .expect("publish canary");
            client.flush().await.expect("flush");
            let mut got_forged = false;
            loop {
                let message = tokio::time::timeout(Duration::from_secs(10), seen.next())
                    .await
                    .unwrap_or_else(|_| panic!("the observer never saw {canary}"))
                    .expect("observer subscription");
                let text = String::from_utf8_lossy(&message.payload).into_owned();
                if text == marker && message.subject.as_str() == subject {
                    got_forged = true;
                }
                if text == canary {
                    break;
                }
            }
            let expected = may.contains(&user);
            assert_eq!(
                got_forged,
                expected,
                "{} publishing on {subject}: {}",
                user.name(),
                if expected {
                    "must be allowed"
                } else {
                    "must be refused"
                }
            );
            if expected {
                allowed += 1;
            } else {
                refused += 1;
                let errors = errors.clone();
                wait_until(
                    &format!(
                        "the server tells {} it may not publish on {subject}",
                        user.name()
                    ),
                    Duration::from_secs(10),
                    move || {
                        let errors = errors.clone();
                        async move {
                            errors
                                .lock()
                                .unwrap()
                                .iter()
                                .any(|e| e.contains("Permissions Violation") && e.contains(subject))
                        }
                    },
                )
                .await;
            }
        }
        // Another role's reply inbox, or the raw webhook batches, cannot be read either.
        for subject in ["_INBOX_api.x", "_INBOX.x", "hk.webhook_batches.app-1"] {
            let _ = client.subscribe(subject).await;
            client.flush().await.expect("flush");
            if (user == NatsUser::All && subject.starts_with("hk."))
                || subject.starts_with(&format!("{}.", user.inbox_prefix()))
            {
                continue;
            }
            let errors = errors.clone();
            wait_until(
                &format!(
                    "the server refuses {} a subscription to {subject}",
                    user.name()
                ),
                Duration::from_secs(10),
                move || {
                    let errors = errors.clone();
                    async move {
                        errors.lock().unwrap().iter().any(|e| {
                            e.contains("Permissions Violation for Subscription")
                                && e.contains(subject)
                        })
                    }
                },
            )
            .await;
        }
    }
    assert!(
        refused >= 60 && allowed >= 20,
        "refused {refused}, allowed {allowed}"
    );
    let log = std::fs::read_to_string(env.nats.log_path()).unwrap_or_default();
    assert!(log.contains("Violation"), "nats-server logs refusals");
}

/// The environment of a role's process: its own user and password.
fn role_env(env: &TestEnv, user: NatsUser) -> Vec<(String, String)> {
    let mut vars = env.process_env();
    vars.push(("HK_NATS_USER".into(), user.name().into()));
    vars.push(("HK_NATS_PASSWORD".into(), password(user)));
    vars.push(("HK_MASTER_KEYS".into(), format!("k1:{}", base64_key())));
    vars
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_works_under_its_own_user_and_is_refused_nothing() {
    let env = TestEnv::start_with_nats_authorization(Some(test_authorization())).await;
    let logs = env.log_dir();
    let api_port = free_port();
    let mut api = Server::start(
        api_port,
        "api",
        &["api"],
        &role_env(&env, NatsUser::Api),
        &logs,
    )
    .await;
    let mut workers: HashMap<&str, (HkProcess, u16)> = HashMap::new();
    for user in [
        NatsUser::Relay,
        NatsUser::Scheduler,
        NatsUser::Refresher,
        NatsUser::Projector,
        NatsUser::Webhooks,
    ] {
        let port = free_port();
        let mut vars = role_env(&env, user);
        vars.push(("HK_METRICS_BIND".into(), format!("127.0.0.1:{port}")));
        let process = HkProcess::spawn(
            &hubkeeper_binary(),
            user.name(),
            &["worker", user.name()],
            &vars,
            &logs,
        );
        workers.insert(user.name(), (process, port));
    }
    for (name, (process, port)) in workers.iter_mut() {
        let port = *port;
        wait_until(&format!("{name} ready"), Duration::from_secs(90), || {
            assert!(
                process.is_running(),
                "{name} exited: {}",
                process.log_tail()
            );
            ready(port)
        })
        .await;
    }
    // Every consumer is attached (the server allowed its consumer calls).
    for name in ["refresher", "projector", "webhooks"] {
        let (process, _) = &workers[name];
        wait_until(
            &format!("{name} consuming"),
            Duration::from_secs(60),
            || {
                let log = process.log_text();
                async move { log.contains("consuming") }
            },
        )
        .await;
    }

    // A settings change through the API: a control message to every process, events through
    // the relay to the projector.
    let pool = env.pool();
    let key =
        hubkeeper_api::auth::create_key(&pool, "admin", hubkeeper_api::auth::Role::Admin, "test")
            .await
            .expect("admin key");
    let http = reqwest::Client::new();
    let changed = http
        .put(api.url("/v1/settings"))
        .bearer_auth(key.token.expose_secret())
        .json(&serde_json::json!({
            "oauth_rate_limit": {"enabled": true, "window_secs": 60, "max_per_ip": 5}
        }))
        .send()
        .await
        .expect("put settings");
    assert_eq!(
        changed.status(),
        200,
        "{}",
        changed.text().await.unwrap_or_default()
    );
    wait_until(
        "the relay published the settings event",
        Duration::from_secs(30),
        || env.cursor_at_end(hubkeeper_bus::registry::RELAY_CURSOR),
    )
    .await;
    wait_until(
        "the projector wrote the activity row",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM rm_activity WHERE aggregate_type = 'settings'",
                )
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n > 0)
            }
        },
    )
    .await;
    let cleared = http
        .post(api.url("/v1/maintenance/clear-rate-limits"))
        .bearer_auth(key.token.expose_secret())
        .send()
        .await
        .expect("clear rate limits");
    assert_eq!(cleared.status(), 202);
    wait_until(
        "the API acted on the reset",
        Duration::from_secs(10),
        || {
            let log = api.process.log_text();
            async move { log.contains("rate-limit counters cleared on request") }
        },
    )
    .await;

    // Nothing was refused, and every process is still running.
    let nats_log = std::fs::read_to_string(env.nats.log_path()).unwrap_or_default();
    assert!(
        !nats_log.contains("Violation") && !nats_log.contains("Authorization Error"),
        "nats-server refused a role something: {nats_log}"
    );
    assert!(api.process.is_running(), "api: {}", api.process.log_tail());
    for (name, (process, _)) in workers.iter_mut() {
        assert!(process.is_running(), "{name}: {}", process.log_tail());
    }
    let _ = &mut api;
    pool.close().await;
}

async fn ready(port: u16) -> bool {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// A user without its password stops the process before it connects.
#[test]
fn a_user_without_a_password_is_a_configuration_error() {
    let out = Command::new(hubkeeper_binary())
        .args(["worker", "relay"])
        .env("HK_NATS_USER", "relay")
        .env_remove("HK_NATS_PASSWORD")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .output()
        .expect("run hubkeeper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HK_NATS_PASSWORD") || stderr.contains("nats-password"),
        "{stderr}"
    );
}
