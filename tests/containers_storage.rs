//! What containers-storage's overlay driver does to the directories of a
//! mount program besides mounting them, checked against fuse-overlayfs
//! (the mount program it was written for) on copies of the same
//! directories. Found by running containers-storage's own bats suite
//! against layerfs (`tools/cs-bats`).

mod common;

use std::path::Path;

use common::*;

/// Copies `src` to `dst` with `cp -a` (owners, modes, xattrs kept).
fn copy_tree(src: &Path, dst: &Path) {
    run_ok(std::process::Command::new("cp").arg("-a").arg(src).arg(dst));
}

/// `containers-storage applydiff` extracts a layer into its upper
/// directory in the AUFS format when a mount program is set (`.wh.NAME`
/// files, `.wh..wh..opq`; its getWhiteoutFormat), and then mounts that
/// directory as the upperdir. The markers must act as fuse-overlayfs
/// makes them act: `.wh.f1` hides the lower f1, the opaque `d` hides
/// the lower d/x, and writing over them (re-creating f1, adding to d,
/// renaming onto a hidden name) leaves a tree that reads back the same.
#[test]
fn aufs_whiteouts_in_an_upper_directory_act_as_in_fuse_overlayfs() {
    if !fuse_available() || !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    for d in ["lower/d", "lower/e", "upper/d", "work"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    for (p, data) in [
        ("lower/f1", "one"),
        ("lower/f2", "two"),
        ("lower/g", "gee"),
        ("lower/d/x", "x"),
        ("lower/e/y", "y"),
        ("upper/.wh.f1", ""),
        ("upper/.wh.g", ""),
        ("upper/d/.wh..wh..opq", ""),
        ("upper/f3", "three"),
    ] {
        std::fs::write(base.join(p), data).unwrap();
    }
    // Two copies: one for fuse-overlayfs, one for layerfs.
    let (fo, lf) = (t.path().join("fo"), t.path().join("lf"));
    copy_tree(&base, &fo);
    copy_tree(&base, &lf);
    let opts = |b: &Path| {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            b.join("lower").display(),
            b.join("upper").display(),
            b.join("work").display()
        )
    };
    let store = TestStore::new();
    let writes = |m: &Path| {
        std::fs::write(m.join("f1"), "again").unwrap();
        std::fs::create_dir(m.join("d/new")).unwrap();
        std::fs::rename(m.join("f3"), m.join("g")).unwrap();
        std::fs::remove_file(m.join("f2")).unwrap();
    };
    let mut seen = Vec::new();
    for (dir, fuse) in [(&fo, true), (&lf, false)] {
        let mnt = dir.join("merged");
        let (before, after) = if fuse {
            let m = FuseOverlayfs::mount(&mnt, &opts(dir));
            let before = snapshot(&m.dir);
            writes(&m.dir);
            (before, snapshot(&m.dir))
        } else {
            std::fs::create_dir_all(&mnt).unwrap();
            let m = Mount::branches(&store, &opts(dir));
            let before = snapshot(&m.dir);
            writes(&m.dir);
            (before, snapshot(&m.dir))
        };
        // And once more from the directories the writes left.
        let again = if fuse {
            snapshot(&FuseOverlayfs::mount(&mnt, &opts(dir)).dir)
        } else {
            snapshot(&Mount::branches(&store, &opts(dir)).dir)
        };
        seen.push((before, after, again));
    }
    let (fo_seen, lf_seen) = (&seen[0], &seen[1]);
    let ignore = ["mtime", "mtime_nsec"];
    assert_same_tree("as extracted", &fo_seen.0, &lf_seen.0, &ignore);
    assert_same_tree("after the writes", &fo_seen.1, &lf_seen.1, &ignore);
    assert_same_tree("mounted again", &fo_seen.2, &lf_seen.2, &ignore);
    // Not merely equal: the markers did hide what they name.
    let v: serde_json::Value = serde_json::from_str(&lf_seen.0).unwrap();
    let names: Vec<&String> = v.as_object().unwrap().keys().collect();
    for hidden in ["f1", "g", "d/x"] {
        assert!(
            !names.iter().any(|n| n.trim_start_matches('/') == hidden),
            "{hidden} shows through its whiteout: {names:?}"
        );
    }
}

/// containers-storage mounts a base layer with its empty `lowerdir` (a
/// 0700 directory it makes) under an empty `upperdir`, the layer's `diff`,
/// which it made 0555 (its default layer root mode; a child layer's diff
/// copies its parent's). The merged root is the upper root, as in kernel
/// overlayfs and fuse-overlayfs: its mode shows, and the mount leaves the
/// directory alone. layerfs took the lower root's owner and mode for an
/// empty upperdir and wrote them onto it (chmod 0700 at mount), so every
/// layer made through it, and each child layer after it, had a 0700 root
/// (containers-storage's bats suite: the merged root of `mount --ro` of
/// an image read drwx------ where fuse-overlayfs reads dr-xr-xr-x).
#[test]
fn an_empty_upperdir_keeps_its_root_mode_as_in_fuse_overlayfs() {
    if !fuse_available() || !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let t = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let kernel = common::overlay::overlay_listed();
    for who in ["fuse-overlayfs", "kernel", "layerfs"] {
        if who == "kernel" && !kernel {
            continue;
        }
        let base = t.path().join(who);
        for d in ["empty", "diff", "work", "merged"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let set = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        set(&base.join("empty"), 0o700).unwrap();
        set(&base.join("diff"), 0o555).unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("empty").display(),
            base.join("diff").display(),
            base.join("work").display()
        );
        let mnt = base.join("merged");
        let check = |m: &Path| {
            assert_eq!(mode(m), 0o555, "{who}: merged root");
            std::fs::write(m.join("f"), "x").unwrap();
            assert_eq!(mode(m), 0o555, "{who}: merged root after a write");
        };
        match who {
            "fuse-overlayfs" => check(&FuseOverlayfs::mount(&mnt, &opts).dir),
            "kernel" => check(&KernelOverlay::mount(&mnt, &opts).dir),
            _ => check(&Mount::branches(&store, &opts).dir),
        }
        assert_eq!(
            mode(&base.join("diff")),
            0o555,
            "{who}: upperdir after the mount"
        );
        assert_eq!(
            mode(&base.join("empty")),
            0o700,
            "{who}: lowerdir after the mount"
        );
    }
}
