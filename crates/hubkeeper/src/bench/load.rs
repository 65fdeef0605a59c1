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

/// An HTTP call counts as a success when it was answered 2xx and its body was read.
pub async fn succeeded(request: impl Future<Output = reqwest::Result<reqwest::Response>>) -> bool {
    match request.await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// One GET a load client may send: where to, with which `Authorization` header.
pub struct Get {
    pub url: String,
    pub authorization: String,
}

/// [`closed_loop`] of GETs, each call one of `gets` picked at random (a random installation).
pub async fn random_gets(
    http: &reqwest::Client,
    gets: Arc<Vec<Get>>,
    concurrency: usize,
    duration: Duration,
) -> LoadFigures {
    let http = http.clone();
    closed_loop(concurrency, duration, move |_, _| {
        let get = &gets[rand::Rng::gen_range(&mut rand::thread_rng(), 0..gets.len())];
        let request = http
            .get(&get.url)
            .header("authorization", &get.authorization)
            .send();
        succeeded(request)
    })
    .await
}
