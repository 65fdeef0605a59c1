//! The leak check: no access token, refresh token, authorization code or client secret a test saw
//! may appear in any table or in any process's log, in plain, URL-encoded or (for binary
//! columns) hex form.

use std::collections::BTreeMap;
use std::path::Path;

use aho_corasick::AhoCorasick;
use sqlx::PgPool;

/// What a secret is, so a scan can insist it covers every kind a test handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    AccessToken,
    RefreshToken,
    Code,
    ClientSecret,
    /// A Hubkeeper API key (`hk_<id>_<secret>`): only tests that create keys see one, so it is
    /// not in [`SecretKind::ALL`].
    ApiKey,
}

impl SecretKind {
    /// Every kind of secret HubSpot issues or an app is given.
    pub const ALL: [SecretKind; 4] = [
        SecretKind::AccessToken,
        SecretKind::RefreshToken,
        SecretKind::Code,
        SecretKind::ClientSecret,
    ];
}

/// The secrets a test saw, by kind.
#[derive(Debug, Default, Clone)]
pub struct SecretScan {
    secrets: BTreeMap<String, SecretKind>,
}

impl SecretScan {
    pub fn new() -> SecretScan {
        SecretScan::default()
    }

    pub fn add(&mut self, kind: SecretKind, secret: &str) {
        if !secret.is_empty() {
            self.secrets.insert(secret.to_owned(), kind);
        }
    }

    pub fn extend<'a>(&mut self, kind: SecretKind, secrets: impl IntoIterator<Item = &'a String>) {
        for secret in secrets {
            self.add(kind, secret);
        }
    }

    /// Adds every secret of `other`.
    pub fn merge(&mut self, other: &SecretScan) {
        for (secret, kind) in &other.secrets {
            self.secrets.insert(secret.clone(), *kind);
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Fails unless the scan holds at least one secret of every kind in `kinds` (a scan without
    /// refresh tokens proves nothing about refresh tokens), then fails if any secret appears in
    /// any row of any table of `pool` or in any file in `log_dir` (every process's log). The
    /// event store and the logs must not be empty: an empty haystack proves nothing either.
    pub async fn assert_nowhere(&self, kinds: &[SecretKind], pool: &PgPool, log_dir: &Path) {
        for kind in kinds {
            assert!(
                self.secrets.values().any(|k| k == kind),
                "the leak check has no {kind:?} to look for"
            );
        }
        let (needles, owners): (Vec<String>, Vec<(&str, SecretKind)>) = self
            .secrets
            .iter()
            .flat_map(|(secret, kind)| {
                encodings(secret)
                    .into_iter()
                    .map(move |(form, needle)| (needle, (form, *kind)))
            })
            .unzip();
        let matcher = AhoCorasick::new(&needles).expect("secret matcher");
        let found = |haystack: &str| {
            matcher.find(haystack).map(|m| {
                let (form, kind) = owners[m.pattern().as_usize()];
                let needle = &needles[m.pattern().as_usize()];
                format!("{kind:?} ({}…, {form})", &needle[..6.min(needle.len())])
            })
        };

        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("list tables");
        assert!(tables.iter().any(|t| t == "events"), "no event store");
        let mut rows_scanned = 0usize;
        for table in &tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("read table {table}: {e}"));
            rows_scanned += rows.len();
            for row in rows {
                if let Some(what) = found(&row) {
                    panic!("a secret is stored in clear in table {table}: {what}");
                }
            }
        }
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .expect("count events");
        assert!(events > 0, "the leak check found an empty event store");

        let mut logs_scanned = 0usize;
        let entries = std::fs::read_dir(log_dir)
            .unwrap_or_else(|e| panic!("read log dir {}: {e}", log_dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).expect("read log")).into_owned();
            logs_scanned += text.len();
            if let Some(what) = found(&text) {
                panic!("a secret appears in the log {}: {what}", path.display());
            }
        }
        assert!(
            logs_scanned > 0,
            "the leak check found no log in {}",
            log_dir.display()
        );
        eprintln!(
            "leak check: {} secrets, {rows_scanned} rows of {} tables, {logs_scanned} bytes of logs",
            self.secrets.len(),
            tables.len()
        );
    }
}

/// The forms a secret may take in a table or a log.
fn encodings(secret: &str) -> Vec<(&'static str, String)> {
    let mut forms = vec![("plain", secret.to_owned())];
    let form_encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    if form_encoded != secret {
        forms.push(("URL-encoded", form_encoded));
    }
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if !forms.iter().any(|(_, f)| *f == percent) {
        forms.push(("percent-encoded", percent));
    }
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    forms.push(("hex", hex));
    forms
}

#[cfg(test)]
mod tests {
    use super::encodings;

    #[test]
    fn every_encoding_of_a_secret_with_reserved_characters() {
        let forms = encodings("a b/c");
        let find = |name: &str| {
            forms
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(find("plain"), Some("a b/c"));
        assert_eq!(find("URL-encoded"), Some("a+b%2Fc"));
        assert_eq!(find("percent-encoded"), Some("a%20b%2Fc"));
        assert_eq!(find("hex"), Some("6120622f63"));
    }
}
