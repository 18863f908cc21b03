//! Copy-up: making a lower object an object of the rw branch. Directories
//! (with their parents) are made in the work directory with their own
//! metadata and renamed into place; files are staged outside the lock
//! where possible (`stage_copy_up`) and placed under `ns`, data synced
//! first unless `-o volatile`; a renamed lower directory is copied up
//! whole and made opaque (`copy_up_tree`), its files' data staged outside
//! the lock the same way (`stage_tree`).
//!
//! Not here: deciding when to copy up (the callers in `handles`,
//! `namespace`, `setattr`, `xattr`), the branch's on-disk spelling of
//! markers and metadata (`upper`).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::handles::open_entry;
use super::inodes::Place;
use super::xattr::shown_xattrs;
use super::{err, ErrorContext, VResult, Vfs};
use crate::layer::index::Kind;
use crate::sys::{self, TimeSpec};
use crate::union::Source;
use crate::upper::{child, Changing, Meta};

impl Vfs {
    /// Gives the new upper object at `p` the owner, mode, xattrs and times
    /// of lower entry `src`. An error names the step; the caller names `p`.
    pub(super) fn copy_meta(&self, p: &Path, src: Source) -> VResult<()> {
        let up = self.up()?;
        let e = self.entry_of(src);
        let idx = &self.layers[src.0 as usize].index;
        up.apply_meta(
            p,
            &Meta {
                kind: e.kind,
                perm: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                rdev: e.rdev(),
            },
        )
        .context(|| "owner and mode")?;
        for (k, v) in shown_xattrs(idx, &e) {
            if up.is_private_xattr(k) {
                continue; // the override just written is the truth
            }
            if let Err(err) = sys::lsetxattr(p, k, v, 0) {
                // A rootless daemon may not set trusted.* or
                // security.capability: the copy keeps what it can.
                if !(up.rootless() && matches!(err, libc::EPERM | libc::EACCES | libc::ENOTSUP)) {
                    return Err(err!(err, "xattr {}", String::from_utf8_lossy(k)));
                }
                tracing::warn!(
                    "copy-up of {}: xattr {} not kept: errno {err}",
                    p.display(),
                    String::from_utf8_lossy(k)
                );
            }
        }
        let t = TimeSpec::At(e.mtime, e.mtime_nsec);
        sys::utimens(p, t, t).context(|| "times")
    }

    /// Copies directory `ino` (and its parents) up into the branch, with
    /// its own metadata; returns its upper path.
    pub(super) fn copy_up_dir(&self, ch: &Changing<'_>, ino: u64) -> VResult<PathBuf> {
        let (kind, upper, lower) = self.state(ino)?;
        if upper {
            return self.upath(ino);
        }
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR.into());
        }
        let (parent, name) = {
            let nodes = self.nodes.read();
            nodes
                .node(ino)?
                .names
                .first()
                .cloned()
                .ok_or(libc::ENOENT)?
        };
        let pp = self.copy_up_dir(ch, parent)?;
        let up = self.up()?;
        let t = up.temp();
        let dst = child(&pp, &name);
        let what = || format!("copy-up of directory {}", dst.display());
        std::fs::create_dir(&t).context(|| format!("{}: staging {}", what(), t.display()))?;
        let src = lower.ok_or(libc::ESTALE)?.meta_source(&self.layers);
        let r = self
            .copy_meta(&t, src)
            .context(|| format!("metadata of {}", t.display()))
            .and_then(|()| {
                place_copy(ch, &dst, |d| {
                    sys::rename2(&t, d, libc::RENAME_NOREPLACE)
                        .context(|| format!("rename of {} into place", t.display()))
                })
            });
        if let Err(e) = r {
            let _ = std::fs::remove_dir(&t);
            return Err(e.context(what()));
        }
        self.with_node(ino, |n| {
            n.place.copied_up(Kind::Dir);
            n.listing = None;
        })?;
        Ok(dst)
    }

    /// Copies the data and metadata of lower file `ino` into a new file of
    /// the work directory, holding `ns` only to find the source: a
    /// copy-up's data copy (seconds for a big file) then stalls no other
    /// operation of the mount. The caller hands the result to
    /// `copy_up_with` under the write lock, which renames it into place if
    /// `ino` is still that lower file (a concurrent copy-up may have won:
    /// the staged copy is then dropped, and its file removed). `None` when
    /// there is nothing to copy outside the lock.
    pub(super) fn stage_copy_up(&self, ino: u64, with_data: bool) -> VResult<Option<StagedCopy>> {
        if !with_data || self.upper.is_none() {
            return Ok(None);
        }
        let (src, e) = {
            let _r = self.reading();
            let (kind, upper, _) = self.state(ino)?;
            if upper || kind != Kind::File {
                return Ok(None);
            }
            self.leaf(ino)?
        };
        if e.size == 0 {
            return Ok(None);
        }
        let staged = StagedCopy {
            src,
            path: self.up()?.temp(),
        };
        let made = self
            .make_copy(&staged.path, src, &e, true)
            .and_then(|()| self.copy_meta(&staged.path, src).context(|| "metadata"))
            .context(|| format!("staging in {}", staged.path.display()));
        match made {
            Ok(()) => Ok(Some(staged)),
            // A racing copy-up may have finished meanwhile; else the
            // copy under the lock meets the error again and reports it.
            Err(err) => {
                tracing::debug!(
                    ino,
                    "staging a copy-up failed ({err}); copying under the lock"
                );
                Ok(None)
            }
        }
    }

    /// `copy_up`, renaming `staged` into place if it is a copy of the
    /// node's current lower file.
    pub(super) fn copy_up_with(
        &self,
        ch: &Changing<'_>,
        ino: u64,
        with_data: bool,
        staged: Option<StagedCopy>,
    ) -> VResult<()> {
        let (kind, upper, _) = self.state(ino)?;
        if upper {
            return Ok(());
        }
        if kind == Kind::Dir {
            self.copy_up_dir(ch, ino)?;
            return Ok(());
        }
        let (src, e) = self.leaf(ino)?;
        // Make every visible name of a hard link known to the node.
        self.group_names(ino, src, &e);
        let names = self.nodes.read().node(ino)?.names.clone();
        let mut paths = Vec::with_capacity(names.len());
        for (p, n) in &names {
            paths.push(child(&self.copy_up_dir(ch, *p)?, n));
        }
        let Some(first) = paths.first() else {
            // No name left: a file the kernel still holds open.
            return self.copy_up_nameless(ino, src, &e, with_data);
        };
        let what = || format!("copy-up of {}", first.display());
        let t = match staged {
            Some(s) if s.src == src && with_data => s,
            _ => {
                let s = StagedCopy {
                    src,
                    path: self.up()?.temp(),
                };
                let staging = || format!("{}: staging in {}", what(), s.path.display());
                self.make_copy(&s.path, src, &e, with_data)
                    .context(staging)?;
                self.copy_meta(&s.path, src)
                    .context(|| format!("{}: metadata", staging()))?;
                s
            }
        };
        place_copy(ch, first, |d| {
            sys::rename2(&t.path, d, libc::RENAME_NOREPLACE)
                .context(|| format!("rename of {} into place", t.path.display()))
        })
        .context(what)?;
        t.placed();
        // The first name is in place: the node lives in the branch now.
        self.with_node(ino, |n| n.place = Place::Upper)?;
        self.note_upper_ino(ino, first);
        self.nlinks.lock().clear();
        self.switch_readers(ino, first);
        for p in &paths[1..] {
            place_copy(ch, p, |d| Ok(sys::link(first, d)?))
                .context(|| format!("{}: link {}", what(), p.display()))?;
        }
        Ok(())
    }

    /// Copies up lower file `ino` that has no name left (unlinked or
    /// renamed over while the kernel holds it open, then written or
    /// truncated) into an unnamed file of the branch, kept as the node's
    /// file until the kernel forgets the node.
    fn copy_up_nameless(
        &self,
        ino: u64,
        src: Source,
        e: &crate::layer::index::Entry,
        with_data: bool,
    ) -> VResult<()> {
        if e.kind != Kind::File {
            return Err(libc::ENOENT.into());
        }
        let t = self.up()?.temp();
        let made = self.make_copy(&t, src, e, with_data).and_then(|()| {
            // Opened before the metadata, whose mode may forbid writing.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&t)
                .context(|| "opening")?;
            self.copy_meta(&t, src).context(|| "metadata")?;
            Ok(f)
        });
        let removed = std::fs::remove_file(&t);
        let f = made.context(|| format!("copy-up of an unlinked file in {}", t.display()))?;
        removed.context(|| format!("removing {}", t.display()))?;
        self.keep_nameless_file(ino, f);
        self.with_node(ino, |n| n.place = Place::Upper)?;
        self.nlinks.lock().clear();
        Ok(())
    }

    /// Creates at `t` a copy of lower entry `e` (data only if `with_data`).
    /// An error names the step (creating, data copy, sync); the caller
    /// names `t`.
    fn make_copy(
        &self,
        t: &Path,
        src: Source,
        e: &crate::layer::index::Entry,
        with_data: bool,
    ) -> VResult<()> {
        let up = self.up()?;
        if e.kind != Kind::File {
            let target = self.layers[src.0 as usize].index.target(e);
            let meta = Meta {
                kind: e.kind,
                perm: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                rdev: e.rdev(),
            };
            return up.make_special(t, &meta, target).context(|| "creating");
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(t)
            .context(|| "creating")?;
        if with_data && e.size > 0 {
            let layer = &self.layers[src.0 as usize];
            // In the kernel where it can (no copy through userspace, a
            // reflink or server-side copy where the filesystem has one),
            // else from the mapped blob.
            if let Some(lf) = open_entry(layer, src.1)? {
                let done = sys::copy_range(&lf, 0, &f, e.size, !self.volatile);
                if done < e.size {
                    // copy_file_range refused (another filesystem, ...):
                    // copy the rest through a buffer.
                    let mut r = &lf;
                    let mut w = &f;
                    let from = std::io::SeekFrom::Start(done);
                    std::io::Seek::seek(&mut r, from).context(|| "data copy")?;
                    std::io::Seek::seek(&mut w, from).context(|| "data copy")?;
                    std::io::copy(&mut std::io::Read::take(r, e.size - done), &mut w)
                        .context(|| "data copy")?;
                }
                return self.sync_copy(&f, t);
            }
            let done = match &layer.file {
                Some(lf) => sys::copy_range(lf, e.data_off, &f, e.size, !self.volatile),
                None => 0,
            };
            if done < e.size {
                let data = layer.data();
                let (from, to) = (e.data_off + done, e.data_off + e.size);
                f.write_all_at(&data[from as usize..to as usize], done)
                    .context(|| "data copy")?;
            }
            return self.sync_copy(&f, t);
        }
        Ok(())
    }

    /// Makes a copy-up's data durable before the rename that shows it, as
    /// overlayfs does (unless `-o volatile`): the rename must not outlive
    /// the data after a crash, or the file would show torn or empty where
    /// its lower content was.
    fn sync_copy(&self, f: &File, t: &Path) -> VResult<()> {
        if self.volatile {
            return Ok(());
        }
        f.sync_data().context(|| "sync")?;
        tracing::debug!(copy = %t.display(), "copy-up data synced");
        Ok(())
    }

    /// Stages, outside the lock, the data copies a `copy_up_tree` of the
    /// entry `name` of `parent` will need: every lower file with data in
    /// its subtree (or the file itself). The tree is read under `ns` for
    /// reading, the copies made with no lock held, as `stage_copy_up`
    /// does for one file; `copy_up_tree` then only renames them into
    /// place. A copy the rename ends up not needing (an error, a racing
    /// change) is dropped with its file. `dirs` false: a directory needs
    /// nothing staged (its rename writes a redirect).
    pub(super) fn stage_tree(&self, parent: u64, name: &[u8], dirs: bool) -> VResult<Staged> {
        let files = {
            let _r = self.reading();
            let Ok(top) = self.child_ino(parent, name) else {
                return Ok(Staged::new()); // the rename reports it
            };
            if !dirs && self.state(top)?.0 == Kind::Dir {
                return Ok(Staged::new());
            }
            let mut files = Vec::new();
            let mut stack = vec![top];
            while let Some(ino) = stack.pop() {
                let (kind, upper, lower) = self.state(ino)?;
                match kind {
                    Kind::Dir if lower.is_some() => {
                        for c in self.list(ino)?.iter() {
                            stack.push(self.child_ino(ino, &c.name)?);
                        }
                    }
                    Kind::File if !upper => files.push(ino),
                    _ => {}
                }
            }
            files
        };
        let mut staged = Staged::new();
        for ino in files {
            if let Some(s) = self.stage_copy_up(ino, true)? {
                staged.insert(ino, s);
            }
        }
        Ok(staged)
    }

    /// Makes `ino` and everything below it live in the upper branch alone:
    /// a directory with lower content is copied up entry by entry and made
    /// opaque (what a rename of a lower directory needs in an AUFS-format
    /// branch, since a layer diff has no redirects). File data comes from `staged` (see
    /// `stage_tree`), so no data is copied under `ns`; a file missing
    /// there (empty, or changed since) is copied here.
    pub(super) fn copy_up_tree(
        &self,
        ch: &Changing<'_>,
        ino: u64,
        staged: &mut Staged,
    ) -> VResult<()> {
        let (kind, _, lower) = self.state(ino)?;
        if kind != Kind::Dir {
            return self.copy_up_with(ch, ino, true, staged.remove(&ino));
        }
        let p = self.copy_up_dir(ch, ino)?;
        if lower.is_none() {
            return Ok(());
        }
        for c in self.list(ino)?.iter() {
            self.copy_up_tree(ch, self.child_ino(ino, &c.name)?, staged)?;
        }
        let up = self.up()?;
        up.make_opaque(ch, &p)
            .context(|| format!("making {} opaque", p.display()))?;
        up.drop_merge_markers(ch, &p)
            .context(|| format!("removing the whiteouts of opaque {}", p.display()))?;
        self.with_node(ino, |n| {
            n.place.cut_below();
            n.listing = None;
        })?;
        Ok(())
    }
}

/// Staged data copies of a tree, by inode (`Vfs::stage_tree`).
pub(super) type Staged = std::collections::HashMap<u64, StagedCopy>;

/// Puts a copied-up object at `dst` with `put`, keeping the times of the
/// directory it lands in: a copy-up changes nothing the merged view shows
/// (as overlayfs, which restores the parent's timestamps too).
fn place_copy(_: &Changing<'_>, dst: &Path, put: impl FnOnce(&Path) -> VResult<()>) -> VResult<()> {
    let dir = dst.parent().ok_or(libc::EINVAL)?;
    let st = sys::lstat(dir)?;
    put(dst)?;
    // The object is in place: that is the change. Restoring the times is
    // best effort and must not make a done copy-up look failed.
    if let Err(e) = sys::utimens(
        dir,
        TimeSpec::At(st.st_atime, st.st_atime_nsec as u32),
        TimeSpec::At(st.st_mtime, st.st_mtime_nsec as u32),
    ) {
        tracing::warn!("keeping the times of {}: errno {e}", dir.display());
    }
    Ok(())
}

/// A lower file copied into the work directory by `stage_copy_up`, not yet
/// renamed into place; its file is removed when it is dropped unplaced
/// (an error, or a concurrent copy-up that won).
pub(super) struct StagedCopy {
    src: Source,
    path: PathBuf,
}

impl StagedCopy {
    /// The copy was renamed into the branch: nothing left to remove.
    fn placed(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for StagedCopy {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            tracing::debug!(path = %self.path.display(), "staged copy-up dropped");
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
