//! overlayfs' own xattrs (`trusted.overlay.*`, `user.overlay.*`) carried
//! by an image are never shown through a mount, read-only or read-write,
//! and never written into a branch: a layerfs mount used as a lower of
//! kernel overlayfs must not carry redirects or opaque markers into it.
//! Kernel overlayfs on top of the mount is the oracle.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A rootfs tar: `d/` marked opaque the overlay way, `d/f` with a redirect,
/// an origin and an ordinary user xattr.
fn image_tar(path: &Path) {
    let m = Meta {
        mtime: 1_700_000_000,
        ..M644
    };
    Tar::create(path)
        .format(Format::Ustar)
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir_m("d/", Meta { mode: 0o755, ..m })
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("SCHILY.xattr.user.overlay.origin", b"x"),
            ("SCHILY.xattr.user.keep", b"1"),
        ])
        .file_m("d/f", b"data\n", m)
        .finish();
}

fn names(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[test]
fn overlay_xattrs_of_an_image_are_hidden() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let tar = store.dir.path().join("img.tar");
    image_tar(&tar);
    let id = store.import(&tar, &[]);

    let ro = Mount::new(&store, &id, &[]);
    assert_eq!(names(&llistxattr(&ro.path("d/f")).unwrap()), ["user.keep"]);
    assert_eq!(
        names(&llistxattr(&ro.path("d")).unwrap()),
        Vec::<String>::new()
    );
    for n in ["trusted.overlay.redirect", "user.overlay.origin"] {
        assert_eq!(lgetxattr(&ro.path("d/f"), n), Err(libc::ENODATA), "{n}");
    }
    assert_eq!(lgetxattr(&ro.path("d/f"), "user.keep").unwrap(), b"1");
    assert_eq!(
        lgetxattr(&ro.path("d"), "trusted.overlay.opaque"),
        Err(libc::ENODATA)
    );

    // Kernel overlayfs over the mount: d is not opaque, so the lower d/g
    // below it shows.
    if is_root() {
        let t = tempfile::tempdir().unwrap();
        let (low, merged) = (t.path().join("low"), t.path().join("merged"));
        std::fs::create_dir_all(low.join("d")).unwrap();
        std::fs::write(low.join("d/g"), b"g").unwrap();
        std::fs::create_dir(&merged).unwrap();
        let k = KernelOverlay::mount(
            &merged,
            &format!("lowerdir={}:{}", ro.dir.display(), low.display()),
        );
        let mut seen: Vec<String> = std::fs::read_dir(merged.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        seen.sort();
        drop(k);
        assert_eq!(
            seen,
            ["f", "g"],
            "the image's opaque marker reached overlayfs"
        );
    }
    drop(ro);

    // Read-write: a copy-up does not write them into the branch, the mount
    // does not show or take them.
    let rwdir = store.dir.path().join("rw");
    let rw = Mount::rw(&store, &id, &rwdir);
    let f = rw.path("d/f");
    let st = Command::new("chmod").arg("0600").arg(&f).status().unwrap();
    assert!(st.success());
    assert!(rwdir.join("d/f").is_file(), "copied up");
    assert_eq!(
        names(&llistxattr(&rwdir.join("d/f")).unwrap()),
        ["user.keep"]
    );
    assert_eq!(names(&llistxattr(&f).unwrap()), ["user.keep"]);
    assert_eq!(
        names(&llistxattr(&rwdir.join("d")).unwrap())
            .into_iter()
            .filter(|n| n.contains("overlay"))
            .count(),
        0
    );
    assert_eq!(
        lsetxattr(&rw.path("d"), "trusted.overlay.opaque", b"y"),
        Err(libc::EPERM)
    );
    assert_eq!(
        lsetxattr(&f, "user.overlay.redirect", b"/x"),
        Err(libc::EPERM)
    );
    lsetxattr(&f, "user.other", b"2").unwrap();
    assert_eq!(lgetxattr(&f, "user.other").unwrap(), b"2");
}
