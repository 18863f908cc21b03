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

/// `-o noxattrs=1` (fuse-overlayfs' option, which podman may pass to a
/// mount program): a writable mount without extended attributes, every
/// xattr call EOPNOTSUPP, where the same mount without it stores and
/// returns them; files are still written.
#[test]
fn noxattrs_turns_extended_attributes_off() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    for (opt, on) in [("noxattrs=0", false), ("noxattrs=1", true)] {
        let rw = tempfile::tempdir().unwrap();
        let m = Mount::new(
            &store,
            &id,
            &["--rw", rw.path().to_str().unwrap(), "-o", opt],
        );
        let f = m.path("new");
        std::fs::write(&f, b"x").unwrap();
        let set = lsetxattr(&f, "user.k", b"v");
        let got = lgetxattr(&f, "user.k");
        if on {
            assert_eq!(set, Err(libc::EOPNOTSUPP), "{opt}: setxattr");
            assert_eq!(got, Err(libc::EOPNOTSUPP), "{opt}: getxattr");
            assert_eq!(llistxattr(&f), Err(libc::EOPNOTSUPP), "{opt}: listxattr");
            assert_eq!(std::fs::read(&f).unwrap(), b"x");
        } else {
            assert_eq!(set, Ok(()), "{opt}: setxattr");
            assert_eq!(got, Ok(b"v".to_vec()), "{opt}: getxattr");
        }
    }
    let (rw, mp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (rw, mp) = (rw.path().to_str().unwrap(), mp.path().to_str().unwrap());
    let out = store.run(&["mount", &id, mp, "--rw", rw, "-o", "noxattrs=2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("noxattrs=1 or noxattrs=0"));
}
