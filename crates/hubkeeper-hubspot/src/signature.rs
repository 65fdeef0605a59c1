//! HubSpot request signatures, as computed by HubSpot's official SDKs.
//!
//! The signing functions are shared by the webhook verifier (Hubkeeper) and the simulator (which
//! signs the batches it delivers), so both sides of every test use one implementation whose
//! correctness is pinned by the SDK test vectors below.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Which signature scheme a request carries: the domain's type, so the versions an app accepts
/// and the versions the verifier checks are one vocabulary.
pub use hubkeeper_domain::app::SignatureVersion;

/// v1: lowercase hex SHA-256 of `client_secret + body`.
pub fn sign_v1(client_secret: &str, body: &[u8]) -> String {
    hex::encode(digest_v1(client_secret, body))
}

/// v2: lowercase hex SHA-256 of `client_secret + method + uri + body`.
pub fn sign_v2(client_secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    hex::encode(digest_v2(client_secret, method, uri, body))
}

/// v3: base64 HMAC-SHA256 keyed by the client secret over
/// `method + decoded uri + body + timestamp_ms`.
pub fn sign_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> String {
    let mac = v3_mac(client_secret, method, uri, body, timestamp_ms);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) fn v3_mac(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for HMAC.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(client_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(method.as_bytes());
    mac.update(v3_decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    mac
}

/// HubSpot decodes exactly these escapes before hashing a v3 URI (see the SDKs' `uri_decode_map`).
const V3_DECODES: [(&str, &str); 12] = [
    ("%3A", ":"),
    ("%2F", "/"),
    ("%3F", "?"),
    ("%40", "@"),
    ("%21", "!"),
    ("%24", "$"),
    ("%27", "'"),
    ("%28", "("),
    ("%29", ")"),
    ("%2A", "*"),
    ("%2C", ","),
    ("%3B", ";"),
];

/// Decodes the percent-escapes HubSpot decodes before it signs a v3 request; every other escape
/// (and a literal `?` starting the query) is hashed as sent.
pub fn v3_decode_uri(uri: &str) -> String {
    let mut out = uri.to_string();
    for (from, to) in V3_DECODES {
        if out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------------

/// Header carrying the v1/v2 signature.
pub const HEADER_SIGNATURE: &str = "x-hubspot-signature";
/// Header naming the scheme of [`HEADER_SIGNATURE`] (`v1` or `v2`).
pub const HEADER_SIGNATURE_VERSION: &str = "x-hubspot-signature-version";
/// Header carrying the v3 signature.
pub const HEADER_SIGNATURE_V3: &str = "x-hubspot-signature-v3";
/// Header carrying the v3 signing time (Unix milliseconds).
pub const HEADER_REQUEST_TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// Which signatures an endpoint trusts and how much clock drift it tolerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Schemes this endpoint trusts. v1 and v2 sign no timestamp, so accepting them allows a
    /// captured request to be replayed forever; the default therefore trusts v3 only (HubSpot
    /// sends v3 headers alongside v1/v2 on every request).
    pub accepted: Vec<SignatureVersion>,
    /// Oldest v3 timestamp accepted; HubSpot documents 5 minutes.
    pub max_age: Duration,
    /// How far a v3 timestamp may lie in the future, to absorb clock skew between HubSpot and us.
    pub max_future_skew: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            accepted: vec![SignatureVersion::V3],
            max_age: Duration::from_secs(5 * 60),
            max_future_skew: Duration::from_secs(30),
        }
    }
}

impl VerifierConfig {
    /// Trusts every scheme HubSpot uses, still preferring v3 when its headers are present.
    /// Needed for senders that only produce v1/v2 (e.g. legacy CRM cards).
    pub fn accept_all() -> Self {
        Self {
            accepted: vec![
                SignatureVersion::V1,
                SignatureVersion::V2,
                SignatureVersion::V3,
            ],
            ..Self::default()
        }
    }

    fn accepts(&self, v: SignatureVersion) -> bool {
        self.accepted.contains(&v)
    }
}

/// A request as it must be verified: the URI is the *public* one HubSpot called (scheme, host,
/// path and query), which behind a proxy differs from what the server sees, so the caller
/// rebuilds it from its configured public base URL.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRequest<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// The raw bytes as received; a re-serialised body would not verify.
    pub body: &'a [u8],
    pub signature: Option<&'a str>,
    pub signature_version: Option<&'a str>,
    pub signature_v3: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

impl<'a> IncomingRequest<'a> {
    /// Picks the signature headers out of `headers`. A header value that is not visible ASCII
    /// is kept as an empty string so that it fails verification rather than looking absent.
    pub fn from_headers(
        method: &'a str,
        uri: &'a str,
        body: &'a [u8],
        headers: &'a reqwest::header::HeaderMap,
    ) -> Self {
        let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
        Self {
            method,
            uri,
            body,
            signature: get(HEADER_SIGNATURE),
            signature_version: get(HEADER_SIGNATURE_VERSION),
            signature_v3: get(HEADER_SIGNATURE_V3),
            timestamp: get(HEADER_REQUEST_TIMESTAMP),
        }
    }
}

/// Why a request failed verification. Every message is safe to return to the caller: it names
/// the problem but never echoes a signature, a secret or the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header `{0}`")]
    MissingHeader(&'static str),
    #[error("unsupported signature version")]
    UnsupportedVersion,
    #[error("signature version {} is not accepted by this endpoint", .0.as_str())]
    VersionNotAccepted(SignatureVersion),
    #[error("malformed request timestamp")]
    MalformedTimestamp,
    #[error("request timestamp is older than the accepted window")]
    StaleTimestamp,
    #[error("request timestamp is too far in the future")]
    FutureTimestamp,
    #[error("{} signature does not match", .0.as_str())]
    Mismatch(SignatureVersion),
}

impl SignatureError {
    /// Stable label for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "missing_header",
            SignatureError::UnsupportedVersion => "unsupported_version",
            SignatureError::VersionNotAccepted(_) => "version_not_accepted",
            SignatureError::MalformedTimestamp => "malformed_timestamp",
            SignatureError::StaleTimestamp => "stale_timestamp",
            SignatureError::FutureTimestamp => "future_timestamp",
            SignatureError::Mismatch(_) => "mismatch",
        }
    }
}

/// Verifies a HubSpot-signed request and returns the scheme that vouched for it.
///
/// v3 is used whenever its signature header is present and v3 is accepted, and then it alone
/// decides: falling back to v1/v2 after a v3 failure would let an attacker strip the v3 headers
/// of a replayed request. Otherwise the v1/v2 signature is checked as its version header says.
pub fn verify(
    config: &VerifierConfig,
    client_secret: &str,
    req: &IncomingRequest<'_>,
    now_ms: i64,
) -> Result<SignatureVersion, SignatureError> {
    if let (Some(sig), true) = (req.signature_v3, config.accepts(SignatureVersion::V3)) {
        let ts_raw = req
            .timestamp
            .ok_or(SignatureError::MissingHeader(HEADER_REQUEST_TIMESTAMP))?;
        let ts = parse_timestamp(ts_raw)?;
        check_freshness(config, ts, now_ms)?;
        let expected = v3_mac(client_secret, req.method, req.uri, req.body, ts)
            .finalize()
            .into_bytes();
        let provided = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .map_err(|_| SignatureError::Mismatch(SignatureVersion::V3))?;
        return if bool::from(provided.as_slice().ct_eq(expected.as_slice())) {
            Ok(SignatureVersion::V3)
        } else {
            Err(SignatureError::Mismatch(SignatureVersion::V3))
        };
    }

    let Some(sig) = req.signature else {
        // Name the header the endpoint would have been satisfied with.
        return Err(
            if config.accepts(SignatureVersion::V3) && req.signature_v3.is_none() {
                SignatureError::MissingHeader(HEADER_SIGNATURE_V3)
            } else {
                SignatureError::MissingHeader(HEADER_SIGNATURE)
            },
        );
    };
    let version = req
        .signature_version
        .ok_or(SignatureError::MissingHeader(HEADER_SIGNATURE_VERSION))?
        .parse::<SignatureVersion>()
        .map_err(|_| SignatureError::UnsupportedVersion)?;
    if version == SignatureVersion::V3 {
        // v3 travels in its own header; `Signature-Version: v3` on the v1/v2 header is not a
        // scheme HubSpot uses.
        return Err(SignatureError::UnsupportedVersion);
    }
    if !config.accepts(version) {
        return Err(SignatureError::VersionNotAccepted(version));
    }
    let expected = match version {
        SignatureVersion::V1 => digest_v1(client_secret, req.body),
        _ => digest_v2(client_secret, req.method, req.uri, req.body),
    };
    let provided = hex::decode(sig.trim()).map_err(|_| SignatureError::Mismatch(version))?;
    if bool::from(provided.as_slice().ct_eq(expected.as_slice())) {
        Ok(version)
    } else {
        Err(SignatureError::Mismatch(version))
    }
}

fn parse_timestamp(raw: &str) -> Result<i64, SignatureError> {
    let raw = raw.trim();
    // Only plain decimal digits: `+5` or ` 5` would hash differently from what HubSpot signed.
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    raw.parse::<i64>()
        .map_err(|_| SignatureError::MalformedTimestamp)
}

fn check_freshness(config: &VerifierConfig, ts: i64, now_ms: i64) -> Result<(), SignatureError> {
    let age = i128::from(now_ms) - i128::from(ts);
    if age > config.max_age.as_millis() as i128 {
        return Err(SignatureError::StaleTimestamp);
    }
    if -age > config.max_future_skew.as_millis() as i128 {
        return Err(SignatureError::FutureTimestamp);
    }
    Ok(())
}

fn digest_v1(client_secret: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(client_secret.as_bytes());
    h.update(body);
    h.finalize().into()
}

fn digest_v2(client_secret: &str, method: &str, uri: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(client_secret.as_bytes());
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://www.example.com/webhook_uri";
    const BODY: &[u8] = b"{'example_field':'example_value'}";

    #[test]
    fn sdk_vector_v1() {
        assert_eq!(
            sign_v1(SECRET, BODY),
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
        );
    }

    #[test]
    fn sdk_vector_v2() {
        assert_eq!(
            sign_v2(SECRET, "POST", URI, BODY),
            "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
        );
    }

    #[test]
    fn sdk_vector_v3() {
        assert_eq!(
            sign_v3(SECRET, "POST", URI, BODY, 1_693_657_560_000),
            "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
        );
    }

    #[test]
    fn v3_decodes_listed_escapes_only() {
        assert_eq!(
            v3_decode_uri("https://h/p%3Fa%3Ab?x=%40%20"),
            "https://h/p?a:b?x=@%20"
        );
    }

    // --- verifier -------------------------------------------------------------------------

    const TS: i64 = 1_693_657_560_000;
    const V3_SIG: &str = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=";
    const V1_SIG: &str = "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750";
    const V2_SIG: &str = "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383";

    fn req<'a>() -> IncomingRequest<'a> {
        IncomingRequest {
            method: "POST",
            uri: URI,
            body: BODY,
            signature: None,
            signature_version: None,
            signature_v3: None,
            timestamp: None,
        }
    }

    fn v3_req<'a>(ts: &'a str) -> IncomingRequest<'a> {
        IncomingRequest {
            signature_v3: Some(V3_SIG),
            timestamp: Some(ts),
            ..req()
        }
    }

    #[test]
    fn sdk_vectors_verify() {
        let all = VerifierConfig::accept_all();
        let ts = TS.to_string();
        assert_eq!(
            verify(&all, SECRET, &v3_req(&ts), TS + 1000),
            Ok(SignatureVersion::V3)
        );
        let v1 = IncomingRequest {
            signature: Some(V1_SIG),
            signature_version: Some("v1"),
            ..req()
        };
        assert_eq!(verify(&all, SECRET, &v1, 0), Ok(SignatureVersion::V1));
        // Hex case does not matter.
        let upper = V2_SIG.to_ascii_uppercase();
        let v2 = IncomingRequest {
            signature: Some(&upper),
            signature_version: Some("V2"),
            ..req()
        };
        assert_eq!(verify(&all, SECRET, &v2, 0), Ok(SignatureVersion::V2));
    }

    #[test]
    fn from_headers_picks_signature_headers() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert("X-HubSpot-Signature", HeaderValue::from_static(V1_SIG));
        h.insert(
            "X-HubSpot-Signature-Version",
            HeaderValue::from_static("v1"),
        );
        h.insert("X-HubSpot-Signature-v3", HeaderValue::from_static(V3_SIG));
        h.insert(
            "X-HubSpot-Request-Timestamp",
            HeaderValue::from_static("1693657560000"),
        );
        let r = IncomingRequest::from_headers("POST", URI, BODY, &h);
        assert_eq!(r.signature, Some(V1_SIG));
        assert_eq!(r.signature_version, Some("v1"));
        assert_eq!(r.signature_v3, Some(V3_SIG));
        assert_eq!(r.timestamp, Some("1693657560000"));
        assert_eq!(
            verify(&VerifierConfig::default(), SECRET, &r, TS),
            Ok(SignatureVersion::V3)
        );
        // v3 not accepted: the v1 header decides.
        let v1_only = VerifierConfig {
            accepted: vec![SignatureVersion::V1],
            ..VerifierConfig::default()
        };
        assert_eq!(verify(&v1_only, SECRET, &r, TS), Ok(SignatureVersion::V1));

        let mut bad = HeaderMap::new();
        bad.insert(
            "X-HubSpot-Request-Timestamp",
            HeaderValue::from_bytes(b"\xff17").unwrap(),
        );
        bad.insert("X-HubSpot-Signature-v3", HeaderValue::from_static(V3_SIG));
        let r = IncomingRequest::from_headers("POST", URI, BODY, &bad);
        assert_eq!(r.timestamp, Some(""));
        assert_eq!(
            verify(&VerifierConfig::default(), SECRET, &r, TS),
            Err(SignatureError::MalformedTimestamp)
        );
    }

    #[test]
    fn v3_is_preferred_and_never_falls_back() {
        let ts = TS.to_string();
        let both = IncomingRequest {
            signature: Some(V1_SIG),
            signature_version: Some("v1"),
            signature_v3: Some("AAAA"),
            timestamp: Some(&ts),
            ..req()
        };
        assert_eq!(
            verify(&VerifierConfig::accept_all(), SECRET, &both, TS),
            Err(SignatureError::Mismatch(SignatureVersion::V3))
        );
    }

    #[test]
    fn timestamp_window() {
        let cfg = VerifierConfig::default();
        let ts = TS.to_string();
        let five_min = 5 * 60 * 1000;
        assert_eq!(
            verify(&cfg, SECRET, &v3_req(&ts), TS + five_min),
            Ok(SignatureVersion::V3)
        );
        assert_eq!(
            verify(&cfg, SECRET, &v3_req(&ts), TS + five_min + 1),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            verify(&cfg, SECRET, &v3_req(&ts), TS - 30_000),
            Ok(SignatureVersion::V3)
        );
        assert_eq!(
            verify(&cfg, SECRET, &v3_req(&ts), TS - 30_001),
            Err(SignatureError::FutureTimestamp)
        );
        for bad in [
            "",
            "abc",
            "+1693657560000",
            "-5",
            "1.5",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(&cfg, SECRET, &v3_req(bad), TS),
                Err(SignatureError::MalformedTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_and_unacceptable_headers() {
        let cfg = VerifierConfig::default();
        assert_eq!(
            verify(&cfg, SECRET, &req(), TS),
            Err(SignatureError::MissingHeader(HEADER_SIGNATURE_V3))
        );
        let no_ts = IncomingRequest {
            signature_v3: Some(V3_SIG),
            ..req()
        };
        assert_eq!(
            verify(&cfg, SECRET, &no_ts, TS),
            Err(SignatureError::MissingHeader(HEADER_REQUEST_TIMESTAMP))
        );
        let v1 = IncomingRequest {
            signature: Some(V1_SIG),
            signature_version: Some("v1"),
            ..req()
        };
        assert_eq!(
            verify(&cfg, SECRET, &v1, TS),
            Err(SignatureError::VersionNotAccepted(SignatureVersion::V1))
        );
        let all = VerifierConfig::accept_all();
        let no_version = IncomingRequest {
            signature: Some(V1_SIG),
            ..req()
        };
        assert_eq!(
            verify(&all, SECRET, &no_version, TS),
            Err(SignatureError::MissingHeader(HEADER_SIGNATURE_VERSION))
        );
        for version in ["v4", "v3", "sha256"] {
            let r = IncomingRequest {
                signature: Some(V1_SIG),
                signature_version: Some(version),
                ..req()
            };
            assert_eq!(
                verify(&all, SECRET, &r, TS),
                Err(SignatureError::UnsupportedVersion)
            );
        }
        let v1_only = VerifierConfig {
            accepted: vec![SignatureVersion::V1],
            ..VerifierConfig::default()
        };
        assert_eq!(
            verify(&v1_only, SECRET, &req(), TS),
            Err(SignatureError::MissingHeader(HEADER_SIGNATURE))
        );
        let not_hex = IncomingRequest {
            signature: Some("zz"),
            signature_version: Some("v1"),
            ..req()
        };
        assert_eq!(
            verify(&all, SECRET, &not_hex, TS),
            Err(SignatureError::Mismatch(SignatureVersion::V1))
        );
    }

    #[test]
    fn errors_do_not_echo_inputs() {
        let ts = TS.to_string();
        let r = IncomingRequest {
            signature_v3: Some("c2VjcmV0LXNpZw=="),
            ..v3_req(&ts)
        };
        let e = verify(&VerifierConfig::default(), SECRET, &r, TS).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("c2VjcmV0") && !shown.contains(SECRET) && !shown.contains(V3_SIG));
        assert_eq!(e.class(), "mismatch");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Mutation {
            Body(usize),
            Uri,
            Method,
            Timestamp(i64),
            Secret,
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                any::<usize>().prop_map(Mutation::Body),
                Just(Mutation::Uri),
                Just(Mutation::Method),
                prop_oneof![-200_000i64..=-1, 1i64..=20_000].prop_map(Mutation::Timestamp),
                Just(Mutation::Secret),
            ]
        }

        #[derive(Debug)]
        struct Signed {
            secret: String,
            method: String,
            uri: String,
            body: Vec<u8>,
            ts: i64,
        }

        fn signed() -> impl Strategy<Value = Signed> {
            (
                "[ -~]{1,40}",
                "(GET|POST|PUT|DELETE|PATCH)",
                "https://[a-z]{1,12}\\.example/[a-zA-Z0-9/%?=&:@!$'()*,;_-]{0,40}",
                proptest::collection::vec(any::<u8>(), 0..256),
                1_500_000_000_000i64..2_000_000_000_000,
            )
                .prop_map(|(secret, method, uri, body, ts)| Signed {
                    secret,
                    method,
                    uri,
                    body,
                    ts,
                })
        }

        /// Signs `s` with every scheme, applies `m` to the request (or the verifying secret),
        /// and returns what the verifier says per scheme.
        fn verify_after(s: &Signed, m: &Mutation) -> [Result<SignatureVersion, SignatureError>; 3] {
            let sig1 = sign_v1(&s.secret, &s.body);
            let sig2 = sign_v2(&s.secret, &s.method, &s.uri, &s.body);
            let sig3 = sign_v3(&s.secret, &s.method, &s.uri, &s.body, s.ts);
            let mut secret = s.secret.clone();
            let mut method = s.method.clone();
            let mut uri = s.uri.clone();
            let mut body = s.body.clone();
            let mut ts = s.ts;
            match m {
                Mutation::Body(i) => {
                    if body.is_empty() {
                        body.push(b'x');
                    } else {
                        let i = i % body.len();
                        body[i] ^= 0x01;
                    }
                }
                // `x` never completes a percent-escape, so the v3 decoding cannot undo it.
                Mutation::Uri => uri.push('x'),
                Mutation::Method => method.push('X'),
                Mutation::Timestamp(d) => ts += d,
                Mutation::Secret => secret.push('!'),
            }
            let ts_s = ts.to_string();
            let cfg = VerifierConfig::accept_all();
            let base = IncomingRequest {
                method: &method,
                uri: &uri,
                body: &body,
                signature: None,
                signature_version: None,
                signature_v3: None,
                timestamp: None,
            };
            // Verify at the (possibly shifted) request time so freshness never masks the result.
            let now = ts;
            [
                verify(
                    &cfg,
                    &secret,
                    &IncomingRequest {
                        signature: Some(&sig1),
                        signature_version: Some("v1"),
                        ..base
                    },
                    now,
                ),
                verify(
                    &cfg,
                    &secret,
                    &IncomingRequest {
                        signature: Some(&sig2),
                        signature_version: Some("v2"),
                        ..base
                    },
                    now,
                ),
                verify(
                    &cfg,
                    &secret,
                    &IncomingRequest {
                        signature_v3: Some(&sig3),
                        timestamp: Some(&ts_s),
                        ..base
                    },
                    now,
                ),
            ]
        }

        proptest! {
            #[test]
            fn untouched_requests_verify(s in signed()) {
                let ts = s.ts.to_string();
                let sig3 = sign_v3(&s.secret, &s.method, &s.uri, &s.body, s.ts);
                let r = IncomingRequest {
                    method: &s.method,
                    uri: &s.uri,
                    body: &s.body,
                    signature: None,
                    signature_version: None,
                    signature_v3: Some(&sig3),
                    timestamp: Some(&ts),
                };
                prop_assert_eq!(verify(&VerifierConfig::default(), &s.secret, &r, s.ts), Ok(SignatureVersion::V3));
                let sig2 = sign_v2(&s.secret, &s.method, &s.uri, &s.body);
                let r2 = IncomingRequest { signature: Some(&sig2), signature_version: Some("v2"), signature_v3: None, ..r };
                prop_assert_eq!(verify(&VerifierConfig::accept_all(), &s.secret, &r2, s.ts), Ok(SignatureVersion::V2));
            }

            #[test]
            fn any_change_fails(s in signed(), m in mutation()) {
                let [v1, v2, v3] = verify_after(&s, &m);
                // v3 covers everything.
                prop_assert_eq!(v3, Err(SignatureError::Mismatch(SignatureVersion::V3)));
                // v2 covers all but the timestamp, v1 only body and secret.
                let v2_covers = !matches!(m, Mutation::Timestamp(_));
                let v1_covers = matches!(m, Mutation::Body(_) | Mutation::Secret);
                if v2_covers {
                    prop_assert_eq!(v2, Err(SignatureError::Mismatch(SignatureVersion::V2)));
                } else {
                    prop_assert_eq!(v2, Ok(SignatureVersion::V2));
                }
                if v1_covers {
                    prop_assert_eq!(v1, Err(SignatureError::Mismatch(SignatureVersion::V1)));
                } else {
                    prop_assert_eq!(v1, Ok(SignatureVersion::V1));
                }
            }

            #[test]
            fn replayed_v3_outside_window_is_rejected(s in signed(), late in 300_001i64..10_000_000) {
                let ts = s.ts.to_string();
                let sig3 = sign_v3(&s.secret, &s.method, &s.uri, &s.body, s.ts);
                let r = IncomingRequest {
                    method: &s.method,
                    uri: &s.uri,
                    body: &s.body,
                    signature: None,
                    signature_version: None,
                    signature_v3: Some(&sig3),
                    timestamp: Some(&ts),
                };
                prop_assert_eq!(verify(&VerifierConfig::default(), &s.secret, &r, s.ts + late), Err(SignatureError::StaleTimestamp));
            }
        }
    }
}
