//! The Python oracles (`tools/oracle_merge.py`, `tools/oracle_extract.py`:
//! Python's tarfile applying Docker's layer rules, no layerfs code) and the
//! comparator.

use std::path::{Path, PathBuf};

use super::{run_ok, tool};

/// Runs the Python oracle with `args`; returns its stdout (JSON).
pub fn oracle(args: &[&str]) -> String {
    run_ok(tool("oracle_merge.py").args(args))
}

/// `oracle_extract.py --image IMAGE --overlay-layers OVERLAY --layer-tars
/// TARS [--merged MERGED]`: the image's layers extracted below `overlay` in
/// kernel overlayfs format (whiteouts as 0:0 char devices, opaque
/// directories by `trusted.overlay.opaque`), returned bottom first; its
/// uncompressed layer tars as `TARS/0.tar`, `TARS/1.tar`...; with `merged`,
/// the merged tree there too. Needs root.
pub fn oracle_extract(
    image: &Path,
    overlay: &Path,
    tars: &Path,
    merged: Option<&Path>,
) -> Vec<PathBuf> {
    let mut c = tool("oracle_extract.py");
    c.arg("--image").arg(image);
    if let Some(m) = merged {
        c.arg("--merged").arg(m);
    }
    c.arg("--overlay-layers")
        .arg(overlay)
        .arg("--layer-tars")
        .arg(tars);
    run_ok(&mut c).lines().map(PathBuf::from).collect()
}

/// Compares two oracle JSON manifests with the oracle's own comparator
/// (`oracle_merge.py --compare`, leaving out the `ignore` fields): Err is
/// its readable diff.
pub fn compare_manifests(
    expected_json: &str,
    actual_json: &str,
    ignore: &[&str],
) -> Result<(), String> {
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
    let out = tool("oracle_merge.py")
        .args(&args)
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Compares two oracle JSON manifests with the oracle's own comparator;
/// panics with its readable diff if they differ, or if the compared tree
/// is empty.
pub fn assert_same_tree(what: &str, expected_json: &str, actual_json: &str, ignore: &[&str]) {
    if let Err(diff) = compare_manifests(expected_json, actual_json, ignore) {
        panic!("{what}: trees differ:\n{diff}");
    }
    // Guard against comparing two empty manifests.
    let v: serde_json::Value = serde_json::from_str(actual_json).unwrap();
    assert!(
        v.as_object().map_or(0, |o| o.len()) > 1,
        "{what}: the compared tree is empty"
    );
}
