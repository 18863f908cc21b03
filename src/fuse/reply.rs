//! Conversions between fuser's types and the filesystem's (attributes,
//! times, callers), and the replies: every error reply is sent, and
//! logged once, by [`reply_error`].

use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileType, Generation, INodeNo, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};

use super::TTL;
use crate::fs::{Attr, Caller, Error, VResult};
use crate::layer::index::Kind;
use crate::sys::TimeSpec;

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File | Kind::Whiteout => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

pub(super) fn fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0, nothing else read.
pub(super) fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Errnos that are an answer, not a failure: logged at debug level. Any
/// other (EIO, ENOSPC, EDQUOT, ESTALE...) says something went wrong and
/// is logged as a warning.
pub(super) fn expected(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT
            | libc::ENODATA
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::EACCES
            | libc::EPERM
            | libc::EROFS
            | libc::ENOSYS
            | libc::EOPNOTSUPP
            | libc::ENAMETOOLONG
            | libc::EINVAL
            | libc::EXDEV
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::ELOOP
            | libc::ERANGE
    )
}

/// A fuser reply that can carry an errno (each has its own `error`).
pub(super) trait ErrorReply {
    fn send_error(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {
        $(impl ErrorReply for $t {
            fn send_error(self, e: Errno) {
                self.error(e)
            }
        })*
    };
}

error_reply!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyWrite,
    ReplyXattr
);

/// Replies error `e` to request `op` on inode `ino`: the one place an
/// error reply is sent, and where it is logged, once (expected errnos at
/// debug level, others as warnings, with what the filesystem was doing).
pub(super) fn reply_error(reply: impl ErrorReply, op: &'static str, ino: u64, e: Error) {
    let errno = e.errno();
    if expected(errno) {
        tracing::debug!(op, ino, errno, "{e}");
    } else {
        tracing::warn!(op, ino, errno, "{e}");
    }
    reply.send_error(Errno::from_i32(errno));
}

/// Replies to a getxattr/listxattr with `data`, honouring the size probe.
pub(super) fn reply_xattr(reply: ReplyXattr, op: &'static str, ino: u64, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply_error(reply, op, ino, Error::new(libc::ERANGE));
    } else {
        reply.data(data);
    }
}

pub(super) fn time_spec(t: Option<TimeOrNow>) -> Option<TimeSpec> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSpec::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => TimeSpec::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    TimeSpec::At(-(d.as_secs() as i64), 0)
                } else {
                    TimeSpec::At(-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        },
    })
}

pub(super) fn caller(req: &Request) -> Caller {
    caller_with_umask(req, 0)
}

/// [`caller`] of a request that carries the caller's umask (create,
/// mkdir, mknod).
pub(super) fn caller_with_umask(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask,
    }
}

pub(super) fn reply_entry(reply: ReplyEntry, op: &'static str, ino: u64, r: VResult<Attr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &fuse_attr(&a), Generation(0)),
        Err(e) => reply_error(reply, op, ino, e),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, op: &'static str, ino: u64, r: VResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply_error(reply, op, ino, e),
    }
}

/// Opens on a read-only mount. Nothing changes under it and nothing needs a
/// handle (reads go by inode to the mapped layers), so the answer is the
/// zero-message open of FUSE: ENOSYS to the first OPEN (or OPENDIR) makes
/// the kernel open every later file (directory) itself, without OPEN and
/// RELEASE round trips, keeping page cache and cached listings
/// (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR is its default then). Writes were
/// already refused by the kernel (the mount is `ro`), but an open for
/// writing still gets EROFS here.
pub(super) fn reply_read_only_open(reply: ReplyOpen, op: &'static str, ino: u64, flags: OpenFlags) {
    if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
        return reply_error(reply, op, ino, Error::new(libc::EROFS));
    }
    reply_error(reply, op, ino, Error::new(libc::ENOSYS));
}
