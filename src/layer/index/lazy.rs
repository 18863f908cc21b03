//! An index that grows as it is read: the index of a plain directory
//! layer (a branch of `mount-branches`) whose directories are listed the
//! first time a lookup or a listing needs them, so a mount answers before
//! any branch was walked, and a directory nobody opens is never read.
//!
//! The bookkeeping here is pure; the listing itself is the caller's
//! ([`Expand`], implemented over the file system by `layer::dir`). Each
//! listed directory becomes a *chunk*: a small ordinary [`Index`] whose
//! root stands for that directory and whose entries are its children
//! (subdirectories childless there, their own opaque flag already set).
//! Entry numbers are handed out chunk after chunk, so the children of a
//! directory are contiguous and sorted by name, as in a built index, and a
//! number, once given, always means the same entry. Chunk 0 holds the
//! layer's root alone.
//!
//! Hard links: a non-directory the lister reports with its (device, inode)
//! shares its inode group with the first name of that inode listed, and
//! has the file system's link count as its nlink.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::{Entry, Index};

/// One listed directory, as the lister gives it.
pub struct Listing {
    /// An index whose root is the listed directory (for the layer's root
    /// directory alone: the root with no children) and whose root's
    /// children are the directory's entries, in the layer grammar
    /// (whiteouts decoded). The root is opaque if the directory holds an
    /// AUFS opaque marker; a subdirectory is opaque if the lister knows it
    /// without listing it (an overlay xattr), else it becomes so when
    /// listed.
    pub index: Index,
    /// Hard-linked non-directories among them: (entry number in `index`,
    /// (device, inode), link count).
    pub links: Vec<(u32, (u64, u64), u32)>,
}

/// Lists directories of a lazily indexed layer.
pub trait Expand: Send + Sync {
    /// The layer's root directory alone: its metadata, its opaque flag.
    fn root(&self) -> Result<Listing, String>;
    /// The entries of directory `path` (relative to the layer root, `a/b`;
    /// empty for the root).
    fn list(&self, path: &[u8]) -> Result<Listing, String>;
}

/// One listed directory.
struct Chunk {
    /// The number of its first entry.
    base: u32,
    /// The entry of `index` numbered `base` (0 for the root chunk, whose
    /// only entry is the root; 1 for the others, skipping the root that
    /// stands for the listed directory).
    first: u32,
    /// The number of the listed directory (the parent of every entry).
    parent: u32,
    index: Index,
    /// Per entry of `index`: the chunk listing it, once listed.
    listed: Vec<OnceLock<u32>>,
    /// Per hard-linked entry of `index`: (inode group, nlink).
    links: HashMap<u32, (u32, u32)>,
    /// The listing failed: the directory shows empty, and this says why.
    error: Option<String>,
}

impl Chunk {
    fn len(&self) -> u32 {
        self.index.len() - self.first
    }
}

/// Numbers handed out so far, and the inode groups of hard links.
struct Grow {
    next: u32,
    groups: HashMap<(u64, u64), u32>,
}

/// The growing part of a lazy [`Index`].
pub(super) struct Lazy {
    expand: Box<dyn Expand>,
    chunks: boxcar::Vec<Chunk>,
    grow: Mutex<Grow>,
}

impl Lazy {
    pub(super) fn new(expand: Box<dyn Expand>) -> Result<Lazy, String> {
        let root = expand.root()?;
        let lazy = Lazy {
            expand,
            chunks: boxcar::Vec::new(),
            grow: Mutex::new(Grow {
                next: 0,
                groups: HashMap::new(),
            }),
        };
        lazy.add(root, 0, 0, None);
        Ok(lazy)
    }

    /// Publishes a chunk listing directory `parent`; returns its number.
    fn add(&self, l: Listing, first: u32, parent: u32, error: Option<String>) -> u32 {
        let n = l.index.len();
        let listed = (0..n).map(|_| OnceLock::new()).collect();
        let mut g = self.grow.lock();
        let base = g.next;
        g.next += n - first;
        let mut links = HashMap::new();
        for (local, key, nlink) in l.links {
            let id = base + local - first;
            let group = *g.groups.entry(key).or_insert(id);
            links.insert(local, (group, nlink));
        }
        // Pushed under the lock: chunk numbers and bases rise together.
        self.chunks.push(Chunk {
            base,
            first,
            parent,
            index: l.index,
            listed,
            links,
            error,
        }) as u32
    }

    /// The chunk holding entry `id`, and the entry's number in it.
    fn locate(&self, id: u32) -> (&Chunk, u32) {
        // The last chunk whose base is at most `id` (a slot being pushed
        // right now reads as past the end).
        let (mut lo, mut hi) = (0usize, self.chunks.count());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.chunks.get(mid) {
                Some(c) if c.base <= id => lo = mid,
                _ => hi = mid,
            }
        }
        let c = self.chunks.get(lo).expect("chunk 0 exists");
        assert!(
            id >= c.base && id - c.base < c.len(),
            "entry {id} not handed out"
        );
        (c, id - c.base + c.first)
    }

    /// The chunk listing directory entry `id` (listed now if it was not).
    fn listing(&self, id: u32) -> &Chunk {
        let (c, local) = self.locate(id);
        let k = *c.listed[local as usize].get_or_init(|| {
            let e = c.index.entry(local);
            let path = self.path(id);
            let (l, error) = match e.is_dir().then(|| self.expand.list(&path)) {
                Some(Ok(l)) => (l, None),
                Some(Err(why)) => {
                    tracing::error!(dir = %String::from_utf8_lossy(&path), %why, "listing a branch directory failed");
                    (empty(), Some(why))
                }
                None => (empty(), None),
            };
            self.add(l, 1, id, error)
        });
        self.chunks.get(k as usize).expect("published")
    }

    /// Entry `id`, with the numbers of this index.
    pub(super) fn entry(&self, id: u32) -> Entry {
        let (c, local) = self.locate(id);
        let mut e = c.index.entry(local);
        e.id = id;
        e.parent = if id == 0 { 0 } else { c.parent };
        let (child_start, child_count) = match c.listed[local as usize].get() {
            Some(&k) => {
                let l = self.chunks.get(k as usize).expect("published");
                (l.base, l.len())
            }
            None => (0, 0),
        };
        e.child_start = child_start;
        e.child_count = child_count;
        if let Some(&k) = c.listed[local as usize].get() {
            // An AUFS opaque marker is a name in the directory itself.
            let l = self.chunks.get(k as usize).expect("published");
            e.flags |= l.index.entry(0).flags & super::FLAG_OPAQUE;
        }
        (e.group, e.nlink) = c.links.get(&local).copied().unwrap_or((id, e.nlink));
        e
    }

    /// The index holding the strings (name, target, xattrs) of entry `e`.
    pub(super) fn home(&self, e: &Entry) -> &Index {
        &self.locate(e.id).0.index
    }

    /// The children of directory `dir`, listed now if they were not.
    pub(super) fn children(&self, dir: &Entry) -> std::ops::Range<u32> {
        if !dir.is_dir() {
            return 0..0;
        }
        let l = self.listing(dir.id);
        l.base..l.base + l.len()
    }

    /// The child `name` of directory `dir`.
    pub(super) fn lookup(&self, dir: &Entry, name: &[u8]) -> Option<u32> {
        if !dir.is_dir() {
            return None;
        }
        let l = self.listing(dir.id);
        let local = l.index.lookup(&l.index.entry(0), name)?;
        Some(l.base + local - l.first)
    }

    /// Has directory `dir` been listed (or is it not a directory)?
    pub(super) fn listed(&self, dir: &Entry) -> bool {
        if !dir.is_dir() {
            return true;
        }
        let (c, local) = self.locate(dir.id);
        c.listed[local as usize].get().is_some()
    }

    /// Why directory `dir` shows empty, if listing it failed.
    pub(super) fn failed(&self, dir: &Entry) -> Option<&str> {
        let (c, local) = self.locate(dir.id);
        let k = *c.listed[local as usize].get()?;
        self.chunks.get(k as usize)?.error.as_deref()
    }

    /// Lists every directory not listed yet; returns the number of entries.
    pub(super) fn list_all(&self) -> u32 {
        let mut todo = vec![0u32];
        while let Some(d) = todo.pop() {
            let e = self.entry(d);
            for c in self.children(&e) {
                if self.entry(c).is_dir() {
                    todo.push(c);
                }
            }
        }
        self.grow.lock().next
    }

    fn path(&self, mut id: u32) -> Vec<u8> {
        let mut comps: Vec<Vec<u8>> = Vec::new();
        while id != 0 {
            let e = self.entry(id);
            comps.push(self.home(&e).name(&e).to_vec());
            id = e.parent;
        }
        comps.reverse();
        comps.join(&b'/')
    }
}

/// The listing of a directory that shows empty.
fn empty() -> Listing {
    let (bytes, _) = super::build_index_from_entries([]).expect("an empty index builds");
    Listing {
        index: Index::from_bytes(bytes, "empty").expect("an empty index is valid"),
        links: Vec::new(),
    }
}
