//! The read-write branch on disk: a plain directory that is itself a layer
//! diff in the Docker/OCI format. Changed and new entries are ordinary
//! files; `.wh.NAME` (an empty file) hides a lower NAME; `.wh..wh..opq` in a
//! directory hides everything lower under it. Working state lives in
//! `.wh..wh.layerfs/` at the top (the lock and the temporary files of
//! copy-ups), a name the union never shows and a layer import drops.
//!
//! This module is the only writer of whiteouts and opaque markers. It knows
//! paths, not the merged view: `vfs` decides what to write, this module
//! writes it, each step one system call whose before and after states are
//! both valid layer diffs (see ARCHITECTURE.md, "The read-write branch").
//!
//! A branch of `mount-branches -o lowerdir=...,upperdir=U,workdir=W` is
//! written in kernel overlayfs' format instead ([`Format::Overlay`], root
//! in a user namespace too): a whiteout is a character device 0:0 under the
//! hidden name itself (which Linux 5.8+ lets a user namespace create), an
//! opaque directory has the xattr `trusted.overlay.opaque=y` (as the
//! machine's root) or `user.overlay.opaque=y` (in a user namespace, where
//! `trusted.*` cannot be set: kernel overlayfs' `userxattr`), and the
//! lock and temporaries live in W (same filesystem), so kernel overlayfs can
//! mount U afterwards. Every marker is written and decoded here, in the
//! branch's format; an overlay-format branch also reads the AUFS markers
//! containers-storage's `applydiff` extracts into it, as fuse-overlayfs
//! does. Long file: both formats' marker code stays in this one writer.
//!
//! Metadata a rootless daemon cannot apply (an owner other than itself, a
//! device node, permission bits that would lock the daemon out) is recorded
//! in the xattr `user.containers.override_stat` as `uid:gid:mode:type`, the
//! format containers/storage and fuse-overlayfs use.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use crate::layer::index::Kind;
use crate::layer::whiteout::{classify_name, is_overlay_xattr, NameClass, WH_OPAQUE, WH_PREFIX};
use crate::sys::{self, Obj, SysResult};

mod ns;
pub use ns::{Changing, Reading};

/// The hidden working directory at the top of the branch.
pub const STATE_DIR: &str = ".wh..wh.layerfs";
/// Kernel overlayfs' opaque-directory xattr (value `y`).
pub const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// The same in a user namespace (overlayfs' `userxattr` mount option).
pub const OVERLAY_USER_OPAQUE_XATTR: &[u8] = b"user.overlay.opaque";
/// Kernel overlayfs' redirect of a renamed directory (`redirect_dir=on`):
/// the path its lower content is found at, absolute from the layers' root
/// or, without a leading `/`, a name in the parent's lower directories.
pub const OVERLAY_REDIRECT_XATTR: &[u8] = b"trusted.overlay.redirect";
/// The same in a user namespace.
pub const OVERLAY_USER_REDIRECT_XATTR: &[u8] = b"user.overlay.redirect";

/// How a branch spells whiteouts and opaque directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.wh.NAME` files and `.wh..wh..opq` (Docker/OCI layer diffs).
    Aufs,
    /// Character devices 0:0 and `trusted.overlay.opaque=y` (kernel
    /// overlayfs' upper directory); `user.overlay.opaque=y` in a user
    /// namespace.
    Overlay,
}

/// Is `dir/.wh.name` a regular file (an AUFS whiteout of `name`)?
fn aufs_file(dir: &Path, name: &[u8]) -> bool {
    sys::lstat(&whiteout_path(dir, name)).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// Where rootless metadata is recorded.
pub const OVERRIDE_XATTR: &[u8] = b"user.containers.override_stat";

/// Owner, permission bits, type and device number of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The entry's type.
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub perm: u32,
    /// Owner uid, as stored (before the mount's owner mapping).
    pub uid: u32,
    /// Owner gid, as stored (before the mount's owner mapping).
    pub gid: u32,
    /// Device number of a character or block device (`st_rdev`), else 0.
    pub rdev: u64,
}

impl Meta {
    /// Metadata as `lstat` reports it.
    pub fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            kind: Kind::of_mode(st.st_mode),
            perm: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
        }
    }

    /// The `override_stat` value: `uid:gid:0mode:type`.
    pub fn format_override(&self) -> Vec<u8> {
        let ty = match self.kind {
            Kind::Dir => "dir".to_string(),
            Kind::Symlink => "symlink".to_string(),
            Kind::Fifo => "pipe".to_string(),
            Kind::Socket => "socket".to_string(),
            Kind::Char => format!("char-{}-{}", libc::major(self.rdev), libc::minor(self.rdev)),
            Kind::Block => format!(
                "block-{}-{}",
                libc::major(self.rdev),
                libc::minor(self.rdev)
            ),
            Kind::File | Kind::Whiteout => "file".to_string(),
        };
        format!("{}:{}:{:04o}:{ty}", self.uid, self.gid, self.perm).into_bytes()
    }

    /// Parses an `override_stat` value; `None` if malformed.
    pub fn parse_override(v: &[u8]) -> Option<Meta> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.trim_end_matches('\0').splitn(4, ':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let perm = u32::from_str_radix(it.next()?, 8).ok()? & 0o7777;
        let ty = it.next().unwrap_or("file");
        let dev = |rest: &str| -> Option<u64> {
            let (ma, mi) = rest.split_once('-')?;
            Some(libc::makedev(ma.parse().ok()?, mi.parse().ok()?))
        };
        let (kind, rdev) = match ty {
            "file" => (Kind::File, 0),
            "socket" => (Kind::Socket, 0),
            "dir" => (Kind::Dir, 0),
            "symlink" => (Kind::Symlink, 0),
            "pipe" => (Kind::Fifo, 0),
            t => {
                if let Some(r) = t.strip_prefix("char-") {
                    (Kind::Char, dev(r)?)
                } else if let Some(r) = t.strip_prefix("block-") {
                    (Kind::Block, dev(r)?)
                } else {
                    return None;
                }
            }
        };
        Some(Meta {
            kind,
            perm,
            uid,
            gid,
            rdev,
        })
    }
}

/// Takes the flock at `lock_path` that keeps a branch to one mount; `what`
/// names the branch (`rw branch`, `upperdir`) in the error.
fn take_lock(lock_path: &Path, what: &str, root: &Path) -> Result<File> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if sys::try_lock_exclusive(&lock).is_err() {
        bail!(
            "{what} {} is in use by another mount (lock {} is held)",
            root.display(),
            lock_path.display()
        );
    }
    Ok(lock)
}

/// The image a branch was made on (recorded at its first mount).
pub fn branch_image(dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(STATE_DIR).join("image")).ok()?;
    let s = s.trim();
    crate::oci::check_id(s).ok()?;
    Some(s.to_string())
}

/// `dir/.wh.name`.
pub fn whiteout_path(dir: &Path, name: &[u8]) -> PathBuf {
    let mut n = WH_PREFIX.to_vec();
    n.extend_from_slice(name);
    dir.join(OsStr::from_bytes(&n))
}

/// `dir/name` for a name given as bytes.
pub fn child(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// An open read-write branch, locked against a second mount.
pub struct Upper {
    root: PathBuf,
    work: PathBuf,
    _lock: File,
    counter: AtomicU64,
    /// Not root: owners and devices are recorded, not applied.
    rootless: bool,
    /// The machine's root (not root in a user namespace): `trusted.*`
    /// xattrs can be set.
    host_root: bool,
    /// Mounted for the first time (its state directory was just made;
    /// never for an overlay-format upperdir, see `open_overlay`).
    fresh: bool,
    format: Format,
    /// The lock of the branch's namespace (`ns.rs`): the methods that
    /// change a name in the tree take its write guard.
    ns: ns::Namespace,
}

impl Upper {
    /// Takes the namespace for a change of the branch's tree (waits for
    /// every reader and other change to end).
    pub fn change(&self) -> Changing<'_> {
        self.ns.change()
    }

    /// Takes the namespace for reading the branch (waits for a change in
    /// progress to end).
    pub fn read(&self) -> Reading<'_> {
        self.ns.read()
    }

    /// Checks that `c` holds this branch's namespace.
    fn check(&self, c: &Changing<'_>) {
        debug_assert!(self.ns.held_by(c), "a change of another branch's namespace");
    }

    /// Opens (creating if needed) the branch at `dir` for image `image`,
    /// takes its lock and removes what a killed daemon left in the work
    /// directory. A branch made on another image is refused: its changes
    /// are relative to that image. `image` is `None` for a branch of
    /// `mount-branches` (its lower branches are directories, not an image).
    pub fn open(dir: &Path, image: Option<&str>) -> Result<Upper> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the rw branch {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("rw branch {}", dir.display()))?;
        if !root.is_dir() {
            bail!("rw branch {} is not a directory", root.display());
        }
        let state = root.join(STATE_DIR);
        let fresh = !state.exists();
        let work = state.join("work");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let lock = take_lock(&state.join("lock"), "rw branch", &root)?;
        let Some(image) = image else {
            // A branch of `mount-branches`: no image to check against.
            return Upper::finish_open(root, work, lock, fresh, Format::Aufs);
        };
        match branch_image(&root) {
            Some(id) if id != image => bail!(
                "rw branch {} holds changes to image {}, not {}: use another directory",
                root.display(),
                &id[..12.min(id.len())],
                &image[..12.min(image.len())]
            ),
            Some(_) => {}
            None => {
                let p = state.join("image");
                sys::write_file_atomic(&p, image.as_bytes(), 0o644)
                    .with_context(|| format!("writing {}", p.display()))?
            }
        }
        Upper::finish_open(root, work, lock, fresh, Format::Aufs)
    }

    /// Opens (creating if needed) the overlay-format branch `dir` (an
    /// overlayfs upperdir) with `workdir` for the lock and temporaries.
    /// Root only (the machine's or a user namespace's): overlay whiteouts
    /// are device nodes. Never fresh: as in kernel overlayfs, the merged
    /// root is the upperdir's own root, whose owner and mode the caller
    /// chose (containers-storage makes a layer's `diff` 0555 over an empty
    /// 0700 `lowerdir`), so a mount shows them and does not rewrite them.
    pub fn open_overlay(dir: &Path, workdir: &Path) -> Result<Upper> {
        if sys::euid() != 0 {
            bail!(
                "upperdir= needs root: overlay-format whiteouts are device nodes \
                 (mknod) and opaque markers trusted.* xattrs; use -o br=UPPER=rw:LOWER=ro+wh:... \
                 for a rootless writable mount"
            );
        }
        let mut roots = Vec::new();
        for (d, what) in [(dir, "upperdir"), (workdir, "workdir")] {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating the {what} {}", d.display()))?;
            let r = d
                .canonicalize()
                .with_context(|| format!("{what} {}", d.display()))?;
            if !r.is_dir() {
                bail!("{what} {} is not a directory", r.display());
            }
            roots.push(r);
        }
        let work_root = roots.pop().expect("two roots");
        let root = roots.pop().expect("two roots");
        if work_root.starts_with(&root) || root.starts_with(&work_root) {
            bail!(
                "upperdir {} and workdir {} must not contain each other",
                root.display(),
                work_root.display()
            );
        }
        let dev = |p: &Path| sys::lstat(p).map(|st| st.st_dev);
        if dev(&root).ok() != dev(&work_root).ok() {
            bail!(
                "workdir {} is not on the filesystem of upperdir {}",
                work_root.display(),
                root.display()
            );
        }
        let work = work_root.join("layerfs");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let lock = take_lock(&work_root.join("layerfs.lock"), "upperdir", &root)?;
        Upper::finish_open(root, work, lock, false, Format::Overlay)
    }

    /// Empties the work directory (what a killed daemon left there).
    fn finish_open(
        root: PathBuf,
        work: PathBuf,
        lock: File,
        fresh: bool,
        format: Format,
    ) -> Result<Upper> {
        for e in std::fs::read_dir(&work)? {
            let p = e?.path();
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("cleaning {}", p.display()))?;
        }
        Ok(Upper {
            root,
            work,
            _lock: lock,
            counter: AtomicU64::new(0),
            rootless: sys::euid() != 0,
            host_root: sys::host_root(),
            fresh,
            format,
            ns: ns::Namespace::default(),
        })
    }

    /// The branch directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True on the first mount of this branch.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Is the daemon unprivileged (euid not 0)? Then owners, modes and devices
    /// it cannot apply are recorded in [`OVERRIDE_XATTR`].
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// A fresh name in the work directory (same filesystem as the branch,
    /// so a finished object is published with one rename).
    pub fn temp(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.work.join(format!("t{n}"))
    }

    /// The whiteout format of the branch.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Is the object whose `lstat` is `st` a whiteout (of its own name)?
    /// Only in the overlay format, where a whiteout is a 0:0 device.
    pub fn is_whiteout_stat(&self, st: &libc::stat) -> bool {
        self.format == Format::Overlay
            && st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && st.st_rdev == 0
    }

    /// What the branch's entry `name` of directory `dir` (of type `kind`,
    /// the `S_IFMT` bits of its mode: [`sys::Dirent`]) means: a plain
    /// entry, a whiteout of a name, or bookkeeping.
    pub fn classify<'a>(&self, dir: &Path, name: &'a [u8], kind: u32) -> NameClass<'a> {
        let class = classify_name(name);
        match self.format {
            Format::Aufs => class,
            // layerfs never writes `.wh.` names here, but containers-storage
            // extracts layers into upper directories in the AUFS format
            // when a mount program is set (`applydiff`), and fuse-overlayfs
            // reads them: an empty regular `.wh.NAME` hides NAME and
            // `.wh..wh..opq` makes its directory opaque. Other `.wh.` names
            // are never shown.
            Format::Overlay if class != NameClass::Plain => match class {
                NameClass::Whiteout(_) if kind == libc::S_IFREG => class,
                NameClass::Opaque => class,
                _ => NameClass::Meta,
            },
            Format::Overlay => {
                if kind == libc::S_IFCHR
                    && sys::lstat(&child(dir, name)).is_ok_and(|st| self.is_whiteout_stat(&st))
                {
                    NameClass::Whiteout(name)
                } else {
                    NameClass::Plain
                }
            }
        }
    }

    /// Does `dir` (in the branch) hold a whiteout of `name`? In the
    /// overlay format either a 0:0 device or an AUFS `.wh.name` file (see
    /// [`Upper::classify`]).
    pub fn has_whiteout(&self, dir: &Path, name: &[u8]) -> bool {
        match self.format {
            Format::Aufs => sys::exists(&whiteout_path(dir, name)),
            Format::Overlay => self.device_whiteout(dir, name) || aufs_file(dir, name),
        }
    }

    /// Overlay format: is `dir/name` a whiteout device?
    fn device_whiteout(&self, dir: &Path, name: &[u8]) -> bool {
        sys::lstat(&child(dir, name)).is_ok_and(|st| self.is_whiteout_stat(&st))
    }

    /// Overlay format: removes an AUFS `.wh.name` left in `dir` by
    /// another writer (containers-storage's `applydiff`), once `name`
    /// has been given a new object.
    fn drop_aufs_whiteout(&self, dir: &Path, name: &[u8]) {
        if self.format == Format::Overlay && aufs_file(dir, name) {
            if let Err(e) = sys::unlink(&whiteout_path(dir, name)) {
                tracing::warn!("removing {}: errno {e}", whiteout_path(dir, name).display());
            }
        }
    }

    /// Writes `dir/.wh.name` (an empty file; one mknod, so it exists or
    /// not); in the overlay format, a 0:0 device `dir/name` (where the
    /// branch has nothing).
    pub fn make_whiteout(&self, c: &Changing<'_>, dir: &Path, name: &[u8]) -> SysResult<()> {
        self.check(c);
        let r = match self.format {
            Format::Aufs => sys::mknod(&whiteout_path(dir, name), libc::S_IFREG, 0),
            Format::Overlay => sys::mknod(&child(dir, name), libc::S_IFCHR, 0),
        };
        match r {
            Err(libc::EEXIST) if self.format == Format::Aufs || self.device_whiteout(dir, name) => {
                Ok(())
            }
            r => r,
        }
    }

    /// Removes the whiteout of `name` in `dir`, if there is one.
    pub fn remove_whiteout(&self, c: &Changing<'_>, dir: &Path, name: &[u8]) -> SysResult<()> {
        self.check(c);
        let p = match self.format {
            Format::Aufs => whiteout_path(dir, name),
            Format::Overlay => {
                self.drop_aufs_whiteout(dir, name);
                if !self.device_whiteout(dir, name) {
                    return Ok(());
                }
                child(dir, name)
            }
        };
        match sys::unlink(&p) {
            Ok(()) | Err(libc::ENOENT) => Ok(()),
            // `.wh.NAME` of a NAME within 4 bytes of NAME_MAX cannot exist,
            // so there is none to remove (a create of such a name failed
            // here after it was already in place).
            Err(libc::ENAMETOOLONG) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The opaque marker of the overlay format: `trusted.*` as the
    /// machine's root, `user.*` in a user namespace (where kernel overlayfs
    /// needs `userxattr` to read it, and `trusted.*` is out of reach).
    fn opaque_xattr(&self) -> &'static [u8] {
        if self.host_root {
            OVERLAY_OPAQUE_XATTR
        } else {
            OVERLAY_USER_OPAQUE_XATTR
        }
    }

    /// Does a rename of a directory with lower content write a redirect
    /// (overlay format, as kernel overlayfs with `redirect_dir=on`) rather
    /// than copy the subtree up (AUFS format: a layer diff has no
    /// redirects)?
    pub fn redirects(&self) -> bool {
        self.format == Format::Overlay
    }

    /// The redirect xattr of this branch: `trusted.*` as the machine's
    /// root, `user.*` in a user namespace (as for the opaque marker).
    fn redirect_xattr(&self) -> &'static [u8] {
        if self.host_root {
            OVERLAY_REDIRECT_XATTR
        } else {
            OVERLAY_USER_REDIRECT_XATTR
        }
    }

    /// Points directory `dir` at `target` for its lower content (an
    /// absolute path from the layers' root).
    pub fn set_redirect(&self, c: &Changing<'_>, dir: &Path, target: &[u8]) -> SysResult<()> {
        self.check(c);
        sys::lsetxattr(dir, self.redirect_xattr(), target, 0)
    }

    /// The redirect of directory `dir` of an overlay-format branch, if it
    /// has one (in this branch's spelling, as kernel overlayfs reads it).
    pub fn redirect_of(&self, dir: &Path) -> Option<Vec<u8>> {
        if self.format != Format::Overlay {
            return None;
        }
        sys::lgetxattr(dir, self.redirect_xattr())
            .ok()
            .filter(|v| !v.is_empty())
    }

    /// Marks directory `dir` opaque.
    pub fn make_opaque(&self, c: &Changing<'_>, dir: &Path) -> SysResult<()> {
        self.check(c);
        if self.format == Format::Overlay {
            return sys::lsetxattr(dir, self.opaque_xattr(), b"y", 0);
        }
        match sys::mknod(&child(dir, WH_OPAQUE), libc::S_IFREG, 0) {
            Err(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Removes the whiteouts and any redirect of directory `dir`, just
    /// made opaque, in the overlay format: they mean nothing there, and
    /// kernel overlayfs lists an upper-only directory as it is, so a 0:0
    /// device left in it would show as a name that lookups then deny
    /// (ENOENT). The AUFS format keeps them (a layer diff reads them as
    /// redundant).
    pub fn drop_merge_markers(&self, c: &Changing<'_>, dir: &Path) -> SysResult<()> {
        self.check(c);
        if self.format != Format::Overlay {
            return Ok(());
        }
        match sys::lremovexattr(dir, self.redirect_xattr()) {
            Ok(()) | Err(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
        for e in sys::read_dir(dir)? {
            let p = child(dir, &e.name);
            if e.kind == libc::S_IFCHR && sys::lstat(&p).is_ok_and(|st| self.is_whiteout_stat(&st))
            {
                sys::unlink(&p)?;
            }
        }
        Ok(())
    }

    /// Is directory `dir` (in the branch) marked opaque?
    pub fn is_opaque(&self, dir: &Path) -> bool {
        match self.format {
            Format::Aufs => sys::exists(&child(dir, WH_OPAQUE)),
            Format::Overlay => {
                sys::lgetxattr(dir, self.opaque_xattr()).is_ok_and(|v| v == b"y")
                    || sys::lstat(&child(dir, WH_OPAQUE))
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            }
        }
    }

    /// Deletes `name` from directory `dir`: `upper` says the branch holds
    /// an object there (`is_dir`: a directory, discarded whole), `whiteout`
    /// that a lower one must be hidden. In the overlay format the whiteout
    /// takes the object's place in one rename.
    pub fn delete(
        &self,
        c: &Changing<'_>,
        dir: &Path,
        name: &[u8],
        upper: bool,
        is_dir: bool,
        whiteout: bool,
    ) -> SysResult<()> {
        self.check(c);
        let p = child(dir, name);
        let remove = |p: &Path| {
            if is_dir {
                self.discard(c, p)
            } else {
                sys::unlink(p)
            }
        };
        if self.format == Format::Aufs || !whiteout || !upper {
            if whiteout {
                self.make_whiteout(c, dir, name)?;
            }
            if upper {
                remove(&p)?;
            }
            return Ok(());
        }
        let t = self.temp();
        sys::mknod(&t, libc::S_IFCHR, 0)?;
        let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
        if let Err(e) = sys::rename2(&t, &p, flags) {
            let _ = std::fs::remove_file(&t);
            return Err(e);
        }
        if is_dir {
            // The directory is in the work directory now: garbage.
            if let Err(e) = std::fs::remove_dir_all(&t) {
                tracing::warn!("removing {}: {e}", t.display());
            }
        }
        Ok(())
    }

    /// Moves `sdir/name` to `ddir/newname` (not an exchange), leaving a
    /// whiteout of the old name if `whiteout_old`; `discard_to` first
    /// discards the directory at the new name.
    pub fn rename(
        &self,
        c: &Changing<'_>,
        (sdir, name): (&Path, &[u8]),
        (ddir, newname): (&Path, &[u8]),
        whiteout_old: bool,
        discard_to: bool,
    ) -> SysResult<()> {
        self.check(c);
        let from = child(sdir, name);
        let to = child(ddir, newname);
        if self.format == Format::Aufs {
            // The whiteout first: next to the object still there it hides
            // nothing (a name both present and whited out is present), and
            // after the rename it hides the lower one. A crash in between
            // shows the old view; a refused whiteout changes nothing.
            if whiteout_old {
                self.make_whiteout(c, sdir, name)?;
            }
            if discard_to {
                self.discard(c, &to)?;
            }
            if let Err(e) = sys::rename2(&from, &to, 0) {
                if whiteout_old {
                    let _ = self.remove_whiteout(c, sdir, name);
                }
                return Err(e);
            }
            // Done on disk: whatever else fails, a whiteout left next to
            // the new name hides nothing.
            if let Err(e) = self.remove_whiteout(c, ddir, newname) {
                tracing::warn!("rename: whiteout of the new name left: errno {e}");
            }
            return Ok(());
        }
        if discard_to {
            self.discard(c, &to)?;
        }
        if self.device_whiteout(ddir, newname) {
            // A directory cannot replace a device: exchange, so the new
            // name's whiteout lands on the old name, wanted there or not.
            sys::rename2(&from, &to, libc::RENAME_EXCHANGE)?;
            if !whiteout_old {
                if let Err(e) = sys::unlink(&from) {
                    tracing::warn!("rename: whiteout of the old name left: errno {e}");
                }
            }
            self.drop_aufs_whiteout(ddir, newname);
            return Ok(());
        }
        // One rename that leaves a whiteout behind, as overlayfs does.
        let flags = if whiteout_old {
            libc::RENAME_WHITEOUT
        } else {
            0
        };
        sys::rename2(&from, &to, flags)?;
        self.drop_aufs_whiteout(ddir, newname);
        Ok(())
    }

    /// Publishes the finished object `t` as `dir/name`, replacing the
    /// whiteout of `name` if there is one. `maybe_whiteout` false says the
    /// caller knows there is none to remove (no lower layer has `name`
    /// under a directory that still merges them): the AUFS format then
    /// saves the `unlink` of `.wh.name` (a stray one would hide nothing).
    pub fn publish(
        &self,
        c: &Changing<'_>,
        t: &Path,
        dir: &Path,
        name: &[u8],
        maybe_whiteout: bool,
    ) -> SysResult<()> {
        self.check(c);
        let p = child(dir, name);
        if self.format == Format::Overlay && self.device_whiteout(dir, name) {
            sys::rename2(t, &p, libc::RENAME_EXCHANGE)?;
            // `t` is the whiteout now, in the work directory.
            if let Err(e) = std::fs::remove_file(t) {
                tracing::warn!("removing {}: {e}", t.display());
            }
            self.drop_aufs_whiteout(dir, name);
            return Ok(());
        }
        sys::rename2(t, &p, libc::RENAME_NOREPLACE)?;
        if !maybe_whiteout && self.format == Format::Aufs {
            return Ok(());
        }
        self.remove_whiteout(c, dir, name)
    }

    /// Hard-links `from` as `dir/name`, replacing the whiteout of `name`
    /// if there is one.
    pub fn link(&self, c: &Changing<'_>, from: &Path, dir: &Path, name: &[u8]) -> SysResult<()> {
        self.check(c);
        let p = child(dir, name);
        if self.format == Format::Overlay && self.device_whiteout(dir, name) {
            let t = self.temp();
            sys::link(from, &t)?;
            if let Err(e) = sys::rename2(&t, &p, 0) {
                let _ = std::fs::remove_file(&t);
                return Err(e);
            }
            self.drop_aufs_whiteout(dir, name);
            return Ok(());
        }
        sys::link(from, &p)?;
        self.remove_whiteout(c, dir, name)
    }

    /// Takes `path` out of the branch in one rename, then deletes it from
    /// the work directory (a crash in between leaves only work garbage).
    pub fn discard(&self, c: &Changing<'_>, path: &Path) -> SysResult<()> {
        self.check(c);
        let t = self.temp();
        sys::rename2(path, &t, 0)?;
        let r = if std::fs::symlink_metadata(&t).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&t)
        } else {
            std::fs::remove_file(&t)
        };
        r.map_err(|e| sys::errno_of(&e))
    }

    /// Creates a non-directory, non-regular object (symlink, fifo, device)
    /// at `p` with `meta`. Regular files and directories are created by the
    /// caller (they need data or children first).
    pub fn make_special(&self, p: &Path, meta: &Meta, target: &[u8]) -> SysResult<()> {
        if self.format == Format::Overlay && meta.kind == Kind::Char && meta.rdev == 0 {
            // A 0:0 device is a whiteout in this format: it cannot be stored.
            return Err(libc::EPERM);
        }
        match meta.kind {
            Kind::Symlink => sys::symlink(target, p)?,
            Kind::Fifo | Kind::Socket => sys::mknod(p, meta.kind.mode_bits() | 0o600, 0)?,
            Kind::Char | Kind::Block if !self.rootless => {
                sys::mknod(p, meta.kind.mode_bits() | 0o600, meta.rdev)?
            }
            // A rootless daemon cannot make devices: an empty file stands
            // in, and the override xattr says what it is.
            _ => sys::mknod(p, libc::S_IFREG | 0o600, 0)?,
        }
        Ok(())
    }

    /// Gives the object at `p` the owner and mode of `want`, applying what
    /// this process can and recording the rest (rootless) in the override
    /// xattr. Call before the object is published.
    pub fn apply_meta(&self, p: &Path, want: &Meta) -> SysResult<()> {
        self.apply_meta_to(Obj::Path(p), want)
    }

    /// `apply_meta` on a path or on an open file (an unlinked one's
    /// fchmod and fchown).
    pub fn apply_meta_to(&self, o: Obj, want: &Meta) -> SysResult<()> {
        if want.kind == Kind::Symlink {
            // Linux ignores a symlink's mode; user xattrs are not allowed
            // on symlinks, so a rootless owner cannot be recorded.
            return match sys::chown_obj(o, want.uid, want.gid) {
                Err(libc::EPERM) if self.rootless => Ok(()),
                r => r,
            };
        }
        if !self.rootless {
            sys::chown_obj(o, want.uid, want.gid)?;
            return sys::chmod_obj(o, want.perm);
        }
        // Rootless: keep the daemon's own access, record the truth.
        let owner_ok = sys::chown_obj(o, want.uid, want.gid).is_ok();
        let lock_out = if want.kind == Kind::Dir { 0o700 } else { 0o600 };
        let real_perm = (want.perm | lock_out) & !(libc::S_ISUID | libc::S_ISGID);
        sys::chmod_obj(o, real_perm)?;
        let real = Meta::from_stat(&sys::stat_obj(o)?);
        if owner_ok && real == *want {
            return match sys::removexattr_obj(o, OVERRIDE_XATTR) {
                Err(libc::ENODATA) => Ok(()),
                r => r,
            };
        }
        sys::setxattr_obj(o, OVERRIDE_XATTR, &want.format_override(), 0)
    }

    /// The metadata the merged view shows for the upper object at `p`
    /// whose `lstat` is `st`: the override, where one was recorded.
    pub fn meta_of(&self, p: &Path, st: &libc::stat) -> Meta {
        self.meta_of_obj(Obj::Path(p), st)
    }

    /// `meta_of` for a path or an open file.
    pub fn meta_of_obj(&self, o: Obj, st: &libc::stat) -> Meta {
        let real = Meta::from_stat(st);
        if !self.rootless || real.kind == Kind::Symlink {
            return real;
        }
        match sys::getxattr_obj(o, OVERRIDE_XATTR) {
            Ok(v) => Meta::parse_override(&v).unwrap_or(real),
            Err(_) => real,
        }
    }

    /// Is `name` an xattr of the branch's own bookkeeping, never shown?
    /// Overlay's xattrs never are, whatever the format: in an AUFS branch
    /// they could only have come from a layer, and a mount used as a lower
    /// of kernel overlayfs must not carry them into it.
    pub fn is_private_xattr(&self, name: &[u8]) -> bool {
        is_overlay_xattr(name) || (self.rootless && name == OVERRIDE_XATTR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_round_trips() {
        for m in [
            Meta {
                kind: Kind::File,
                perm: 0o4755,
                uid: 0,
                gid: 0,
                rdev: 0,
            },
            Meta {
                kind: Kind::Char,
                perm: 0o666,
                uid: 0,
                gid: 5,
                rdev: libc::makedev(1, 3),
            },
            Meta {
                kind: Kind::Dir,
                perm: 0o1777,
                uid: 1000,
                gid: 1000,
                rdev: 0,
            },
        ] {
            let s = m.format_override();
            assert_eq!(
                Meta::parse_override(&s),
                Some(m),
                "{}",
                String::from_utf8_lossy(&s)
            );
        }
        assert_eq!(
            Meta::format_override(&Meta {
                kind: Kind::Block,
                perm: 0o640,
                uid: 0,
                gid: 6,
                rdev: libc::makedev(8, 1)
            }),
            b"0:6:0640:block-8-1".to_vec()
        );
    }

    #[test]
    fn malformed_override_is_ignored() {
        for bad in [
            &b""[..],
            b"0:0",
            b"x:0:0644:file",
            b"0:0:0999:file",
            b"0:0:0644:char-1",
        ] {
            assert_eq!(Meta::parse_override(bad), None, "{:?}", bad);
        }
        // A value without a type (older writers) means a regular file.
        assert_eq!(
            Meta::parse_override(b"1:2:0644").map(|m| m.kind),
            Some(Kind::File)
        );
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(
            whiteout_path(Path::new("/u/etc"), b"motd"),
            PathBuf::from("/u/etc/.wh.motd")
        );
    }
}
