//! Tar archives for the tests: [`Tar`], written entry by entry (layer
//! tars for the index and union tests, rootfs tars to import), and GNU tar
//! of a read-write branch ([`gnu_tar_of_branch`]).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use tar::{EntryType, Header};

use super::run_ok;

/// The metadata of an entry's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// 0644, root, mtime 1_600_000_000: the metadata of [`Tar::file`],
/// [`Tar::dir`] (with its mode), [`Tar::symlink`] (mode 0777) and
/// [`Tar::device`].
pub const M644: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

/// The header format of the entries ([`Tar::format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gnu,
    Ustar,
    /// Pre-POSIX (v7): no magic.
    Old,
}

/// A tar under construction, in memory ([`Tar::new`]) or in a file
/// ([`Tar::create`]). Entries have GNU headers unless [`Tar::format`]
/// says otherwise. Names and link targets are written byte for byte as
/// given (no normalisation by the `tar` crate), so they fit the header's
/// 100 bytes; [`Tar::builder`] is the `tar` crate's builder, for GNU long
/// names. A whiteout is a file named `.wh.NAME` (an opaque marker
/// `DIR/.wh..wh..opq`), written with [`Tar::file`]; xattrs and other PAX
/// records go before their entry with [`Tar::pax`].
pub struct Tar<W: Write = Vec<u8>> {
    b: Option<tar::Builder<W>>,
    format: Format,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::on(Vec::new())
    }
}

impl Tar<File> {
    /// A tar written to a new file at `path`.
    pub fn create(path: &Path) -> Tar<File> {
        Tar::on(File::create(path).unwrap())
    }
}

impl<W: Write> Tar<W> {
    fn on(w: W) -> Tar<W> {
        Tar {
            b: Some(tar::Builder::new(w)),
            format: Format::Gnu,
        }
    }

    /// The `tar` crate's builder underneath.
    pub fn builder(&mut self) -> &mut tar::Builder<W> {
        self.b.as_mut().expect("tar already finished")
    }

    /// The header format of the entries from now on.
    pub fn format(&mut self, format: Format) -> &mut Self {
        self.format = format;
        self
    }

    /// An entry of `kind`; `link` (the target of a symlink or hard link)
    /// is set if not empty.
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        data: &[u8],
        link: &[u8],
        m: Meta,
    ) -> &mut Self {
        let mut h = header(self.format, name, kind, data.len() as u64, m);
        if !link.is_empty() {
            assert!(link.len() <= 100, "raw link targets must fit the header");
            h.set_link_name_literal(link).unwrap();
        }
        self.append(h, data)
    }

    /// A regular file, [`M644`].
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_m(name, data, M644)
    }

    pub fn file_m(&mut self, name: &str, data: &[u8], m: Meta) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Regular, data, b"", m)
    }

    /// A directory: [`M644`] but `mode`.
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.dir_m(name, Meta { mode, ..M644 })
    }

    pub fn dir_m(&mut self, name: &str, m: Meta) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Directory, b"", b"", m)
    }

    /// A symlink: [`M644`] but mode 0777.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let m = Meta {
            mode: 0o777,
            ..M644
        };
        self.symlink_m(name, target, m)
    }

    pub fn symlink_m(&mut self, name: &str, target: &str, m: Meta) -> &mut Self {
        let (n, t) = (name.as_bytes(), target.as_bytes());
        self.entry(n, EntryType::Symlink, b"", t, m)
    }

    /// A hard link, with header metadata (0600, 77:77, mtime 5) that
    /// deliberately differs from any target's: a hard link shares its
    /// target's.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let m = Meta {
            mode: 0o600,
            uid: 77,
            gid: 77,
            mtime: 5,
        };
        let (n, t) = (name.as_bytes(), target.as_bytes());
        self.entry(n, EntryType::Link, b"", t, m)
    }

    /// A device (or fifo) node, [`M644`].
    pub fn device(&mut self, kind: EntryType, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = header(self.format, name.as_bytes(), kind, 0, M644);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, b"")
    }

    /// A PAX extended header with `recs`, for the next entry.
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        self.builder()
            .append_pax_extensions(recs.iter().copied())
            .unwrap();
        self
    }

    /// Ends the archive; returns what it was written to (the bytes of a
    /// [`Tar::new`]).
    pub fn finish(&mut self) -> W {
        let b = self.b.take().expect("tar already finished");
        b.into_inner().unwrap()
    }

    fn append(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.builder().append(&h, data).unwrap();
        self
    }
}

/// A header of `kind` with every field we care about set, and the name
/// bytes written as they are; no checksum yet.
fn header(format: Format, name: &[u8], kind: EntryType, size: u64, m: Meta) -> Header {
    let mut h = match format {
        Format::Gnu => Header::new_gnu(),
        Format::Ustar => Header::new_ustar(),
        Format::Old => Header::new_old(),
    };
    assert!(name.len() <= 100, "raw names must fit the header");
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(m.mode);
    h.set_uid(m.uid);
    h.set_gid(m.gid);
    h.set_mtime(m.mtime);
    h
}

/// The read-write branch `dir` as a layer tar at `out`, made by GNU tar
/// (`--format=pax`, whose alias is `posix`), without the branch's private
/// `./.wh..wh.layerfs`. `numeric_owner`: `--numeric-owner` (ids only, no
/// user and group names).
pub fn gnu_tar_of_branch(dir: &Path, out: &Path, numeric_owner: bool) {
    let mut c = Command::new("tar");
    c.arg("-C").arg(dir).args(["-c", "--format=pax"]);
    if numeric_owner {
        c.arg("--numeric-owner");
    }
    c.args(["--exclude=./.wh..wh.layerfs", "-f"])
        .arg(out)
        .arg(".");
    run_ok(&mut c);
}

/// A docker-archive (`docker save` layout: manifest.json, the config,
/// one `<n>/layer.tar` per layer) at `out` of `layers` (bottom first),
/// each made by the matching `created_by` of the config's history.
pub fn docker_archive(out: &Path, layers: &[Vec<u8>], created_by: &[&str]) {
    use sha2::{Digest, Sha256};
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
        "history": created_by.iter().map(|c| serde_json::json!({"created_by": c})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": null, "Layers": names}]);
    let mut t = Tar::create(out);
    let meta = M644;
    t.file_m(
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
        meta,
    );
    t.file_m(&config_name, &config, meta);
    for (name, l) in names.iter().zip(layers) {
        t.file_m(name, l, meta);
    }
    t.finish();
}
