//! `/openapi.json`: the admin API described for people and tools, and the access policy the
//! [`crate::policy`] layer enforces (`security` and `x-permission` per operation).
//!
//! The document is hand-written (`crates/hubkeeper-api/openapi.json`) so it reads like
//! documentation; a test reads every `.route(…)` in this crate's sources and fails when a route is
//! missing from the document or the document names a route that does not exist.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The document as shipped in the binary.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Methods an OpenAPI path item can hold (upper case, as `http::Method` spells them).
pub const HTTP_METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

/// The parsed document (`Null` if it failed to parse, which the tests rule out).
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(DOCUMENT).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the embedded OpenAPI document does not parse");
            serde_json::Value::Null
        })
    })
}

async fn serve() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
}

/// Axum writes a catch-all segment as `{*name}`, OpenAPI as `{name}`.
pub fn normalize_path(path: &str) -> String {
    path.replace("{*", "{")
}

/// Every (METHOD, path) operation of an OpenAPI document.
pub fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    let upper = method.to_ascii_uppercase();
                    if HTTP_METHODS.contains(&upper.as_str()) {
                        ops.push((upper, normalize_path(path)));
                    }
                }
            }
        }
    }
    ops.sort();
    ops
}

/// Reads `(METHOD, path)` of every `.route("path", method(handler).other(handler))` in Rust
/// source. Paths may be string literals or `const NAME: &str = "…"` defined in `consts_from`.
/// Anything it cannot read exactly (a computed path, `any(…)`, `.nest(…)`, `.route_service(…)`)
/// is an error, so the coverage test fails loudly instead of missing a route.
pub fn routes_in_source(src: &str, consts_from: &str) -> Result<Vec<(String, String)>, String> {
    // Test modules sit at the end of files by convention; their fixtures are not routes.
    let src = src.find("\n#[cfg(test)]").map_or(src, |end| &src[..end]);
    let code = strip_comments(src);
    // Same byte offsets as `code`, with string contents blanked: where to look for calls.
    let bare = blank_strings(&code);
    for unsupported in [
        ".nest(",
        ".nest_service(",
        ".route_service(",
        ".route_layer(",
    ] {
        if bare.contains(unsupported) {
            return Err(format!(
                "`{unsupported}` is not understood by the route reader; register routes with .route(\"/full/path\", …) and merge routers"
            ));
        }
    }
    let mut routes = Vec::new();
    let mut from = 0;
    while let Some(at) = bare[from..].find(".route(") {
        let start = from + at + ".route(".len();
        let (args, _) = balanced(&code[start..])?;
        from = start + args.len();
        let args = args.trim_start();
        let (path, handlers) = if let Some(lit) = args.strip_prefix('"') {
            let end = lit.find('"').ok_or("unterminated route path")?;
            (lit[..end].to_string(), &lit[end + 1..])
        } else {
            let end = args.find(',').ok_or("route without handlers")?;
            let name = args[..end].trim();
            (const_value(consts_from, name)?, &args[end + 1..])
        };
        let methods = methods_in(&blank_strings(handlers))?;
        if methods.is_empty() {
            return Err(format!("cannot tell the methods of route {path}"));
        }
        for method in methods {
            routes.push((method, normalize_path(&path)));
        }
    }
    Ok(routes)
}

/// Removes `//` and `/* */` comments, leaving string literals (normal and raw) intact.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            while chars.peek().is_some_and(|(j, _)| *j < i + end) {
                chars.next();
            }
            continue;
        }
        if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            while chars.peek().is_some_and(|(j, _)| *j < i + end) {
                chars.next();
            }
            continue;
        }
        let len = literal_len(src, i);
        if len > 0 {
            out.push_str(&rest[..len]);
            while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The byte length of the string or char literal starting at `i` (0 if none starts there).
fn literal_len(src: &str, i: usize) -> usize {
    let rest = &src[i..];
    let prev_is_ident = src[..i]
        .chars()
        .next_back()
        .is_some_and(|p| p.is_alphanumeric() || p == '_');
    if rest.starts_with("'\"'") {
        return 3;
    }
    if rest.starts_with('r') && !prev_is_ident {
        let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
        if rest[1 + hashes..].starts_with('"') {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            return rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
        }
        return 0;
    }
    if rest.starts_with('"') {
        let mut escaped = false;
        for (j, c) in rest.char_indices().skip(1) {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => return j + 1,
                _ => {}
            }
        }
        return rest.len();
    }
    0
}

/// Replaces the contents of string literals with `x`s of the same byte length.
fn blank_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < code.len() {
        let len = literal_len(code, i);
        if len > 0 {
            out.push_str(&"x".repeat(len));
            i += len;
        } else {
            let c = code[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Splits off the text up to the parenthesis that closes the one just opened.
fn balanced(text: &str) -> Result<(&str, &str), String> {
    let mut depth = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&text[..i], &text[i + 1..]));
                }
            }
            _ => {}
        }
    }
    Err("unbalanced parentheses after .route(".into())
}

fn methods_in(handlers: &str) -> Result<Vec<String>, String> {
    const NAMES: [&str; 8] = [
        "get", "post", "put", "patch", "delete", "head", "options", "any",
    ];
    let bytes = handlers.as_bytes();
    let mut found = Vec::new();
    for name in NAMES {
        let mut from = 0;
        while let Some(pos) = handlers[from..].find(name) {
            let start = from + pos;
            let end = start + name.len();
            from = end;
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let after = handlers[end..].trim_start();
            let is_call = after.starts_with('(');
            let after_ok =
                end >= bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
            if before_ok && after_ok && is_call {
                if name == "any" {
                    return Err("`any(…)` routes are not supported by the route reader".into());
                }
                found.push(name.to_ascii_uppercase());
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn const_value(src: &str, name: &str) -> Result<String, String> {
    let ident = name.rsplit("::").next().unwrap_or(name);
    let needle = format!("const {ident}: &str = \"");
    let at = src
        .find(&needle)
        .ok_or_else(|| format!("route path `{name}` is neither a literal nor a const &str"))?;
    let value = &src[at + needle.len()..];
    let end = value.find('"').ok_or("unterminated const")?;
    Ok(value[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }

    fn routes_of_this_crate() -> BTreeSet<(String, String)> {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let all: String = files.iter().map(|(_, s)| s.as_str()).collect();
        let mut routes = BTreeSet::new();
        for (name, src) in &files {
            for route in routes_in_source(src, &all).unwrap_or_else(|e| panic!("{name}: {e}")) {
                routes.insert(route);
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let routes = routes_of_this_crate();
        let documented: BTreeSet<(String, String)> = operations(document()).into_iter().collect();
        // The reader must actually be reading: these routes exist in this crate.
        for known in [
            ("POST", "/auth/login"),
            ("GET", "/healthz"),
            ("GET", "/openapi.json"),
        ] {
            let known = (known.0.to_string(), known.1.to_string());
            assert!(routes.contains(&known), "route reader missed {known:?}");
        }
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from crates/hubkeeper-api/openapi.json: {undocumented:?}"
        );
        let phantom: Vec<_> = documented.difference(&routes).collect();
        assert!(
            phantom.is_empty(),
            "openapi.json documents routes the router does not have: {phantom:?}"
        );
    }

    #[test]
    fn every_operation_states_its_errors_and_a_summary() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if !HTTP_METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                    continue;
                }
                assert!(op.get("summary").is_some(), "{method} {path}: no summary");
                let public = op
                    .get("security")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| s.is_empty());
                if !public {
                    let responses = op["responses"].as_object().unwrap();
                    for code in ["401", "403"] {
                        assert!(
                            responses.contains_key(code),
                            "{method} {path}: no {code} response"
                        );
                    }
                    assert!(
                        op.get("x-permission").is_some(),
                        "{method} {path}: protected but no x-permission"
                    );
                }
            }
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    }

    #[test]
    fn the_route_reader_reads_chains_consts_and_refuses_what_it_cannot_read() {
        let src = r#"
            const CALLBACK: &str = "/oauth/callback";
            Router::new()
                .route("/v1/apps", get(list).post(create))
                .route(
                    "/v1/apps/{id}",
                    routing::get(show).patch(update).delete(remove),
                )
                .route(CALLBACK, get(callback))
                .route("/files/{*path}", get(get_file))
        "#;
        let routes = routes_in_source(src, src).unwrap();
        let expected = [
            ("GET", "/v1/apps"),
            ("POST", "/v1/apps"),
            ("DELETE", "/v1/apps/{id}"),
            ("GET", "/v1/apps/{id}"),
            ("PATCH", "/v1/apps/{id}"),
            ("GET", "/oauth/callback"),
            ("GET", "/files/{path}"),
        ];
        assert_eq!(
            routes,
            expected
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(routes_in_source(r#".route("/x", any(h))"#, "").is_err());
        assert!(routes_in_source(r#".nest("/v1", api())"#, "").is_err());
        assert!(routes_in_source(r#".route(&format!("/x"), get(h))"#, "").is_err());
    }

    #[test]
    fn a_missing_route_is_detected() {
        // What the coverage test does, on a router with one undocumented route.
        let src = r#".route("/auth/login", post(login)).route("/v1/secret-new-thing", post(h))"#;
        let routes: BTreeSet<_> = routes_in_source(src, src).unwrap().into_iter().collect();
        let documented: BTreeSet<_> = operations(document()).into_iter().collect();
        let missing: Vec<_> = routes.difference(&documented).cloned().collect();
        assert_eq!(
            missing,
            vec![("POST".to_string(), "/v1/secret-new-thing".to_string())]
        );
    }
}
