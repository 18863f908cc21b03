//! Processes, signals and mounts: who we are, whether a process lives,
//! signal masks and waits, the standard descriptors of a daemon, the
//! session of a child, descriptors passed over a socket, unmount, statfs.

use std::ffi::CString;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Is process `pid` running? A zombie (exited, not yet reaped: in a
/// container whose init reaps late, for seconds) counts as gone.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => {
            // No procfs: signal 0 only probes that the process exists.
            // SAFETY: kill with signal 0 sends nothing.
            let r = unsafe { libc::kill(pid as i32, 0) };
            r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

/// Can this process register FUSE backing files (passthrough)? The kernel
/// asks for CAP_SYS_ADMIN in the initial user namespace: the capability
/// must be effective here and this must be the initial namespace (its
/// uid_map maps all of 0..2^32-1 to itself).
pub fn may_open_backing_files() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
        return false;
    }
    in_initial_user_ns()
}

/// Is this process in the initial user namespace (its uid_map maps all of
/// 0..2^32-1 to itself)? Inside a user namespace (rootless podman runs its
/// mount program there as uid 0), uid 0 is not the machine's root: it may
/// not set `trusted.*` xattrs or write /var/lib. Read once.
pub fn in_initial_user_ns() -> bool {
    static INITIAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
    })
}

/// Is this the machine's root: euid 0 in the initial user namespace?
pub fn host_root() -> bool {
    euid() == 0 && in_initial_user_ns()
}

/// Returns the free memory of every malloc arena to the kernel
/// (`malloc_trim(0)`, glibc); elsewhere nothing.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The real uid of this process.
pub fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The real gid of this process.
pub fn gid() -> u32 {
    // SAFETY: getgid cannot fail.
    unsafe { libc::getgid() }
}

/// Sets this thread's filesystem uid; returns the previous one.
pub fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid only changes this thread's filesystem uid.
    unsafe { libc::setfsuid(uid as libc::uid_t) as u32 }
}

/// `flock(2)` exclusive, waiting until the lock is ours.
pub fn lock_exclusive(f: &std::fs::File) -> io::Result<()> {
    // SAFETY: flock on a descriptor `f` keeps open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A set of signals blocked in this thread (and the threads it starts).
pub struct BlockedSignals(libc::sigset_t);

/// Blocks `signals` in this thread; threads created afterwards inherit
/// the mask, so one thread can take them with [`BlockedSignals::wait`].
pub fn block_signals(signals: &[libc::c_int]) -> BlockedSignals {
    // SAFETY: plain sigset manipulation on a local set; pthread_sigmask
    // only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        BlockedSignals(set)
    }
}

impl BlockedSignals {
    /// Waits for one of the signals (every thread has them blocked) and
    /// returns its number.
    pub fn wait(&self) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a valid set, writing into a local.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

/// Points standard input and output at `null` and standard error at `log`.
pub fn redirect_stdio(null: &std::fs::File, log: &std::fs::File) {
    // SAFETY: dup2 onto the standard descriptors; both sources are open.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
}

/// Makes the child of `cmd` start a new session (setsid), detached from
/// the caller's terminal and process group.
pub fn new_session_on_exec(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe, the only call between fork and
    // exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Keeps descriptor `fd` open across the exec of `cmd`'s child (std opens
/// everything close-on-exec).
pub fn keep_fd_on_exec(cmd: &mut Command, fd: RawFd) {
    // SAFETY: only fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Receives one descriptor passed with SCM_RIGHTS over `sock` (as
/// `fusermount3` hands back `/dev/fuse`).
pub fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
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
    Err(io::Error::other("no descriptor received"))
}

/// `umount2(path, 0)`.
pub fn umount(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `umount2(path, MNT_DETACH)`: a lazy unmount, which also takes away a
/// mount whose daemon is gone.
pub fn umount_detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The filesystem type (`f_type`) of the filesystem `path` is on.
pub fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statfs writes into a zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.f_type as i64)
    }
}

/// Is group `gid` among the supplementary groups of process `pid`
/// (`Groups:` of /proc/PID/status)? False when that cannot be read.
pub fn process_in_group(pid: u32, gid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
    status.is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
    })
}

/// The number of threads of this process (`/proc/self/status`), if known.
pub fn thread_count() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Which side of a [`fork_new_session`] this is.
pub enum Forked {
    /// The caller, with the child's pid.
    Parent(u32),
    /// The child, leader of a new session.
    Child,
}

/// `fork(2)`; the child starts a new session (setsid), detached from the
/// caller's terminal and process group. Only for a process with one
/// thread ([`thread_count`]): the child gets a copy of this thread alone,
/// and a lock another thread held would stay locked in it.
pub fn fork_new_session() -> io::Result<Forked> {
    if thread_count() != Some(1) {
        return Err(io::Error::other("fork from a process with several threads"));
    }
    // SAFETY: the process has a single thread (checked above), so the
    // child's copy of the heap and of every lock is consistent; it then
    // runs ordinary code as any process does.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: setsid takes no arguments; a fresh child is never a
            // process group leader, so it cannot fail.
            unsafe { libc::setsid() };
            Ok(Forked::Child)
        }
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Points standard input, output and error at `stdin`, `stdout` and
/// `stderr`.
pub fn set_stdio(stdin: &impl AsRawFd, stdout: &impl AsRawFd, stderr: &impl AsRawFd) {
    // SAFETY: dup2 onto the standard descriptors; the sources are open.
    unsafe {
        libc::dup2(stdin.as_raw_fd(), 0);
        libc::dup2(stdout.as_raw_fd(), 1);
        libc::dup2(stderr.as_raw_fd(), 2);
    }
}

/// Waits for child `pid` to end and describes how it did ("exit status
/// 1", "signal 9").
pub fn wait_child(pid: u32) -> String {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid on our own child, writing into a local.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if r < 0 {
        return format!("wait: {}", io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) {
        format!("exit status: {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal: {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and belong to no one else.
    Ok(unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}
