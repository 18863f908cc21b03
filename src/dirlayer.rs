//! A layer read from a plain directory (a branch of `mount-branches`): an
//! existing Docker `aufs/diff/<id>` or `overlay2/<id>/diff` tree, a
//! containers/storage layer directory, or any extracted tree.
//!
//! The directory is walked once, at mount, into an ordinary layer index
//! ([`build_index_from_entries`]), so the union rules are the same as for
//! store layers. Both whiteout formats are read: AUFS `.wh.NAME` files and
//! `.wh..wh..opq` markers (decoded by the index builder, as in tars), and
//! kernel overlayfs' character devices 0:0 and `trusted.overlay.opaque` /
//! `user.overlay.opaque` = "y" xattrs, which the walk respells the AUFS way
//! ([`overlay_mark`]) before they reach the builder. Overlay's own xattrs
//! are not shown. Hard links inside the directory (same device and inode)
//! share an inode group. File data is read by path (`vfs::Layer`); the
//! directory must not change while mounted, as with overlayfs' lowerdir.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::index::{build_index_from_entries, EntryMeta, Index, Kind, RawEntry};
use crate::sys;
use crate::union::{classify_name, is_overlay_xattr, overlay_mark, NameClass, OverlayMark};
use crate::upper::kind_of_mode;

/// One object found by the walk, already in the layer grammar.
struct Found {
    path: Vec<u8>,
    kind: Kind,
    meta: EntryMeta,
    link: Option<Vec<u8>>,
    size: u64,
    target: Vec<u8>,
    rdev: (u32, u32),
}

/// The xattrs of `p`, sorted by name (none where the filesystem has none).
fn xattrs_of(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match sys::llistxattr(p) {
        Ok(n) => n,
        Err(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => bail!("listing xattrs of {}: errno {e}", p.display()),
    };
    let mut out = Vec::new();
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        match sys::lgetxattr(p, name) {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed since listed, or not readable by us: leave it out.
            Err(libc::ENODATA | libc::EPERM | libc::EACCES) => {}
            Err(e) => bail!(
                "reading xattr {} of {}: errno {e}",
                String::from_utf8_lossy(name),
                p.display()
            ),
        }
    }
    out.sort();
    Ok(out)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Walks `root` and builds its layer index (in memory), reading both
/// whiteout formats.
pub fn index_directory(root: &Path) -> Result<Index> {
    index_directory_as(root, true)
}

/// Walks `root` and builds its layer index. With `overlay` false only the
/// AUFS spelling means anything (a layerfs AUFS-format branch, where a
/// character device 0:0 is a device a user made and overlay xattrs are
/// plain xattrs).
pub fn index_directory_as(root: &Path, overlay: bool) -> Result<Index> {
    let mut found: Vec<Found> = Vec::new();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut warned_redirect = false;
    // Directories still to list, relative to root.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let mut first = true;
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        // The root is visited as a directory; its children are listed here.
        if first {
            first = false;
            let md = std::fs::symlink_metadata(&full)
                .with_context(|| format!("branch {}", root.display()))?;
            if !md.is_dir() {
                bail!("branch {} is not a directory", root.display());
            }
            found.extend(describe(
                &full,
                Vec::new(),
                &md,
                &mut links,
                &mut warned_redirect,
                overlay,
            )?);
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in std::fs::read_dir(&full).with_context(|| format!("reading {}", full.display()))? {
            names.push(e?.file_name().as_bytes().to_vec());
        }
        names.sort();
        for name in names {
            let path = join(&rel, &name);
            let p = full.join(std::ffi::OsStr::from_bytes(&name));
            let md =
                std::fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
            if md.is_dir() && name.starts_with(b".wh..wh.") {
                // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.orph) or layerfs'
                // own state (.wh..wh.layerfs): never part of the union.
                continue;
            }
            let is_dir = md.is_dir();
            found.extend(describe(
                &p,
                path.clone(),
                &md,
                &mut links,
                &mut warned_redirect,
                overlay,
            )?);
            if is_dir {
                stack.push(path);
            }
        }
    }
    let entries = found.iter().map(|f| RawEntry {
        path: &f.path,
        kind: f.kind,
        meta: f.meta.clone(),
        link: f.link.clone(),
        size: f.size,
        data_off: 0,
        target: f.target.clone(),
        rdev: f.rdev,
    });
    let (bytes, _) = build_index_from_entries(entries)
        .with_context(|| format!("indexing branch {}", root.display()))?;
    Ok(Index::from_bytes(bytes, &root.display().to_string())?)
}

/// The entries one object of the walk stands for: itself, a whiteout in
/// the AUFS spelling, or a directory plus its opaque marker.
fn describe(
    p: &Path,
    path: Vec<u8>,
    md: &std::fs::Metadata,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    warned_redirect: &mut bool,
    overlay: bool,
) -> Result<Vec<Found>> {
    let kind = kind_of_mode(md.mode());
    if kind == Kind::Socket {
        tracing::warn!(path = %p.display(), "skipping a socket in a branch");
        return Ok(Vec::new());
    }
    let rdev = (libc::major(md.rdev()), libc::minor(md.rdev()));
    let mut xattrs = xattrs_of(p)?;
    // In a layerfs AUFS-format branch overlay's markers mean nothing.
    let mark = if overlay {
        let mark = overlay_mark(
            kind,
            rdev,
            xattrs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        if !*warned_redirect
            && xattrs.iter().any(|(n, _)| {
                is_overlay_xattr(n) && (n.ends_with(b".redirect") || n.ends_with(b".metacopy"))
            })
        {
            *warned_redirect = true;
            tracing::warn!(path = %p.display(), "overlay redirect/metacopy xattrs are not supported: the entry shows as it is stored");
        }
        xattrs.retain(|(n, _)| !is_overlay_xattr(n));
        mark
    } else {
        OverlayMark::None
    };
    let meta = EntryMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs,
    };
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], &path[..]),
    };
    let marker = |n: &[u8]| Found {
        path: join(dir, n),
        kind: Kind::File,
        meta: EntryMeta::default(),
        link: None,
        size: 0,
        target: Vec::new(),
        rdev: (0, 0),
    };
    if mark == OverlayMark::Whiteout && !path.is_empty() {
        return Ok(vec![marker(&[b".wh.", name].concat())]);
    }
    let mut link = None;
    if kind != Kind::Dir && md.nlink() > 1 && classify_name(name) == NameClass::Plain {
        match links.get(&(md.dev(), md.ino())) {
            Some(first) => link = Some(first.clone()),
            None => {
                links.insert((md.dev(), md.ino()), path.clone());
            }
        }
    }
    let target = if kind == Kind::Symlink {
        std::fs::read_link(p)
            .with_context(|| format!("readlink {}", p.display()))?
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        Vec::new()
    };
    let opaque = mark == OverlayMark::Opaque;
    let mut out = vec![Found {
        path: path.clone(),
        kind,
        meta,
        link,
        size: if kind == Kind::File { md.len() } else { 0 },
        target,
        rdev,
    }];
    if opaque {
        let mut m = marker(b"");
        m.path = join(&path, crate::union::WH_OPAQUE);
        out.push(m);
    }
    Ok(out)
}
