//! `layerfs export` against the mount it flattens: GNU `tar -x` of the
//! export (a third-party reader of the tar) gives exactly the tree the
//! mount shows, mtimes of directories included. That needs each
//! directory's entries right after it in the tar, as `tar -c` and
//! `docker export` write them: GNU tar sets a directory's mtime once the
//! archive has left it, and an entry inside it that comes later changes it
//! again.

mod common;

use std::process::Command;

use common::*;

#[test]
fn tar_x_of_an_export_is_the_mounted_tree_mtimes_included() {
    if !fuse_available() {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: tar -x keeps the image's owners only as root");
        return;
    }
    let store = TestStore::new();
    for fx in ["multi.docker.tar", "edge.docker.tar"] {
        let id = store.import(&fixture(fx), &[]);
        let t = tempfile::tempdir().unwrap();
        let (tar, x) = (t.path().join("export.tar"), t.path().join("x"));
        std::fs::create_dir(&x).unwrap();
        store.ok(&["export", &id, "-o", tar.to_str().unwrap()]);
        let out = Command::new("tar")
            .args(["-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{fx}: tar -x: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = Mount::new(&store, &id, &[]);
        let mounted = oracle(&["--snapshot", m.dir.to_str().unwrap()]);
        let extracted = oracle(&["--snapshot", x.to_str().unwrap()]);
        assert_same_tree(fx, &mounted, &extracted, &[]);
    }
}
