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
    let listed = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import ast, glob, sys\n\
                 for f in sorted(glob.glob(sys.argv[1] + '/*.py')):\n    \
                     ast.parse(open(f).read(), f)\n    print(f)",
            )
            .arg(&dir),
    );
    assert!(
        listed.contains("bench.py") && listed.contains("images.py"),
        "{listed}"
    );
}

#[test]
fn bench_images_are_deterministic_and_import() {
    let store = TestStore::new();
    let out = store.dir.path().join("bench-images");
    let archives = run_ok(
        tool("bench.d/images.py")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("selftest")
            .arg(&out),
    );
    let archives: Vec<&str> = archives.lines().collect();
    assert_eq!(archives.len(), 3, "{archives:?}");
    for (archive, layers) in archives.iter().zip([5, 16, 5]) {
        let id = store.import(std::path::Path::new(archive), &[]);
        let h: serde_json::Value =
            serde_json::from_str(&store.ok(&["history", &id, "--json"])).unwrap();
        assert_eq!(h.as_array().unwrap().len(), layers, "{archive}");
    }
}

/// The tables of a run, from made-up samples (no root, no mounts): every
/// column `--impl` names, the root and unprivileged sections and their
/// ratios.
#[test]
fn bench_tables_have_every_column() {
    let dir = repo().join("tools/bench.d");
    let help = run_ok(
        Command::new("python3")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(dir.join("bench.py"))
            .args(["--layerfs", "none", "--help"]),
    );
    for c in [
        "--impl",
        "layerfs-dirs",
        "fuse-overlayfs-user",
        "fuse-overlayfs2-user",
        "podman-build",
        "debian-tree-why",
        "FUSE_OVERLAYFS2",
        "--quick",
    ] {
        assert!(help.contains(c), "{c} not in --help: {help}");
    }
    let mut render = Command::new("python3");
    render.env("PYTHONDONTWRITEBYTECODE", "1").arg("-c").arg(
        r#"
import sys
sys.path.insert(0, sys.argv[1])
import bench
s = lambda x: bench.stats([x, x * 1.1])
impls = {n: s(1.0 + k) for k, n in enumerate(bench.IMPLS)}
impls["layerfs-dirs-user"] = {"skipped": "error: as layerfs-bench: boom"}
out = {"meta": {"date": "d", "cpus": 2, "cpu": "c", "mem_bytes": 1 << 30,
                "kernel": "k", "rounds": 2, "layerfs_bin": "b",
                "layerfs_git": "g", "fuse_overlayfs": "f",
                "loadavg_end": [0, 0, 0], "command": "tools/bench",
                "impls": bench.IMPLS, "user": "layerfs-bench"},
       "results": {"walk-cold": {"desc": "walk", "impls": impls},
                   "podman-run": {"desc": "podman run", "impls": {
                       "layerfs": s(0.5), "overlay": s(0.4),
                       "fuse-overlayfs": s(0.6), "fuse-overlayfs2": s(1.0)},
                       "root_mounts": {"layerfs": "fuse layerfs:branches",
                                       "overlay": "overlay overlay"}}},
       "extra": {"tree_why": {"desc": "tree / why", "goal_s": 0.1,
                              "output_lines": {"tree": 9},
                              "samples": {"tree": s(0.05),
                                          "why /etc/passwd": s(0.2)}}},
       "skipped": {}, "consistency": {}, "images": {}}
print(bench.render(out))
"#,
    );
    let t = run_ok(render.arg(&dir));
    for h in [
        "| workload | layerfs | layerfs-dirs | overlay | fuse-overlayfs | fuse-overlayfs2 | layerfs/overlay | layerfs/fuse-overlayfs | layerfs/fuse-overlayfs2 | layerfs-dirs/overlay | layerfs-dirs/fuse-overlayfs | layerfs-dirs/fuse-overlayfs2 |",
        "| workload | layerfs | layerfs-dirs | fuse-overlayfs | fuse-overlayfs2 | layerfs/overlay | layerfs-dirs/overlay | fuse-overlayfs/overlay | fuse-overlayfs2/overlay | layerfs/fuse-overlayfs | layerfs-dirs/fuse-overlayfs | layerfs/fuse-overlayfs2 | layerfs-dirs/fuse-overlayfs2 |",
        // root: 1.0 1.1 ... medians 1.05, 2.1, 3.15, 4.2, 5.25;
        // unprivileged layerfs-user 6.3 over root overlay 3.15
        "| walk | 1.050 ±5% | 2.100 ±5% | 3.150 ±5% | 4.200 ±5% | 5.250 ±5% | 0.33 | 0.25 | 0.20 | 0.67 | 0.50 | 0.40 |",
        "| walk | 6.300 ±5% | error | 8.400 ±5% | 9.450 ±5% | 2.00 | - | 2.67 | 3.00 | 0.75 | - | 0.67 | - |",
        "walk-cold / layerfs-dirs-user: error: as layerfs-bench: boom",
        // podman rows: the columns with a mount program and the kernel
        // driver, none for layerfs-dirs
        "| podman run | 0.525 ±5% | - | 0.420 ±5% | 0.630 ±5% | 1.050 ±5% | 1.25 | 0.83 | 0.50 | - | - | - |",
        "podman-run: the container's root mount (type source): layerfs fuse layerfs:branches, overlay overlay overlay",
        // debian-tree-why: absolute times against the 0.1 s goal
        "tree / why:",
        "| layerfs tree | 0.053 ±5% | met |",
        "| layerfs why /etc/passwd | 0.210 ±5% | NOT met |",
    ] {
        assert!(t.contains(h), "missing {h:?} in:\n{t}");
    }
}
