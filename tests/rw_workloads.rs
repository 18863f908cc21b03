//! Read-write mounts (`layerfs mount IMAGE MNT --rw DIR`) under real
//! workloads: GNU tar, `cp -a`, `rm -rf` across layers, git, `mv` of a lower
//! directory; the upper DIR taken as an image layer and imported again;
//! kill -9 of the daemon during a copy-up; concurrent readers and writers;
//! a second mount of one DIR.
//!
//! Every workload also runs on a plain directory holding the image's merged
//! tree, made by `tools/apply_layers.py` (Python's tarfile applying Docker's
//! layer rules; no layerfs code), and the two trees are compared with the
//! oracle's comparator. The `harness_*` tests run the workloads on plain
//! directories (and kernel overlayfs) only: they keep the workloads and
//! their checks honest without layerfs.
//!
//! Long file: the workloads and their harness checks belong together; and
//! each file of tests/ is a test binary of its own, so a split would be one
//! more binary to build and link in CI.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Helpers

fn sha256_file(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

/// A new directory, mode 0755 whatever the umask.
fn new_dir(p: &Path) -> PathBuf {
    std::fs::create_dir(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_path_buf()
}

/// `--ignore` arguments that skip the mtime of each glob (`""`: the root).
fn mtime_ignores(globs: &[&str]) -> Vec<String> {
    globs
        .iter()
        .flat_map(|g| [format!("mtime@{g}"), format!("mtime_nsec@{g}")])
        .collect()
}

fn same_tree(what: &str, expected: &str, actual: &str, ignore: &[String]) {
    let ignore: Vec<&str> = ignore.iter().map(String::as_str).collect();
    assert_same_tree(what, expected, actual, &ignore);
}

/// No name in the tree is a whiteout or the private working directory.
fn assert_no_whiteout_names(root: &Path) {
    for p in walk(root) {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with(".wh."),
            "{} shows an AUFS name in the mount",
            p.display()
        );
    }
}

/// The merged tree of `image` in a plain directory (created), checked
/// against the oracle's JSON merge of the same image.
fn plain_image_tree(image: &Path, dest: &Path) {
    run_ok(tool("apply_layers.py").arg("--image").arg(image).arg(dest));
    let expected = oracle(&["--image", image.to_str().unwrap()]);
    assert_same_tree("apply_layers.py vs oracle", &expected, &snapshot(dest), &[]);
}

fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == p))
}

/// The daemon pid of the mount at `mp`, from the store's mount record; also
/// checks that the record names the read-write directory.
fn daemon_pid(store: &TestStore, mp: &Path, rw: Option<&Path>) -> u32 {
    let mp = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    for e in std::fs::read_dir(store.root().join("mounts")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["mountpoint"].as_str().map(Path::new) != Some(&mp) {
            continue;
        }
        if let Some(rw) = rw {
            let want = rw.canonicalize().unwrap();
            assert_eq!(
                v["rw"]
                    .as_str()
                    .map(|s| Path::new(s).canonicalize().unwrap()),
                Some(want),
                "mount record {}: rw",
                p.display()
            );
        }
        return v["pid"].as_u64().expect("pid in the mount record") as u32;
    }
    panic!("no mount record for {}", mp.display());
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only probes.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Waits until `pid` is gone (reaped: a zombie still answers kill(pid, 0),
/// and init in some containers reaps only now and then).
fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "{what}: pid {pid} still exists 20 s after SIGKILL (unreaped zombie?)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------
// The workload (tar -x, cp -a, rm -rf, git, mv of a lower directory) on the
// multi image (fixtures/README.md lists its tree).

const TREE_MTIME: u64 = 1_690_000_000;

/// A GNU tar of a generated tree, to extract at the image root: a new
/// `srv/tree/` (nested dirs, a 1.5 MB file, an empty file, a 0700 dir owned
/// by 1000, symlinks, a hard link), `etc/motd` (new in a lower directory),
/// `etc/group` (replaces a lower file) and the `etc/` entry itself (new
/// metadata for a lower directory). Every mtime is TREE_MTIME.
fn make_tree_tar(work: &Path) -> PathBuf {
    use std::os::unix::fs::{chown, symlink};
    let src = work.join("tree-src");
    let t = src.join("srv/tree");
    for d in ["src/nested/deeper", "data", "bin", "private"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(t.join("README"), "layerfs rw workload\n").unwrap();
    for i in 0..24 {
        let body = format!("pub fn f{i}() -> u32 {{ {i} }}\n").repeat(i + 1);
        std::fs::write(t.join(format!("src/file{i:02}.rs")), body).unwrap();
    }
    std::fs::write(t.join("src/nested/deeper/leaf.txt"), "leaf\n").unwrap();
    std::fs::write(t.join("data/blob.bin"), pseudo_random(1_500_000, 7)).unwrap();
    std::fs::write(t.join("data/empty"), "").unwrap();
    std::fs::hard_link(t.join("data/blob.bin"), t.join("data/blob-link")).unwrap();
    std::fs::write(t.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(t.join("bin/tool"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(t.join("private/key"), "secret key\n").unwrap();
    std::fs::set_permissions(t.join("private/key"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(t.join("private"), PermissionsExt::from_mode(0o700)).unwrap();
    if is_root() {
        chown(t.join("private/key"), Some(1000), Some(1000)).unwrap();
        chown(t.join("private"), Some(1000), Some(1000)).unwrap();
    }
    symlink("README", t.join("link-to-readme")).unwrap();
    symlink("no/such/target", t.join("dangling")).unwrap();
    std::fs::write(src.join("etc/motd"), "welcome\n").unwrap();
    std::fs::write(src.join("etc/group"), "root:x:0:\nwheel:x:10:\n").unwrap();
    let tar = work.join("tree.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-c", "--format=gnu", "--sort=name", "--numeric-owner"])
            .arg(format!("--mtime=@{TREE_MTIME}"))
            .arg("-f")
            .arg(&tar)
            .args(["etc", "srv"]),
    );
    tar
}

fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=layerfs test",
                "-c",
                "user.email=test@layerfs.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "safe.directory=*",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE"),
    )
}

/// Paths whose mtime the workload sets to the current time; everything else
/// (owners, modes, sizes, contents, links, other mtimes) is compared.
const WORKLOAD_TOUCHED: &[&str] = &[
    "",
    "srv",
    "srv/tree",
    "srv/tree/.git",
    "srv/tree/.git/*",
    "srv/tree/README",
    "srv/readme-link",
    "usr/share",
    "etc",
    "etc/*",
    "etc2",
    "etc2/passwd",
    "etc2/os-release",
    "etc2/new-file",
    "etc2/sub",
    "etc2/sub/*",
];

/// Fields that differ between two runs of the workload whatever the
/// filesystem: the mtimes above and git's index, which records the
/// files' ctime, inode and device numbers.
fn workload_ignores() -> Vec<String> {
    let mut v = mtime_ignores(WORKLOAD_TOUCHED);
    v.push("sha256@srv/tree/.git/index".into());
    v
}

/// The workload, on the merged tree of multi.docker.tar at `root`.
/// `home` is a private directory for git's $HOME.
fn workload(root: &Path, tree_tar: &Path, home: &Path) {
    use std::os::unix::fs::{chown, symlink};
    let p = |rel: &str| root.join(rel);
    // 1. GNU tar extracts a tree (as root: owners and modes kept).
    run_ok(
        Command::new("tar")
            .args(["-x", "--numeric-owner"])
            .arg("-C")
            .arg(root)
            .arg("-f")
            .arg(tree_tar),
    );
    // 2. cp -a of lower directories (a hard-link pair, a 0750 dir of uid
    // 1000) to new places.
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(p("usr/share"))
            .arg(p("srv/share-copy")),
    );
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(p("home/user"))
            .arg(p("srv/user-copy")),
    );
    // 3. rm -rf of directories that span layers (doc: layers 0 and 1;
    // opt: layer 0 and layer 2's opaque opt/data).
    run_ok(
        Command::new("rm")
            .arg("-rf")
            .arg(p("usr/share/doc"))
            .arg(p("opt")),
    );
    // 4. git init/add/commit, twice, in the extracted tree.
    let repo = p("srv/tree");
    git(&repo, home, &["init", "-q"]);
    git(&repo, home, &["add", "-A"]);
    git(&repo, home, &["commit", "-q", "-m", "first"]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(repo.join("README"))
        .unwrap()
        .write_all(b"second line\n")
        .unwrap();
    git(&repo, home, &["commit", "-q", "-a", "-m", "second"]);
    assert_eq!(git(&repo, home, &["log", "--format=%s"]), "second\nfirst\n");
    assert_eq!(git(&repo, home, &["status", "--porcelain"]), "");
    git(&repo, home, &["fsck", "--no-progress"]);
    std::fs::hard_link(repo.join("README"), p("srv/readme-link")).unwrap();
    // 5. mv of a lower directory, then writes inside it, then a new
    // directory under the old name.
    run_ok(Command::new("mv").arg(p("etc")).arg(p("etc2")));
    std::fs::OpenOptions::new()
        .append(true)
        .open(p("etc2/passwd"))
        .unwrap()
        .write_all(b"added:x:1234:1234::/:/bin/sh\n")
        .unwrap();
    std::fs::write(p("etc2/new-file"), "new in the renamed dir\n").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(p("etc2/os-release"))
        .unwrap()
        .set_len(3)
        .unwrap();
    chown(p("etc2/group"), Some(1001), Some(1001)).unwrap();
    std::fs::create_dir(p("etc2/sub")).unwrap();
    symlink("../passwd", p("etc2/sub/pw")).unwrap();
    std::fs::create_dir(p("etc")).unwrap();
    std::fs::write(p("etc/only-new"), "only\n").unwrap();
    // 6. Metadata-only changes of lower files.
    std::fs::set_permissions(p("home/user/secret"), PermissionsExt::from_mode(0o600)).unwrap();
    run_ok(
        Command::new("touch")
            .args(["-h", "-d", "@1700000100"])
            .arg(p("bin/busybox")),
    );

    // What any filesystem must show now.
    assert!(!p("usr/share/doc").exists() && !p("opt").exists());
    let names: Vec<String> = std::fs::read_dir(p("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["only-new"], "the new etc hides the old one");
    let passwd = std::fs::read_to_string(p("etc2/passwd")).unwrap();
    assert!(passwd.starts_with("root:") && passwd.ends_with("added:x:1234:1234::/:/bin/sh\n"));
    assert_eq!(std::fs::read(p("etc2/motd")).unwrap(), b"welcome\n");
    assert_eq!(std::fs::read(p("etc2/os-release")).unwrap().len(), 3);
    let a = std::fs::metadata(p("srv/share-copy/doc/pkg/a")).unwrap();
    let b = std::fs::metadata(p("srv/share-copy/doc/pkg/a-link")).unwrap();
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "cp -a keeps the hard link"
    );
    let r = std::fs::metadata(repo.join("README")).unwrap();
    assert_eq!(r.nlink(), 2);
    assert_eq!(
        std::fs::read(repo.join("data/blob.bin")).unwrap(),
        pseudo_random(1_500_000, 7)
    );
}

/// Runs the workload on a fresh read-write mount of `id` over `upper`;
/// returns the snapshot of the live mount (taken before unmounting).
fn workload_on_rw_mount(
    store: &TestStore,
    id: &str,
    upper: &Path,
    tar: &Path,
    home: &Path,
) -> String {
    let m = Mount::new(store, id, &["--rw", upper.to_str().unwrap()]);
    daemon_pid(store, &m.dir, Some(upper));
    workload(&m.dir, tar, home);
    assert_no_whiteout_names(&m.dir);
    snapshot(&m.dir)
}

/// The expected tree: the workload on a plain directory.
fn workload_on_plain_dir(work: &Path, tar: &Path) -> String {
    let plain = work.join("plain");
    plain_image_tree(&fixture("multi.docker.tar"), &plain);
    workload(&plain, tar, work);
    snapshot(&plain)
}

#[test]
fn workloads_on_rw_mount_match_a_plain_dir_and_survive_remount() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tar = make_tree_tar(work.path());
    let expected = workload_on_plain_dir(work.path(), &tar);
    let upper = new_dir(&work.path().join("upper"));
    let live = workload_on_rw_mount(&store, &id, &upper, &tar, work.path());
    same_tree(
        "rw mount vs plain directory",
        &expected,
        &live,
        &workload_ignores(),
    );
    // The same DIR mounted again shows exactly the same tree.
    let m = Mount::new(&store, &id, &["--rw", upper.to_str().unwrap()]);
    assert_same_tree("live tree vs after remount", &live, &snapshot(&m.dir), &[]);
    assert_no_whiteout_names(&m.dir);
    let repo = m.path("srv/tree");
    assert_eq!(git(&repo, work.path(), &["status", "--porcelain"]), "");
    git(&repo, work.path(), &["fsck", "--no-progress"]);
}

/// The upper DIR is an AUFS layer diff: tarred, stacked on the image's
/// layers by tools/stack_layer.py and imported, it mounts (read-only) as
/// the same tree the live read-write mount showed. The oracle's merge of
/// the stacked archive must agree too (no layerfs code involved).
#[test]
fn rw_dir_tarred_is_a_layer_that_reproduces_the_tree() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tar = make_tree_tar(w);
    let fx = fixture("multi.docker.tar");
    let upper = new_dir(&w.join("upper"));
    let live = workload_on_rw_mount(&store, &id, &upper, &tar, w);

    let layer = w.join("diff.tar");
    gnu_tar_of_branch(&upper, &layer, true);
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&layer));
    assert!(
        !listing.contains(".wh..wh.layerfs"),
        "the working directory leaked into the diff:\n{listing}"
    );
    let stacked = w.join("stacked.docker.tar");
    let new_id = run_ok(
        tool("stack_layer.py")
            .arg(&fx)
            .arg(&layer)
            .arg(&stacked)
            .args(["--tag", "roundtrip:latest"]),
    );
    let by_oracle = oracle(&["--image", stacked.to_str().unwrap()]);
    assert_same_tree(
        "oracle merge of the stacked image vs live rw mount",
        &by_oracle,
        &live,
        &[],
    );
    let id2 = store.import(&stacked, &[]);
    assert_eq!(id2, new_id.trim());
    let history = store.ok(&["history", "roundtrip:latest", "--json"]);
    let h: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h.as_array().unwrap().len(), 4, "{history}");
    let m = Mount::new(&store, &id2, &[]);
    assert_same_tree(
        "stacked image, read-only vs live rw mount",
        &live,
        &snapshot(&m.dir),
        &[],
    );
}

// ---------------------------------------------------------------------------
// kill -9 during a copy-up

/// A mount at a fixed mountpoint whose daemon may be killed; unmounted
/// (lazily if the daemon is dead) on drop.
struct KillableMount<'a> {
    store: &'a TestStore,
    mp: PathBuf,
}

impl<'a> KillableMount<'a> {
    fn new(store: &'a TestStore, id: &str, mp: &Path, upper: &Path) -> KillableMount<'a> {
        store.ok(&[
            "mount",
            id,
            mp.to_str().unwrap(),
            "--rw",
            upper.to_str().unwrap(),
        ]);
        KillableMount {
            store,
            mp: mp.to_path_buf(),
        }
    }
}

impl Drop for KillableMount<'_> {
    fn drop(&mut self) {
        if !is_mounted(&self.mp) {
            return;
        }
        let out = self.store.run(&["umount", self.mp.to_str().unwrap()]);
        if !out.status.success() {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mp)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Detaches the mount of a dead daemon.
fn clean_dead_mount(mp: &Path) {
    let ok = if is_root() {
        Command::new("umount").arg("-l").arg(mp).status()
    } else {
        Command::new("fusermount3").arg("-uz").arg(mp).status()
    };
    assert!(
        ok.unwrap().success(),
        "detaching the dead mount at {}",
        mp.display()
    );
    assert!(!is_mounted(mp), "{} is still mounted", mp.display());
}

/// Nothing in DIR outside `.wh..wh.layerfs/` but `big.bin`, and that only
/// with one of the legal contents.
fn check_upper_after_crash(upper: &Path, legal: &[String], when: &str) {
    let work = upper.join(".wh..wh.layerfs");
    for p in walk(upper) {
        if p.starts_with(&work) {
            continue;
        }
        let rel = p.strip_prefix(upper).unwrap();
        assert_eq!(
            rel,
            Path::new("big.bin"),
            "{when}: unexpected entry {} in the rw DIR",
            rel.display()
        );
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file(), "{when}: big.bin in DIR is not a file");
        let h = sha256_file(&p);
        assert!(
            legal.contains(&h),
            "{when}: partial copy-up in the rw DIR: big.bin ({} bytes) has sha256 {h}",
            md.len()
        );
    }
}

/// kill -9 of the daemon at several moments after a writer starts to append
/// to a 256 MiB lower file (LAYERFS_CRASH_MIB overrides the size): the
/// open copies the whole file up. After the dead mount is detached and DIR
/// mounted again, the file is the original or the original plus the one
/// 4096-byte write (which one depends on timing: with a write-back cache a
/// write may return before the daemon has it), never anything in between,
/// no `.wh.` name shows, and DIR holds no partial copy outside its private
/// `.wh..wh.layerfs/`.
#[test]
fn kill_9_during_copy_up_never_leaves_a_partial_file() {
    if !fuse_available() {
        return;
    }
    let store = TestStore::new();
    let mib: usize = std::env::var("LAYERFS_CRASH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // A plain rootfs tar: big.bin (pseudo-random) and etc/hostname.
    let src = w.join("rootfs");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), "crash\n").unwrap();
    let big = src.join("big.bin");
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("head -c {}M /dev/urandom > \"$1\"", mib))
            .arg("sh")
            .arg(&big),
    );
    let chunk = w.join("chunk");
    std::fs::write(&chunk, pseudo_random(4096, 99)).unwrap();
    let original = sha256_file(&big);
    let appended = {
        let out = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("cat \"$1\" \"$2\" | sha256sum")
                .arg("sh")
                .arg(&big)
                .arg(&chunk),
        );
        out.split_whitespace().next().unwrap().to_string()
    };
    let legal = [original, appended];
    let rootfs = w.join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-c", "--format=gnu", "-f"])
            .arg(&rootfs)
            .args(["big.bin", "etc"]),
    );
    std::fs::remove_file(&big).unwrap();
    let id = store.import(&rootfs, &[]);
    std::fs::remove_file(&rootfs).unwrap();

    let mp = new_dir(&w.join("mnt"));
    let mut outcomes = [0usize; 2];
    for round in 0..2 {
        for delay_ms in [0u64, 20, 80, 200] {
            let what = format!("round {round}, kill after {delay_ms} ms");
            let upper = new_dir(&w.join(format!("upper-{round}-{delay_ms}")));
            {
                let m = KillableMount::new(&store, &id, &mp, &upper);
                let pid = daemon_pid(&store, &mp, Some(&upper));
                // One write(2) of 4096 bytes: on a file of the lower layer,
                // the open for appending copies the whole file up.
                let mut writer = Command::new("sh")
                    .arg("-c")
                    .arg("exec cat \"$1\" >> \"$2\"")
                    .arg("sh")
                    .arg(&chunk)
                    .arg(mp.join("big.bin"))
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(delay_ms));
                // SAFETY: killing the daemon this test started.
                assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
                let deadline = Instant::now() + Duration::from_secs(30);
                while writer.try_wait().unwrap().is_none() {
                    if Instant::now() > deadline {
                        let _ = writer.kill();
                        let _ = writer.wait();
                        panic!("{what}: the writer hangs after the daemon died");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                wait_gone(pid, &what);
                clean_dead_mount(&mp);
                drop(m);
            }
            check_upper_after_crash(&upper, &legal, &format!("{what}, before remount"));
            {
                let _m = KillableMount::new(&store, &id, &mp, &upper);
                let h = sha256_file(&mp.join("big.bin"));
                let k = legal.iter().position(|l| *l == h).unwrap_or_else(|| {
                    let len = std::fs::metadata(mp.join("big.bin")).unwrap().len();
                    panic!("{what}: after remount big.bin ({len} bytes) is neither the original nor original + append")
                });
                outcomes[k] += 1;
                assert_eq!(std::fs::read(mp.join("etc/hostname")).unwrap(), b"crash\n");
                assert_no_whiteout_names(&mp);
                let mut top: Vec<String> = std::fs::read_dir(&mp)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                top.sort();
                assert_eq!(top, ["big.bin", "etc"], "{what}: the mount's root");
            }
            assert!(!is_mounted(&mp));
            check_upper_after_crash(&upper, &legal, &format!("{what}, after remount"));
            std::fs::remove_dir_all(&upper).unwrap();
        }
    }
    eprintln!(
        "crash rounds: {} ended with the original file, {} with the append",
        outcomes[0], outcomes[1]
    );
}

// ---------------------------------------------------------------------------
// Concurrency

const APPENDS: usize = 150;
const CREATES: usize = 60;
const RENAMES: usize = 80;
const LOWER_RENAMES: usize = 41; // odd: passwd ends as passwd.alt
const DEADLOCK_TIMEOUT: Duration = Duration::from_secs(120);

fn append_chunk(i: usize) -> Vec<u8> {
    format!("{i:0>63}\n").into_bytes()
}

/// `content` must be `orig` followed by a prefix of the appended chunks:
/// anything else is a torn copy-up or a torn append.
fn check_append_prefix(content: &[u8], orig: &[u8], what: &str) {
    assert!(
        content.len() >= orig.len(),
        "{what}: {} bytes, shorter than the original {}",
        content.len(),
        orig.len()
    );
    if content[..orig.len()] != orig[..] {
        let i = (0..orig.len()).find(|&i| content[i] != orig[i]).unwrap();
        panic!("{what}: differs from the original at byte {i}");
    }
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let stream = STREAM.get_or_init(|| (0..APPENDS).flat_map(append_chunk).collect());
    let rest = &content[orig.len()..];
    assert!(
        stream.starts_with(rest),
        "{what}: the {} bytes after the original are not a prefix of the appends",
        rest.len()
    );
}

fn appender(root: &Path) {
    for i in 0..APPENDS {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("bin/busybox"))
            .unwrap();
        f.write_all(&append_chunk(i)).unwrap();
    }
}

fn creator(root: &Path, t: usize) {
    for i in 0..CREATES {
        let p = root.join(format!("etc/c{t}-{i:03}"));
        std::fs::write(&p, format!("creator {t} file {i}\n")).unwrap();
        if i % 2 == 0 {
            std::fs::remove_file(&p).unwrap();
        }
    }
    if t == 1 {
        // Replace a lower file: whiteout and new file in the busy directory.
        std::fs::remove_file(root.join("etc/os-release")).unwrap();
        std::fs::write(root.join("etc/os-release"), "recreated\n").unwrap();
    }
}

fn renamer_new(root: &Path) {
    let name = |k: usize| root.join(format!("etc/r-{k:03}"));
    std::fs::write(name(0), "renamed along\n").unwrap();
    for k in 0..RENAMES {
        std::fs::rename(name(k), name(k + 1)).unwrap();
    }
}

fn renamer_lower(root: &Path) {
    let (a, b) = (root.join("etc/passwd"), root.join("etc/passwd.alt"));
    for k in 0..LOWER_RENAMES {
        if k % 2 == 0 {
            std::fs::rename(&a, &b).unwrap();
        } else {
            std::fs::rename(&b, &a).unwrap();
        }
    }
}

fn reader(root: &Path, orig: &[u8], group: &[u8], done: &AtomicBool) -> usize {
    let mut n = 0;
    loop {
        let last = done.load(Ordering::SeqCst);
        let mut content = Vec::new();
        std::fs::File::open(root.join("bin/busybox"))
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        check_append_prefix(&content, orig, "a reader's bin/busybox");
        assert_eq!(std::fs::read(root.join("etc/group")).unwrap(), group);
        n += 1;
        if last {
            return n;
        }
    }
}

fn lister(root: &Path, done: &AtomicBool) -> usize {
    let mut n = 0;
    loop {
        let last = done.load(Ordering::SeqCst);
        let mut names = Vec::new();
        for e in std::fs::read_dir(root.join("etc")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".wh."), "etc lists {name}");
            names.push(name);
        }
        assert!(
            names.iter().any(|n| n == "group"),
            "etc lost group: {names:?}"
        );
        n += 1;
        if last {
            return n;
        }
    }
}

/// The writers alone, one after the other: the expected final tree.
fn sequential_writers(root: &Path) {
    appender(root);
    creator(root, 0);
    creator(root, 1);
    renamer_new(root);
    renamer_lower(root);
}

/// 8 threads at once on `root`: an appender to a lower file, two readers
/// of it, a lister, two creators/unlinkers and two renamers in one lower
/// directory. `on_deadlock` runs if they are not done after
/// DEADLOCK_TIMEOUT (for a mount: kill the daemon, which fails every
/// pending request, so the threads return and the test fails).
type Worker = (String, std::thread::JoinHandle<usize>);

/// Starts a named thread that returns how many operations it did.
fn spawn_named(name: &str, f: impl FnOnce() -> usize + Send + 'static) -> Worker {
    let h = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .unwrap();
    (name.to_string(), h)
}

fn concurrent_workload(root: &Path, on_deadlock: Box<dyn FnOnce() + Send>) {
    let fired = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = {
        let fired = fired.clone();
        std::thread::spawn(move || {
            if rx.recv_timeout(DEADLOCK_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("watchdog: no progress after {DEADLOCK_TIMEOUT:?}");
                fired.store(true, Ordering::SeqCst);
                on_deadlock();
            }
        })
    };
    let read = |rel: &str| {
        std::fs::read(root.join(rel)).unwrap_or_else(|e| {
            let deadlock = fired.load(Ordering::SeqCst);
            panic!("reading {rel}: {e} (the watchdog fired: {deadlock})")
        })
    };
    let orig = Arc::new(read("bin/busybox"));
    let group = Arc::new(read("etc/group"));
    let done = Arc::new(AtomicBool::new(false));
    let root = root.to_path_buf();
    let writer = |name: &str, ops: usize, f: fn(&Path)| {
        let root = root.clone();
        spawn_named(name, move || {
            f(&root);
            ops
        })
    };
    let writers = vec![
        writer("appender", APPENDS, appender),
        writer("creator 0", CREATES, |r| creator(r, 0)),
        writer("creator 1", CREATES, |r| creator(r, 1)),
        writer("renamer of a new file", RENAMES, renamer_new),
        writer("renamer of a lower file", LOWER_RENAMES, renamer_lower),
    ];
    let mut readers = Vec::new();
    for name in ["reader 0", "reader 1"] {
        let (root, orig, group, done) = (root.clone(), orig.clone(), group.clone(), done.clone());
        readers.push(spawn_named(name, move || {
            reader(&root, &orig, &group, &done)
        }));
    }
    readers.push(spawn_named("lister", {
        let (root, done) = (root.clone(), done.clone());
        move || lister(&root, &done)
    }));
    let mut failures = Vec::new();
    let mut join = |hs: Vec<Worker>| {
        for (name, h) in hs {
            match h.join() {
                Ok(n) => eprintln!("{name}: {n} operations"),
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{name}: {msg}"));
                }
            }
        }
    };
    join(writers);
    done.store(true, Ordering::SeqCst);
    join(readers);
    drop(tx);
    watchdog.join().unwrap();
    assert!(
        !fired.load(Ordering::SeqCst),
        "deadlock: the threads were not done after {DEADLOCK_TIMEOUT:?}; failures then: {failures:?}"
    );
    assert!(failures.is_empty(), "threads failed: {failures:#?}");
    let fin = std::fs::read(root.join("bin/busybox")).unwrap();
    check_append_prefix(&fin, &orig, "bin/busybox at the end");
    assert_eq!(
        fin.len(),
        orig.len() + APPENDS * 64,
        "every append is there"
    );
}

/// Paths whose mtime is "now" after the concurrent workload.
const CONCURRENT_TOUCHED: &[&str] = &["etc", "etc/c*", "etc/r-*", "etc/os-release", "bin/busybox"];

#[test]
fn concurrent_readers_and_writers_on_rw_mount() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("plain");
    plain_image_tree(&fixture("multi.docker.tar"), &plain);
    sequential_writers(&plain);
    let expected = snapshot(&plain);

    let upper = new_dir(&work.path().join("upper"));
    let live = {
        let m = Mount::new(&store, &id, &["--rw", upper.to_str().unwrap()]);
        let pid = daemon_pid(&store, &m.dir, Some(&upper));
        concurrent_workload(
            &m.dir,
            Box::new(move || {
                eprintln!("watchdog: killing the daemon (pid {pid})");
                // SAFETY: killing the daemon this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }),
        );
        assert_no_whiteout_names(&m.dir);
        snapshot(&m.dir)
    };
    same_tree(
        "concurrent workload on the rw mount vs the writers one after the other on a plain dir",
        &expected,
        &live,
        &mtime_ignores(CONCURRENT_TOUCHED),
    );
    let m = Mount::new(&store, &id, &["--rw", upper.to_str().unwrap()]);
    assert_same_tree("live tree vs after remount", &live, &snapshot(&m.dir), &[]);
}

// ---------------------------------------------------------------------------
// One DIR, one mount; read-only stays read-only

#[test]
fn second_mount_of_the_same_rw_dir_is_refused() {
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let upper = new_dir(&work.path().join("upper"));
    let upper_s = upper.to_str().unwrap();
    let first = Mount::new(&store, &id, &["--rw", upper_s]);
    std::fs::write(first.path("etc/from-first"), "1\n").unwrap();

    let mp2 = new_dir(&work.path().join("mnt2"));
    let out = store.run(&["mount", &id, mp2.to_str().unwrap(), "--rw", upper_s]);
    if out.status.success() {
        let _ = store.run(&["umount", mp2.to_str().unwrap()]);
        panic!("a second mount of the same --rw DIR was accepted");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let canon = upper.canonicalize().unwrap();
    let clear = err.contains(upper_s)
        || err.contains(canon.to_str().unwrap())
        || ["already", "in use", "busy", "locked"]
            .iter()
            .any(|w| err.to_lowercase().contains(w));
    assert!(clear, "unclear refusal: {err:?}");
    assert!(!is_mounted(&mp2), "the refused mount left a mount behind");

    // The first mount is unharmed.
    std::fs::write(first.path("etc/from-first-2"), "2\n").unwrap();
    assert_eq!(std::fs::read(first.path("etc/from-first")).unwrap(), b"1\n");
    // A read-only mount of the image at the same time: the image only.
    {
        let ro = Mount::new(&store, &id, &[]);
        assert!(!ro.path("etc/from-first").exists());
        let e = std::fs::write(ro.path("etc/x"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
    drop(first);
    // Once the first is gone, DIR mounts again, with what was written.
    let again = Mount::new(&store, &id, &["--rw", upper_s]);
    assert_eq!(
        std::fs::read(again.path("etc/from-first-2")).unwrap(),
        b"2\n"
    );
}

/// Without --rw every kind of change fails with EROFS.
#[test]
fn mount_without_rw_is_read_only() {
    use std::os::unix::fs::{chown, symlink};
    let Some((store, id)) = fuse_store("multi.docker.tar") else {
        return;
    };
    let m = Mount::new(&store, &id, &[]);
    let before = snapshot(&m.dir);
    let p = |r: &str| m.path(r);
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs("create", std::fs::write(p("etc/new"), b"x"));
    erofs(
        "open for append",
        std::fs::OpenOptions::new()
            .append(true)
            .open(p("etc/passwd"))
            .map(drop),
    );
    erofs(
        "open with O_TRUNC",
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p("etc/passwd"))
            .map(drop),
    );
    erofs("mkdir", std::fs::create_dir(p("newdir")));
    erofs("rmdir", std::fs::remove_dir(p("tmp")));
    erofs("unlink", std::fs::remove_file(p("etc/group")));
    erofs("rename", std::fs::rename(p("etc/passwd"), p("etc/pw")));
    erofs("rename a dir", std::fs::rename(p("etc"), p("etc2")));
    erofs("symlink", symlink("x", p("etc/sym")));
    erofs("link", std::fs::hard_link(p("etc/passwd"), p("etc/pw")));
    erofs(
        "chmod",
        std::fs::set_permissions(p("etc/passwd"), PermissionsExt::from_mode(0o600)),
    );
    erofs("chown", chown(p("etc/passwd"), Some(1), Some(1)));
    let out = Command::new("touch")
        .args(["-d", "@1"])
        .arg(p("etc/passwd"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "touch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("setfattr")
        .args(["-n", "user.test", "-v", "1"])
        .arg(p("etc/passwd"))
        .output();
    if let Ok(out) = out {
        assert!(
            !out.status.success(),
            "setfattr succeeded on a read-only mount"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "setfattr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same_tree(
        "read-only mount after refused writes",
        &before,
        &snapshot(&m.dir),
        &[],
    );
}

// ---------------------------------------------------------------------------
// The harness itself, without layerfs

/// The workloads give the same tree on two plain directories, with the
/// ignore lists the mount tests use: what is compared is deterministic.
/// The concurrent workload on a plain directory passes its own checks and
/// ends as the sequential one does.
#[test]
fn harness_workloads_are_deterministic_on_plain_dirs() {
    if !is_root() {
        eprintln!("SKIP: the plain trees need root (owners, chown)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tar = make_tree_tar(w);
    let a = workload_on_plain_dir(w, &tar);
    let other = w.join("other");
    std::fs::create_dir(&other).unwrap();
    let b = workload_on_plain_dir(&other, &tar);
    same_tree("workload, two plain runs", &a, &b, &workload_ignores());

    let seq = w.join("seq");
    plain_image_tree(&fixture("multi.docker.tar"), &seq);
    sequential_writers(&seq);
    let conc = w.join("conc");
    plain_image_tree(&fixture("multi.docker.tar"), &conc);
    concurrent_workload(&conc, Box::new(|| panic!("plain directory deadlocked")));
    same_tree(
        "concurrent vs sequential writers, plain dirs",
        &snapshot(&seq),
        &snapshot(&conc),
        &mtime_ignores(CONCURRENT_TOUCHED),
    );
}

/// tools/stack_layer.py makes a docker-archive that layerfs imports (with
/// one more layer in its history) and mounts as the oracle merges it: an
/// AUFS diff directory (new file, whiteout, opaque directory, a private
/// `.wh..wh.layerfs/` left out) tarred the way the round-trip test does.
#[test]
fn harness_stack_layer_output_imports_and_mounts() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let diff = new_dir(&w.join("diff"));
    for d in ["newdir", "etc", "usr/share/doc", ".wh..wh.layerfs/work"] {
        std::fs::create_dir_all(diff.join(d)).unwrap();
    }
    std::fs::write(diff.join("newdir/file"), "hi\n").unwrap();
    std::fs::write(diff.join("etc/.wh.passwd"), "").unwrap();
    std::fs::write(diff.join("usr/share/doc/.wh..wh..opq"), "").unwrap();
    std::fs::write(diff.join("usr/share/doc/fresh"), "fresh\n").unwrap();
    std::fs::write(diff.join(".wh..wh.layerfs/work/partial"), "junk").unwrap();
    let layer = w.join("diff.tar");
    gnu_tar_of_branch(&diff, &layer, true);
    let fx = fixture("multi.docker.tar");
    let stacked = w.join("stacked.docker.tar");
    let new_id = run_ok(
        tool("stack_layer.py")
            .arg(&fx)
            .arg(&layer)
            .arg(&stacked)
            .args(["--tag", "stacked:latest"]),
    );
    let store = TestStore::new();
    let id = store.import(&stacked, &[]);
    assert_eq!(id, new_id.trim());
    let h: serde_json::Value =
        serde_json::from_str(&store.ok(&["history", "stacked", "--json"])).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 4);
    assert!(h[0]["created_by"]
        .as_str()
        .unwrap()
        .contains("stack_layer.py"));
    let m = Mount::new(&store, &id, &[]);
    assert_same_tree(
        "stacked image: mount vs oracle",
        &oracle(&["--image", stacked.to_str().unwrap()]),
        &snapshot(&m.dir),
        &[],
    );
    assert_eq!(std::fs::read(m.path("newdir/file")).unwrap(), b"hi\n");
    assert!(!m.path("etc/passwd").exists() && m.path("etc/group").exists());
    let doc: Vec<_> = std::fs::read_dir(m.path("usr/share/doc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(doc, ["fresh"]);
    assert_no_whiteout_names(&m.dir);
}

/// The workloads on kernel overlayfs over the image's layers give the tree
/// they give on a plain directory (a second union filesystem agrees with
/// the expected results). Skips where overlayfs cannot be mounted.
#[test]
fn harness_workloads_on_kernel_overlayfs() {
    if !is_root() {
        eprintln!("SKIP: overlayfs needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layers = w.join("layers");
    run_ok(
        tool("apply_layers.py")
            .arg("--overlay-layers")
            .arg(fixture("multi.docker.tar"))
            .arg(&layers),
    );
    let n = std::fs::read_dir(&layers).unwrap().count();
    let lower: Vec<PathBuf> = (0..n).map(|i| layers.join(i.to_string())).collect();
    // The mount, unmounted on drop; None (after a SKIP) if refused.
    let overlay = |name: &str| -> Option<KernelOverlay> {
        let (up, wk, mp) = (
            w.join(format!("{name}-up")),
            w.join(format!("{name}-wk")),
            w.join(name),
        );
        for d in [&up, &wk, &mp] {
            std::fs::create_dir(d).unwrap();
        }
        let opts = format!(
            "{},upperdir={},workdir={}",
            lowerdir(&lower),
            up.display(),
            wk.display()
        );
        KernelOverlay::try_mount(&mp, &opts)
            .inspect_err(|e| eprintln!("SKIP: cannot mount overlayfs: {e}"))
            .ok()
    };
    let Some(ov_guard) = overlay("ov") else {
        return;
    };
    let ov = ov_guard.dir.clone();
    // overlayfs shows the upper directory's own mtime on the root.
    same_tree(
        "overlayfs of the layers vs oracle",
        &oracle(&["--image", fixture("multi.docker.tar").to_str().unwrap()]),
        &snapshot(&ov),
        &mtime_ignores(&[""]),
    );
    let tar = make_tree_tar(w);
    let expected = workload_on_plain_dir(w, &tar);
    workload(&ov, &tar, w);
    same_tree(
        "overlayfs vs plain directory",
        &expected,
        &snapshot(&ov),
        &workload_ignores(),
    );

    let Some(ov2_guard) = overlay("ov2") else {
        return;
    };
    let ov2 = ov2_guard.dir.clone();
    let seq = w.join("seq");
    plain_image_tree(&fixture("multi.docker.tar"), &seq);
    sequential_writers(&seq);
    concurrent_workload(&ov2, Box::new(|| panic!("overlayfs deadlocked")));
    let mut touched = CONCURRENT_TOUCHED.to_vec();
    touched.push(""); // the upper directory's own mtime, on overlayfs
    same_tree(
        "concurrent workload, overlayfs vs plain sequential",
        &snapshot(&seq),
        &snapshot(&ov2),
        &mtime_ignores(&touched),
    );
}
