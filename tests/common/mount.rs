//! Mounts that are unmounted on drop, even when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestStore;

/// A live mount; unmounted on drop, even during a panic.
pub struct Mount<'a> {
    pub store: &'a TestStore,
    pub dir: PathBuf,
    /// The temporary mountpoint (none for an adopted mount).
    _mp: Option<tempfile::TempDir>,
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
            _mp: Some(mp),
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

    /// A layerfs mount at `dir` made by other means (`mount.fuse3`,
    /// mount(8)) with `store` as its store: from now on unmounted on drop
    /// as the others are (`layerfs umount`, then detached if that fails).
    pub fn adopt(store: &'a TestStore, dir: &Path) -> Mount<'a> {
        Mount {
            store,
            dir: dir.to_path_buf(),
            _mp: None,
        }
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

/// Detaches (`umount -l`, as root) whatever is mounted at the path on
/// drop: for a mount an unprivileged user made with its own store, which
/// the test's `layerfs umount` would not know.
pub struct LazyUnmount(pub PathBuf);

impl Drop for LazyUnmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
