//! Extended attributes: read from the branch or the layer index (overlayfs'
//! own never shown), set and removed in the branch after a copy-up, and
//! the read-only provenance xattr naming the layer an entry comes from.
//!
//! Not here: copying xattrs at copy-up (`copyup`), the branch's private
//! xattrs (`upper`).

use super::{Error, VResult, Vfs};
use crate::layer::whiteout::is_overlay_xattr;
use crate::sys::{self, Obj};
use crate::union::{Resolved, Source};

/// A read-only extended attribute on every entry of a mount, answered only
/// when asked for by name (never listed, never copied up): which layer the
/// entry comes from. See [`Vfs::provenance`].
pub const PROVENANCE_XATTR: &[u8] = b"user.layerfs.layer";

/// The SELinux label's xattr name. Where SELinux is active its LSM answers
/// getxattr(2) of this name from the inode's in-core label, and no request
/// reaches a filesystem; elsewhere `ls -l` sends one GETXATTR of it per
/// file, and FUSE has no cache for xattr answers.
const SELINUX_XATTR: &[u8] = b"security.selinux";

/// What getxattr of `name` answers when the entry has no such xattr
/// (`missing`, normally ENODATA). On a host without SELinux
/// (`labels_active` false) a missing SELinux label answers EOPNOTSUPP, "no
/// labels on this filesystem", as a filesystem without a security xattr
/// handler does: `ls` (coreutils' getfilecon cache) and libselinux callers
/// then stop asking for the rest of the device, which saves a round trip
/// per file of every `ls -l`. A label that is stored still reads back,
/// and setxattr of one still works.
pub fn missing_xattr(name: &[u8], missing: Error, labels_active: bool) -> Error {
    if !labels_active && name == SELINUX_XATTR && missing.errno() == libc::ENODATA {
        Error::new(libc::EOPNOTSUPP)
    } else {
        missing
    }
}

impl Vfs {
    fn meta_entry(&self, r: &Resolved) -> (Source, crate::layer::index::Entry) {
        let src = r.meta_source(&self.layers);
        (src, self.entry_of(src))
    }

    /// The value of [`PROVENANCE_XATTR`]: `rw` for an entry of the
    /// read-write branch, else `INDEX:SHORTID` of the layer whose entry
    /// the merged view shows (index 0 = bottom layer, as in `history`).
    pub fn provenance(&self, ino: u64) -> VResult<Vec<u8>> {
        let (_, upper, lower) = self.state(ino)?;
        if upper {
            return Ok(b"rw".to_vec());
        }
        let (src, _) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let layer = &self.layers[src.0 as usize];
        let index = self.layers.len() - 1 - src.0 as usize;
        let short = &layer.chain_id[..12.min(layer.chain_id.len())];
        Ok(format!("{index}:{short}").into_bytes())
    }

    /// `f` on branch node `ino`: by its path, or, with no name left (an
    /// open file unlinked or renamed over, a removed open directory),
    /// through the descriptor an open handle or the node itself keeps.
    fn at_upper<T>(&self, ino: u64, f: impl FnOnce(Obj) -> sys::SysResult<T>) -> VResult<T> {
        match self.upath(ino) {
            Ok(p) => Ok(f(Obj::Path(&p))?),
            Err(e) if e.errno() == libc::ENOENT => Ok(f(Obj::File(&*self.open_file_of(ino)?))?),
            Err(e) => Err(e),
        }
    }

    /// The value of extended attribute `name` of node `ino` (ENODATA if none).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VResult<Vec<u8>> {
        let _r = self.reading();
        self.xattr(ino, name)
    }

    pub(super) fn xattr(&self, ino: u64, name: &[u8]) -> VResult<Vec<u8>> {
        if name == PROVENANCE_XATTR {
            return self.provenance(ino);
        }
        let (_, upper, lower) = self.state(ino)?;
        if upper {
            let up = self.up()?;
            if up.is_private_xattr(name) {
                return Err(libc::ENODATA.into());
            }
            return self.at_upper(ino, |o| sys::getxattr_obj(o, name));
        }
        let (src, e) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let idx = &self.layers[src.0 as usize].index;
        shown_xattrs(idx, &e)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_vec())
            .ok_or(Error::new(libc::ENODATA))
    }

    /// Names of the extended attributes, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> VResult<Vec<u8>> {
        let _r = self.reading();
        let (_, upper, lower) = self.state(ino)?;
        let mut out = Vec::new();
        if upper {
            let up = self.up()?;
            let all = self.at_upper(ino, sys::listxattr_obj)?;
            for n in all.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                if !up.is_private_xattr(n) {
                    out.extend_from_slice(n);
                    out.push(0);
                }
            }
            return Ok(out);
        }
        let (src, e) = self.meta_entry(&lower.ok_or(libc::ESTALE)?);
        let idx = &self.layers[src.0 as usize].index;
        for (k, _) in shown_xattrs(idx, &e) {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Sets extended attribute `name` of node `ino` (copied up first);
    /// `flags`: `XATTR_CREATE`/`XATTR_REPLACE`.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> VResult<()> {
        let up = self.up()?;
        if up.is_private_xattr(name) || name == PROVENANCE_XATTR {
            return Err(libc::EPERM.into());
        }
        let staged = self.stage_copy_up(ino, true)?;
        let ch = self.change()?;
        self.copy_up_with(&ch, ino, true, staged)?;
        self.at_upper(ino, |o| sys::setxattr_obj(o, name, value, flags))
    }

    /// Removes extended attribute `name` of node `ino` (copied up first if it
    /// has it).
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        if name == PROVENANCE_XATTR {
            return Err(libc::EPERM.into());
        }
        if up.is_private_xattr(name) {
            return Err(libc::ENODATA.into());
        }
        {
            // Removing what is not there copies nothing up.
            let _r = self.reading();
            self.xattr(ino, name)?;
        }
        let staged = self.stage_copy_up(ino, true)?;
        let ch = self.change()?;
        self.xattr(ino, name)?;
        self.copy_up_with(&ch, ino, true, staged)?;
        self.at_upper(ino, |o| sys::removexattr_obj(o, name))
    }
}

/// The xattrs of a layer entry that the merged view shows: all but
/// overlayfs' own (`trusted.overlay.*`, `user.overlay.*`), which an image
/// may carry but which would turn into redirects or opaque markers where a
/// mount is a lower of kernel overlayfs.
pub(super) fn shown_xattrs<'a>(
    idx: &'a crate::layer::index::Index,
    e: &crate::layer::index::Entry,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    idx.xattrs(e).filter(|(k, _)| !is_overlay_xattr(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_label_is_unsupported_only_without_selinux() {
        let enodata = || Error::new(libc::ENODATA);
        let errno = |name: &[u8], e: Error, active| missing_xattr(name, e, active).errno();
        assert_eq!(errno(SELINUX_XATTR, enodata(), false), libc::EOPNOTSUPP);
        assert_eq!(errno(SELINUX_XATTR, enodata(), true), libc::ENODATA);
        assert_eq!(
            errno(b"security.capability", enodata(), false),
            libc::ENODATA
        );
        assert_eq!(errno(b"user.foo", enodata(), false), libc::ENODATA);
        // Other failures pass as they are.
        assert_eq!(
            errno(SELINUX_XATTR, Error::new(libc::ESTALE), false),
            libc::ESTALE
        );
        assert_eq!(
            errno(SELINUX_XATTR, Error::new(libc::ERANGE), false),
            libc::ERANGE
        );
    }
}
