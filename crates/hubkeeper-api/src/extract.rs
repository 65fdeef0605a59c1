//! Extractors whose every rejection is an [`ApiError`], so a malformed query string or body gets
//! the same JSON answer as any other error (axum's own extractors answer `text/plain`).
//!
//! [`Query`] also holds the rules every query string follows: a parameter given twice, or given
//! with an empty value (`?to=`), is refused with 400 naming it rather than silently read as
//! "absent"; a value of the wrong type names its parameter too.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Query parameters deserialized into `T`.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

/// Reads a query string (without its `?`) into `T` under the rules above.
pub fn parse_query<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if seen.iter().any(|n| *n == name) {
            return Err(ApiError::invalid_parameter(
                name,
                "given more than once; send it once",
            ));
        }
        if value.trim().is_empty() {
            return Err(ApiError::invalid_parameter(
                name,
                "empty; leave the parameter out instead",
            ));
        }
        seen.push(name.into_owned());
    }
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // Errors about the whole string (a missing field) name the field in backticks.
        let named = if path == "." || path.is_empty() {
            inner.split('`').nth(1).map(str::to_owned)
        } else {
            Some(path)
        };
        match named {
            Some(name) => ApiError::invalid_parameter(name, inner),
            None => ApiError::bad_request(format!("invalid query string: {inner}")),
        }
    })
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// A JSON object request body deserialized into `T`; any failure is a 400 (413 when too
/// large).
#[derive(Debug, Clone, Default)]
pub struct JsonBody<T>(pub T);

/// Reads a request body that must be a JSON object. Serde would also build a struct from an
/// array of its fields in order (`[null, 3]`), which no client means and no document allows.
pub fn parse_json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    }
    let axum::Json(value) = axum::Json::<T>::from_bytes(body)?;
    Ok(value)
}

/// Whether a `Content-Type` value names JSON (`application/json` or any `+json` type).
pub(crate) fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(axum::http::header::CONTENT_TYPE)) {
            return Err(ApiError::bad_request(
                "invalid JSON body: send it with Content-Type: application/json",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::from_status(e.status(), e.body_text()))?;
        parse_json_object(&body).map(JsonBody)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Params {
        limit: Option<u32>,
        q: Option<String>,
        force: Option<bool>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Required {
        at: String,
    }

    fn refused<T: DeserializeOwned + std::fmt::Debug>(raw: &str) -> ApiError {
        parse_query::<T>(raw).expect_err(raw)
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[test]
    fn bodies_must_be_json_objects() {
        for raw in [
            "[null, 3]",
            "[]",
            "null",
            "3",
            "\"x\"",
            "",
            "{",
            "{\"a\": \"x\"}",
        ] {
            let e = parse_json_object::<Body>(raw.as_bytes()).expect_err(raw);
            assert_eq!(
                (e.status(), e.code()),
                (StatusCode::BAD_REQUEST, "bad_request"),
                "{raw}"
            );
        }
        let ok: Body = parse_json_object(b" {\"a\": 1}").unwrap();
        assert_eq!((ok.a, ok.b), (Some(1), None));
    }

    #[test]
    fn repeated_empty_and_mistyped_parameters_are_named() {
        for (raw, name) in [
            ("limit=1&limit=2", "limit"),
            ("q=", "q"),
            ("q=%20", "q"),
            ("limit=abc", "limit"),
            ("limit=-1", "limit"),
            ("force=maybe", "force"),
            ("limit=1&unknown=", "unknown"),
        ] {
            let e = refused::<Params>(raw);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{raw}");
            assert_eq!(e.code(), "invalid_parameter", "{raw}");
            assert_eq!(e.parameter(), Some(name), "{raw}: {e}");
        }
        assert_eq!(refused::<Required>("").parameter(), Some("at"));
        let ok: Params = parse_query("limit=5&q=x%20y&force=true").unwrap();
        assert_eq!(
            (ok.limit, ok.q.as_deref(), ok.force),
            (Some(5), Some("x y"), Some(true))
        );
        let none: Params = parse_query("").unwrap();
        assert!(none.limit.is_none() && none.q.is_none());
    }
}
