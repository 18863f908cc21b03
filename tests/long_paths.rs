//! Paths just under PATH_MAX inside a writable mount: the daemon's path
//! in the branch (branch root + path in the mount) is longer than PATH_MAX
//! there, and every operation must still work as on a plain directory
//! (src/sys/at.rs: the branch path's parent is opened stepwise and the
//! call made on its last component). Each test runs the same operations
//! on a plain directory whose path has the mount's length and compares
//! what they return, errno for errno.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

/// The length of the deepest paths the operations use (a file in the
/// deepest directory), under PATH_MAX (4096, its NUL included).
const TARGET: usize = 4090;
/// The deepest directory's path is this much shorter: room for the names
/// made in it.
const ROOM: usize = 8;

/// The directory chain under a base of `base_len` bytes whose deepest
/// directory's path is `TARGET - ROOM` bytes long.
fn chain(base_len: usize) -> PathBuf {
    let mut rel = PathBuf::new();
    let mut len = base_len;
    let mut i = 0;
    while len < TARGET - ROOM {
        let left = TARGET - ROOM - len - 1;
        let n = match left {
            401.. => 200,
            256..=400 => left / 2,
            _ => left,
        };
        let name = format!("{i:03}{}", "d".repeat(n - 3));
        len += 1 + name.len();
        rel.push(name);
        i += 1;
    }
    assert_eq!(len, TARGET - ROOM, "chain under {base_len} bytes");
    rel
}

fn errno(e: &std::io::Error) -> String {
    format!("errno {}", e.raw_os_error().unwrap_or(-1))
}

/// What an operation returned: its value, or the errno.
fn show<T: std::fmt::Debug>(r: std::io::Result<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => errno(&e),
    }
}

/// What `lstat` says of a path that matters for the comparison (not the
/// times: the two trees are made one after the other).
fn stat(p: &Path) -> String {
    show(std::fs::symlink_metadata(p).map(|m| {
        format!(
            "type {:o} perm {:o} size {} nlink {} uid {} gid {}",
            m.mode() & libc::S_IFMT,
            m.mode() & 0o7777,
            if m.is_dir() { 0 } else { m.size() },
            if m.is_dir() { 0 } else { m.nlink() },
            m.uid(),
            m.gid(),
        )
    }))
}

/// `stat` with the modification time.
fn stat_mtime(p: &Path) -> String {
    let t =
        std::fs::symlink_metadata(p).map(|m| format!(" mtime {}.{}", m.mtime(), m.mtime_nsec()));
    stat(p) + &t.unwrap_or_default()
}

/// Fails unless the steps of `out` that failed are exactly `expected`.
fn only_failed(out: &[String], expected: &[&str]) {
    let failed: Vec<&str> = out
        .iter()
        .filter(|l| l.contains("errno"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(failed, expected, "on the plain directory: {out:#?}");
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn libc_result(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn xattr_list(p: &Path) -> String {
    match llistxattr(p) {
        Ok(l) => {
            let mut names: Vec<String> = l
                .split(|&b| b == 0)
                .filter(|n| n.starts_with(b"user."))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            names.sort();
            format!("{names:?}")
        }
        Err(e) => format!("errno {e}"),
    }
}

fn listing(d: &Path) -> String {
    show(std::fs::read_dir(d).and_then(|rd| {
        let mut v = rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        v.sort();
        Ok(v)
    }))
}

/// Creates, stats, renames, links, changes and removes objects at
/// paths of up to TARGET bytes under `base`; returns what each step gave.
fn new_objects(base: &Path) -> Vec<String> {
    let rel = chain(base.as_os_str().len());
    let d = base.join(&rel);
    let at = |n: &str| d.join(n);
    let mut out = Vec::new();
    let mut log = |what: &str, r: String| out.push(format!("{what}: {r}"));
    log("mkdir -p", show(std::fs::create_dir_all(&d)));
    log("stat dir", stat(&d));
    log("create f", show(std::fs::write(at("f"), b"hello")));
    log("stat f", stat(&at("f")));
    log("read f", show(std::fs::read(at("f"))));
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(c(&at("p")).as_ptr(), 0o644) };
    log("mkfifo p", show(libc_result(r)));
    log("stat p", stat(&at("p")));
    log("symlink s", show(std::os::unix::fs::symlink("f", at("s"))));
    log("readlink s", show(std::fs::read_link(at("s"))));
    log("stat s", stat(&at("s")));
    log("link h", show(std::fs::hard_link(at("f"), at("h"))));
    log("stat f linked", stat(&at("f")));
    log("rename f g", show(std::fs::rename(at("f"), at("g"))));
    log("stat f renamed", stat(&at("f")));
    log("read g", show(std::fs::read(at("g"))));
    log(
        "chmod g",
        show(std::fs::set_permissions(
            at("g"),
            std::fs::Permissions::from_mode(0o640),
        )),
    );
    log(
        "chown g",
        show(std::os::unix::fs::lchown(at("g"), Some(1), Some(2))),
    );
    log(
        "truncate g",
        show(
            std::fs::OpenOptions::new()
                .write(true)
                .open(at("g"))
                .and_then(|f| f.set_len(3)),
        ),
    );
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 7,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(&at("g")).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    log("utimens g", show(libc_result(r)));
    log("stat g", stat_mtime(&at("g")));
    log(
        "setxattr g",
        format!("{:?}", lsetxattr(&at("g"), "user.k", b"v")),
    );
    log("getxattr g", format!("{:?}", lgetxattr(&at("g"), "user.k")));
    log("listxattr g", xattr_list(&at("g")));
    log("readdir", listing(&d));
    // The deepest directory renamed to a sibling of the same length, and
    // back.
    let last = rel.file_name().unwrap().to_string_lossy().into_owned();
    let other = d.with_file_name(format!("{}e", &last[..last.len() - 1]));
    log("rename dir", show(std::fs::rename(&d, &other)));
    log("stat g moved", stat(&other.join("g")));
    log("stat old dir", stat(&d));
    log("rename dir back", show(std::fs::rename(&other, &d)));
    // Past PATH_MAX the kernel refuses the path before it reaches a
    // filesystem: both say ENAMETOOLONG.
    log(
        "mkdir too long",
        show(std::fs::create_dir(d.join("x".repeat(20)))),
    );
    for n in ["s", "p", "h", "g"] {
        log(&format!("unlink {n}"), show(std::fs::remove_file(at(n))));
    }
    log("readdir empty", listing(&d));
    let mut dir = d.clone();
    while dir != base {
        log("rmdir", show(std::fs::remove_dir(&dir)));
        dir.pop();
    }
    log("readdir base", listing(base));
    out
}

/// A plain directory whose path is as long as `like`.
fn plain_like(tmp: &Path, like: &Path) -> PathBuf {
    let pad = like.as_os_str().len() - tmp.as_os_str().len() - 1;
    let p = tmp.join("p".repeat(pad));
    std::fs::create_dir(&p).unwrap();
    assert_eq!(p.as_os_str().len(), like.as_os_str().len());
    p
}

fn assert_same(what: &str, want: &[String], got: &[String]) {
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w, g, "{what}: the mount differs from a plain directory");
    }
    assert_eq!(want.len(), got.len(), "{what}");
}

/// New objects at paths of TARGET bytes in a store mount with `--rw`,
/// whose branch root is 100 bytes longer than the mountpoint: every
/// branch path of the test's deepest directory is past PATH_MAX.
#[test]
fn rw_mount_new_objects_near_path_max() {
    if !is_root() {
        eprintln!("SKIP: chown of the comparison needs root");
        return;
    }
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let rw = store.dir.path().join(format!("rw-{}", "b".repeat(100)));
    let m = Mount::rw(&store, &id, &rw);
    let base = m.path("t");
    std::fs::create_dir(&base).unwrap();
    let rw_real = rw.canonicalize().unwrap();
    let branch_len = rw_real.as_os_str().len() + TARGET - m.dir.as_os_str().len();
    assert!(
        branch_len > 4096,
        "the branch path ({branch_len} bytes) must be past PATH_MAX"
    );
    let tmp = tempfile::tempdir().unwrap();
    let plain = plain_like(tmp.path(), &base);
    let want = new_objects(&plain);
    only_failed(&want, &["stat f renamed", "stat old dir", "mkdir too long"]);
    let got = new_objects(&base);
    assert_same("rw mount", &want, &got);
}

/// Builds the deep lower tree under `root` (`rel` its deepest directory):
/// made under a short name and moved under `root` in one rename, so a
/// root longer than the mount's base puts it past PATH_MAX without a
/// long-path call here.
fn lower_tree(root: &Path, rel: &Path) {
    let staging = root.parent().unwrap().join("staging");
    let d = staging.join(rel);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("f"), b"lower").unwrap();
    std::fs::write(d.join("gone"), b"x").unwrap();
    std::os::unix::fs::symlink("f", d.join("s")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/y"), b"y").unwrap();
    std::fs::create_dir(root).unwrap();
    let top = rel.iter().next().unwrap();
    std::fs::rename(staging.join(top), root.join(top)).unwrap();
}

/// Reads, copies up, changes, renames and removes lower objects at paths
/// of up to TARGET bytes under `base` (holding `lower_tree`).
fn lower_objects(base: &Path, rel: &Path) -> Vec<String> {
    let d = base.join(rel);
    let at = |n: &str| d.join(n);
    let mut out = Vec::new();
    let mut log = |what: &str, r: String| out.push(format!("{what}: {r}"));
    log("readdir", listing(&d));
    log("stat f", stat(&at("f")));
    log("read f", show(std::fs::read(at("f"))));
    log("readlink s", show(std::fs::read_link(at("s"))));
    log("readdir sub", listing(&at("sub")));
    log(
        "append f",
        show(
            std::fs::OpenOptions::new()
                .append(true)
                .open(at("f"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, b" more")),
        ),
    );
    log("read f", show(std::fs::read(at("f"))));
    log(
        "chmod sub/y",
        show(std::fs::set_permissions(
            at("sub/y"),
            std::fs::Permissions::from_mode(0o600),
        )),
    );
    log(
        "setxattr sub/y",
        format!("{:?}", lsetxattr(&at("sub/y"), "user.k", b"v")),
    );
    log("listxattr sub/y", xattr_list(&at("sub/y")));
    log("rename f g", show(std::fs::rename(at("f"), at("g"))));
    log("unlink gone", show(std::fs::remove_file(at("gone"))));
    log("stat gone", stat(&at("gone")));
    log("rename sub", show(std::fs::rename(at("sub"), at("sub2"))));
    log("readdir sub2", listing(&at("sub2")));
    log("readdir", listing(&d));
    log("read g", show(std::fs::read(at("g"))));
    out
}

/// A deep tree in the lower directory of `mount-branches
/// lowerdir=,upperdir=,workdir=` (an overlay-format branch), both with
/// roots longer than the mount's: listing and reading it goes past
/// PATH_MAX in the lower directory, copy-ups, whiteouts and renames past
/// it in the upper one.
#[test]
fn mount_branches_deep_lower_tree() {
    if !is_root() {
        eprintln!("SKIP: an overlay-format upperdir needs root");
        return;
    }
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let t = tempfile::tempdir().unwrap();
    let pad = "l".repeat(150);
    let (lower, upper, work) = (
        t.path().join(format!("lower-{pad}")),
        t.path().join(format!("upper-{pad}")),
        t.path().join("work"),
    );
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    // The tree's depth depends on the mountpoint's length, known only
    // once mounted: a tempdir of the same form (the `layerfs-mnt` prefix
    // and six random characters) has that length.
    let dummy = tempfile::Builder::new()
        .prefix("layerfs-mnt")
        .tempdir()
        .unwrap();
    let base_len = dummy.path().as_os_str().len();
    drop(dummy);
    let rel = chain(base_len);
    lower_tree(&lower, &rel);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let m = Mount::branches(&store, &opts);
    assert_eq!(m.dir.as_os_str().len(), base_len, "mountpoints' length");
    assert!(lower.as_os_str().len() + TARGET - base_len > 4096);
    let tmp = tempfile::tempdir().unwrap();
    let plain = plain_like(tmp.path(), &m.dir);
    std::fs::remove_dir(&plain).unwrap();
    lower_tree(&plain, &rel);
    let want = lower_objects(&plain, &rel);
    only_failed(&want, &["stat gone"]);
    let got = lower_objects(&m.dir, &rel);
    assert_same("mount-branches", &want, &got);
    assert!(
        want.iter()
            .any(|l| l == "read g: [108, 111, 119, 101, 114, 32, 109, 111, 114, 101]"),
        "{want:#?}"
    );
    // The copy-up and the whiteout are in the upper directory, past
    // PATH_MAX (find walks by descriptor).
    let found = run_ok(std::process::Command::new("find").arg(&upper).args([
        "(",
        "-name",
        "g",
        "-o",
        "-name",
        "gone",
        ")",
        "-printf",
        "%s %y %p\\n",
    ]));
    let mut found: Vec<(&str, &str, usize)> = found
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            let (size, ty, p) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            (size, ty, p.len())
        })
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].0, found[0].1), ("0", "c"), "the whiteout of gone");
    assert_eq!((found[1].0, found[1].1), ("10", "f"), "g, copied up");
    assert!(found.iter().all(|f| f.2 > 4096), "{found:?}");
}
