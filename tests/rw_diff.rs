//! Model-based differential test of the read-write branch: random sequences
//! of file system operations run in lock-step on several implementations of
//! "the image `fixtures/multi.docker.tar`, writable", which must all give the
//! same result for every operation (the same value, or the same errno) and
//! the same tree at the end:
//!
//! 1. **plain**: a plain directory holding the merged tree of the image,
//!    extracted by `tools/oracle_extract.py` (Python's tarfile applying
//!    Docker's layer rules; layerfs is not involved) and checked against
//!    `tools/oracle_merge.py --image` before use. It is the reference.
//! 2. **overlayfs** (root, and only if the kernel mounts it): kernel overlayfs
//!    over the image's layers, each extracted into a directory in overlayfs
//!    format (`.wh.X` -> char device 0:0, `.wh..wh..opq` ->
//!    `trusted.overlay.opaque=y`), fresh upper and work dirs, mounted with
//!    `redirect_dir=on` (else renaming a lower directory fails with EXDEV)
//!    and `index=on` (else copying up one name of a lower hard link breaks
//!    the link: a write through `a` would not show through `a-link`).
//! 3. **layerfs**: `layerfs mount IMAGE MNT --rw DIR`, included as soon as
//!    `layerfs mount --help` mentions `--rw` (and /dev/fuse exists; under
//!    `CI` a missing /dev/fuse fails, as in every mount test); and
//!    `layerfs mount-branches` over the layer directories with `-o
//!    passthrough=off`, where the kernel opens files itself (no OPEN
//!    requests: the other I/O path of a writable mount);
//! 4. **layerfs-upperdir** (root, with overlayfs): `layerfs mount-branches
//!    -o lowerdir=...,upperdir=U,workdir=W`, an overlay-format upper
//!    directory as podman's mount program gets (renamed lower directories
//!    get redirects there); at the end of each case kernel overlayfs
//!    (redirect_dir=on) mounts U over the same layers and must show the
//!    plain tree too.
//!
//! Every proptest case gets a fresh copy of the plain tree, a fresh overlay
//! upper dir and a fresh layerfs mount with an empty `--rw` dir; all mounts
//! are unmounted by guards, even when a case panics.
//!
//! What is compared after each operation (see [`apply`]): Ok or the raw
//! errno; file contents for reads; sorted names for directory listings; for
//! `lstat`: type, permission bits, uid, gid, size and nlink of
//! non-directories, symlink target, `user.*` xattrs, and the mtime of
//! non-directories unless it is "recent" (see below).
//!
//! What is compared at the end of a sequence: `oracle_merge.py --snapshot`
//! of each tree, with the comparator `oracle_merge.py --compare` that the
//! other mount tests use, against the plain tree. Ignored there, and why:
//! - directory mtimes (`mtime`, `mtime_nsec` of every directory): creating,
//!   removing or renaming an entry sets its parent's mtime to the current
//!   time, which differs between the implementations (they run one after
//!   the other), and overlayfs also sets it when it copies up or whites
//!   out; the root of the overlayfs mount is its upper dir, created now.
//!   The snapshot has no directory size or nlink to begin with (overlayfs
//!   reports nlink 1 for merged directories; st_size of a directory depends
//!   on the file system), and `lstat` results above leave them out too;
//! - the mtime of a non-directory when it is recent (at or after the start
//!   of the case, minus 2 s) in *both* trees: a write or truncate sets it to
//!   the current time. Old mtimes (from the image, or set with `utimensat`
//!   to a fixed time in the past) are compared, so a copy-up that loses the
//!   mtime, or an mtime set by `utimensat` and then lost, is still caught;
//! - never compared by the snapshot at all: st_dev and st_ino (they differ
//!   between the implementations by nature; st_ino only serves to group
//!   hard links, which is compared as `link_group`), atime, ctime.
//!
//! For layerfs, one more check at the end: its `--rw` dir, packed as a
//! layer tar (`oracle_extract.py --pack`, leaving out `.wh..wh.layerfs/`)
//! and put on top of the image's layers by `oracle_merge.py`, must give the
//! tree the mount shows (directory mtimes ignored, as above; nothing else):
//! the branch really is in AUFS layer-diff format. The fixed sequences check
//! the packer itself on the plain tree.
//!
//! A failing case is shrunk by proptest; the minimal sequence is printed as
//! a list of calls that can be pasted into `fixed_sequences` below. Knobs:
//! `LAYERFS_DIFF_CASES` (number of cases, default 200), `PROPTEST_RNG_SEED`
//! (reproduce a run), `PROPTEST_MAX_SHRINK_TIME` (ms, default here 180000).
//! Failure persistence is off (no regression file is written).
//!
//! Needs root (the extraction chowns, makes device nodes and sets
//! `trusted.*` xattrs); otherwise the test is skipped with a message. With
//! neither overlayfs nor layerfs available there is nothing to compare with
//! and the test is skipped with a message too.
//!
//! Long file: the differential harness (operations, the three oracles, the
//! comparator) and its two runs belong together; and each file of tests/ is
//! a test binary of its own, so a split would be one more binary to build
//! and link in CI.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::*;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestError, TestRunner};

const IMAGE: &str = "multi.docker.tar";

const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
const XCREATE: i32 = libc::XATTR_CREATE;
const XREPLACE: i32 = libc::XATTR_REPLACE;

// ---------------------------------------------------------------------------
// Operations

/// One operation; paths are relative to the tree's root. `Debug` prints
/// the call of the constructor in [`op`] that makes it.
#[derive(Clone, PartialEq)]
enum Op {
    /// open(O_CREAT|O_WRONLY [|O_EXCL] [|O_TRUNC], mode), close.
    Create {
        path: String,
        excl: bool,
        trunc: bool,
        mode: u32,
    },
    /// open(O_WRONLY), pwrite of `len` bytes (pattern from `byte`) at `off`.
    Write {
        path: String,
        off: u64,
        byte: u8,
        len: usize,
    },
    /// open(O_WRONLY|O_APPEND), write.
    Append {
        path: String,
        byte: u8,
        len: usize,
    },
    Truncate {
        path: String,
        len: u64,
    },
    /// open(O_RDONLY), read to the end.
    Read {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    /// renameat2 with flags 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Mkfifo {
        path: String,
    },
    /// fchmodat (follows symlinks).
    Chmod {
        path: String,
        mode: u32,
    },
    /// fchownat; -1 leaves the id alone.
    Chown {
        path: String,
        uid: i64,
        gid: i64,
        nofollow: bool,
    },
    /// utimensat with atime = mtime = (sec, nsec).
    Utimes {
        path: String,
        sec: i64,
        nsec: i64,
        nofollow: bool,
    },
    /// lsetxattr.
    SetXattr {
        path: String,
        name: String,
        value: String,
        flags: i32,
    },
    /// lremovexattr.
    RemoveXattr {
        path: String,
        name: String,
    },
    /// readdir, names sorted.
    List {
        path: String,
    },
    /// lstat (+ readlink, + user.* xattrs).
    Stat {
        path: String,
    },
}

/// Constructors named as `Op`'s `Debug` prints them.
mod op {
    use super::Op;
    pub fn create(path: &str, excl: bool, trunc: bool, mode: u32) -> Op {
        Op::Create {
            path: path.into(),
            excl,
            trunc,
            mode,
        }
    }
    pub fn write(path: &str, off: u64, byte: u8, len: usize) -> Op {
        Op::Write {
            path: path.into(),
            off,
            byte,
            len,
        }
    }
    pub fn append(path: &str, byte: u8, len: usize) -> Op {
        Op::Append {
            path: path.into(),
            byte,
            len,
        }
    }
    pub fn truncate(path: &str, len: u64) -> Op {
        Op::Truncate {
            path: path.into(),
            len,
        }
    }
    pub fn read(path: &str) -> Op {
        Op::Read { path: path.into() }
    }
    pub fn mkdir(path: &str, mode: u32) -> Op {
        Op::Mkdir {
            path: path.into(),
            mode,
        }
    }
    pub fn rmdir(path: &str) -> Op {
        Op::Rmdir { path: path.into() }
    }
    pub fn unlink(path: &str) -> Op {
        Op::Unlink { path: path.into() }
    }
    pub fn rename(from: &str, to: &str, flags: u32) -> Op {
        Op::Rename {
            from: from.into(),
            to: to.into(),
            flags,
        }
    }
    pub fn link(from: &str, to: &str) -> Op {
        Op::Link {
            from: from.into(),
            to: to.into(),
        }
    }
    pub fn symlink(target: &str, path: &str) -> Op {
        Op::Symlink {
            target: target.into(),
            path: path.into(),
        }
    }
    pub fn mkfifo(path: &str) -> Op {
        Op::Mkfifo { path: path.into() }
    }
    pub fn chmod(path: &str, mode: u32) -> Op {
        Op::Chmod {
            path: path.into(),
            mode,
        }
    }
    pub fn chown(path: &str, uid: i64, gid: i64, nofollow: bool) -> Op {
        Op::Chown {
            path: path.into(),
            uid,
            gid,
            nofollow,
        }
    }
    pub fn utimes(path: &str, sec: i64, nsec: i64, nofollow: bool) -> Op {
        Op::Utimes {
            path: path.into(),
            sec,
            nsec,
            nofollow,
        }
    }
    pub fn setxattr(path: &str, name: &str, value: &str, flags: i32) -> Op {
        Op::SetXattr {
            path: path.into(),
            name: name.into(),
            value: value.into(),
            flags,
        }
    }
    pub fn removexattr(path: &str, name: &str) -> Op {
        Op::RemoveXattr {
            path: path.into(),
            name: name.into(),
        }
    }
    pub fn list(path: &str) -> Op {
        Op::List { path: path.into() }
    }
    pub fn stat(path: &str) -> Op {
        Op::Stat { path: path.into() }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create {
                path,
                excl,
                trunc,
                mode,
            } => write!(f, "create({path:?}, {excl}, {trunc}, 0o{mode:o})"),
            Op::Write {
                path,
                off,
                byte,
                len,
            } => write!(f, "write({path:?}, {off}, b'{}', {len})", *byte as char),
            Op::Append { path, byte, len } => {
                write!(f, "append({path:?}, b'{}', {len})", *byte as char)
            }
            Op::Truncate { path, len } => write!(f, "truncate({path:?}, {len})"),
            Op::Read { path } => write!(f, "read({path:?})"),
            Op::Mkdir { path, mode } => write!(f, "mkdir({path:?}, 0o{mode:o})"),
            Op::Rmdir { path } => write!(f, "rmdir({path:?})"),
            Op::Unlink { path } => write!(f, "unlink({path:?})"),
            Op::Rename { from, to, flags } => {
                let fl = match *flags {
                    0 => "0",
                    NOREPLACE => "NOREPLACE",
                    EXCHANGE => "EXCHANGE",
                    _ => "?",
                };
                write!(f, "rename({from:?}, {to:?}, {fl})")
            }
            Op::Link { from, to } => write!(f, "link({from:?}, {to:?})"),
            Op::Symlink { target, path } => write!(f, "symlink({target:?}, {path:?})"),
            Op::Mkfifo { path } => write!(f, "mkfifo({path:?})"),
            Op::Chmod { path, mode } => write!(f, "chmod({path:?}, 0o{mode:o})"),
            Op::Chown {
                path,
                uid,
                gid,
                nofollow,
            } => write!(f, "chown({path:?}, {uid}, {gid}, {nofollow})"),
            Op::Utimes {
                path,
                sec,
                nsec,
                nofollow,
            } => write!(f, "utimes({path:?}, {sec}, {nsec}, {nofollow})"),
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => {
                let fl = match *flags {
                    0 => "0",
                    XCREATE => "XCREATE",
                    XREPLACE => "XREPLACE",
                    _ => "?",
                };
                write!(f, "setxattr({path:?}, {name:?}, {value:?}, {fl})")
            }
            Op::RemoveXattr { path, name } => write!(f, "removexattr({path:?}, {name:?})"),
            Op::List { path } => write!(f, "list({path:?})"),
            Op::Stat { path } => write!(f, "stat({path:?})"),
        }
    }
}

impl Op {
    /// The operation's name, for the outcome statistics.
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Read { .. } => "read",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { flags, .. } => match *flags {
                NOREPLACE => "rename NOREPLACE",
                EXCHANGE => "rename EXCHANGE",
                _ => "rename",
            },
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Mkfifo { .. } => "mkfifo",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimes { .. } => "utimes",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::List { .. } => "list",
            Op::Stat { .. } => "stat",
        }
    }
}

/// The bytes a write of `len` bytes with `byte` writes: not all the same
/// byte, so that misplaced offsets show.
fn pattern(byte: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| byte.wrapping_add((i % 3) as u8)).collect()
}

// ---------------------------------------------------------------------------
// Results

#[derive(Clone, PartialEq)]
enum Out {
    Done,
    Data(Vec<u8>),
    Names(Vec<String>),
    Stat(StatInfo),
}

#[derive(Clone, PartialEq, Debug)]
struct StatInfo {
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    /// Non-directories only.
    size: Option<u64>,
    /// Non-directories only (overlayfs says 1 for merged directories).
    nlink: Option<u64>,
    target: Option<String>,
    /// Non-directories, and only if older than the case: see the module doc.
    mtime: Option<(i64, i64)>,
    /// `user.*` xattrs, sorted, values lossy UTF-8.
    xattrs: Vec<(String, String)>,
}

type Res = Result<Out, i32>;

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        libc::ETXTBSY => "ETXTBSY",
        _ => return format!("errno {e}"),
    };
    format!("{name} ({e})")
}

fn show(r: &Res) -> String {
    match r {
        Err(e) => format!("Err({})", errno_name(*e)),
        Ok(Out::Done) => "Ok".into(),
        Ok(Out::Data(d)) => {
            let head: String = String::from_utf8_lossy(&d[..d.len().min(48)])
                .escape_debug()
                .collect();
            let sum = d
                .iter()
                .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
            format!("Ok(data: {} bytes, \"{head}\"..., sum {sum:x})", d.len())
        }
        Ok(Out::Names(n)) => format!("Ok({n:?})"),
        Ok(Out::Stat(s)) => format!("Ok({s:?})"),
    }
}

// ---------------------------------------------------------------------------
// Running an operation on a tree

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn io_err(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e}"))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn rc(r: libc::c_int) -> Res {
    if r == 0 {
        Ok(Out::Done)
    } else {
        Err(errno())
    }
}

/// Applies `op` to the tree at `root`. `recent`: mtimes at or after it are
/// not reported (see the module doc).
fn apply(root: &Path, op: &Op, recent: i64) -> Res {
    let p = |rel: &str| -> PathBuf {
        if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    };
    let c = |rel: &str| cstr(&p(rel));
    // SAFETY (every libc call below): the pointers are NUL-terminated
    // strings or buffers that live for the duration of the call.
    match op {
        Op::Create {
            path,
            excl,
            trunc,
            mode,
        } => {
            let mut o = std::fs::OpenOptions::new();
            o.write(true)
                .mode(*mode)
                .truncate(*trunc)
                .custom_flags(libc::O_NONBLOCK);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            o.open(p(path)).map(|_| Out::Done).map_err(io_err)
        }
        Op::Write {
            path,
            off,
            byte,
            len,
        } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p(path))
                .map_err(io_err)?;
            f.write_all_at(&pattern(*byte, *len), *off)
                .map(|_| Out::Done)
                .map_err(io_err)
        }
        Op::Append { path, byte, len } => {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p(path))
                .map_err(io_err)?;
            f.write_all(&pattern(*byte, *len))
                .map(|_| Out::Done)
                .map_err(io_err)
        }
        Op::Truncate { path, len } => rc(unsafe { libc::truncate(c(path).as_ptr(), *len as i64) }),
        Op::Read { path } => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p(path))
                .map_err(io_err)?;
            let mut v = Vec::new();
            f.read_to_end(&mut v).map_err(io_err)?;
            Ok(Out::Data(v))
        }
        Op::Mkdir { path, mode } => rc(unsafe { libc::mkdir(c(path).as_ptr(), *mode) }),
        Op::Rmdir { path } => rc(unsafe { libc::rmdir(c(path).as_ptr()) }),
        Op::Unlink { path } => rc(unsafe { libc::unlink(c(path).as_ptr()) }),
        Op::Rename { from, to, flags } => rc(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c(from).as_ptr(),
                libc::AT_FDCWD,
                c(to).as_ptr(),
                *flags,
            )
        }),
        Op::Link { from, to } => rc(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                c(from).as_ptr(),
                libc::AT_FDCWD,
                c(to).as_ptr(),
                0,
            )
        }),
        Op::Symlink { target, path } => {
            let t = CString::new(target.as_bytes()).unwrap();
            rc(unsafe { libc::symlink(t.as_ptr(), c(path).as_ptr()) })
        }
        Op::Mkfifo { path } => rc(unsafe { libc::mkfifo(c(path).as_ptr(), 0o644) }),
        Op::Chmod { path, mode } => {
            rc(unsafe { libc::fchmodat(libc::AT_FDCWD, c(path).as_ptr(), *mode, 0) })
        }
        Op::Chown {
            path,
            uid,
            gid,
            nofollow,
        } => {
            let flags = if *nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            rc(unsafe {
                libc::fchownat(
                    libc::AT_FDCWD,
                    c(path).as_ptr(),
                    *uid as libc::uid_t,
                    *gid as libc::gid_t,
                    flags,
                )
            })
        }
        Op::Utimes {
            path,
            sec,
            nsec,
            nofollow,
        } => {
            let t = libc::timespec {
                tv_sec: *sec,
                tv_nsec: *nsec,
            };
            let ts = [t, t];
            let flags = if *nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            rc(unsafe { libc::utimensat(libc::AT_FDCWD, c(path).as_ptr(), ts.as_ptr(), flags) })
        }
        Op::SetXattr {
            path,
            name,
            value,
            flags,
        } => {
            let n = CString::new(name.as_bytes()).unwrap();
            rc(unsafe {
                libc::lsetxattr(
                    c(path).as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    *flags,
                )
            })
        }
        Op::RemoveXattr { path, name } => {
            let n = CString::new(name.as_bytes()).unwrap();
            rc(unsafe { libc::lremovexattr(c(path).as_ptr(), n.as_ptr()) })
        }
        Op::List { path } => {
            let mut names = Vec::new();
            for e in std::fs::read_dir(p(path)).map_err(io_err)? {
                let e = e.map_err(io_err)?;
                names.push(e.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(Out::Names(names))
        }
        Op::Stat { path } => stat_info(&p(path), recent).map(Out::Stat),
    }
}

fn stat_info(p: &Path, recent: i64) -> Result<StatInfo, i32> {
    let md = std::fs::symlink_metadata(p).map_err(io_err)?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if md.mode() & libc::S_IFMT == libc::S_IFIFO {
        "fifo"
    } else {
        "other"
    };
    let dir = ft.is_dir();
    let target = if ft.is_symlink() {
        Some(
            std::fs::read_link(p)
                .map_err(io_err)?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    let mtime = if dir || md.mtime() >= recent {
        None
    } else {
        Some((md.mtime(), md.mtime_nsec()))
    };
    Ok(StatInfo {
        kind,
        mode: format!("0o{:o}", md.mode() & 0o7777),
        uid: md.uid(),
        gid: md.gid(),
        size: (!dir).then_some(md.len()),
        nlink: (!dir).then_some(md.nlink()),
        target,
        mtime,
        xattrs: user_xattrs(p)?,
    })
}

fn user_xattrs(p: &Path) -> Result<Vec<(String, String)>, i32> {
    let c = cstr(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    let mut out = Vec::new();
    for name in buf[..n as usize].split(|&b| b == 0) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m < 0 {
            return Err(errno());
        }
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(&val[..m as usize]).into_owned(),
        ));
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------
// Implementations under test

/// One tree under test for one case. Fields drop in order: the mounts go
/// before their directories.
struct Impl<'a> {
    name: &'static str,
    root: PathBuf,
    /// layerfs: the `--rw` dir.
    rw: Option<PathBuf>,
    /// layerfs with an overlay-format upper directory: that directory,
    /// mounted by kernel overlayfs over the same layers at the end.
    upperdir: Option<PathBuf>,
    _layerfs: Option<Mount<'a>>,
    _overlay: Option<KernelOverlay>,
    _tmp: tempfile::TempDir,
}

/// What every case starts from, prepared once per test.
struct Env {
    work: tempfile::TempDir,
    merged: PathBuf,
    /// Bottom first: in overlayfs format; the uncompressed layer tars.
    layers: Vec<PathBuf>,
    layer_tars: Vec<PathBuf>,
    overlay: bool,
    layerfs: Option<(TestStore, String)>,
    /// (operation, outcome on the reference) -> count, to show with
    /// --nocapture that the sequences do hit both successes and errors.
    stats: Mutex<BTreeMap<(&'static str, String), u32>>,
}

impl Env {
    /// None (after a SKIP message) when there is nothing to compare.
    fn new() -> Option<Env> {
        if !is_root() {
            eprintln!("SKIP: rw_diff needs root (the oracle extraction chowns and makes devices)");
            return None;
        }
        // The tests create files with explicit modes: make the umask known.
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0o022) };
        let work = tempfile::Builder::new()
            .prefix("layerfs-rwdiff")
            .tempdir()
            .unwrap();
        let merged = work.path().join("merged");
        let layers_dir = work.path().join("layers");
        let tars_dir = work.path().join("tars");
        let fx = fixture(IMAGE);
        let layers = oracle_extract(&fx, &layers_dir, &tars_dir, Some(&merged));
        assert_eq!(layers.len(), 3, "{IMAGE} has 3 layers");
        let layer_tars: Vec<PathBuf> = (0..layers.len())
            .map(|i| tars_dir.join(format!("{i}.tar")))
            .collect();
        // The extracted tree is the oracle's merge, exactly.
        let expected = oracle(&["--image", fx.to_str().unwrap()]);
        let got = snapshot(&merged);
        assert_same_tree("oracle_extract --merged", &expected, &got, &[]);

        let mut env = Env {
            work,
            merged,
            layers,
            layer_tars,
            overlay: false,
            layerfs: None,
            stats: Mutex::default(),
        };
        match env.probe_overlay() {
            Ok(()) => env.overlay = true,
            Err(e) => eprintln!("rw_diff: overlayfs not used: {e}"),
        }
        if fuse_available() {
            let store = TestStore::new();
            let id = store.import(&fx, &[]);
            env.layerfs = Some((store, id));
        }
        if !env.overlay && env.layerfs.is_none() {
            eprintln!("SKIP: rw_diff: neither overlayfs nor a layerfs with --rw to compare");
            return None;
        }
        eprintln!("rw_diff: implementations: {:?}", env.names());
        Some(env)
    }

    /// `oracle_extract.py --pack`: `dir` as a layer tar at `out`, without
    /// a top-level `.wh..wh.layerfs` (the rw branch's work dir).
    fn pack(&self, dir: &Path, out: &Path) {
        run_ok(
            tool("oracle_extract.py")
                .arg("--pack")
                .arg(dir)
                .arg("--out")
                .arg(out)
                .args(["--exclude", ".wh..wh.layerfs"]),
        );
    }

    /// The oracle's merge of the image's layers and, on top, `dir` packed
    /// as a layer.
    fn merge_with_layer(&self, dir: &Path) -> serde_json::Value {
        let t = self.case_dir();
        let tar = t.path().join("rw.tar");
        self.pack(dir, &tar);
        let mut args: Vec<&str> = self
            .layer_tars
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect();
        args.push(tar.to_str().unwrap());
        serde_json::from_str(&oracle(&args)).unwrap()
    }

    fn names(&self) -> Vec<&'static str> {
        let mut v = vec!["plain"];
        if self.overlay {
            v.push("overlayfs");
        }
        if self.layerfs.is_some() {
            v.push("layerfs");
            v.push("layerfs-branches");
        }
        v
    }

    fn probe_overlay(&self) -> Result<(), String> {
        let t = self.case_dir();
        let (u, w, m) = overlay_dirs(t.path());
        let g = self.mount_overlay(&u, &w, &m)?;
        let ok = m.join("etc/os-release").exists() && !m.join("etc/os-release-extra").exists();
        drop(g);
        if ok {
            Ok(())
        } else {
            Err("overlay mount does not show the image".into())
        }
    }

    /// Kernel overlayfs over the layers at `dir`, mounted with
    /// `redirect_dir=on,index=on` (see the module doc).
    fn mount_overlay(
        &self,
        upper: &Path,
        work: &Path,
        dir: &Path,
    ) -> Result<KernelOverlay, String> {
        let opts = format!(
            "{},upperdir={},workdir={},redirect_dir=on,index=on",
            lowerdir(&self.layers),
            upper.display(),
            work.display()
        );
        KernelOverlay::try_mount(dir, &opts)
    }

    fn case_dir(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("case")
            .tempdir_in(self.work.path())
            .unwrap()
    }

    /// Fresh trees for one case, the plain reference first.
    fn impls(&self) -> Vec<Impl<'_>> {
        let mut v = Vec::new();
        let t = self.case_dir();
        let root = t.path().join("plain");
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.merged)
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a");
        v.push(Impl {
            name: "plain",
            root,
            rw: None,
            _layerfs: None,
            _overlay: None,
            upperdir: None,
            _tmp: t,
        });
        if self.overlay {
            let t = self.case_dir();
            let (u, w, m) = overlay_dirs(t.path());
            let g = self.mount_overlay(&u, &w, &m).unwrap();
            v.push(Impl {
                name: "overlayfs",
                root: m,
                rw: None,
                _layerfs: None,
                _overlay: Some(g),
                upperdir: None,
                _tmp: t,
            });
        }
        if let Some((store, id)) = &self.layerfs {
            let t = self.case_dir();
            let rw = t.path().join("rw");
            std::fs::create_dir(&rw).unwrap();
            let m = Mount::rw(store, id, &rw);
            v.push(Impl {
                name: "layerfs",
                root: m.dir.clone(),
                rw: Some(rw),
                _layerfs: Some(m),
                _overlay: None,
                upperdir: None,
                _tmp: t,
            });
            // The same, as `mount-branches` over the overlay-format layer
            // directories (no store layers), AUFS syntax, rw branch on top;
            // without passthrough, so the kernel opens its files itself
            // (zero-message opens: I/O by inode, copy-up at the first write)
            // where the store mount above answers OPENs.
            let t = self.case_dir();
            let rw = t.path().join("rw");
            std::fs::create_dir(&rw).unwrap();
            let mut br = vec![format!("{}=rw", rw.display())];
            br.extend(
                self.layers
                    .iter()
                    .rev()
                    .map(|l| format!("{}=ro+wh", l.display())),
            );
            let m = Mount::branches(store, &format!("br={},passthrough=off", br.join(":")));
            v.push(Impl {
                name: "layerfs-branches",
                root: m.dir.clone(),
                rw: Some(rw),
                _layerfs: Some(m),
                _overlay: None,
                upperdir: None,
                _tmp: t,
            });
        }
        if let (Some((store, _)), true) = (&self.layerfs, self.overlay) {
            // `mount-branches` with an overlay-format upperdir, as podman
            // mounts a container: renamed lower directories get redirects
            // (as kernel overlayfs with redirect_dir=on), and at the end
            // kernel overlayfs must mount the upper directory to the same
            // tree.
            let t = self.case_dir();
            let (u, w, _) = overlay_dirs(t.path());
            let m = Mount::branches(
                store,
                &format!(
                    "{},upperdir={},workdir={}",
                    lowerdir(&self.layers),
                    u.display(),
                    w.display()
                ),
            );
            v.push(Impl {
                name: "layerfs-upperdir",
                root: m.dir.clone(),
                rw: None,
                _layerfs: Some(m),
                _overlay: None,
                upperdir: Some(u),
                _tmp: t,
            });
        }
        v
    }
}

/// upper (mode 0755: it is the merged root's metadata), work, mountpoint.
fn overlay_dirs(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (u, w, m) = (t.join("upper"), t.join("work"), t.join("mnt"));
    for d in [&u, &w, &m] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::set_permissions(&u, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (u, w, m)
}

// ---------------------------------------------------------------------------
// One case

/// What the plain reference must give for a step of a fixed sequence (a
/// check that the sequence does what it is meant to; the implementations
/// are compared with each other in any case).
#[derive(Clone, Debug)]
enum Expect {
    Any,
    Ok,
    Err(i32),
    Names(Vec<&'static str>),
    Data(&'static [u8]),
    Nlink(u64),
    /// (kind, mode, uid)
    Meta(&'static str, u32, u32),
}

fn check_expect(e: &Expect, r: &Res) -> bool {
    match (e, r) {
        (Expect::Any, _) => true,
        (Expect::Ok, Ok(_)) => true,
        (Expect::Err(x), Err(y)) => x == y,
        (Expect::Names(n), Ok(Out::Names(m))) => n.iter().copied().eq(m.iter().map(|s| s.as_str())),
        (Expect::Data(d), Ok(Out::Data(v))) => *d == &v[..],
        (Expect::Nlink(n), Ok(Out::Stat(s))) => s.nlink == Some(*n),
        (Expect::Meta(k, m, u), Ok(Out::Stat(s))) => {
            s.kind == *k && s.mode == format!("0o{m:o}") && s.uid == *u
        }
        _ => false,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `ops` on fresh trees of every implementation; Err describes the
/// first difference. `expect` (may be shorter than `ops`) is checked on the
/// reference.
fn run_case(env: &Env, ops: &[Op], expect: &[Expect]) -> Result<(), String> {
    run_case_checked(env, ops, expect, false)
}

/// `run_case`; with `check_packer`, also checks that `oracle_extract.py
/// --pack` of the final plain tree, merged by the oracle as a single layer,
/// is that tree exactly (the packer is what checks the layerfs `--rw` dir).
fn run_case_checked(
    env: &Env,
    ops: &[Op],
    expect: &[Expect],
    check_packer: bool,
) -> Result<(), String> {
    let recent = now_secs() - 2;
    let impls = env.impls();
    let mut history: Vec<String> = Vec::new();
    let transcript = |history: &[String]| -> String {
        let mut s = String::from("sequence so far (results of plain):\n");
        for h in history {
            s.push_str("  ");
            s.push_str(h);
            s.push('\n');
        }
        s
    };
    for (i, op) in ops.iter().enumerate() {
        let results: Vec<Res> = impls.iter().map(|im| apply(&im.root, op, recent)).collect();
        let reference = &results[0];
        if let Some(e) = expect.get(i) {
            if !check_expect(e, reference) {
                return Err(format!(
                    "step {i} {op:?}: plain gave {} but the sequence expects {e:?}\n{}",
                    show(reference),
                    transcript(&history)
                ));
            }
        }
        for (im, r) in impls.iter().zip(&results).skip(1) {
            if r != reference {
                let mut msg = format!("step {i} of {}: {op:?} differs:\n", ops.len());
                for (im2, r2) in impls.iter().zip(&results) {
                    msg.push_str(&format!("  {:<10} {}\n", im2.name, show(r2)));
                }
                return Err(format!(
                    "{msg}({} differs from plain)\n{}",
                    im.name,
                    transcript(&history)
                ));
            }
        }
        let outcome = match reference {
            Ok(_) => "Ok".to_string(),
            Err(e) => errno_name(*e),
        };
        *env.stats
            .lock()
            .unwrap()
            .entry((op.kind(), outcome))
            .or_default() += 1;
        history.push(format!("#{i} {op:?} => {}", show(reference)));
    }
    // The whole trees.
    let snaps: Vec<serde_json::Value> = impls
        .iter()
        .map(|im| serde_json::from_str(&snapshot(&im.root)).unwrap())
        .collect();
    for (im, snap) in impls.iter().zip(&snaps).skip(1) {
        let (a, b) = without_volatile_mtimes(&snaps[0], snap, recent);
        compare_trees(&a, &b).map_err(|d| {
            format!(
                "final trees differ, plain (-) vs {} (+):\n{d}\n{}",
                im.name,
                transcript(&history)
            )
        })?;
    }
    // The --rw dir, read as one more layer by the oracle, is the tree the
    // mount shows: it really is in AUFS layer-diff format. Directory
    // mtimes are left out, as above; everything else must match exactly.
    for (im, snap) in impls.iter().zip(&snaps) {
        let Some(rw) = &im.rw else { continue };
        let merged = env.merge_with_layer(rw);
        let (a, b) = without_volatile_mtimes(&merged, snap, i64::MAX);
        compare_trees(&a, &b).map_err(|d| {
            format!(
                "the --rw dir as a layer over the image (-, by the oracle) \
                 differs from the {} mount (+):\n{d}\n{}",
                im.name,
                transcript(&history)
            )
        })?;
    }
    // An overlay-format upper directory layerfs wrote, mounted by kernel
    // overlayfs over the same layers (a second work dir), is the tree.
    for im in &impls {
        let Some(u) = &im.upperdir else { continue };
        let t = env.case_dir();
        let (w, m) = (t.path().join("w2"), t.path().join("m2"));
        std::fs::create_dir(&w).unwrap();
        std::fs::create_dir(&m).unwrap();
        let g = env.mount_overlay(u, &w, &m)?;
        let snap: serde_json::Value = serde_json::from_str(&snapshot(&m)).unwrap();
        drop(g);
        let (a, b) = without_volatile_mtimes(&snaps[0], &snap, recent);
        // Kernel overlayfs shows a lower file that is still lower with the
        // nlink of its layer (an upper it did not write has no index of
        // hard links): a lower link whose sibling was unlinked shows 2
        // there. nlink is compared after every step above; hard-link
        // groups are still compared here.
        let (a, b) = (without_file_nlinks(a), without_file_nlinks(b));
        compare_trees(&a, &b).map_err(|d| {
            format!(
                "kernel overlayfs over the {} upper directory (+) differs from plain (-):\n{d}\n{}",
                im.name,
                transcript(&history)
            )
        })?;
    }
    if check_packer {
        let t = env.case_dir();
        let tar = t.path().join("packed.tar");
        env.pack(&impls[0].root, &tar);
        let merged = oracle(&[tar.to_str().unwrap()]);
        let merged: serde_json::Value = serde_json::from_str(&merged).unwrap();
        compare_trees(&merged, &snaps[0]).map_err(|d| {
            format!(
                "harness: the packed plain tree (-) is not the plain tree (+):\n{d}\n{}",
                transcript(&history)
            )
        })?;
    }
    Ok(())
}

/// Removes what the module doc says is not compared: the mtime of every
/// directory, and of non-directories whose mtime is recent in both trees.
fn without_volatile_mtimes(
    a: &serde_json::Value,
    b: &serde_json::Value,
    recent: i64,
) -> (serde_json::Value, serde_json::Value) {
    let (mut a, mut b) = (a.clone(), b.clone());
    let paths: Vec<String> = a.as_object().unwrap().keys().cloned().collect();
    for p in paths {
        let (Some(ea), Some(eb)) = (a.get(&p), b.get(&p)) else {
            continue;
        };
        let is_dir = |e: &serde_json::Value| e["type"] == "dir";
        let is_recent = |e: &serde_json::Value| e["mtime"].as_i64().is_some_and(|t| t >= recent);
        if is_dir(ea) || is_dir(eb) || (is_recent(ea) && is_recent(eb)) {
            for v in [&mut a, &mut b] {
                let e = v.get_mut(&p).unwrap().as_object_mut().unwrap();
                e.remove("mtime");
                e.remove("mtime_nsec");
            }
        }
    }
    (a, b)
}

/// `snap` without the nlink of non-directories.
fn without_file_nlinks(mut snap: serde_json::Value) -> serde_json::Value {
    for e in snap.as_object_mut().unwrap().values_mut() {
        if e["type"] != "dir" {
            e.as_object_mut().unwrap().remove("nlink");
        }
    }
    snap
}

/// `oracle_merge.py --compare`; Err is its readable diff.
fn compare_trees(a: &serde_json::Value, b: &serde_json::Value) -> Result<(), String> {
    compare_manifests(&a.to_string(), &b.to_string(), &[])
}

// ---------------------------------------------------------------------------
// Generating sequences

/// Directories of the image (and `n`, which a sequence may create).
const DIRS: &[&str] = &[
    "",
    "etc",
    "opt/data",
    "usr/share/doc/pkg",
    "tmp",
    "home/user",
    "n",
];
/// Names a sequence creates, in any of `DIRS`.
const NEW_NAMES: &[&str] = &["a", "b"];
/// Paths the image shows: files, the hard links `a`/`a-link`, directories
/// spanning layers (`etc`, `usr/share/doc/pkg`: layers 0 and 1; `opt/data`:
/// opaque in layer 2).
const EXISTING: &[&str] = &[
    "etc",
    "etc/os-release",
    "etc/passwd",
    "etc/group",
    "opt",
    "opt/data",
    "opt/data/new",
    "usr/share/doc",
    "usr/share/doc/pkg",
    "usr/share/doc/pkg/README",
    "usr/share/doc/pkg/a",
    "usr/share/doc/pkg/a-link",
    "usr/share/doc/pkg/copyright",
    "home/user",
    "home/user/secret",
    "tmp",
];
/// Paths a lower layer has and an upper one hides (whiteouts, opaque dir).
const HIDDEN: &[&str] = &[
    "etc/os-release-extra",
    "usr/share/doc/pkg/sub",
    "usr/share/doc/pkg/sub/one",
    "opt/data/file1",
    "opt/data/old-only-in-layer0",
];
/// Names of the image, in any of `DIRS` (renames and links across them).
const OTHER_NAMES: &[&str] = &[
    "os-release",
    "README",
    "a-link",
    "sub",
    "data",
    "new",
    "file1",
];
/// Symlink targets: relative and without "..", so that following a
/// generated symlink never leaves the tree (an absolute or ".." target
/// would let a write escape the mount into the host).
const TARGETS: &[&str] = &[
    "a",
    "b",
    "c",
    "sub",
    "os-release",
    "sub/one",
    ".",
    "missing",
];

fn in_dir(d: &str, n: &str) -> String {
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

/// A path an operation expects to exist (what it reads, changes or
/// removes): mostly paths of the image, else ones a sequence may have made.
/// Never a name starting with `.wh.`, never the root.
fn src_path() -> BoxedStrategy<String> {
    paths(6, 1, 3)
}

/// A path an operation creates: mostly new or hidden names.
fn dst_path() -> BoxedStrategy<String> {
    paths(2, 2, 5)
}

fn paths(existing: u32, hidden: u32, new: u32) -> BoxedStrategy<String> {
    prop_oneof![
        existing => select(EXISTING).prop_map(String::from),
        hidden => select(HIDDEN).prop_map(String::from),
        new => (select(DIRS), select(NEW_NAMES)).prop_map(|(d, n)| in_dir(d, n)),
        1 => Just("n".to_string()),
        1 => (select(DIRS), select(OTHER_NAMES)).prop_map(|(d, n)| in_dir(d, n)),
    ]
    .boxed()
}

fn dir_path() -> BoxedStrategy<String> {
    prop_oneof![3 => select(DIRS).prop_map(String::from), 1 => src_path()].boxed()
}

fn data() -> impl Strategy<Value = (u8, usize)> {
    (b'a'..=b'z', select(&[1usize, 5, 100, 5000, 0][..]))
}

fn op_strategy() -> BoxedStrategy<Op> {
    let file_mode = select(&[0o644u32, 0o600, 0o777, 0o4755][..]);
    let dir_mode = select(&[0o755u32, 0o700, 0o1777, 0o2775][..]);
    let chmod_mode = select(&[0o644u32, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o000, 0o750][..]);
    let id = select(&[-1i64, 0, 1000, 65534][..]);
    let time = select(
        &[
            (1_600_000_000i64, 0i64),
            (1_650_000_000, 123_456_789),
            (1_700_000_000, 999_999_999),
            (0, 0),
        ][..],
    );
    let xname = select(&["user.x", "user.y"][..]);
    let xflags = select(&[0, XCREATE, XREPLACE][..]);
    let rflags = select(&[0u32, NOREPLACE][..]);
    prop_oneof![
        4 => (dst_path(), any::<bool>(), any::<bool>(), file_mode)
            .prop_map(|(p, e, t, m)| op::create(&p, e, t, m)),
        3 => (src_path(), select(&[0u64, 3, 18, 4096, 70_000][..]), data())
            .prop_map(|(p, o, (b, l))| op::write(&p, o, b, l)),
        2 => (src_path(), data()).prop_map(|(p, (b, l))| op::append(&p, b, l)),
        2 => (src_path(), select(&[0u64, 1, 7, 100, 70_000][..]))
            .prop_map(|(p, l)| op::truncate(&p, l)),
        3 => src_path().prop_map(|p| op::read(&p)),
        3 => (dst_path(), dir_mode).prop_map(|(p, m)| op::mkdir(&p, m)),
        // directories that are, or often become, empty; then any
        3 => prop_oneof![
            2 => select(&["tmp", "n", "n/a", "tmp/a", "tmp/b", "etc/a"][..]).prop_map(String::from),
            1 => select(&DIRS[1..]).prop_map(String::from),
            1 => dst_path(),
            1 => src_path(),
        ]
        .prop_map(|p| op::rmdir(&p)),
        3 => src_path().prop_map(|p| op::unlink(&p)),
        4 => (src_path(), dst_path(), rflags).prop_map(|(a, b, f)| op::rename(&a, &b, f)),
        // an exchange needs two existing paths
        2 => (src_path(), src_path()).prop_map(|(a, b)| op::rename(&a, &b, EXCHANGE)),
        2 => (src_path(), dst_path()).prop_map(|(a, b)| op::link(&a, &b)),
        2 => (select(TARGETS), dst_path()).prop_map(|(t, p)| op::symlink(t, &p)),
        1 => dst_path().prop_map(|p| op::mkfifo(&p)),
        2 => (src_path(), chmod_mode).prop_map(|(p, m)| op::chmod(&p, m)),
        1 => (src_path(), id.clone(), id, any::<bool>())
            .prop_map(|(p, u, g, nf)| op::chown(&p, u, g, nf)),
        1 => (src_path(), time, any::<bool>())
            .prop_map(|(p, (s, ns), nf)| op::utimes(&p, s, ns, nf)),
        2 => (src_path(), xname.clone(), select(&["1", "hello"][..]), xflags)
            .prop_map(|(p, n, v, f)| op::setxattr(&p, n, v, f)),
        1 => (src_path(), xname).prop_map(|(p, n)| op::removexattr(&p, n)),
        3 => dir_path().prop_map(|p| op::list(&p)),
        4 => src_path().prop_map(|p| op::stat(&p)),
    ]
    .boxed()
}

fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn random_operation_sequences_agree() {
    let Some(env) = Env::new() else {
        return;
    };
    let mut config = Config {
        cases: env_u32("LAYERFS_DIFF_CASES", 200),
        failure_persistence: None,
        ..Config::default()
    };
    if config.max_shrink_time == 0 {
        config.max_shrink_time = 180_000;
    }
    let cases = config.cases;
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(op_strategy(), 1..=25);
    match runner.run(&strategy, |ops| {
        run_case(&env, &ops, &[]).map_err(TestCaseError::fail)
    }) {
        Ok(()) => {
            eprintln!(
                "rw_diff: {cases} random sequences agree on {:?} in {:.1}s; \
                 outcomes on plain:",
                env.names(),
                started.elapsed().as_secs_f64()
            );
            for ((op, outcome), n) in env.stats.lock().unwrap().iter() {
                eprintln!("  {op:<18} {outcome:<16} {n}");
            }
        }
        Err(TestError::Fail(reason, ops)) => {
            let calls: Vec<String> = ops.iter().map(|o| format!("    {o:?},")).collect();
            panic!(
                "{reason}\nminimal failing sequence ({} ops):\n{}",
                ops.len(),
                calls.join("\n")
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// Hand-picked sequences around the union rules; each step also checks
/// what the plain reference gives, so that the sequence does test what its
/// name says.
fn fixed_sequences() -> Vec<(&'static str, Vec<(Op, Expect)>)> {
    use op::*;
    use Expect::{Any, Data, Meta, Names, Nlink};
    const ENOENT: Expect = Expect::Err(libc::ENOENT);
    const ENOTEMPTY: Expect = Expect::Err(libc::ENOTEMPTY);
    const EEXIST: Expect = Expect::Err(libc::EEXIST);
    const OK: Expect = Expect::Ok;
    let pkg = || Names(vec!["README", "a", "a-link", "copyright"]);
    vec![
        (
            "rename a lower directory, then create inside it and reuse its name",
            vec![
                (rename("usr/share/doc/pkg", "n", 0), OK),
                (list("n"), pkg()),
                (create("n/c", true, false, 0o644), OK),
                (write("n/c", 0, b'x', 5), OK),
                (read("n/c"), Data(b"xyzxy")),
                (
                    list("n"),
                    Names(vec!["README", "a", "a-link", "c", "copyright"]),
                ),
                (stat("n/a"), Nlink(2)),
                (stat("usr/share/doc/pkg"), ENOENT),
                (list("usr/share/doc"), Names(vec![])),
                (mkdir("usr/share/doc/pkg", 0o755), OK),
                (list("usr/share/doc/pkg"), Names(vec![])),
                (mkdir("usr/share/doc/pkg/sub", 0o700), OK),
                (list("usr/share/doc/pkg/sub"), Names(vec![])),
                (rename("opt/data", "usr/share/doc/pkg/data", 0), OK),
                (list("usr/share/doc/pkg/data"), Names(vec!["new"])),
                (
                    create("usr/share/doc/pkg/data/file1", true, false, 0o600),
                    OK,
                ),
                (read("usr/share/doc/pkg/data/file1"), Data(b"")),
                (rename("n", "opt/data", 0), OK),
                (
                    list("opt/data"),
                    Names(vec!["README", "a", "a-link", "c", "copyright"]),
                ),
                (read("opt/data/a-link"), Any),
                (stat("opt/data/a"), Nlink(2)),
            ],
        ),
        (
            "rmdir of directories spanning layers once emptied; no resurrection",
            vec![
                (rmdir("usr/share/doc/pkg"), ENOTEMPTY),
                (unlink("usr/share/doc/pkg/README"), OK),
                (unlink("usr/share/doc/pkg/copyright"), OK),
                (unlink("usr/share/doc/pkg/a"), OK),
                (stat("usr/share/doc/pkg/a-link"), Nlink(1)),
                (unlink("usr/share/doc/pkg/a-link"), OK),
                (list("usr/share/doc/pkg"), Names(vec![])),
                (rmdir("usr/share/doc/pkg"), OK),
                (stat("usr/share/doc/pkg"), ENOENT),
                (list("usr/share/doc"), Names(vec![])),
                (mkdir("usr/share/doc/pkg", 0o755), OK),
                (list("usr/share/doc/pkg"), Names(vec![])),
                (unlink("opt/data/new"), OK),
                (rmdir("opt/data"), OK),
                (list("opt"), Names(vec![])),
                (mkdir("opt/data", 0o755), OK),
                (list("opt/data"), Names(vec![])),
                (unlink("etc/group"), OK),
                (unlink("etc/os-release"), OK),
                (unlink("etc/passwd"), OK),
                (list("etc"), Names(vec![])),
                (rmdir("etc"), OK),
                (mkdir("etc", 0o755), OK),
                (list("etc"), Names(vec![])),
                (stat("etc/os-release-extra"), ENOENT),
            ],
        ),
        (
            "ENOTEMPTY on merged non-empty directories whose upper part is empty",
            vec![
                (create("usr/share/doc/pkg/c", true, false, 0o644), OK),
                (unlink("usr/share/doc/pkg/c"), OK),
                (rmdir("usr/share/doc/pkg"), ENOTEMPTY),
                (chmod("etc", 0o700), OK),
                (rmdir("etc"), ENOTEMPTY),
                (setxattr("opt/data", "user.x", "1", 0), OK),
                (rmdir("opt/data"), ENOTEMPTY),
                (rename("tmp", "usr/share/doc/pkg", 0), ENOTEMPTY),
                (mkdir("n", 0o755), OK),
                (rename("n", "etc", 0), ENOTEMPTY),
                (rename("n", "home/user", 0), ENOTEMPTY),
                (rename("n", "tmp", 0), OK),
                (list("tmp"), Names(vec![])),
                (stat("tmp"), Meta("dir", 0o755, 0)),
            ],
        ),
        (
            "create over whiteout-hidden and opaque-hidden names",
            vec![
                (stat("etc/os-release-extra"), ENOENT),
                (read("etc/os-release-extra"), ENOENT),
                (create("etc/os-release-extra", true, false, 0o644), OK),
                (read("etc/os-release-extra"), Data(b"")),
                (append("etc/os-release-extra", b'q', 3), OK),
                (read("etc/os-release-extra"), Data(b"qrs")),
                (stat("etc/os-release-extra"), Nlink(1)),
                (
                    list("etc"),
                    Names(vec!["group", "os-release", "os-release-extra", "passwd"]),
                ),
                (stat("usr/share/doc/pkg/sub"), ENOENT),
                (
                    create("usr/share/doc/pkg/sub/one", false, false, 0o644),
                    ENOENT,
                ),
                (mkdir("usr/share/doc/pkg/sub", 0o755), OK),
                (list("usr/share/doc/pkg/sub"), Names(vec![])),
                (create("usr/share/doc/pkg/sub/one", true, false, 0o644), OK),
                (read("usr/share/doc/pkg/sub/one"), Data(b"")),
                (create("opt/data/file1", true, false, 0o644), OK),
                (read("opt/data/file1"), Data(b"")),
                (symlink("a", "opt/data/old-only-in-layer0"), OK),
                (
                    stat("opt/data/old-only-in-layer0"),
                    Meta("symlink", 0o777, 0),
                ),
                (
                    list("opt/data"),
                    Names(vec!["file1", "new", "old-only-in-layer0"]),
                ),
            ],
        ),
        (
            "mkdir over whiteouts",
            vec![
                (mkdir("etc/os-release-extra", 0o700), OK),
                (list("etc/os-release-extra"), Names(vec![])),
                (stat("etc/os-release-extra"), Meta("dir", 0o700, 0)),
                (unlink("etc/passwd"), OK),
                (mkdir("etc/passwd", 0o755), OK),
                (list("etc/passwd"), Names(vec![])),
                (unlink("home/user/secret"), OK),
                (rmdir("home/user"), OK),
                (mkdir("home/user", 0o755), OK),
                (list("home/user"), Names(vec![])),
                (stat("home/user"), Meta("dir", 0o755, 0)),
                (rmdir("usr/share/doc/pkg/sub"), ENOENT),
                (mkdir("opt/data/file2", 0o755), OK),
                (list("opt/data/file2"), Names(vec![])),
            ],
        ),
        (
            "unlink of the hard link a-link, nlink of a; links across copy-up",
            vec![
                (stat("usr/share/doc/pkg/a"), Nlink(2)),
                (unlink("usr/share/doc/pkg/a-link"), OK),
                (stat("usr/share/doc/pkg/a"), Nlink(1)),
                (read("usr/share/doc/pkg/a"), Any),
                (link("usr/share/doc/pkg/a", "usr/share/doc/pkg/b"), OK),
                (stat("usr/share/doc/pkg/a"), Nlink(2)),
                (append("usr/share/doc/pkg/b", b'z', 2), OK),
                (read("usr/share/doc/pkg/a"), Any),
                (stat("usr/share/doc/pkg/a"), Any),
            ],
        ),
        (
            "a write through one name of a lower hard link shows through the other",
            vec![
                (append("usr/share/doc/pkg/a", b'x', 3), OK),
                (read("usr/share/doc/pkg/a-link"), Any),
                (stat("usr/share/doc/pkg/a-link"), Nlink(2)),
                (link("usr/share/doc/pkg/a-link", "tmp/c"), OK),
                (stat("usr/share/doc/pkg/a"), Nlink(3)),
                (unlink("usr/share/doc/pkg/a"), OK),
                (stat("usr/share/doc/pkg/a-link"), Nlink(2)),
                (rename("usr/share/doc/pkg/a-link", "etc/a", 0), OK),
                (stat("etc/a"), Nlink(2)),
                (read("tmp/c"), Any),
                (chown("tmp/c", 1000, 1000, false), OK),
                (stat("etc/a"), Meta("file", 0o644, 1000)),
            ],
        ),
        (
            "RENAME_EXCHANGE of a file and a directory, and of two lower directories",
            vec![
                (rename("etc/os-release", "usr/share/doc/pkg", EXCHANGE), OK),
                (list("etc/os-release"), pkg()),
                (read("usr/share/doc/pkg"), Any),
                (stat("usr/share/doc/pkg"), Meta("file", 0o644, 0)),
                (create("etc/os-release/c", true, false, 0o644), OK),
                (rename("etc/os-release", "usr/share/doc/pkg", EXCHANGE), OK),
                (
                    list("usr/share/doc/pkg"),
                    Names(vec!["README", "a", "a-link", "c", "copyright"]),
                ),
                (read("etc/os-release"), Any),
                (rename("opt/data", "home/user", EXCHANGE), OK),
                (list("opt/data"), Names(vec!["secret"])),
                (list("home/user"), Names(vec!["new"])),
                (stat("opt/data"), Meta("dir", 0o750, 1000)),
                (rename("tmp", "n", EXCHANGE), ENOENT),
                (rename("etc", "etc/group", EXCHANGE), Any),
                (rename("opt/data/secret", "home/user", EXCHANGE), OK),
                (list("opt/data"), Names(vec!["secret"])),
                (list("opt/data/secret"), Names(vec!["new"])),
            ],
        ),
        (
            "RENAME_NOREPLACE, renames over existing and hidden names",
            vec![
                (rename("etc/group", "etc/passwd", NOREPLACE), EEXIST),
                (rename("etc/group", "etc/passwd", 0), OK),
                (stat("etc/group"), ENOENT),
                (
                    rename("etc/os-release", "etc/os-release-extra", NOREPLACE),
                    OK,
                ),
                (rename("opt/data/new", "opt/data/file1", NOREPLACE), OK),
                (list("opt/data"), Names(vec!["file1"])),
                // two names of one inode: rename does nothing
                (
                    rename("usr/share/doc/pkg/a", "usr/share/doc/pkg/a-link", 0),
                    OK,
                ),
                (list("usr/share/doc/pkg"), pkg()),
                (
                    rename("usr/share/doc/pkg/README", "usr/share/doc/pkg/sub", 0),
                    OK,
                ),
                (stat("usr/share/doc/pkg/sub"), Meta("file", 0o644, 0)),
                (
                    rename("home/user", "usr/share/doc/pkg/sub", 0),
                    Expect::Err(libc::ENOTDIR),
                ),
                (
                    rename("usr/share/doc/pkg/sub", "home", 0),
                    Expect::Err(libc::EISDIR),
                ),
            ],
        ),
        (
            "metadata: chown, chmod, utimes, xattrs, fifos, symlinks",
            vec![
                (chown("usr/share/doc/pkg/a", 1000, 1000, false), OK),
                (stat("usr/share/doc/pkg/a-link"), Meta("file", 0o644, 1000)),
                (utimes("etc/os-release", 1_600_000_000, 5, false), OK),
                (stat("etc/os-release"), Any),
                (
                    setxattr("usr/share/doc/pkg/README", "user.x", "1", XCREATE),
                    OK,
                ),
                (
                    setxattr("usr/share/doc/pkg/README", "user.x", "2", XCREATE),
                    EEXIST,
                ),
                (
                    removexattr("usr/share/doc/pkg/README", "user.y"),
                    Expect::Err(libc::ENODATA),
                ),
                (
                    setxattr("usr/share/doc/pkg/README", "user.y", "2", XREPLACE),
                    Expect::Err(libc::ENODATA),
                ),
                (stat("usr/share/doc/pkg/README"), Any),
                (symlink("a", "tmp/l"), OK),
                (
                    setxattr("tmp/l", "user.x", "1", 0),
                    Expect::Err(libc::EPERM),
                ),
                (utimes("tmp/l", 1_650_000_000, 0, true), OK),
                (stat("tmp/l"), Meta("symlink", 0o777, 0)),
                (mkfifo("tmp/f"), OK),
                (write("tmp/f", 0, b'a', 1), Expect::Err(libc::ENXIO)),
                (read("tmp/f"), Data(b"")),
                (chmod("home/user/secret", 0o4755), OK),
                (chown("home/user/secret", -1, 0, false), OK),
                (stat("home/user/secret"), Meta("file", 0o755, 1000)),
                (chmod("tmp", 0o755), OK),
                (chown("home/user", 0, 0, true), OK),
                (stat("home/user"), Meta("dir", 0o750, 0)),
                (truncate("etc/passwd", 70_000), OK),
                (read("etc/passwd"), Any),
                (truncate("etc/passwd", 3), OK),
                (stat("etc/passwd"), Any),
            ],
        ),
    ]
}

#[test]
fn fixed_tricky_sequences_agree() {
    let Some(env) = Env::new() else {
        return;
    };
    let mut failures = Vec::new();
    let seqs = fixed_sequences();
    for (name, steps) in &seqs {
        let (ops, expect): (Vec<Op>, Vec<Expect>) = steps.iter().cloned().unzip();
        if let Err(e) = run_case_checked(&env, &ops, &expect, true) {
            failures.push(format!("--- {name}:\n{e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixed sequences failed on {:?}:\n{}",
        failures.len(),
        seqs.len(),
        env.names(),
        failures.join("\n")
    );
    eprintln!(
        "rw_diff: {} fixed sequences agree on {:?}",
        seqs.len(),
        env.names()
    );
}
