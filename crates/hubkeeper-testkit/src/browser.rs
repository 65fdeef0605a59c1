//! Headless Chromium driven through a local chromedriver (WebDriver over plain HTTP), for the
//! dashboard's browser tests. Missing programs fail the test with the instruction to install
//! them, never skip it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

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

/// How long a page may take to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// One dashboard tab as a test drives it: navigation, waits on what the page shows (never on
/// time), clicks that survive re-renders, screenshots into a directory and console checks.
pub struct Page {
    pub client: Client,
    pub base: String,
    shots: PathBuf,
    driver_port: u16,
    count: usize,
}

impl Page {
    /// A page of `browser` on the server at `base`, keeping screenshots in `shots` (emptied).
    pub fn new(browser: &Browser, base: &str, shots: PathBuf) -> Page {
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Page {
            client: browser.client.clone(),
            base: base.to_string(),
            shots,
            driver_port: browser.driver_port,
            count: 0,
        }
    }

    /// Logs in on the dashboard's log-in page with `key` and waits for the Overview.
    pub async fn log_in(&self, key: &str) {
        self.go("/dashboard/login").await;
        self.fill("#api-key", key).await;
        self.click("#login-submit").await;
        self.heading("Overview").await;
    }

    pub async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    pub async fn el(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks the element matching `css`, finding it again while a re-render replaces it.
    /// Toasts are removed first: they may cover buttons near the bottom of the window.
    pub async fn click(&self, css: &str) {
        self.dismiss_toasts().await;
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.el(css).await.click().await {
                Ok(_) => return,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("could not click {css}: {error}"),
            }
        }
    }

    pub async fn dismiss_toasts(&self) {
        self.client
            .execute(
                "document.querySelectorAll('.toast').forEach(t => t.remove())",
                vec![],
            )
            .await
            .expect("remove toasts");
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.el(css).await;
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    /// Waits until an element matching `css` contains `text` (ignoring case); re-finds elements
    /// on each try because pages re-render.
    pub async fn until_text(&self, css: &str, text: &str) -> Element {
        let deadline = Instant::now() + PAGE_WAIT;
        let wanted = text.to_lowercase();
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                for el in found {
                    if el
                        .text()
                        .await
                        .is_ok_and(|t| t.to_lowercase().contains(&wanted))
                    {
                        return el;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no {css} containing {text:?}; page says:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the page's `<h1>` to contain `text`.
    pub async fn heading(&self, text: &str) {
        self.until_text("h1", text).await;
    }

    /// Follows the navigation link labelled `label`.
    pub async fn nav(&self, label: &str) {
        self.client
            .find(Locator::LinkText(label))
            .await
            .unwrap_or_else(|e| panic!("no navigation link {label}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {label}: {e}"));
    }

    /// Waits for a toast containing `text`; returns its whole text.
    pub async fn toast(&self, text: &str) -> String {
        self.until_text(".toast", text)
            .await
            .text()
            .await
            .expect("toast text")
    }

    /// Waits until the list in `css` has finished loading; returns its text.
    pub async fn settled(&self, css: &str) -> String {
        let loading = format!("{css} .state-loading");
        self.until_value(
            &format!("{css} finishes loading"),
            &format!("return document.querySelectorAll({loading:?}).length === 0"),
            |v| v == &serde_json::Value::Bool(true),
        )
        .await;
        self.el(css).await.text().await.expect("list text")
    }

    pub async fn is_disabled(&self, css: &str) -> bool {
        self.el(css)
            .await
            .prop("disabled")
            .await
            .expect("disabled property")
            .is_some_and(|v| v == "true")
    }

    /// Screenshots taken so far.
    pub fn screenshots(&self) -> usize {
        self.count
    }

    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// Runs `script` (its `return` value comes back as JSON) until `done` accepts the value.
    pub async fn until_value(
        &self,
        what: &str,
        script: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let value = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(serde_json::Value::Null);
            if done(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: last value {value}; page says:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A screenshot named `name`, taken once the page's fonts are in and its transitions (toasts
    /// sliding in) are over; endless animations (spinners) do not count.
    pub async fn shot(&mut self, name: &str) {
        self.until_value(
            "the page settles before its screenshot",
            "return document.fonts.status === 'loaded' \
             && document.getAnimations().every(a => a.playState !== 'running' \
                || a.effect.getComputedTiming().iterations === Infinity)",
            |v| v == &serde_json::Value::Bool(true),
        )
        .await;
        self.count += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.count)),
            png,
        )
        .expect("write screenshot");
    }

    /// Fails on any script error in the browser's console and on any failed request except
    /// those containing one of `allowed` (a browser logs every 4xx answer to fetch).
    pub async fn assert_clean_console(&self, when: &str, allowed: &[&str]) {
        let session = self
            .client
            .session_id()
            .await
            .expect("session")
            .expect("session id");
        let logs: serde_json::Value = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/session/{session}/se/log",
                self.driver_port
            ))
            .json(&serde_json::json!({ "type": "browser" }))
            .send()
            .await
            .expect("console log")
            .json()
            .await
            .expect("console log JSON");
        let errors: Vec<String> = logs["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
            .filter(|m| {
                !(m.contains("Failed to load resource") && allowed.iter().any(|a| m.contains(a)))
            })
            .collect();
        assert!(errors.is_empty(), "console errors {when}: {errors:#?}");
    }
}
