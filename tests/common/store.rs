//! A private store per test, and the start of a mount test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{bin, fixture, fuse_available};

/// The start of a mount test: `None` when FUSE mounts cannot run here
/// ([`fuse_available`] printed a SKIP, or panicked under CI), and the test
/// returns; else a new store with the fixture `name` imported, and the
/// image id.
pub fn fuse_store(name: &str) -> Option<(TestStore, String)> {
    if !fuse_available() {
        return None;
    }
    let store = TestStore::new();
    let id = store.import(&fixture(name), &[]);
    Some((store, id))
}

/// A private store in a temporary directory.
pub struct TestStore {
    /// The tmpfs mounted at the store's root, if any: unmounted (first)
    /// when the store is dropped.
    pub tmpfs: Option<super::mount::LazyUnmount>,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore {
            tmpfs: None,
            dir: tempfile::Builder::new()
                .prefix("layerfs-test")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A store whose root is a tmpfs of `mib` MiB, to run it out of space
    /// for real. `None` (with a SKIP message) when not root, except under
    /// CI, where it panics.
    pub fn on_tmpfs(mib: u64) -> Option<TestStore> {
        if !super::is_root() {
            if std::env::var_os("CI").is_some() {
                panic!("a tmpfs store needs root, and CI is set");
            }
            eprintln!("SKIP: mounting a tmpfs store needs root");
            return None;
        }
        let mut s = TestStore::new();
        std::fs::create_dir(s.root()).unwrap();
        super::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={mib}m,mode=0700"))
                .arg("tmpfs")
                .arg(s.root()),
        );
        s.tmpfs = Some(super::mount::LazyUnmount(s.root()));
        Some(s)
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
