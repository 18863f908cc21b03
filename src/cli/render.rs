//! The output of the commands: typed rows, serialised by serde for
//! `--json` and formatted for text from the same fields.
//!
//! The fields of every row are declared in alphabetical order: that is the
//! order of the keys `--json` has always printed (the rows used to be
//! `serde_json::Value` maps, which sort their keys).

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use crate::image::export::ImageLayers;
use crate::layer::index::Index;
use crate::layer::index::Kind;
use crate::oci::rfc3339;
use crate::union::inspect::{
    link_names, Change, Event, Item, Status, Step, TreeNode, View, ViewChange,
};

/// Writes `v` as pretty JSON and a newline.
pub(crate) fn print_json(out: &mut impl Write, v: &(impl Serialize + ?Sized)) -> Result<()> {
    // As an io::Error, so that a closed pipe is told apart (`| head`).
    serde_json::to_writer_pretty(&mut *out, v).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Output that has a text form.
pub(crate) trait Text {
    /// Writes the text form.
    fn text(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// Writes `v` as JSON with `json`, else as text.
pub(crate) fn emit(
    out: &mut impl Write,
    json: bool,
    v: &(impl Serialize + Text + ?Sized),
) -> Result<()> {
    if json {
        print_json(out, v)
    } else {
        Ok(v.text(out)?)
    }
}

/// `n` bytes in decimal units with one decimal (`2.0MB`), bytes as they are.
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// The first 12 characters of an id.
pub(crate) fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// A path from the image root (no leading `/`) as shown: `/path`.
pub(crate) fn slash_path(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char => "char",
        Kind::Block => "block",
        Kind::Fifo => "fifo",
        Kind::Whiteout => "whiteout",
        Kind::Socket => "socket",
    }
}

/// One image of `images`.
#[derive(Serialize)]
pub(crate) struct ImageRow {
    /// The config's `created`.
    pub created: Option<String>,
    /// The image id.
    pub id: String,
    /// The number of layers.
    pub layers: usize,
    /// Bytes of the layer tars.
    pub size: u64,
    /// The image's tags, sorted.
    pub tags: Vec<String>,
    /// What is wrong with the image's record, if it is damaged (its
    /// layers, size and created are then unknown: 0, 0, null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

impl Text for [ImageRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<12}  {:<30}  {:>6}  {:>8}  CREATED",
            "ID", "TAGS", "LAYERS", "SIZE"
        )?;
        for r in self {
            let tags = if r.tags.is_empty() {
                "<none>".to_string()
            } else {
                r.tags.join(",")
            };
            if let Some(why) = &r.broken {
                writeln!(
                    out,
                    "{:<12}  {tags:<30}  {:>6}  {:>8}  BROKEN: {why}",
                    short(&r.id),
                    "?",
                    "?"
                )?;
                continue;
            }
            writeln!(
                out,
                "{:<12}  {:<30}  {:>6}  {:>8}  {}",
                short(&r.id),
                tags,
                r.layers,
                human_size(r.size),
                r.created.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

/// One layer of `history`.
#[derive(Serialize)]
pub(crate) struct HistoryRow {
    /// The config history's `created_by` of the layer.
    pub created_by: String,
    /// `sha256:HEX`.
    pub diff_id: String,
    /// Index in the image, 0 = bottom.
    pub index: usize,
    /// The chain id.
    pub layer: String,
    /// Bytes of the layer tar.
    pub size: u64,
}

impl Text for [HistoryRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<12}  {:<19}  {:>8}  CREATED BY",
            "LAYER", "DIFF ID", "SIZE"
        )?;
        for r in self {
            writeln!(
                out,
                "{:<12}  {:<19}  {:>8}  {}",
                short(&r.layer),
                &r.diff_id[..19.min(r.diff_id.len())],
                human_size(r.size),
                r.created_by
            )?;
        }
        Ok(())
    }
}

/// Everything `layers` prints.
#[derive(Serialize)]
pub(crate) struct LayersReport {
    /// dive's efficiency score.
    pub efficiency: f64,
    /// File data stored by all the layers.
    pub file_bytes: u64,
    /// The image id.
    pub image: String,
    /// Top first.
    pub layers: Vec<LayerRow>,
    /// File data shown by the merged view.
    pub view_bytes: u64,
    /// `file_bytes - view_bytes`: the sum of the layers' `wasted`.
    pub wasted: u64,
    /// dive's wasted bytes.
    pub wasted_bytes: u64,
}

/// One layer of `layers`.
#[derive(Serialize)]
pub(crate) struct LayerRow {
    /// Non-directories added.
    pub added: u64,
    /// The config history's `created_by` of the layer.
    pub created_by: String,
    /// Paths deleted.
    pub deleted: u64,
    /// `sha256:HEX`.
    pub diff_id: String,
    /// Bytes of file data the layer stores.
    pub file_bytes: u64,
    /// Index in the image, 0 = bottom.
    pub index: usize,
    /// The chain id.
    pub layer: String,
    /// Non-directories modified.
    pub modified: u64,
    /// Bytes of the layer tar.
    pub size: u64,
    /// Bytes of the layer's files the merged view does not show.
    pub wasted: u64,
}

impl Text for LayersReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:>5}  {:<12}  {:>8}  {:>6}  {:>8}  {:>7}  {:>8}  CREATED BY",
            "INDEX", "LAYER", "SIZE", "ADDED", "MODIFIED", "DELETED", "WASTED"
        )?;
        for r in &self.layers {
            writeln!(
                out,
                "{:>5}  {:<12}  {:>8}  {:>6}  {:>8}  {:>7}  {:>8}  {}",
                r.index,
                short(&r.layer),
                human_size(r.size),
                r.added,
                r.modified,
                r.deleted,
                human_size(r.wasted),
                r.created_by
            )?;
        }
        writeln!(
            out,
            "file data stored: {}, shown by the merged view: {}, wasted: {} (`--wasted` lists it)\n\
             dive's measure (another definition, see README): efficiency {:.4}%, wasted {}",
            human_size(self.file_bytes),
            human_size(self.view_bytes),
            human_size(self.wasted),
            self.efficiency * 100.0,
            human_size(self.wasted_bytes)
        )
    }
}

/// One change of `diff`: an `A`/`C`/`D` line.
#[derive(Serialize)]
pub(crate) struct ChangeRow {
    /// `A`, `C` or `D`.
    pub change: char,
    /// `/path`.
    pub path: String,
}

impl ChangeRow {
    /// The row of `change` at `path` (from the image root).
    pub(crate) fn new(change: Change, path: &[u8]) -> ChangeRow {
        ChangeRow {
            change: change.letter(),
            path: slash_path(path),
        }
    }
}

impl Text for [ChangeRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in self {
            writeln!(out, "{} {}", r.change, r.path)?;
        }
        Ok(())
    }
}

/// One change of `layers --diff`: a `diff` line with the entry's type.
#[derive(Serialize)]
pub(crate) struct LayerChangeRow {
    /// `A`, `C` or `D`.
    pub change: char,
    /// `/path`.
    pub path: String,
    /// The entry's type (`file`, `dir`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl LayerChangeRow {
    /// The row of `change` at `path` (from the image root), of `kind`.
    pub(crate) fn new(change: Change, path: &[u8], kind: Kind) -> LayerChangeRow {
        LayerChangeRow {
            change: change.letter(),
            path: slash_path(path),
            kind: kind_name(kind),
        }
    }
}

impl Text for [LayerChangeRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in self {
            writeln!(out, "{} {}", r.change, r.path)?;
        }
        Ok(())
    }
}

/// A layer of an image as `ls --json` names it.
#[derive(Serialize)]
pub(crate) struct LayerRef {
    /// The chain id.
    pub id: String,
    /// Index in the image, 0 = bottom.
    pub index: usize,
}

impl LayerRef {
    /// The layer at stack position `l` (0 = top) of `img`.
    pub(crate) fn new(img: &ImageLayers, l: u16) -> LayerRef {
        LayerRef {
            id: img.layers[l as usize].chain_id.clone(),
            index: img.layers.len() - 1 - l as usize,
        }
    }
}

/// One entry of `ls --json`. The metadata (`mode` to `mtime_nsec`) is
/// left out for whiteouts and opaque markers; `target` is there for
/// symlinks, `rdev` for devices.
#[derive(Serialize)]
pub(crate) struct LsRow {
    /// The stored owner group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The layer that hides the entry, if it is hidden.
    pub hidden_by: Option<LayerRef>,
    /// The layer of the entry shown.
    pub layer: LayerRef,
    /// Indexes of the layers the entry comes from, top first.
    pub layers: Vec<usize>,
    /// Permission bits (0o777 for a symlink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Nanoseconds of `mtime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime_nsec: Option<u32>,
    /// The last component of `path`.
    pub name: String,
    /// `/path`.
    pub path: String,
    /// Major and minor of a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<[u32; 2]>,
    /// Bytes of a file (0 for anything else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `visible`, `whiteout`, `opaque` or `shadowed`.
    pub status: &'static str,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The entry's type (`file`, `dir`, ..., or `opaque` for a marker).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The stored owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl LsRow {
    /// The row of `ls` item `i` of image `img`.
    pub(crate) fn new(img: &ImageLayers, i: &Item) -> LsRow {
        let (l, e) = i.source;
        let idx = &img.layers[l as usize].index;
        let ent = idx.entry(e);
        let n = img.layers.len();
        let name = i.path.rsplit(|&c| c == b'/').next().unwrap_or(&i.path);
        let meta = !matches!(i.status, Status::Whiteout | Status::Opaque);
        let symlink = ent.kind == Kind::Symlink;
        LsRow {
            gid: meta.then_some(ent.gid),
            hidden_by: i.hidden_by.map(|h| LayerRef::new(img, h)),
            layer: LayerRef::new(img, l),
            layers: i.layers.iter().map(|&x| n - 1 - x as usize).collect(),
            mode: meta.then_some(if symlink { 0o777 } else { ent.mode }),
            mtime: meta.then_some(ent.mtime),
            mtime_nsec: meta.then_some(ent.mtime_nsec),
            name: String::from_utf8_lossy(name).into_owned(),
            path: slash_path(&i.path),
            rdev: (meta && matches!(ent.kind, Kind::Char | Kind::Block))
                .then_some([ent.rdev_major, ent.rdev_minor]),
            size: meta.then_some(if ent.kind == Kind::File { ent.size } else { 0 }),
            status: i.status.as_str(),
            target: (meta && symlink)
                .then(|| String::from_utf8_lossy(idx.target(&ent)).into_owned()),
            kind: match i.status {
                Status::Opaque => "opaque",
                _ => kind_name(ent.kind),
            },
            uid: meta.then_some(ent.uid),
        }
    }
}

/// `INDEX:SHORTID` of stack position `l` (index 0 = bottom).
pub(crate) fn layer_label(img: &ImageLayers, l: u16) -> String {
    let n = img.layers.len();
    let layer = &img.layers[l as usize];
    format!("{}:{}", n - 1 - l as usize, short(&layer.chain_id))
}

/// `ls -l`'s `drwxr-xr-x`.
fn mode_string(kind: Kind, mode: u32) -> String {
    let t = match kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Char => 'c',
        Kind::Block => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
        Kind::Whiteout => 'w',
        Kind::File => '-',
    };
    let mut s = String::from(t);
    for (shift, special, ch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => ch,
            (true, false) => ch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One line of `ls` (`-l`: `long`) for item `i` of `img`, named by its
/// full path with `full_path`, else by its name.
pub(crate) fn ls_line(img: &ImageLayers, i: &Item, long: bool, full_path: bool) -> String {
    let (l, e) = i.source;
    let idx = &img.layers[l as usize].index;
    let ent = idx.entry(e);
    let shown = if full_path || i.path.is_empty() {
        slash_path(&i.path)
    } else {
        String::from_utf8_lossy(i.path.rsplit(|&c| c == b'/').next().unwrap_or(&i.path))
            .into_owned()
    };
    let mut name = shown;
    match (i.status, ent.kind) {
        (Status::Opaque | Status::Whiteout, _) => {}
        (_, Kind::Dir) => name.push('/'),
        (_, Kind::Symlink) => {
            name.push_str(" -> ");
            name.push_str(&String::from_utf8_lossy(idx.target(&ent)));
        }
        _ => {}
    }
    let note = match (i.status, i.hidden_by) {
        (Status::Visible, _) => String::new(),
        (s, Some(h)) => format!("  [{}, hidden by {}]", s.as_str(), layer_label(img, h)),
        (s, None) => format!("  [{}]", s.as_str()),
    };
    let label = layer_label(img, l);
    if !long {
        return format!("{label:<15}  {name}{note}");
    }
    let (kind, perm) = match i.status {
        Status::Opaque => (Kind::Whiteout, 0),
        _ if ent.kind == Kind::Symlink => (Kind::Symlink, 0o777),
        _ => (ent.kind, ent.mode),
    };
    let size = match ent.kind {
        Kind::File if i.status != Status::Opaque => ent.size.to_string(),
        Kind::Char | Kind::Block => format!("{},{}", ent.rdev_major, ent.rdev_minor),
        _ => "0".into(),
    };
    format!(
        "{}  {:>5}:{:<5}  {:>9}  {}  {label:<15}  {name}{note}",
        mode_string(kind, perm),
        ent.uid,
        ent.gid,
        size,
        &rfc3339(ent.mtime)[..19].replace('T', " "),
    )
}

impl Text for crate::image::check::Report {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for p in &self.problems {
            let subject = if p.kind == "image" || p.kind == "layer" {
                short(&p.subject)
            } else {
                &p.subject
            };
            write!(out, "{} {subject}: {}", p.kind, p.what)?;
            if !p.repaired.is_empty() {
                write!(out, " -> {}", p.repaired)?;
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "checked {} images, {} layers ({} hashed): {} problems",
            self.images,
            self.layers,
            human_size(self.bytes_hashed),
            self.problems.len()
        )
    }
}

/// One step of `why`: a layer and what it did to the path.
#[derive(Serialize)]
pub(crate) struct WhyRow {
    /// Layer number, 0 = bottom.
    pub index: usize,
    /// The layer's chain id.
    pub layer: String,
    /// What happened, one word (`created`, `recreated`, `modified`,
    /// `metadata`, `restated`, `replaced`, `deleted`, `hidden`,
    /// `useless-whiteout`).
    pub event: &'static str,
    /// The same in words.
    pub detail: String,
    /// The path the event is about: PATH itself or a parent directory.
    pub at: Option<String>,
    /// The history's `created_by` of the layer (empty if it has none).
    pub created_by: String,
}

impl WhyRow {
    /// The row of `step` of image `img`, whose layer was made by `created_by`.
    pub(crate) fn new(img: &ImageLayers, step: &Step, created_by: &str) -> WhyRow {
        let n = img.layers.len();
        let (event, detail, at): (&str, String, Option<&[u8]>) = match &step.event {
            Event::Created(k) => ("created", format!("created ({})", kind_name(*k)), None),
            Event::Recreated(k) => (
                "recreated",
                format!(
                    "re-created ({}) after a lower layer removed it",
                    kind_name(*k)
                ),
                None,
            ),
            Event::Modified { meta } if meta.is_empty() => {
                ("modified", "content changed".to_string(), None)
            }
            Event::Modified { meta } => (
                "modified",
                format!("content changed, and {}", meta.join(", ")),
                None,
            ),
            Event::MetadataOnly(meta) => (
                "metadata",
                format!("{} changed, content the same", meta.join(", ")),
                None,
            ),
            Event::Restated => ("restated", "re-stated unchanged".to_string(), None),
            Event::Replaced(a, b) => (
                "replaced",
                format!("replaced: {} -> {}", kind_name(*a), kind_name(*b)),
                None,
            ),
            Event::WhitedOut => ("deleted", "deleted by a whiteout".to_string(), None),
            Event::ParentWhitedOut(p) => (
                "deleted",
                format!("deleted with its parent {} (whiteout)", slash_path(p)),
                Some(p),
            ),
            Event::ParentReplaced(p) => (
                "deleted",
                format!(
                    "deleted: its parent {} became a non-directory",
                    slash_path(p)
                ),
                Some(p),
            ),
            Event::HiddenByOpaque { dir, then: None } => (
                "hidden",
                format!("hidden by the opaque directory {}", slash_path(dir)),
                Some(dir),
            ),
            Event::HiddenByOpaque { dir, then: Some(k) } => (
                "hidden",
                format!(
                    "lower content hidden by the opaque directory {}; this layer's {} shown",
                    slash_path(dir),
                    kind_name(*k)
                ),
                Some(dir),
            ),
            Event::UselessWhiteout => (
                "useless-whiteout",
                "a whiteout of it, with nothing below to hide".to_string(),
                None,
            ),
        };
        let layer = &img.layers[step.layer as usize];
        WhyRow {
            index: n - 1 - step.layer as usize,
            layer: layer.chain_id.clone(),
            event,
            detail,
            at: at.map(slash_path),
            created_by: created_by.to_string(),
        }
    }
}

impl Text for [WhyRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in self {
            writeln!(out, "{}:{}  {}", r.index, short(&r.layer), r.detail)?;
            if !r.created_by.is_empty() {
                writeln!(out, "    {}", r.created_by)?;
            }
        }
        Ok(())
    }
}

/// `tree`: one entry and, to the depth asked, its entries.
#[derive(Serialize)]
pub(crate) struct TreeRow {
    /// The entry's name (the first row: its path from the image root).
    pub name: String,
    /// Its type (`file`, `dir`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// File bytes, summed for a directory.
    pub size: u64,
    /// `A`, `C` or `D`: what the layer did to it; absent if nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<char>,
    /// A directory's entries (left out below the depth asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeRow>,
}

impl TreeRow {
    /// The rows of `t`, at `path`, `depth` levels deep (all if `None`).
    pub(crate) fn new(t: &TreeNode, path: &[u8], depth: Option<usize>) -> TreeRow {
        let mut r = TreeRow::of(t, depth);
        r.name = slash_path(path);
        r
    }

    fn of(t: &TreeNode, depth: Option<usize>) -> TreeRow {
        let children = match depth {
            Some(0) => Vec::new(),
            _ => t
                .children
                .iter()
                .map(|c| TreeRow::of(c, depth.map(|d| d - 1)))
                .collect(),
        };
        TreeRow {
            name: String::from_utf8_lossy(&t.name).into_owned(),
            kind: kind_name(t.kind),
            size: t.size,
            change: t.change.map(Change::letter),
            children,
        }
    }

    fn lines(&self, prefix: &str, last: bool, top: bool, out: &mut dyn Write) -> io::Result<()> {
        let mark = self.change.unwrap_or(' ');
        let slash = if self.kind == "dir" && !top { "/" } else { "" };
        let branch = match (top, last) {
            (true, _) => "",
            (false, true) => "└── ",
            (false, false) => "├── ",
        };
        writeln!(
            out,
            "{:>9} {mark} {prefix}{branch}{}{slash}",
            human_size(self.size),
            self.name
        )?;
        let inner = match (top, last) {
            (true, _) => String::new(),
            (false, true) => format!("{prefix}    "),
            (false, false) => format!("{prefix}│   "),
        };
        for (i, c) in self.children.iter().enumerate() {
            c.lines(&inner, i + 1 == self.children.len(), false, out)?;
        }
        Ok(())
    }
}

impl Text for TreeRow {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        self.lines("", true, true, out)
    }
}

/// One line of `diff --image A --image B`.
#[derive(Serialize)]
pub(crate) struct ImageChangeRow {
    /// `A`, `C`, `D`, or `R` (renamed).
    pub change: char,
    /// `/path` (for a rename, the new one).
    pub path: String,
    /// A rename's old path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// An added or changed file's other names in B (hard links).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

impl ImageChangeRow {
    /// The row of `c`, hard links looked up in view `b`.
    pub(crate) fn new<L: AsRef<Index>>(c: &ViewChange, b: &View<'_, L>) -> ImageChangeRow {
        match c {
            ViewChange::Renamed(from, to) => ImageChangeRow {
                change: 'R',
                path: slash_path(to),
                from: Some(slash_path(from)),
                links: Vec::new(),
            },
            ViewChange::Plain(ch, p) => ImageChangeRow {
                change: ch.letter(),
                path: slash_path(p),
                from: None,
                links: if *ch == Change::Deleted {
                    Vec::new()
                } else {
                    link_names(b, p).iter().map(|l| slash_path(l)).collect()
                },
            },
        }
    }
}

impl Text for [ImageChangeRow] {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in self {
            match &r.from {
                Some(f) => writeln!(out, "R {f} -> {}", r.path)?,
                None if r.links.is_empty() => writeln!(out, "{} {}", r.change, r.path)?,
                None => writeln!(
                    out,
                    "{} {}  (hard link of {})",
                    r.change,
                    r.path,
                    r.links.join(", ")
                )?,
            }
        }
        Ok(())
    }
}
