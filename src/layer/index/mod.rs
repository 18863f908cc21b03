//! One layer's index: every entry of a layer tar, with its metadata and the
//! offset of its data inside the (uncompressed, byte-exact) tar blob.
//!
//! The index is built once at import ([`build`], over the compact tree of
//! `tree.rs`; a tar on disk is read in windows and its index streamed to
//! the file), written next to the blob, and read in place from a memory
//! map at mount ([`Index::open`]). Nothing here does FUSE or store I/O
//! beyond reading the index file itself, and reading the tar and writing
//! the index file the builder is handed.
//!
//! # On-disk format, version 1 (all integers little-endian)
//!
//! ```text
//! header (80 bytes)
//!   0  [u8; 8]  magic "LAYERFSI"
//!   8  u32      format version (1)
//!   12 u32      entry record size (96)
//!   16 u32      entry count (>= 1; entry 0 is the layer's root directory)
//!   20 u32      xattr record count
//!   24 u64      string table length
//!   32 u64      size of the tar blob the data offsets refer to
//!   40 u64      reserved (0)
//!   48 [u8; 32] sha256 of everything after the header
//! entries   entry_count x 96 bytes (layout in `Entry`), breadth-first:
//!           the children of a directory are contiguous and sorted by name
//! xattrs    xattr_count x 16 bytes: name_off u32, name_len u32,
//!           value_off u32, value_len u32 (into the string table)
//! strings   names, symlink targets, xattr names and values
//! ```
//!
//! Whiteouts are decoded at build time: a `.wh.NAME` tar entry becomes an
//! entry named `NAME` of kind [`Kind::Whiteout`]; `.wh..wh..opq` becomes the
//! [`FLAG_OPAQUE`] flag of its directory; other `.wh..wh.*` names (AUFS
//! metadata) are dropped with their whole subtree. Whiteouts delete lower
//! layers' content only: if the layer has a `NAME` of its own (before or
//! after the whiteout), it is kept, a directory becoming opaque.

pub mod build;
#[cfg(test)]
mod difftest;
pub mod lazy;
#[cfg(test)]
mod reference;
pub mod tarwalk;
mod tree;

use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

pub use build::{
    build_index, build_index_from_entries, write_index_of, BuildError, Meta as EntryMeta, RawEntry,
};

/// The first 8 bytes of every index file.
pub const MAGIC: &[u8; 8] = b"LAYERFSI";
/// The index format version this layerfs writes and reads; any other is
/// refused at open ([`IndexError::UnsupportedVersion`]).
pub const VERSION: u32 = 1;
/// Size in bytes of the header, before the entry records.
pub const HEADER_SIZE: usize = 80;
/// Size in bytes of one entry record (see [`Entry`]).
pub const ENTRY_SIZE: usize = 96;
/// Size in bytes of one xattr record (four `u32`: name offset and length,
/// value offset and length in the string table).
pub const XATTR_SIZE: usize = 16;

/// The directory was marked opaque (`.wh..wh..opq`): lower layers' entries
/// of this directory are hidden.
pub const FLAG_OPAQUE: u8 = 1;
/// The directory has no tar entry of its own; it exists only as the parent of
/// deeper entries, so its metadata should come from a lower layer.
pub const FLAG_IMPLICIT: u8 = 2;

/// Kind of an index entry. The numeric values are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A regular file (also each name of a hard-link group).
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link; its target is in the string table.
    Symlink = 3,
    /// A character device (`rdev_major`/`rdev_minor`).
    Char = 4,
    /// A block device (`rdev_major`/`rdev_minor`).
    Block = 5,
    /// A named pipe.
    Fifo = 6,
    /// `.wh.NAME`: hides NAME in all lower layers.
    Whiteout = 7,
    /// A unix socket: never in an index (tar has no socket type), only
    /// in a read-write branch, where `bind(2)` makes one.
    Socket = 8,
}

impl Kind {
    /// The kind of an `st_mode`.
    pub fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }

    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Char,
            5 => Kind::Block,
            6 => Kind::Fifo,
            7 => Kind::Whiteout,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits for this kind (0 for whiteouts).
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::Whiteout => 0,
        }
    }
}

/// Metadata of one entry, decoded from its fixed-size record.
///
/// Record layout (96 bytes): name_off u32, name_len u32, parent u32, kind u8,
/// flags u8, reserved u16, mode u32, uid u32, gid u32, nlink u32,
/// mtime i64, mtime_nsec u32, group u32, size u64, data_off u64,
/// target_off u32, target_len u32, rdev_major u32, rdev_minor u32,
/// child_start u32, child_count u32, xattr_start u32, xattr_count u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Offset of the entry's name (one path component; empty for the root) in
    /// the string table.
    pub name_off: u32,
    /// Length of the name in bytes.
    pub name_len: u32,
    /// Entry number of the parent directory (0, the root, for the root itself).
    pub parent: u32,
    /// What the entry is.
    pub kind: Kind,
    /// [`FLAG_OPAQUE`] and [`FLAG_IMPLICIT`] bits (directories only).
    pub flags: u8,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner uid as the tar stores it (before any owner mapping of a mount).
    pub uid: u32,
    /// Owner gid as the tar stores it (before any owner mapping of a mount).
    pub gid: u32,
    /// Number of names of this inode within the layer (files), else 1.
    pub nlink: u32,
    /// Modification time: seconds since the Unix epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds of the modification time (below 10^9).
    pub mtime_nsec: u32,
    /// Inode group: entries that are hard links of each other share it.
    pub group: u32,
    /// Data length in bytes of a regular file; 0 for every other kind.
    pub size: u64,
    /// Offset of a regular file's data inside the layer tar.
    pub data_off: u64,
    /// Offset of a symlink's target in the string table.
    pub target_off: u32,
    /// Length of the symlink target in bytes (0 for other kinds).
    pub target_len: u32,
    /// Major device number of a character or block device, else 0.
    pub rdev_major: u32,
    /// Minor device number of a character or block device, else 0.
    pub rdev_minor: u32,
    /// Entry number of a directory's first child (its children are
    /// `child_start..child_start + child_count`, sorted by name).
    pub child_start: u32,
    /// Number of children of a directory; 0 for every other kind.
    pub child_count: u32,
    /// Number of the entry's first xattr record.
    pub xattr_start: u32,
    /// Number of xattr records of the entry (sorted by name).
    pub xattr_count: u32,
    /// The entry's own number in its index (not part of the record: set
    /// when the entry is read).
    pub id: u32,
}

impl Entry {
    /// Is this a directory?
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    /// Does this directory hide lower layers' entries ([`FLAG_OPAQUE`])?
    pub fn is_opaque(&self) -> bool {
        self.flags & FLAG_OPAQUE != 0
    }
    /// Has this directory no tar entry of its own ([`FLAG_IMPLICIT`])?
    pub fn is_implicit(&self) -> bool {
        self.flags & FLAG_IMPLICIT != 0
    }
    /// `rdev` as the kernel encodes it (`makedev`).
    pub fn rdev(&self) -> u64 {
        libc::makedev(self.rdev_major, self.rdev_minor)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name_off.to_le_bytes());
        out.extend_from_slice(&self.name_len.to_le_bytes());
        out.extend_from_slice(&self.parent.to_le_bytes());
        out.push(self.kind as u8);
        out.push(self.flags);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.nlink.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
        out.extend_from_slice(&self.group.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.data_off.to_le_bytes());
        out.extend_from_slice(&self.target_off.to_le_bytes());
        out.extend_from_slice(&self.target_len.to_le_bytes());
        out.extend_from_slice(&self.rdev_major.to_le_bytes());
        out.extend_from_slice(&self.rdev_minor.to_le_bytes());
        out.extend_from_slice(&self.child_start.to_le_bytes());
        out.extend_from_slice(&self.child_count.to_le_bytes());
        out.extend_from_slice(&self.xattr_start.to_le_bytes());
        out.extend_from_slice(&self.xattr_count.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Some(Entry {
            name_off: u32_at(0),
            name_len: u32_at(4),
            parent: u32_at(8),
            kind: Kind::from_u8(b[12])?,
            flags: b[13],
            mode: u32_at(16),
            uid: u32_at(20),
            gid: u32_at(24),
            nlink: u32_at(28),
            mtime: u64_at(32) as i64,
            mtime_nsec: u32_at(40),
            group: u32_at(44),
            size: u64_at(48),
            data_off: u64_at(56),
            target_off: u32_at(64),
            target_len: u32_at(68),
            rdev_major: u32_at(72),
            rdev_minor: u32_at(76),
            child_start: u32_at(80),
            child_count: u32_at(84),
            xattr_start: u32_at(88),
            xattr_count: u32_at(92),
            id: 0,
        })
    }
}

/// Why an index file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The index file.
        path: String,
        /// The error of the open or the map.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with [`MAGIC`] (the path is the payload).
    #[error("{0}: not a layerfs index (bad magic)")]
    BadMagic(String),
    /// The index is of another format version than [`VERSION`].
    #[error(
        "{path}: index format version {found} is not supported by this layerfs \
         (it reads version {VERSION}); re-import the image with a matching layerfs"
    )]
    UnsupportedVersion {
        /// The index file.
        path: String,
        /// The version its header gives.
        found: u32,
    },
    /// The index does not validate: lengths, checksum or structure.
    #[error("{path}: corrupt index: {what}")]
    Corrupt {
        /// The index file.
        path: String,
        /// What is wrong, for the message.
        what: String,
    },
}

/// A validated, read-only view of one layer's index; or one that grows
/// as directories are first read ([`Index::lazy`]).
pub struct Index {
    buf: IndexBuf,
    entry_count: u32,
    xattr_count: u32,
    strings_off: usize,
    tar_size: u64,
    lazy: Option<Box<lazy::Lazy>>,
}

enum IndexBuf {
    Map(Mmap),
    Vec(Vec<u8>),
}

impl std::ops::Deref for IndexBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IndexBuf::Map(m) => m,
            IndexBuf::Vec(v) => v,
        }
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("entries", &self.entry_count)
            .field("tar_size", &self.tar_size)
            .finish()
    }
}

/// Lets a plain `&Index` stand where a layer is expected.
impl AsRef<Index> for Index {
    fn as_ref(&self) -> &Index {
        self
    }
}

impl Index {
    /// How many xattr records the layer has (0: none of its entries has
    /// an extended attribute; a lazy index does not know, and says 1).
    pub fn xattr_count(&self) -> u32 {
        if self.lazy.is_some() {
            return 1;
        }
        self.xattr_count
    }

    /// An index whose directories are listed by `expand` when first
    /// looked up or listed (see [`lazy`]): the index of a directory layer
    /// that nobody has to walk whole.
    pub fn lazy(expand: Box<dyn lazy::Expand>) -> Result<Index, String> {
        Ok(Index {
            buf: IndexBuf::Vec(Vec::new()),
            entry_count: 0,
            xattr_count: 0,
            strings_off: 0,
            tar_size: 0,
            lazy: Some(Box::new(lazy::Lazy::new(expand)?)),
        })
    }

    /// Is this a lazy index ([`Index::lazy`])?
    pub fn is_lazy(&self) -> bool {
        self.lazy.is_some()
    }

    /// Would `children(dir)` read a directory now (a lazy index that has
    /// not listed `dir` yet)?
    pub fn unlisted(&self, dir: &Entry) -> bool {
        self.lazy.as_ref().is_some_and(|l| !l.listed(dir))
    }

    /// Why directory `dir` of a lazy index shows empty: listing it failed
    /// (`None` for every other directory and for built indexes).
    pub fn failed(&self, dir: &Entry) -> Option<&str> {
        self.lazy.as_ref()?.failed(dir)
    }

    /// Memory-maps and validates an index file.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let p = path.display().to_string();
        let io = |source| IndexError::Io {
            path: p.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        Index::open_file(&file, path)
    }

    /// Memory-maps and validates the open index file `file` (at `path`).
    pub fn open_file(file: &File, path: &Path) -> Result<Index, IndexError> {
        let p = path.display().to_string();
        let io = |source| IndexError::Io {
            path: p.clone(),
            source,
        };
        // SAFETY: index files are written once by import (temp file + rename)
        // and never modified afterwards; the store removes them only when no
        // mount uses the layer. A concurrent truncation by another program
        // would be a store corruption we cannot guard against with mmap.
        let map = crate::sys::map_readonly(file).map_err(io)?;
        Index::validate(IndexBuf::Map(map), &p)
    }

    /// Validates an index held in memory (used by tests and by import).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Index, IndexError> {
        Index::validate(IndexBuf::Vec(bytes), name)
    }

    fn validate(buf: IndexBuf, path: &str) -> Result<Index, IndexError> {
        let corrupt = |what: String| IndexError::Corrupt {
            path: path.to_string(),
            what,
        };
        let b: &[u8] = &buf;
        if b.len() < 12 || &b[0..8] != MAGIC {
            return Err(IndexError::BadMagic(path.to_string()));
        }
        let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(IndexError::UnsupportedVersion {
                path: path.to_string(),
                found: version,
            });
        }
        if b.len() < HEADER_SIZE {
            return Err(corrupt("truncated header".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if u32_at(12) as usize != ENTRY_SIZE {
            return Err(corrupt(format!(
                "entry size {} (expected {ENTRY_SIZE})",
                u32_at(12)
            )));
        }
        let entry_count = u32_at(16);
        let xattr_count = u32_at(20);
        let strings_len = u64_at(24);
        let tar_size = u64_at(32);
        // Checked: every field is untrusted, and strings_len may be anything
        // up to 2^64 - 1.
        let expect = (HEADER_SIZE as u64)
            .checked_add(entry_count as u64 * ENTRY_SIZE as u64)
            .and_then(|n| n.checked_add(xattr_count as u64 * XATTR_SIZE as u64))
            .and_then(|n| n.checked_add(strings_len));
        if expect != Some(b.len() as u64) {
            let expect = expect.map_or("more than 2^64".to_string(), |n| n.to_string());
            return Err(corrupt(format!(
                "length {} does not match its header ({expect})",
                b.len()
            )));
        }
        if entry_count == 0 {
            return Err(corrupt("no root entry".into()));
        }
        let sum: [u8; 32] = Sha256::digest(&b[HEADER_SIZE..]).into();
        if sum[..] != b[48..80] {
            return Err(corrupt("checksum mismatch".into()));
        }
        let strings_off =
            HEADER_SIZE + entry_count as usize * ENTRY_SIZE + xattr_count as usize * XATTR_SIZE;
        let idx = Index {
            buf,
            entry_count,
            xattr_count,
            strings_off,
            tar_size,
            lazy: None,
        };
        idx.check_structure().map_err(corrupt)?;
        Ok(idx)
    }

    /// Checks every record once so that later accessors cannot go out of
    /// bounds or loop: ranges inside their sections, children contiguous,
    /// after their parent, sorted and pointing back at it.
    fn check_structure(&self) -> Result<(), String> {
        let strings_len = (self.buf.len() - self.strings_off) as u64;
        let in_strings = |off: u32, len: u32| off as u64 + len as u64 <= strings_len;
        let root = self.entry_raw(0).ok_or("entry 0: bad kind")?;
        if root.kind != Kind::Dir {
            return Err("entry 0 is not a directory".into());
        }
        for i in 0..self.entry_count {
            let e = self
                .entry_raw(i)
                .ok_or_else(|| format!("entry {i}: bad kind"))?;
            if !in_strings(e.name_off, e.name_len) || !in_strings(e.target_off, e.target_len) {
                return Err(format!("entry {i}: string out of range"));
            }
            if e.xattr_start as u64 + e.xattr_count as u64 > self.xattr_count as u64 {
                return Err(format!("entry {i}: xattrs out of range"));
            }
            if e.kind == Kind::File
                && e.data_off
                    .checked_add(e.size)
                    .is_none_or(|end| end > self.tar_size)
            {
                return Err(format!("entry {i}: data out of range"));
            }
            if i > 0 && (e.name_len == 0 || e.parent >= i) {
                return Err(format!("entry {i}: bad name or parent"));
            }
            if e.kind == Kind::Dir {
                let start = e.child_start as u64;
                let end = start + e.child_count as u64;
                if end > self.entry_count as u64 || (e.child_count > 0 && start <= i as u64) {
                    return Err(format!("entry {i}: children out of range"));
                }
                let mut prev: Option<&[u8]> = None;
                for c in e.child_start..e.child_start + e.child_count {
                    let ce = self
                        .entry_raw(c)
                        .ok_or_else(|| format!("entry {c}: bad kind"))?;
                    if ce.parent != i || !in_strings(ce.name_off, ce.name_len) {
                        return Err(format!("entry {c}: does not point back at its parent {i}"));
                    }
                    let name = self.str_at(ce.name_off, ce.name_len);
                    if prev.is_some_and(|p| p >= name) {
                        return Err(format!("entry {i}: children not sorted"));
                    }
                    prev = Some(name);
                }
            } else if e.child_count != 0 {
                return Err(format!("entry {i}: non-directory with children"));
            }
        }
        for x in 0..self.xattr_count {
            let (no, nl, vo, vl) = self.xattr_raw(x);
            if !in_strings(no, nl) || !in_strings(vo, vl) {
                return Err(format!("xattr {x}: out of range"));
            }
        }
        Ok(())
    }

    fn entry_raw(&self, i: u32) -> Option<Entry> {
        let off = HEADER_SIZE + i as usize * ENTRY_SIZE;
        let mut e = Entry::decode(&self.buf[off..off + ENTRY_SIZE])?;
        e.id = i;
        Some(e)
    }

    fn xattr_raw(&self, x: u32) -> (u32, u32, u32, u32) {
        let off = HEADER_SIZE + self.entry_count as usize * ENTRY_SIZE + x as usize * XATTR_SIZE;
        let b = &self.buf[off..off + XATTR_SIZE];
        let u = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        (u(0), u(4), u(8), u(12))
    }

    fn str_at(&self, off: u32, len: u32) -> &[u8] {
        let s = self.strings_off + off as usize;
        &self.buf[s..s + len as usize]
    }

    /// Number of entries (at least 1: entry 0 is the layer's root
    /// directory). A lazy index lists every directory first: whole-layer
    /// questions cost the walk a lazy index otherwise spares.
    pub fn len(&self) -> u32 {
        match &self.lazy {
            Some(l) => l.list_all(),
            None => self.entry_count,
        }
    }

    /// Always false: an index has at least its root entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Size of the tar blob this index describes.
    pub fn tar_size(&self) -> u64 {
        self.tar_size
    }

    /// The entry with number `i` (validated at open, so `i < len()` is all
    /// that is needed).
    pub fn entry(&self, i: u32) -> Entry {
        match &self.lazy {
            Some(l) => l.entry(i),
            None => self.entry_raw(i).expect("index validated at open"),
        }
    }

    /// The index holding the strings of entry `e` (a lazy index keeps
    /// them in the chunk that listed it).
    fn home<'a>(&'a self, e: &Entry) -> &'a Index {
        match &self.lazy {
            Some(l) => l.home(e),
            None => self,
        }
    }

    /// The name of entry `e` (one path component; empty for the root).
    pub fn name(&self, e: &Entry) -> &[u8] {
        self.home(e).str_at(e.name_off, e.name_len)
    }

    /// The symlink target of entry `e` (empty for other kinds).
    pub fn target(&self, e: &Entry) -> &[u8] {
        self.home(e).str_at(e.target_off, e.target_len)
    }

    /// The entry's extended attributes as (name, value) pairs.
    pub fn xattrs<'a>(&'a self, e: &Entry) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let home = self.home(e);
        (e.xattr_start..e.xattr_start + e.xattr_count).map(move |x| {
            let (no, nl, vo, vl) = home.xattr_raw(x);
            (home.str_at(no, nl), home.str_at(vo, vl))
        })
    }

    /// Children of directory entry `dir` (entry numbers), sorted by name.
    pub fn children(&self, dir: &Entry) -> std::ops::Range<u32> {
        match &self.lazy {
            Some(l) => l.children(dir),
            None => dir.child_start..dir.child_start + dir.child_count,
        }
    }

    /// Finds the child called `name` of directory entry `dir` (binary search).
    pub fn lookup(&self, dir: &Entry, name: &[u8]) -> Option<u32> {
        if let Some(l) = &self.lazy {
            return l.lookup(dir, name);
        }
        let (mut lo, mut hi) = (dir.child_start, dir.child_start + dir.child_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let m = self.entry(mid);
            match self.name(&m).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The path of entry `i` from the layer root (`a/b/c`), following the
    /// parent links.
    pub fn path(&self, mut i: u32) -> Vec<u8> {
        let mut comps: Vec<&[u8]> = Vec::new();
        while i != 0 {
            let e = self.entry(i);
            comps.push(self.name(&e));
            i = e.parent;
        }
        comps.reverse();
        comps.join(&b'/')
    }

    /// Resolves a relative path (components separated by `/`) inside this
    /// layer alone, without union rules. Used by debugging commands and tests.
    pub fn lookup_path(&self, path: &[u8]) -> Option<u32> {
        let mut cur = 0u32;
        for comp in path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let e = self.entry(cur);
            if !e.is_dir() {
                return None;
            }
            cur = self.lookup(&e, comp)?;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid index of a one-file tar, to damage.
    fn good() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        crate::layer::index::build_index(&tar).unwrap().0
    }

    #[test]
    fn header_lengths_near_2_pow_64_are_refused_not_overflowed() {
        for strings_len in [u64::MAX, u64::MAX - HEADER_SIZE as u64, 1 << 63] {
            let mut b = good();
            b[24..32].copy_from_slice(&strings_len.to_le_bytes());
            let Err(err) = Index::from_bytes(b, "t") else {
                panic!("strings length {strings_len} accepted");
            };
            assert!(
                err.to_string().contains("does not match its header"),
                "{err}"
            );
        }
        let mut b = good();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Index::from_bytes(b, "t").is_err());
        assert!(Index::from_bytes(good(), "t").is_ok());
    }
}
