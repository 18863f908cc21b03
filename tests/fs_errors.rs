//! Errors of the filesystem reach the writer as the right errno and leave
//! a trace in the mount's log: a failure (a copy-up that runs out of
//! space) as a warning naming the file and the step, an expected answer
//! (ENOTEMPTY) only at debug level.

mod common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs mounted at a directory for the life of the guard.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The daemon may still be exiting (it holds the branch's lock):
        // a lazy unmount then finishes once it has.
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

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

/// The rw branch is a 256 KiB tmpfs; appending to the 1.9 MB
/// `bin/busybox` of the lower layer needs a copy-up that cannot fit. The
/// writer gets ENOSPC, the file stays as it was (nothing half-copied in
/// the branch or its work directory), and the daemon log has one warning
/// naming the file and the step. A non-empty rmdir (ENOTEMPTY) is an
/// answer, logged at debug level only.
#[test]
fn failed_copy_up_is_logged() {
    if !fuse_available() {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: mounting a tmpfs as the branch needs root");
        return;
    }
    let store = TestStore::new();
    let id = store.import(&fixture("multi.docker.tar"), &[]);
    let branch = tempfile::tempdir().unwrap();
    let rw = branch.path().join("rw");
    let _tmpfs = Tmpfs::mount(&rw, "256k");
    let env = [("RUST_LOG", "warn,layerfs::fuse=debug")];
    {
        let m = Mount::with_env(&store, &id, &["--rw", rw.to_str().unwrap()], &env);
        let p = m.path("bin/busybox");
        let before = std::fs::read(&p).unwrap();
        assert!(before.len() > 1 << 20, "busybox is bigger than the branch");

        let r = OpenOptions::new().append(true).open(&p);
        let errno = r.err().and_then(|e| e.raw_os_error());
        assert_eq!(errno, Some(libc::ENOSPC), "appending to {}", p.display());

        assert_eq!(std::fs::read(&p).unwrap(), before, "content unchanged");
        assert!(!rw.join("bin/busybox").exists(), "no copy in the branch");
        let work = rw.join(".wh..wh.layerfs/work");
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
        assert!(left.is_empty(), "work directory left with {left:?}");

        let r = std::fs::remove_dir(m.path("etc"));
        let errno = r.err().and_then(|e| e.raw_os_error());
        assert_eq!(errno, Some(libc::ENOTEMPTY));
    }
    let log = daemon_log(&store);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    let nospc: Vec<&str> = warnings
        .iter()
        .copied()
        .filter(|l| l.contains("No space left on device"))
        .collect();
    assert_eq!(nospc.len(), 1, "one warning for the failed copy-up:\n{log}");
    let line = nospc[0];
    for want in [
        "copy-up of ",
        "bin/busybox",
        "data copy",
        "op=\"open\"",
        "errno=28",
    ] {
        assert!(line.contains(want), "{want:?} missing in {line:?}");
    }
    assert!(
        !warnings.iter().any(|l| l.contains("Directory not empty")),
        "ENOTEMPTY is no warning:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" DEBUG ") && l.contains("Directory not empty")),
        "ENOTEMPTY logged at debug level:\n{log}"
    );
}
