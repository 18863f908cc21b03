//! Images out of the store: `export` (the flattened merged tree as one
//! rootfs tar, like `docker export`) and `save` (images with their original
//! byte-exact layer tars, as a docker-archive, an OCI layout directory or
//! an oci-archive).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::image::tarw::{self, TarMeta, TarType};
use crate::layer::index::Kind;
use crate::oci::{config_diff_ids, sha256_hex};
use crate::store::Store;
use crate::union::inspect::{components, join};
use crate::union::{list_dir, resolve_path, root, Resolved};

/// The layers of one image, as export and the debugging commands read
/// them (one type with mounts: [`crate::layer::LayerStack`]).
pub use crate::layer::LayerStack as ImageLayers;

/// What `export` leaves out or puts in.
#[derive(Debug, Default, Clone)]
pub struct ExportOptions {
    /// Paths (and everything under them) to leave out.
    pub exclude: Vec<String>,
    /// (path, file): the file's content replaces the entry at path (which
    /// keeps its owner, mode and time), or is added (0644, root) if the image
    /// has no such path.
    pub replace: Vec<(String, PathBuf)>,
}

fn norm(p: &str) -> Vec<u8> {
    components(p.as_bytes()).join(&b"/"[..])
}

/// Writes the merged tree of `img` as one tar to `out`: every path once,
/// directories before their contents, sorted by name; hard links of the
/// merged view as link entries; no whiteouts.
pub fn export(img: &ImageLayers, opts: &ExportOptions, out: impl Write) -> Result<()> {
    let layers = &img.layers;
    let exclude: Vec<Vec<u8>> = opts.exclude.iter().map(|p| norm(p)).collect();
    let mut replace: BTreeMap<Vec<u8>, (PathBuf, bool)> = BTreeMap::new();
    for (p, f) in &opts.replace {
        let n = norm(p);
        if n.is_empty() {
            bail!("--replace {p}: cannot replace the root directory");
        }
        if !f.is_file() {
            bail!("--replace {p}={}: not a readable file", f.display());
        }
        replace.insert(n, (f.clone(), false));
    }
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    let excluded = |p: &[u8]| {
        exclude
            .iter()
            .any(|e| p == &e[..] || (p.starts_with(e) && p.get(e.len()) == Some(&b'/')))
    };
    let mut links: HashMap<(u16, u32), Vec<u8>> = HashMap::new();
    let r = root(layers);
    write_node(img, &mut b, b"", &r, &mut links, &mut replace)?;
    // Pre-order, depth first, in name order: each directory's entries come
    // right after it, and a subdirectory's whole subtree before its next
    // sibling, as `tar -c` and `docker export` write it. (GNU `tar -x` sets
    // a directory's mtime once the archive has left it; a later entry
    // inside it would change the mtime again.)
    let Resolved::Dir(root_srcs) = &r else {
        bail!("the image root is not a directory");
    };
    let mut stack = vec![(Vec::new(), list_dir(layers, root_srcs).into_iter())];
    while let Some((dir, children)) = stack.last_mut() {
        let Some((name, child)) = children.next() else {
            stack.pop();
            continue;
        };
        let p = join(dir, &name);
        if excluded(&p) {
            continue;
        }
        write_node(img, &mut b, &p, &child, &mut links, &mut replace)?;
        if let Resolved::Dir(srcs) = &child {
            let kids = list_dir(layers, srcs).into_iter();
            stack.push((p, kids));
        }
    }
    for (p, (f, done)) in &replace {
        if *done {
            continue;
        }
        let parent = p
            .iter()
            .rposition(|&c| c == b'/')
            .map(|k| &p[..k])
            .unwrap_or(b"");
        if !matches!(resolve_path(layers, parent), Some(Resolved::Dir(_))) || excluded(p) {
            bail!(
                "--replace {}: its directory is not in the exported tree",
                String::from_utf8_lossy(p)
            );
        }
        let meta = TarMeta {
            mode: 0o644,
            ..TarMeta::default()
        };
        append_file(&mut b, p, &meta, f)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    p: &[u8],
    meta: &TarMeta,
    f: &Path,
) -> Result<()> {
    let file = File::open(f).with_context(|| format!("opening {}", f.display()))?;
    let size = file.metadata()?.len();
    tarw::append(b, p, TarType::File, meta, b"", size, file)
        .with_context(|| format!("writing {}", String::from_utf8_lossy(p)))
}

/// Writes the merged subtree of `img` at `src` (which must exist) as
/// `dst` in the tar, depth first in name order; what `commit` copies for
/// a directory renamed by overlayfs (its content lies in the image).
pub(crate) fn write_subtree<W: Write>(
    img: &ImageLayers,
    b: &mut tar::Builder<W>,
    src: &Resolved,
    dst: &[u8],
    links: &mut HashMap<(u16, u32), Vec<u8>>,
) -> Result<()> {
    let mut none = BTreeMap::new();
    write_node(img, b, dst, src, links, &mut none)?;
    if let Resolved::Dir(srcs) = src {
        for (name, child) in list_dir(&img.layers, srcs) {
            write_subtree(img, b, &child, &join(dst, &name), links)?;
        }
    }
    Ok(())
}

fn write_node<W: Write>(
    img: &ImageLayers,
    b: &mut tar::Builder<W>,
    path: &[u8],
    r: &Resolved,
    links: &mut HashMap<(u16, u32), Vec<u8>>,
    replace: &mut BTreeMap<Vec<u8>, (PathBuf, bool)>,
) -> Result<()> {
    let (l, i) = r.meta_source(&img.layers);
    let idx = &img.layers[l as usize].index;
    let e = idx.entry(i);
    let meta = TarMeta {
        mode: if e.kind == Kind::Symlink {
            0o777
        } else {
            e.mode
        },
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
        rdev: (e.rdev_major, e.rdev_minor),
        xattrs: idx
            .xattrs(&e)
            .filter(|(k, _)| !crate::layer::whiteout::is_overlay_xattr(k))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    };
    if let Some((f, done)) = replace.get_mut(path) {
        *done = true;
        let f = f.clone();
        return append_file(
            b,
            path,
            &TarMeta {
                xattrs: Vec::new(),
                ..meta
            },
            &f,
        );
    }
    let io_err = |e: io::Error| anyhow!("writing {}: {e}", String::from_utf8_lossy(path));
    match e.kind {
        Kind::File => {
            if e.nlink > 1 {
                if let Some(first) = links.get(&(l, e.group)) {
                    return tarw::append(b, path, TarType::HardLink, &meta, first, 0, io::empty())
                        .map_err(io_err);
                }
                links.insert((l, e.group), path.to_vec());
            }
            let data = img.data(l, e.data_off, e.size);
            tarw::append(b, path, TarType::File, &meta, b"", e.size, data).map_err(io_err)
        }
        Kind::Dir => {
            tarw::append(b, path, TarType::Dir, &meta, b"", 0, io::empty()).map_err(io_err)
        }
        Kind::Symlink => tarw::append(
            b,
            path,
            TarType::Symlink,
            &meta,
            idx.target(&e),
            0,
            io::empty(),
        )
        .map_err(io_err),
        Kind::Char | Kind::Block | Kind::Fifo => {
            let ty = match e.kind {
                Kind::Char => TarType::Char,
                Kind::Block => TarType::Block,
                _ => TarType::Fifo,
            };
            tarw::append(b, path, ty, &meta, b"", 0, io::empty()).map_err(io_err)
        }
        Kind::Whiteout | Kind::Socket => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// save

/// Output formats of `save`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker-archive`: a tar with `manifest.json`, as `docker load` reads it.
    DockerArchive,
    /// `oci`: an OCI image layout directory.
    Oci,
    /// `oci-archive`: an OCI image layout as one tar.
    OciArchive,
}

impl std::str::FromStr for SaveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker-archive" => Ok(SaveFormat::DockerArchive),
            "oci" => Ok(SaveFormat::Oci),
            "oci-archive" => Ok(SaveFormat::OciArchive),
            _ => Err(format!(
                "unknown format {s:?} (docker-archive, oci or oci-archive)"
            )),
        }
    }
}

/// Where `save` writes: a tar being built, or a directory.
enum Sink {
    Tar(tar::Builder<BufWriter<File>>),
    Dir(PathBuf),
}

impl Sink {
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.add(name, data.len() as u64, data)
    }

    fn add(&mut self, name: &str, size: u64, data: impl Read) -> Result<()> {
        match self {
            Sink::Tar(b) => {
                let meta = TarMeta {
                    mode: 0o644,
                    ..TarMeta::default()
                };
                tarw::append(b, name.as_bytes(), TarType::File, &meta, b"", size, data)?;
            }
            Sink::Dir(root) => {
                let p = root.join(name);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut f = BufWriter::new(File::create(&p)?);
                io::copy(&mut data.take(size), &mut f)?;
                f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
        }
        Ok(())
    }
}

/// One image to save: id, config bytes, tags, (chain id, diff id) per
/// layer, bottom first.
struct Saved {
    config: Vec<u8>,
    tags: Vec<String>,
    layers: Vec<(String, String)>,
}

/// Writes `ids` to `out` in `format`. The output appears complete or not
/// at all (written beside it, then renamed).
pub fn save(store: &Store, ids: &[String], out: &Path, format: SaveFormat) -> Result<()> {
    let mut images = Vec::new();
    for id in ids {
        let rec = store.image(id)?;
        let config = store.config(id)?;
        let v: Value = serde_json::from_slice(&config).context("image config")?;
        let diff_ids = config_diff_ids(&v).map_err(|e| anyhow!(e))?;
        if diff_ids.len() != rec.layers.len() {
            bail!("image {id}: config and layer records disagree");
        }
        if sha256_hex(&config) != *id {
            eprintln!(
                "layerfs: warning: image {} came from a legacy v1 archive; saved, it gets the id \
                 sha256:{} (the digest of its config)",
                &id[..12],
                &sha256_hex(&config)[..12]
            );
        }
        images.push(Saved {
            config,
            tags: store.tags_of(id)?,
            layers: rec.layers.iter().cloned().zip(diff_ids).collect(),
        });
    }
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if format == SaveFormat::Oci {
        if out.exists()
            && fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            bail!("{} exists and is not an empty directory", out.display());
        }
        fs::create_dir_all(&tmp)?;
    }
    let r = (|| -> Result<()> {
        let mut sink = match format {
            SaveFormat::Oci => Sink::Dir(tmp.clone()),
            _ => Sink::Tar(tar::Builder::new(BufWriter::with_capacity(
                1 << 20,
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            ))),
        };
        match format {
            SaveFormat::DockerArchive => docker_archive(store, &images, &mut sink)?,
            _ => oci_layout(store, &images, &mut sink)?,
        }
        if let Sink::Tar(b) = sink {
            let f = b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        if format == SaveFormat::Oci && out.exists() {
            fs::remove_dir(out)?;
        }
        fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
    }
    r
}

fn add_layer(store: &Store, sink: &mut Sink, name: &str, chain: &str) -> Result<()> {
    let p = store.layer_dir(chain).join("layer.tar");
    let f = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
    let size = f.metadata()?.len();
    sink.add(name, size, f)
}

/// docker-archive: `manifest.json`, `<config digest>.json`,
/// `<diff id>.tar` per layer (each stored once).
fn docker_archive(store: &Store, images: &[Saved], sink: &mut Sink) -> Result<()> {
    let mut written = std::collections::BTreeSet::new();
    let mut manifest = Vec::new();
    for img in images {
        let cfg = format!("{}.json", sha256_hex(&img.config));
        if written.insert(cfg.clone()) {
            sink.add_bytes(&cfg, &img.config)?;
        }
        let mut names = Vec::new();
        for (chain, diff) in &img.layers {
            let n = format!("{diff}.tar");
            if written.insert(n.clone()) {
                add_layer(store, sink, &n, chain)?;
            }
            names.push(n);
        }
        manifest.push(json!({"Config": cfg, "RepoTags": img.tags, "Layers": names}));
    }
    sink.add_bytes("manifest.json", &serde_json::to_vec(&manifest)?)
}

/// OCI image layout: uncompressed layer blobs (their digests are the diff
/// ids), one manifest per image, an index entry per tag
/// (`org.opencontainers.image.ref.name` = the tag) or one without a name.
fn oci_layout(store: &Store, images: &[Saved], sink: &mut Sink) -> Result<()> {
    let mut written = std::collections::BTreeSet::new();
    let mut index = Vec::new();
    for img in images {
        let cfg = sha256_hex(&img.config);
        if written.insert(cfg.clone()) {
            sink.add_bytes(&format!("blobs/sha256/{cfg}"), &img.config)?;
        }
        let mut layers = Vec::new();
        for (chain, diff) in &img.layers {
            let size = store.layer(chain)?.size;
            if written.insert(diff.clone()) {
                add_layer(store, sink, &format!("blobs/sha256/{diff}"), chain)?;
            }
            layers.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{diff}"),
                "size": size,
            }));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{cfg}"),
                "size": img.config.len(),
            },
            "layers": layers,
        }))?;
        let mdigest = sha256_hex(&manifest);
        if written.insert(mdigest.clone()) {
            sink.add_bytes(&format!("blobs/sha256/{mdigest}"), &manifest)?;
        }
        let desc = json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{mdigest}"),
            "size": manifest.len(),
        });
        if img.tags.is_empty() {
            index.push(desc.clone());
        }
        for t in &img.tags {
            let mut d = desc.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
            index.push(d);
        }
    }
    sink.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    sink.add_bytes(
        "index.json",
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        }))?,
    )
}
