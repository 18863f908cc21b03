//! The unprivileged users of the rootless tests (created as root), and
//! commands run as them through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{bin, is_root, succeeded};

/// Creates `user` (with a home, shell /bin/sh) if missing, and returns its
/// uid and gid. Another test may create it at the same time: a failed
/// `useradd` is fine when the user exists all the same.
pub fn ensure_user(user: &str) -> (u32, u32) {
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
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// Makes `/dev/fuse` 0666 as Debian's udev rule does (machines without
/// udev leave it 0600), so that unprivileged users can mount. Panics if
/// it is missing.
pub fn open_dev_fuse() {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777 != 0o666 {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

/// The unprivileged user of the rootless tests (`layerfs-test`), created
/// if missing, and its uid; `/dev/fuse` is made 0666 ([`open_dev_fuse`]).
/// `None`, after a SKIP message, when not running as root (only root can
/// set this up).
pub fn unprivileged_user() -> Option<(&'static str, u32)> {
    if !is_root() {
        eprintln!("SKIP: needs root to create the unprivileged test user");
        return None;
    }
    open_dev_fuse();
    let user = "layerfs-test";
    let (uid, _) = ensure_user(user);
    Some((user, uid))
}

/// `runuser -u USER -- ARGS`, with `env` set through env(1) when there is
/// any (`runuser -u USER -- env K=V... ARGS`): the output, whatever the
/// status.
pub fn run_as(user: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--"]);
    if !env.is_empty() {
        c.arg("env");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
    }
    c.args(args).output().unwrap()
}

/// [`run_as`], asserting success; returns stdout.
pub fn ok_as(user: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    succeeded(&format!("as {user}: {args:?}"), run_as(user, env, args))
}

/// A private directory of the unprivileged user (`layerfs-test`, see
/// [`unprivileged_user`]): a temporary directory chowned to the user (the
/// owner only; mode 0700), holding a copy of the layerfs binary, since the
/// user may not be able to reach the build tree (a clone under /root,
/// say).
pub struct UserDir {
    pub user: &'static str,
    pub uid: u32,
    /// The copy of the layerfs binary.
    pub exe: PathBuf,
    pub dir: tempfile::TempDir,
}

impl UserDir {
    /// `None` (after a SKIP) when not running as root.
    pub fn new() -> Option<UserDir> {
        let (user, uid) = unprivileged_user()?;
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("chown")
            .arg(user)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let exe = dir.path().join("layerfs");
        std::fs::copy(bin(), &exe).unwrap();
        Some(UserDir {
            user,
            uid,
            exe,
            dir,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `ARGS` as the user; the output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        run_as(self.user, &[], args)
    }

    /// `ARGS` as the user, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok_as(self.user, &[], args)
    }

    /// `layerfs --root ROOT ARGS` as the user (the copy of the binary);
    /// the output, whatever the status.
    pub fn layerfs(&self, root: &Path, args: &[&str]) -> Output {
        let mut a = vec![self.exe.to_str().unwrap(), "--root", root.to_str().unwrap()];
        a.extend_from_slice(args);
        self.run(&a)
    }

    /// [`UserDir::layerfs`], asserting success; returns stdout.
    pub fn layerfs_ok(&self, root: &Path, args: &[&str]) -> String {
        let out = self.layerfs(root, args);
        succeeded(&format!("as {}: layerfs {args:?}", self.user), out)
    }

    /// A store of the user's (`store/` here) holding `fixture`, imported
    /// by the user, and an empty mountpoint `mnt/` of the user's: (store
    /// root, mountpoint).
    pub fn store_with(&self, fixture_name: &str) -> (PathBuf, PathBuf) {
        let fx = self.path(fixture_name);
        std::fs::copy(super::fixture(fixture_name), &fx).unwrap();
        let mnt = self.path("mnt");
        self.ok(&["mkdir", mnt.to_str().unwrap()]);
        let root = self.path("store");
        self.layerfs_ok(&root, &["import", fx.to_str().unwrap()]);
        (root, mnt)
    }
}
