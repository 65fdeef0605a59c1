//! Keeps docs/configuration.md and .env.example true: every setting the binary reads from the
//! environment must be documented in both. And each command's help shows the settings that
//! command reads, not every role's.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use hubkeeper_testkit::hubkeeper_binary;

fn help(args: &[&str]) -> String {
    let out = Command::new(hubkeeper_binary())
        .args(args)
        .arg("--help")
        .output()
        .expect("run hubkeeper --help");
    assert!(out.status.success(), "hubkeeper {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_vars_in_help(args: &[&str]) -> BTreeSet<String> {
    help(args)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_environment_setting_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
    let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
    // Settings sit on the commands that read them: the union over every command's help.
    let mut vars = env_vars_in_help(&[]);
    for command in subcommands() {
        vars.extend(env_vars_in_help(&[&command]));
    }
    assert!(
        vars.contains("DATABASE_URL"),
        "help lists env vars: {vars:?}"
    );
    let missing_docs: Vec<_> = vars.iter().filter(|v| !docs.contains(v.as_str())).collect();
    let missing_example: Vec<_> = vars
        .iter()
        .filter(|v| !example.contains(v.as_str()))
        .collect();
    assert!(
        missing_docs.is_empty(),
        "not in docs/configuration.md: {missing_docs:?}"
    );
    assert!(
        missing_example.is_empty(),
        "not in .env.example: {missing_example:?}"
    );
}

/// The subcommands the top-level help lists.
fn subcommands() -> Vec<String> {
    let text = help(&[]);
    let listed = text
        .split("Commands:")
        .nth(1)
        .expect("the help lists commands");
    listed
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn each_command_shows_the_settings_it_reads() {
    let api = env_vars_in_help(&["api"]);
    let worker = env_vars_in_help(&["worker"]);
    let admin = env_vars_in_help(&["admin"]);
    for (command, vars) in [("api", &api), ("worker", &worker), ("admin", &admin)] {
        assert!(vars.contains("DATABASE_URL"), "{command}: {vars:?}");
        assert!(vars.contains("HK_LOG"), "{command}: {vars:?}");
        assert!(!vars.contains("HK_LOCAL_PG_PORT"), "{command}: {vars:?}");
    }
    // The API's listener and intake limits are not a worker's business, and the other way round.
    assert!(api.contains("HK_BIND") && api.contains("HK_WEBHOOK_MAX_BODY_BYTES"));
    assert!(!worker.contains("HK_BIND") && !worker.contains("HK_WEBHOOK_MAX_BODY_BYTES"));
    assert!(worker.contains("HK_REFRESHER_CONCURRENCY") && worker.contains("HK_METRICS_BIND"));
    assert!(!api.contains("HK_REFRESHER_CONCURRENCY") && !api.contains("HK_METRICS_BIND"));
    // Key management needs the database and nothing of the roles.
    assert!(!admin.contains("NATS_URL") && !admin.contains("HK_MASTER_KEYS"));
    // The simulator takes its own listen address.
    let sim = help(&["sim"]);
    assert!(sim.contains("--bind"), "{sim}");
    assert!(!sim.contains("HK_BIND"), "{sim}");
}
