//! Random access to the files of an image archive: members of a tar file on
//! disk, or files of a directory (OCI layout). Every name a manifest gives is
//! resolved lexically inside the archive; names that would leave it are
//! refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Resolves `name` (relative to directory `base`, both inside the archive)
/// to a normalized archive path, refusing escapes.
pub fn resolve_inside(base: &str, name: &str) -> Result<String> {
    if name.starts_with('/') {
        bail!("{name:?} is an absolute path, outside the archive");
    }
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("{name:?} points outside the archive");
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        bail!("{name:?} names the archive root, not a file");
    }
    Ok(parts.join("/"))
}

/// A member of a tar source, from its header: where its data lies in the
/// archive, its size and type, and a link's target.
#[derive(Clone, Debug)]
pub struct Member {
    offset: u64,
    size: u64,
    kind: tar::EntryType,
    link: Option<String>,
}

/// Where an image's files come from.
pub enum Source {
    /// A tar archive (docker-archive, legacy v1, oci-archive), read in place.
    Tar {
        /// The archive.
        path: PathBuf,
        /// Its members by normalized path (no `./`, no trailing `/`).
        members: HashMap<String, Member>,
    },
    /// A directory: an OCI image layout or an unpacked archive, or the
    /// staging directory of a `commit`.
    Dir {
        /// The directory, canonicalized.
        root: PathBuf,
    },
    /// A plain rootfs tar: the file itself is the one layer, read under any
    /// name.
    File {
        /// The tar.
        path: PathBuf,
    },
}

impl Source {
    /// Scans the members of a tar file (headers only, data is skipped).
    pub fn scan_tar(path: &Path) -> Result<Source> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let archive_len = file.metadata()?.len();
        let mut ar = tar::Archive::new(file);
        let mut members = HashMap::new();
        for e in ar
            .entries_with_seek()
            .with_context(|| format!("{} is not a tar archive", path.display()))?
        {
            let e = e.with_context(|| format!("{}: reading tar headers", path.display()))?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let Ok(name) = resolve_inside("", &raw) else {
                continue;
            };
            let kind = e.header().entry_type();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            // A header may claim any size; the data must lie in the file.
            if e.raw_file_position()
                .checked_add(e.size())
                .is_none_or(|end| end > archive_len)
            {
                bail!(
                    "{}: member {raw:?} claims {} bytes past the end of the archive",
                    path.display(),
                    e.size()
                );
            }
            members.insert(
                name,
                Member {
                    offset: e.raw_file_position(),
                    size: e.size(),
                    kind,
                    link,
                },
            );
        }
        Ok(Source::Tar {
            path: path.to_path_buf(),
            members,
        })
    }

    /// The directory at `root` as a source.
    pub fn dir(root: &Path) -> Result<Source> {
        let root = root
            .canonicalize()
            .with_context(|| format!("opening {}", root.display()))?;
        Ok(Source::Dir { root })
    }

    /// The path of the source, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Tar { path, .. } | Source::Dir { root: path } | Source::File { path } => {
                path.display().to_string()
            }
        }
    }

    /// Does the archive have a (regular) file at this normalized path?
    pub fn has(&self, name: &str) -> bool {
        match self {
            Source::Tar { members, .. } => members.contains_key(name),
            Source::Dir { root } => root.join(name).is_file(),
            Source::File { .. } => false,
        }
    }

    /// Names of the archive's top-level tar members (tar sources only).
    pub fn member_names(&self) -> Vec<String> {
        match self {
            Source::Tar { members, .. } => members.keys().cloned().collect(),
            Source::Dir { .. } | Source::File { .. } => Vec::new(),
        }
    }

    /// Opens `name` (a path given by a manifest, relative to the archive
    /// root) for reading; returns the reader and the size.
    pub fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let norm = resolve_inside("", name)?;
        match self {
            Source::File { path } => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let size = f.metadata()?.len();
                Ok((Box::new(f), size))
            }
            Source::Tar { path, members } => {
                let m = self.tar_member(members, &norm)?;
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(m.offset))?;
                Ok((Box::new(f.take(m.size)), m.size))
            }
            Source::Dir { root } => {
                let p = root.join(&norm);
                let real = p
                    .canonicalize()
                    .with_context(|| format!("{name:?} is missing from {}", root.display()))?;
                if !real.starts_with(root) {
                    bail!("{name:?} points outside {}", root.display());
                }
                let f = File::open(&real).with_context(|| format!("opening {}", real.display()))?;
                let size = f.metadata()?.len();
                Ok((Box::new(f), size))
            }
        }
    }

    /// Where `name`'s bytes lie: a file, the offset and the size (every
    /// source is made of plain files), for copies in the kernel.
    pub fn open_range(&self, name: &str) -> Result<(File, u64, u64)> {
        let norm = resolve_inside("", name)?;
        match self {
            Source::Tar { path, members } => {
                let m = self.tar_member(members, &norm)?;
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                Ok((f, m.offset, m.size))
            }
            Source::File { .. } | Source::Dir { .. } => {
                let (_, size) = self.open(name)?;
                let path = match self {
                    Source::File { path } => path.clone(),
                    Source::Dir { root } => root.join(&norm).canonicalize()?,
                    Source::Tar { .. } => unreachable!(),
                };
                let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                Ok((f, 0, size))
            }
        }
    }

    /// Follows symlinks and hard links between members (docker save links
    /// repeated layers), at most 16 hops, staying inside the archive.
    fn tar_member(&self, members: &HashMap<String, Member>, norm: &str) -> Result<Member> {
        let mut cur = norm.to_string();
        for _ in 0..16 {
            let m = members.get(&cur).ok_or_else(|| {
                anyhow!("{cur:?} is missing from the archive {}", self.describe())
            })?;
            match m.kind {
                tar::EntryType::Symlink => {
                    let base = cur.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    cur = resolve_inside(base, m.link.as_deref().unwrap_or(""))?;
                }
                tar::EntryType::Link => cur = resolve_inside("", m.link.as_deref().unwrap_or(""))?,
                tar::EntryType::Regular | tar::EntryType::Continuous => return Ok(m.clone()),
                other => bail!("{cur:?} in the archive is not a file ({other:?})"),
            }
        }
        bail!("{norm:?}: too many links in the archive")
    }

    /// Reads a small file (manifest, config) whole.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (mut r, size) = self.open(name)?;
        if size > 64 << 20 {
            bail!("{name:?} is {size} bytes; too large for a manifest or config");
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_inside;

    #[test]
    fn names_stay_inside_the_archive() {
        assert_eq!(resolve_inside("", "./a/b.tar").unwrap(), "a/b.tar");
        assert_eq!(
            resolve_inside("x", "../y/layer.tar").unwrap(),
            "y/layer.tar"
        );
        assert!(resolve_inside("", "../../etc/passwd").is_err());
        assert!(resolve_inside("", "/etc/passwd").is_err());
        assert!(resolve_inside("a", "../..").is_err());
        assert!(resolve_inside("", ".").is_err());
    }
}
