//! POSIX ACLs and the umask on writable mounts, where the kernel caches
//! and enforces ACLs (FUSE_POSIX_ACL) and the daemon applies the umask and
//! default ACLs of new objects itself (FUSE_DONT_MASK): one shell script
//! of creates under several umasks, default ACLs (a minimal one and one
//! with a named user), chmod of files with ACLs, setfacl changing the
//! mode, and access an ACL grants, run as root and then as an
//! unprivileged user, in a plain directory (the reference), kernel
//! overlayfs with an upperdir (when the kernel mounts it), `layerfs mount
//! --rw` and `layerfs mount-branches` with an upperdir. Each prints what
//! each step gave (`stat` mode and `getfacl` of every object, sorted by
//! path, and the status of every command), and every output must equal
//! the plain directory's.
//!
//! Needs root (the unprivileged user, overlayfs) and setfacl/getfacl
//! (package `acl`); skipped with a message otherwise, except that under
//! CI a missing `setfacl` fails.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{fixture, fuse_available, is_root, overlay_listed, run_as, unprivileged_user};
use common::{KernelOverlay, Mount, TestStore};

/// What root runs in the test directory (`$U` is the unprivileged user).
const AS_ROOT: &str = r#"
try() { "$@" >/dev/null 2>&1; echo "$* -> $?"; }
try sh -c 'umask 022; mkdir plain; touch plain/f022; mkfifo plain/p022'
try sh -c 'umask 077; touch plain/f077; mkdir plain/d077'
try sh -c 'umask 0; touch plain/f000; mkdir plain/d000; mkfifo plain/p000'
try sh -c 'umask 0227; touch plain/f227; mkdir plain/d227'
try mkdir named
try setfacl -d -m u::rwx,g::r-x,o::r-x,u:$U:rwx,m::rwx named
try sh -c 'umask 077; touch named/f; mkdir named/d; mkfifo named/p'
try sh -c 'umask 022; mkdir named/d/e; touch named/d/e/f; ln -s f named/d/e/l'
try mkdir min
try setfacl -d -m u::rwx,g::---,o::--- min
try sh -c 'umask 0; touch min/f; mkdir min/d'
try touch c
try setfacl -m u:$U:rw c
try chmod 640 c
try chmod 705 c
try touch s
try setfacl -m g::rwx,o::r s
try setfacl -m u:$U:r-x,m::r s
try setfacl -b s
try sh -c 'echo secret > g; chmod 600 g'
try setfacl -m u:$U:r g
try mkdir shared
try chmod 1777 shared
try setfacl -d -m u::rwx,g::rwx,o::---,u:$U:rwx shared
try mkdir open
try chmod 1777 open
"#;

/// What the unprivileged user runs there afterwards.
const AS_USER: &str = r#"
try() { "$@" >/dev/null 2>&1; echo "$* -> $?"; }
try cat g
try cat c
try sh -c 'umask 027; touch open/u027; mkdir open/ud027'
try sh -c 'umask 0; touch open/u000'
try sh -c 'umask 077; touch shared/u; mkdir shared/ud'
try setfacl -m u::rw,g::r,o::r open/u027
try chmod 600 shared/u
"#;

/// Mode and ACL of every object under the test directory, sorted.
const REPORT: &str = r#"
find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
  stat -c '%n %A' "$f"
  [ -L "$f" ] || getfacl -c -n -p "$f" 2>&1 | grep -v '^$'
done
"#;

fn sh(script: &str, dir: &Path, user: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("U", user)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs the scripts in a new directory `t` under `root` (a writable tree)
/// and returns everything they printed.
fn run_in(root: &Path, user: &str) -> String {
    let t = root.join("t");
    std::fs::create_dir(&t).unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut out = sh(AS_ROOT, &t, user);
    let script = format!("cd '{}' || exit 1\n{AS_USER}", t.display());
    let o = run_as(user, &[("U", user)], &["sh", "-c", &script]);
    out += &String::from_utf8_lossy(&o.stdout);
    out += &String::from_utf8_lossy(&o.stderr);
    out + &sh(REPORT, &t, user)
}

#[test]
fn umask_default_acls_and_chmod_match_a_plain_directory() {
    if !is_root() {
        eprintln!("SKIP: needs root (overlayfs, the unprivileged user)");
        return;
    }
    if Command::new("setfacl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "setfacl missing under CI");
        eprintln!("SKIP: setfacl not installed (package acl)");
        return;
    }
    if !fuse_available() {
        return;
    }
    let Some((user, _)) = unprivileged_user() else {
        return;
    };
    // A world-searchable base, so the user reaches every tree.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = base.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let want = run_in(&plain, user);
    assert!(
        want.contains("cat g -> 0"),
        "the ACL lets the user read g:\n{want}"
    );
    assert!(
        want.contains("user:"),
        "named entries were inherited:\n{want}"
    );

    let mut got = Vec::new();
    if overlay_listed() {
        let (l, u, w) = (
            base.path().join("l"),
            base.path().join("u"),
            base.path().join("w"),
        );
        for d in [&l, &u, &w] {
            std::fs::create_dir(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            u.display(),
            w.display()
        );
        let ov = KernelOverlay::mount(&base.path().join("ovl"), &opts);
        got.push(("kernel overlayfs", run_in(&ov.dir, user)));
    }
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let rw = base.path().join("rw");
    {
        let rw = rw.to_str().unwrap();
        let m = Mount::new(&store, &id, &["--rw", rw, "-o", "allow_other"]);
        got.push(("layerfs mount --rw", run_in(&m.dir, user)));
    }
    let (l, u, w) = (
        base.path().join("bl"),
        base.path().join("bu"),
        base.path().join("bw"),
    );
    for d in [&l, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},allow_other",
        l.display(),
        u.display(),
        w.display()
    );
    {
        let m = Mount::branches(&store, &opts);
        got.push(("layerfs mount-branches", run_in(&m.dir, user)));
    }
    for (what, out) in got {
        assert_eq!(out, want, "{what} differs from a plain directory");
    }
}
