//! Who the client is, behind reverse proxies, and the per-client limits that key on it.
//!
//! * The **client address** is the TCP peer, unless the peer is one of the configured trusted
//!   proxies (`HK_TRUSTED_PROXIES`, CIDR list): then the forwarding headers (`Forwarded`, RFC 7239,
//!   else `X-Forwarded-For`) are read from the right, skipping trusted proxies, and the first
//!   address that is not one of them is the client. Everything left of it is whatever the client
//!   wrote and is never believed; from an untrusted peer the headers are ignored altogether.
//! * The **limit key** of an IPv6 client is its /64 (one subscriber usually holds a whole /64),
//!   of an IPv4 client the address itself.
//! * Every request's tracing span carries the address ([`resolve`] runs before the span is made).
//! * The OAuth install and callback routes and `/auth/login` each have their own bucket per
//!   client key in the shared limiter ([`hubkeeper_bus::limiter`]), so N API processes allow the
//!   limit once, not N times, and no process keeps per-client state.
//! * Webhook requests that fail verification (unknown app, bad signature) are counted per client
//!   in the same limiter ([`WebhookFailureLimit`]); a client over the limit is answered 429 and,
//!   in the process that refused it, turned away before any lookup until its window frees up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use hubkeeper_bus::limiter::{Limit, Reservation, SharedRateLimiter};
use ipnet::IpNet;

use crate::error::ApiError;

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// A comma-separated CIDR list; a bare address means that address alone.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match part.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "`{part}` is not a CIDR range (e.g. 10.0.0.0/8) or an address"
                        ))
                    }
                },
            };
            nets.push(net.trunc());
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `headers`.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        // Right to left: the nearest hop first. Stop at the first address we do not trust.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // An unreadable hop (`unknown`, an obfuscated name): nothing left of it can be
                // believed; the last trusted proxy is the best we know.
                None => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The `for=` hops of `Forwarded` if present, else the entries of `X-Forwarded-For`, in order
/// (leftmost first); `None` for entries that are not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        let mut hops = Vec::new();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            for pair in element.split(';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                if key.trim().eq_ignore_ascii_case("for") {
                    hops.push(parse_node(value.trim()));
                }
            }
        }
        return hops;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// `192.0.2.60`, `"192.0.2.60:4711"`, `"[2001:db8::1]:4711"`, `[2001:db8::1]`, `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(inside, _)| inside.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client's address, as [`resolve`] determined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// What per-client limits count by: an IPv4 address, or an IPv6 address's /64.
    pub fn limit_key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                let net = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The middleware: puts the [`ClientAddr`] in the request's extensions (before the tracing span
/// is made, which records it).
pub async fn resolve(
    State(trusted): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let client = trusted.client_of(peer, req.headers());
    req.extensions_mut().insert(ClientAddr(client));
    next.run(req).await
}

/// The client address of a request (the peer's when the middleware did not run, e.g. in unit
/// tests of a single router).
pub fn client_addr(extensions: &axum::http::Extensions) -> ClientAddr {
    extensions.get::<ClientAddr>().copied().unwrap_or_else(|| {
        ClientAddr(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| canonical(addr.ip()))
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        )
    })
}

/// The per-client buckets (each a separate budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBucket {
    OAuthInstall,
    OAuthCallback,
    Login,
    /// Webhook requests that failed verification.
    WebhookFailures,
}

impl ClientBucket {
    pub fn prefix(self) -> &'static str {
        match self {
            ClientBucket::OAuthInstall => "oauth-install:",
            ClientBucket::OAuthCallback => "oauth-callback:",
            ClientBucket::Login => "login:",
            ClientBucket::WebhookFailures => "webhook-failures:",
        }
    }

    fn what(self) -> &'static str {
        match self {
            ClientBucket::OAuthInstall => "install requests",
            ClientBucket::OAuthCallback => "install callbacks",
            ClientBucket::Login => "log-in attempts",
            ClientBucket::WebhookFailures => "webhook requests with an invalid signature",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            ClientBucket::OAuthInstall => "oauth_install",
            ClientBucket::OAuthCallback => "oauth_callback",
            ClientBucket::Login => "login",
            ClientBucket::WebhookFailures => "webhook_failures",
        }
    }
}

/// Where the client comes from and the limits that key on it, as one process configures them.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub trusted_proxies: Arc<TrustedProxies>,
    /// The shared limiter (the same table the API proxy's portal windows live in).
    pub limiter: SharedRateLimiter,
    /// `/auth/login` attempts allowed per client and window.
    pub login_max: u32,
    pub login_window: Duration,
    /// Webhook verification failures allowed per client and window.
    pub webhook_failures: WebhookFailureLimit,
}

impl ClientPolicy {
    /// Counts one log-in attempt of `client`.
    pub async fn check_login(&self, client: ClientAddr) -> Result<(), ApiError> {
        reserve_client(
            &self.limiter,
            ClientBucket::Login,
            client,
            self.login_max,
            self.login_window,
        )
        .await
        .map_err(|wait| limited(ClientBucket::Login, wait))
    }
}

/// Most clients a process remembers as over their webhook failure limit.
const MAX_BLOCKED_CLIENTS: usize = 10_000;

/// The per-client limit on webhook requests that fail verification. The count lives in the
/// shared limiter (every process draws from one budget per client); a process that refused a
/// client also remembers until when, so the client's further requests cost no lookup, no
/// signature check and no round trip to the limiter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookFailureLimit {
    pub max: u32,
    pub window: Duration,
    blocked: Arc<Mutex<HashMap<String, Instant>>>,
}

impl WebhookFailureLimit {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window: window.max(Duration::from_secs(1)),
            blocked: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How long `client` is still refused here, if this process refused it lately.
    pub fn blocked(&self, client: ClientAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().ok()?;
        let until = blocked.get(&client.limit_key())?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts one failed request of `client`: `Err(wait)` when that was one too many.
    pub async fn count(
        &self,
        limiter: &SharedRateLimiter,
        client: ClientAddr,
    ) -> Result<(), Duration> {
        let wait = match reserve_client(
            limiter,
            ClientBucket::WebhookFailures,
            client,
            self.max,
            self.window,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        if let Ok(mut blocked) = self.blocked.lock() {
            let now = Instant::now();
            if blocked.len() >= MAX_BLOCKED_CLIENTS {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < MAX_BLOCKED_CLIENTS {
                blocked.insert(client.limit_key(), now + wait);
            }
        }
        Err(wait)
    }
}

/// Counts one request of `client` in `bucket` against `max` per `window`, shared by every
/// process: `Err(wait)` when the window is full. If the shared store is unreachable the request
/// proceeds (logged): an outage of the limiter must not lock everyone out.
pub async fn reserve_client(
    limiter: &SharedRateLimiter,
    bucket: ClientBucket,
    client: ClientAddr,
    max: u32,
    window: Duration,
) -> Result<(), Duration> {
    let key = format!("{}{}", bucket.prefix(), client.limit_key());
    match limiter
        .reserve(&key, Limit::refuse_when_full(max, window))
        .await
    {
        Ok(Reservation::Granted(_)) => Ok(()),
        Ok(Reservation::RetryAfter(wait)) => {
            metrics::counter!("hk_client_rate_limited_total", "bucket" => bucket.metric())
                .increment(1);
            Err(wait)
        }
        Err(e) => {
            tracing::warn!(error = %e, bucket = bucket.metric(), "client rate limit not checked");
            Ok(())
        }
    }
}

/// The 429 answer for a full `bucket`.
pub fn limited(bucket: ClientBucket, wait: Duration) -> ApiError {
    let secs = hubkeeper_core::proxy::retry_after_secs(wait);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many {} from this address; try again in {secs} s",
            bucket.what()
        ),
    )
    .retry_after(secs)
}

/// Forgets every per-client bucket (the "clear rate limits" action).
pub async fn clear_all(limiter: &SharedRateLimiter) {
    for bucket in [
        ClientBucket::OAuthInstall,
        ClientBucket::OAuthCallback,
        ClientBucket::Login,
        ClientBucket::WebhookFailures,
    ] {
        if let Err(e) = limiter.clear(bucket.prefix()).await {
            tracing::warn!(error = %e, bucket = bucket.metric(), "rate limits not cleared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let spoof = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(
            trusted.client_of(ip("203.0.113.9"), &spoof),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(none.client_of(ip("10.1.1.1"), &spoof), ip("10.1.1.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.0.2.10").unwrap();
        // The client wrote 1.1.1.1 itself; the edge proxy appended the real peer 203.0.113.5,
        // then an inner proxy appended the edge's address.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 192.0.2.10")]);
        assert_eq!(trusted.client_of(ip("10.2.3.4"), &h), ip("203.0.113.5"));
        let two_headers = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.6"),
        ]);
        assert_eq!(
            trusted.client_of(ip("10.2.3.4"), &two_headers),
            ip("203.0.113.6")
        );
        // Forwarded wins over X-Forwarded-For; ports and quoting are understood.
        let fwd = headers(&[
            (
                "forwarded",
                "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=192.0.2.10",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(
            trusted.client_of(ip("10.0.0.1"), &fwd),
            ip("2001:db8:cafe::17")
        );
        // Only trusted hops: the leftmost of them is the best we know.
        let all_trusted = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            trusted.client_of(ip("10.0.0.1"), &all_trusted),
            ip("10.9.9.9")
        );
        // An unreadable hop stops the walk.
        let unknown = headers(&[("x-forwarded-for", "1.1.1.1, unknown")]);
        assert_eq!(trusted.client_of(ip("10.0.0.1"), &unknown), ip("10.0.0.1"));
        // No header: the peer.
        assert_eq!(
            trusted.client_of(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientAddr(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = ClientAddr(ip("2001:db8:1:3::1"));
        assert_eq!(a.limit_key(), "2001:db8:1:2::/64");
        assert_eq!(a.limit_key(), b.limit_key());
        assert_ne!(a.limit_key(), c.limit_key());
        assert_eq!(ClientAddr(ip("203.0.113.7")).limit_key(), "203.0.113.7");
        // An IPv4-mapped peer counts as its IPv4 address.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_of(ip("::ffff:203.0.113.7"), &HeaderMap::new()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn the_trusted_list_is_validated() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let t = TrustedProxies::parse("10.0.0.0/8,fd00::/8 , 127.0.0.1").unwrap();
        assert!(t.contains(ip("10.255.0.1")) && t.contains(ip("fd12::1")));
        assert!(t.contains(ip("127.0.0.1")) && !t.contains(ip("127.0.0.2")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
