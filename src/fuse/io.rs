//! The I/O mode of every open handle (see the module doc of `fuse`):
//! passthrough or through the page cache, counted per inode so that no
//! open gets a mode the kernel refuses.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{BackingId, FopenFlags};

use super::LayerFs;

/// How the open handles of one inode do their I/O.
#[derive(Default)]
pub(super) struct InodeIo {
    /// Handles opened through the page cache (READ/WRITE requests).
    cached: u32,
    /// Handles opened for passthrough, all to `backing`.
    passthrough: u32,
    /// The inode's backing id, while `passthrough` > 0.
    backing: Option<Arc<BackingId>>,
    /// Was ever open for passthrough: the inode's page cache may be older
    /// than the file, so a later cached open must not keep it.
    was_passthrough: bool,
}

/// The I/O mode of every open file handle (see the module doc).
#[derive(Default)]
pub(super) struct IoModes {
    inodes: HashMap<u64, InodeIo>,
    /// Handle -> (inode, opened for passthrough).
    handles: HashMap<u64, (u64, bool)>,
}

/// How to answer an OPEN or CREATE.
pub(super) enum OpenMode {
    Passthrough(Arc<BackingId>),
    Cached(FopenFlags),
}

impl LayerFs {
    /// Decides how handle `fh` of inode `ino` is opened and records it.
    /// `open_backing` registers a backing file with the kernel (the
    /// reply's own, for OPEN or CREATE).
    pub(super) fn open_mode(
        &self,
        ino: u64,
        fh: u64,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> OpenMode {
        let mut io = self.io.lock();
        let IoModes { inodes, handles } = &mut *io;
        let st = inodes.entry(ino).or_default();
        let mut backing = None;
        if st.passthrough > 0 {
            // The kernel accepts only passthrough to the same backing now.
            backing = st.backing.clone();
        } else if st.cached == 0 && self.passthrough.load(Ordering::Relaxed) {
            // A setuid/setgid file's writes must reach us, to clear the
            // bits (killpriv): the kernel does not for passthrough writes.
            let file = self.vfs.backing_file(fh);
            if let Some(f) = file.filter(|f| !(self.killpriv && self.vfs.file_is_setid(f))) {
                match open_backing(&f) {
                    Ok(b) => backing = Some(Arc::new(b)),
                    Err(e) => self.backing_failed(ino, e),
                }
            }
        }
        let mode = match backing {
            Some(b) => {
                st.passthrough += 1;
                st.was_passthrough = true;
                st.backing = Some(b.clone());
                OpenMode::Passthrough(b)
            }
            None => {
                st.cached += 1;
                OpenMode::Cached(if st.was_passthrough {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                })
            }
        };
        handles.insert(fh, (ino, matches!(mode, OpenMode::Passthrough(_))));
        tracing::debug!(
            ino,
            fh,
            passthrough = matches!(mode, OpenMode::Passthrough(_)),
            "open"
        );
        mode
    }

    /// A backing file could not be registered: this open goes through the
    /// page cache; if the kernel refuses registrations for good (no
    /// CAP_SYS_ADMIN in its user namespace, no support), stop trying.
    fn backing_failed(&self, ino: u64, e: std::io::Error) {
        let fatal = matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::ENOTTY | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
        );
        if fatal {
            self.passthrough.store(false, Ordering::Relaxed);
            tracing::info!("passthrough unavailable ({e}): reads and writes go through the daemon");
        } else {
            tracing::debug!(ino, "no passthrough for this file: {e}");
        }
    }

    /// Handle `fh` was released.
    pub(super) fn closed(&self, fh: u64) {
        let mut io = self.io.lock();
        let IoModes { inodes, handles } = &mut *io;
        let Some((ino, pt)) = handles.remove(&fh) else {
            return;
        };
        let Some(st) = inodes.get_mut(&ino) else {
            return;
        };
        if pt {
            st.passthrough = st.passthrough.saturating_sub(1);
            if st.passthrough == 0 {
                // Unregisters it (the kernel let go of it first).
                st.backing = None;
            }
        } else {
            st.cached = st.cached.saturating_sub(1);
        }
        if st.cached == 0 && st.passthrough == 0 && !st.was_passthrough {
            inodes.remove(&ino);
        }
    }
}
