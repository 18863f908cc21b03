//! Open files and their I/O: the handle table, opening (a write or O_TRUNC
//! open copies up first), reads from the mapped layer tars, directory
//! layers' files or the branch, writes, fsync, fallocate, readlink, and
//! the real file behind a handle for FUSE passthrough.
//!
//! Not here: the copy-up itself (`copyup`), open directories (`readdir`),
//! the kernel's I/O modes (`fuse::IoModes`).

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{err, DirEntry, Error, ErrorContext, VResult, Vfs};
use crate::layer::index::Kind;
use crate::layer::Layer;
use crate::sys;
use crate::union::Resolved;

/// The handle number of I/O on a file the kernel opened itself
/// (zero-message opens: no OPEN, so no handle of ours).
pub(super) const KERNEL_FH: u64 = 0;

/// An open file or directory.
pub(super) enum Handle {
    File {
        ino: u64,
        /// The upper file, once there is one (opened lazily for readers
        /// of a lower file that was copied up meanwhile).
        file: Mutex<Option<Arc<File>>>,
        /// The file of a directory layer's entry, opened once at open
        /// (reads of a handle do not reopen it by path).
        lower: Option<Arc<File>>,
    },
    /// A directory listing, taken when it is read from offset 0 (not at
    /// opendir: the kernel caches what the first readdir returns as the
    /// state at that call) and kept stable while it is read on.
    Dir(Mutex<Option<Arc<Vec<DirEntry>>>>),
}

impl Vfs {
    /// Gives the handles that opened `ino` while it was lower the copy now
    /// at `p`, so they keep reading it whatever later happens to its names.
    pub(super) fn switch_readers(&self, ino: u64, p: &Path) {
        let handles: Vec<Arc<Handle>> = self.handles.lock().values().cloned().collect();
        for h in handles {
            if let Handle::File { ino: i, file, .. } = &*h {
                let mut f = file.lock();
                if *i == ino && f.is_none() {
                    *f = sys::open(p, libc::O_RDONLY, 0).ok().map(Arc::new);
                }
            }
        }
    }

    /// An open handle's upper file of `ino` (ENOENT if none is open).
    pub(super) fn open_file_of(&self, ino: u64) -> VResult<Arc<File>> {
        if let Some(f) = self.nameless_files.lock().get(&ino) {
            return Ok(f.clone());
        }
        self.handles
            .lock()
            .values()
            .find_map(|h| match &**h {
                Handle::File { ino: i, file, .. } if *i == ino => file.lock().clone(),
                _ => None,
            })
            .ok_or(Error::new(libc::ENOENT))
    }

    pub(super) fn alloc_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned()
    }

    /// Closes a file or directory handle; a node the kernel forgot while
    /// it was open goes with its last handle.
    pub fn release(&self, fh: u64) {
        let h = self.handles.lock().remove(&fh);
        if let Some(Handle::File { ino, .. }) = h.as_deref() {
            if self.nodes.read().node(*ino).is_ok_and(|n| n.forgotten) {
                let _r = self.reading();
                self.drop_idle(vec![*ino]);
            }
        }
    }

    /// Opens file `ino` with open(2) `flags`. Opening for writing, or with
    /// O_TRUNC, copies the file up first (without its data for O_TRUNC).
    pub fn open(&self, ino: u64, flags: i32) -> VResult<u64> {
        let (kind, ..) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EISDIR.into());
        }
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        let mut lower = None;
        let file = if acc != libc::O_RDONLY || trunc {
            self.up()?;
            let staged = self.stage_copy_up(ino, !trunc)?;
            let ch = self.change()?;
            self.copy_up_with(&ch, ino, !trunc, staged)?;
            Some(Arc::new(self.open_upper(ino, flags)?))
        } else {
            let _r = self.reading();
            match self.state(ino)? {
                (_, true, _) => Some(Arc::new(self.open_upper(ino, flags)?)),
                (_, false, Some(Resolved::Leaf(src))) => {
                    let layer = &self.layers[src.0 as usize];
                    lower = open_entry(layer, src.1)?.map(Arc::new);
                    None
                }
                _ => None,
            }
        };
        Ok(self.alloc_handle(Handle::File {
            ino,
            file: Mutex::new(file),
            lower,
        }))
    }

    /// The whole real file behind open handle `fh`, for the kernel to read
    /// and write directly (FUSE passthrough): its upper file, or on a
    /// read-only mount the file of a directory layer. `None` for a file
    /// inside a layer tar, and for a lower file of a read-write mount (a
    /// copy-up while it is open would need a second backing file for the
    /// same inode, which the kernel refuses).
    pub fn backing_file(&self, fh: u64) -> Option<Arc<File>> {
        match self.handle(fh).as_deref() {
            Some(Handle::File { file, lower, .. }) => match file.lock().clone() {
                Some(f) => Some(f),
                None if self.upper.is_none() => lower.clone(),
                None => None,
            },
            _ => None,
        }
    }

    pub(super) fn open_upper(&self, ino: u64, flags: i32) -> VResult<File> {
        let p = self.upath(ino)?;
        let acc = match flags & libc::O_ACCMODE {
            a @ (libc::O_RDONLY | libc::O_WRONLY) => a,
            _ => libc::O_RDWR,
        };
        let keep = flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME);
        let f = sys::open(&p, acc | keep | libc::O_NOFOLLOW, 0)?;
        if flags & libc::O_TRUNC != 0 {
            if acc == libc::O_RDONLY {
                // O_RDONLY|O_TRUNC truncates too (Linux does).
                sys::open(&p, libc::O_WRONLY | libc::O_NOFOLLOW, 0)?.set_len(0)?;
            } else {
                f.set_len(0)?;
            }
        }
        Ok(f)
    }

    /// The upper file behind handle `fh` of node `ino`, if the node is in
    /// the upper branch (opened now for a reader that opened it lower).
    fn upper_file(&self, ino: u64, fh: u64) -> VResult<Option<Arc<File>>> {
        if fh == KERNEL_FH && self.upper.is_some() {
            return self.ino_file(ino, false);
        }
        let h = self.handle(fh);
        if let Some(Handle::File { file, .. }) = h.as_deref() {
            if let Some(f) = file.lock().as_ref() {
                return Ok(Some(f.clone()));
            }
        }
        if !self.state(ino)?.1 {
            return Ok(None);
        }
        let f = {
            let _r = self.reading();
            match self.open_upper(ino, libc::O_RDONLY) {
                Ok(f) => Arc::new(f),
                // Copied up with no name left (`copy_up_nameless`).
                Err(e) if e.errno() == libc::ENOENT => self.open_file_of(ino)?,
                Err(e) => return Err(e),
            }
        };
        if let Some(Handle::File { file, .. }) = h.as_deref() {
            *file.lock() = Some(f.clone());
        }
        Ok(Some(f))
    }

    /// Up to `size` bytes of file `ino` from `offset`: borrowed from the
    /// mapped layer blob, or read from the upper file.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> VResult<Cow<'_, [u8]>> {
        if let Some(f) = self.upper_file(ino, fh)? {
            return read_file_at(&f, offset, size as usize).map(Cow::Owned);
        }
        let (src, e) = match self.leaf(ino) {
            // Copied up since upper_file looked: read the copy.
            Err(e) if e.errno() == libc::ESTALE && self.state(ino)?.1 => {
                let f = self.upper_file(ino, fh)?.ok_or(libc::ESTALE)?;
                return read_file_at(&f, offset, size as usize).map(Cow::Owned);
            }
            r => r?,
        };
        if e.kind != Kind::File {
            return Err(libc::EINVAL.into());
        }
        let start = offset.min(e.size);
        let end = offset.saturating_add(size as u64).min(e.size);
        let layer = &self.layers[src.0 as usize];
        if layer.dir.is_some() {
            let f = match self.handle(fh).as_deref() {
                Some(Handle::File {
                    lower: Some(f),
                    ino: i,
                    ..
                }) if *i == ino => f.clone(),
                // No handle (the kernel opened the file itself): by path,
                // kept open for the next reads.
                _ => self.dir_file(layer, src)?,
            };
            return read_file_at(&f, start, (end - start) as usize).map(Cow::Owned);
        }
        let data = layer.data();
        Ok(Cow::Borrowed(
            &data[(e.data_off + start) as usize..(e.data_off + end) as usize],
        ))
    }

    /// The file of entry `src` of directory layer `layer`, from the cache
    /// of recently read ones or opened by path.
    fn dir_file(&self, layer: &Layer, src: (u16, u32)) -> VResult<Arc<File>> {
        if let Some(f) = self.dir_files.lock().get(&src) {
            return Ok(f.clone());
        }
        let f = open_entry(layer, src.1)?.ok_or_else(|| {
            err!(
                libc::EIO,
                "{} of layer {}: no file to read",
                String::from_utf8_lossy(&layer.index.path(src.1)),
                layer.chain_id
            )
        })?;
        let f = Arc::new(f);
        self.dir_files.lock().put(src, f.clone());
        Ok(f)
    }

    /// The branch file handle `fh` of node `ino` writes through. For
    /// handle 0 (a file the kernel opened) only one already at hand: the
    /// kept file of a nameless node or a recently used writable one (no
    /// lock taken, so callers holding `ns` may ask); EBADF otherwise.
    pub(super) fn writable_file(&self, ino: u64, fh: u64) -> VResult<Arc<File>> {
        if fh == KERNEL_FH {
            if let Some(f) = self.nameless_files.lock().get(&ino) {
                return Ok(f.clone());
            }
            return match self.ino_files.lock().get(&ino) {
                Some((f, true)) => Ok(f.clone()),
                _ => Err(libc::EBADF.into()),
            };
        }
        match self.handle(fh).as_deref() {
            Some(Handle::File { file, .. }) => file.lock().clone().ok_or(Error::new(libc::EBADF)),
            _ => Err(libc::EBADF.into()),
        }
    }

    /// The branch file a write to node `ino` through handle `fh` goes to;
    /// for handle 0 the node is copied up first if it is lower (the copy
    /// an open for writing makes where the daemon sees opens).
    fn file_to_write(&self, ino: u64, fh: u64) -> VResult<Arc<File>> {
        if fh != KERNEL_FH {
            return self.writable_file(ino, fh);
        }
        if !self.state(ino)?.1 {
            self.up()?;
            let staged = self.stage_copy_up(ino, true)?;
            let ch = self.change()?;
            self.copy_up_with(&ch, ino, true, staged)?;
        }
        self.ino_file(ino, true)?.ok_or(Error::new(libc::EBADF))
    }

    /// Writes `data` at `offset` to file `ino` through handle `fh` (a file
    /// of the rw branch; handle 0: see `file_to_write`); returns the bytes
    /// written.
    pub fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> VResult<u32> {
        let f = self.file_to_write(ino, fh)?;
        f.write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    /// fsync of file `ino` through handle `fh` (`datasync`: data only);
    /// nothing to do for a lower file or with `-o volatile`.
    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> VResult<()> {
        if self.volatile {
            return Ok(());
        }
        let f = match fh {
            KERNEL_FH if self.upper.is_some() => self.ino_file(ino, false)?,
            _ => self.writable_file(ino, fh).ok(),
        };
        let Some(f) = f else {
            return Ok(()); // nothing of ours to flush for a lower file
        };
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        r.map_err(Error::from)
    }

    /// fsync of directory `ino`: its directory in the branch, if it has
    /// one (what a `rename` then `fsync(dirfd)` needs to be durable).
    /// Nothing of a lower directory can change.
    pub fn fsyncdir(&self, ino: u64) -> VResult<()> {
        if self.volatile || self.upper.is_none() || !self.state(ino)?.1 {
            return Ok(());
        }
        let p = {
            let _r = self.reading();
            self.upath(ino)?
        };
        let d = sys::open(&p, libc::O_RDONLY, 0)
            .context(|| format!("fsync of {}: open", p.display()))?;
        d.sync_all()
            .context(|| format!("fsync of {}", p.display()))?;
        tracing::debug!(dir = %p.display(), "fsyncdir synced");
        Ok(())
    }

    /// `fallocate(2)` with `mode` on the branch file of `ino` behind
    /// handle `fh` (handle 0: copied up first, as for a write).
    pub fn fallocate(&self, ino: u64, fh: u64, offset: u64, len: u64, mode: i32) -> VResult<()> {
        let f = self.file_to_write(ino, fh)?;
        Ok(sys::fallocate(&f, mode, offset, len)?)
    }

    /// The target of symlink `ino` (EINVAL if it is not one).
    pub fn readlink(&self, ino: u64) -> VResult<Vec<u8>> {
        let _r = self.reading();
        let (kind, upper, _) = self.state(ino)?;
        if kind != Kind::Symlink {
            return Err(libc::EINVAL.into());
        }
        if upper {
            return Ok(sys::readlink(&self.upath(ino)?)?);
        }
        let (src, e) = self.leaf(ino)?;
        Ok(self.layers[src.0 as usize].index.target(&e).to_vec())
    }

    /// The handle's inode (for diagnostics and tests).
    pub fn handle_ino(&self, fh: u64) -> Option<u64> {
        match self.handle(fh).as_deref() {
            Some(Handle::File { ino, .. }) => Some(*ino),
            _ => None,
        }
    }
}

// Files the kernel opened. On a writable mount without passthrough the
// kernel opens files itself (ENOSYS to the first OPEN): no OPEN or RELEASE
// round trip per open(2), and I/O arrives with handle 0 and the inode.
// So a write to a lower file copies it up at its first write (or
// truncation), not at open; the branch files of such I/O stay open in a
// small LRU by inode; and a branch file that loses its last name is
// opened just before (the kernel may hold it open, and POSIX says it
// reads and writes on) and kept until the kernel forgets the node.
impl Vfs {
    /// From now on the kernel opens this writable mount's files itself
    /// (FUSE_NO_OPEN_SUPPORT, negotiated at INIT).
    pub fn set_kernel_opens(&self) {
        self.kernel_opens.store(true, Ordering::Relaxed);
    }

    /// The branch file of node `ino` for I/O without a handle: a nameless
    /// node's kept file, a recently used one, or opened by path now (for
    /// reading and writing where it can; `write` insists on writing).
    /// `None` for a node that is not in the branch.
    fn ino_file(&self, ino: u64, write: bool) -> VResult<Option<Arc<File>>> {
        let at_hand = |v: &Self| {
            if let Some(f) = v.nameless_files.lock().get(&ino) {
                return Some(f.clone());
            }
            match v.ino_files.lock().get(&ino) {
                Some((f, w)) if *w || !write => Some(f.clone()),
                _ => None,
            }
        };
        if let Some(f) = at_hand(self) {
            return Ok(Some(f));
        }
        let _r = self.reading();
        // Again under `ns`: an unlink may have kept it meanwhile.
        if let Some(f) = at_hand(self) {
            return Ok(Some(f));
        }
        if !self.state(ino)?.1 {
            return Ok(None);
        }
        let (f, w) = match self.open_upper(ino, libc::O_RDWR) {
            Ok(f) => (f, true),
            Err(_) if !write => (self.open_upper(ino, libc::O_RDONLY)?, false),
            Err(e) => return Err(e),
        };
        let f = Arc::new(f);
        self.ino_files.lock().put(ino, (f.clone(), w));
        Ok(Some(f))
    }

    /// Before branch node `ino` loses its name on disk (with `ns` held for
    /// writing), if that is its last name: a directory, opened (an open
    /// directory handle holds no descriptor, and `fstat` of a removed open
    /// directory must answer), or where the kernel opens files itself a
    /// file, opened for reading and writing where it can; for
    /// `keep_nameless`.
    pub(super) fn open_before_unname(&self, ino: u64) -> Option<File> {
        let dir = match self.state(ino).ok()? {
            (Kind::Dir, true, _) => true,
            (Kind::File, true, _) if self.kernel_opens.load(Ordering::Relaxed) => false,
            _ => return None,
        };
        if self.nodes.read().node(ino).ok()?.names.len() != 1 {
            return None;
        }
        let f = match dir {
            true => self.upath(ino).and_then(|p| {
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                Ok(sys::open(&p, flags, 0)?)
            }),
            false => self
                .open_upper(ino, libc::O_RDWR)
                .or_else(|_| self.open_upper(ino, libc::O_RDONLY)),
        };
        f.map_err(|e| tracing::warn!(ino, "keeping a removed object open: {e}"))
            .ok()
    }

    /// After the name went: keeps `f` (from `open_before_unname`) as the
    /// file of `ino` if the node has no name left.
    pub(super) fn keep_nameless(&self, ino: u64, f: Option<File>) {
        if let Some(f) = f {
            if self.nameless(ino) {
                self.nameless_files.lock().insert(ino, Arc::new(f));
            }
        }
    }

    /// Keeps `f` as the file of nameless node `ino` (a copy-up of a lower
    /// file with no name left).
    pub(super) fn keep_nameless_file(&self, ino: u64, f: File) {
        self.nameless_files.lock().insert(ino, Arc::new(f));
    }
}

/// Up to `len` bytes of `f` from `offset` (fewer only at end of file).
fn read_file_at(f: &File, offset: u64, len: usize) -> VResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The file of entry `i` of `layer` if it is a directory layer (`None`
/// for a layer tar), an error naming it.
pub(super) fn open_entry(layer: &Layer, i: u32) -> VResult<Option<File>> {
    layer.open_entry(i).context(|| {
        format!(
            "opening {} of layer {}",
            String::from_utf8_lossy(&layer.index.path(i)),
            layer.chain_id
        )
    })
}
