//! Paths of any length. One system call takes at most `PATH_MAX` bytes
//! of path (4096, the NUL included), and a read-write branch mirrors the
//! mount's tree under its own root: a path just under PATH_MAX inside the
//! mount is past it in the branch, and a process that changes into a deep
//! directory of the mount can go deeper still. So every path call of
//! `sys` names its object through `At`: a path that fits is passed whole
//! with `AT_FDCWD` (the call `lstat` or `mknod` makes: not one system call
//! more), a longer one as its parent directory, opened chunk by chunk, and
//! its last component, for the `*at` form of the call.
//!
//! The chunks (each shorter than PATH_MAX, split between components) are
//! opened with `openat2(O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS)`: no
//! symlink is followed anywhere on the way (ELOOP), so a long path is what
//! its components say (the roots callers join paths to are canonical:
//! `Upper::open`, the mount's lowerdirs). Where `openat2` is missing
//! (Linux < 5.6, or a seccomp filter that answers ENOSYS), each component
//! is opened with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` (a symlink
//! then gives ENOTDIR). Xattrs of a long path go through the `*xattrat`
//! calls of Linux 6.13, else through `/proc/self/fd/N` of the object
//! opened `O_PATH | O_NOFOLLOW` (which names the object itself, a symlink
//! included).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use super::{check, errno_of, last_errno, SysResult};

/// The most bytes of path one system call takes, its NUL included.
pub const PATH_MAX: usize = libc::PATH_MAX as usize;

/// How each directory on the way to a long path's object is opened.
const DIR_FLAGS: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Set once `openat2` answered ENOSYS: components are opened one by one.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// An object as the `*at` calls name it: a directory and a name in it.
pub(super) struct At {
    /// `None`: the current directory (`AT_FDCWD`), and `name` is the
    /// whole path.
    dir: Option<OwnedFd>,
    name: CString,
}

impl At {
    /// `p` as a directory and a name: the whole path if it fits in one
    /// call (no system call made), else its parent, opened stepwise, and
    /// its last component.
    pub(super) fn new(p: &Path) -> SysResult<At> {
        At::with(p, !NO_OPENAT2.load(Ordering::Relaxed))
    }

    /// `new`, the parent of a long path opened with `openat2` chunk by
    /// chunk if `openat2`, else component by component.
    fn with(p: &Path, openat2: bool) -> SysResult<At> {
        let b = p.as_os_str().as_bytes();
        if b.len() < PATH_MAX {
            return Ok(At {
                dir: None,
                name: cstring(b)?,
            });
        }
        let (parent, name) = split_last(b)?;
        Ok(At {
            dir: Some(open_dirs(parent, openat2)?),
            name: cstring(name)?,
        })
    }

    /// The directory descriptor for the `*at` call.
    pub(super) fn fd(&self) -> RawFd {
        self.dir.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd)
    }

    /// The name for the `*at` call.
    pub(super) fn name(&self) -> &CStr {
        &self.name
    }

    /// Was the path too long for one call (`fd` is its parent)?
    pub(super) fn is_long(&self) -> bool {
        self.dir.is_some()
    }

    /// The whole path of a short one (`is_long` false).
    pub(super) fn into_name(self) -> CString {
        self.name
    }
}

fn cstring(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

/// A long path's parent and last component (trailing slashes dropped).
fn split_last(b: &[u8]) -> SysResult<(&[u8], &[u8])> {
    let end = b.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
    let b = &b[..end];
    match b.iter().rposition(|&c| c == b'/') {
        Some(0) => Ok((&b[..1], &b[1..])),
        Some(i) => Ok((&b[..i], &b[i + 1..])),
        // One component longer than a path may be.
        None => Err(libc::ENAMETOOLONG),
    }
}

/// Opens directory `path` (of any length) `O_PATH`, in chunks shorter
/// than PATH_MAX, following no symlink.
fn open_dirs(path: &[u8], openat2: bool) -> SysResult<OwnedFd> {
    let mut dir: Option<OwnedFd> = None;
    let mut rest = path;
    loop {
        let len = if rest.len() < PATH_MAX {
            rest.len()
        } else {
            match rest[..PATH_MAX].iter().rposition(|&c| c == b'/') {
                Some(i) if i > 0 => i,
                _ => return Err(libc::ENAMETOOLONG),
            }
        };
        let (chunk, tail) = rest.split_at(len);
        let base = dir.as_ref().map_or(nix::fcntl::AT_FDCWD, |d| d.as_fd());
        let next = open_chunk(base, chunk, openat2)?;
        dir = Some(next);
        let skip = tail.iter().take_while(|&&c| c == b'/').count();
        rest = &tail[skip..];
        if rest.is_empty() {
            return Ok(dir.expect("a chunk was opened"));
        }
    }
}

/// Opens directory `chunk` (shorter than PATH_MAX) under `base` without
/// following a symlink: in one `openat2` (`openat2` true and the kernel
/// has it), else one component at a time.
fn open_chunk(base: BorrowedFd<'_>, chunk: &[u8], openat2: bool) -> SysResult<OwnedFd> {
    if openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(OFlag::from_bits_retain(DIR_FLAGS))
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(base, chunk, how) {
            Err(nix::errno::Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            r => return r.map_err(|e| e as i32),
        }
    }
    let mut dir = match chunk.first() {
        Some(b'/') => Some(open_dir_at(base, c"/")?),
        _ => None,
    };
    for c in chunk.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
        let at = dir.as_ref().map_or(base, |d| d.as_fd());
        dir = Some(open_dir_at(at, &cstring(c)?)?);
    }
    dir.ok_or(libc::ENOENT)
}

/// `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` of one name.
fn open_dir_at(base: BorrowedFd<'_>, name: &CStr) -> SysResult<OwnedFd> {
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    let fd = unsafe { libc::openat(base.as_raw_fd(), name.as_ptr(), DIR_FLAGS) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(2)` of `name` in `dir`, not following a final symlink.
pub(super) fn stat_at(dir: RawFd, name: &CStr) -> SysResult<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid descriptor (or AT_FDCWD), a C string and a stat
    // buffer to fill.
    check(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the buffer.
    Ok(unsafe { st.assume_init() })
}

/// `mkdir(2)` of a path of any length.
pub fn mkdir(p: &Path, mode: u32) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe { libc::mkdirat(a.fd(), a.name().as_ptr(), mode as libc::mode_t) })
}

/// `unlink(2)` of a path of any length.
pub fn unlink(p: &Path) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe { libc::unlinkat(a.fd(), a.name().as_ptr(), 0) })
}

/// `rmdir(2)` of a path of any length.
pub fn rmdir(p: &Path) -> SysResult<()> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    check(unsafe { libc::unlinkat(a.fd(), a.name().as_ptr(), libc::AT_REMOVEDIR) })
}

/// `link(2)` (a final symlink of `from` is linked, not followed), paths
/// of any length.
pub fn link(from: &Path, to: &Path) -> SysResult<()> {
    let (a, b) = (At::new(from)?, At::new(to)?);
    // SAFETY: valid descriptors (or AT_FDCWD) and C strings.
    check(unsafe { libc::linkat(a.fd(), a.name().as_ptr(), b.fd(), b.name().as_ptr(), 0) })
}

/// `symlink(2)`: a symlink at `p` (of any length) pointing at `target`.
pub fn symlink(target: &[u8], p: &Path) -> SysResult<()> {
    let t = cstring(target)?;
    let a = At::new(p)?;
    // SAFETY: C strings and a valid descriptor (or AT_FDCWD).
    check(unsafe { libc::symlinkat(t.as_ptr(), a.fd(), a.name().as_ptr()) })
}

/// `open(2)` of a path of any length with `flags` (`O_CLOEXEC` added)
/// and, for a new file, `mode`.
pub fn open(p: &Path, flags: i32, mode: u32) -> SysResult<File> {
    let a = At::new(p)?;
    // SAFETY: a valid descriptor (or AT_FDCWD) and a C string.
    let fd = unsafe {
        libc::openat(
            a.fd(),
            a.name().as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `readlink(2)` of a path of any length: the whole target.
pub fn readlink(p: &Path) -> SysResult<Vec<u8>> {
    let a = At::new(p)?;
    let mut buf = vec![0u8; PATH_MAX];
    loop {
        // SAFETY: a valid descriptor (or AT_FDCWD), a C string and a
        // buffer of `buf.len()` writable bytes.
        let n = unsafe {
            libc::readlinkat(
                a.fd(),
                a.name().as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(last_errno());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        // Perhaps cut short: read again with more room.
        buf = vec![0u8; buf.len() * 2];
    }
}

/// One name of a directory listing ([`read_dir`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirent {
    /// The name, as stored.
    pub name: Vec<u8>,
    /// Its type: the `S_IFMT` bits of its mode.
    pub kind: u32,
}

/// The names in directory `p` (of any length), without `.` and `..`, in
/// the order the filesystem gives them, with their types (an `lstat` of
/// a name only where the filesystem tells no type).
pub fn read_dir(p: &Path) -> SysResult<Vec<Dirent>> {
    list(p, true)
}

/// The names in directory `p` (of any length), without `.` and `..`:
/// [`read_dir`] without the types (`kind` 0).
pub fn read_dir_names(p: &Path) -> SysResult<Vec<Dirent>> {
    list(p, false)
}

fn list(p: &Path, types: bool) -> SysResult<Vec<Dirent>> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    if p.as_os_str().len() < PATH_MAX {
        // The path that fits: std's opendir and getdents, as always.
        for e in std::fs::read_dir(p).map_err(|e| errno_of(&e))? {
            let e = e.map_err(|e| errno_of(&e))?;
            let kind = if types {
                let t = e.file_type().map_err(|e| errno_of(&e))?;
                [
                    (t.is_dir(), libc::S_IFDIR),
                    (t.is_file(), libc::S_IFREG),
                    (t.is_symlink(), libc::S_IFLNK),
                    (t.is_char_device(), libc::S_IFCHR),
                    (t.is_block_device(), libc::S_IFBLK),
                    (t.is_fifo(), libc::S_IFIFO),
                    (t.is_socket(), libc::S_IFSOCK),
                ]
                .into_iter()
                .find_map(|(is, k)| is.then_some(k))
                .unwrap_or(0)
            } else {
                0
            };
            out.push(Dirent {
                name: e.file_name().into_vec(),
                kind,
            });
        }
        return Ok(out);
    }
    let f = open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut dir = nix::dir::Dir::from_fd(f.into()).map_err(|e| e as i32)?;
    let fd = dir.as_raw_fd();
    for e in dir.iter() {
        let e = e.map_err(|e| e as i32)?;
        let name = e.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        use nix::dir::Type;
        let kind = match (types, e.file_type()) {
            (false, _) => 0,
            (true, Some(t)) => match t {
                Type::Fifo => libc::S_IFIFO,
                Type::CharacterDevice => libc::S_IFCHR,
                Type::Directory => libc::S_IFDIR,
                Type::BlockDevice => libc::S_IFBLK,
                Type::File => libc::S_IFREG,
                Type::Symlink => libc::S_IFLNK,
                Type::Socket => libc::S_IFSOCK,
            },
            (true, None) => stat_at(fd, name)?.st_mode & libc::S_IFMT,
        };
        out.push(Dirent {
            name: name.to_bytes().to_vec(),
            kind,
        });
    }
    Ok(out)
}

/// The numbers of `setxattrat`, `getxattrat`, `listxattrat` and
/// `removexattrat` (Linux 6.13; one number on every architecture of the
/// common table), where known.
#[cfg(any(
    all(target_arch = "x86_64", target_pointer_width = "64"),
    target_arch = "aarch64"
))]
const XATTRAT: Option<[libc::c_long; 4]> = Some([463, 464, 465, 466]);
#[cfg(not(any(
    all(target_arch = "x86_64", target_pointer_width = "64"),
    target_arch = "aarch64"
)))]
const XATTRAT: Option<[libc::c_long; 4]> = None;

/// Set once a `*xattrat` call answered ENOSYS: `/proc/self/fd` from then on.
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// The kernel's `struct xattr_args` (the value of `setxattrat` and
/// `getxattrat`).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// How an xattr call on a long path is made (tests try both).
#[derive(Clone, Copy)]
pub(super) enum XattrVia {
    /// The `*xattrat` call where the kernel has it, else `/proc/self/fd`.
    Best,
    /// `/proc/self/fd/N` of the object opened `O_PATH`.
    #[cfg_attr(not(test), allow(dead_code))]
    Proc,
}

/// An xattr call on long path `a`: `at` makes the `*xattrat` call (given
/// the numbers of [`XATTRAT`]); without it, `proc` makes the path call on
/// `/proc/self/fd/N` of the object opened `O_PATH | O_NOFOLLOW`.
fn xattr_call(
    a: &At,
    via: XattrVia,
    at: impl FnOnce([libc::c_long; 4]) -> libc::c_long,
    proc: impl FnOnce(*const libc::c_char) -> isize,
) -> SysResult<usize> {
    if let (XattrVia::Best, Some(nr), false) = (via, XATTRAT, NO_XATTRAT.load(Ordering::Relaxed)) {
        let r = at(nr);
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = last_errno();
        if e != libc::ENOSYS {
            return Err(e);
        }
        NO_XATTRAT.store(true, Ordering::Relaxed);
    }
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid descriptor and a C string.
    let fd = unsafe { libc::openat(a.fd(), a.name().as_ptr(), flags) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    let r = proc(p.as_ptr());
    // The errno before the descriptor is closed.
    let r = if r >= 0 {
        Ok(r as usize)
    } else {
        Err(last_errno())
    };
    drop(fd);
    r
}

/// `lgetxattr` of long path `a` into `len` bytes at `buf` (`len` 0: a
/// size probe).
pub(super) fn getxattr_long(
    a: &At,
    name: &CStr,
    buf: *mut libc::c_void,
    len: usize,
    via: XattrVia,
) -> SysResult<usize> {
    xattr_call(
        a,
        via,
        |nr| {
            let args = XattrArgs {
                value: buf as u64,
                size: len.min(u32::MAX as usize) as u32,
                flags: 0,
            };
            // SAFETY: a valid descriptor, C strings, and the kernel's
            // argument struct pointing at `len` writable bytes.
            unsafe {
                libc::syscall(
                    nr[1],
                    a.fd(),
                    a.name().as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    name.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        },
        // SAFETY: C strings and `len` writable bytes at `buf`.
        |p| unsafe { libc::getxattr(p, name.as_ptr(), buf, len) },
    )
}

/// `lsetxattr` of long path `a`.
pub(super) fn setxattr_long(
    a: &At,
    name: &CStr,
    value: &[u8],
    flags: i32,
    via: XattrVia,
) -> SysResult<()> {
    xattr_call(
        a,
        via,
        |nr| {
            let args = XattrArgs {
                value: value.as_ptr() as u64,
                size: value.len().min(u32::MAX as usize) as u32,
                flags: flags as u32,
            };
            // SAFETY: a valid descriptor, C strings, and the kernel's
            // argument struct pointing at the value.
            unsafe {
                libc::syscall(
                    nr[0],
                    a.fd(),
                    a.name().as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    name.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        },
        // SAFETY: C strings and the value's bytes.
        |p| unsafe {
            libc::setxattr(p, name.as_ptr(), value.as_ptr().cast(), value.len(), flags) as isize
        },
    )
    .map(drop)
}

/// `llistxattr` of long path `a` into `len` bytes at `buf` (`len` 0: a
/// size probe).
pub(super) fn listxattr_long(
    a: &At,
    buf: *mut libc::c_char,
    len: usize,
    via: XattrVia,
) -> SysResult<usize> {
    xattr_call(
        a,
        via,
        // SAFETY: a valid descriptor, a C string, `len` writable bytes.
        |nr| unsafe {
            libc::syscall(
                nr[2],
                a.fd(),
                a.name().as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                buf,
                len,
            )
        },
        // SAFETY: a C string and `len` writable bytes at `buf`.
        |p| unsafe { libc::listxattr(p, buf, len) },
    )
}

/// `lremovexattr` of long path `a`.
pub(super) fn removexattr_long(a: &At, name: &CStr, via: XattrVia) -> SysResult<()> {
    xattr_call(
        a,
        via,
        // SAFETY: a valid descriptor and C strings.
        |nr| unsafe {
            libc::syscall(
                nr[3],
                a.fd(),
                a.name().as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                name.as_ptr(),
            )
        },
        // SAFETY: C strings.
        |p| unsafe { libc::removexattr(p, name.as_ptr()) as isize },
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{self, TimeSpec};

    fn st_ino(fd: RawFd) -> (u64, u64) {
        let st = stat_at(fd, c"").map(|_| ()).err();
        assert_eq!(st, Some(libc::ENOENT), "an empty name is no object");
        let mut s = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid descriptor and a stat buffer to fill.
        assert_eq!(unsafe { libc::fstat(fd, s.as_mut_ptr()) }, 0);
        // SAFETY: fstat succeeded.
        let s = unsafe { s.assume_init() };
        (s.st_dev, s.st_ino)
    }

    /// A chain of directories twice as deep as PATH_MAX, made, used and
    /// removed through the helpers; both ways of opening a long path's
    /// parent (openat2 by chunks, openat by components) find the same
    /// directory, and neither follows a symlink on the way.
    #[test]
    fn a_chain_past_path_max_is_made_stated_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let comp = "c".repeat(200);
        let mut dirs = Vec::new();
        let mut p = t.path().to_path_buf();
        while p.as_os_str().len() < 2 * PATH_MAX + 300 {
            p.push(&comp);
            mkdir(&p, 0o755).unwrap();
            dirs.push(p.clone());
        }
        // The kernel takes no such path whole.
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string and a stat buffer to fill.
        let r = unsafe { libc::lstat(c.as_ptr(), &mut std::mem::zeroed()) };
        assert_eq!((r, last_errno()), (-1, libc::ENAMETOOLONG));
        let st = sys::lstat(&p).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
        let f = p.join("f");
        let by_chunks = At::with(&f, true).unwrap();
        let by_components = At::with(&f, false).unwrap();
        assert!(by_chunks.is_long() && by_components.is_long());
        assert_eq!(st_ino(by_chunks.fd()), (st.st_dev, st.st_ino));
        assert_eq!(st_ino(by_components.fd()), (st.st_dev, st.st_ino));
        assert_eq!(by_chunks.name(), c"f");

        // Objects at the bottom.
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
        std::io::Write::write_all(&mut open(&f, flags, 0o600).unwrap(), b"data").unwrap();
        assert_eq!(open(&f, flags, 0o600).err(), Some(libc::EEXIST));
        let sf = sys::lstat(&f).unwrap();
        assert_eq!((sf.st_mode & 0o7777, sf.st_size), (0o600, 4));
        sys::mknod(&p.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
        symlink(b"f", &p.join("s")).unwrap();
        assert_eq!(readlink(&p.join("s")).unwrap(), b"f");
        link(&f, &p.join("h")).unwrap();
        assert_eq!(sys::lstat(&f).unwrap().st_nlink, 2);
        sys::rename2(&p.join("h"), &p.join("g"), libc::RENAME_NOREPLACE).unwrap();
        assert_eq!(sys::lstat(&p.join("h")).err(), Some(libc::ENOENT));
        sys::chmod(&p.join("g"), 0o644).unwrap();
        sys::lchown(&p.join("s"), sys::euid(), u32::MAX).unwrap();
        sys::utimens(&f, TimeSpec::At(1, 2), TimeSpec::At(3, 4)).unwrap();
        let sf = sys::lstat(&f).unwrap();
        assert_eq!(
            (sf.st_mode & 0o7777, sf.st_mtime, sf.st_mtime_nsec),
            (0o644, 3, 4)
        );
        let mut names: Vec<(Vec<u8>, u32)> = read_dir(&p)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                (b"f".to_vec(), libc::S_IFREG),
                (b"fifo".to_vec(), libc::S_IFIFO),
                (b"g".to_vec(), libc::S_IFREG),
                (b"s".to_vec(), libc::S_IFLNK)
            ]
        );
        assert_eq!(read_dir_names(&p).unwrap().len(), 4);
        let mut d = std::fs::read_dir(t.path()).unwrap();
        assert_eq!(d.next().unwrap().unwrap().file_name(), comp.as_str());

        // Xattrs, both ways (where the filesystem has user xattrs).
        let a = At::new(&f).unwrap();
        let n = c"user.k";
        match sys::lsetxattr(&f, b"user.k", b"v1", 0) {
            Err(libc::EOPNOTSUPP) => {}
            r => {
                r.unwrap();
                assert_eq!(sys::lgetxattr(&f, b"user.k").unwrap(), b"v1");
                assert_eq!(sys::llistxattr(&f).unwrap(), b"user.k\0");
                let mut buf = [0u8; 16];
                let got = getxattr_long(&a, n, buf.as_mut_ptr().cast(), 16, XattrVia::Proc);
                assert_eq!(got.map(|n| buf[..n].to_vec()), Ok(b"v1".to_vec()));
                setxattr_long(&a, n, b"v2", libc::XATTR_REPLACE, XattrVia::Proc).unwrap();
                assert_eq!(sys::lgetxattr(&f, b"user.k").unwrap(), b"v2");
                let got = listxattr_long(&a, buf.as_mut_ptr().cast(), 16, XattrVia::Proc);
                assert_eq!(got.map(|n| buf[..n].to_vec()), Ok(b"user.k\0".to_vec()));
                removexattr_long(&a, n, XattrVia::Proc).unwrap();
                assert_eq!(sys::lgetxattr(&f, b"user.k"), Err(libc::ENODATA));
                assert_eq!(removexattr_long(&a, n, XattrVia::Proc), Err(libc::ENODATA));
                sys::lsetxattr(&f, b"user.k", b"v3", 0).unwrap();
                sys::lremovexattr(&f, b"user.k").unwrap();
                assert_eq!(sys::llistxattr(&f).unwrap(), b"");
                // The symlink itself, not its target, through /proc.
                let s = At::new(&p.join("s")).unwrap();
                let r = setxattr_long(&s, n, b"v", 0, XattrVia::Proc);
                assert_eq!(r, Err(libc::EPERM), "user xattrs are refused on symlinks");
                assert_eq!(
                    sys::lsetxattr(&p.join("s"), b"user.k", b"v", 0),
                    Err(libc::EPERM)
                );
            }
        }

        // A symlink on the way is not followed, however it is opened.
        let k = dirs.len() / 2;
        let moved = t.path().join("moved");
        sys::rename2(&dirs[k], &moved, 0).unwrap();
        symlink(moved.as_os_str().as_bytes(), &dirs[k]).unwrap();
        assert_eq!(sys::lstat(&f).err(), Some(libc::ELOOP));
        assert_eq!(At::with(&f, false).err(), Some(libc::ENOTDIR));
        unlink(&dirs[k]).unwrap();
        sys::rename2(&moved, &dirs[k], 0).unwrap();
        assert!(sys::exists(&f));

        // Removed from the bottom up.
        for n in ["f", "fifo", "g", "s"] {
            unlink(&p.join(n)).unwrap();
        }
        assert_eq!(unlink(&f), Err(libc::ENOENT));
        assert_eq!(rmdir(&dirs[0]), Err(libc::ENOTEMPTY));
        for d in dirs.iter().rev() {
            rmdir(d).unwrap();
        }
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    /// A long path splits into its parent and last component; a path
    /// that fits is passed whole without a system call.
    #[test]
    fn long_paths_split_at_their_last_component() {
        assert_eq!(split_last(b"/a/b/c"), Ok((&b"/a/b"[..], &b"c"[..])));
        assert_eq!(split_last(b"/a/b//"), Ok((&b"/a"[..], &b"b"[..])));
        assert_eq!(split_last(b"/c"), Ok((&b"/"[..], &b"c"[..])));
        assert_eq!(split_last(b"abc"), Err(libc::ENAMETOOLONG));
        let short = At::new(Path::new("/no/such/dir/x")).unwrap();
        assert!(!short.is_long());
        assert_eq!(short.fd(), libc::AT_FDCWD);
        assert_eq!(short.into_name().as_bytes(), b"/no/such/dir/x");
        let one = format!("/{}", "x".repeat(PATH_MAX));
        assert_eq!(sys::lstat(Path::new(&one)).err(), Some(libc::ENAMETOOLONG));
        let none = "x".repeat(PATH_MAX);
        assert_eq!(At::new(Path::new(&none)).err(), Some(libc::ENAMETOOLONG));
        let missing = format!("/nonexistent-{}/x", "y/".repeat(PATH_MAX / 2));
        assert_eq!(At::new(Path::new(&missing)).err(), Some(libc::ENOENT));
    }
}
