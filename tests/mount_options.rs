//! Mount options that cannot take effect are said so, not dropped
//! silently.

mod common;

use std::process::Command;

use common::*;

/// fusermount3 mounts every user's FUSE mount nosuid,nodev: `-o suid,dev`
/// from an unprivileged user gets a warning, and the mount is still
/// nosuid,nodev.
#[test]
fn unprivileged_suid_and_dev_are_warned_about() {
    if !fuse_available() {
        return;
    }
    let Some(u) = UserDir::new() else {
        return;
    };
    let (root, mnt) = u.store_with("multi.docker.tar");
    let lfs = |args: &[&str]| u.layerfs(&root, args);
    let out = lfs(&["mount", "multi", mnt.to_str().unwrap(), "-o", "suid,dev"]);
    let _guard = LazyUnmount(mnt.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for o in ["suid", "dev"] {
        assert!(
            err.contains(&format!(
                "-o {o}: ignored: an unprivileged mount is always nosuid,nodev"
            )),
            "{err}"
        );
    }
    let opts = Command::new("findmnt")
        .args(["-no", "OPTIONS"])
        .arg(&mnt)
        .output()
        .unwrap();
    let opts = String::from_utf8_lossy(&opts.stdout);
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{opts}");
    let out = lfs(&["umount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
