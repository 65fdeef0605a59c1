//! The dashboard: plain HTML, CSS and JavaScript modules compiled into the binary, so there is no
//! front-end build step and no separate server; every page is `/dashboard/…` and the browser
//! routes between them (any non-asset path answers the same shell).
//!
//! Files are revalidated on each load (`no-cache` + `ETag`): after an upgrade the browser picks
//! up the new version at once, and otherwise gets a `304`.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

macro_rules! assets {
    ($($path:literal => $mime:literal),* $(,)?) => {
        &[$(($path, $mime, include_bytes!(concat!("../assets/", $path)) as &[u8])),*]
    };
}

/// Every file under `assets/` (a test checks none is forgotten).
static ASSETS: &[(&str, &str, &[u8])] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "css/app.css" => "text/css; charset=utf-8",
    "js/app.js" => "text/javascript; charset=utf-8",
    "js/actions.js" => "text/javascript; charset=utf-8",
    "js/api.js" => "text/javascript; charset=utf-8",
    "js/ui.js" => "text/javascript; charset=utf-8",
    "js/time.js" => "text/javascript; charset=utf-8",
    "js/help.js" => "text/javascript; charset=utf-8",
    "js/format.js" => "text/javascript; charset=utf-8",
    "js/list.js" => "text/javascript; charset=utf-8",
    "js/charts.js" => "text/javascript; charset=utf-8",
    "js/process-configuration.js" => "text/javascript; charset=utf-8",
    "js/pages/login.js" => "text/javascript; charset=utf-8",
    "js/pages/overview.js" => "text/javascript; charset=utf-8",
    "js/pages/tokens.js" => "text/javascript; charset=utf-8",
    "js/pages/users.js" => "text/javascript; charset=utf-8",
    "js/pages/user-detail.js" => "text/javascript; charset=utf-8",
    "js/pages/apps.js" => "text/javascript; charset=utf-8",
    "js/pages/activity.js" => "text/javascript; charset=utf-8",
    "js/pages/pricing-plans.js" => "text/javascript; charset=utf-8",
    "js/pages/billing-usage.js" => "text/javascript; charset=utf-8",
    "js/pages/settings.js" => "text/javascript; charset=utf-8",
    "js/pages/notifications.js" => "text/javascript; charset=utf-8",
    "js/pages/api-keys.js" => "text/javascript; charset=utf-8",
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/dashboard", get(shell))
        .route("/dashboard/{*path}", get(page_or_asset))
}

async fn root() -> Redirect {
    Redirect::temporary("/dashboard")
}

async fn shell(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn page_or_asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match path.strip_prefix("assets/") {
        Some(asset) => serve(asset, &headers),
        None => serve("index.html", &headers),
    }
}

fn etags() -> &'static HashMap<&'static str, String> {
    static ETAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(path, _, body)| {
                let digest = Sha256::digest(body);
                (*path, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect()
    })
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some((name, mime, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return ApiError::not_found(format!("no dashboard file {path}")).into_response();
    };
    let etag = etags().get(name).cloned().unwrap_or_default();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, *mime)], *body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }

    #[test]
    fn every_asset_file_is_served() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|(p, _, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "assets/ and the ASSETS list differ");
    }

    #[test]
    fn no_page_carries_inline_script_or_style() {
        for (path, _, body) in ASSETS {
            if path.ends_with(".html") {
                let html = std::str::from_utf8(body).unwrap();
                assert!(!html.contains("style="), "{path} has an inline style");
                assert!(!html.contains("onclick"), "{path} has an inline handler");
                for tag in html.split("<script").skip(1) {
                    assert!(tag.contains("src="), "{path} has an inline script");
                }
            }
        }
    }

    #[test]
    fn unchanged_files_answer_304() {
        let etag = etags()["css/app.css"].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        assert_eq!(
            serve("css/app.css", &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            serve("css/app.css", &HeaderMap::new()).status(),
            StatusCode::OK
        );
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
