//! The store against other users and against its own files: closed to
//! everyone but its owner whatever the umask, and no store file (journal,
//! records, tags) can make layerfs touch a path outside the store.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `layerfs --root ROOT args...` run under umask 022, as a shell would.
fn run_umask022(root: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", "umask 022 && exec \"$@\"", "sh", bin(), "--root"])
        .arg(root)
        .args(args)
        .env_remove("LAYERFS_ROOT")
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Every directory of the store (and the root) is 0700, every file 0600
/// or tighter: nothing in it is readable by anyone else.
fn assert_closed(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        assert_eq!(mode(&d), 0o700, "{} is not 0700", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(
                    md.mode() & 0o077,
                    0,
                    "{} is open to others ({:o})",
                    p.display(),
                    md.mode() & 0o7777
                );
            }
        }
    }
}

#[test]
fn store_is_closed_to_others_whatever_the_umask() {
    let store = TestStore::new();
    // The test directory itself must not be what keeps others out.
    std::fs::set_permissions(store.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = store.root();
    let out = run_umask022(
        &root,
        &["import", fixture("edge.docker.tar").to_str().unwrap()],
    );
    let id = succeeded("import", out).trim().to_string();
    succeeded("tag", run_umask022(&root, &["tag", &id, "closed:v1"]));
    assert!(root.join("tags.json").is_file());
    assert_closed(&root);

    // An other user cannot read a layer tar (where the image's 0600 files
    // are), nor list the store.
    if let Some((user, _)) = unprivileged_user() {
        let tar = std::fs::read_dir(root.join("layers"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("layer.tar");
        assert!(tar.is_file());
        let layers = root.join("layers");
        for argv in [
            ["cat", tar.to_str().unwrap()],
            ["ls", layers.to_str().unwrap()],
        ] {
            let out = run_as(user, &[], &argv);
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "{user} could run {argv:?}"
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A store from before (or chmod-ed open) is closed again at the next
/// open, with a warning; one that is not ours to close is refused.
#[test]
fn open_store_is_repaired_or_refused() {
    let store = TestStore::new();
    std::fs::set_permissions(store.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = store.root();
    store.import(&fixture("multi.docker.tar"), &[]);
    for d in ["", "layers", "images", "tmp", "mounts"] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = store.run(&["images"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was open to other users") && err.contains("closed it"),
        "{err}"
    );
    for d in ["", "layers", "images", "tmp", "mounts"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }

    // Another user's open store: not ours to close, so refused (root can
    // close anything, so this part needs the unprivileged user).
    let Some((user, _)) = unprivileged_user() else {
        return;
    };
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = store.dir.path().join("layerfs");
    std::fs::copy(bin(), &exe).unwrap();
    let out = run_as(
        user,
        &[],
        &[
            exe.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "images",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open to other users") && err.contains("cannot be closed"),
        "{err}"
    );
    assert_eq!(mode(&root), 0o755, "the refused open changed nothing");
}

/// A directory outside the store with something in it, to check that it
/// survives.
fn victim(t: &Path) -> std::path::PathBuf {
    let v = t.join("victim");
    std::fs::create_dir_all(v.join("sub")).unwrap();
    std::fs::write(v.join("sub/keep"), b"keep").unwrap();
    v
}

#[test]
fn publish_journal_naming_paths_outside_the_store_is_refused() {
    let store = TestStore::new();
    store.import(&fixture("multi.docker.tar"), &[]);
    let v = victim(store.dir.path());
    let journals = [
        // An absolute path, as the issue saw it.
        serde_json::json!({"renames": [[v, "layers"]], "tags": {}}),
        // A relative path that climbs out.
        serde_json::json!({"renames": [["tmp/../../victim", format!("layers/{}", "a".repeat(64))]], "tags": {}}),
        // A target outside layers/ and images/.
        serde_json::json!({"renames": [["tmp/x", "../victim"]], "tags": {}}),
        // A tag naming a path, not an id.
        serde_json::json!({"renames": [], "tags": {"x:latest": "../../victim"}}),
    ];
    for j in journals {
        std::fs::write(store.root().join("publish.json"), j.to_string()).unwrap();
        let before = store.fingerprint();
        let err = store.fails(&["import", fixture("edge.docker.tar").to_str().unwrap()]);
        assert!(err.contains("refusing to roll it forward"), "{j}: {err}");
        assert_eq!(
            std::fs::read(v.join("sub/keep")).unwrap(),
            b"keep",
            "{j}: the victim was touched"
        );
        assert_eq!(store.fingerprint(), before, "{j}: the store changed");
        assert!(
            store.root().join("publish.json").exists(),
            "the journal is kept for a look"
        );
    }
    std::fs::remove_file(store.root().join("publish.json")).unwrap();
    store.import(&fixture("edge.docker.tar"), &[]);
}

/// `rm` deletes the layer directories an image record names: a record
/// naming a path instead of a chain id is refused.
#[test]
fn image_record_naming_paths_outside_the_store_is_refused() {
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let v = victim(store.dir.path());
    let rec_path = store.root().join("images").join(&id).join("image.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["layers"] = serde_json::json!(["../../victim"]);
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    let err = store.fails(&["rm", &id]);
    assert!(
        err.contains("corrupt store file") && err.contains("invalid id"),
        "{err}"
    );
    assert_eq!(std::fs::read(v.join("sub/keep")).unwrap(), b"keep");

    // tags.json naming a path is refused too.
    std::fs::write(
        store.root().join("tags.json"),
        serde_json::json!({"x:latest": "../../victim"}).to_string(),
    )
    .unwrap();
    let err = store.fails(&["images"]);
    assert!(
        err.contains("tags.json") && err.contains("invalid id"),
        "{err}"
    );
}
