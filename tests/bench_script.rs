//! `tools/bench` cannot run in CI (root, minutes, GiBs): this keeps it from
//! rotting. Its scripts must parse, and its image generator must be
//! deterministic and make docker-archives that layerfs imports.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bench_scripts_parse() {
    let st = Command::new("bash")
        .arg("-n")
        .arg(repo().join("tools/bench"))
        .status()
        .expect("bash");
    assert!(st.success(), "bash -n tools/bench failed");
    let dir = repo().join("tools/bench.d");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import ast, glob, sys\n\
             for f in sorted(glob.glob(sys.argv[1] + '/*.py')):\n    \
                 ast.parse(open(f).read(), f)\n    print(f)",
        )
        .arg(&dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python syntax check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("bench.py") && listed.contains("images.py"),
        "{listed}"
    );
}

#[test]
fn bench_images_are_deterministic_and_import() {
    let store = TestStore::new();
    let out = store.dir.path().join("bench-images");
    let gen = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(repo().join("tools/bench.d/images.py"))
        .arg("selftest")
        .arg(&out)
        .output()
        .expect("python3");
    assert!(
        gen.status.success(),
        "images.py selftest: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let archives = String::from_utf8(gen.stdout).unwrap();
    let archives: Vec<&str> = archives.lines().collect();
    assert_eq!(archives.len(), 2, "{archives:?}");
    for (archive, layers) in archives.iter().zip([5, 16]) {
        let id = store.import(std::path::Path::new(archive), &[]);
        let h: serde_json::Value =
            serde_json::from_str(&store.ok(&["history", &id, "--json"])).unwrap();
        assert_eq!(h.as_array().unwrap().len(), layers, "{archive}");
    }
}
