//! A process whose metrics nobody scrapes must not grow: the exporter keeps every histogram
//! observation until it is rendered or its upkeep runs. This runs a child process that records
//! observations the way a busy worker does (millions of them, never scraped) and reads the
//! child's resident memory from /proc between rounds: flat with the upkeep every process gets
//! from `metrics_handle`, and, as a control that the measurement would catch a leak, growing
//! when the upkeep does not run.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_MODE: &str = "HK_TELEMETRY_MEMORY_CHILD";
const ROUNDS: usize = 6;
const OBSERVATIONS_PER_ROUND: usize = 1_000_000;
/// Growth from the first to the last round allowed with the upkeep. Without it, five rounds
/// keep five million samples (8 bytes each plus block overhead: about 40 MiB).
const FLAT_BOUND_KIB: u64 = 8 * 1024;
const LEAK_FLOOR_KIB: u64 = 24 * 1024;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("child status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Resident memory of the child after each round.
fn run_child(mode: &str) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "records_observations_without_scraping",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("child stdin");
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut sizes = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("child output");
        // libtest may print its own "test … … " in front of the child's first line.
        if line.contains("memory-round ") {
            sizes.push(resident_kib(pid));
            // Let the child go on only once its size is read.
            stdin.write_all(b"\n").expect("resume the child");
            stdin.flush().expect("resume the child");
        }
        if line.contains("memory-rendered ") {
            assert!(line.contains("help=yes"), "{line}");
        }
    }
    assert!(child.wait().expect("child exit").success(), "child failed");
    assert_eq!(sizes.len(), ROUNDS, "every round reported");
    sizes
}

#[test]
fn histograms_nobody_scrapes_do_not_grow_the_process() {
    let with_upkeep = run_child("upkeep");
    let grown = with_upkeep[ROUNDS - 1].saturating_sub(with_upkeep[0]);
    eprintln!("with upkeep, resident KiB per round: {with_upkeep:?} (+{grown})");
    assert!(
        grown < FLAT_BOUND_KIB,
        "resident memory grew by {grown} KiB over {} unscraped observations: {with_upkeep:?}",
        (ROUNDS - 1) * OBSERVATIONS_PER_ROUND
    );

    let without = run_child("none");
    let leaked = without[ROUNDS - 1].saturating_sub(without[0]);
    eprintln!("without upkeep, resident KiB per round: {without:?} (+{leaked})");
    assert!(
        leaked > LEAK_FLOOR_KIB,
        "the control without upkeep should show the leak this test guards against: {without:?}"
    );
}

/// The child's side of the test above (run only as its child process).
#[test]
#[ignore = "the child process of histograms_nobody_scrapes_do_not_grow_the_process"]
fn records_observations_without_scraping() {
    let mode = std::env::var(CHILD_MODE).expect("run as the child of the memory test");
    let upkeep = match mode.as_str() {
        "upkeep" => Duration::from_millis(50),
        // Never within the test: the exporter as it was before the upkeep.
        _ => Duration::from_secs(24 * 3600),
    };
    let handle = hubkeeper_telemetry::metrics_handle_with_upkeep(upkeep).expect("recorder");
    let latency = metrics::histogram!("hk_api_request_seconds", "route" => "/v1/installations/{id}/token", "method" => "GET");
    let mut input = std::io::stdin().lock();
    for round in 0..ROUNDS {
        for i in 0..OBSERVATIONS_PER_ROUND {
            latency.record((i % 1000) as f64 / 1e5);
        }
        if mode == "upkeep" {
            // Wait (on the fact, not a fixed time) for an upkeep round after this one's samples.
            let seen = hubkeeper_telemetry::upkeep_runs();
            while hubkeeper_telemetry::upkeep_runs() < seen + 2 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        println!("memory-round {round}");
        let mut line = String::new();
        input.read_line(&mut line).expect("parent's go-ahead");
    }
    let text = handle.render();
    let help = text.contains("# HELP hk_api_request_seconds ")
        && text.contains("# HELP hk_build_info ")
        && text.contains("hk_build_info{version=\"");
    println!("memory-rendered help={}", if help { "yes" } else { "no" });
}
