//! A reader of `.route(…)` calls in Rust source, for the test that keeps the OpenAPI document
//! and the router in step. Compiled for tests only.

use super::normalize_path;

/// Reads `(METHOD, path)` of every `.route("path", method(handler).other(handler))` in Rust
/// source. Paths may be string literals or `const NAME: &str = "…"` defined in `consts_from`.
/// Anything it cannot read exactly (a computed path, `any(…)`, `.nest(…)`, `.route_service(…)`)
/// is an error, so the coverage test fails loudly instead of missing a route.
pub(super) fn routes_in_source(
    src: &str,
    consts_from: &str,
) -> Result<Vec<(String, String)>, String> {
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
