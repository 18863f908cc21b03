//! Attributes: what `stat(2)` shows for a node, from the branch (`lstat`,
//! the rootless override, or an open handle once unlinked) or from the
//! lower entry that gives its metadata; directory nlink (counted once,
//! then kept current); statfs.
//!
//! Not here: changing attributes (`setattr`), extended attributes
//! (`xattr`), the hard-link counts of lower files (`inodes`).

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Attr, VResult, Vfs};
use crate::layer::index::Kind;
use crate::sys::{self, Obj};
use crate::union::Resolved;
use crate::upper::Meta;

/// A tar-style time (seconds since the Unix epoch, possibly negative, plus
/// nanoseconds) as a [`SystemTime`].
pub fn to_system_time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

impl Vfs {
    /// `stat` of node `ino`, as the mount shows it.
    pub fn getattr(&self, ino: u64) -> VResult<Attr> {
        let _r = self.reading();
        self.attr(ino)
    }

    /// Attributes as the mount shows them (owners mapped).
    pub(super) fn attr(&self, ino: u64) -> VResult<Attr> {
        let mut a = self.stored_attr(ino)?;
        (a.uid, a.gid) = self.owners.shown(a.uid, a.gid);
        Ok(a)
    }

    /// Attributes with the owners as stored.
    pub(super) fn stored_attr(&self, ino: u64) -> VResult<Attr> {
        let (kind, upper, lower) = self.state(ino)?;
        if upper {
            return self.upper_attr(ino, kind);
        }
        let r = lower.ok_or(libc::ESTALE)?;
        self.lower_attr(ino, &r)
    }

    /// 2 + the merged subdirectories, counted once per directory and then
    /// kept current by the changes (`adjust_subdirs`): a getattr of a busy
    /// directory must not list it.
    ///
    /// Over directory layers read lazily (`mount-branches`), a directory
    /// merged from more than one directory (lower ones, or the rw
    /// branch's and a lower one) has nlink 1, as kernel overlayfs shows
    /// it: counting would list every directory merged into it, and a
    /// `readdirplus` of a merged directory would then list each of its
    /// subdirectories in every branch (README, benchmark section: `ls` of
    /// the root of 128 branches, cold). `find` and
    /// `fts` read 1 as "not counted". A directory of one directory layer
    /// alone shows that directory's own link count (one `lstat`), as
    /// kernel overlayfs shows a directory that is not merged: counting
    /// would list it, and a `readdirplus` of its parent would then list
    /// every subdirectory (README, benchmark section: a 100,000-file
    /// lowerdir).
    fn dir_nlink(&self, ino: u64) -> VResult<u32> {
        let (subdirs, merged, single) = {
            let nodes = self.nodes.read();
            let n = nodes.node(ino)?;
            let (lower, single) = match n.place.lower() {
                Some(crate::union::Resolved::Dir(srcs)) => (srcs.len(), srcs.first().copied()),
                _ => (0, None),
            };
            let merged = lower + usize::from(n.place.upper()) > 1;
            (n.subdirs, merged, single.filter(|_| !merged))
        };
        if let Some(n) = subdirs {
            return Ok(2 + n);
        }
        if merged && self.lazy_layers {
            return Ok(1);
        }
        if let Some((l, i)) = single {
            let layer = &self.layers[l as usize];
            if let Some(root) = layer.dir() {
                let p = root.join(std::ffi::OsStr::from_bytes(&layer.index.path(i)));
                if let Ok(st) = crate::sys::lstat(&p) {
                    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                        return Ok(st.st_nlink as u32);
                    }
                }
            }
        }
        let n = self
            .list(ino)?
            .iter()
            .filter(|d| d.kind == Kind::Dir)
            .count() as u32;
        self.with_node(ino, |node| node.subdirs = Some(n))?;
        Ok(2 + n)
    }

    /// A directory of `ino` appeared (`delta` 1) or went (-1).
    pub(super) fn adjust_subdirs(&self, ino: u64, delta: i32) {
        // Only for a node in the table (its callers looked it up).
        let _ = self.with_node(ino, |n| {
            if let Some(k) = n.subdirs.as_mut() {
                *k = k.saturating_add_signed(delta);
            }
        });
    }

    fn upper_attr(&self, ino: u64, kind: Kind) -> VResult<Attr> {
        let up = self.up()?;
        let p = match self.upath(ino) {
            Ok(p) => p,
            // Unlinked but still open: fstat through a handle.
            Err(e) if e.errno() == libc::ENOENT => return self.open_file_attr(ino, kind),
            Err(e) => return Err(e),
        };
        let st = sys::lstat(&p)?;
        let meta = up.meta_of(&p, &st);
        let (size, nlink) = if kind == Kind::Dir {
            (4096, self.dir_nlink(ino)?)
        } else {
            (st.st_size as u64, st.st_nlink as u32)
        };
        let perm = if kind == Kind::Symlink {
            0o777
        } else {
            meta.perm
        };
        Ok(Attr {
            ino,
            kind,
            perm: perm as u16,
            uid: meta.uid,
            gid: meta.gid,
            size,
            blocks: st.st_blocks as u64,
            nlink,
            atime: to_system_time(st.st_atime, st.st_atime_nsec as u32),
            mtime: to_system_time(st.st_mtime, st.st_mtime_nsec as u32),
            ctime: to_system_time(st.st_ctime, st.st_ctime_nsec as u32),
            rdev: meta.rdev as u32,
        })
    }

    /// Attributes of a file that has no name left, from an open handle.
    fn open_file_attr(&self, ino: u64, kind: Kind) -> VResult<Attr> {
        let (st, meta) = self.open_meta(&*self.open_file_of(ino)?)?;
        Ok(Attr {
            ino,
            kind,
            perm: meta.perm as u16,
            uid: meta.uid,
            gid: meta.gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            nlink: st.st_nlink as u32,
            atime: to_system_time(st.st_atime, st.st_atime_nsec as u32),
            mtime: to_system_time(st.st_mtime, st.st_mtime_nsec as u32),
            ctime: to_system_time(st.st_ctime, st.st_ctime_nsec as u32),
            rdev: st.st_rdev as u32,
        })
    }

    /// The `fstat` of open upper file `f` and the owner and mode the mount
    /// shows for it (rootless: what its override xattr records).
    fn open_meta(&self, f: &File) -> VResult<(libc::stat, Meta)> {
        let o = Obj::File(f);
        let st = sys::stat_obj(o)?;
        let meta = match &self.upper {
            Some(up) => up.meta_of_obj(o, &st),
            None => Meta::from_stat(&st),
        };
        Ok((st, meta))
    }

    /// Does open upper file `f` carry a setuid or setgid bit (as shown)?
    pub fn file_is_setid(&self, f: &File) -> bool {
        self.open_meta(f)
            .is_ok_and(|(_, m)| m.perm & (libc::S_ISUID | libc::S_ISGID) != 0)
    }

    fn lower_attr(&self, ino: u64, r: &Resolved) -> VResult<Attr> {
        let src = r.meta_source(&self.layers);
        let e = self.entry_of(src);
        let idx = &self.layers[src.0 as usize].index;
        // A file still open after its last name went (unlinked, renamed
        // over) has no link left, whatever its layer says.
        let links = |v: &Self| match v.nameless(ino) {
            true => 0,
            false => v.visible_nlink(ino, src, &e),
        };
        let (size, nlink) = match e.kind {
            Kind::Dir => (4096, self.dir_nlink(ino)?),
            Kind::Symlink => (idx.target(&e).len() as u64, links(self)),
            _ => (e.size, links(self)),
        };
        // Linux shows every symlink as 0777, whatever the tar header says.
        let mode = if e.kind == Kind::Symlink {
            0o777
        } else {
            e.mode & 0o7777
        };
        let t = to_system_time(e.mtime, e.mtime_nsec);
        Ok(Attr {
            ino,
            kind: e.kind,
            perm: mode as u16,
            uid: e.uid,
            gid: e.gid,
            size,
            blocks: allocated_blocks(e.kind, size),
            nlink,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: e.rdev() as u32,
        })
    }

    /// (blocks, bfree, bavail, files, ffree, bsize) for statfs: the upper
    /// branch's filesystem when there is one, else the layers' totals.
    pub fn statfs(&self) -> (u64, u64, u64, u64, u64, u32) {
        // The rw branch's file system; else that of the first directory
        // layer (counting a lazy layer's files would walk it whole).
        let fs_dir = match &self.upper {
            Some(u) => Some(u.root()),
            None => self.layers.iter().find_map(|l| l.dir()),
        };
        if let Some(st) = fs_dir.and_then(|d| sys::statvfs(d).ok()) {
            return (
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_frsize as u32,
            );
        }
        let (bytes, files) = self.layers.iter().fold((0, 0), |(b, f), l| {
            (b + l.index.tar_size(), f + l.index.len() as u64)
        });
        (bytes.div_ceil(4096), 0, 0, files, 0, 4096)
    }
}

/// `st_blocks` (512-byte units) of a lower entry: what a filesystem with
/// 4 KiB blocks would allocate for it, as `du` expects from the extracted
/// tree (kernel overlayfs shows the lower filesystem's): a file's data in
/// whole blocks, a directory at least one block, a symlink a block only
/// when its target does not fit in the inode (ext4 keeps up to 59 bytes
/// there); devices and fifos none.
fn allocated_blocks(kind: Kind, size: u64) -> u64 {
    const BLOCK: u64 = 4096;
    match kind {
        Kind::File => size.div_ceil(BLOCK) * (BLOCK / 512),
        Kind::Dir => size.div_ceil(BLOCK).max(1) * (BLOCK / 512),
        Kind::Symlink if size >= 60 => BLOCK / 512,
        _ => 0,
    }
}
