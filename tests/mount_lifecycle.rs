//! A mount's life against the store and the kernel: registered before its
//! layers are opened (so `rm` and `mount` racing never both succeed), no
//! dead FUSE mount left by a mount that fails, and `umount` of a mount
//! whose daemon died.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn is_mounted(p: &Path) -> bool {
    Command::new("findmnt")
        .arg("--mountpoint")
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

/// The record of the live mount at `mnt`: its file and its JSON.
fn mount_record(store: &TestStore, mnt: &str) -> (std::path::PathBuf, serde_json::Value) {
    std::fs::read_dir(store.root().join("mounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p, v)
        })
        .find(|(_, m): &(_, serde_json::Value)| m["mountpoint"] == mnt)
        .expect("the mount's record")
}

/// `layerfs rm IMG` and `layerfs mount IMG MNT` started together: either
/// the mount wins (and rm refuses, the image and its layers stay) or rm
/// wins (and the mount fails, nothing is mounted).
#[test]
fn rm_racing_mount_never_frees_a_mounted_image() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let (mut mounted, mut removed) = (0, 0);
    for round in 0..16 {
        let id = store.import(&fixture("multi.docker.tar"), &[]);
        let mp = tempfile::tempdir().unwrap();
        let mount = store
            .cmd()
            .args(["mount", &id])
            .arg(mp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Vary who starts first.
        if round % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(round as u64));
        }
        let rm = store.run(&["rm", &id]);
        let m = mount.wait_with_output().unwrap();
        let live = is_mounted(mp.path());
        match (m.status.success(), rm.status.success()) {
            (true, false) => {
                mounted += 1;
                assert!(live, "round {round}: mount said ok but nothing is mounted");
                assert!(String::from_utf8_lossy(&rm.stderr).contains("is mounted at"));
                assert!(store.root().join("images").join(&id).is_dir());
                assert!(
                    mp.path().join("bin/busybox").is_file(),
                    "the mount serves its layers"
                );
                store.ok(&["umount", mp.path().to_str().unwrap()]);
                store.ok(&["rm", &id]);
            }
            (false, true) => {
                removed += 1;
                assert!(!live, "round {round}: a failed mount left a mount behind");
            }
            (a, b) => {
                if live {
                    let _ = store.run(&["umount", mp.path().to_str().unwrap()]);
                }
                panic!(
                    "round {round}: mount {a}, rm {b}: {} / {}",
                    String::from_utf8_lossy(&m.stderr),
                    String::from_utf8_lossy(&rm.stderr)
                );
            }
        }
    }
    eprintln!("mount won {mounted} rounds, rm won {removed}");
}

/// kill -9 of a daemon leaves a dead FUSE mount; `layerfs umount` takes it
/// away, and the same mountpoint mounts again at once.
#[test]
fn umount_removes_a_dead_mount() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let mp = tempfile::tempdir().unwrap();
    let mnt = mp.path().to_str().unwrap();
    store.ok(&["mount", &id, mnt]);
    // The daemon's pid, from its mount record.
    let pid = mount_record(&store, mnt).1["pid"].as_u64().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = std::fs::read_dir(mp.path()).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "a dead mount: {err}"
    );
    store.ok(&["umount", mnt]);
    assert!(!is_mounted(mp.path()));
    let m = Mount::new(&store, &id, &[]);
    assert!(m.path("bin/busybox").is_file());
    drop(m);
    store.ok(&["mount", &id, mnt]);
    assert!(mp.path().join("bin/busybox").is_file());
    store.ok(&["umount", mnt]);
}

/// A mount that cannot register (its record's name taken by a directory)
/// fails, and leaves nothing mounted (the record used to be written after
/// the kernel mount, and such a failure left a dead mount behind).
#[test]
fn failed_mount_leaves_no_mount() {
    if !fuse_available() {
        return;
    }
    let Some(u) = UserDir::new() else {
        return;
    };
    let (root, mnt) = u.store_with("multi.docker.tar");
    let lfs = |args: &[&str]| u.layerfs(&root, args);
    use sha2::{Digest, Sha256};
    let canon = mnt.canonicalize().unwrap();
    let key = &hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()))[..16];
    let blocker = root.join("mounts").join(format!("{key}.json"));
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), b"x").unwrap();
    let out = lfs(&["mount", "multi", mnt.to_str().unwrap()]);
    let live = is_mounted(&mnt);
    if live {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    }
    assert!(
        !out.status.success(),
        "the mount cannot register, so it must fail"
    );
    assert!(!live, "a failed mount left a (dead) mount behind");
}

/// Unmounted by the kernel's own tools (`umount`, as podman and
/// containers-storage do, or `fusermount3 -u`), a daemon exits a moment
/// later, and its record goes with it. A mount at the same path in that
/// moment waits for the exiting daemon instead of refusing the path as
/// "already a layerfs mount" (seen once in containers-storage's bats
/// suite). The moment is made long here: the record of the last mount is
/// put back with the pid of a process that exits after 0.4 s. A record
/// whose process stays and whose path is not mounted still refuses, after
/// a bounded wait.
#[test]
fn a_mount_waits_for_the_daemon_of_an_unmounted_record() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let mp = tempfile::tempdir().unwrap();
    let mnt = mp.path().to_str().unwrap();
    let _guard = common::mount::LazyUnmount(mp.path().to_path_buf());
    store.ok(&["mount", &id, mnt]);
    let (path, rec) = mount_record(&store, mnt);
    let st = Command::new("umount").arg(mnt).status().unwrap();
    assert!(st.success());
    for (sleep, should_mount) in [("0.4", true), ("30", false)] {
        let mut exiting = Command::new("sleep").arg(sleep).spawn().unwrap();
        let mut fake = rec.clone();
        fake["pid"] = exiting.id().into();
        std::fs::write(&path, serde_json::to_vec(&fake).unwrap()).unwrap();
        let t = std::time::Instant::now();
        let out = store.run(&["mount", &id, mnt]);
        if should_mount {
            assert!(
                out.status.success(),
                "a mount after an exiting daemon's record: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(mp.path().join("bin/busybox").is_file());
            store.ok(&["umount", mnt]);
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("already a layerfs mount"),
                "{err}"
            );
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
            assert!(!is_mounted(mp.path()));
            let _ = std::fs::remove_file(&path);
        }
        let _ = exiting.kill();
        let _ = exiting.wait();
    }
}
