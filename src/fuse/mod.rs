//! The fuser adapter: decodes each request, calls [`Vfs`], and replies
//! exactly once. No filesystem logic lives here.
//!
//! Caching: layers are immutable and every change of a read-write mount
//! goes through this daemon, so the kernel may cache entries and attributes
//! for a long time (`TTL`), keep file contents in the page cache across
//! opens (`FOPEN_KEEP_CACHE`) and directory listings too
//! (`FOPEN_CACHE_DIR`): the kernel itself updates or drops what a change
//! made through the mount touches (see ARCHITECTURE.md, "Kernel caches").
//!
//! Passthrough: a file backed by a whole real file (in the rw branch, or of
//! a directory layer on a read-only mount) is opened with
//! `FOPEN_PASSTHROUGH` when the daemon may register backing files (it needs
//! CAP_SYS_ADMIN): the kernel then reads, writes and maps it directly, no
//! READ/WRITE request comes here. The kernel holds one backing file per
//! inode and refuses to mix: while an inode is open for passthrough every
//! open of it must be passthrough to the same backing id, and while it is
//! open through its page cache none may be (both answered with EIO). So
//! `IoModes` counts the open handles of each inode by mode and decides
//! each open from them; its counts cover the kernel's (a handle counts from
//! before its reply until its RELEASE, which the kernel sends after it
//! dropped its own count), so it never picks a mode the kernel refuses.
//!
//! Errors: every error reply goes through `reply_error`, which logs it
//! once with the request and inode: errnos that are an answer (ENOENT,
//! EEXIST, EACCES...) at debug level, the others (EIO, ENOSPC...) as a
//! warning carrying the filesystem's message (a copy-up that failed names
//! the file and the step). Each request runs in a debug-level span named
//! after it, with its inode.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

mod io;
mod reply;

use io::{IoModes, OpenMode};
use reply::{
    caller, caller_with_umask, file_type, fuse_attr, negative_attr, reply_empty, reply_entry,
    reply_error, reply_read_only_open, reply_xattr, time_spec,
};

use crate::fs::{Error, SetAttr, Vfs};

/// How long the kernel may cache entries and attributes of immutable layers.
const TTL: Duration = Duration::from_secs(3600);

/// The [`fuser::Filesystem`] of a mount: [`Vfs`] plus what was negotiated
/// with the kernel at INIT and the I/O mode of every open handle.
pub struct LayerFs {
    vfs: Arc<Vfs>,
    /// The kernel opens files (directories) without OPEN (OPENDIR) once
    /// told ENOSYS: used on read-only mounts where it supports that, and
    /// for files of writable mounts without passthrough.
    no_open: bool,
    no_opendir: bool,
    /// Read-only and no xattr anywhere: GETXATTR answers ENOSYS, after
    /// which the kernel answers every getxattr(2) with EOPNOTSUPP itself.
    no_getxattr: bool,
    /// `-o noxattrs=1`: a mount without extended attributes; every xattr
    /// request answers ENOSYS (the kernel then answers EOPNOTSUPP itself).
    no_xattrs: bool,
    /// SELinux is active on the host (its LSM then answers security.selinux
    /// itself); else a missing label answers EOPNOTSUPP
    /// ([`crate::fs::missing_xattr`]).
    labels_active: bool,
    /// FUSE_HANDLE_KILLPRIV_V2 negotiated (read-write mounts): the kernel
    /// no longer asks for security.capability before every write (one
    /// GETXATTR per inode, where it was one per write(2)), and leaves
    /// clearing setuid/setgid to us: on a WRITE that says so, on a
    /// truncation or O_TRUNC open by anyone but root, and on chown.
    killpriv: bool,
    /// Passthrough allowed (`-o passthrough=off` clears it).
    passthrough_wanted: bool,
    /// Passthrough negotiated at INIT and backing files can be registered
    /// (cleared when the kernel refuses that for good).
    passthrough: AtomicBool,
    io: parking_lot::Mutex<IoModes>,
}

impl LayerFs {
    /// The filesystem of `vfs`, with passthrough allowed and nothing
    /// negotiated yet.
    pub fn new(vfs: Arc<Vfs>) -> LayerFs {
        LayerFs {
            no_getxattr: vfs.has_no_xattrs(),
            no_xattrs: false,
            labels_active: crate::sys::selinux_active(),
            vfs,
            no_open: false,
            no_opendir: false,
            passthrough_wanted: true,
            passthrough: AtomicBool::new(false),
            killpriv: false,
            io: parking_lot::Mutex::new(IoModes::default()),
        }
    }

    /// Allows or forbids FUSE passthrough (allowed by default; used only
    /// where the daemon has CAP_SYS_ADMIN and the kernel offers it).
    pub fn with_passthrough(mut self, on: bool) -> LayerFs {
        self.passthrough_wanted = on;
        self
    }

    /// `-o noxattrs=1` (fuse-overlayfs' option): no extended attributes
    /// at all, get, set, list or remove (and so no ACLs), for the price of
    /// no xattr round trip ever (`ls -l` asks every file for
    /// security.selinux, which no kernel cache keeps).
    pub fn without_xattrs(mut self, on: bool) -> LayerFs {
        self.no_xattrs = on;
        self.no_getxattr |= on;
        self
    }

    /// `r`, an entry about to be replied, counted as handed to the kernel
    /// (LOOKUP and readdirplus count theirs in `Vfs`).
    fn handed_out(
        &self,
        r: crate::fs::VResult<crate::fs::Attr>,
    ) -> crate::fs::VResult<crate::fs::Attr> {
        r.inspect(|a| self.vfs.hand_out(a.ino))
    }

    /// Clears the setuid/setgid bits of `ino` as a write or truncation by
    /// a caller without CAP_FSETID does (killpriv: the kernel leaves it to
    /// us). Best effort: the write itself goes on, as the kernel's would.
    fn kill_suid(&self, req: &Request, ino: u64, fh: Option<u64>) {
        if !self.killpriv {
            return;
        }
        if let Err(e) = self.vfs.kill_suid(ino, fh, caller(req)) {
            tracing::warn!(ino, "clearing setuid/setgid: {e}");
        }
    }
}

impl Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        // readdirplus: a listing carries each entry's attributes, so a walk
        // (`find`, `ls -l`) needs no lookup per name. Every chunk, not
        // READDIRPLUS_AUTO: that gives readdirplus only at offset 0 unless
        // a lookup came in between, and `find` reads a directory to its end
        // before it stats the entries, so every chunk after the first (a
        // directory of more than ~200 names) cost one LOOKUP per name.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let caps = config.capabilities();
        // Passthrough only where some file is a whole real file, and only
        // for a daemon whose backing files the kernel accepts. Depth 1:
        // backing files on a non-stacked filesystem, and the mount itself
        // can still be a lower layer of overlayfs.
        if self.passthrough_wanted
            && (self.vfs.is_rw() || self.vfs.has_directory_layers())
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && crate::sys::may_open_backing_files()
            && config.set_max_stack_depth(1).is_ok()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        tracing::info!(
            passthrough = self.passthrough.load(Ordering::Relaxed),
            "FUSE session initialized"
        );
        if self.vfs.is_rw() {
            if !self.passthrough.load(Ordering::Relaxed)
                && caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT)
            {
                // Zero-message opens here too, where no file can be
                // passthrough (which needs an OPEN to answer): an OPEN and
                // a RELEASE per open(2) cost a container's reads of lower
                // files most of their time. The kernel then truncates for
                // O_TRUNC with a SETATTR (no FUSE_ATOMIC_O_TRUNC, which it
                // would leave to an OPEN that never comes), and a lower
                // file is copied up at its first write or truncation.
                self.no_open = true;
                self.vfs.set_kernel_opens();
            } else {
                // O_TRUNC reaches open (else the kernel truncates with a
                // separate SETATTR after a full copy-up).
                let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
            }
            self.killpriv = caps.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                && config
                    .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                    .is_ok();
            // Kernel-cached ACLs (`ls -l` asks every file for its ACL) also
            // on writable mounts, where the branch's filesystem keeps mode
            // and ACL in step. Both or neither: with FUSE_POSIX_ACL the
            // VFS no longer applies the umask, and FUSE_DONT_MASK makes
            // the kernel send modes unmasked, so a new object gets its
            // parent's default ACL or the umask here (see doc/SEMANTICS.md,
            // "ACLs on writable mounts").
            let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
            if self.vfs.may_share_acls()
                && !self.no_xattrs
                && caps.contains(acl)
                && config.add_capabilities(acl).is_ok()
            {
                self.vfs.set_kernel_acls();
            }
        } else {
            // Zero-message opens even with directory layers: an OPEN and a
            // RELEASE round trip per file cost far more (README, benchmark
            // section: reading many small files warm) than passthrough
            // saves on big ones;
            // their reads then open the file by path (an LRU of fds).
            self.no_open = caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
            self.no_opendir = caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
            if self.vfs.owners_identity() && !self.no_xattrs {
                // The kernel then reads system.posix_acl_* once per inode
                // and caches it (and enforces ACLs a layer carries): `ls -l`
                // asks for them on every file. Not with owner mapping (the
                // ids inside an ACL are stored ids, which the kernel would
                // not map). Nothing is created here, so no umask to apply.
                let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = tracing::debug_span!("lookup", ino = parent.0, ?name).entered();
        match self.vfs.lookup(parent.0, name.as_bytes()) {
            // A negative entry the kernel may keep for the TTL (node id 0),
            // instead of asking again on every access to the name: a name
            // appears only through this mount (see ARCHITECTURE.md,
            // "Kernel caches"), and the kernel drops a cached negative
            // entry itself when it creates the name.
            Err(e) if e.errno() == libc::ENOENT => {
                reply.entry(&TTL, &negative_attr(), Generation(0))
            }
            r => reply_entry(reply, "lookup", parent.0, r),
        }
    }

    // BATCH_FORGET comes here too, one call per node: fuser's default
    // `batch_forget` (its `ForgetOne` is not exported, so it cannot be
    // overridden).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = tracing::debug_span!("getattr", ino = ino.0).entered();
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &fuse_attr(&a)),
            Err(e) => reply_error(reply, "getattr", ino.0, e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = tracing::debug_span!("readlink", ino = ino.0).entered();
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply_error(reply, "readlink", ino.0, e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _s = tracing::debug_span!("open", ino = ino.0).entered();
        if self.no_open {
            if self.vfs.is_rw() {
                // The first OPEN: from now on the kernel opens files itself.
                return reply_error(reply, "open", ino.0, Error::new(libc::ENOSYS));
            }
            return reply_read_only_open(reply, "open", ino.0, flags);
        }
        let fh = match self.vfs.open(ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply_error(reply, "open", ino.0, e),
        };
        if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
            self.kill_suid(req, ino.0, Some(fh));
        }
        match self.open_mode(ino.0, fh, |f| reply.open_backing(f)) {
            OpenMode::Passthrough(b) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b)
            }
            OpenMode::Cached(flags) => reply.opened(FileHandle(fh), flags),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = tracing::debug_span!("read", ino = ino.0).entered();
        tracing::debug!(ino = ino.0, fh = fh.0, offset, size, "read");
        match self.vfs.read(ino.0, fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply_error(reply, "read", ino.0, e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _f: OpenFlags,
        _l: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = tracing::debug_span!("write", ino = ino.0).entered();
        tracing::debug!(ino = ino.0, fh = fh.0, offset, size = data.len(), "write");
        if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            self.kill_suid(req, ino.0, Some(fh.0));
        }
        match self.vfs.write(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply_error(reply, "write", ino.0, e),
        }
    }

    fn flush(&self, _r: &Request, ino: INodeNo, _fh: FileHandle, _l: LockOwner, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("flush", ino = ino.0).entered();
        // Nothing is buffered here (writes go straight to the upper file):
        // ENOSYS tells the kernel to stop sending FLUSH on every close.
        reply_error(reply, "flush", ino.0, Error::new(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("release", ino = ino.0).entered();
        self.closed(fh.0);
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _r: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("fsync", ino = ino.0).entered();
        reply_empty(reply, "fsync", ino.0, self.vfs.fsync(ino.0, fh.0, datasync));
    }

    fn fallocate(
        &self,
        _r: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("fallocate", ino = ino.0).entered();
        let r = self.vfs.fallocate(ino.0, fh.0, offset, length, mode);
        reply_empty(reply, "fallocate", ino.0, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _s = tracing::debug_span!("opendir", ino = ino.0).entered();
        if self.no_opendir {
            return reply_read_only_open(reply, "opendir", ino.0, flags);
        }
        match self.vfs.opendir(ino.0) {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply_error(reply, "opendir", ino.0, e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _s = tracing::debug_span!("readdir", ino = ino.0).entered();
        let list = match self.vfs.dir_listing(ino.0, fh.0, offset) {
            Ok(l) => l,
            Err(e) => return reply_error(reply, "readdir", ino.0, e),
        };
        // Offsets: 1 = ".", 2 = "..", 3 + i = list[i]. The parent's inode
        // number is not tracked; the kernel ignores d_ino of "..".
        let dots = [(ino.0, "."), (ino.0, "..")];
        for (i, (dino, name)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*dino), i as u64 + 1, FileType::Directory, name) {
                return reply.ok();
            }
        }
        let start = (offset as usize).saturating_sub(2);
        for (i, d) in list.iter().enumerate().skip(start) {
            if reply.add(
                INodeNo(d.ino),
                i as u64 + 3,
                file_type(d.kind),
                OsStr::from_bytes(&d.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _s = tracing::debug_span!("readdirplus", ino = ino.0).entered();
        let list = match self.vfs.dir_listing(ino.0, fh.0, offset) {
            Ok(l) => l,
            Err(e) => return reply_error(reply, "readdirplus", ino.0, e),
        };
        let dir = match self.vfs.getattr(ino.0) {
            Ok(a) => fuse_attr(&a),
            Err(e) => return reply_error(reply, "readdirplus", ino.0, e),
        };
        // Same offsets as readdir; the kernel makes no dentries for the dots.
        for (i, name) in [".", ".."].iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, name, &TTL, &dir, Generation(0)) {
                return reply.ok();
            }
        }
        let start = (offset as usize).saturating_sub(2);
        for (i, d) in list.iter().enumerate().skip(start) {
            // The kernel links each entry to its name for the TTL: give
            // what the name is now (an entry removed since the listing was
            // taken is left out, one replaced shows its new inode).
            // Counted as handed out; given back if it did not fit.
            let Some(a) = self.vfs.current_entry(ino.0, &d.name) else {
                continue;
            };
            if reply.add(
                INodeNo(a.ino),
                i as u64 + 3,
                OsStr::from_bytes(&d.name),
                &TTL,
                &fuse_attr(&a),
                Generation(0),
            ) {
                self.vfs.forget(a.ino, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("releasedir", ino = ino.0).entered();
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _r: &Request, ino: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("fsyncdir", ino = ino.0).entered();
        reply_empty(reply, "fsyncdir", ino.0, self.vfs.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _s = tracing::debug_span!("statfs", ino = ino.0).entered();
        let (blocks, bfree, bavail, files, ffree, bsize) = self.vfs.statfs();
        reply.statfs(blocks, bfree, bavail, files, ffree, bsize, 255, bsize);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _s = tracing::debug_span!("getxattr", ino = ino.0, ?name).entered();
        // `ls -l` asks every file for security.selinux, ACL checks ask
        // for system.posix_acl_*, exec for security.capability: with no
        // xattr in the image, one ENOSYS ends those round trips for the
        // life of the mount (listxattr still answers: an empty list).
        if self.no_getxattr {
            reply_error(reply, "getxattr", ino.0, Error::new(libc::ENOSYS));
            return;
        }
        match self.vfs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => reply_xattr(reply, "getxattr", ino.0, size, &v),
            Err(e) => {
                let e = crate::fs::missing_xattr(name.as_bytes(), e, self.labels_active);
                reply_error(reply, "getxattr", ino.0, e)
            }
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _s = tracing::debug_span!("listxattr", ino = ino.0).entered();
        if self.no_xattrs {
            return reply_error(reply, "listxattr", ino.0, Error::new(libc::ENOSYS));
        }
        match self.vfs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, "listxattr", ino.0, size, &v),
            Err(e) => reply_error(reply, "listxattr", ino.0, e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("access", ino = ino.0).entered();
        match self.vfs.getattr(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) && !self.vfs.is_rw() => {
                reply_error(reply, "access", ino.0, Error::new(libc::EROFS))
            }
            Ok(_) => reply.ok(),
            Err(e) => reply_error(reply, "access", ino.0, e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _s = tracing::debug_span!("setattr", ino = ino.0).entered();
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_spec(atime),
            mtime: time_spec(mtime),
        };
        // The setuid/setgid rules (killpriv) are the filesystem's.
        let r = self
            .vfs
            .setattr_request(ino.0, fh.map(|f| f.0), s, caller(req), self.killpriv);
        match r {
            Ok(a) => reply.attr(&TTL, &fuse_attr(&a)),
            Err(e) => reply_error(reply, "setattr", ino.0, e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("mknod", ino = parent.0, ?name).entered();
        let who = caller_with_umask(req, umask);
        let r = self.vfs.mknod(parent.0, name.as_bytes(), mode, rdev, who);
        reply_entry(reply, "mknod", parent.0, self.handed_out(r));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("mkdir", ino = parent.0, ?name).entered();
        let who = caller_with_umask(req, umask);
        let r = self.vfs.mkdir(parent.0, name.as_bytes(), mode, who);
        reply_entry(reply, "mkdir", parent.0, self.handed_out(r));
    }

    fn unlink(&self, _r: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("unlink", ino = parent.0, ?name).entered();
        let r = self.vfs.unlink(parent.0, name.as_bytes());
        reply_empty(reply, "unlink", parent.0, r);
    }

    fn rmdir(&self, _r: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("rmdir", ino = parent.0, ?name).entered();
        let r = self.vfs.rmdir(parent.0, name.as_bytes());
        reply_empty(reply, "rmdir", parent.0, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _s = tracing::debug_span!("symlink", ino = parent.0, ?name).entered();
        let r = self.vfs.symlink(
            parent.0,
            name.as_bytes(),
            target.as_os_str().as_bytes(),
            caller(req),
        );
        reply_entry(reply, "symlink", parent.0, self.handed_out(r));
    }

    fn rename(
        &self,
        _r: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!(
            "rename",
            ino = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        )
        .entered();
        let r = self.vfs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
        reply_empty(reply, "rename", parent.0, r);
    }

    fn link(
        &self,
        _r: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s =
            tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        let r = self.vfs.link(ino.0, newparent.0, newname.as_bytes());
        reply_entry(reply, "link", ino.0, self.handed_out(r));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _s = tracing::debug_span!("create", ino = parent.0, ?name).entered();
        let who = caller_with_umask(req, umask);
        let r = self.vfs.create(parent.0, name.as_bytes(), mode, flags, who);
        match r.inspect(|(a, _)| self.vfs.hand_out(a.ino)) {
            Ok((a, fh)) => match self.open_mode(a.ino, fh, |f| reply.open_backing(f)) {
                OpenMode::Passthrough(b) => reply.created_passthrough(
                    &TTL,
                    &fuse_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                    &b,
                ),
                OpenMode::Cached(flags) => {
                    reply.created(&TTL, &fuse_attr(&a), Generation(0), FileHandle(fh), flags)
                }
            },
            Err(e) => reply_error(reply, "create", parent.0, e),
        }
    }

    fn setxattr(
        &self,
        _r: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _s = tracing::debug_span!("setxattr", ino = ino.0, ?name).entered();
        if self.no_xattrs {
            return reply_error(reply, "setxattr", ino.0, Error::new(libc::ENOSYS));
        }
        let r = self.vfs.setxattr(ino.0, name.as_bytes(), value, flags);
        reply_empty(reply, "setxattr", ino.0, r);
    }

    fn removexattr(&self, _r: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("removexattr", ino = ino.0, ?name).entered();
        if self.no_xattrs {
            return reply_error(reply, "removexattr", ino.0, Error::new(libc::ENOSYS));
        }
        let r = self.vfs.removexattr(ino.0, name.as_bytes());
        reply_empty(reply, "removexattr", ino.0, r);
    }
}
