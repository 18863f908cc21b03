//! The system calls `std` does not offer (or offers only following
//! symlinks), as small safe wrappers. Everything `unsafe` in layerfs
//! lives in this module (`tests/tidy.rs` checks it): the file calls of the
//! read-write branch (here, returning the raw errno), for paths of any
//! length ([`at`]: past PATH_MAX the parent is opened stepwise and the
//! `*at` call made on the last component), processes, signals and mounts
//! ([`process`]), and the read-only memory maps ([`map_readonly`], [`map_range_readonly`]).

pub mod at;
pub mod heap;
pub mod mmap;
pub mod process;

pub use at::{
    link, mkdir, open, read_dir, read_dir_names, readlink, rmdir, symlink, unlink, Dirent,
};
pub use heap::trim_heap;
pub use mmap::{map_range_readonly, map_readonly};
pub use process::*;

use at::{At, XattrVia};

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Result of a system call: the errno on failure.
pub type SysResult<T> = Result<T, i32>;

/// Is SELinux active on this kernel? Its filesystem (selinuxfs) is
/// registered only then (not when built in but disabled at boot), as
/// libselinux's `is_selinux_enabled` checks first.
pub fn selinux_active() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("selinuxfs"))
        })
        .unwrap_or(false)
}

/// The errno of an `io::Error` (EIO if it has none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cpath(p: &Path) -> SysResult<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

fn check(r: libc::c_int) -> SysResult<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `lstat(2)` of a path of any length.
pub fn lstat(p: &Path) -> SysResult<libc::stat> {
    let a = At::new(p)?;
    at::stat_at(a.fd(), a.name())
}

/// Does anything (of any type, without following a symlink) exist at `p`?
pub fn exists(p: &Path) -> bool {
    lstat(p).is_ok()
}

/// `mknod(2)`: devices, fifos and regular files (a path of any length).
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe {
        libc::mknodat(
            a.fd(),
            a.name().as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
}

/// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`),
/// paths of any length.
pub fn rename2(from: &Path, to: &Path, flags: u32) -> SysResult<()> {
    let (a, b) = (At::new(from)?, At::new(to)?);
    // SAFETY: valid descriptors (or AT_FDCWD) and C strings.
    check(unsafe {
        libc::renameat2(
            a.fd(),
            a.name().as_ptr(),
            b.fd(),
            b.name().as_ptr(),
            flags as libc::c_uint,
        )
    })
}

/// `lchown(2)` of a path of any length; `u32::MAX` leaves that id
/// unchanged.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe {
        libc::fchownat(
            a.fd(),
            a.name().as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `chmod(2)` of a path of any length (never called on symlinks, whose
/// mode Linux ignores: a final symlink is followed, as chmod does).
pub fn chmod(p: &Path, mode: u32) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe { libc::fchmodat(a.fd(), a.name().as_ptr(), mode as libc::mode_t, 0) })
}

/// A time for [`utimens`]: seconds and nanoseconds, or "now", or "leave".
#[derive(Clone, Copy, Debug)]
pub enum TimeSpec {
    /// This time: seconds since the Unix epoch and nanoseconds.
    At(i64, u32),
    /// The current time (`UTIME_NOW`).
    Now,
    /// Leave this time unchanged (`UTIME_OMIT`).
    Omit,
}

impl TimeSpec {
    fn raw(self) -> libc::timespec {
        match self {
            TimeSpec::At(s, ns) => libc::timespec {
                tv_sec: s as libc::time_t,
                tv_nsec: ns as libc::c_long,
            },
            TimeSpec::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            TimeSpec::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        }
    }
}

/// `utimensat(2)` of a path of any length, without following a final
/// symlink.
pub fn utimens(p: &Path, atime: TimeSpec, mtime: TimeSpec) -> SysResult<()> {
    let a = At::new(p)?;
    let ts = [atime.raw(), mtime.raw()];
    // SAFETY: a valid descriptor (or AT_FDCWD), a C string and a
    // two-element timespec array.
    check(unsafe {
        libc::utimensat(
            a.fd(),
            a.name().as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `fchown(2)`; `u32::MAX` leaves that id unchanged.
pub fn fchown(f: &std::fs::File, uid: u32, gid: u32) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })
}

/// `fchmod(2)`.
pub fn fchmod(f: &std::fs::File, mode: u32) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })
}

/// `futimens(3)`.
pub fn futimens(f: &std::fs::File, atime: TimeSpec, mtime: TimeSpec) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    let ts = [atime.raw(), mtime.raw()];
    // SAFETY: a valid descriptor and a two-element timespec array.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

/// What a metadata call acts on: a path (of any length), never following
/// a final symlink (the `l*` calls), or an open file (the `f*` calls:
/// what is left of a file that was unlinked while open).
#[derive(Clone, Copy)]
pub enum Obj<'a> {
    /// A path; a final symlink is not followed.
    Path(&'a Path),
    /// An open file.
    File(&'a std::fs::File),
}

/// A C path for `Obj::Path` that fits in one call, its parent and name
/// for a longer one, the descriptor for `Obj::File`.
enum RawObj {
    Path(CString),
    Long(At),
    Fd(libc::c_int),
}

impl Obj<'_> {
    fn raw(self) -> SysResult<RawObj> {
        use std::os::fd::AsRawFd;
        Ok(match self {
            Obj::Path(p) => match At::new(p)? {
                a if a.is_long() => RawObj::Long(a),
                a => RawObj::Path(a.into_name()),
            },
            Obj::File(f) => RawObj::Fd(f.as_raw_fd()),
        })
    }
}

/// The size a `*xattr` call returned, or its errno.
fn sized(r: isize) -> SysResult<usize> {
    if r >= 0 {
        Ok(r as usize)
    } else {
        Err(last_errno())
    }
}

/// The whole of what `call` (an xattr value or list read into a buffer
/// of the given length, 0 for a size probe) reads: one call for the usual
/// short one; one too long for the first buffer (ERANGE) is probed for
/// its size and read again (a racing grow gives ERANGE again: retry).
fn read_whole(call: impl Fn(*mut u8, usize) -> SysResult<usize>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(buf.as_mut_ptr(), buf.len()) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(libc::ERANGE) => {}
            Err(e) => return Err(e),
        }
        let len = call(std::ptr::null_mut(), 0)?;
        buf = vec![0u8; len + 1];
    }
}

/// `lstat(2)` or `fstat(2)`.
pub fn stat_obj(o: Obj) -> SysResult<libc::stat> {
    match o {
        Obj::Path(p) => lstat(p),
        Obj::File(f) => {
            use std::os::fd::AsRawFd;
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: a valid descriptor and a stat buffer to fill.
            check(unsafe { libc::fstat(f.as_raw_fd(), st.as_mut_ptr()) })?;
            // SAFETY: fstat succeeded, so it filled the buffer.
            Ok(unsafe { st.assume_init() })
        }
    }
}

/// `lchown(2)` or `fchown(2)`.
pub fn chown_obj(o: Obj, uid: u32, gid: u32) -> SysResult<()> {
    match o {
        Obj::Path(p) => lchown(p, uid, gid),
        Obj::File(f) => fchown(f, uid, gid),
    }
}

/// `chmod(2)` or `fchmod(2)`.
pub fn chmod_obj(o: Obj, mode: u32) -> SysResult<()> {
    match o {
        Obj::Path(p) => chmod(p, mode),
        Obj::File(f) => fchmod(f, mode),
    }
}

/// `lsetxattr(2)` or `fsetxattr(2)`.
pub fn setxattr_obj(o: Obj, name: &[u8], value: &[u8], flags: i32) -> SysResult<()> {
    let n = CString::new(name).map_err(|_| libc::EINVAL)?;
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: a valid C string or descriptor, a C name, a value pointer
    // and length from a slice.
    check(unsafe {
        match o.raw()? {
            RawObj::Path(c) => libc::lsetxattr(c.as_ptr(), n.as_ptr(), v, len, flags),
            RawObj::Long(a) => return at::setxattr_long(&a, &n, value, flags, XattrVia::Best),
            RawObj::Fd(fd) => libc::fsetxattr(fd, n.as_ptr(), v, len, flags),
        }
    })
}

/// `lsetxattr(2)`.
pub fn lsetxattr(p: &Path, name: &[u8], value: &[u8], flags: i32) -> SysResult<()> {
    setxattr_obj(Obj::Path(p), name, value, flags)
}

/// `lgetxattr(2)` or `fgetxattr(2)`: the whole value.
pub fn getxattr_obj(o: Obj, name: &[u8]) -> SysResult<Vec<u8>> {
    let raw = o.raw()?;
    let n = CString::new(name).map_err(|_| libc::EINVAL)?;
    read_whole(|buf, len| {
        let buf = buf.cast();
        // SAFETY: a valid C string or descriptor and name; `buf` points to
        // `len` writable bytes (or is null with `len` 0: a size probe).
        sized(unsafe {
            match &raw {
                RawObj::Path(c) => libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf, len),
                RawObj::Long(a) => return at::getxattr_long(a, &n, buf, len, XattrVia::Best),
                RawObj::Fd(fd) => libc::fgetxattr(*fd, n.as_ptr(), buf, len),
            }
        })
    })
}

/// `lgetxattr(2)`: the whole value.
pub fn lgetxattr(p: &Path, name: &[u8]) -> SysResult<Vec<u8>> {
    getxattr_obj(Obj::Path(p), name)
}

/// `llistxattr(2)`: the names, each followed by a NUL.
pub fn llistxattr(p: &Path) -> SysResult<Vec<u8>> {
    listxattr_obj(Obj::Path(p))
}

/// `llistxattr(2)` or `flistxattr(2)`: the names, each followed by a NUL.
pub fn listxattr_obj(o: Obj) -> SysResult<Vec<u8>> {
    let raw = o.raw()?;
    read_whole(|buf, len| {
        let buf = buf.cast();
        // SAFETY: a valid C string or descriptor; `buf` points to `len`
        // writable bytes (or is null with `len` 0: a size probe).
        sized(unsafe {
            match &raw {
                RawObj::Path(c) => libc::llistxattr(c.as_ptr(), buf, len),
                RawObj::Long(a) => return at::listxattr_long(a, buf, len, XattrVia::Best),
                RawObj::Fd(fd) => libc::flistxattr(*fd, buf, len),
            }
        })
    })
}

/// `lremovexattr(2)` or `fremovexattr(2)`.
pub fn removexattr_obj(o: Obj, name: &[u8]) -> SysResult<()> {
    let n = CString::new(name).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid C string or descriptor, and a C name.
    check(unsafe {
        match o.raw()? {
            RawObj::Path(c) => libc::lremovexattr(c.as_ptr(), n.as_ptr()),
            RawObj::Long(a) => return at::removexattr_long(&a, &n, XattrVia::Best),
            RawObj::Fd(fd) => libc::fremovexattr(fd, n.as_ptr()),
        }
    })
}

/// `lremovexattr(2)`.
pub fn lremovexattr(p: &Path, name: &[u8]) -> SysResult<()> {
    removexattr_obj(Obj::Path(p), name)
}

/// `fallocate(2)` on an open file.
pub fn fallocate(fd: &std::fs::File, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// Frees the whole filesystem blocks of `len` bytes at `off` in `f`
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the range reads as zeros and no
/// longer takes disk space. Only blocks lying wholly inside the range are
/// freed (the partial ones at its ends are left as they are), so bytes
/// outside the range never change.
pub fn punch_hole(f: &std::fs::File, off: u64, len: u64) -> SysResult<()> {
    const BLOCK: u64 = 4096;
    let start = off.div_ceil(BLOCK) * BLOCK;
    let end = (off.saturating_add(len) / BLOCK) * BLOCK;
    if end <= start {
        return Ok(());
    }
    fallocate(
        f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        start,
        end - start,
    )
}

/// `statvfs(3)` of the filesystem holding `p`.
pub fn statvfs(p: &Path) -> SysResult<libc::statvfs> {
    let c = cpath(p)?;
    // SAFETY: valid C string; zeroed struct we own.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(c.as_ptr(), &mut st))?;
        Ok(st)
    }
}

/// `flock(2)` exclusive, without waiting.
pub fn try_lock_exclusive(f: &std::fs::File) -> SysResult<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    check(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
}

/// Copies `len` bytes of `src` from offset `off` to the start of `dst`
/// with `copy_file_range(2)`, in chunks of 16 MiB; with `writeback`, each
/// chunk's writeback starts as soon as it is copied, so a sync afterwards
/// finds little left (README, benchmark section: a synced 1 GiB
/// copy-up). Returns how many bytes were copied before the kernel said
/// it cannot (the caller copies the rest itself).
pub fn copy_range(
    src: &std::fs::File,
    off: u64,
    dst: &std::fs::File,
    len: u64,
    writeback: bool,
) -> u64 {
    const CHUNK: u64 = 16 << 20;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        let got = copy_range_at(src, off + done, dst, done, n).unwrap_or(0);
        if writeback && got > 0 {
            start_writeback(dst, done, got);
        }
        done += got;
        if got < n {
            break;
        }
    }
    done
}

/// Copies `len` bytes of `src` at `off_in` to `dst` at `off_out` with
/// `copy_file_range(2)` (in the kernel: no copy through user space, a
/// reflink where the filesystem can); returns how many were copied before
/// the kernel said it cannot (EXDEV, ENOSYS, EINVAL, EOPNOTSUPP: the caller
/// copies the rest itself) or the source ended.
pub fn copy_range_at(
    src: &std::fs::File,
    off_in: u64,
    dst: &std::fs::File,
    off_out: u64,
    len: u64,
) -> SysResult<u64> {
    use std::os::fd::AsRawFd;
    let mut off_in = off_in as libc::loff_t;
    let mut off_out = off_out as libc::loff_t;
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: valid descriptors and offsets we own.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        match n {
            0 => break,
            n if n > 0 => done += n as u64,
            _ => {
                let e = last_errno();
                if e == libc::EINTR {
                    continue;
                }
                if done == 0
                    && !matches!(
                        e,
                        libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP
                    )
                {
                    return Err(e);
                }
                break;
            }
        }
    }
    Ok(done)
}

/// Tells the kernel `f` will be read sequentially (a larger readahead).
/// Advisory: errors are ignored.
pub fn advise_sequential(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; advice only.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Starts reading `len` bytes of `f` at `off` (`len` 0: to the end) into
/// the page cache without waiting (`POSIX_FADV_WILLNEED`). Advisory:
/// errors are ignored.
pub fn prefetch(f: &std::fs::File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; advice only.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            off as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
    };
}

/// Starts writeback of `len` bytes of `f` at `off` without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later fsync finds
/// most of the data already on its way. Advisory: errors are ignored.
pub fn start_writeback(f: &std::fs::File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Writes `data` to `path` atomically: a temporary file beside it, created
/// with `mode`, synced, then renamed over `path`.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values and name lists longer than the first buffer are read whole
    /// (probed, then read again); short and empty ones in one call.
    #[test]
    fn long_xattr_values_and_lists_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"").unwrap();
        match lsetxattr(&f, b"user.probe", b"v", 0) {
            Err(libc::EOPNOTSUPP) => return, // no user xattrs on this filesystem
            r => r.unwrap(),
        }
        assert_eq!(lgetxattr(&f, b"user.probe").unwrap(), b"v");
        assert_eq!(lgetxattr(&f, b"user.none"), Err(libc::ENODATA));
        let long: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        lsetxattr(&f, b"user.long", &long, 0).unwrap();
        assert_eq!(lgetxattr(&f, b"user.long").unwrap(), long);
        lremovexattr(&f, b"user.long").unwrap();
        let mut want = b"user.probe\0".to_vec();
        for i in 0..40 {
            let n = format!("user.name-of-some-length-{i:03}");
            lsetxattr(&f, n.as_bytes(), b"", 0).unwrap();
            want.extend_from_slice(n.as_bytes());
            want.push(0);
        }
        let got = llistxattr(&f).unwrap();
        assert!(got.len() > 1024, "{}", got.len());
        let names = |l: &[u8]| {
            let mut v: Vec<Vec<u8>> = l.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
            v.sort();
            v
        };
        assert_eq!(names(&got), names(&want));
        let empty = dir.path().join("e");
        std::fs::write(&empty, b"").unwrap();
        let listed = llistxattr(&empty).unwrap();
        assert!(!names(&listed).iter().any(|n| n.starts_with(b"user.")));
    }
}
