//! Attribute changes: chmod, chown, truncate and utimens (each copies the
//! node up first, a truncation to zero without its data), also through the
//! descriptor of an unlinked open file; and Linux's setuid/setgid kill
//! rule, which FUSE_HANDLE_KILLPRIV_V2 leaves to the daemon.
//!
//! Not here: reading attributes (`attr`), extended attributes (`xattr`).

use super::copyup::StagedCopy;
use super::handles::KERNEL_FH;
use super::{Attr, Caller, SetAttr, VResult, Vfs};
use crate::layer::index::Kind;
use crate::sys::{self, Obj, TimeSpec};
use crate::upper::Changing;

impl Vfs {
    /// Is `who` in group `gid` (a file's, as shown), or root (CAP_FSETID,
    /// as far as a FUSE request tells)? Its primary group, else its
    /// supplementary groups (read from /proc only for a setgid file
    /// without group-execute).
    fn in_group(who: Caller, gid: u32) -> bool {
        who.uid == 0 || who.gid == gid || (who.pid != 0 && sys::process_in_group(who.pid, gid))
    }

    /// May `who` change file `ino` (root, its owner, or someone with write
    /// permission on it)?
    fn may_change(&self, who: Caller, ino: u64) -> bool {
        let Ok(a) = self.getattr(ino) else {
            return false;
        };
        let write_bit = if Self::in_group(who, a.gid) {
            0o020
        } else {
            0o002
        };
        who.uid == 0 || who.uid == a.uid || u32::from(a.perm) & write_bit != 0
    }

    /// A SETATTR as the kernel sends it. With `killpriv`
    /// (FUSE_HANDLE_KILLPRIV_V2 negotiated) the kernel leaves clearing
    /// setuid/setgid to us, in the same change: a chown clears them
    /// (Linux does, whoever asks), a truncation by anyone but root too,
    /// and so does a SETATTR that changes nothing, which is what is left
    /// of the kernel's own request to drop privileges (chown(f, -1, -1);
    /// file_remove_privs) once it has taken the mode change out of it:
    /// with `default_permissions` nothing checked who sent that one, so it
    /// counts only from root, the owner or someone who may write the file.
    /// The new mode is read and applied under one hold of `ns`, so a chmod
    /// in between is not undone. A SETATTR that changes nothing copies
    /// nothing up.
    pub fn setattr_request(
        &self,
        ino: u64,
        fh: Option<u64>,
        s: SetAttr,
        who: Caller,
        killpriv: bool,
    ) -> VResult<Attr> {
        let nothing = (s.mode, s.uid, s.gid, s.size) == (None, None, None, None)
            && s.atime.is_none()
            && s.mtime.is_none();
        let kills = killpriv
            && s.mode.is_none()
            && (s.uid.is_some()
                || s.gid.is_some()
                || (s.size.is_some() && who.uid != 0)
                || (nothing && self.may_change(who, ino)));
        if !kills {
            return match nothing {
                true => self.getattr(ino),
                false => self.setattr_with(ino, fh, s, None),
            };
        }
        // A look first, to copy up only for a change: the decision that
        // counts is taken again under `ns`.
        if nothing && perm_after_kill(&self.getattr(ino)?, |g| Self::in_group(who, g)).is_none() {
            return self.getattr(ino);
        }
        self.setattr_with(ino, fh, s, Some(who))
    }

    /// chmod, chown, truncate and utimens. Any of them copies the node up
    /// first (a truncation to zero without its data).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, s: SetAttr) -> VResult<Attr> {
        self.setattr_with(ino, fh, s, None)
    }

    /// `setattr`, and with `kill` also Linux's setuid/setgid rule for that
    /// caller, the mode read and changed under the same hold of `ns`.
    fn setattr_with(
        &self,
        ino: u64,
        fh: Option<u64>,
        s: SetAttr,
        kill: Option<Caller>,
    ) -> VResult<Attr> {
        self.up()?;
        let mut s = s;
        if let Some(u) = s.uid {
            s.uid = Some(self.owners.stored_uid(u).ok_or(libc::EINVAL)?);
        }
        if let Some(g) = s.gid {
            s.gid = Some(self.owners.stored_gid(g).ok_or(libc::EINVAL)?);
        }
        let meta_change = s.mode.is_some() || s.uid.is_some() || s.gid.is_some() || kill.is_some();
        let copies = s.size.is_some() || meta_change || s.atime.is_some() || s.mtime.is_some();
        let with_data = s.size.is_none_or(|n| n > 0);
        let staged = match copies {
            true => self.stage_copy_up(ino, with_data)?,
            false => None,
        };
        let ch = self.change()?;
        if let Some(who) = kill {
            if s.mode.is_none() {
                s.mode = perm_after_kill(&self.attr(ino)?, |g| Self::in_group(who, g));
            }
            let empty = (s.mode, s.uid, s.gid, s.size) == (None, None, None, None)
                && s.atime.is_none()
                && s.mtime.is_none();
            if empty {
                // A chmod in between took the bits away: nothing left to do
                // (the staged copy, if any, is dropped).
                return self.attr(ino);
            }
        }
        self.setattr_locked(&ch, ino, fh, s, staged)
    }

    /// Clears the setuid/setgid bits of `ino` as a write or truncation by
    /// `who` without CAP_FSETID does, reading and changing the mode under
    /// one hold of `ns`, so a chmod in between is not undone.
    pub fn kill_suid(&self, ino: u64, fh: Option<u64>, who: Caller) -> VResult<()> {
        self.up()?;
        // Most writes meet no such bit: tell that from the handle, without
        // taking `ns`.
        if let Some(f) = fh.and_then(|fh| self.writable_file(ino, fh).ok()) {
            if !self.file_is_setid(&f) {
                return Ok(());
            }
        }
        let ch = self.change()?;
        if let Some(p) = perm_after_kill(&self.attr(ino)?, |g| Self::in_group(who, g)) {
            let s = SetAttr {
                mode: Some(p),
                ..SetAttr::default()
            };
            self.setattr_locked(&ch, ino, fh, s, None)?;
        }
        Ok(())
    }

    /// `setattr` with `ns` held for writing (`ch`) and owners already
    /// stored ids.
    fn setattr_locked(
        &self,
        ch: &Changing<'_>,
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
            self.copy_up_with(ch, ino, size > 0, staged.take())?;
            // Through the caller's handle if it can write (the name may be
            // gone), else through a new one.
            let done = self
                .writable_file(ino, fh.unwrap_or(KERNEL_FH))
                .is_ok_and(|f| f.set_len(size).is_ok());
            if !done {
                let f = self.open_upper(ino, libc::O_WRONLY)?;
                f.set_len(size)?;
            }
        }
        if meta_change || s.atime.is_some() || s.mtime.is_some() {
            self.copy_up_with(ch, ino, true, staged)?;
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
