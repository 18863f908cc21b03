//! Shared helpers of the integration tests: a private store per test, the
//! `layerfs` binary, mounts that are always unmounted (even when the test
//! panics), and the Python oracle (`tools/oracle_merge.py`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_layerfs")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures").join(name)
}

/// True when FUSE mounts can run here. Without /dev/fuse a mount test is
/// skipped with a message, except under CI (`CI` set), where it fails.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("/dev/fuse is missing and CI is set: mount tests must run in CI");
    }
    eprintln!("SKIP: /dev/fuse is missing (set CI=1 to make this a failure)");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A private store in a temporary directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore {
            dir: tempfile::Builder::new()
                .prefix("layerfs-test")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root").arg(self.root());
        c.env_remove("LAYERFS_ROOT");
        c
    }

    /// Runs `layerfs --root STORE args...` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running layerfs")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "layerfs {args:?} should have failed but succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    /// Imports and returns the single image id printed.
    pub fn import(&self, path: &Path, extra: &[&str]) -> String {
        let mut args = vec!["import", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let ids: Vec<&str> = out.lines().collect();
        assert_eq!(ids.len(), 1, "expected one image id, got {out:?}");
        assert_eq!(ids[0].len(), 64, "image id {:?}", ids[0]);
        ids[0].to_string()
    }

    /// A fingerprint of everything in the store except `tmp/`, `mounts/`
    /// and `lock`: every path with its size and content hash.
    pub fn fingerprint(&self) -> Vec<(String, u64, String)> {
        use sha2::{Digest, Sha256};
        let mut out = Vec::new();
        let root = self.root();
        if !root.exists() {
            return out;
        }
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel == "tmp" || rel == "mounts" || rel == "lock" {
                    continue;
                }
                let md = std::fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    out.push((rel, 0, "dir".into()));
                    stack.push(p);
                } else {
                    let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                    out.push((rel, md.len(), h));
                }
            }
        }
        out.sort();
        out
    }
}

/// A live mount; unmounted on drop, even during a panic.
pub struct Mount<'a> {
    pub store: &'a TestStore,
    pub dir: PathBuf,
    _mp: tempfile::TempDir,
}

impl<'a> Mount<'a> {
    pub fn new(store: &'a TestStore, image: &str, opts: &[&str]) -> Mount<'a> {
        Mount::with_env(store, image, opts, &[])
    }

    /// `layerfs mount IMAGE MNT OPTS...` with `env` set for the daemon
    /// (e.g. `RUST_LOG`; its log is `ROOT/mounts/<key>.log`).
    pub fn with_env(
        store: &'a TestStore,
        image: &str,
        opts: &[&str],
        env: &[(&str, &str)],
    ) -> Mount<'a> {
        Mount::run(store, env, |mnt| {
            let mut args = vec!["mount", image, mnt];
            args.extend_from_slice(opts);
            args.iter().map(|a| a.to_string()).collect()
        })
    }

    /// `layerfs mount-branches MNT -o OPTS` (plain directories as branches).
    pub fn branches(store: &'a TestStore, opts: &str) -> Mount<'a> {
        Mount::branches_with_env(store, opts, &[])
    }

    /// `layerfs mount-branches MNT -o OPTS` with `env` set for the daemon.
    pub fn branches_with_env(store: &'a TestStore, opts: &str, env: &[(&str, &str)]) -> Mount<'a> {
        Mount::run(store, env, |mnt| {
            ["mount-branches", mnt, "-o", opts]
                .iter()
                .map(|a| a.to_string())
                .collect()
        })
    }

    /// Runs `layerfs ARGS` (`args` given the new mountpoint) with `env`,
    /// which must mount there.
    fn run(
        store: &'a TestStore,
        env: &[(&str, &str)],
        args: impl FnOnce(&str) -> Vec<String>,
    ) -> Mount<'a> {
        let mp = tempfile::Builder::new()
            .prefix("layerfs-mnt")
            .tempdir()
            .expect("tempdir");
        let dir = mp.path().to_path_buf();
        let m = Mount {
            store,
            dir,
            _mp: mp,
        };
        let args = args(m.dir.to_str().unwrap());
        let out = m.store.cmd().args(&args).envs(env.iter().copied()).output();
        let out = out.expect("running layerfs");
        assert!(
            out.status.success(),
            "layerfs {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    /// A read-write mount: `layerfs mount IMAGE MNT --rw RWDIR` (RWDIR is
    /// the upper branch, in AUFS layer-diff format).
    pub fn rw(store: &'a TestStore, image: &str, rwdir: &Path) -> Mount<'a> {
        Mount::new(store, image, &["--rw", rwdir.to_str().unwrap()])
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let out = self.store.run(&["umount", self.dir.to_str().unwrap()]);
        if !out.status.success() {
            eprintln!("umount failed: {}", String::from_utf8_lossy(&out.stderr));
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Runs the Python oracle with `args`; returns its stdout (JSON).
pub fn oracle(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tools/oracle_merge.py"))
        .args(args)
        .output()
        .expect("python3 (the oracle needs it)");
    assert!(
        out.status.success(),
        "oracle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares two oracle JSON manifests with the oracle's own comparator;
/// panics with its readable diff if they differ.
pub fn assert_same_tree(what: &str, expected_json: &str, actual_json: &str, ignore: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("expected.json");
    let b = dir.path().join("actual.json");
    std::fs::write(&a, expected_json).unwrap();
    std::fs::write(&b, actual_json).unwrap();
    let mut args = vec![
        "--compare".to_string(),
        a.display().to_string(),
        b.display().to_string(),
    ];
    for i in ignore {
        args.push("--ignore".into());
        args.push(i.to_string());
    }
    let out = Command::new("python3")
        .arg(repo().join("tools/oracle_merge.py"))
        .args(&args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{what}: trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Guard against comparing two empty manifests.
    let v: serde_json::Value = serde_json::from_str(actual_json).unwrap();
    assert!(
        v.as_object().map_or(0, |o| o.len()) > 1,
        "{what}: the compared tree is empty"
    );
}

/// The unprivileged user of the rootless tests (`layerfs-test`), created
/// if missing, and its uid; `/dev/fuse` is made 0666 as Debian's udev rule
/// does (machines without udev leave it 0600). `None`, after a SKIP
/// message, when not running as root (only root can set this up).
pub fn unprivileged_user() -> Option<(&'static str, u32)> {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!("SKIP: needs root to create the unprivileged test user");
        return None;
    }
    if std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777 != 0o666 {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let user = "layerfs-test";
    if Command::new("id").arg(user).output().unwrap().status.code() != Some(0) {
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", user])
            .status()
            .unwrap();
        // Another test may have created it in the meantime.
        assert!(
            st.success() || Command::new("id").arg(user).status().unwrap().success(),
            "useradd"
        );
    }
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    let uid = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Some((user, uid))
}

/// `lgetxattr(2)` of `p`: the value, or the errno.
pub fn lgetxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `llistxattr(2)` of `p`: the NUL-terminated names, or the errno.
pub fn llistxattr(p: &Path) -> Result<Vec<u8>, i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid C string and a buffer of the given length.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}
