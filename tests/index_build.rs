//! Hand-written cases for `index::build_index` and `Index::from_bytes`: each
//! builds a layer tar in memory, indexes it, and checks what the index says
//! against what was written.
//!
//! Long file: hand-written cases of one builder, each a few lines of tar
//! set-up; and each file of tests/ is a test binary of its own, so a split
//! would be one more binary to build and link in CI.

mod common;

use common::tars::{Format, Meta, Tar, M644};
use layerfs::layer::index::{build_index, BuildError, Entry, Index, IndexError, Kind, HEADER_SIZE};
use tar::{EntryType, Header};

fn index(tar: &[u8]) -> Index {
    let (bytes, _) = build_index(tar).expect("build_index");
    Index::from_bytes(bytes, "test").expect("from_bytes")
}

fn get(idx: &Index, path: &str) -> Entry {
    let i = idx
        .lookup_path(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing from the index"));
    idx.entry(i)
}

fn content<'a>(tar: &'a [u8], e: &Entry) -> &'a [u8] {
    assert_eq!(e.kind, Kind::File);
    &tar[e.data_off as usize..(e.data_off + e.size) as usize]
}

/// Names of the children of directory `path`, in index order.
fn names(idx: &Index, path: &str) -> Vec<String> {
    let d = get(idx, path);
    assert!(d.is_dir(), "{path} is not a directory");
    idx.children(&d)
        .map(|c| String::from_utf8(idx.name(&idx.entry(c)).to_vec()).unwrap())
        .collect()
}

fn build_err(tar: &[u8]) -> String {
    match build_index(tar) {
        Ok(_) => panic!("build_index accepted a bad tar"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn plain_files_dirs_and_content() {
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let tar = Tar::new()
        .dir("etc/", 0o755)
        .file_m(
            "etc/passwd",
            b"root:x:0:0\n",
            Meta {
                mode: 0o100644,
                uid: 0,
                gid: 42,
                mtime: 1_234_567,
            },
        )
        .file("etc/empty", b"")
        .file_m(
            "usr/bin/su",
            &big,
            Meta {
                mode: 0o4755,
                uid: 1000,
                gid: 1001,
                mtime: 99,
            },
        )
        .finish();
    let (bytes, stats) = build_index(&tar).unwrap();
    assert_eq!(stats.files, 3);
    assert_eq!(stats.whiteouts, 0);
    assert_eq!(stats.file_bytes, 11 + big.len() as u64);
    let idx = Index::from_bytes(bytes, "t").unwrap();
    assert_eq!(stats.entries, idx.len());
    assert_eq!(idx.tar_size(), tar.len() as u64);

    let root = idx.entry(0);
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(names(&idx, ""), ["etc", "usr"]);
    assert_eq!(names(&idx, "etc"), ["empty", "passwd"]);

    let p = get(&idx, "etc/passwd");
    assert_eq!(p.kind, Kind::File);
    assert_eq!(p.mode, 0o644, "type bits are masked off");
    assert_eq!((p.uid, p.gid, p.mtime, p.mtime_nsec), (0, 42, 1_234_567, 0));
    assert_eq!(p.nlink, 1);
    assert_eq!(content(&tar, &p), b"root:x:0:0\n");
    assert_eq!(idx.name(&p), b"passwd");

    let e = get(&idx, "etc/empty");
    assert_eq!(e.size, 0);
    assert_eq!(content(&tar, &e), b"");

    let su = get(&idx, "usr/bin/su");
    assert_eq!(su.mode, 0o4755);
    assert_eq!((su.uid, su.gid, su.mtime), (1000, 1001, 99));
    assert_eq!(content(&tar, &su), &big[..]);

    // lookup agrees with lookup_path, and misses are None.
    let etc = get(&idx, "etc");
    assert_eq!(idx.lookup(&etc, b"passwd"), idx.lookup_path(b"etc/passwd"));
    assert_eq!(idx.lookup(&etc, b"nope"), None);
    assert_eq!(idx.lookup_path(b"etc/passwd/x"), None);
    assert_eq!(
        idx.lookup_path(b"./etc//passwd"),
        idx.lookup_path(b"etc/passwd")
    );
}

#[test]
fn implicit_parent_dirs() {
    let tar = Tar::new()
        .file("a/b/c/f", b"x")
        .dir_m(
            "a/b/",
            Meta {
                mode: 0o700,
                uid: 5,
                gid: 6,
                mtime: 7,
            },
        )
        .finish();
    let idx = index(&tar);
    let root = idx.entry(0);
    assert!(root.is_implicit(), "root without a ./ entry is implicit");
    for p in ["a", "a/b/c"] {
        let d = get(&idx, p);
        assert_eq!(d.kind, Kind::Dir, "{p}");
        assert!(d.is_implicit(), "{p}");
        assert_eq!((d.mode, d.uid, d.gid, d.mtime), (0o755, 0, 0, 0), "{p}");
        assert!(!d.is_opaque());
    }
    let b = get(&idx, "a/b");
    assert!(
        !b.is_implicit(),
        "an explicit entry clears the implicit flag"
    );
    assert_eq!((b.mode, b.uid, b.gid, b.mtime), (0o700, 5, 6, 7));
    assert_eq!(names(&idx, "a/b"), ["c"], "children kept");
    assert_eq!(content(&tar, &get(&idx, "a/b/c/f")), b"x");
}

#[test]
fn dot_prefixes_and_root_entry() {
    let tar = Tar::new()
        .dir_m(
            "./",
            Meta {
                mode: 0o751,
                uid: 3,
                gid: 4,
                mtime: 1_000,
            },
        )
        .dir("./bin/", 0o711)
        .file("./bin/sh", b"#!")
        .file(".//bin/./ls", b"ls")
        .file("usr/./lib/x", b"x")
        .finish();
    let idx = index(&tar);
    let root = idx.entry(0);
    assert!(!root.is_implicit());
    assert_eq!(
        (root.mode, root.uid, root.gid, root.mtime),
        (0o751, 3, 4, 1_000)
    );
    assert_eq!(names(&idx, ""), ["bin", "usr"]);
    assert_eq!(names(&idx, "bin"), ["ls", "sh"]);
    assert_eq!(get(&idx, "bin").mode, 0o711);
    assert_eq!(content(&tar, &get(&idx, "bin/ls")), b"ls");
    assert_eq!(content(&tar, &get(&idx, "usr/lib/x")), b"x");
    // No entry is named "." or "".
    for i in 1..idx.len() {
        let n = idx.name(&idx.entry(i));
        assert!(!n.is_empty() && n != b"." && !n.contains(&b'/'), "{n:?}");
    }
}

#[test]
fn root_entry_must_be_a_directory() {
    // "./" would be an old-style directory; "." with data is a file.
    let tar = Tar::new().file(".", b"x").finish();
    build_err(&tar);
}

#[test]
fn long_gnu_names_and_link_targets() {
    let long_dir = format!("{}/{}", "d".repeat(90), "e".repeat(90));
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("../{}", "t".repeat(200));
    let mut t = Tar::new();
    let new_gnu = || {
        let mut h = Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let mut h = new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o640);
    h.set_size(5);
    t.builder()
        .append_data(&mut h, &long_file, &b"hello"[..])
        .unwrap();
    let mut h = new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    t.builder()
        .append_link(&mut h, format!("{long_dir}/link"), &long_target)
        .unwrap();
    let mut h = new_gnu();
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Link);
    h.set_size(0);
    t.builder()
        .append_link(&mut h, "short", &long_file)
        .unwrap();
    let tar = t.finish();
    assert!(
        tar.windows(13).any(|w| w == b"././@LongLink"),
        "GNU long names used"
    );

    let idx = index(&tar);
    let f = get(&idx, &long_file);
    assert_eq!(f.kind, Kind::File);
    assert_eq!(f.mode, 0o640);
    assert_eq!(idx.name(&f), "f".repeat(150).as_bytes());
    assert_eq!(content(&tar, &f), b"hello");
    let l = get(&idx, &format!("{long_dir}/link"));
    assert_eq!(l.kind, Kind::Symlink);
    assert_eq!(idx.target(&l), long_target.as_bytes());
    let s = get(&idx, "short");
    assert_eq!((s.group, s.data_off, s.nlink), (f.group, f.data_off, 2));
}

#[test]
fn pax_long_names_mtime_and_xattrs() {
    let long = format!("{}/{}", "p".repeat(120), "q".repeat(120));
    let long_target = "z".repeat(300);
    let mut t = Tar::new();
    t.format(Format::Ustar);
    t.pax(&[
        ("path", long.as_bytes()),
        ("mtime", b"1700000000.123456789"),
        ("SCHILY.xattr.user.foo", b"bar"),
        (
            "SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\0\x20\0\0",
        ),
    ]);
    t.file("truncated-name", b"pax data");
    t.pax(&[("linkpath", long_target.as_bytes()), ("mtime", b"-1.5")]);
    t.entry(
        b"sym",
        EntryType::Symlink,
        b"",
        b"",
        Meta {
            mode: 0o777,
            ..M644
        },
    );
    t.pax(&[("mtime", b"1700000000")]);
    t.file("whole", b"");
    t.pax(&[("mtime", b"12.5")]);
    t.file("half", b"");
    let tar = t.finish();

    let idx = index(&tar);
    assert_eq!(idx.lookup_path(b"truncated-name"), None);
    let f = get(&idx, &long);
    assert_eq!(content(&tar, &f), b"pax data");
    assert_eq!((f.mtime, f.mtime_nsec), (1_700_000_000, 123_456_789));
    let xattrs: Vec<(Vec<u8>, Vec<u8>)> = idx
        .xattrs(&f)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(
        xattrs,
        vec![
            (
                b"security.capability".to_vec(),
                b"\x01\x00\x00\x02\0\x20\0\0".to_vec()
            ),
            (b"user.foo".to_vec(), b"bar".to_vec()),
        ]
    );
    let s = get(&idx, "sym");
    assert_eq!(idx.target(&s), long_target.as_bytes());
    assert_eq!((s.mtime, s.mtime_nsec), (-2, 500_000_000));
    assert_eq!(idx.xattrs(&s).count(), 0);
    let w = get(&idx, "whole");
    assert_eq!((w.mtime, w.mtime_nsec), (1_700_000_000, 0));
    let h = get(&idx, "half");
    assert_eq!((h.mtime, h.mtime_nsec), (12, 500_000_000));
}

#[test]
fn pax_uid_and_gid() {
    let mut t = Tar::new();
    t.format(Format::Ustar);
    t.pax(&[("uid", b"3000000"), ("gid", b"4294967294")]);
    t.file("big-ids", b"");
    let idx = index(&t.finish());
    let e = get(&idx, "big-ids");
    assert_eq!((e.uid, e.gid), (3_000_000, 4_294_967_294));
}

#[test]
fn bad_pax_mtime_is_refused() {
    let mut t = Tar::new();
    t.pax(&[("mtime", b"12.3x")]);
    t.file("f", b"");
    build_err(&t.finish());
}

#[test]
fn hard_links() {
    let tar = Tar::new()
        .file_m(
            "bin/busybox",
            b"BUSYBOX",
            Meta {
                mode: 0o755,
                uid: 1,
                gid: 2,
                mtime: 3,
            },
        )
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("./sbin/init", "./bin/busybox")
        .file("lonely", b"one")
        .symlink("sym", "lonely")
        .hardlink("sym2", "sym")
        .finish();
    let (bytes, stats) = build_index(&tar).unwrap();
    assert_eq!(stats.files, 4, "the three names of busybox and lonely");
    let idx = Index::from_bytes(bytes, "t").unwrap();
    let bb = get(&idx, "bin/busybox");
    for p in ["bin/busybox", "bin/sh", "sbin/init"] {
        let e = get(&idx, p);
        assert_eq!(e.kind, Kind::File, "{p}");
        assert_eq!(e.nlink, 3, "{p}");
        assert_eq!(e.group, bb.group, "{p}");
        assert_eq!(e.data_off, bb.data_off, "{p}");
        assert_eq!(e.size, 7, "{p}");
        assert_eq!(
            (e.mode, e.uid, e.gid, e.mtime),
            (0o755, 1, 2, 3),
            "{p} shares its target's metadata"
        );
        assert_eq!(content(&tar, &e), b"BUSYBOX");
    }
    let lonely = get(&idx, "lonely");
    assert_eq!(lonely.nlink, 1);
    assert_ne!(lonely.group, bb.group);
    let s1 = get(&idx, "sym");
    let s2 = get(&idx, "sym2");
    assert_eq!(s2.kind, Kind::Symlink);
    assert_eq!(idx.target(&s2), b"lonely");
    assert_eq!((s1.group, s1.nlink, s2.nlink), (s2.group, 2, 2));
    assert!(get(&idx, "sbin").is_implicit());
}

#[test]
fn hard_link_keeps_the_old_inode_when_its_target_is_replaced() {
    let tar = Tar::new()
        .file("a", b"old")
        .hardlink("b", "a")
        .file("a", b"new!")
        .finish();
    let idx = index(&tar);
    let a = get(&idx, "a");
    let b = get(&idx, "b");
    assert_eq!(content(&tar, &a), b"new!");
    assert_eq!(content(&tar, &b), b"old");
    assert_ne!(a.group, b.group);
    assert_eq!((a.nlink, b.nlink), (1, 1));
}

#[test]
fn symlinks_devices_fifos() {
    let tar = Tar::new()
        .symlink("lib", "usr/lib")
        .symlink("abs", "/etc/hosts")
        .device(EntryType::Char, "dev/null", 1, 3)
        .device(EntryType::Block, "dev/sda1", 8, 1)
        .device(EntryType::Fifo, "run/fifo", 0, 0)
        .finish();
    let idx = index(&tar);
    let l = get(&idx, "lib");
    assert_eq!(l.kind, Kind::Symlink);
    assert_eq!(idx.target(&l), b"usr/lib");
    assert_eq!(l.size, 0);
    assert_eq!(idx.target(&get(&idx, "abs")), b"/etc/hosts");
    let n = get(&idx, "dev/null");
    assert_eq!(n.kind, Kind::Char);
    assert_eq!((n.rdev_major, n.rdev_minor), (1, 3));
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    let b = get(&idx, "dev/sda1");
    assert_eq!(b.kind, Kind::Block);
    assert_eq!((b.rdev_major, b.rdev_minor), (8, 1));
    let f = get(&idx, "run/fifo");
    assert_eq!(f.kind, Kind::Fifo);
    assert_eq!(f.mode, 0o644);
    assert_eq!(Kind::Fifo.mode_bits(), libc::S_IFIFO);
    assert!(get(&idx, "dev").is_implicit());
}

#[test]
fn later_entry_replaces_earlier() {
    let tar = Tar::new()
        .file("f", b"first version")
        .file_m(
            "f",
            b"second",
            Meta {
                mode: 0o600,
                uid: 9,
                gid: 9,
                mtime: 9,
            },
        )
        .dir("d/", 0o700)
        .file("d/kept", b"k")
        .dir_m(
            "d/",
            Meta {
                mode: 0o750,
                uid: 1,
                gid: 1,
                mtime: 1,
            },
        )
        .dir("gone/", 0o755)
        .file("gone/child", b"c")
        .file("gone", b"now a file")
        .file("was_file", b"x")
        .dir("was_file/", 0o711)
        .symlink("s", "one")
        .symlink("s", "two")
        .file("x/y", b"y")
        .file("x", b"x replaces the implicit dir x")
        .file("x/z", b"and x/z makes it a dir again")
        .finish();
    let idx = index(&tar);
    let f = get(&idx, "f");
    assert_eq!(content(&tar, &f), b"second");
    assert_eq!((f.mode, f.uid), (0o600, 9));
    // data_off points at the second copy, not the first.
    let first = tar.windows(13).position(|w| w == b"first version").unwrap();
    assert!(f.data_off as usize > first);

    let d = get(&idx, "d");
    assert_eq!((d.mode, d.uid, d.mtime), (0o750, 1, 1));
    assert_eq!(names(&idx, "d"), ["kept"]);

    let g = get(&idx, "gone");
    assert_eq!(g.kind, Kind::File);
    assert_eq!(content(&tar, &g), b"now a file");
    assert_eq!(idx.lookup_path(b"gone/child"), None);

    let w = get(&idx, "was_file");
    assert_eq!((w.kind, w.mode), (Kind::Dir, 0o711));
    assert!(!w.is_implicit());

    assert_eq!(idx.target(&get(&idx, "s")), b"two");

    let x = get(&idx, "x");
    assert!(x.is_dir() && x.is_opaque() && !x.is_implicit());
    assert_eq!(names(&idx, "x"), ["z"]);
    assert!(get(&idx, "was_file").is_opaque());
    assert!(!get(&idx, "d").is_opaque());
    assert_eq!(names(&idx, ""), ["d", "f", "gone", "s", "was_file", "x"]);
}

#[test]
fn whiteouts_opaque_and_aufs_metadata() {
    let tar = Tar::new()
        .file(".wh.gone", b"")
        .dir("etc/", 0o755)
        .file("etc/.wh.hosts", b"")
        .file("etc/.wh..wh..opq", b"")
        .file("etc/new", b"n")
        .file("var/.wh..wh..opq", b"")
        .file(".wh..wh.plnk/123.456", b"aufs hard link store")
        .dir(".wh..wh.plnk/", 0o700)
        .file(".wh..wh.aufs", b"")
        .file("usr/.wh..wh.orph/x", b"")
        .file("./opt/.wh.thing", b"")
        .finish();
    let (bytes, stats) = build_index(&tar).unwrap();
    assert_eq!(stats.whiteouts, 3);
    assert_eq!(stats.files, 1);
    let idx = Index::from_bytes(bytes, "t").unwrap();
    assert_eq!(names(&idx, ""), ["etc", "gone", "opt", "var"]);
    assert_eq!(get(&idx, "gone").kind, Kind::Whiteout);
    assert_eq!(Kind::Whiteout.mode_bits(), 0);
    let etc = get(&idx, "etc");
    assert!(etc.is_opaque() && !etc.is_implicit());
    assert_eq!(names(&idx, "etc"), ["hosts", "new"]);
    assert_eq!(get(&idx, "etc/hosts").kind, Kind::Whiteout);
    let var = get(&idx, "var");
    assert!(var.is_opaque() && var.is_implicit());
    assert_eq!(names(&idx, "var"), Vec::<String>::new());
    assert_eq!(get(&idx, "opt/thing").kind, Kind::Whiteout);
    assert!(!idx.entry(0).is_opaque());
    // Nothing is called .wh.anything.
    for i in 0..idx.len() {
        assert!(!idx.name(&idx.entry(i)).starts_with(b".wh."));
    }
}

/// Whiteouts delete lower layers' content only: what the same layer has
/// under the name, before or after the whiteout, stays (OCI image spec,
/// "Whiteouts").
#[test]
fn whiteout_keeps_the_same_layers_entry() {
    let tar = Tar::new()
        .file("f", b"kept")
        .file(".wh.f", b"")
        .dir("d/", 0o700)
        .file("d/x", b"x")
        .file(".wh.d", b"")
        .file(".wh.g", b"")
        .file("g", b"after")
        .finish();
    let (bytes, stats) = build_index(&tar).unwrap();
    assert_eq!(stats.whiteouts, 0);
    let idx = Index::from_bytes(bytes, "t").unwrap();
    assert_eq!(content(&tar, &get(&idx, "f")), b"kept");
    assert_eq!(content(&tar, &get(&idx, "g")), b"after");
    let d = get(&idx, "d");
    assert!(d.is_opaque(), "hides the lower d");
    assert_eq!(d.mode, 0o700);
    assert_eq!(names(&idx, "d"), ["x"]);
}

/// A directory replacing a whiteout or a non-directory of the same layer,
/// however it comes about, is opaque: the layer deleted the lower entry. One
/// made implicitly is not implicit either, as there is no lower directory
/// left to take metadata from (it has the implicit defaults).
#[test]
fn whiteout_then_directory_is_opaque() {
    let tar = Tar::new()
        .file(".wh.a", b"")
        .dir("a/", 0o711)
        .file(".wh.b", b"")
        .file("b/x", b"")
        .file(".wh.c", b"")
        .file("c", b"a file first")
        .dir("c/", 0o750)
        .dir("d/", 0o755)
        .file("d/.wh.x", b"")
        .file("d", b"d replaced by a file")
        .dir("d/", 0o755)
        .dir("e/", 0o755)
        .file("e/.wh..wh..opq", b"")
        .file("e", b"")
        .file("e/y", b"")
        .finish();
    let idx = index(&tar);
    for (p, mode) in [("a", 0o711), ("b", 0o755), ("c", 0o750)] {
        let e = get(&idx, p);
        assert!(e.is_dir() && e.is_opaque() && !e.is_implicit(), "{p}");
        assert_eq!(e.mode, mode, "{p}");
    }
    assert_eq!(names(&idx, "b"), ["x"]);
    // d and e were replaced by files, then made directories again.
    let d = get(&idx, "d");
    assert!(d.is_opaque() && !d.is_implicit());
    assert_eq!(names(&idx, "d"), Vec::<String>::new());
    let e = get(&idx, "e");
    assert!(e.is_opaque() && !e.is_implicit());
    assert_eq!((e.mode, e.uid, e.mtime), (0o755, 0, 0));
    assert_eq!(names(&idx, "e"), ["y"]);
}

#[test]
fn opaque_root() {
    let tar = Tar::new()
        .file(".wh..wh..opq", b"")
        .file("a", b"a")
        .finish();
    let idx = index(&tar);
    assert!(idx.entry(0).is_opaque());
    assert_eq!(names(&idx, ""), ["a"]);
}

#[test]
fn whiteout_used_as_a_directory_is_refused() {
    build_err(&Tar::new().file(".wh.a/b", b"").finish());
}

#[test]
fn escaping_paths_are_refused() {
    for name in ["../x", "a/../../x", "a/..", "..", "/etc/passwd", "/"] {
        let tar = Tar::new().file(name, b"x").finish();
        let msg = build_err(&tar);
        assert!(
            msg.contains(name.trim_end_matches('/')) || name == "/",
            "{name}: {msg}"
        );
    }
    // Also as directories and as hard link targets.
    build_err(&Tar::new().dir("../d/", 0o755).finish());
    build_err(&Tar::new().file("a", b"").hardlink("b", "../a").finish());
    build_err(&Tar::new().file("a", b"").hardlink("b", "/a").finish());
}

#[test]
fn bad_hard_links_are_refused() {
    let msg = build_err(&Tar::new().hardlink("b", "missing").finish());
    assert!(msg.contains("missing"), "{msg}");
    // The target must come *before* the link.
    build_err(&Tar::new().hardlink("b", "a").file("a", b"").finish());
    // Not to a directory (explicit or implicit), nor to a whiteout.
    build_err(&Tar::new().dir("d/", 0o755).hardlink("b", "d").finish());
    build_err(&Tar::new().file("d/f", b"").hardlink("b", "d").finish());
    build_err(&Tar::new().file(".wh.w", b"").hardlink("b", "w").finish());
    // A target that was replaced away is gone.
    build_err(
        &Tar::new()
            .file("d/f", b"")
            .file("d", b"")
            .hardlink("b", "d/f")
            .finish(),
    );
}

#[test]
fn truncated_tar_is_refused() {
    let data = vec![7u8; 5000];
    let full = Tar::new().file("a", b"ok").file("big", &data).finish();
    assert!(build_index(&full).is_ok());
    let big_hdr = 512 + 512; // header + data block of "a"
    let big_data = big_hdr + 512;
    // Cut inside big's data, at its very start, and inside its header.
    for cut in [
        big_data + 4999,
        big_data + 100,
        big_data + 1,
        big_data,
        big_hdr + 300,
    ] {
        assert!(
            build_index(&full[..cut]).is_err(),
            "truncated at {cut} of {} accepted",
            full.len()
        );
    }
}

#[test]
fn index_bytes_are_validated() {
    let tar = Tar::new()
        .dir("./", 0o755)
        .file("a/b", b"hello")
        .symlink("s", "a/b")
        .pax(&[("SCHILY.xattr.user.foo", b"v")])
        .file("x", b"")
        .file(".wh.w", b"")
        .finish();
    let (good, _) = build_index(&tar).unwrap();
    assert!(Index::from_bytes(good.clone(), "ok").is_ok());
    let idx = Index::from_bytes(good.clone(), "ok").unwrap();
    let x = get(&idx, "x");
    assert_eq!(
        idx.xattrs(&x).collect::<Vec<_>>(),
        vec![(&b"user.foo"[..], &b"v"[..])]
    );

    // Any flipped byte after the header breaks the checksum.
    for i in HEADER_SIZE..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= flip;
            match Index::from_bytes(b, "bad") {
                Err(IndexError::Corrupt { what, .. }) => {
                    assert!(what.contains("checksum"), "byte {i}: {what}")
                }
                other => panic!("byte {i} flipped: {other:?}"),
            }
        }
    }
    // A flipped checksum byte, too.
    let mut b = good.clone();
    b[60] ^= 1;
    assert!(matches!(
        Index::from_bytes(b, "bad"),
        Err(IndexError::Corrupt { .. })
    ));

    // Another version is refused with a message naming it.
    for v in [0u32, 2, 7, 0xdead_beef] {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        match Index::from_bytes(b, "old/index") {
            Err(e @ IndexError::UnsupportedVersion { found, .. }) => {
                assert_eq!(found, v);
                let msg = e.to_string();
                assert!(msg.contains(&format!("version {v}")), "{msg}");
                assert!(msg.contains("old/index"), "{msg}");
            }
            other => panic!("version {v}: {other:?}"),
        }
    }

    // Bad magic.
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        Index::from_bytes(b, "bad"),
        Err(IndexError::BadMagic(_))
    ));

    // Every truncation, and trailing garbage, is an error.
    for len in 0..good.len() {
        assert!(
            Index::from_bytes(good[..len].to_vec(), "short").is_err(),
            "truncated to {len}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert!(Index::from_bytes(long, "long").is_err());
}

#[test]
fn build_error_names_the_entry() {
    let tar = Tar::new().file("ok", b"").file("a/../../etc", b"").finish();
    match build_index(&tar) {
        Err(BuildError::Entry { path, .. }) => assert_eq!(path, "a/../../etc"),
        other => panic!("{other:?}"),
    }
}

/// A later PAX record for the same xattr wins; an old-style directory
/// (regular-file type, name ending in '/') is a directory.
#[test]
fn pax_xattr_last_record_wins_and_old_style_dirs() {
    let m0 = Meta { mtime: 0, ..M644 };
    let tar = Tar::new()
        .pax(&[
            ("SCHILY.xattr.user.k", &b"first"[..]),
            ("SCHILY.xattr.user.k", &b"second"[..]),
        ])
        .format(Format::Ustar)
        .file_m("f", b"", m0)
        .format(Format::Old)
        .entry(
            b"olddir/",
            EntryType::new(0),
            b"",
            b"",
            Meta { mode: 0o750, ..m0 },
        )
        .finish();
    let (bytes, _) = layerfs::layer::index::build_index(&tar).unwrap();
    let idx = layerfs::layer::index::Index::from_bytes(bytes, "t").unwrap();
    let f = idx.entry(idx.lookup_path(b"f").unwrap());
    let xs: Vec<(Vec<u8>, Vec<u8>)> = idx
        .xattrs(&f)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(xs, vec![(b"user.k".to_vec(), b"second".to_vec())]);
    let d = idx.entry(idx.lookup_path(b"olddir").unwrap());
    assert_eq!(d.kind, layerfs::layer::index::Kind::Dir);
    assert_eq!(d.mode, 0o750);
}

/// PAX records may hold newlines (their length prefixes them, POSIX pax):
/// a tar written by Python's tarfile, with newlines in a path, a symlink
/// target, a hard link's target and an xattr value, indexes to what GNU
/// tar extracts from it. Before, the whole entry failed with "malformed
/// pax extension" (the tar crate splits records at newlines).
#[test]
fn pax_records_with_newlines_index_as_gnu_tar_extracts_them() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("nl.tar");
    let script = r#"
import io, sys, tarfile
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def add(name, data=b"", kind=tarfile.REGTYPE, link="", pax=None):
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode, i.mtime = kind, link, 0o644, 1700000000
    i.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax: i.pax_headers = pax
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
add("d", kind=tarfile.DIRTYPE)
add("d/two\nlines", b"first\n", pax={"SCHILY.xattr.user.note": "a\nb"})
add("d/sym\nlink", kind=tarfile.SYMTYPE, link="two\nlines")
add("d/hard\nlink", kind=tarfile.LNKTYPE, link="d/two\nlines")
add("plain", b"x")
t.close()
"#;
    let st = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&tar_path)
        .status()
        .expect("python3");
    assert!(st.success());
    let tar = std::fs::read(&tar_path).unwrap();
    let idx = index(&tar);

    let out = dir.path().join("x");
    std::fs::create_dir(&out).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&out)
        .arg("-xf")
        .arg(&tar_path)
        .status()
        .unwrap();
    assert!(st.success(), "GNU tar -x");
    let mut extracted: Vec<String> = std::fs::read_dir(out.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    extracted.sort();
    let mut listed = names(&idx, "d");
    listed.sort();
    assert_eq!(listed, extracted);
    assert_eq!(listed, ["hard\nlink", "sym\nlink", "two\nlines"]);

    let f = get(&idx, "d/two\nlines");
    assert_eq!(
        content(&tar, &f),
        std::fs::read(out.join("d/two\nlines")).unwrap()
    );
    let xattrs: Vec<(Vec<u8>, Vec<u8>)> = idx
        .xattrs(&f)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(xattrs, [(b"user.note".to_vec(), b"a\nb".to_vec())]);
    let s = get(&idx, "d/sym\nlink");
    assert_eq!(
        idx.target(&s),
        std::fs::read_link(out.join("d/sym\nlink"))
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
    );
    let h = get(&idx, "d/hard\nlink");
    assert_eq!(h.group, f.group, "the hard link shares the file's inode");
    assert_eq!(content(&tar, &get(&idx, "plain")), b"x");
}
