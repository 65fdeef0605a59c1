//! Headless Chromium driven through a local chromedriver (WebDriver over plain HTTP), for the
//! dashboard's browser tests. Missing programs fail the test with the instruction to install
//! them, never skip it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};

use crate::{free_port, wait_until};

/// A chromedriver process, its browser session and the browser's profile directory; the driver
/// is killed on drop.
pub struct Browser {
    pub client: Client,
    /// chromedriver's port (its log endpoint is read by the console checks).
    pub driver_port: u16,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session with a window of
    /// `width`×`height`, keeping the browser's console log (read through chromedriver's log
    /// endpoint on [`Browser::driver_port`]).
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser"]).expect(
            "chromium is not installed: run scripts/bootstrap.sh --browser (Debian packages chromium, chromium-driver)",
        );
        let chromedriver = find_program(&["chromedriver"])
            .expect("chromedriver is not installed: run scripts/bootstrap.sh --browser");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("hk-chromium-")
            .tempdir()
            .expect("profile dir");
        let status = format!("http://127.0.0.1:{port}/status");
        wait_until("chromedriver is up", Duration::from_secs(20), || {
            let status = status.clone();
            async move { reqwest::get(&status).await.is_ok() }
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--window-size={width},{height}"), "--lang=en-GB",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({ "browser": "ALL" }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("open a browser session");
        Browser {
            client,
            driver_port: port,
            driver,
            _profile: profile,
        }
    }
}
