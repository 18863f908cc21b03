//! The Python oracle (`tools/oracle_merge.py`) and its comparator.

use std::process::Command;

use super::repo;

/// Runs the Python oracle with `args`; returns its stdout (JSON).
pub fn oracle(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tools/oracle_merge.py"))
        .args(args)
        .output()
        .expect("python3 (the oracle needs it)");
    assert!(
        out.status.success(),
        "oracle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares two oracle JSON manifests with the oracle's own comparator;
/// panics with its readable diff if they differ.
pub fn assert_same_tree(what: &str, expected_json: &str, actual_json: &str, ignore: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("expected.json");
    let b = dir.path().join("actual.json");
    std::fs::write(&a, expected_json).unwrap();
    std::fs::write(&b, actual_json).unwrap();
    let mut args = vec![
        "--compare".to_string(),
        a.display().to_string(),
        b.display().to_string(),
    ];
    for i in ignore {
        args.push("--ignore".into());
        args.push(i.to_string());
    }
    let out = Command::new("python3")
        .arg(repo().join("tools/oracle_merge.py"))
        .args(&args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{what}: trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Guard against comparing two empty manifests.
    let v: serde_json::Value = serde_json::from_str(actual_json).unwrap();
    assert!(
        v.as_object().map_or(0, |o| o.len()) > 1,
        "{what}: the compared tree is empty"
    );
}
