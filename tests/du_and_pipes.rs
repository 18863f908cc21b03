//! What tools around a mount expect: `du` of a mount says what it says of
//! the extracted tree, and `layerfs ls IMAGE | head` ends quietly.

mod common;

use std::process::Command;

use common::*;

fn du_k(p: &std::path::Path) -> String {
    let out = Command::new("du").arg("-sk").arg(p).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn du_of_a_mount_is_du_of_the_extracted_tree() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    for fx in ["multi.docker.tar", "edge.docker.tar"] {
        let id = store.import(&fixture(fx), &[]);
        let t = tempfile::tempdir().unwrap();
        let (tar, x) = (t.path().join("e.tar"), t.path().join("x"));
        std::fs::create_dir(&x).unwrap();
        store.ok(&["export", &id, "-o", tar.to_str().unwrap()]);
        // Extracted on this machine's /tmp (4 KiB blocks); devices and
        // special files need root, and are 0 blocks either way.
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success() || !is_root(), "{fx}: tar -x");
        let m = Mount::new(&store, &id, &[]);
        assert_eq!(
            du_k(&m.dir),
            du_k(&x),
            "{fx}: du -sk of the mount and of tar -x"
        );
    }
}

#[test]
fn ls_into_a_closed_pipe_ends_quietly() {
    let store = TestStore::new();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20000 {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("d/file-{i:05}"), &b""[..])
            .unwrap();
    }
    let tar = store.dir.path().join("many.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    let id = store.import(&tar, &[]);
    let script = format!(
        "'{}' --root '{}' ls {id} -R | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        bin(),
        store.root().display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "ls into a closed pipe said: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "141",
        "as a program SIGPIPE ended"
    );
}
