//! Changes of the namespace on a read-write mount: new objects (mkdir,
//! mknod, symlink, create: built in the work directory, then published by
//! one rename), unlink, rmdir, rename and link, each keeping the node
//! table in step with the branch.
//!
//! Not here: the branch's whiteouts, opaque markers and publish steps
//! (`upper`), copy-up (`copyup`), attribute changes (`setattr`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::acl::{self, NewAcls};
use super::inodes::{Found, Place};
use super::{Attr, Caller, Error, ErrorContext, Handle, VResult, Vfs};
use crate::idmap::OVERFLOW_ID;
use crate::layer::index::Kind;
use crate::layer::whiteout::{classify_name, NameClass};
use crate::sys;
use crate::union::Resolved;
use crate::upper::{child, Changing, Meta};

impl Vfs {
    fn exists(&self, parent: u64, name: &[u8]) -> VResult<Option<u64>> {
        match self.child_ino(parent, name) {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new name must be one the branch can hold: `.wh.` names are the
    /// layer format's own.
    fn check_new_name(name: &[u8]) -> VResult<()> {
        if name.len() > 255 {
            return Err(libc::ENAMETOOLONG.into());
        }
        if classify_name(name) != NameClass::Plain {
            return Err(libc::EINVAL.into());
        }
        Ok(())
    }

    /// The owner, mode and ACLs of a new object in `parent`: a setgid
    /// directory gives its group (and, to directories, its setgid bit);
    /// where the kernel leaves it to us, the parent's default ACL masks
    /// the mode and is inherited (see `acl`), or else the umask applies.
    fn new_meta(
        &self,
        parent: u64,
        who: Caller,
        kind: Kind,
        perm: u32,
        rdev: u64,
    ) -> VResult<(Meta, NewAcls)> {
        let pa = self.stored_attr(parent)?;
        let mut acls = NewAcls::default();
        let mut perm = perm & 0o7777;
        if self.kernel_acls.load(Ordering::Relaxed) && kind != Kind::Symlink {
            let default = match self.xattr(parent, acl::DEFAULT) {
                Ok(v) => Some(v),
                Err(e) if e.errno() == libc::ENODATA => None,
                Err(e) => return Err(e),
            };
            (perm, acls) = acl::new_object(perm, kind == Kind::Dir, default.as_deref(), who.umask);
        }
        // A creator no mapping covers gets the overflow id, as the kernel
        // does for ids a user namespace does not map.
        let mut meta = Meta {
            kind,
            perm: perm & 0o7777,
            uid: self.owners.stored_uid(who.uid).unwrap_or(OVERFLOW_ID),
            gid: self.owners.stored_gid(who.gid).unwrap_or(OVERFLOW_ID),
            rdev,
        };
        if pa.perm as u32 & libc::S_ISGID != 0 {
            meta.gid = pa.gid;
            if kind == Kind::Dir {
                meta.perm |= libc::S_ISGID;
            }
        }
        Ok((meta, acls))
    }

    /// Publishes the finished object `t` as `name` in `parent` (whose upper
    /// path is `pp`): one rename, then the whiteout it replaces goes. A
    /// directory over something lower is made opaque first.
    fn publish(
        &self,
        ch: &Changing<'_>,
        t: &Path,
        (parent, pp, name): (u64, &Path, &[u8]),
        dir: bool,
    ) -> VResult<()> {
        let up = self.up()?;
        let (_, _, plower) = self.state(parent)?;
        let lower_has = self.lower_child(&plower, name).is_some();
        if dir && lower_has {
            up.make_opaque(ch, t)
                .context(|| format!("making {} opaque", t.display()))?;
        }
        // The branch holds `.wh.NAME` only where a lower layer has NAME
        // (deletions write one only then, and the layers do not change),
        // or in a directory that stopped merging its lower one (an opaque
        // copy keeps the whiteouts it had).
        let maybe_whiteout = lower_has || !matches!(plower, Some(Resolved::Dir(_)));
        up.publish(ch, t, pp, name, maybe_whiteout).context(|| {
            format!(
                "publishing {} as {}",
                t.display(),
                child(pp, name).display()
            )
        })
    }

    /// Creates a new object `name` in `parent`; `make` builds it at a
    /// temporary path. Returns its inode number.
    fn create_node(
        &self,
        ch: &Changing<'_>,
        parent: u64,
        name: &[u8],
        (meta, acls): (Meta, NewAcls),
        make: impl FnOnce(&Path) -> VResult<()>,
    ) -> VResult<u64> {
        Self::check_new_name(name)?;
        if self.exists(parent, name)?.is_some() {
            return Err(libc::EEXIST.into());
        }
        self.create_new_node(ch, parent, name, (meta, acls), make)
    }

    /// `create_node` for a name known to be new (checked under the same
    /// hold of `ns`).
    fn create_new_node(
        &self,
        ch: &Changing<'_>,
        parent: u64,
        name: &[u8],
        (meta, acls): (Meta, NewAcls),
        make: impl FnOnce(&Path) -> VResult<()>,
    ) -> VResult<u64> {
        let up = self.up()?;
        let pp = self.copy_up_dir(ch, parent)?;
        let t = up.temp();
        let r = make(&t)
            .context(|| format!("making {}", t.display()))
            .and_then(|()| {
                up.apply_meta(&t, &meta)
                    .context(|| format!("owner and mode of {}", t.display()))
            })
            .and_then(|()| {
                // After the mode: the branch's filesystem sets the mode's
                // bits from the access ACL (the same bits).
                for (name, v) in [(acl::ACCESS, &acls.access), (acl::DEFAULT, &acls.default)] {
                    if let Some(v) = v {
                        sys::lsetxattr(&t, name, v, 0)
                            .context(|| format!("inherited ACL of {}", t.display()))?;
                    }
                }
                Ok(())
            })
            .and_then(|()| self.publish(ch, &t, (parent, &pp, name), meta.kind == Kind::Dir));
        if let Err(e) = r {
            let _ = up.discard(ch, &t);
            return Err(e.context(format!("creating {}", child(&pp, name).display())));
        }
        self.nlinks.lock().clear();
        Ok(self.intern(
            parent,
            name,
            Found {
                kind: meta.kind,
                place: Place::Upper,
                upper_ino: None,
            },
        ))
    }

    /// Makes directory `name` in `parent` with permission bits `mode`, owned
    /// by `who`, in the rw branch (EROFS without one).
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, who: Caller) -> VResult<Attr> {
        self.up()?;
        let ch = self.change()?;
        let meta = self.new_meta(parent, who, Kind::Dir, mode, 0)?;
        let ino = self.create_node(&ch, parent, name, meta, |t| {
            std::fs::create_dir(t).map_err(Error::from)
        })?;
        self.adjust_subdirs(parent, 1);
        self.attr(ino)
    }

    /// Makes a regular file, fifo, socket or device `name` in `parent` (type in
    /// the `S_IFMT` bits of `mode`, device number `rdev`), owned by `who`.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        who: Caller,
    ) -> VResult<Attr> {
        self.up()?;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFSOCK => Kind::Socket,
            _ => return Err(libc::EINVAL.into()),
        };
        let ch = self.change()?;
        let (meta, acls) = self.new_meta(parent, who, kind, mode, rdev as u64)?;
        let up = self.up()?;
        let ino = self.create_node(&ch, parent, name, (meta, acls), |t| {
            if kind == Kind::File {
                Ok(sys::mknod(t, libc::S_IFREG | 0o600, 0)?)
            } else {
                Ok(up.make_special(t, &meta, b"")?)
            }
        })?;
        self.attr(ino)
    }

    /// Makes symlink `name` in `parent` pointing at `target`, owned by `who`.
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], who: Caller) -> VResult<Attr> {
        self.up()?;
        let ch = self.change()?;
        let (meta, _) = self.new_meta(parent, who, Kind::Symlink, 0o777, 0)?;
        let meta = Meta {
            perm: 0o777,
            ..meta
        };
        let up = self.up()?;
        let ino = self.create_node(&ch, parent, name, (meta, NewAcls::default()), |t| {
            Ok(up.make_special(t, &meta, target)?)
        })?;
        self.attr(ino)
    }

    /// Creates and opens a regular file; with O_EXCL an existing name is
    /// EEXIST, without it the existing file is opened.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        who: Caller,
    ) -> VResult<(Attr, u64)> {
        self.up()?;
        let ch = self.change()?;
        if let Some(ino) = self.exists(parent, name)? {
            if flags & libc::O_EXCL != 0 {
                return Err(libc::EEXIST.into());
            }
            drop(ch);
            let fh = self.open(ino, flags & !libc::O_CREAT)?;
            return Ok((self.getattr(ino)?, fh));
        }
        Self::check_new_name(name)?;
        let meta = self.new_meta(parent, who, Kind::File, mode, 0)?;
        let mut file = None;
        let ino = self.create_new_node(&ch, parent, name, meta, |t| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(t)?;
            file = Some(Arc::new(f));
            Ok(())
        })?;
        let attr = self.attr(ino)?;
        drop(ch);
        let fh = self.alloc_handle(Handle::File {
            ino,
            file: Mutex::new(file),
            lower: None,
        });
        Ok((attr, fh))
    }

    /// Drops name (`parent`, `name`) of node `ino` from the table.
    fn drop_name(&self, ino: u64, parent: u64, name: &[u8]) {
        let key = (parent, Box::<[u8]>::from(name));
        let mut nodes = self.nodes.write();
        nodes.by_name.remove(&key);
        if let Ok(n) = nodes.node_mut(ino) {
            n.names.retain(|k| *k != key);
        }
        drop(nodes);
        self.nlinks.lock().clear();
    }

    /// Removes non-directory `name` of `parent`: from the branch, with a
    /// whiteout where a lower layer has the name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        let ch = self.change()?;
        let ino = self.child_ino(parent, name)?;
        let (kind, upper, _) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EISDIR.into());
        }
        let pp = self.copy_up_dir(&ch, parent)?;
        let kept = self.open_before_unname(ino);
        up.delete(&ch, &pp, name, upper, false, self.lower_has(parent, name)?)
            .context(|| format!("unlink of {} on the branch", child(&pp, name).display()))?;
        self.drop_name(ino, parent, name);
        self.keep_nameless(ino, kept);
        Ok(())
    }

    /// Removes the empty directory `name` of `parent`, with a whiteout where a
    /// lower layer has the name.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> VResult<()> {
        let up = self.up()?;
        let ch = self.change()?;
        let ino = self.child_ino(parent, name)?;
        let (kind, upper, _) = self.state(ino)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR.into());
        }
        if !self.list(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY.into());
        }
        let pp = self.copy_up_dir(&ch, parent)?;
        let kept = self.open_before_unname(ino);
        up.delete(&ch, &pp, name, upper, true, self.lower_has(parent, name)?)
            .context(|| format!("rmdir of {} on the branch", child(&pp, name).display()))?;
        self.drop_name(ino, parent, name);
        self.keep_nameless(ino, kept);
        self.adjust_subdirs(parent, -1);
        Ok(())
    }

    /// Renames, with `flags` RENAME_NOREPLACE or RENAME_EXCHANGE. A
    /// directory with lower content keeps it through a redirect in an
    /// overlay-format branch (not for an exchange); otherwise it is copied
    /// up whole and made opaque first. No rename is refused with EXDEV.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> VResult<()> {
        let up = self.up()?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
            || flags == libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE
        {
            return Err(libc::EINVAL.into());
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        // A directory with lower content moves with a redirect in an
        // overlay-format branch (O(1), as kernel overlayfs' redirect_dir);
        // elsewhere its subtree is copied up.
        let redirects = up.redirects() && !exchange;
        // The data of the lower files a rename copies up is copied before
        // `ns` is taken for writing: a big lower directory's copy stalls
        // nothing else.
        let mut staged = self.stage_tree(parent, name, !redirects)?;
        if exchange {
            staged.extend(self.stage_tree(newparent, newname, true)?);
        }
        let ch = self.change()?;
        let src = self.child_ino(parent, name)?;
        let dst = self.exists(newparent, newname)?;
        if exchange && dst.is_none() {
            return Err(libc::ENOENT.into());
        }
        if !exchange {
            Self::check_new_name(newname)?;
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(libc::EEXIST.into());
        }
        if dst == Some(src) {
            return Ok(()); // the same file: POSIX says do nothing
        }
        let (skind, ..) = self.state(src)?;
        let sdir = skind == Kind::Dir;
        if let (Some(d), false) = (dst, exchange) {
            let ddir = self.state(d)?.0 == Kind::Dir;
            if sdir && !ddir {
                return Err(libc::ENOTDIR.into());
            }
            if !sdir && ddir {
                return Err(libc::EISDIR.into());
            }
            if ddir && !self.list(d)?.is_empty() {
                return Err(libc::ENOTEMPTY.into());
            }
        }
        // Not for a tree holding lower hard links: the merged view finds a
        // link's other names by their paths in the layer, which a
        // redirect moves (its copy-up would break the link).
        let mut redirect = match self.state(src)?.2 {
            Some(Resolved::Dir(srcs)) if redirects && !self.holds_hard_links(&srcs) => {
                Some(self.lower_origin(src)?)
            }
            _ => None,
        };
        if let Some(origin) = &redirect {
            // Before the rename, as overlayfs does: at the old name a
            // redirect to its own path changes nothing, and a rename that
            // fails leaves it so.
            let p = self.copy_up_dir(&ch, src)?;
            match up.set_redirect(&ch, &p, origin) {
                Ok(()) => {}
                // Too long for the branch's filesystem (ext4 keeps a
                // directory's xattrs in one block: a path near PATH_MAX
                // does not fit): copied up whole instead, its data under
                // `ns` (none was staged).
                Err(libc::ENOSPC | libc::E2BIG | libc::ERANGE) => {
                    tracing::debug!(len = origin.len(), "redirect too long: copying up");
                    redirect = None;
                }
                Err(e) => {
                    return Err(Error::from(e)
                        .context(format!("redirect of {} on the branch", p.display())))
                }
            }
        }
        if redirect.is_none() {
            self.copy_up_tree(&ch, src, &mut staged)?;
        }
        let sp = self.copy_up_dir(&ch, parent)?;
        let dp = self.copy_up_dir(&ch, newparent)?;
        let from = child(&sp, name);
        let to = child(&dp, newname);
        if exchange {
            let d = dst.expect("checked above");
            self.copy_up_tree(&ch, d, &mut staged)?;
            let ddir = self.state(d)?.0 == Kind::Dir;
            if sdir && self.lower_has(newparent, newname)? {
                up.make_opaque(&ch, &from)
                    .context(|| format!("making {} opaque", from.display()))?;
            }
            if ddir && self.lower_has(parent, name)? {
                up.make_opaque(&ch, &to)
                    .context(|| format!("making {} opaque", to.display()))?;
            }
            sys::rename2(&from, &to, libc::RENAME_EXCHANGE).context(|| {
                format!(
                    "exchange of {} and {} on the branch",
                    from.display(),
                    to.display()
                )
            })?;
            let delta = i32::from(sdir) - i32::from(ddir);
            self.adjust_subdirs(newparent, delta);
            self.adjust_subdirs(parent, -delta);
            self.move_name(src, (parent, name), (newparent, newname));
            self.move_name(d, (newparent, newname), (parent, name));
            self.set_parent_key(src, d, (parent, name), (newparent, newname));
        } else {
            if redirect.is_none() && sdir && self.lower_has(newparent, newname)? {
                up.make_opaque(&ch, &from)
                    .context(|| format!("making {} opaque", from.display()))?;
            }
            let whiteout_old = self.lower_has(parent, name)?;
            let discard_to = match dst {
                Some(d) => {
                    let (dkind, dupper, _) = self.state(d)?;
                    dkind == Kind::Dir && dupper
                }
                None => false,
            };
            let kept = dst.and_then(|d| self.open_before_unname(d));
            up.rename(&ch, (&sp, name), (&dp, newname), whiteout_old, discard_to)
                .context(|| {
                    format!(
                        "rename of {} to {} on the branch",
                        from.display(),
                        to.display()
                    )
                })?;
            // Done on disk: from here on the table follows.
            if let Some(d) = dst {
                self.drop_name(d, newparent, newname);
                self.keep_nameless(d, kept);
            }
            if sdir {
                self.adjust_subdirs(parent, -1);
                if dst.is_none() {
                    self.adjust_subdirs(newparent, 1);
                }
            }
            self.move_name(src, (parent, name), (newparent, newname));
            let key = (newparent, Box::<[u8]>::from(newname));
            self.nodes.write().by_name.insert(key, src);
            self.nodes
                .write()
                .by_name
                .remove(&(parent, Box::<[u8]>::from(name)));
        }
        self.nlinks.lock().clear();
        Ok(())
    }

    /// Does a file with more than one name lie anywhere below these lower
    /// directories (read from the layer indexes alone, whiteouts not
    /// applied: an over-cautious yes costs a copy, never a wrong view)?
    fn holds_hard_links(&self, srcs: &[crate::union::Source]) -> bool {
        let mut stack: Vec<(u16, u32)> = srcs.to_vec();
        while let Some((l, i)) = stack.pop() {
            let idx = &self.layers[l as usize].index;
            for c in idx.children(&idx.entry(i)) {
                let e = idx.entry(c);
                match e.kind {
                    Kind::Dir => stack.push((l, c)),
                    _ if e.nlink > 1 => return true,
                    _ => {}
                }
            }
        }
        false
    }

    /// Renames one name of node `ino` in its names list.
    fn move_name(&self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        // Only for a node in the table (its callers looked it up).
        let _ = self.with_node(ino, |n| {
            for k in n.names.iter_mut() {
                if k.0 == from.0 && *k.1 == *from.1 {
                    *k = (to.0, Box::from(to.1));
                    break;
                }
            }
        });
    }

    /// After an exchange: the two names swap nodes in the name table.
    fn set_parent_key(&self, a: u64, b: u64, ka: (u64, &[u8]), kb: (u64, &[u8])) {
        let mut nodes = self.nodes.write();
        nodes.by_name.insert((kb.0, Box::from(kb.1)), a);
        nodes.by_name.insert((ka.0, Box::from(ka.1)), b);
    }

    /// Makes `newname` in `newparent` a new name of non-directory `ino`
    /// (copied up first if it is a lower file).
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> VResult<Attr> {
        self.up()?;
        Self::check_new_name(newname)?;
        {
            // The refusals first, before a copy-up's data copy.
            let _r = self.reading();
            if self.state(ino)?.0 == Kind::Dir {
                return Err(libc::EPERM.into());
            }
            if self.exists(newparent, newname)?.is_some() {
                return Err(libc::EEXIST.into());
            }
        }
        let staged = self.stage_copy_up(ino, true)?;
        let ch = self.change()?;
        let (kind, ..) = self.state(ino)?;
        if kind == Kind::Dir {
            return Err(libc::EPERM.into());
        }
        if self.exists(newparent, newname)?.is_some() {
            return Err(libc::EEXIST.into());
        }
        self.copy_up_with(&ch, ino, true, staged)?;
        let from = self.upath(ino)?;
        let dp = self.copy_up_dir(&ch, newparent)?;
        self.up()?.link(&ch, &from, &dp, newname).context(|| {
            format!(
                "link of {} as {} on the branch",
                from.display(),
                child(&dp, newname).display()
            )
        })?;
        self.note_upper_ino(ino, &from);
        let key = (newparent, Box::<[u8]>::from(newname));
        {
            let mut nodes = self.nodes.write();
            nodes.node_mut(ino)?.names.push(key.clone());
            nodes.by_name.insert(key, ino);
        }
        self.nlinks.lock().clear();
        self.attr(ino)
    }
}
