//! Targeted checks of a read-write mount that the differential tests
//! (`rw_diff.rs`) do not express as a comparison: inode numbers across
//! copy-up, locks, statfs, fallocate, unlinked open files, sockets, the
//! provenance xattr, names the layer format reserves, the guards on the
//! branch directory, and a rootless mount's recorded metadata.
//!
//! Long file: the writable store mount's cases share its mount set-up; and
//! each file of tests/ is a test binary of its own, so a split would be one
//! more binary to build and link in CI.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

struct Rw {
    store: TestStore,
    id: String,
    branch: tempfile::TempDir,
}

impl Rw {
    /// `None` when FUSE mounts cannot run here (see `fuse_store`).
    fn new() -> Option<Rw> {
        let (store, id) = fuse_store("multi.docker.tar")?;
        Some(Rw {
            store,
            id,
            branch: tempfile::tempdir().unwrap(),
        })
    }

    fn rw(&self) -> std::path::PathBuf {
        self.branch.path().join("rw")
    }

    fn mount(&self) -> Mount<'_> {
        Mount::rw(&self.store, &self.id, &self.rw())
    }
}

/// st_ino stays the same when a file is copied up, renamed, and its hard
/// link partner keeps sharing it (tar, rsync -H and find -samefile rely
/// on it).
#[test]
fn inode_numbers_survive_copy_up_and_rename() {
    let Some(t) = Rw::new() else {
        return;
    };
    let m = t.mount();
    let a = m.path("usr/share/doc/pkg/a");
    let link = m.path("usr/share/doc/pkg/a-link");
    let before = std::fs::metadata(&a).unwrap();
    assert_eq!(before.ino(), std::fs::metadata(&link).unwrap().ino());
    assert_eq!(before.nlink(), 2);
    OpenOptions::new()
        .append(true)
        .open(&a)
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    let after = std::fs::metadata(&a).unwrap();
    assert_eq!(after.ino(), before.ino(), "copy-up changed st_ino");
    // The other name is the same inode, with the new content.
    assert_eq!(std::fs::metadata(&link).unwrap().ino(), before.ino());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&link).unwrap());
    assert!(std::fs::read(&link).unwrap().ends_with(b"more\n"));
    // Both names are links of one file in the branch too.
    let up = t.rw().join("usr/share/doc/pkg");
    assert_eq!(
        std::fs::metadata(up.join("a")).unwrap().ino(),
        std::fs::metadata(up.join("a-link")).unwrap().ino()
    );
    std::fs::rename(&a, m.path("tmp/moved")).unwrap();
    assert_eq!(
        std::fs::metadata(m.path("tmp/moved")).unwrap().ino(),
        before.ino()
    );
    assert_eq!(std::fs::metadata(&link).unwrap().nlink(), 2);
    // A lower directory renamed keeps its number too.
    let d = std::fs::metadata(m.path("opt/data")).unwrap().ino();
    std::fs::rename(m.path("opt/data"), m.path("opt/data2")).unwrap();
    assert_eq!(std::fs::metadata(m.path("opt/data2")).unwrap().ino(), d);
}

/// O_TRUNC on a lower file copies no data; writes land only in the branch.
#[test]
fn open_with_o_trunc_and_lower_layers_untouched() {
    let Some(t) = Rw::new() else {
        return;
    };
    let before = t.store.fingerprint();
    {
        let m = t.mount();
        let p = m.path("bin/busybox");
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size > 1_000_000);
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        f.write_all(b"#!/bin/sh\n").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::read(t.rw().join("bin/busybox")).unwrap(),
            b"#!/bin/sh\n"
        );
    }
    // The store (layer tars and indexes) is byte for byte as it was.
    assert_eq!(t.store.fingerprint(), before);
}

/// flock and fcntl locks work between two open files on the mount.
#[test]
fn flock_and_fcntl_locks() {
    let Some(t) = Rw::new() else {
        return;
    };
    let m = t.mount();
    let p = m.path("etc/group");
    let a = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let b = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: flock on open descriptors.
    unsafe {
        assert_eq!(libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
        assert_eq!(
            libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
            -1
        );
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EWOULDBLOCK)
        );
        assert_eq!(libc::flock(a.as_raw_fd(), libc::LOCK_UN), 0);
        assert_eq!(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
    }
    // A POSIX record lock held by a child process blocks ours.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+'); \
             fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
            p.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 7];
    child.stdout.take().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"locked\n");
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fcntl with a valid flock struct.
    let r = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &fl) };
    let e = std::io::Error::last_os_error().raw_os_error();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(r, -1);
    assert!(
        matches!(e, Some(libc::EAGAIN) | Some(libc::EACCES)),
        "{e:?}"
    );
}

/// statfs reports the branch's filesystem; fallocate, fsync and an open
/// file whose name is gone work as on a local filesystem; a unix socket
/// can be bound on the mount.
#[test]
fn statfs_fallocate_unlinked_files_and_sockets() {
    let Some(t) = Rw::new() else {
        return;
    };
    let m = t.mount();
    let mine = nix_statvfs(&m.dir);
    let branch = nix_statvfs(&t.rw());
    assert_eq!(
        mine.f_blocks * mine.f_frsize,
        branch.f_blocks * branch.f_frsize
    );

    let p = m.path("tmp/alloc");
    let f = File::create(&p).unwrap();
    // SAFETY: fallocate on an open descriptor.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) }, 0);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
    f.sync_all().unwrap();

    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("tmp/scratch"))
        .unwrap();
    std::fs::remove_file(m.path("tmp/scratch")).unwrap();
    f.write_all(b"still here").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 10);
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    f.set_len(5).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 5);
    // fchmod, fchown, futimens of the nameless file.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o600);
    std::os::unix::fs::fchown(&f, Some(4321), Some(4322)).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!((md.uid(), md.gid()), (4321, 4322));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    f.set_times(std::fs::FileTimes::new().set_modified(t))
        .unwrap();
    assert_eq!(f.metadata().unwrap().mtime(), 1_000_000);
    assert_eq!(
        errno_of(std::fs::metadata(m.path("tmp/scratch"))),
        libc::ENOENT
    );

    let sock = m.path("tmp/sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
}

fn nix_statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string, zeroed struct.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st
    }
}

/// `user.layerfs.layer` names the layer an entry comes from (or `rw`), is
/// never listed and cannot be set.
#[test]
fn provenance_xattr() {
    let Some(t) = Rw::new() else {
        return;
    };
    let hist = t.store.ok(&["history", &t.id, "--json"]);
    let hist: serde_json::Value = serde_json::from_str(&hist).unwrap();
    let short = |i: u64| -> String {
        let l = hist
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["index"] == i)
            .unwrap();
        l["layer"].as_str().unwrap()[..12].to_string()
    };
    let m = t.mount();
    let prov = |rel: &str| {
        String::from_utf8(lgetxattr(&m.path(rel), "user.layerfs.layer").unwrap()).unwrap()
    };
    assert_eq!(prov("etc/os-release"), format!("0:{}", short(0)));
    assert_eq!(prov("opt/data/new"), format!("2:{}", short(2)));
    // opt/data was made opaque in layer 2: its metadata comes from there.
    assert_eq!(prov("opt/data"), format!("2:{}", short(2)));
    std::fs::write(m.path("etc/motd"), "hi\n").unwrap();
    assert_eq!(prov("etc/motd"), "rw");
    assert_eq!(prov("etc"), "rw", "etc was copied up for motd");
    let names = llistxattr(&m.path("etc/os-release")).unwrap();
    assert!(
        !names.windows(18).any(|w| w == b"user.layerfs.layer"),
        "listed: {:?}",
        String::from_utf8_lossy(&names)
    );
    assert_eq!(
        lsetxattr(&m.path("etc/motd"), "user.layerfs.layer", b"x"),
        Err(libc::EPERM)
    );
    // Not copied up into the branch either.
    assert_eq!(
        lgetxattr(&t.rw().join("etc/motd"), "user.layerfs.layer"),
        Err(libc::ENODATA)
    );
}

/// Names the layer format reserves cannot be made; the branch directory
/// is guarded against misuse.
#[test]
fn reserved_names_and_branch_guards() {
    let Some(t) = Rw::new() else {
        return;
    };
    {
        let m = t.mount();
        for name in [".wh.x", ".wh..wh..opq", ".wh..wh.layerfs"] {
            assert_eq!(
                errno_of(File::create(m.path(&format!("tmp/{name}")))),
                libc::EINVAL
            );
            assert_eq!(errno_of(std::fs::create_dir(m.path(name))), libc::EINVAL);
        }
        // The state directory never shows.
        assert_eq!(
            errno_of(std::fs::metadata(m.path(".wh..wh.layerfs"))),
            libc::ENOENT
        );
        let names: Vec<String> = std::fs::read_dir(&m.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".wh.")), "{names:?}");
        // A second mount of the same branch is refused while this one lives.
        let mp2 = tempfile::tempdir().unwrap();
        let err = t.store.fails(&[
            "mount",
            &t.id,
            mp2.path().to_str().unwrap(),
            "--rw",
            t.rw().to_str().unwrap(),
        ]);
        assert!(err.contains("in use by another mount"), "{err}");
        // A branch inside its own mountpoint is refused.
        let err = t.store.fails(&[
            "mount",
            &t.id,
            mp2.path().to_str().unwrap(),
            "--rw",
            mp2.path().join("rw").to_str().unwrap(),
        ]);
        assert!(err.contains("is inside the mountpoint"), "{err}");
        assert!(!daemon_mounted(mp2.path()));
    }
    // A branch belongs to its image: another image is refused.
    let other = t.store.import(&fixture("edge.docker.tar"), &[]);
    let mp = tempfile::tempdir().unwrap();
    let err = t.store.fails(&[
        "mount",
        &other,
        mp.path().to_str().unwrap(),
        "--rw",
        t.rw().to_str().unwrap(),
    ]);
    assert!(err.contains("holds changes to image"), "{err}");
    assert!(!daemon_mounted(mp.path()));
    // `diff` finds the image from the branch alone.
    let out = t.store.ok(&["diff", t.rw().to_str().unwrap()]);
    assert_eq!(out, "", "nothing was changed");
}

fn daemon_mounted(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts.contains(&format!(" {} ", p.display()))
}

/// A rootless daemon records the owners it cannot apply in
/// `user.containers.override_stat` and shows them; a remount shows the same.
#[test]
fn rootless_branch_records_owners_it_cannot_apply() {
    if !fuse_available() {
        return;
    }
    let Some(u) = UserDir::new() else {
        return;
    };
    let uid = u.uid;
    let fx = u.path("multi.docker.tar");
    std::fs::copy(fixture("multi.docker.tar"), &fx).unwrap();
    let root = u.path("store");
    let mnt = u.path("mnt");
    let rw = u.path("rw");
    let as_user = |args: &[&str]| u.ok(args);
    let lfs = |args: &[&str]| u.layerfs_ok(&root, args);
    let id = lfs(&["import", fx.to_str().unwrap()]).trim().to_string();
    as_user(&["mkdir", mnt.to_str().unwrap()]);
    let _guard = LazyUnmount(mnt.clone());
    let stat = |rel: &str| {
        as_user(&["stat", "-c", "%u:%g:%a", mnt.join(rel).to_str().unwrap()])
            .trim()
            .to_string()
    };
    lfs(&[
        "mount",
        &id,
        mnt.to_str().unwrap(),
        "--rw",
        rw.to_str().unwrap(),
    ]);
    // tmp is root-owned 1777 in the image: anyone may create there.
    as_user(&[
        "sh",
        "-c",
        &format!("echo hi > {}", mnt.join("tmp/mine").display()),
    ]);
    assert_eq!(stat("tmp"), "0:0:1777");
    assert_eq!(stat("tmp/mine"), format!("{uid}:{uid}:644"));
    assert_eq!(stat("."), "0:0:755");
    // On disk the daemon's own uid, and the truth in the xattr.
    let md = std::fs::metadata(rw.join("tmp")).unwrap();
    assert_eq!(md.uid(), uid);
    assert_eq!(
        lgetxattr(&rw.join("tmp"), "user.containers.override_stat").unwrap(),
        b"0:0:1777:dir"
    );
    // A file unlinked while open keeps taking fchmod and futimens through
    // its descriptor: the setuid bit the daemon may not set on disk is
    // recorded in the override xattr of the open file, and fstat shows it.
    let gone = mnt.join("tmp/gone");
    let script = format!(
        "import os\n\
         fd = os.open({gone:?}, os.O_CREAT | os.O_RDWR, 0o644)\n\
         os.unlink({gone:?})\n\
         os.fchmod(fd, 0o4750)\n\
         os.utime(fd, (5, 7))\n\
         st = os.fstat(fd)\n\
         print('%o %d %d' % (st.st_mode & 0o7777, st.st_mtime, st.st_uid))",
        gone = gone.to_str().unwrap()
    );
    assert_eq!(
        as_user(&["python3", "-c", &script]).trim(),
        format!("4750 7 {uid}")
    );
    // Never shown through the mount.
    let names = as_user(&[
        "getfattr",
        "-d",
        "-m",
        "-",
        mnt.join("tmp").to_str().unwrap(),
    ]);
    assert!(!names.contains("override_stat"), "{names}");
    lfs(&["umount", mnt.to_str().unwrap()]);
    lfs(&[
        "mount",
        &id,
        mnt.to_str().unwrap(),
        "--rw",
        rw.to_str().unwrap(),
    ]);
    assert_eq!(stat("tmp"), "0:0:1777");
    assert_eq!(
        as_user(&["cat", mnt.join("tmp/mine").to_str().unwrap()]),
        "hi\n"
    );
    lfs(&["umount", mnt.to_str().unwrap()]);
}

/// A file opened for reading while lower keeps reading the same file after
/// another writer copies it up and its name goes away (as on a local
/// filesystem: one inode).
#[test]
fn reader_opened_before_copy_up_survives_unlink() {
    let Some(t) = Rw::new() else {
        return;
    };
    let m = t.mount();
    let p = m.path("etc/passwd");
    let orig = std::fs::read(&p).unwrap();
    let mut r = File::open(&p).unwrap();
    OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"tail\n")
        .unwrap();
    std::fs::remove_file(&p).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    let mut want = orig.clone();
    want.extend_from_slice(b"tail\n");
    assert_eq!(got, want);
    assert_eq!(r.metadata().unwrap().len(), want.len() as u64);
}

/// A listing read in several chunks while names in it are removed or
/// replaced: what readdirplus hands the kernel must be the names' current
/// state, or the kernel would cache a removed lower file for the TTL.
#[test]
fn chunked_listing_does_not_revive_removed_names() {
    if !fuse_available() {
        return;
    }
    // A lower directory of 3000 files: several getdents64 chunks.
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("wide.tar");
    {
        let m = Meta {
            mtime: 1_700_000_000,
            ..M644
        };
        let mut t = Tar::create(&tar_path);
        t.dir_m("wide/", Meta { mode: 0o755, ..m });
        for i in 0..3000 {
            t.file_m(&format!("wide/f{i:04}"), b"x\n", m);
        }
        t.finish();
    }
    let store = TestStore::new();
    let id = store.import(&tar_path, &[]);
    let rw = work.path().join("rw");
    let m = Mount::rw(&store, &id, &rw);
    let dir = m.path("wide");
    // A lookup in the directory makes the kernel use readdirplus there.
    std::fs::metadata(dir.join("f0000")).unwrap();
    let mut it = std::fs::read_dir(&dir).unwrap();
    let first = it.next().unwrap().unwrap().file_name();
    assert!(first.to_string_lossy().starts_with('f'));
    // Names just past what the first getdents64 returned, so that the next
    // FUSE readdir (a readdirplus, after these lookups) carries them.
    for i in 1000..1600 {
        std::fs::remove_file(dir.join(format!("f{i:04}"))).unwrap();
    }
    std::fs::remove_file(dir.join("f2999")).unwrap();
    std::fs::rename(dir.join("f0001"), dir.join("f2998")).unwrap();
    let rest: Vec<String> = it
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(rest.len() > 1000, "{} entries", rest.len());
    for i in (1000..1600).chain([2999]) {
        assert_eq!(
            errno_of(std::fs::metadata(dir.join(format!("f{i:04}")))),
            libc::ENOENT,
            "f{i:04}: a removed lower file came back through the listing"
        );
    }
    assert_eq!(std::fs::read(dir.join("f2998")).unwrap(), b"x\n");
    assert_eq!(errno_of(std::fs::metadata(dir.join("f0001"))), libc::ENOENT);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2998 - 600);
}

/// Data requests (`read`/`write` debug lines of `layerfs::fuse`) the daemon
/// logged for inode `ino`.
fn data_requests(log: &str, ino: u64) -> (usize, usize) {
    let ino = format!(" ino={ino} ");
    let count = |what: &str| {
        log.lines()
            .filter(|l| l.contains("layerfs::fuse") && l.contains(what) && l.contains(&ino))
            .count()
    };
    (count(": read "), count(": write "))
}

/// The daemon's log of the one mount a store had.
fn daemon_log(store: &TestStore) -> String {
    let dir = store.root().join("mounts");
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "one daemon log in {}", dir.display());
    std::fs::read_to_string(&logs[0]).unwrap()
}

/// As root, files of the rw branch are opened with FUSE passthrough: 8 MiB
/// written through the mount, read back, and a file put in the branch
/// before mounting read through it, with no READ or WRITE request reaching
/// the daemon for them (a copied-up file too); with `-o passthrough=off`
/// the same goes through the daemon. Content is checked both ways.
#[test]
fn passthrough_keeps_file_data_out_of_the_daemon() {
    let pattern: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    for off in [false, true] {
        let Some(t) = Rw::new() else {
            return;
        };
        std::fs::create_dir_all(t.rw()).unwrap();
        let pre: Vec<u8> = pattern.iter().rev().copied().collect();
        std::fs::write(t.rw().join("pre"), &pre).unwrap();
        let rw = t.rw();
        let mut opts = vec!["--rw", rw.to_str().unwrap()];
        if off {
            opts.extend(["-o", "passthrough=off"]);
        }
        let env = [("RUST_LOG", "layerfs::fuse=debug")];
        let (big, pre_ino, copied) = {
            let m = Mount::with_env(&t.store, &t.id, &opts, &env);
            let p = m.path("big");
            let mut f = File::create(&p).unwrap();
            for chunk in pattern.chunks(1 << 20) {
                f.write_all(chunk).unwrap();
            }
            drop(f);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), pattern.len() as u64);
            assert!(std::fs::read(&p).unwrap() == pattern, "big reads back");
            assert!(std::fs::read(m.path("pre")).unwrap() == pre, "pre reads");
            // A lower file (never read while lower: that read would go
            // through the daemon), copied up by an append, then read whole.
            let os = m.path("etc/os-release");
            let len = std::fs::metadata(&os).unwrap().len();
            OpenOptions::new()
                .append(true)
                .open(&os)
                .unwrap()
                .write_all(&pattern[..1 << 20])
                .unwrap();
            let want = std::fs::read(rw.join("etc/os-release")).unwrap();
            assert_eq!(want.len() as u64, len + (1 << 20));
            assert!(want.ends_with(&pattern[..1 << 20]));
            assert_eq!(std::fs::metadata(&os).unwrap().len(), want.len() as u64);
            assert!(std::fs::read(&os).unwrap() == want, "copied-up file");
            let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
            (ino(&p), ino(&m.path("pre")), ino(&os))
        };
        assert_eq!(std::fs::read(t.rw().join("big")).unwrap(), pattern);
        let log = daemon_log(&t.store);
        let (r_big, w_big) = data_requests(&log, big);
        let (r_pre, _) = data_requests(&log, pre_ino);
        let (r_cp, w_cp) = data_requests(&log, copied);
        let seen = format!(
            "big: {r_big} reads {w_big} writes; pre: {r_pre} reads; \
             copied-up: {r_cp} reads {w_cp} writes"
        );
        if off || !is_root() {
            assert!(
                w_big > 0 && r_pre > 0 && w_cp > 0,
                "through the daemon: {seen}"
            );
        } else {
            assert!(
                log.contains("passthrough=true"),
                "no passthrough open as root:\n{log}"
            );
            assert_eq!(
                (r_big, w_big, r_pre, r_cp, w_cp),
                (0, 0, 0, 0, 0),
                "passthrough: {seen}"
            );
        }
    }
}

/// The LOOKUP requests for `name` in the daemon logs of `store`.
fn lookups_logged(store: &TestStore, name: &str) -> usize {
    let needle = format!("LOOKUP name {name:?}");
    let mut n = 0;
    for e in std::fs::read_dir(store.root().join("mounts")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let log = std::fs::read_to_string(&p).unwrap();
            n += log.lines().filter(|l| l.contains(&needle)).count();
        }
    }
    n
}

/// A name that does not exist is answered with a negative entry the
/// kernel keeps (one LOOKUP however often it is asked for), and a cached
/// negative entry never hides what is made through the mount afterwards:
/// files, directories, symlinks, hard links, rename targets, and names
/// removed and made again.
#[test]
fn missing_names_are_cached_and_what_is_made_shows() {
    let Some(r) = Rw::new().filter(|_| is_root()) else {
        return;
    };
    let rw = r.rw();
    let m = Mount::with_env(
        &r.store,
        &r.id,
        &["--rw", rw.to_str().unwrap()],
        &[("RUST_LOG", "fuser=debug")],
    );
    for _ in 0..5 {
        assert_eq!(errno_of(std::fs::metadata(m.path("absent"))), libc::ENOENT);
        assert_eq!(
            errno_of(std::fs::metadata(m.path("tmp/nofile"))),
            libc::ENOENT
        );
    }
    assert_eq!(lookups_logged(&r.store, "absent"), 1);
    assert_eq!(lookups_logged(&r.store, "nofile"), 1);
    let names = ["f", "d", "s", "h", "r"];
    for n in names {
        assert_eq!(errno_of(std::fs::metadata(m.path(n))), libc::ENOENT);
    }
    std::fs::write(m.path("f"), b"new\n").unwrap();
    std::fs::create_dir(m.path("d")).unwrap();
    std::os::unix::fs::symlink("f", m.path("s")).unwrap();
    std::fs::hard_link(m.path("f"), m.path("h")).unwrap();
    std::fs::write(m.path("tmp/src"), b"moved\n").unwrap();
    std::fs::rename(m.path("tmp/src"), m.path("r")).unwrap();
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"new\n");
    assert!(std::fs::metadata(m.path("d")).unwrap().is_dir());
    assert_eq!(std::fs::read_link(m.path("s")).unwrap(), Path::new("f"));
    assert_eq!(
        std::fs::metadata(m.path("h")).unwrap().ino(),
        std::fs::metadata(m.path("f")).unwrap().ino()
    );
    assert_eq!(std::fs::read(m.path("r")).unwrap(), b"moved\n");
    assert_eq!(errno_of(std::fs::metadata(m.path("tmp/src"))), libc::ENOENT);
    // Removed (a lower file too), asked for again, made again.
    std::fs::remove_file(m.path("f")).unwrap();
    std::fs::remove_file(m.path("bin/busybox")).unwrap();
    for _ in 0..3 {
        assert_eq!(errno_of(std::fs::metadata(m.path("f"))), libc::ENOENT);
        assert_eq!(
            errno_of(std::fs::metadata(m.path("bin/busybox"))),
            libc::ENOENT
        );
    }
    std::fs::write(m.path("f"), b"again\n").unwrap();
    std::fs::write(m.path("bin/busybox"), b"replaced\n").unwrap();
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"again\n");
    assert_eq!(std::fs::read(m.path("bin/busybox")).unwrap(), b"replaced\n");
    let listed: Vec<String> = std::fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for n in names {
        assert!(listed.iter().any(|l| l == n), "{n} not listed: {listed:?}");
    }
    assert!(
        !rw.join("bin/.wh.busybox").exists(),
        "whiteout left under a new file"
    );
}

/// Copy-ups copy their data outside the namespace lock, so several can
/// race for one lower file: threads released together each open the same
/// lower files for appending (or chmod / setxattr / link them). Every
/// append must land exactly once on one copy, the other operations must
/// all apply, and no staged copy may be left in the work directory.
#[test]
fn racing_copy_ups_of_one_file_keep_every_change() {
    use std::os::unix::fs::PermissionsExt;
    let Some(t) = Rw::new() else {
        return;
    };
    let m = t.mount();
    let files = ["bin/busybox", "etc/passwd", "etc/os-release"];
    let orig: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(m.path(f)).unwrap())
        .collect();
    let n = 8;
    let barrier = std::sync::Barrier::new(n + 3);
    std::thread::scope(|s| {
        for i in 0..n {
            let (m, barrier) = (&m, &barrier);
            s.spawn(move || {
                barrier.wait();
                for f in files {
                    let mut w = OpenOptions::new().append(true).open(m.path(f)).unwrap();
                    w.write_all(format!("writer {i}\n").as_bytes()).unwrap();
                }
            });
        }
        let (m, barrier) = (&m, &barrier);
        s.spawn(move || {
            barrier.wait();
            for f in files {
                std::fs::set_permissions(m.path(f), std::fs::Permissions::from_mode(0o640))
                    .unwrap();
            }
        });
        s.spawn(move || {
            barrier.wait();
            for f in files {
                assert_eq!(lsetxattr(&m.path(f), "user.raced", b"yes"), Ok(()), "{f}");
            }
        });
        s.spawn(move || {
            barrier.wait();
            for (k, f) in files.iter().enumerate() {
                std::fs::hard_link(m.path(f), m.path(&format!("etc/link{k}"))).unwrap();
            }
        });
    });
    for (k, f) in files.iter().enumerate() {
        let got = std::fs::read(m.path(f)).unwrap();
        assert_eq!(
            &got[..orig[k].len()],
            &orig[k][..],
            "{f}: original data kept"
        );
        let mut tail: Vec<&str> = std::str::from_utf8(&got[orig[k].len()..])
            .unwrap()
            .lines()
            .collect();
        tail.sort();
        let want: Vec<String> = (0..n).map(|i| format!("writer {i}")).collect();
        assert_eq!(tail, want, "{f}: every append exactly once");
        let md = std::fs::metadata(m.path(f)).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640, "{f}: chmod applied");
        assert_eq!(lgetxattr(&m.path(f), "user.raced").unwrap(), b"yes", "{f}");
        let link = std::fs::metadata(m.path(&format!("etc/link{k}"))).unwrap();
        assert_eq!((link.ino(), link.nlink()), (md.ino(), 2), "{f}: one inode");
        assert_eq!(
            std::fs::read(t.rw().join(f)).unwrap(),
            got,
            "{f}: in the branch"
        );
    }
    let work = t.rw().join(".wh..wh.layerfs/work");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(
        left.is_empty(),
        "staged copies left in {}: {left:?}",
        work.display()
    );
}

/// A copy-up's data is synced before the rename that shows it (as
/// overlayfs does), and fsync of a directory syncs its directory in the
/// branch; `-o fsync=0` (fuse-overlayfs's spelling, which podman passes)
/// and `-o volatile` (overlayfs's) skip both. Seen in the daemon's debug
/// log, which names each sync; the data is checked either way.
#[test]
fn copy_ups_are_synced_unless_volatile() {
    for opt in [None, Some("fsync=0"), Some("volatile")] {
        let Some(t) = Rw::new() else {
            return;
        };
        let rw = t.rw();
        let mut opts = vec!["--rw", rw.to_str().unwrap()];
        if let Some(o) = opt {
            opts.extend(["-o", o]);
        }
        let env = [("RUST_LOG", "layerfs::fs=debug")];
        let want = {
            let m = Mount::with_env(&t.store, &t.id, &opts, &env);
            let p = m.path("bin/busybox");
            let mut want = std::fs::read(&p).unwrap();
            OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(b"tail")
                .unwrap();
            want.extend_from_slice(b"tail");
            std::fs::write(m.path("etc/new"), b"new").unwrap();
            let d = File::open(m.path("etc")).unwrap();
            d.sync_all().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), want);
            want
        };
        assert_eq!(std::fs::read(rw.join("bin/busybox")).unwrap(), want);
        let log = daemon_log(&t.store);
        let synced = log.matches("copy-up data synced").count();
        let dirs = log.matches("fsyncdir synced").count();
        match opt {
            None => assert_eq!((synced, dirs), (1, 1), "{log}"),
            Some(o) => assert_eq!((synced, dirs), (0, 0), "-o {o}: {log}"),
        }
    }
}

/// setuid/setgid bits after writes, truncations, O_TRUNC opens and chowns,
/// the kernel's own rules on a plain directory as the oracle: an
/// unprivileged writer clears setuid, and setgid where group-execute is
/// set; root (CAP_FSETID) keeps them; chown clears them for anyone, even
/// chown(f, -1, -1) (which random_operation_sequences_agree found). With
/// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves this to the daemon.
#[test]
fn setuid_bits_cleared_as_the_kernel_does() {
    use std::os::unix::fs::PermissionsExt;
    let Some(t) = Rw::new() else {
        return;
    };
    let Some((user, uid)) = unprivileged_user() else {
        return;
    };
    let rw = t.rw();
    let m = Mount::new(
        &t.store,
        &t.id,
        &["--rw", rw.to_str().unwrap(), "-o", "allow_other"],
    );
    let plain = tempfile::tempdir().unwrap();
    std::fs::set_permissions(plain.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dirs = [plain.path().to_path_buf(), m.path("tmp")];
    let modes = [0o4777, 0o6777, 0o2767, 0o777];
    let ops = [
        "write",
        "truncate",
        "otrunc",
        "chown",
        "chown-none",
        "root-write",
    ];
    let name = |op: &str, mode: u32| format!("{op}-{mode:o}");
    // chown(f, -1, -1) by a user who neither owns nor may write the file:
    // Linux refuses it (EPERM); the mount must not clear anything either.
    let others = ["other-chown-none-4755", "other-chown-none-6755"];
    for d in &dirs {
        for op in ops {
            for mode in modes {
                let p = d.join(name(op, mode));
                std::fs::write(&p, b"data").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        for (f, mode) in others.iter().zip([0o4755, 0o6755]) {
            std::fs::write(d.join(f), b"data").unwrap();
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let script = "import os, sys\n\
        for d in sys.argv[1:]:\n\
        \x20   for f in sorted(os.listdir(d)):\n\
        \x20       p = os.path.join(d, f)\n\
        \x20       if f.startswith('write-'):\n\
        \x20           fd = os.open(p, os.O_WRONLY | os.O_APPEND); os.write(fd, b'x'); os.close(fd)\n\
        \x20       elif f.startswith('truncate-'):\n\
        \x20           os.truncate(p, 1)\n\
        \x20       elif f.startswith('otrunc-'):\n\
        \x20           os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))\n\
        \x20       elif f.startswith('other-chown-none-'):\n\
        \x20           try:\n\
        \x20               os.chown(p, -1, -1)\n\
        \x20           except PermissionError:\n\
        \x20               pass\n";
    let mut argv = vec!["python3", "-c", script];
    argv.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    ok_as(user, &[], &argv);
    for d in &dirs {
        for mode in modes {
            std::os::unix::fs::chown(d.join(name("chown", mode)), Some(uid), None).unwrap();
            // chown(f, -1, -1): no owner change, the bits go all the same.
            std::os::unix::fs::chown(d.join(name("chown-none", mode)), None, None).unwrap();
            let p = d.join(name("root-write", mode));
            OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(b"x")
                .unwrap();
        }
    }
    let mode_of = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().mode() & 0o7777;
    let mut cleared = 0;
    for op in ops {
        for mode in modes {
            let want = mode_of(dirs[0].join(name(op, mode)));
            let got = mode_of(dirs[1].join(name(op, mode)));
            assert_eq!(
                got,
                want,
                "{}: {got:o} on the mount, {want:o} on a plain dir",
                name(op, mode)
            );
            cleared += usize::from(want != mode);
        }
    }
    for (f, mode) in others.iter().zip([0o4755, 0o6755]) {
        let got = mode_of(dirs[1].join(f));
        assert_eq!(got, mode_of(dirs[0].join(f)), "{f}");
        assert_eq!(got, mode, "{f}: kept");
    }
    // The oracle did clear bits: the 3 setid modes x the 3 unprivileged
    // ops (2767 too: the user is not in the file's group), and both
    // chowns by root of 4777 and 6777 (root keeps setgid without
    // group-execute).
    assert_eq!(cleared, 13, "cases where the kernel cleared a bit");
}

/// With killpriv the kernel asks for security.capability once per inode,
/// not before every write(2): 100 writes to a new file cost at most one
/// GETXATTR (they cost 100 before).
#[test]
fn writes_do_not_ask_for_capabilities_each_time() {
    let Some(t) = Rw::new() else {
        return;
    };
    let rw = t.rw();
    let env = [("RUST_LOG", "fuser=debug")];
    {
        let m = Mount::with_env(&t.store, &t.id, &["--rw", rw.to_str().unwrap()], &env);
        let mut f = File::create(m.path("etc/many-writes")).unwrap();
        for _ in 0..100 {
            f.write_all(&[7u8; 4096]).unwrap();
        }
        drop(f);
        assert_eq!(
            std::fs::read(m.path("etc/many-writes")).unwrap(),
            vec![7u8; 409600]
        );
    }
    let log = daemon_log(&t.store);
    let asked = log.lines().filter(|l| l.contains("GETXATTR")).count();
    assert!(asked <= 1, "{asked} GETXATTR requests for 100 writes");
}

/// A writable mount (mount-branches with an upperdir, over a lower
/// directory of 1000 files): a walk of the directory gets every entry's
/// attributes from READDIRPLUS, all chunks of it (no LOOKUP per name, as
/// with READDIRPLUS_AUTO after the first chunk), and a second `ls -l` asks
/// for no ACL (the kernel caches them: FUSE_POSIX_ACL on writable mounts).
/// What the walk and `ls -l` print equals the same on the lower directory.
#[test]
fn walks_need_no_lookups_and_acls_are_asked_once() {
    if !is_root() {
        eprintln!("SKIP: an overlay-format upperdir needs root");
        return;
    }
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let base = tempfile::tempdir().unwrap();
    let (l, u, w) = (
        base.path().join("l"),
        base.path().join("u"),
        base.path().join("w"),
    );
    for d in [&l, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::create_dir(l.join("big")).unwrap();
    for i in 0..1000 {
        std::fs::write(l.join(format!("big/file-with-a-longish-name-{i:04}")), b"x").unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let env = [("RUST_LOG", "fuser=debug")];
    let listing = |dir: &Path| {
        let find = run_ok(
            Command::new("find")
                .args(["big", "-type", "f", "-printf", "%s %m %U %G %p\n"])
                .current_dir(dir),
        );
        let mut lines: Vec<&str> = find.lines().collect();
        lines.sort();
        lines.join("\n")
    };
    let want = listing(&l);
    let (walk, ls1, ls2);
    {
        let m = Mount::branches_with_env(&store, &opts, &env);
        walk = listing(&m.dir);
        ls1 = run_ok(
            Command::new("ls")
                .args(["-ln", "--time-style=+"])
                .arg(m.path("big")),
        );
        ls2 = run_ok(
            Command::new("ls")
                .args(["-ln", "--time-style=+"])
                .arg(m.path("big")),
        );
    }
    assert_eq!(walk, want, "the walk shows the lower directory");
    let lower_ls = run_ok(
        Command::new("ls")
            .args(["-ln", "--time-style=+"])
            .arg(l.join("big")),
    );
    assert_eq!(ls1, lower_ls);
    assert_eq!(ls2, lower_ls);
    let log = daemon_log(&store);
    let lookups = log.lines().filter(|l| l.contains(" LOOKUP ")).count();
    assert!(
        lookups < 10,
        "{lookups} LOOKUP requests for a walk of 1000 names"
    );
    let acl = log
        .lines()
        .filter(|l| l.contains("GETXATTR") && l.contains("posix_acl_access"))
        .count();
    // Once per inode (1000 files, big/, the root); uncached, it would be
    // once per file and `ls -l`: 2000 and more.
    assert!(
        (1000..1010).contains(&acl),
        "{acl} ACL GETXATTRs for two ls -l of 1000 files"
    );
}

/// GETXATTR requests of `name` in the daemon logs of `store`'s mounts.
fn getxattrs_logged(store: &TestStore, name: &str) -> usize {
    let needle = format!("GETXATTR name {name:?}");
    let mut n = 0;
    for e in std::fs::read_dir(store.root().join("mounts")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let log = std::fs::read_to_string(&p).unwrap();
            n += log.lines().filter(|l| l.contains(&needle)).count();
        }
    }
    n
}

/// `ls -l` asks every file for security.selinux. On a host without SELinux
/// a missing label answers EOPNOTSUPP, so `ls` stops asking for the rest
/// of the mount: one GETXATTR of it per `ls -l` of a whole directory, not
/// one per file, also on writable mounts, which cannot answer ENOSYS for
/// every xattr as read-only mounts of xattr-free images do. A label that
/// is set is stored and reads back, and other missing names still answer
/// ENODATA. (Where SELinux is active its LSM answers the label and no such
/// request reaches the daemon at all.)
#[test]
fn ls_l_asks_a_writable_mount_for_selinux_labels_once() {
    let Some(r) = Rw::new().filter(|_| is_root()) else {
        return;
    };
    let selinux = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .lines()
        .any(|l| l.ends_with("selinuxfs"));
    let rw = r.rw();
    let m = Mount::with_env(
        &r.store,
        &r.id,
        &["--rw", rw.to_str().unwrap()],
        &[("RUST_LOG", "fuser=debug")],
    );
    let dir = m.path("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..200 {
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    let lower = m.path("etc/os-release");
    if !selinux {
        assert_eq!(lgetxattr(&lower, "security.selinux"), Err(libc::EOPNOTSUPP));
        assert_eq!(
            lgetxattr(&dir.join("f0"), "security.selinux"),
            Err(libc::EOPNOTSUPP)
        );
    }
    assert_eq!(lgetxattr(&lower, "user.nosuch"), Err(libc::ENODATA));
    let before = getxattrs_logged(&r.store, "security.selinux");
    for _ in 0..3 {
        let out = run_ok(Command::new("ls").arg("-l").arg(&dir));
        assert_eq!(
            out.lines().filter(|l| l.starts_with('-')).count(),
            200,
            "{out}"
        );
    }
    let asked = getxattrs_logged(&r.store, "security.selinux") - before;
    assert!(
        asked <= 3,
        "{asked} GETXATTR of security.selinux for 3 ls -l of 200 files"
    );
    if !selinux {
        let f = dir.join("f1");
        lsetxattr(&f, "security.selinux", b"system_u:object_r:etc_t:s0\0").unwrap();
        assert_eq!(
            lgetxattr(&f, "security.selinux"),
            Ok(b"system_u:object_r:etc_t:s0\0".to_vec())
        );
        assert_eq!(
            lgetxattr(&rw.join("many/f1"), "security.selinux"),
            Ok(b"system_u:object_r:etc_t:s0\0".to_vec()),
            "stored in the branch"
        );
    }
}
