//! Random access to the files of an image archive: members of a tar file on
//! disk, or files of a directory (OCI layout). Every name a manifest gives is
//! resolved lexically inside the archive; names that would leave it are
//! refused.

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
/// archive, its size and type, and where its name and link target lie in
/// [`Members`]' text.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    offset: u64,
    size: u64,
    text: u64,
    name_len: u32,
    link_len: u32,
    kind: u8,
}

/// The members of a tar source by normalized path (no `./`, no trailing
/// `/`): one sorted list of fixed-size records and one string of their
/// names and link targets, not a map of strings (an archive of a
/// million members is a plain rootfs as often as not, and its scan
/// should cost it little memory). Of two members with one name, the
/// later counts, as extraction would have it.
#[derive(Debug, Default)]
pub struct Members {
    text: String,
    list: Vec<Member>,
}

impl Members {
    fn str_at(&self, off: u64, len: u32) -> &str {
        &self.text[off as usize..off as usize + len as usize]
    }

    fn name(&self, m: &Member) -> &str {
        self.str_at(m.text, m.name_len)
    }

    fn link(&self, m: &Member) -> &str {
        self.str_at(m.text + u64::from(m.name_len), m.link_len)
    }

    fn push(
        &mut self,
        name: &str,
        link: &str,
        offset: u64,
        size: u64,
        kind: tar::EntryType,
    ) -> Result<()> {
        let len = |s: &str| {
            u32::try_from(s.len()).map_err(|_| anyhow!("a member name of {} bytes", s.len()))
        };
        let m = Member {
            offset,
            size,
            text: self.text.len() as u64,
            name_len: len(name)?,
            link_len: len(link)?,
            kind: kind.as_byte(),
        };
        self.text.push_str(name);
        self.text.push_str(link);
        self.list.push(m);
        Ok(())
    }

    /// Sorts by name, keeping the last member of each name.
    fn finish(&mut self) {
        let mut list = std::mem::take(&mut self.list);
        list.sort_unstable_by(|a, b| self.name(a).cmp(self.name(b)).then(b.offset.cmp(&a.offset)));
        list.dedup_by(|a, b| self.name(a) == self.name(b));
        list.shrink_to_fit();
        self.list = list;
    }

    fn get(&self, name: &str) -> Option<&Member> {
        let i = self
            .list
            .binary_search_by(|m| self.name(m).cmp(name))
            .ok()?;
        Some(&self.list[i])
    }

    /// The names, sorted.
    fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.list.iter().map(|m| self.name(m))
    }
}

/// Where an image's files come from.
pub enum Source {
    /// A tar archive (docker-archive, legacy v1, oci-archive), read in place.
    Tar {
        /// The archive.
        path: PathBuf,
        /// Its members.
        members: Members,
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
        let mut members = Members::default();
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
            let link = e.link_name_bytes().unwrap_or_default();
            let link = String::from_utf8_lossy(&link);
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
            members.push(&name, &link, e.raw_file_position(), e.size(), kind)?;
        }
        members.finish();
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
            Source::Tar { members, .. } => members.get(name).is_some(),
            Source::Dir { root } => root.join(name).is_file(),
            Source::File { .. } => false,
        }
    }

    /// Names of the archive's tar members, sorted (tar sources only).
    pub fn member_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Source::Tar { members, .. } => Box::new(members.names()),
            Source::Dir { .. } | Source::File { .. } => Box::new(std::iter::empty()),
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
    fn tar_member(&self, members: &Members, norm: &str) -> Result<Member> {
        let mut cur = norm.to_string();
        for _ in 0..16 {
            let m = members.get(&cur).ok_or_else(|| {
                anyhow!("{cur:?} is missing from the archive {}", self.describe())
            })?;
            match tar::EntryType::new(m.kind) {
                tar::EntryType::Symlink => {
                    let base = cur.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    cur = resolve_inside(base, members.link(m))?;
                }
                tar::EntryType::Link => cur = resolve_inside("", members.link(m))?,
                tar::EntryType::Regular | tar::EntryType::Continuous => return Ok(*m),
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
    use super::{resolve_inside, Source};

    #[test]
    fn the_later_member_of_a_name_counts() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, link: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, name, data).unwrap();
        };
        add("z/layer.tar", tar::EntryType::Regular, "", b"first");
        add("a", tar::EntryType::Regular, "", b"1");
        add("m", tar::EntryType::Symlink, "z/layer.tar", b"");
        add("./z/layer.tar", tar::EntryType::Regular, "", b"second!");
        add("a/", tar::EntryType::Directory, "", b"");
        add("h", tar::EntryType::Link, "z/layer.tar", b"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        let src = Source::scan_tar(&path).unwrap();
        let names: Vec<&str> = src.member_names().collect();
        assert_eq!(names, ["a", "h", "m", "z/layer.tar"]);
        for name in ["z/layer.tar", "./z//layer.tar", "m", "h"] {
            assert_eq!(src.read(name).unwrap(), b"second!", "{name}");
        }
        // `a` is a directory now, not the file before it.
        let err = src.read("a").unwrap_err().to_string();
        assert!(err.contains("not a file"), "{err}");
        assert!(src.has("m") && !src.has("b"));
        assert!(src.read("missing").is_err());
    }

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
