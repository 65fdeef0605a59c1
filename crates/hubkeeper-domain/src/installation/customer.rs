//! The app's own customer behind an installation: the reference the app chose
//! (`external_ref`) and a small JSON object of its own (`metadata`), as a connect session
//! carries them into the connect that follows.

use serde_json::{Map, Value};
use thiserror::Error;

/// Longest `external_ref` accepted.
pub const MAX_EXTERNAL_REF_CHARS: usize = 128;
/// Largest `metadata` accepted, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Deepest nesting of `metadata` accepted.
pub const MAX_METADATA_DEPTH: usize = 4;

/// The app's customer of one connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRef {
    /// The app's id of its customer ([`validate_external_ref`]).
    pub external_ref: String,
    /// Free JSON object of the app ([`validate_metadata`]); `None` when not given.
    pub metadata: Option<Map<String, Value>>,
}

/// Why a customer reference or its metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CustomerRefError {
    /// Bad `external_ref`.
    #[error(
        "external_ref {reason} (1 to {MAX_EXTERNAL_REF_CHARS} characters: letters, digits and \
         . _ - : @ + /)"
    )]
    InvalidExternalRef {
        /// What is wrong.
        reason: &'static str,
    },
    /// `metadata` is not a JSON object.
    #[error("metadata must be a JSON object")]
    MetadataNotAnObject,
    /// `metadata` too large.
    #[error("metadata is {bytes} bytes as JSON; at most {MAX_METADATA_BYTES} are accepted")]
    MetadataTooLarge {
        /// Its compact size.
        bytes: usize,
    },
    /// `metadata` nested too deeply.
    #[error("metadata is nested more than {MAX_METADATA_DEPTH} levels deep")]
    MetadataTooDeep,
}

/// Checks an app's customer id: ASCII letters, digits and `. _ - : @ + /`, 1 to
/// [`MAX_EXTERNAL_REF_CHARS`] characters, nothing trimmed or changed (the app looks it up by
/// exact value).
pub fn validate_external_ref(raw: &str) -> Result<String, CustomerRefError> {
    let invalid = |reason| CustomerRefError::InvalidExternalRef { reason };
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.chars().count() > MAX_EXTERNAL_REF_CHARS {
        return Err(invalid("is too long"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:@+/".contains(c);
    if !raw.chars().all(allowed) {
        return Err(invalid("contains a character that is not allowed"));
    }
    Ok(raw.to_owned())
}

/// Checks an app's metadata: a JSON object of at most [`MAX_METADATA_BYTES`] bytes (compact)
/// and [`MAX_METADATA_DEPTH`] levels.
pub fn validate_metadata(value: Value) -> Result<Map<String, Value>, CustomerRefError> {
    let Value::Object(map) = value else {
        return Err(CustomerRefError::MetadataNotAnObject);
    };
    let bytes = serde_json::to_vec(&map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_METADATA_BYTES {
        return Err(CustomerRefError::MetadataTooLarge { bytes });
    }
    fn depth(value: &Value) -> usize {
        match value {
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if map.values().map(depth).max().unwrap_or(0) + 1 > MAX_METADATA_DEPTH {
        return Err(CustomerRefError::MetadataTooDeep);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn external_refs_are_checked_not_changed() {
        assert_eq!(
            validate_external_ref("cust_42:eu/acme+1@x.io").as_deref(),
            Ok("cust_42:eu/acme+1@x.io")
        );
        for bad in ["", " a", "a b", "ä", "a\n", "<script>"] {
            assert!(validate_external_ref(bad).is_err(), "{bad:?}");
        }
        assert!(validate_external_ref(&"a".repeat(MAX_EXTERNAL_REF_CHARS)).is_ok());
        assert!(validate_external_ref(&"a".repeat(MAX_EXTERNAL_REF_CHARS + 1)).is_err());
    }

    #[test]
    fn metadata_is_a_small_shallow_object() {
        let ok = validate_metadata(json!({"plan": "pro", "seats": 3, "tags": ["a"]})).unwrap();
        assert_eq!(ok["plan"], "pro");
        assert_eq!(
            validate_metadata(json!([1, 2])),
            Err(CustomerRefError::MetadataNotAnObject)
        );
        assert_eq!(
            validate_metadata(json!("x")),
            Err(CustomerRefError::MetadataNotAnObject)
        );
        let big = json!({ "blob": "x".repeat(MAX_METADATA_BYTES) });
        assert!(matches!(
            validate_metadata(big),
            Err(CustomerRefError::MetadataTooLarge { .. })
        ));
        assert!(validate_metadata(json!({"a": {"b": {"c": {"d": 1}}}})).is_ok());
        assert_eq!(
            validate_metadata(json!({"a": {"b": {"c": {"d": {"e": 1}}}}})),
            Err(CustomerRefError::MetadataTooDeep)
        );
    }
}
