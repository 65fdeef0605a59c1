//! The consume loop against a real nats-server: every outcome settles its message as documented
//! (acknowledged, terminated, dead-lettered at once, retried until the last delivery and then
//! dead-lettered with every header), and shutdown waits for the work in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use hubkeeper_bus::consume::{consume, Backoff, ConsumerSpec, Delivery, Handler, Outcome};
use hubkeeper_bus::{dead_letter, ensure_streams, StreamsConfig};
use hubkeeper_testkit::{wait_until, TestEnv};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

const STREAM: &str = "HK_CONSUME_TEST";
/// Counted nowhere: no metrics recorder is installed in this test.
const TEST_ERRORS_COUNTER: &str = "hk_consume_test_errors_total";
const KIND: &str = "consume-test";

async fn setup(env: &TestEnv) -> jetstream::Context {
    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    ensure_streams(&js, &StreamsConfig::default())
        .await
        .expect("streams");
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["hk.consume-test.>".into()],
        ..Default::default()
    })
    .await
    .expect("test stream");
    js
}

fn spec(max_deliver: i64, concurrency: usize, confirm_acks: bool) -> ConsumerSpec {
    ConsumerSpec {
        stream: STREAM.into(),
        durable_name: "consume-test".into(),
        description: "consume loop test".into(),
        filter_subject: None,
        dead_letter_kind: KIND,
        ack_wait: Duration::from_secs(30),
        max_deliver,
        backoff: Backoff(vec![Duration::from_millis(20)]),
        concurrency,
        batch_size: 1,
        max_ack_pending: 64,
        errors_counter: TEST_ERRORS_COUNTER,
        confirm_acks,
    }
}

async fn publish(js: &jetstream::Context, subject: &str, body: &str) {
    js.send_publish(
        subject.to_owned(),
        PublishMessage::build()
            .payload(Bytes::from(body.to_owned()))
            .header("X-Origin", "consume-test"),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
}

/// Answers by payload and counts the deliveries of each.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<HashMap<String, i64>>>,
}

impl Scripted {
    fn calls(&self, body: &str) -> i64 {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(body).copied().unwrap_or(0)
    }
}

impl Handler for Scripted {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let body = String::from_utf8_lossy(delivery.payload()).into_owned();
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(body.clone())
            .or_default() += 1;
        match body.as_str() {
            "ack" => Outcome::Ack,
            "term" => Outcome::Term {
                reason: "nothing to keep".into(),
            },
            "poison" => Outcome::dead_letter("cannot be decoded"),
            _ => Outcome::retry_after(Duration::from_millis(10), "still failing"),
        }
    }
}

async fn settled(js: &jetstream::Context) -> bool {
    let Ok(stream) = js.get_stream(STREAM).await else {
        return false;
    };
    match stream.consumer_info("consume-test").await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_settles_its_message_and_the_last_retry_is_dead_lettered() {
    let env = TestEnv::start().await;
    let js = setup(&env).await;
    for body in ["ack", "term", "poison", "flaky"] {
        publish(&js, &format!("hk.consume-test.{body}"), body).await;
    }
    let handler = Scripted::default();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (js, handler, shutdown) = (js.clone(), handler.clone(), shutdown.clone());
        async move { consume(&js, &spec(3, 4, false), handler, &shutdown).await }
    });

    wait_until(
        "both dead letters are stored",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            async move {
                dead_letter::list(&js, Some(KIND), 10, None)
                    .await
                    .is_ok_and(|letters| letters.len() == 2)
            }
        },
    )
    .await;
    wait_until("every message is settled", Duration::from_secs(30), || {
        settled(&js)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("the loop stops on shutdown");

    // Acked, terminated and dead-lettered messages are handled once; the failing one on every
    // allowed delivery, and not again.
    assert_eq!(handler.calls("ack"), 1);
    assert_eq!(handler.calls("term"), 1);
    assert_eq!(handler.calls("poison"), 1);
    assert_eq!(handler.calls("flaky"), 3);

    let letters = dead_letter::list(&js, Some(KIND), 10, None)
        .await
        .expect("list");
    let by_subject: HashMap<&str, &dead_letter::DeadLetter> = letters
        .iter()
        .map(|l| (l.source_subject.as_deref().unwrap_or("-"), l))
        .collect();
    let poison = by_subject["hk.consume-test.poison"];
    assert_eq!(poison.reason.as_deref(), Some("cannot be decoded"));
    assert_eq!(poison.deliveries, Some(1));
    let flaky = by_subject["hk.consume-test.flaky"];
    assert_eq!(flaky.reason.as_deref(), Some("still failing"));
    assert_eq!(flaky.deliveries, Some(3));
    assert!(flaky.dead_at.is_some(), "{flaky:?}");
    let shown = dead_letter::show(&js, flaky.seq).await.expect("show");
    assert_eq!(shown.payload, Some(serde_json::json!("flaky")));
    let headers = shown.headers.expect("original headers");
    assert_eq!(
        headers.get("X-Origin"),
        Some(&serde_json::json!("consume-test"))
    );

    // A re-drive puts it back on its subject, with its original headers, for the workers.
    let subject = dead_letter::redrive(&js, flaky.seq).await.expect("redrive");
    assert_eq!(subject, "hk.consume-test.flaky");
    let stream = js.get_stream(STREAM).await.expect("stream");
    let redriven = stream
        .get_last_raw_message_by_subject("hk.consume-test.flaky")
        .await
        .expect("re-driven message");
    assert!(redriven.sequence > 4, "a new message, not the original");
    assert_eq!(
        redriven.headers.get("X-Origin").map(|v| v.as_str()),
        Some("consume-test")
    );
    assert!(matches!(
        dead_letter::show(&js, flaky.seq).await,
        Err(dead_letter::DeadLetterError::NotFound(_))
    ));
}

/// Tells when it starts and holds every message until a permit is released.
#[derive(Clone)]
struct Held {
    started: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
    finished: Arc<Mutex<Vec<String>>>,
}

impl Handler for Held {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let body = String::from_utf8_lossy(delivery.payload()).into_owned();
        let _ = self.started.send(body.clone());
        let permit = self.release.acquire().await;
        drop(permit);
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(body);
        Outcome::Ack
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_work_in_flight_finish_and_be_acknowledged() {
    let env = TestEnv::start().await;
    let js = setup(&env).await;
    publish(&js, "hk.consume-test.a", "a").await;
    publish(&js, "hk.consume-test.b", "b").await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = Held {
        started: started_tx,
        release: Arc::new(Semaphore::new(0)),
        finished: Arc::default(),
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (js, handler, shutdown) = (js.clone(), handler.clone(), shutdown.clone());
        async move { consume(&js, &spec(5, 2, true), handler, &shutdown).await }
    });
    for _ in 0..2 {
        started.recv().await.expect("a message reaches the handler");
    }
    shutdown.cancel();
    // Both handlers are blocked: the loop cannot have finished draining.
    assert!(!worker.is_finished(), "the loop waits for its handlers");
    assert!(handler
        .finished
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty());

    handler.release.add_permits(2);
    worker
        .await
        .expect("the loop stops once its handlers are done");
    let mut finished = handler
        .finished
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    finished.sort();
    assert_eq!(finished, ["a", "b"]);
    // Acks were confirmed before the loop returned: nothing is left for another worker.
    assert!(settled(&js).await, "both messages acknowledged on shutdown");
}

/// Processes sharing a consumer share its work: a process pulls what its slots can take, so one
/// whose slots are all busy does not hold the queue while another has free slots. (When each
/// pull asked for 200, the first process got everything up to `max_ack_pending` and a second
/// one got nothing until the first had worked it off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_process_leaves_the_queue_to_the_processes_with_free_slots() {
    let env = TestEnv::start().await;
    let js = setup(&env).await;
    for i in 0..40 {
        publish(&js, "hk.consume-test.shared", &format!("m{i:02}")).await;
    }
    let release = Arc::new(Semaphore::new(0));
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let mut started = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let handler = Held {
            started: started_tx,
            release: release.clone(),
            finished: finished.clone(),
        };
        // Each "process" on its own connection, like two refresher processes.
        let js = hubkeeper_bus::jetstream(env.nats_client().await);
        let shutdown = shutdown.clone();
        workers.push(tokio::spawn(async move {
            consume(&js, &spec(5, 2, true), handler, &shutdown).await
        }));
        started.push(started_rx);
        if workers.len() == 1 {
            // The first process pulls alone, fills its two slots and blocks in them.
            for _ in 0..2 {
                started[0].recv().await.expect("the first process handles");
            }
        }
    }
    // The second process gets work while every slot of the first is still blocked.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), started[1].recv())
            .await
            .expect("the second process got messages while the first was busy")
            .expect("the second process handles");
    }

    release.add_permits(1_000);
    wait_until("every message handled", Duration::from_secs(30), || {
        let finished = finished.clone();
        async move {
            finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
                >= 40
        }
    })
    .await;
    shutdown.cancel();
    for worker in workers {
        worker.await.expect("the loop stops");
    }
    let mut handled = finished
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    handled.sort();
    let expected: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    assert_eq!(handled, expected, "each message handled once");
    assert!(settled(&js).await, "every message acknowledged");
}
