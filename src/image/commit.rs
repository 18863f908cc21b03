//! A read-write branch against its image: `diff` (what changed, `docker
//! diff` style, walking only the branch) and `commit` (the branch as a new
//! layer on top of the image, published as a new image through the import
//! machinery). The config edits of `commit --change` are pure functions
//! ([`apply_change`], [`commit_config`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::image::export::{write_subtree, ImageLayers};
use crate::image::tarw::{self, TarMeta, TarType};
use crate::layer::index::{Index, Kind};
use crate::layer::whiteout::{is_overlay_xattr, overlay_mark, OverlayMark, WH_OPAQUE, WH_PREFIX};
use crate::store::Store;
use crate::sys;
use crate::union::inspect::{join, layer_changes, Change};
use crate::union::{list_dir, resolve_path, Resolved};
use crate::upper::{Meta, OVERRIDE_XATTR, STATE_DIR};

/// Checks that `dir` is a read-write branch (it has the state directory),
/// or, with `plain`, any directory (an overlay upperdir, a Docker
/// `overlay2/<id>/diff` or `aufs/diff/<id>`): read in both whiteout
/// formats.
pub fn check_branch(dir: &Path, plain: bool) -> Result<PathBuf> {
    let d = dir
        .canonicalize()
        .with_context(|| format!("rw branch {}", dir.display()))?;
    if !d.is_dir() {
        bail!("{} is not a directory", d.display());
    }
    if !plain && !d.join(STATE_DIR).is_dir() {
        bail!(
            "{} is not a layerfs read-write branch (it has no {STATE_DIR}/; \
             make one with `layerfs mount IMAGE DIR --rw RWDIR`, or give --plain \
             to read any directory as a layer diff, AUFS or overlay format)",
            d.display()
        );
    }
    Ok(d)
}

/// Sorted names of a directory, as bytes.
fn names(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        v.push(e?.file_name().as_bytes().to_vec());
    }
    v.sort();
    Ok(v)
}

/// Whether the branch at `rw` is read in overlay's format too: a branch
/// layerfs made in the AUFS format has its state directory, and there a
/// character device 0:0 is a device; any other directory (an overlay
/// upperdir, a Docker `overlay2/<id>/diff`) may hold either format.
fn reads_overlay(rw: &Path) -> bool {
    !rw.join(STATE_DIR).is_dir()
}

/// The branch at `rw` as a layer index (whiteouts in the AUFS spelling).
pub fn branch_index(rw: &Path) -> Result<Index> {
    crate::layer::dir::index_directory_as(rw, reads_overlay(rw))
}

/// What the branch `rw` changes in the view of `layers` (stack order, 0 =
/// top), sorted by path: `A` added, `C` changed (a directory that holds a
/// change counts as changed), `D` deleted. Only the branch is walked (plus
/// the lower listing of a directory made opaque), so the cost follows the
/// number of changes, not the size of the image. Both whiteout formats are
/// read (see `reads_overlay`).
pub fn rw_diff(layers: &[impl AsRef<Index>], rw: &Path) -> Result<Vec<(Change, Vec<u8>)>> {
    let top = branch_index(rw)?;
    let mut all: Vec<&Index> = vec![&top];
    all.extend(layers.iter().map(|l| l.as_ref()));
    Ok(layer_changes(&all, 0)
        .into_iter()
        .filter(|c| !c.path.is_empty())
        .map(|c| (c.change, c.path))
        .collect())
}

/// [`rw_diff`] of a branch lying on image `img`: an overlay-format
/// branch with redirects (directories renamed by overlayfs, which a
/// directory read as one layer cannot follow) is compared as the layer
/// `commit` makes of it ([`write_layer_on`], written to a staging file
/// of `store`).
pub fn rw_diff_image(
    store: &Store,
    img: &ImageLayers,
    rw: &Path,
) -> Result<Vec<(Change, Vec<u8>)>> {
    let top = match branch_index(rw) {
        Ok(top) => top,
        Err(e) if e.downcast_ref::<crate::layer::dir::Redirected>().is_some() => {
            let staging = store.staging("diff")?;
            let tmp = staging.path().join("layer.tar");
            let f = crate::store::create_private(&tmp)?;
            let r = write_layer_on(rw, Some(img), &f).and_then(|()| {
                let mut bytes = std::io::Cursor::new(Vec::new());
                crate::layer::index::write_index_of(&File::open(&tmp)?, &mut bytes)?;
                Ok(Index::from_bytes(
                    bytes.into_inner(),
                    &rw.display().to_string(),
                )?)
            });
            let _ = std::fs::remove_file(&tmp);
            r?
        }
        Err(e) => return Err(e),
    };
    let mut all: Vec<&Index> = vec![&top];
    all.extend(img.layers.iter().map(|l| l.as_ref()));
    Ok(layer_changes(&all, 0)
        .into_iter()
        .filter(|c| !c.path.is_empty())
        .map(|c| (c.change, c.path))
        .collect())
}

// ---------------------------------------------------------------------------
// commit: the branch as a layer tar

/// Metadata of an entry of the branch as the merged view shows it: the
/// rootless override xattr, when present, says the real owner, mode and
/// type.
/// Extended attributes as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn branch_meta(p: &Path, st: &libc::stat) -> (Meta, Xattrs) {
    let mut meta = Meta::from_stat(st);
    let mut xattrs = Vec::new();
    if let Ok(list) = sys::llistxattr(p) {
        for name in list.split(|&c| c == 0).filter(|n| !n.is_empty()) {
            if name == OVERRIDE_XATTR {
                if let Some(m) = sys::lgetxattr(p, name)
                    .ok()
                    .and_then(|v| Meta::parse_override(&v))
                {
                    meta = m;
                }
                continue;
            }
            if let Ok(v) = sys::lgetxattr(p, name) {
                xattrs.push((name.to_vec(), v));
            }
        }
    }
    xattrs.sort();
    (meta, xattrs)
}

/// Writes the branch at `rw` as a layer tar to `out`: every entry as it is
/// (whiteouts and opaque markers included, since they are the layer's
/// deletions), without the state directory; owners, modes, times and
/// xattrs as on disk, or as the rootless override records them. Hard links
/// within the branch become link entries. Sockets have no tar form and are
/// left out (with a warning).
pub fn write_layer(rw: &Path, out: impl Write) -> Result<()> {
    write_layer_on(rw, None, out)
}

/// [`write_layer`] of a branch over `lowers` (the image it lies on): an
/// overlay-format branch's directories renamed with a redirect
/// (`redirect_dir=on`) become opaque directories holding the merged lower
/// content they point at overlaid with their own entries, the standard
/// layer they mean. Without `lowers` a redirect is refused.
pub fn write_layer_on(rw: &Path, lowers: Option<&ImageLayers>, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    let mut cx = Cx {
        lowers,
        overlay: reads_overlay(rw),
        seen: HashMap::new(),
        links: HashMap::new(),
    };
    // The branch's root too (`./`): a writable mount shows its metadata.
    write_tree(&mut b, rw, b"", None, &mut cx)?;
    b.into_inner()?.flush()?;
    Ok(())
}

/// What the walk of [`write_tree`] carries.
struct Cx<'a> {
    lowers: Option<&'a ImageLayers>,
    overlay: bool,
    seen: HashMap<(u64, u64), Vec<u8>>,
    links: HashMap<(u16, u32), Vec<u8>>,
}

/// The lower path (no leading `/`) an overlay redirect `value` of a
/// directory names, `cand` being where the directory's lower content would
/// be without it: absolute (`/a/b`) as is, relative (`b`) beside `cand`.
pub(crate) fn redirect_target(cand: &[u8], value: &[u8]) -> Vec<u8> {
    let (base, rest): (&[u8], &[u8]) = match value.strip_prefix(b"/") {
        Some(v) => (b"", v),
        None => (
            cand.iter()
                .rposition(|&c| c == b'/')
                .map_or(&cand[..0], |i| &cand[..i]),
            value,
        ),
    };
    let mut out = base.to_vec();
    for c in rest
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        out = join(&out, c);
    }
    out
}

/// The children of an expanded (opaque in the layer) directory in name
/// order: each upper name (`true`), and each lower name the upper does not
/// have (`false`). Both inputs sorted.
pub(crate) fn merge_children(upper: &[Vec<u8>], lower: &[Vec<u8>]) -> Vec<(Vec<u8>, bool)> {
    let mut out: Vec<(Vec<u8>, bool)> = upper.iter().map(|n| (n.clone(), true)).collect();
    out.extend(
        lower
            .iter()
            .filter(|n| upper.binary_search(n).is_err())
            .map(|n| (n.clone(), false)),
    );
    out.sort();
    out
}

/// Writes the entry at `p` (`path` in the layer) and, for a directory,
/// everything under it, depth first in name order. `expand` is `None`
/// outside a redirected directory; inside one, `Some(origin)`: the entry
/// is written whole (its directories opaque) and `origin` is the lower
/// path whose content it overlays, if any.
fn write_tree<W: Write>(
    b: &mut tar::Builder<W>,
    p: &Path,
    path: &[u8],
    expand: Option<Option<Vec<u8>>>,
    cx: &mut Cx,
) -> Result<()> {
    let st = sys::lstat(p)
        .map_err(|e| anyhow!("{}: {}", p.display(), io::Error::from_raw_os_error(e)))?;
    let (meta, mut xattrs) = branch_meta(p, &st);
    let real = Kind::of_mode(st.st_mode);
    let err = |e: io::Error| anyhow!("writing {}: {e}", p.display());
    // Overlay's markers become the layer format's (AUFS `.wh.` names).
    let mut opaque = false;
    let mut my_expand: Option<Option<Vec<u8>>> = None;
    if cx.overlay {
        let rdev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        let mark = overlay_mark(
            real,
            rdev,
            xattrs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let redirect = xattrs
            .iter()
            .find(|(n, _)| is_overlay_xattr(n) && n.ends_with(b".redirect"))
            .map(|(n, v)| (n.clone(), v.clone()));
        xattrs.retain(|(n, _)| !is_overlay_xattr(n));
        match mark {
            // Inside an expanded directory (opaque) nothing lies below.
            OverlayMark::Whiteout if expand.is_some() => return Ok(()),
            OverlayMark::Whiteout if !path.is_empty() => {
                let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
                    Some(i) => (&path[..i], &path[i + 1..]),
                    None => (&path[..0], path),
                };
                let wh = join(dir, &[WH_PREFIX, name].concat());
                let tm = TarMeta {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: st.st_mtime,
                    mtime_nsec: st.st_mtime_nsec as u32,
                    rdev: (0, 0),
                    xattrs: Vec::new(),
                };
                return tarw::append(b, &wh, TarType::File, &tm, b"", 0, io::empty()).map_err(err);
            }
            OverlayMark::Opaque => opaque = true,
            _ => {}
        }
        if real == Kind::Dir {
            if let Some((n, v)) = redirect {
                if cx.lowers.is_none() {
                    bail!(
                        "{}: a directory renamed by overlayfs ({}={}): its content lies \
                         in the layers below, which are not known here; commit it onto \
                         the image it lies on",
                        p.display(),
                        String::from_utf8_lossy(&n),
                        String::from_utf8_lossy(&v)
                    );
                }
                let cand = match &expand {
                    Some(o) => o.clone().unwrap_or_else(|| path.to_vec()),
                    None => path.to_vec(),
                };
                my_expand = Some(Some(redirect_target(&cand, &v)));
                opaque = true;
            } else if let Some(o) = &expand {
                my_expand = Some(if opaque { None } else { o.clone() });
                opaque = true;
            }
        }
    }
    // The lower directory an expanded directory overlays.
    let lower_dir = match (&my_expand, cx.lowers) {
        (Some(Some(o)), Some(img)) => match resolve_path(&img.layers, o) {
            Some(Resolved::Dir(srcs)) => Some(srcs),
            _ => None,
        },
        _ => None,
    };
    let tm = TarMeta {
        mode: meta.perm,
        uid: meta.uid,
        gid: meta.gid,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        rdev: (libc::major(meta.rdev), libc::minor(meta.rdev)),
        xattrs,
    };
    match meta.kind {
        Kind::Dir if real == Kind::Dir => {
            tarw::append(b, path, TarType::Dir, &tm, b"", 0, io::empty()).map_err(err)?;
            let children = names(p)?;
            if opaque
                && children
                    .binary_search_by(|n| n.as_slice().cmp(WH_OPAQUE))
                    .is_err()
            {
                let marker = TarMeta {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    xattrs: Vec::new(),
                    ..tm
                };
                let m = join(path, WH_OPAQUE);
                tarw::append(b, &m, TarType::File, &marker, b"", 0, io::empty()).map_err(err)?;
            }
            let children: Vec<Vec<u8>> = children
                .into_iter()
                .filter(|n| !(path.is_empty() && n.as_slice() == STATE_DIR.as_bytes()))
                .collect();
            let lower: Vec<(Vec<u8>, Resolved)> = match (&lower_dir, cx.lowers) {
                (Some(srcs), Some(img)) => list_dir(&img.layers, srcs),
                _ => Vec::new(),
            };
            let lower_names: Vec<Vec<u8>> = lower.iter().map(|(n, _)| n.clone()).collect();
            for (name, upper) in merge_children(&children, &lower_names) {
                let child_path = join(path, &name);
                if upper {
                    let child_expand = my_expand.as_ref().map(|o| {
                        o.as_ref()
                            .filter(|_| lower_dir.is_some())
                            .map(|o| join(o, &name))
                    });
                    write_tree(
                        b,
                        &p.join(OsStr::from_bytes(&name)),
                        &child_path,
                        child_expand,
                        cx,
                    )?;
                } else if let (Some(img), Some((_, r))) =
                    (cx.lowers, lower.iter().find(|(n, _)| *n == name))
                {
                    write_subtree(img, b, r, &child_path, &mut cx.links)?;
                }
            }
        }
        Kind::File | Kind::Whiteout if real == Kind::File => {
            if st.st_nlink > 1 {
                let key = (st.st_dev, st.st_ino);
                if let Some(first) = cx.seen.get(&key) {
                    return tarw::append(b, path, TarType::HardLink, &tm, first, 0, io::empty())
                        .map_err(err);
                }
                cx.seen.insert(key, path.to_vec());
            }
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let size = f.metadata()?.len();
            tarw::append(b, path, TarType::File, &tm, b"", size, f).map_err(err)?;
        }
        Kind::Symlink if real == Kind::Symlink => {
            let t = std::fs::read_link(p)?;
            let tm = TarMeta { mode: 0o777, ..tm };
            let target = t.as_os_str().as_bytes();
            tarw::append(b, path, TarType::Symlink, &tm, target, 0, io::empty()).map_err(err)?;
        }
        // Devices and fifos: real ones, or (rootless) an empty file whose
        // override says what it is.
        Kind::Char | Kind::Block | Kind::Fifo if real == meta.kind || real == Kind::File => {
            let ty = match meta.kind {
                Kind::Char => TarType::Char,
                Kind::Block => TarType::Block,
                _ => TarType::Fifo,
            };
            tarw::append(b, path, ty, &tm, b"", 0, io::empty()).map_err(err)?;
        }
        Kind::Socket => {
            eprintln!(
                "layerfs: warning: {} is a socket; a layer cannot hold it",
                p.display()
            );
        }
        k => bail!(
            "{}: is a {real:?} on disk but its {} xattr says {k:?}",
            p.display(),
            String::from_utf8_lossy(OVERRIDE_XATTR)
        ),
    }
    Ok(())
}

/// What `commit` records besides the layer.
#[derive(Debug, Default, Clone)]
pub struct CommitOptions {
    /// The commit message (the history entry's `comment`).
    pub message: Option<String>,
    /// The image author (`author` of the config and of the history entry).
    pub author: Option<String>,
    /// Dockerfile instructions applied to the config (`CMD ["sh"]`, ...).
    pub changes: Vec<String>,
    /// Tags to give the new image.
    pub tags: Vec<String>,
    /// Accept a directory layerfs did not make (see [`check_branch`]).
    pub plain: bool,
}

/// Splits a Dockerfile value into a JSON array if it is one (exec form),
/// else `None` (shell form).
fn exec_form(v: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(v.trim()).ok()
}

/// `KEY=VALUE KEY2="VALUE 2"` or the legacy `KEY VALUE`.
fn key_values(v: &str) -> Result<Vec<(String, String)>> {
    let v = v.trim();
    if !v.contains('=') {
        let (k, val) = v
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow!("expected KEY=VALUE or KEY VALUE, got {v:?}"))?;
        return Ok(vec![(k.to_string(), val.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote = None;
        for c in chars.by_ref() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, c) => word.push(c),
            }
        }
        let (k, val) = word
            .split_once('=')
            .ok_or_else(|| anyhow!("expected KEY=VALUE, got {word:?}"))?;
        if k.is_empty() {
            bail!("empty key in {v:?}");
        }
        out.push((k.to_string(), val.to_string()));
    }
    Ok(out)
}

/// Applies one Dockerfile instruction (`CMD`, `ENTRYPOINT`, `ENV`,
/// `WORKDIR`, `USER`, `LABEL`, `EXPOSE`) to the `config` object of an image
/// config.
pub fn apply_change(config: &mut Map<String, Value>, change: &str) -> Result<()> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .ok_or_else(|| anyhow!("--change {change:?}: expected INSTRUCTION VALUE"))?;
    let rest = rest.trim();
    let shell = |s: &str| json!(["/bin/sh", "-c", s]);
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert(
                "Cmd".into(),
                exec_form(rest)
                    .map(|v| json!(v))
                    .unwrap_or_else(|| shell(rest)),
            );
        }
        "ENTRYPOINT" => {
            config.insert(
                "Entrypoint".into(),
                exec_form(rest)
                    .map(|v| json!(v))
                    .unwrap_or_else(|| shell(rest)),
            );
        }
        "ENV" => {
            let env = config.entry("Env").or_insert_with(|| json!([]));
            let arr = env
                .as_array_mut()
                .ok_or_else(|| anyhow!("config Env is not an array"))?;
            for (k, v) in key_values(rest)? {
                let prefix = format!("{k}=");
                arr.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                arr.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            if labels.is_null() {
                *labels = json!({});
            }
            let obj = labels
                .as_object_mut()
                .ok_or_else(|| anyhow!("config Labels is not an object"))?;
            for (k, v) in key_values(rest)? {
                obj.insert(k, json!(v));
            }
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(rest));
        }
        "USER" => {
            config.insert("User".into(), json!(rest));
        }
        "EXPOSE" => {
            let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            if ports.is_null() {
                *ports = json!({});
            }
            let obj = ports
                .as_object_mut()
                .ok_or_else(|| anyhow!("config ExposedPorts is not an object"))?;
            for p in rest.split_whitespace() {
                let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    bail!("--change EXPOSE: bad port {p:?}");
                }
                obj.insert(format!("{num}/{proto}"), json!({}));
            }
        }
        other => bail!(
            "--change {other}: not supported (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE)"
        ),
    }
    Ok(())
}

/// The config of the committed image: the parent's, with the new layer's
/// diff id appended to `rootfs.diff_ids`, a history entry, `created` (and
/// `author`) set, and the `--change`s applied.
pub fn commit_config(
    parent: &[u8],
    diff_id: &str,
    created: &str,
    opts: &CommitOptions,
) -> Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(parent).context("parent image config")?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("parent image config is not an object"))?;
    let ids = obj
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow!("parent image config has no rootfs.diff_ids"))?;
    ids.push(json!(format!("sha256:{diff_id}")));
    let mut h = Map::new();
    h.insert("created".into(), json!(created));
    h.insert("created_by".into(), json!("layerfs commit"));
    if let Some(a) = &opts.author {
        h.insert("author".into(), json!(a));
        obj.insert("author".into(), json!(a));
    }
    if let Some(m) = &opts.message {
        h.insert("comment".into(), json!(m));
    }
    let hist = obj.entry("history").or_insert_with(|| json!([]));
    if !hist.is_array() {
        *hist = json!([]);
    }
    hist.as_array_mut().unwrap().push(Value::Object(h));
    obj.insert("created".into(), json!(created));
    let cfg = obj.entry("config").or_insert_with(|| json!({}));
    if cfg.is_null() {
        *cfg = json!({});
    }
    let cfg = cfg
        .as_object_mut()
        .ok_or_else(|| anyhow!("parent config.config is not an object"))?;
    for c in &opts.changes {
        apply_change(cfg, c)?;
    }
    Ok(serde_json::to_vec(&v)?)
}

/// RFC 3339 UTC time of now, seconds precision.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::oci::rfc3339(secs)
}

/// Commits branch `rw` on top of image `parent`: writes the layer tar into
/// the store's staging area, builds the config, and imports both through
/// the import machinery (verified and published all or nothing). Returns
/// the new image id.
pub fn commit(store: &Store, parent: &str, rw: &Path, opts: &CommitOptions) -> Result<String> {
    for t in &opts.tags {
        crate::oci::validate_tag(t).map_err(|e| anyhow!(e))?;
    }
    let rw = check_branch(rw, opts.plain)?;
    let lowers = ImageLayers::open(store, parent)?;
    let lock = store.lock()?;
    let staging = store.staging("commit")?;
    let tar_path = staging.path().join("layer.tar");
    let diff_id = {
        let f = crate::store::create_private(&tar_path)?;
        let mut h = HashingWriter {
            inner: f,
            hash: Sha256::new(),
        };
        write_layer_on(&rw, Some(&lowers), &mut h)?;
        h.inner.sync_all()?;
        hex::encode(h.hash.finalize())
    };
    let config = commit_config(&store.config(parent)?, &diff_id, &now_rfc3339(), opts)?;
    let rec = store.image(parent)?;
    let mut layers: Vec<String> = rec.layers.iter().map(|c| format!("stored/{c}")).collect();
    layers.push("layer.tar".into());
    crate::image::import::import_staged(store, &lock, staging.path(), config, layers, &opts.tags)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_name_lower_paths() {
        assert_eq!(redirect_target(b"x/B", b"/A"), b"A");
        assert_eq!(redirect_target(b"x/B", b"/a//b/"), b"a/b");
        assert_eq!(redirect_target(b"x/B", b"A"), b"x/A");
        assert_eq!(redirect_target(b"B", b"A"), b"A");
    }

    #[test]
    fn expanded_children_are_upper_over_lower() {
        let v = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            merge_children(&v(&["b", "d"]), &v(&["a", "b", "c"])),
            vec![
                (b"a".to_vec(), false),
                (b"b".to_vec(), true),
                (b"c".to_vec(), false),
                (b"d".to_vec(), true),
            ]
        );
    }

    #[test]
    fn changes_edit_the_config_like_docker_commit() {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin", "A=1"]));
        for ch in [
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /init --flag",
            "ENV A=2 B=\"two words\"",
            "ENV C 3",
            "WORKDIR /srv",
            "USER 1000:1000",
            "LABEL org.example.x=y z=\"w v\"",
            "EXPOSE 80 53/udp",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(
            Value::Object(c),
            json!({
                "Cmd": ["sh", "-c", "echo hi"],
                "Entrypoint": ["/bin/sh", "-c", "/init --flag"],
                "Env": ["PATH=/bin", "A=2", "B=two words", "C=3"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "Labels": {"org.example.x": "y", "z": "w v"},
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            })
        );
        let mut c = Map::new();
        assert!(apply_change(&mut c, "RUN rm -rf /").is_err());
        assert!(apply_change(&mut c, "EXPOSE http").is_err());
        assert!(apply_change(&mut c, "CMD").is_err());
    }

    #[test]
    fn commit_config_appends_layer_and_history() {
        let parent = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x"}]}"#;
        let opts = CommitOptions {
            message: Some("msg".into()),
            author: Some("me".into()),
            changes: vec!["USER nobody".into()],
            tags: vec![],
            plain: false,
        };
        let c = commit_config(parent, "bb", "2024-01-02T03:04:05Z", &opts).unwrap();
        let v: Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(v["history"][1]["comment"], "msg");
        assert_eq!(v["history"][1]["author"], "me");
        assert_eq!(v["created"], "2024-01-02T03:04:05Z");
        assert_eq!(v["author"], "me");
        assert_eq!(v["config"]["User"], "nobody");
        assert_eq!(v["config"]["Cmd"], json!(["sh"]));
        assert!(commit_config(b"{}", "bb", "t", &opts).is_err());
    }

    #[test]
    fn rfc3339_dates() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }
}
