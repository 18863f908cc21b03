//! The namespace lock of a read-write branch, and the tokens that prove
//! it is held.
//!
//! The branch's tree on disk is state that no Rust value holds, so the
//! lock cannot wrap it the way a `RwLock<T>` wraps a `T`. Instead the
//! branch owns its lock ([`super::Upper::change`], [`super::Upper::read`]),
//! and every method of [`super::Upper`] that changes a name in the tree
//! (whiteouts, opaque markers, redirects, publish, delete, rename, link,
//! discard) takes a [`Changing`]: the write guard itself. Such a change
//! can then only be written by code that holds the lock for writing, and
//! the compiler checks it. Readers of the branch that cache what they see
//! (lookups, listings, attributes) hold a [`Reading`], so they never see
//! half of a change.
//!
//! First in the lock order of a mount (see `fs::Vfs`): taken only by the
//! filesystem's entry points, never while holding any other lock of the
//! mount.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The lock of one branch's namespace.
#[derive(Debug, Default)]
pub(super) struct Namespace(RwLock<()>);

/// The namespace held for writing: what a change of the branch's tree
/// must show.
#[must_use = "the namespace is released when the token is dropped"]
pub struct Changing<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
    of: &'a Namespace,
}

/// The namespace held for reading.
#[must_use = "the namespace is released when the token is dropped"]
pub struct Reading<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

impl Namespace {
    /// Waits for the namespace, for writing.
    pub(super) fn change(&self) -> Changing<'_> {
        Changing {
            _guard: self.0.write(),
            of: self,
        }
    }

    /// Waits for the namespace, for reading.
    pub(super) fn read(&self) -> Reading<'_> {
        Reading {
            _guard: self.0.read(),
        }
    }

    /// Is `c` a hold of this namespace (not of another branch's)?
    pub(super) fn held_by(&self, c: &Changing<'_>) -> bool {
        std::ptr::eq(self, c.of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_excludes_readers_and_other_changes() {
        let ns = Namespace::default();
        let other = Namespace::default();
        let c = ns.change();
        assert!(ns.held_by(&c));
        assert!(!other.held_by(&c));
        assert!(ns.0.try_read().is_none(), "a reader got in during a change");
        assert!(ns.0.try_write().is_none(), "a second change got in");
        drop(c);
        let r1 = ns.read();
        let _r2 = ns.read();
        assert!(ns.0.try_write().is_none(), "a change got in during a read");
        drop(r1);
    }
}
