//! Forgetting nodes: the kernel's lookup count of each node, FORGET, and
//! dropping a node no one needs any more (its table slot and names freed;
//! a copied-up object's number kept in `Nodes::copied`).
//!
//! Not here: how a node gets its number (`inodes::ino_of`), handles.

use super::inodes::UPPER_TAG;
use super::{Handle, Vfs, ROOT_INO};
use crate::sys;

/// Nodes and listing entries freed after which the heap is trimmed.
const TRIM_AFTER: usize = 1 << 16;

// Forgetting. The kernel counts the entries it was given of each node
// (LOOKUP, readdirplus, create, mknod, mkdir, symlink, link) and gives
// them back with FORGET when it evicts its inode; at 0 the node is
// dropped, unless the root or an open handle still needs it (then at that
// handle's release). Nodes resolved only inside the daemon (the target of
// an unlink, a directory listed for nlink, the other names of a hard
// link) count nothing and stay until the kernel has been given and has
// forgotten them. A number is never given to another object while its
// node lives, and a node dropped and found again gets the number it had.
impl Vfs {
    /// Counts one more entry of node `ino` handed to the kernel (the reply
    /// of a mknod, mkdir, symlink, link or create).
    pub fn hand_out(&self, ino: u64) {
        if let Ok(n) = self.nodes.write().node_mut(ino) {
            n.lookups += 1;
            n.forgotten = false;
        }
    }

    /// FORGET: the kernel gives back `nlookup` entries of node `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.forget_many(&[(ino, nlookup)]);
    }

    /// BATCH_FORGET: [`Vfs::forget`] of each (inode, nlookup).
    pub fn forget_many(&self, forgets: &[(u64, u64)]) {
        let _r = self.reading();
        self.forget_locked(forgets);
    }

    /// The number of live nodes (the root included).
    pub fn node_count(&self) -> usize {
        self.nodes.read().table.len()
    }

    /// [`Vfs::forget_many`] with `ns` held.
    pub(super) fn forget_locked(&self, forgets: &[(u64, u64)]) {
        let mut idle = Vec::new();
        {
            let mut nodes = self.nodes.write();
            for &(ino, k) in forgets {
                if let Ok(n) = nodes.node_mut(ino) {
                    n.lookups = n.lookups.saturating_sub(k);
                    if n.lookups == 0 && ino != ROOT_INO {
                        idle.push(ino);
                    }
                }
            }
        }
        self.drop_idle(idle);
    }

    /// Drops the nodes of `inos` that no one needs any more (no lookup
    /// left, no open handle), with `ns` held.
    pub(super) fn drop_idle(&self, mut inos: Vec<u64>) {
        if inos.is_empty() {
            return;
        }
        let open: std::collections::HashSet<u64> = self
            .handles
            .lock()
            .values()
            .filter_map(|h| match &**h {
                Handle::File { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect();
        // A copied-up object found again in the branch must get its number
        // back: a directory's copy-up records none, so it is read now.
        let mut copied = Vec::new();
        {
            let mut nodes = self.nodes.write();
            inos.retain(|&ino| {
                let Ok(n) = nodes.node_mut(ino) else {
                    return false;
                };
                if open.contains(&ino) {
                    n.forgotten = true;
                    return false;
                }
                if n.place.upper() && ino & UPPER_TAG == 0 && !n.names.is_empty() {
                    copied.push(ino);
                }
                true
            });
            copied.retain(|i| !nodes.copied_rev.contains_key(i));
        }
        let copied: Vec<(u64, u64)> = copied
            .into_iter()
            .filter_map(|ino| Some((sys::lstat(&self.upath(ino).ok()?).ok()?.st_ino, ino)))
            .collect();
        let mut gone = Vec::with_capacity(inos.len());
        let trim;
        {
            let mut nodes = self.nodes.write();
            for (st_ino, ino) in copied {
                nodes.note_copied(st_ino, ino);
            }
            for ino in inos {
                if !nodes.node(ino).is_ok_and(|n| n.lookups == 0) {
                    continue;
                }
                if let Some(n) = nodes.remove(ino) {
                    gone.push(ino);
                    let listed = n.listing.as_ref().map_or(0, |l| l.len());
                    nodes.freed += 1 + listed;
                }
            }
            // The heap is trimmed when the maps shrink, and after every
            // 64k nodes or listing entries freed otherwise (the last of a
            // big walk: a directory's listing goes with its node, after
            // its children).
            trim = nodes.shrink() || nodes.freed > TRIM_AFTER;
            if trim {
                nodes.freed = 0;
            }
        }
        if trim {
            sys::trim_heap();
        }
        // Their descriptors are closed (a nameless node's file with them).
        for ino in gone {
            self.ino_files.lock().pop(&ino);
            self.nameless_files.lock().remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::inodes::{ino_of, Backing};
    use super::*;
    use crate::layer::index::{build_index, Index};
    use crate::layer::Layer;

    /// A layer of `d/`, `d/a`, `d/b` and `d/c`, a hard link of `d/a`.
    fn vfs() -> Vfs {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "d/", &b""[..]).unwrap();
        for f in ["d/a", "d/b"] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(1);
            b.append_data(&mut h, f, &b"x"[..]).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "d/c", "d/a").unwrap();
        let tar = b.into_inner().unwrap();
        let index = Index::from_bytes(build_index(&tar).unwrap().0, "test").unwrap();
        Vfs::new(vec![Layer::in_memory("test", index, tar)])
    }

    #[test]
    fn forgotten_nodes_are_dropped_and_come_back_with_their_numbers() {
        let v = vfs();
        assert_eq!(v.node_count(), 1, "the root");
        let d = v.lookup(ROOT_INO, b"d").unwrap().ino;
        let a = v.lookup(d, b"a").unwrap().ino;
        let b = v.lookup(d, b"b").unwrap().ino;
        let c = v.lookup(d, b"c").unwrap().ino;
        assert_eq!(a, c, "hard links share a node");
        assert_eq!(v.node_count(), 4);
        // a/c was handed out twice: one FORGET of one is not the last.
        v.forget(a, 1);
        assert_eq!(v.node_count(), 4);
        v.forget(a, 1);
        assert_eq!(v.node_count(), 3);
        // The directory goes, its still looked-up child stays.
        v.forget(d, 1);
        assert_eq!(v.node_count(), 2);
        assert_eq!(v.getattr(b).unwrap().ino, b);
        v.forget(b, 1);
        assert_eq!(v.node_count(), 1);
        assert_eq!(v.getattr(b).unwrap_err().errno(), libc::ESTALE);
        // Looked up again (by readdirplus here): the same numbers.
        assert_eq!(v.lookup(ROOT_INO, b"d").unwrap().ino, d);
        let listed: Vec<u64> = v.readdir(d).unwrap().iter().map(|e| e.ino).collect();
        assert_eq!(listed, [a, b, a], "readdir's d_ino");
        assert_eq!(v.node_count(), 2, "a listing makes no nodes");
        let names = [&b"a"[..], b"b", b"c"];
        let plus: Vec<u64> = names
            .iter()
            .map(|n| v.current_entry(d, n).unwrap().ino)
            .collect();
        assert_eq!(plus, [a, b, a]);
        assert_eq!(v.node_count(), 4);
        v.forget(a, 2);
        v.forget(b, 1);
        v.forget(d, 1);
        // The root is never dropped.
        v.forget(ROOT_INO, 1);
        assert_eq!(v.node_count(), 1);
        assert_eq!(v.getattr(ROOT_INO).unwrap().ino, ROOT_INO);
    }

    #[test]
    fn a_node_with_an_open_handle_goes_at_its_release() {
        let v = vfs();
        let d = v.lookup(ROOT_INO, b"d").unwrap().ino;
        let b = v.lookup(d, b"b").unwrap().ino;
        let fh = v.open(b, libc::O_RDONLY).unwrap();
        v.forget(b, 1);
        assert_eq!(&*v.read(b, fh, 0, 10).unwrap(), b"x");
        assert_eq!(v.node_count(), 3);
        v.release(fh);
        assert_eq!(v.node_count(), 2);
    }

    #[test]
    fn inode_numbers_follow_from_the_backing_and_never_collide() {
        let f = |layer, group| ino_of(Backing::LowerFile { layer, group });
        let d = |layer, entry| ino_of(Backing::LowerDir { layer, entry });
        let u = |st| ino_of(Backing::Branch(st));
        let all = [
            f(0, 0),
            f(0, 1),
            f(1, 0),
            f(0, u32::MAX),
            f(u16::MAX, u32::MAX),
            d(0, 0),
            d(0, 1),
            d(1, 0),
            d(u16::MAX, u32::MAX),
            u(0),
            u(1),
            u(2),
            u(1 << 33),
            u((1 << 63) - 1),
        ];
        let distinct: std::collections::HashSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "{all:x?}");
        for i in all {
            assert!(i > ROOT_INO, "{i:#x} is the root's or no number");
        }
        // Lower numbers never carry the branch's tag; the same backing
        // always gives the same number.
        assert!(all[..9].iter().all(|i| i & UPPER_TAG == 0));
        assert!(all[9..].iter().all(|i| i & UPPER_TAG != 0));
        assert_eq!(f(3, 7), f(3, 7));
        assert_eq!(u(12345), UPPER_TAG | 12345);
    }
}
