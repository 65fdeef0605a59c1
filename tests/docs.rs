//! Keeps docs/configuration.md and .env.example true: every setting the binary reads from the
//! environment must be documented in both.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hubkeeper");

fn env_vars_in_help(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run hubkeeper --help");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("[env: ")
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
    let vars = env_vars_in_help(&["--help"]);
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
