//! Attribute changes: chmod, chown, truncate and utimens (each copies the
//! node up first, a truncation to zero without its data), also through the
//! descriptor of an unlinked open file; and Linux's setuid/setgid kill
//! rule, which FUSE_HANDLE_KILLPRIV_V2 leaves to the daemon.
//!
//! Not here: reading attributes (`attr`), extended attributes (`xattr`),
//! when the kill applies (`fuse`).

use super::copyup::StagedCopy;
use super::{Attr, SetAttr, VResult, Vfs};
use crate::layer::index::Kind;
use crate::sys::{self, Obj, TimeSpec};

impl Vfs {
    /// The permission bits of `ino` after Linux's rule for a write, a
    /// truncation or a chown by a caller without CAP_FSETID, if that clears
    /// any (`None`: nothing to clear, or not a regular file).
    /// `in_group(gid)`: is the caller in group `gid` (the file's, as
    /// shown)? With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves applying the
    /// rule to us.
    pub fn perm_after_kill_suid(
        &self,
        ino: u64,
        in_group: impl FnOnce(u32) -> bool,
    ) -> VResult<Option<u32>> {
        Ok(perm_after_kill(&self.getattr(ino)?, in_group))
    }

    /// chmod, chown, truncate and utimens. Any of them copies the node up
    /// first (a truncation to zero without its data).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, s: SetAttr) -> VResult<Attr> {
        self.up()?;
        let mut s = s;
        if let Some(u) = s.uid {
            s.uid = Some(self.owners.stored_uid(u).ok_or(libc::EINVAL)?);
        }
        if let Some(g) = s.gid {
            s.gid = Some(self.owners.stored_gid(g).ok_or(libc::EINVAL)?);
        }
        let meta_change = s.mode.is_some() || s.uid.is_some() || s.gid.is_some();
        let copies = s.size.is_some() || meta_change || s.atime.is_some() || s.mtime.is_some();
        let with_data = s.size.is_none_or(|n| n > 0);
        let staged = match copies {
            true => self.stage_copy_up(ino, with_data)?,
            false => None,
        };
        let _w = self.ns.write();
        self.setattr_locked(ino, fh, s, staged)
    }

    /// Clears the setuid/setgid bits of `ino` as a write or truncation by a
    /// caller without CAP_FSETID does (`perm_after_kill_suid`), reading and
    /// changing the mode under one hold of `ns`, so a chmod in between is
    /// not undone.
    pub fn kill_suid(
        &self,
        ino: u64,
        fh: Option<u64>,
        in_group: impl FnOnce(u32) -> bool,
    ) -> VResult<()> {
        self.up()?;
        // Most writes meet no such bit: tell that from the handle, without
        // taking `ns`.
        if let Some(f) = fh.and_then(|fh| self.writable_file(fh).ok()) {
            if !self.file_is_setid(&f) {
                return Ok(());
            }
        }
        let _w = self.ns.write();
        if let Some(p) = perm_after_kill(&self.attr(ino)?, in_group) {
            let s = SetAttr {
                mode: Some(p),
                ..SetAttr::default()
            };
            self.setattr_locked(ino, fh, s, None)?;
        }
        Ok(())
    }

    /// `setattr` with `ns` held for writing and owners already stored ids.
    fn setattr_locked(
        &self,
        ino: u64,
        fh: Option<u64>,
        s: SetAttr,
        mut staged: Option<StagedCopy>,
    ) -> VResult<Attr> {
        let up = self.up()?;
        let meta_change = s.mode.is_some() || s.uid.is_some() || s.gid.is_some();
        let (kind, ..) = self.state(ino)?;
        if let Some(size) = s.size {
            if kind == Kind::Dir {
                return Err(libc::EISDIR.into());
            }
            self.copy_up_with(ino, size > 0, staged.take())?;
            // Through the caller's handle if it can write (the name may be
            // gone), else through a new one.
            let done = fh
                .and_then(|fh| self.writable_file(fh).ok())
                .is_some_and(|f| f.set_len(size).is_ok());
            if !done {
                let f = self.open_upper(ino, libc::O_WRONLY)?;
                f.set_len(size)?;
            }
        }
        if meta_change || s.atime.is_some() || s.mtime.is_some() {
            self.copy_up_with(ino, true, staged)?;
        }
        let p = self.upath(ino);
        if p.as_ref().is_err_and(|e| e.errno() == libc::ENOENT) {
            // Unlinked but still open (fchmod, fchown, futimens): through
            // the descriptor of a handle (rootless: the override xattr too).
            let f = self.open_file_of(ino)?;
            if up.rootless() && meta_change {
                let o = Obj::File(&f);
                let mut want = up.meta_of_obj(o, &sys::stat_obj(o)?);
                want.uid = s.uid.unwrap_or(want.uid);
                want.gid = s.gid.unwrap_or(want.gid);
                want.perm = s.mode.map_or(want.perm, |m| m & 0o7777);
                up.apply_meta_to(o, &want)?;
            } else {
                if s.uid.is_some() || s.gid.is_some() {
                    sys::fchown(&f, s.uid.unwrap_or(u32::MAX), s.gid.unwrap_or(u32::MAX))?;
                }
                if let Some(m) = s.mode {
                    sys::fchmod(&f, m & 0o7777)?;
                }
            }
            if s.atime.is_some() || s.mtime.is_some() {
                sys::futimens(
                    &f,
                    s.atime.unwrap_or(TimeSpec::Omit),
                    s.mtime.unwrap_or(TimeSpec::Omit),
                )?;
            }
            return self.attr(ino);
        }
        if meta_change {
            let p = p.clone()?;
            if up.rootless() {
                let st = sys::lstat(&p)?;
                let mut want = up.meta_of(&p, &st);
                if let Some(u) = s.uid {
                    want.uid = u;
                }
                if let Some(g) = s.gid {
                    want.gid = g;
                }
                if let Some(m) = s.mode {
                    want.perm = m & 0o7777;
                }
                up.apply_meta(&p, &want)?;
            } else {
                if s.uid.is_some() || s.gid.is_some() {
                    sys::lchown(&p, s.uid.unwrap_or(u32::MAX), s.gid.unwrap_or(u32::MAX))?;
                }
                if let (Some(m), false) = (s.mode, kind == Kind::Symlink) {
                    sys::chmod(&p, m & 0o7777)?;
                }
            }
        }
        if s.atime.is_some() || s.mtime.is_some() {
            sys::utimens(
                &p?,
                s.atime.unwrap_or(TimeSpec::Omit),
                s.mtime.unwrap_or(TimeSpec::Omit),
            )?;
        }
        self.attr(ino)
    }
}

/// What `kill_suid` leaves of the permission bits of a node with
/// attributes `a`, if it changes them (regular files only).
fn perm_after_kill(a: &Attr, in_group: impl FnOnce(u32) -> bool) -> Option<u32> {
    let perm = u32::from(a.perm);
    if a.kind != Kind::File || perm & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    kill_suid(perm, perm & libc::S_IXGRP == 0 && in_group(a.gid))
}

/// Permission bits `perm` without setuid, and without setgid unless
/// `keeps_sgid`: what a write, truncation or chown by a caller without
/// CAP_FSETID leaves (Linux 6.x, `setattr_should_drop_sgid`: setgid goes
/// if group-execute is set or the caller is not in the file's group).
/// `None` if nothing changes.
fn kill_suid(perm: u32, keeps_sgid: bool) -> Option<u32> {
    let mut p = perm & !libc::S_ISUID;
    if !keeps_sgid {
        p &= !libc::S_ISGID;
    }
    (p != perm).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::kill_suid;

    #[test]
    fn kill_suid_clears_what_it_is_told() {
        assert_eq!(kill_suid(0o4755, false), Some(0o755));
        assert_eq!(kill_suid(0o6755, false), Some(0o755));
        assert_eq!(kill_suid(0o2745, true), None, "setgid kept");
        assert_eq!(kill_suid(0o6745, true), Some(0o2745));
        assert_eq!(kill_suid(0o1777, false), None, "sticky stays");
        assert_eq!(kill_suid(0o644, false), None);
    }
}
