//! Directory listings: the merged listing of a directory (the branch's
//! names, then the lower layers' that no upper name or whiteout shadows),
//! cached for directories that are not in the branch, and the listing an
//! open directory hands out while it is read.
//!
//! Not here: resolving one name (`inodes`), the kernel-side offsets and
//! readdirplus attributes (`fuse`).

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::inodes::{ino_of, lower_backing, Found, Place};
use super::{DirEntry, ErrorContext, Handle, VResult, Vfs};
use crate::layer::index::Kind;
use crate::layer::whiteout::NameClass;
use crate::union::{list_dir, Resolved};

impl Vfs {
    /// The merged listing of directory `ino` (without `.` and `..`), sorted
    /// by name.
    pub fn readdir(&self, ino: u64) -> VResult<Arc<Vec<DirEntry>>> {
        let _r = self.reading();
        self.list(ino)
    }

    pub(super) fn list(&self, ino: u64) -> VResult<Arc<Vec<DirEntry>>> {
        {
            let nodes = self.nodes.read();
            let node = nodes.node(ino)?;
            if let Some(l) = &node.listing {
                return Ok(l.clone());
            }
        }
        let (kind, upper, lower) = self.state(ino)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR.into());
        }
        let mut out = Vec::new();
        let mut shadowed = BTreeSet::new();
        if upper {
            let up_ref = self.up()?;
            let dir = self.upath(ino)?;
            let rd = crate::sys::read_dir(&dir).context(|| format!("listing {}", dir.display()))?;
            for de in rd {
                let name = de.name;
                match up_ref.classify(&dir, &name, de.kind) {
                    NameClass::Plain => {}
                    NameClass::Whiteout(hidden) => {
                        shadowed.insert(hidden.to_vec());
                        continue;
                    }
                    NameClass::Opaque | NameClass::Meta => continue,
                }
                // An upper name hides the lower one even if it cannot be
                // resolved (a broken override xattr, say).
                shadowed.insert(name.clone());
                let Ok(c) = self.child_ino(ino, &name) else {
                    continue;
                };
                out.push(DirEntry {
                    kind: self.kind_of(c)?,
                    name,
                    ino: c,
                });
            }
        }
        if let Some(Resolved::Dir(srcs)) = &lower {
            crate::layer::list_ahead(&self.layers, srcs);
            let listed = list_dir(&self.layers, srcs);
            self.lower_listed(&lower)?;
            for (name, r) in listed {
                if shadowed.contains(&name) {
                    continue;
                }
                let kind = self.entry_of(r.meta_source(&self.layers)).kind;
                if !upper {
                    // Nothing here is in the branch: what backs each entry
                    // gives its number, no node is needed (readdirplus
                    // makes one for each entry it hands out).
                    let c = ino_of(lower_backing(&self.layers, &r));
                    out.push(DirEntry { kind, name, ino: c });
                    continue;
                }
                let c = self.intern(
                    ino,
                    &name,
                    Found {
                        kind,
                        place: Place::Lower(r),
                        upper_ino: None,
                    },
                );
                out.push(DirEntry {
                    kind: self.kind_of(c)?,
                    name,
                    ino: c,
                });
            }
        }
        if upper {
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        // Kept as long as the directory's node: no spare capacity.
        out.shrink_to_fit();
        let out = Arc::new(out);
        if !upper {
            self.with_node(ino, |n| n.listing = Some(out.clone()))?;
        }
        Ok(out)
    }

    /// Opens directory `ino`.
    pub fn opendir(&self, ino: u64) -> VResult<u64> {
        if self.state(ino)?.0 != Kind::Dir {
            return Err(libc::ENOTDIR.into());
        }
        Ok(self.alloc_handle(Handle::Dir(Mutex::new(None))))
    }

    /// The listing of an open directory read from `offset`: taken anew at
    /// offset 0, else the one taken then.
    pub fn dir_listing(&self, ino: u64, fh: u64, offset: u64) -> VResult<Arc<Vec<DirEntry>>> {
        let h = self.handle(fh);
        let Some(Handle::Dir(slot)) = h.as_deref() else {
            return self.readdir(ino);
        };
        let mut slot = slot.lock();
        match &*slot {
            Some(l) if offset != 0 => Ok(l.clone()),
            _ => {
                let l = self.readdir(ino)?;
                *slot = Some(l.clone());
                Ok(l)
            }
        }
    }
}
