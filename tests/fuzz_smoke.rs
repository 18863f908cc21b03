//! A short run of every fuzz target (`tools/fuzz`, cargo-fuzz on nightly)
//! so that a target that no longer builds, or a crash libFuzzer finds in
//! its seconds, fails the test suite. It runs when `CI` is set (where a
//! missing nightly toolchain or cargo-fuzz fails it) or when
//! `LAYERFS_FUZZ_SECS` gives the seconds per target (default 20);
//! otherwise it skips with a message, as it takes minutes. The build is
//! cargo-fuzz's `--dev -s none` (see tools/fuzz): debug code, so overflow
//! checks and debug assertions are on, and no AddressSanitizer, whose cold
//! build of std alone took 7 minutes on 2 cores (the targets are safe
//! Rust; the long runs of tools/fuzz keep the sanitizer).

use std::process::Command;

#[test]
fn every_fuzz_target_runs_without_a_crash() {
    let ci = std::env::var_os("CI").is_some();
    let secs = match std::env::var("LAYERFS_FUZZ_SECS") {
        Ok(s) => s,
        Err(_) if ci => "20".to_string(),
        Err(_) => {
            eprintln!("fuzz smoke skipped: set LAYERFS_FUZZ_SECS (or CI) to run tools/fuzz");
            return;
        }
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let start = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(format!("{root}/tools/fuzz"))
        .arg(&secs)
        .env("LAYERFS_FUZZ_BUILD", "--dev -s none")
        .output()
        .expect("run tools/fuzz");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    eprintln!("tools/fuzz took {:.0?}", start.elapsed());
    assert!(
        out.status.success(),
        "tools/fuzz {secs} failed ({}):\n{stdout}\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("--- fuzz summary"), "no summary:\n{stdout}");
}
