//! Shared helpers of the integration tests: a private store per test, the
//! `layerfs` binary, mounts that are always unmounted (even when the test
//! panics), and the Python oracle (`tools/oracle_merge.py`).
//!
//! - `store`: `TestStore`;
//! - `mount`: `Mount`;
//! - `oracle`: the oracle and its comparator;
//! - `user`: the unprivileged test user.
#![allow(dead_code)]

pub mod mount;
pub mod oracle;
pub mod store;
pub mod user;

// Each test binary uses only some of them.
#[allow(unused_imports)]
pub use {mount::*, oracle::*, store::*, user::*};

use std::path::{Path, PathBuf};

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
