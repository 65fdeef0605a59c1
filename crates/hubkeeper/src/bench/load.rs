//! A closed-loop load generator: `concurrency` clients, each sending its next request as soon as
//! the previous one is answered, for a fixed time. Latencies are kept whole (not bucketed) so the
//! percentiles are exact.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::percentile;

#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LoadFigures {
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label:<28} c={:<3} {:>9.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {}",
            self.concurrency, self.per_second, self.p50_ms, self.p99_ms, self.p999_ms, self.errors
        )
    }
}

/// Runs `call(client, iteration)` from `concurrency` clients for `duration`. A call returns
/// whether it succeeded; failed calls are counted, not timed.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, call: F) -> LoadFigures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for client in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(client, i).await {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let max_ms = all.iter().cloned().fold(0.0, f64::max);
    LoadFigures {
        concurrency,
        requests: all.len() as u64,
        errors,
        seconds,
        per_second: all.len() as f64 / seconds,
        p50_ms: percentile(&mut all, 50.0),
        p99_ms: percentile(&mut all, 99.0),
        p999_ms: percentile(&mut all, 99.9),
        max_ms,
    }
}

/// One GET a load client may send: where to, with which `Authorization` header (none when
/// empty).
pub struct Get {
    pub url: String,
    pub authorization: String,
}

/// A request as the bytes of an HTTP/1.1 request, with the address to send it to. Built once per
/// request the load sends (or once for a request sent many times), so the client's own work per
/// call is a write and a read.
pub struct RawRequest {
    addr: String,
    bytes: Vec<u8>,
}

impl RawRequest {
    /// `None` for anything but a plain `http://host:port/path` URL. `headers` come after `host`
    /// and `accept`; a `content-length` is added for every method but GET.
    pub fn new(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (addr, path) = rest.split_at(rest.find('/')?);
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\n");
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if method != "GET" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        Some(Self {
            addr: addr.to_owned(),
            bytes,
        })
    }

    fn get(get: &Get) -> Option<Self> {
        if get.authorization.is_empty() {
            Self::new("GET", &get.url, &[], &[])
        } else {
            Self::new(
                "GET",
                &get.url,
                &[("authorization", &get.authorization)],
                &[],
            )
        }
    }
}

/// The keep-alive connections of a load's clients, one each (see [`KeepAlive`]).
#[derive(Clone)]
struct Connections(Arc<Vec<tokio::sync::Mutex<KeepAlive>>>);

impl Connections {
    fn new(clients: usize) -> Self {
        Self(Arc::new(
            (0..clients)
                .map(|_| tokio::sync::Mutex::new(KeepAlive::default()))
                .collect(),
        ))
    }

    /// Sends `request` on `client`'s connection; whether a 2xx answer came back whole.
    async fn send(&self, client: usize, request: &RawRequest) -> bool {
        let Some(connection) = self.0.get(client) else {
            return false;
        };
        // Only this client uses its connection: the lock is never contended.
        connection.lock().await.send(request).await
    }
}

/// A keep-alive HTTP/1.1 connection of one load client: the request bytes are prepared once
/// and the answer is read whole (status line, headers, `content-length` bytes of body), so the
/// load generator, on the same cores as the servers it measures, costs little more than the
/// kernel's TCP work. Anything it does not understand (chunked bodies, a closed connection) is a
/// failed call and a new connection.
#[derive(Default)]
struct KeepAlive {
    stream: Option<tokio::net::TcpStream>,
    buffer: Vec<u8>,
}

impl KeepAlive {
    async fn send(&mut self, request: &RawRequest) -> bool {
        let ok = self.exchange(request).await.unwrap_or(false);
        if !ok {
            self.stream = None;
        }
        ok
    }

    async fn exchange(&mut self, request: &RawRequest) -> std::io::Result<bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&request.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        stream.write_all(&request.bytes).await?;
        self.buffer.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
        };
        let Ok(head) = std::str::from_utf8(&self.buffer[..head_end]) else {
            return Ok(false);
        };
        let success = head
            .split(' ')
            .nth(1)
            .is_some_and(|status| status.starts_with('2'));
        let mut length = None;
        let mut keep_alive = true;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        let Some(length) = length else {
            return Ok(false);
        };
        let mut body = self.buffer.len() - head_end;
        while body < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            body += n;
        }
        if !keep_alive {
            self.stream = None;
        }
        Ok(success && body == length)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// [`closed_loop`] of GETs, each call one of `gets` picked at random (a random installation),
/// each client on its own keep-alive connection (see [`KeepAlive`]).
pub async fn random_gets(
    gets: Arc<Vec<Get>>,
    concurrency: usize,
    duration: Duration,
) -> LoadFigures {
    let raw: Arc<Vec<Option<RawRequest>>> = Arc::new(gets.iter().map(RawRequest::get).collect());
    let connections = Connections::new(concurrency);
    closed_loop(concurrency, duration, move |client, _| {
        let raw = raw.clone();
        let connections = connections.clone();
        async move {
            let pick = rand::Rng::gen_range(&mut rand::thread_rng(), 0..raw.len());
            let Some(get) = &raw[pick] else {
                return false;
            };
            connections.send(client, get).await
        }
    })
    .await
}

/// [`closed_loop`] of requests built per call by `build(client, iteration)` (a fresh body,
/// signature or timestamp each time), each client on its own keep-alive connection (see
/// [`KeepAlive`]). A request `build` cannot make is a failed call.
pub async fn built_requests<F>(concurrency: usize, duration: Duration, build: F) -> LoadFigures
where
    F: Fn(usize, u64) -> Option<RawRequest> + Send + Sync + 'static,
{
    let connections = Connections::new(concurrency);
    closed_loop(concurrency, duration, move |client, i| {
        let request = build(client, i);
        let connections = connections.clone();
        async move {
            match request {
                Some(request) => connections.send(client, &request).await,
                None => false,
            }
        }
    })
    .await
}
