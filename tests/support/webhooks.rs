//! Shared setup of the webhook tests: a Hubkeeper API process with master keys and a public URL,
//! an admin key, and the simulator's development app registered in Hubkeeper.
#![allow(dead_code)]

use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_testkit::{free_port, hubkeeper_binary, HkProcess, Server, TestEnv};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

pub struct Hubkeeper {
    pub api: HkProcess,
    pub base: String,
    pub admin_key: String,
    pub vars: Vec<(String, String)>,
    pub http: reqwest::Client,
}

/// Environment shared by every Hubkeeper process of a test (API and workers).
pub fn process_vars(env: &TestEnv, port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let master = format!(
        "t1:{}",
        hubkeeper_crypto::generate_key_b64().expose_secret()
    );
    let mut vars = env.process_env();
    vars.extend([
        ("HK_MASTER_KEYS".to_string(), master),
        ("HK_BIND".into(), format!("127.0.0.1:{port}")),
        ("HK_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")),
        ("HK_WEBHOOK_ACK_WAIT_SECS".into(), "3".into()),
        ("HK_WEBHOOK_BACKOFF_MS".into(), "200,500,1000,2000".into()),
    ]);
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    vars
}

pub async fn start_api(env: &TestEnv, extra: &[(&str, &str)]) -> Hubkeeper {
    let port = free_port();
    let vars = process_vars(env, port, extra);
    let server = Server::start(port, "api", &["api"], &vars, &env.path().join("logs")).await;
    let admin = create_key(&env.pool(), "test admin", Role::Admin, "test")
        .await
        .expect("admin key");
    Hubkeeper {
        base: server.base,
        api: server.process,
        admin_key: admin.token.expose_secret().to_owned(),
        vars,
        http: reqwest::Client::new(),
    }
}

impl Hubkeeper {
    /// Registers an app through the API; returns its id.
    pub async fn register_app(
        &self,
        label: &str,
        client_id: &str,
        secret: &str,
        signature_versions: Option<&[&str]>,
    ) -> uuid::Uuid {
        let mut body = json!({
            "label": label,
            "environment": "development",
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uri": hubkeeper_sim::DEV_REDIRECT_URI,
            "scopes": "crm.objects.contacts.read oauth",
        });
        if let Some(versions) = signature_versions {
            body["signature_versions"] = json!(versions);
            if versions.iter().any(|v| *v == "v1" || *v == "v2") {
                body["allow_legacy_signatures"] = json!(true);
            }
        }
        let r = self
            .http
            .post(format!("{}/v1/apps", self.base))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .expect("register app");
        let status = r.status();
        let view: Value = r.json().await.expect("app json");
        assert!(status.is_success(), "register app: {status} {view}");
        view["app_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("app id")
    }

    pub fn webhook_url(&self, app: uuid::Uuid) -> String {
        format!("{}/webhooks/hubspot/{app}", self.base)
    }

    pub fn spawn_worker(&self, env: &TestEnv, name: &str, role: &str) -> HkProcess {
        let mut vars = self.vars.clone();
        // Workers do not listen on the API port.
        vars.retain(|(k, _)| k != "HK_BIND");
        vars.push(("HK_BIND".into(), "127.0.0.1:0".into()));
        HkProcess::spawn(
            &hubkeeper_binary(),
            name,
            &["worker", role],
            &vars,
            &env.path().join("logs"),
        )
    }
}
