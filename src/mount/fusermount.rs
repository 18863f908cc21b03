//! Unprivileged mounting through the setuid `fusermount3` helper (Debian
//! package `fuse3`), the way libfuse does it: `fusermount3` opens
//! `/dev/fuse`, mounts it, and passes the open descriptor back over a unix
//! socket named by `_FUSE_COMMFD`. Used whenever the daemon is not root, so
//! a mount works even where `/dev/fuse` itself is not accessible to users.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

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
    // SAFETY: only fcntl in the child between fork and exec; it keeps the
    // socket open across exec (std opens everything close-on-exec).
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(child_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("running {} (install the fuse3 package)", binary()))?;
    drop(theirs);
    let received = receive_fd(&ours);
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

fn receive_fd(sock: &UnixStream) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS gave us a new descriptor that nothing
                // else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(anyhow!("no descriptor received from fusermount"))
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
