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
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, kind: tar::EntryType, xattrs: &[(&str, &[u8])], data: &[u8]| {
        if !xattrs.is_empty() {
            b.append_pax_extensions(xattrs.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(
        "d/",
        tar::EntryType::Directory,
        &[("SCHILY.xattr.trusted.overlay.opaque", b"y")],
        b"",
    );
    add(
        "d/f",
        tar::EntryType::Regular,
        &[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("SCHILY.xattr.user.overlay.origin", b"x"),
            ("SCHILY.xattr.user.keep", b"1"),
        ],
        b"data\n",
    );
    b.finish().unwrap();
}

fn names(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

fn setxattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(())
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
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}:{}", ro.dir.display(), low.display()))
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success(), "kernel overlay over the mount");
        let mut seen: Vec<String> = std::fs::read_dir(merged.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        seen.sort();
        let _ = Command::new("umount").arg(&merged).status();
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
        setxattr(&rw.path("d"), "trusted.overlay.opaque", b"y"),
        Err(libc::EPERM)
    );
    assert_eq!(
        setxattr(&f, "user.overlay.redirect", b"/x"),
        Err(libc::EPERM)
    );
    setxattr(&f, "user.other", b"2").unwrap();
    assert_eq!(lgetxattr(&f, "user.other").unwrap(), b"2");
}
