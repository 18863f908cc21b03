//! Shared helpers of the integration tests: a private store per test, the
//! `layerfs` binary, mounts that are always unmounted (even when the test
//! panics), and the Python oracle (`tools/oracle_merge.py`).
//!
//! - `store`: `TestStore`, and `fuse_store`, the start of a mount test;
//! - `mount`: `Mount` and the other unmount-on-drop guards;
//! - `oracle`: the oracle and its comparator;
//! - `tree`: `snapshot` and `walk` of a directory tree;
//! - `tars`: `Tar`, a tar builder (files, directories, links, devices,
//!   PAX records and xattrs, whiteouts), and GNU tar of an rw branch;
//! - `overlay`: `KernelOverlay`, a kernel overlayfs mount guard;
//! - `user`: the unprivileged test users and `runuser`;
//! - `podman`: real podman on a private storage root, layerfs or kernel
//!   overlayfs below it, and `listing` of what it exports (not re-exported:
//!   `use common::podman::*`).
//! - `debian`: a Debian minbase rootfs tar (debootstrap, cached between
//!   runs; not re-exported either).
#![allow(dead_code)]

pub mod debian;
pub mod mount;
pub mod oracle;
pub mod overlay;
pub mod podman;
pub mod store;
pub mod tars;
pub mod tree;
pub mod user;

// Each test binary uses only some of them.
#[allow(unused_imports)]
pub use {mount::*, oracle::*, overlay::*, store::*, tars::*, tree::*, user::*};

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

/// `python3 tools/NAME` (a command to add arguments to).
pub fn tool(name: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(repo().join("tools").join(name));
    c
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

/// Asserts that `out` (of `what`) succeeded, naming its status, stdout and
/// stderr if not; returns its stdout.
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// Runs `cmd`, asserts success, returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    succeeded(&format!("{cmd:?}"), out)
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

/// `lsetxattr(2)` of `p` (flags 0): Ok, or the errno.
pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(())
}
