//! Unprivileged mounting through the setuid `fusermount3` helper (Debian
//! package `fuse3`), the way libfuse does it: `fusermount3` opens
//! `/dev/fuse`, mounts it, and passes the open descriptor back over a unix
//! socket named by `_FUSE_COMMFD`. Used whenever the daemon is not root, so
//! a mount works even where `/dev/fuse` itself is not accessible to users.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

fn binary() -> &'static str {
    if Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists() {
        "fusermount3"
    } else {
        "fusermount"
    }
}

/// Mounts a FUSE filesystem at `mountpoint` with mount `options`
/// (comma-separated) and returns the `/dev/fuse` descriptor to serve it.
pub fn mount(mountpoint: &Path, options: &str) -> Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let child_fd: RawFd = theirs.as_raw_fd();
    let mut cmd = Command::new(binary());
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", child_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::sys::keep_fd_on_exec(&mut cmd, child_fd);
    let child = cmd
        .spawn()
        .with_context(|| format!("running {} (install the fuse3 package)", binary()))?;
    drop(theirs);
    let received = crate::sys::receive_fd(&ours);
    drop(ours);
    let out = child.wait_with_output()?;
    match received {
        Ok(fd) if out.status.success() => Ok(fd),
        _ => bail!(
            "{} could not mount {}: {}",
            binary(),
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Lazily unmounts a mount made by [`mount`].
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let out = Command::new(binary())
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} -u: {}",
            binary(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
