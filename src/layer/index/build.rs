//! Builds a layer index in one pass over an uncompressed layer tar.
//!
//! This is where every tar detail is decided: GNU/PAX long names (the members
//! walked by [`super::tarwalk`]), PAX mtimes and `SCHILY.xattr.*` extended attributes,
//! hard links (resolved to the entry they name, sharing its inode group),
//! devices, implicit parent directories, `./` prefixes, later entries
//! replacing earlier ones, and the whiteout grammar (applied by
//! `tree.rs`). Paths that are absolute or contain `..` are refused:
//! a layer may only describe its own tree.
//!
//! A tar on disk is read a window at a time ([`write_index_of`]) and its
//! index written as it is laid out, so neither the tar nor the index has
//! to be in memory whole.

use std::fs::File;
use std::io::{Cursor, Seek, Write};

use tar::EntryType;

use super::tarwalk::{Member, Step, Walk};
use super::tree::Tree;
use super::Kind;

/// Why a layer tar could not be indexed. Each names the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading the tar failed (I/O, or a malformed header).
    #[error("reading tar: {0}")]
    Tar(#[from] std::io::Error),
    /// An entry breaks the layer rules (`path`: the entry, `what`: why).
    #[error("entry {path:?}: {what}")]
    Entry {
        /// The entry's path as the tar (or the walk) gives it.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// A count or the string table does not fit the format's `u32` fields.
    #[error("layer is too large for the index format ({0})")]
    TooLarge(&'static str),
}

pub(super) fn entry_err(path: &[u8], what: impl Into<String>) -> BuildError {
    BuildError::Entry {
        path: String::from_utf8_lossy(path).into_owned(),
        what: what.into(),
    }
}

/// Splits a tar path into components, refusing anything that would leave
/// the layer's root. `./` prefixes, empty components and `.` are dropped;
/// the empty list is the root itself.
pub fn split_path(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path in layer".into());
    }
    let mut out = Vec::new();
    for comp in raw.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains '..'".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Owner, permission bits, mtime and xattrs of an entry.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// `mode & 0o7777` (higher bits are dropped).
    pub mode: u32,
    /// Owner uid as stored in the layer.
    pub uid: u32,
    /// Owner gid as stored in the layer.
    pub gid: u32,
    /// Modification time: seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Sorted by name, no duplicates.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Counts gathered while building, for import progress and `layers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Entries of the index, the root, implicit directories and whiteouts
    /// included.
    pub entries: u32,
    /// Regular file entries (each name of a hard-link group counts).
    pub files: u32,
    /// Whiteout entries (`.wh.NAME`; opaque markers are flags, not counted).
    pub whiteouts: u32,
    /// Sum of the sizes of the file entries (a hard link counts once per name).
    pub file_bytes: u64,
}

/// One entry of a layer as its reader found it (a tar header, or an
/// object of a directory walk), before the union grammar is applied.
pub struct RawEntry<'a> {
    /// Path from the layer root (`a/b`, `./a/b`; empty or `.` = the root).
    pub path: &'a [u8],
    /// What the entry is (for a hard link, ignored: it takes its target's).
    pub kind: Kind,
    /// Owner, permission bits, mtime and xattrs.
    pub meta: Meta,
    /// A hard link: the path (in this layer, read before) it names.
    pub link: Option<Vec<u8>>,
    /// Data length of a regular file in bytes (ignored for other kinds).
    pub size: u64,
    /// Offset of a regular file's data in the tar (0 for a directory walk).
    pub data_off: u64,
    /// A symlink's target (ignored for other kinds).
    pub target: Vec<u8>,
    /// (major, minor) of a character or block device (ignored otherwise).
    pub rdev: (u32, u32),
}

/// Builds the index of a layer read from a directory (a branch of
/// `mount-branches`): `entries` as a walk found them, parents before their
/// children, overlay whiteouts and opaque xattrs already spelled the AUFS
/// way (see [`crate::layer::whiteout::overlay_mark`]), hard links as links to the
/// first name the walk saw. Data offsets are 0: a directory layer reads a
/// file by its path ([`crate::layer::index::Index::path`]); the index's "tar size"
/// is the sum of its file sizes (hard links once), so every size is in
/// bounds and `statfs` adds up the layers' data.
pub fn build_index_from_entries<'a>(
    entries: impl IntoIterator<Item = RawEntry<'a>>,
) -> Result<(Vec<u8>, BuildStats), BuildError> {
    let mut tree = Tree::new();
    let mut total = 0u64;
    for raw in entries {
        if raw.kind == Kind::File && raw.link.is_none() {
            total = total.saturating_add(raw.size);
        }
        tree.add(RawEntry { data_off: 0, ..raw })?;
    }
    to_vec(&tree, total)
}

/// The index of `tree` (of a tar of `tar_size` bytes) in memory.
fn to_vec(tree: &Tree, tar_size: u64) -> Result<(Vec<u8>, BuildStats), BuildError> {
    let mut out = Cursor::new(Vec::new());
    let stats = tree.write(tar_size, &mut out)?;
    Ok((out.into_inner(), stats))
}

/// A numeric header field (mode, uid, gid): what the tar crate reads, or
/// 0 for a field of only NULs and spaces, as Go's archive/tar (Docker) and
/// Python's tarfile read it (some writers leave ids empty).
pub(super) fn header_num(
    field: &[u8],
    parsed: std::io::Result<u64>,
    path: &[u8],
    what: &str,
) -> Result<u64, BuildError> {
    if field.iter().all(|&c| c == 0 || c == b' ') {
        return Ok(0);
    }
    parsed.map_err(|e| entry_err(path, format!("bad {what} field: {e}")))
}

/// A PAX `uid`/`gid` record: a decimal number that fits 32 bits.
pub(super) fn pax_id(v: &[u8], path: &[u8], what: &str) -> Result<u32, BuildError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| entry_err(path, format!("bad PAX {what}")))
}

/// Parses a PAX time value (`1700000000.123456789`, possibly negative).
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let mut sec: i64 = secs.parse().ok()?;
    if frac.is_empty() {
        return Some((sec, 0));
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nsec: u32 = digits.parse().ok()?;
    if secs.starts_with('-') && nsec > 0 {
        // -1.5 means 1.5 s before the epoch: -2 s + 0.5 s.
        sec -= 1;
        nsec = 1_000_000_000 - nsec;
    }
    Some((sec, nsec))
}

/// The entry that tar member `m` (of a tar of `tar_size` bytes) adds to
/// the layer, if any (extension members and unsupported types add none).
fn raw_entry<'m>(m: &'m Member<'_>, tar_size: u64) -> Result<Option<RawEntry<'m>>, BuildError> {
    let path: &[u8] = &m.path;
    if path.contains(&0) {
        // A PAX path or GNU long name may hold one; no file system
        // name can, and the mount would cut it there.
        return Err(entry_err(path, "name holds a NUL byte"));
    }
    let h = m.header;
    let etype = h.entry_type();
    let old = h.as_old();
    let mode = header_num(&old.mode, h.mode().map(u64::from), path, "mode")? as u32;
    let uid = header_num(&old.uid, h.uid(), path, "uid")?;
    let gid = header_num(&old.gid, h.gid(), path, "gid")?;
    let mut meta = Meta {
        mode: mode & 0o7777,
        uid: u32::try_from(uid).map_err(|_| entry_err(path, "uid too large"))?,
        gid: u32::try_from(gid).map_err(|_| entry_err(path, "gid too large"))?,
        mtime: h.mtime().unwrap_or(0) as i64,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    };
    for &(key, value) in &m.pax {
        if key == b"mtime" {
            let (s, ns) = parse_pax_time(value).ok_or_else(|| entry_err(path, "bad PAX mtime"))?;
            meta.mtime = s;
            meta.mtime_nsec = ns;
        } else if key == b"uid" {
            meta.uid = pax_id(value, path, "uid")?;
        } else if key == b"gid" {
            meta.gid = pax_id(value, path, "gid")?;
        } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            meta.xattrs.push((name.to_vec(), value.to_vec()));
        } else if key.starts_with(b"GNU.sparse.") {
            return Err(entry_err(path, "sparse files are not supported"));
        }
    }
    // A later PAX record for the same attribute overrides an earlier
    // one: stable-sort by name, then keep the last of each run.
    meta.xattrs.reverse();
    meta.xattrs.sort_by(|a, b| a.0.cmp(&b.0));
    meta.xattrs.dedup_by(|a, b| a.0 == b.0);

    if etype.is_gnu_sparse() {
        return Err(entry_err(path, "GNU sparse files are not supported"));
    }
    let kind = match etype {
        // Pre-POSIX tars mark directories as regular files named "x/".
        EntryType::Regular if path.ends_with(b"/") => Kind::Dir,
        EntryType::Regular | EntryType::Continuous => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Char => Kind::Char,
        EntryType::Block => Kind::Block,
        EntryType::Fifo => Kind::Fifo,
        EntryType::Link => Kind::File, // resolved below
        EntryType::XGlobalHeader
        | EntryType::XHeader
        | EntryType::GNULongName
        | EntryType::GNULongLink => return Ok(None),
        other => {
            tracing::warn!(path = %String::from_utf8_lossy(path), "skipping tar entry of unsupported type {:?}", other);
            return Ok(None);
        }
    };

    let link = if etype == EntryType::Link {
        Some(
            m.link
                .clone()
                .ok_or_else(|| entry_err(path, "hard link without a target"))?
                .into_owned(),
        )
    } else {
        None
    };
    if link.as_ref().is_some_and(|l| l.contains(&0)) {
        return Err(entry_err(path, "hard link target holds a NUL byte"));
    }
    let size = if kind == Kind::File { m.size } else { 0 };
    let data_off = m.data_off;
    if data_off
        .checked_add(m.size)
        .is_none_or(|end| end > tar_size)
    {
        return Err(entry_err(
            path,
            "file data runs past the end of the tar (truncated?)",
        ));
    }
    let target = if kind == Kind::Symlink && link.is_none() {
        m.link
            .clone()
            .ok_or_else(|| entry_err(path, "symlink without a target"))?
            .into_owned()
    } else {
        Vec::new()
    };
    if target.contains(&0) {
        return Err(entry_err(path, "symlink target holds a NUL byte"));
    }
    let rdev = if matches!(kind, Kind::Char | Kind::Block) {
        (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    Ok(Some(RawEntry {
        path,
        kind,
        meta,
        link,
        size,
        data_off,
        target,
        rdev,
    }))
}

fn walk_error(e: super::tarwalk::WalkError) -> BuildError {
    BuildError::Tar(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Builds the index of the uncompressed layer tar `tar`. Returns the index
/// bytes (ready to write to disk) and counts.
pub fn build_index(tar: &[u8]) -> Result<(Vec<u8>, BuildStats), BuildError> {
    let mut tree = Tree::new();
    for m in Walk::new(tar) {
        let m = m.map_err(walk_error)?;
        if let Some(raw) = raw_entry(&m, tar.len() as u64)? {
            tree.add(raw)?;
        }
    }
    to_vec(&tree, tar.len() as u64)
}

/// How much of a tar [`write_index_of`] maps at a time.
pub const WINDOW: u64 = 32 << 20;

/// Builds the index of the uncompressed layer tar in file `tar` and
/// writes it to `out` from its current position (the header last, `out`
/// left at the end of the index). The tar is mapped [`WINDOW`] bytes at a
/// time, so only the current window is resident; returns the counts. The
/// bytes are those [`build_index`] returns for the same tar.
pub fn write_index_of(tar: &File, out: &mut (impl Write + Seek)) -> Result<BuildStats, BuildError> {
    write_index_windowed(tar, out, WINDOW)
}

/// [`write_index_of`] with windows of `window` bytes (at least: a member
/// whose headers are longer gets a window that holds them).
pub(super) fn write_index_windowed(
    tar: &File,
    out: &mut (impl Write + Seek),
    window: u64,
) -> Result<BuildStats, BuildError> {
    let total = tar.metadata()?.len();
    let mut tree = Tree::new();
    let (mut at, mut need) = (0u64, 0u64);
    'windows: loop {
        let len = window.max(std::mem::take(&mut need)).min(total - at);
        let map = match usize::try_from(len) {
            Ok(0) => None,
            Ok(len) => Some(crate::sys::map_range_readonly(tar, at, len)?),
            Err(_) => return Err(BuildError::TooLarge("tar headers")),
        };
        let mut walk = Walk::window(map.as_deref().unwrap_or(&[]), at, total);
        loop {
            match walk.step().map_err(walk_error)? {
                Step::Member(m) => {
                    if let Some(raw) = raw_entry(&m, total)? {
                        tree.add(raw)?;
                    }
                }
                Step::End => break 'windows,
                Step::Refill { at: a, len: want } => {
                    if a == at && want <= len {
                        // The window held what the walk asks for: a bug,
                        // better an error than a loop.
                        return Err(BuildError::Tar(std::io::Error::other(format!(
                            "tar walk asked again for the window at {at}"
                        ))));
                    }
                    (at, need) = (a, want);
                    continue 'windows;
                }
            }
        }
    }
    tree.write(total, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry tar whose PAX record `key` is `value`.
    fn pax_tar(key: &str, value: &[u8], kind: tar::EntryType) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([(key, value)]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("t").unwrap();
        }
        b.append_data(&mut h, "a", &b""[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn names_with_a_nul_byte_are_refused() {
        for (key, kind, what) in [
            ("path", tar::EntryType::Regular, "name holds a NUL byte"),
            (
                "linkpath",
                tar::EntryType::Symlink,
                "symlink target holds a NUL byte",
            ),
        ] {
            let err = build_index(&pax_tar(key, b"evil\0name", kind)).unwrap_err();
            assert!(err.to_string().contains(what), "{key}: {err}");
        }
        // A GNU long name with a NUL inside (the crate strips only the
        // terminating one).
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        let long = format!("{}\0tail", "d/".repeat(60));
        b.append_data(&mut h, long, &b""[..]).unwrap();
        let err = build_index(&b.into_inner().unwrap()).unwrap_err();
        assert!(err.to_string().contains("name holds a NUL byte"), "{err}");
        assert!(build_index(&pax_tar("path", b"fine", tar::EntryType::Regular)).is_ok());
    }
    use crate::layer::index::Index;

    fn raw(path: &'static [u8], kind: Kind, link: Option<&[u8]>, size: u64) -> RawEntry<'static> {
        RawEntry {
            path,
            kind,
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            link: link.map(<[u8]>::to_vec),
            size,
            data_off: 99,
            target: Vec::new(),
            rdev: (0, 0),
        }
    }

    #[test]
    fn entries_from_a_walk_share_the_layer_grammar() {
        let (bytes, stats) = build_index_from_entries([
            raw(b"", Kind::Dir, None, 0),
            raw(b"a", Kind::Dir, None, 0),
            raw(b"a/.wh..wh..opq", Kind::File, None, 0),
            raw(b"a/f", Kind::File, None, 5),
            raw(b"a/g", Kind::File, Some(b"a/f"), 5),
            raw(b".wh.gone", Kind::File, None, 0),
            raw(b".wh..wh.plnk", Kind::Dir, None, 0),
            raw(b".wh..wh.plnk/x", Kind::File, None, 7),
        ])
        .unwrap();
        assert_eq!(stats.whiteouts, 1);
        let idx = Index::from_bytes(bytes, "t").unwrap();
        // The "tar size" is the file data the walk gave, hard links once.
        assert_eq!(idx.tar_size(), 5 + 7);
        let a = idx.entry(idx.lookup_path(b"a").unwrap());
        assert!(a.is_opaque() && !a.is_implicit());
        let f = idx.entry(idx.lookup_path(b"a/f").unwrap());
        let g = idx.entry(idx.lookup_path(b"a/g").unwrap());
        assert_eq!((f.group, f.nlink, f.data_off), (g.group, 2, 0));
        let gone = idx.entry(idx.lookup_path(b"gone").unwrap());
        assert_eq!(gone.kind, Kind::Whiteout);
        assert!(idx.lookup_path(b".wh..wh.plnk").is_none());
        assert!(build_index_from_entries([raw(b"../x", Kind::File, None, 0)]).is_err());
    }

    /// One file entry `f`; `patch` edits its header bytes (the checksum is
    /// recomputed after), `pax` records go before it.
    fn tar_with(pax: &[(&str, &[u8])], patch: impl Fn(&mut [u8; 512])) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(7);
        h.set_gid(8);
        h.set_entry_type(tar::EntryType::Regular);
        patch(h.as_mut_bytes());
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    fn meta_of_f(tar: &[u8]) -> (u32, u32, u32) {
        let (bytes, _) = build_index(tar).unwrap();
        let idx = Index::from_bytes(bytes, "t").unwrap();
        let root = idx.entry(0);
        let e = idx.entry(idx.lookup(&root, b"f").unwrap());
        (e.mode & 0o7777, e.uid, e.gid)
    }

    #[test]
    fn empty_id_fields_read_as_zero_and_pax_ids_win() {
        assert_eq!(meta_of_f(&tar_with(&[], |_| {})), (0o644, 7, 8));
        // uid and gid fields of NULs (offsets 108 and 116, 8 bytes each).
        let t = tar_with(&[], |h| h[108..124].fill(0));
        assert_eq!(meta_of_f(&t), (0o644, 0, 0));
        let t = tar_with(&[], |h| h[108..116].fill(b' '));
        assert_eq!(meta_of_f(&t), (0o644, 0, 8));
        // Garbage is still refused.
        let t = tar_with(&[], |h| h[108..116].copy_from_slice(b"12x4567\0"));
        assert!(build_index(&t).is_err());
        // PAX uid/gid (what GNU tar writes for ids past 2097151).
        let t = tar_with(&[("uid", b"4000000000"), ("gid", b"3000000")], |_| {});
        assert_eq!(meta_of_f(&t), (0o644, 4_000_000_000, 3_000_000));
        let t = tar_with(&[("uid", b"5000000000")], |_| {});
        assert!(build_index(&t).is_err(), "a uid past 32 bits");
    }
}
