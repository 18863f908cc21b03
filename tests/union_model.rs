//! Differential test of the union rules: random stacks of layer tars are
//! indexed and merged by the crate (`index::build_index`, `union::*`) and,
//! independently, by a small model written here from the Docker/OCI layer
//! rules; every path of the model's merged tree must resolve to the same
//! thing, every merged directory must list exactly the model's children, and
//! every other path must not resolve. A few hand-written stacks follow.
//!
//! The model extracts the layers, bottom to top, onto one tree, entry by
//! entry, as an extraction would, with the OCI rule that whiteouts only
//! delete what lower layers have:
//! - a parent that is missing is created (0755, root, mtime 0), a
//!   non-directory in the way is replaced by such a directory, an existing
//!   directory is kept with its metadata;
//! - an entry replaces what is at its path, with its subtree (lower content
//!   included), except that a directory over a directory only takes the new
//!   metadata;
//! - `.wh.NAME` deletes NAME and its subtree, and `.wh..wh..opq` the
//!   content of its directory, except what belongs to the same layer (OCI:
//!   "files that are present in the same layer as a whiteout file can only
//!   be hidden by whiteout files in subsequent layers"): what it wrote, and
//!   the directories it has entries in, which are deleted all the same and
//!   recreated with the defaults if the layer did not write them itself.
//!   Other `.wh..wh.*` names, and everything below them, are ignored;
//! - a hard link shares its target's inode; nlink of a non-directory is the
//!   number of names its inode has in its own layer (the crate's documented
//!   choice), whatever upper layers later hide.
//!
//! Long file: the union rules and the model that states them belong
//! together; and each file of tests/ is a test binary of its own, so a
//! split would be one more binary to build and link in CI.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::tars::{Meta, Tar};
use layerfs::layer::index::{build_index, Entry, Index, Kind};
use layerfs::union::{list_dir, resolve_path, root, Resolved, Source};
use proptest::prelude::*;
use tar::EntryType;

// ---------------------------------------------------------------------------
// The model

/// Metadata of a directory that exists only as the parent of deeper entries.
const IMPLICIT: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: 0,
};
const LINK: Meta = Meta {
    mode: 0o777,
    uid: 0,
    gid: 0,
    mtime: 1,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
}

/// A path as its components; `[]` is the root. Parents sort before children.
type MPath = Vec<Vec<u8>>;

fn join(p: &[Vec<u8>]) -> Vec<u8> {
    p.join(&b'/')
}

/// Whether `q` is `p` or lies below it.
fn at_or_below(p: &MPath, q: &MPath) -> bool {
    q.starts_with(p)
}

/// A node of the merged tree.
#[derive(Clone, Debug)]
struct MNode {
    body: Body,
    meta: Meta,
    /// Names of this inode in the layer that wrote it (non-directories).
    nlink: u32,
    /// The layer (counted from 1, bottom first) that last wrote this node;
    /// 0 for the initial root.
    layer: usize,
    /// The last layer that had it as a parent of one of its entries.
    touched: usize,
    inode: u64,
}

/// The merged tree, extracted layer by layer.
struct Model {
    tree: BTreeMap<MPath, MNode>,
    /// The layer being extracted.
    layer: usize,
    next_inode: u64,
}

impl Model {
    fn new() -> Model {
        let mut tree = BTreeMap::new();
        tree.insert(
            vec![],
            MNode {
                body: Body::Dir,
                meta: IMPLICIT,
                nlink: 1,
                layer: 0,
                touched: 0,
                inode: 0,
            },
        );
        Model {
            tree,
            layer: 0,
            next_inode: 1,
        }
    }

    fn node(&self, body: Body, meta: Meta) -> MNode {
        MNode {
            body,
            meta,
            nlink: 1,
            layer: self.layer,
            touched: self.layer,
            inode: 0,
        }
    }

    fn remove_tree(&mut self, p: &MPath) {
        self.tree.retain(|q, _| !at_or_below(p, q));
    }

    /// Makes `dir` and its ancestors directories of this layer: an existing
    /// directory is kept as it is, anything else replaced by a new one.
    fn make_dirs(&mut self, dir: &[Vec<u8>]) {
        for i in 1..=dir.len() {
            let p = dir[..i].to_vec();
            if let Some(n) = self.tree.get_mut(&p).filter(|n| n.body == Body::Dir) {
                n.touched = self.layer;
                continue;
            }
            self.remove_tree(&p);
            let n = self.node(Body::Dir, IMPLICIT);
            self.tree.insert(p, n);
        }
    }

    /// Extracts one entry (not a whiteout) at `path`.
    fn put(&mut self, path: &MPath, mut node: MNode) {
        self.make_dirs(&path[..path.len() - 1]);
        node.layer = self.layer;
        node.touched = self.layer;
        if let Some(old) = self.tree.get_mut(path) {
            if old.body == Body::Dir && node.body == Body::Dir {
                old.meta = node.meta;
                old.layer = node.layer;
                old.touched = node.layer;
                return;
            }
        }
        self.remove_tree(path);
        self.tree.insert(path.clone(), node);
    }

    fn add(&mut self, path: &MPath, body: Body, meta: Meta) {
        let mut node = self.node(body, meta);
        node.inode = self.next_inode;
        self.next_inode += 1;
        self.put(path, node);
    }

    /// Deletes `p` (or only what is below it) and its subtree, except what
    /// belongs to this layer: what it wrote, and the directories it has
    /// entries (whiteouts included) in. A directory this layer did not write
    /// itself is deleted all the same and recreated with the defaults.
    fn delete_lower(&mut self, p: &MPath, keep_p: bool) {
        let cur = self.layer;
        let paths: Vec<MPath> = self
            .tree
            .keys()
            .filter(|q| at_or_below(p, q) && !(keep_p && *q == p))
            .cloned()
            .collect();
        for q in paths {
            let ours = self
                .tree
                .range(q.clone()..)
                .take_while(|(r, _)| at_or_below(&q, r))
                .any(|(_, n)| n.layer == cur || n.touched == cur);
            if !ours {
                self.tree.remove(&q);
            } else if self.tree[&q].layer != cur {
                let n = self.node(Body::Dir, IMPLICIT);
                self.tree.insert(q, n);
            }
        }
    }

    fn whiteout(&mut self, path: &MPath) {
        self.make_dirs(&path[..path.len() - 1]);
        self.delete_lower(path, false);
    }

    fn opaque(&mut self, dir: &MPath) {
        self.make_dirs(dir);
        self.delete_lower(dir, true);
    }

    fn root_entry(&mut self, meta: Meta) {
        let layer = self.layer;
        let root = self.tree.get_mut(&vec![]).unwrap();
        root.meta = meta;
        root.layer = layer;
    }

    /// Non-directories written by this layer: possible hard link targets.
    fn linkable(&self) -> Vec<MPath> {
        self.tree
            .iter()
            .filter(|(_, n)| n.body != Body::Dir && n.layer == self.layer)
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn begin_layer(&mut self) {
        self.layer += 1;
    }

    /// Counts the names of each inode of the layer just extracted.
    fn end_layer(&mut self) {
        let cur = self.layer;
        let mut names: HashMap<u64, u32> = HashMap::new();
        for n in self.tree.values() {
            if n.body != Body::Dir && n.layer == cur {
                *names.entry(n.inode).or_default() += 1;
            }
        }
        for n in self.tree.values_mut() {
            if n.body != Body::Dir && n.layer == cur {
                n.nlink = names[&n.inode];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random layers

#[derive(Clone, Debug)]
enum What {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Whiteout,
    Opaque,
    /// A hard link to the n-th (mod count) non-directory of the layer so far.
    HardLink(usize),
    /// AUFS metadata (`.wh..wh.plnk/...`, `.wh..wh.aufs`): ignored.
    Aufs(bool),
    /// The `./` entry: the layer root's metadata.
    Root,
}

#[derive(Clone, Debug)]
struct Op {
    what: What,
    path: MPath,
    meta: Meta,
    /// Write the name with a `./` prefix.
    dot: bool,
    /// Write a directory's name with a trailing `/`.
    slash: bool,
}

/// Writes `ops` as a layer tar and extracts them into the model. Hard
/// links without a possible target are left out of both.
fn make_layer(ops: &[Op], model: &mut Model) -> Vec<u8> {
    let mut tar = Tar::new();
    model.begin_layer();
    for op in ops {
        let name = |p: &[Vec<u8>], suffix: &[u8]| {
            let mut n = if op.dot { b"./".to_vec() } else { vec![] };
            n.extend_from_slice(&join(p));
            n.extend_from_slice(suffix);
            n
        };
        let (parent, last) = match op.path.split_last() {
            Some((last, parent)) => (parent.to_vec(), last.clone()),
            None => (vec![], vec![]),
        };
        let prefixed = |p: &[Vec<u8>], leaf: &[u8]| {
            let mut n = name(p, b"");
            if !p.is_empty() {
                n.push(b'/');
            }
            n.extend_from_slice(leaf);
            n
        };
        match &op.what {
            What::File(data) => {
                tar.entry(&name(&op.path, b""), EntryType::Regular, data, b"", op.meta);
                model.add(&op.path, Body::File(data.clone()), op.meta);
            }
            What::Dir => {
                let slash: &[u8] = if op.slash { b"/" } else { b"" };
                tar.entry(
                    &name(&op.path, slash),
                    EntryType::Directory,
                    b"",
                    b"",
                    op.meta,
                );
                model.add(&op.path, Body::Dir, op.meta);
            }
            What::Symlink(target) => {
                let n = name(&op.path, b"");
                tar.entry(&n, EntryType::Symlink, b"", target, op.meta);
                model.add(&op.path, Body::Symlink(target.clone()), op.meta);
            }
            What::HardLink(k) => {
                let cands = model.linkable();
                if cands.is_empty() {
                    continue;
                }
                let target = cands[k % cands.len()].clone();
                let mut link = if op.slash { b"./".to_vec() } else { vec![] };
                link.extend_from_slice(&join(&target));
                // The link's own header metadata is ignored: it shares its
                // target's inode.
                tar.entry(&name(&op.path, b""), EntryType::Link, b"", &link, op.meta);
                let node = model.tree[&target].clone();
                model.put(&op.path, node);
            }
            What::Whiteout => {
                let mut leaf = b".wh.".to_vec();
                leaf.extend_from_slice(&last);
                tar.entry(
                    &prefixed(&parent, &leaf),
                    EntryType::Regular,
                    b"",
                    b"",
                    op.meta,
                );
                model.whiteout(&op.path);
            }
            What::Opaque => {
                let n = prefixed(&op.path, b".wh..wh..opq");
                tar.entry(&n, EntryType::Regular, b"", b"", op.meta);
                model.opaque(&op.path);
            }
            What::Aufs(plnk) => {
                let n = if *plnk {
                    let mut leaf = b".wh..wh.plnk/".to_vec();
                    leaf.extend_from_slice(&last);
                    prefixed(&parent, &leaf)
                } else {
                    prefixed(&parent, b".wh..wh.aufs")
                };
                tar.entry(&n, EntryType::Regular, b"aufs", b"", op.meta);
            }
            What::Root => {
                tar.entry(b"./", EntryType::Directory, b"", b"", op.meta);
                model.root_entry(op.meta);
            }
        }
    }
    model.end_layer();
    tar.finish()
}

fn arb_meta() -> impl Strategy<Value = Meta> {
    (
        prop::sample::select(vec![0o644, 0o755, 0o700, 0o600, 0o4755, 0o1777, 0o2750, 0]),
        prop::sample::select(vec![0u64, 1, 1000, 65534]),
        prop::sample::select(vec![0u64, 2, 100]),
        prop::sample::select(vec![0u64, 1, 1_600_000_000, 1_700_000_123]),
    )
        .prop_map(|(mode, uid, gid, mtime)| Meta {
            mode,
            uid,
            gid,
            mtime,
        })
}

fn arb_path(min: usize, max: usize) -> impl Strategy<Value = MPath> {
    prop::collection::vec(
        prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]),
        min..=max,
    )
}

fn arb_what() -> impl Strategy<Value = What> {
    prop_oneof![
        5 => prop::collection::vec(any::<u8>(), 0..700).prop_map(What::File),
        4 => Just(What::Dir),
        1 => prop::sample::select(vec![b"a".to_vec(), b"../x".to_vec(), b"/etc/b".to_vec()])
            .prop_map(What::Symlink),
        3 => Just(What::Whiteout),
        2 => Just(What::Opaque),
        2 => any::<usize>().prop_map(What::HardLink),
        1 => any::<bool>().prop_map(What::Aufs),
        1 => Just(What::Root),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    (
        arb_what(),
        arb_path(1, 3),
        arb_path(0, 2),
        arb_meta(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(what, path, dir, meta, dot, slash)| {
            let path = if matches!(what, What::Opaque) {
                dir
            } else {
                path
            };
            Op {
                what,
                path,
                meta,
                dot,
                slash,
            }
        })
}

/// A stack of layers, bottom first.
fn arb_stack() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(arb_op(), 0..10), 1..=5)
}

// ---------------------------------------------------------------------------
// Comparing the crate with the model

struct Layer(Index);

impl AsRef<Index> for Layer {
    fn as_ref(&self) -> &Index {
        &self.0
    }
}

/// A stack as the crate sees it: indexes and tars, top first.
struct Stack {
    layers: Vec<Layer>,
    tars: Vec<Vec<u8>>,
}

impl Stack {
    /// `tars` bottom first, as layers are applied.
    fn new(tars_bottom_first: Vec<Vec<u8>>) -> Stack {
        let mut layers = Vec::new();
        let mut tars = Vec::new();
        for tar in tars_bottom_first.into_iter().rev() {
            let (bytes, _) = build_index(&tar).expect("build_index");
            layers.push(Layer(
                Index::from_bytes(bytes, "layer").expect("from_bytes"),
            ));
            tars.push(tar);
        }
        Stack { layers, tars }
    }

    fn entry(&self, (l, e): Source) -> Entry {
        self.layers[l as usize].0.entry(e)
    }

    fn resolve(&self, path: &str) -> Option<Resolved> {
        resolve_path(&self.layers, path.as_bytes())
    }

    fn meta(&self, r: &Resolved) -> (Kind, Meta) {
        let e = self.entry(r.meta_source(&self.layers));
        let m = Meta {
            mode: e.mode,
            uid: e.uid.into(),
            gid: e.gid.into(),
            mtime: e.mtime as u64,
        };
        (e.kind, m)
    }

    fn content(&self, r: &Resolved) -> &[u8] {
        let Resolved::Leaf(src) = r else {
            panic!("not a leaf: {r:?}")
        };
        let e = self.entry(*src);
        assert_eq!(e.kind, Kind::File);
        &self.tars[src.0 as usize][e.data_off as usize..(e.data_off + e.size) as usize]
    }

    fn list(&self, path: &str) -> Vec<String> {
        let Some(Resolved::Dir(srcs)) = self.resolve(path) else {
            panic!("{path} is not a merged directory")
        };
        list_dir(&self.layers, &srcs)
            .into_iter()
            .map(|(n, _)| String::from_utf8(n).unwrap())
            .collect()
    }
}

fn show(p: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&join(p)).into_owned()
}

/// Every difference between the crate's merged view and the model's.
fn differences(stack: &Stack, model: &BTreeMap<MPath, MNode>) -> Vec<String> {
    let mut diffs = Vec::new();
    let layers = &stack.layers;
    for (p, n) in model {
        let ps = show(p);
        let Some(r) = resolve_path(layers, &join(p)) else {
            diffs.push(format!(
                "{ps:?}: model has {:?}, crate resolves nothing",
                n.body
            ));
            continue;
        };
        let src = r.meta_source(layers);
        let e = stack.entry(src);
        let (kind, meta) = stack.meta(&r);
        if meta != n.meta {
            diffs.push(format!("{ps:?}: metadata {meta:?}, model {:?}", n.meta));
        }
        match (&n.body, &r) {
            (Body::Dir, Resolved::Dir(srcs)) => {
                if kind != Kind::Dir {
                    diffs.push(format!("{ps:?}: meta source is a {kind:?}"));
                }
                let want: Vec<(&Vec<u8>, bool)> = model
                    .range(p.clone()..)
                    .filter(|(q, _)| q.len() == p.len() + 1 && q.starts_with(p))
                    .map(|(q, c)| (q.last().unwrap(), c.body == Body::Dir))
                    .collect();
                let listing = list_dir(layers, srcs);
                let got: Vec<(&Vec<u8>, bool)> =
                    listing.iter().map(|(n, r)| (n, r.is_dir())).collect();
                if got != want {
                    diffs.push(format!("{ps:?}: lists {got:?}, model {want:?}"));
                }
                // A listing agrees with a lookup of each name.
                for (name, lr) in &listing {
                    let mut child = p.clone();
                    child.push(name.clone());
                    let looked = resolve_path(layers, &join(&child));
                    if looked.as_ref() != Some(lr) {
                        diffs.push(format!(
                            "{:?}: listed as {lr:?}, looked up as {looked:?}",
                            show(&child)
                        ));
                    }
                }
            }
            (Body::File(data), Resolved::Leaf(_)) => {
                if kind != Kind::File {
                    diffs.push(format!("{ps:?}: {kind:?}, model a file"));
                } else {
                    if stack.content(&r) != &data[..] {
                        diffs.push(format!("{ps:?}: content differs"));
                    }
                    if e.size != data.len() as u64 {
                        diffs.push(format!("{ps:?}: size {}", e.size));
                    }
                }
                if e.nlink != n.nlink {
                    diffs.push(format!("{ps:?}: nlink {}, model {}", e.nlink, n.nlink));
                }
            }
            (Body::Symlink(t), Resolved::Leaf((l, _))) => {
                if kind != Kind::Symlink {
                    diffs.push(format!("{ps:?}: {kind:?}, model a symlink"));
                } else if stack.layers[*l as usize].0.target(&e) != &t[..] {
                    diffs.push(format!("{ps:?}: symlink target differs"));
                }
                if e.nlink != n.nlink {
                    diffs.push(format!("{ps:?}: nlink {}, model {}", e.nlink, n.nlink));
                }
            }
            (b, r) => diffs.push(format!("{ps:?}: crate {r:?}, model {b:?}")),
        }
    }
    // Every other path of the alphabet, three deep, is absent.
    let names = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
    let mut paths: Vec<MPath> = vec![vec![]];
    for depth in 0..3 {
        let next: Vec<MPath> = paths
            .iter()
            .filter(|p| p.len() == depth)
            .flat_map(|p| {
                names.iter().map(move |n| {
                    let mut q = p.clone();
                    q.push(n.clone());
                    q
                })
            })
            .collect();
        paths.extend(next);
    }
    for p in paths {
        if !model.contains_key(&p) {
            if let Some(r) = resolve_path(layers, &join(&p)) {
                diffs.push(format!(
                    "{:?}: absent from the model, crate {r:?}",
                    show(&p)
                ));
            }
        }
    }
    diffs
}

fn run_stack(stack_ops: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    let tars: Vec<Vec<u8>> = stack_ops
        .iter()
        .map(|ops| make_layer(ops, &mut model))
        .collect();
    let stack = Stack::new(tars);
    let diffs = differences(&stack, &model.tree);
    prop_assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn union_matches_model(stack in arb_stack()) {
        run_stack(&stack)?;
    }
}

// ---------------------------------------------------------------------------
// Hand-written stacks

fn m(mode: u32, uid: u64) -> Meta {
    Meta {
        mode,
        uid,
        gid: uid,
        mtime: 1_000 + uid,
    }
}

const F: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1,
};

fn is_dir(stack: &Stack, path: &str) -> bool {
    stack.resolve(path).is_some_and(|r| r.is_dir())
}

#[test]
fn whiteout_of_a_directory() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 1))
        .file_m("d/x", b"x", F)
        .file_m("d/y/z", b"z", F)
        .file_m("keep", b"k", F)
        .finish();
    let top = Tar::new().file_m(".wh.d", b"", F).finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.resolve("d"), None);
    assert_eq!(s.resolve("d/x"), None);
    assert_eq!(s.resolve("d/y/z"), None);
    assert_eq!(s.list(""), ["keep"]);
}

#[test]
fn opaque_directory() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 1))
        .file_m("d/x", b"x", F)
        .dir_m("d/sub/", m(0o700, 1))
        .file_m("d/sub/y", b"y", F)
        .file_m("e/kept", b"k", F)
        .finish();
    let top = Tar::new()
        .dir_m("d/", m(0o750, 2))
        .file_m("d/.wh..wh..opq", b"", F)
        .file_m("d/new", b"n", F)
        .file_m("e/also", b"a", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.list("d"), ["new"]);
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, m(0o750, 2));
    assert_eq!(s.resolve("d/x"), None);
    assert_eq!(s.resolve("d/sub/y"), None);
    assert_eq!(s.list("e"), ["also", "kept"]);
    assert!(matches!(s.resolve("d"), Some(Resolved::Dir(v)) if v.len() == 1));
}

#[test]
fn file_dir_file_across_three_layers() {
    let l0 = Tar::new().file_m("p", b"one", m(0o600, 1)).finish();
    let l1 = Tar::new()
        .dir_m("p/", m(0o711, 2))
        .file_m("p/q", b"q", F)
        .finish();
    let l2 = Tar::new().file_m("p", b"three", m(0o640, 3)).finish();

    let s = Stack::new(vec![l0.clone(), l1.clone()]);
    assert!(is_dir(&s, "p"));
    assert_eq!(s.meta(&s.resolve("p").unwrap()), (Kind::Dir, m(0o711, 2)));
    assert_eq!(s.list("p"), ["q"]);

    let s = Stack::new(vec![l0, l1, l2]);
    let r = s.resolve("p").unwrap();
    assert_eq!(
        r,
        Resolved::Leaf((0, s.layers[0].0.lookup_path(b"p").unwrap()))
    );
    assert_eq!(s.content(&r), b"three");
    assert_eq!(s.meta(&r), (Kind::File, m(0o640, 3)));
    assert_eq!(s.resolve("p/q"), None);
    assert_eq!(s.list(""), ["p"]);
}

#[test]
fn implicit_dir_keeps_lower_metadata() {
    let bottom = Tar::new()
        .dir_m("./", m(0o750, 9))
        .dir_m("d/", m(0o700, 5))
        .file_m("d/old", b"o", F)
        .finish();
    let top = Tar::new()
        .file_m("d/new", b"n", F)
        .file_m("e/f", b"", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.meta(&s.resolve("d").unwrap()), (Kind::Dir, m(0o700, 5)));
    assert_eq!(s.meta(&s.resolve("").unwrap()), (Kind::Dir, m(0o750, 9)));
    assert_eq!(s.meta(&root(&s.layers)).1, m(0o750, 9));
    assert_eq!(s.list("d"), ["new", "old"]);
    // A directory no lower layer has gets the implicit defaults.
    assert_eq!(s.meta(&s.resolve("e").unwrap()).1, IMPLICIT);
}

#[test]
fn non_directory_above_a_directory_hides_it() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 5))
        .file_m("d/x", b"x", F)
        .dir_m("e/", m(0o700, 5))
        .file_m("e/y", b"y", F)
        .finish();
    let top = Tar::new()
        .symlink_m("d", "elsewhere", LINK)
        .file_m("e", b"a file now", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    let d = s.resolve("d").unwrap();
    assert_eq!(s.meta(&d).0, Kind::Symlink);
    assert_eq!(s.resolve("d/x"), None);
    assert_eq!(s.content(&s.resolve("e").unwrap()), b"a file now");
    assert_eq!(s.resolve("e/y"), None);
    let root_list = match s.resolve("").unwrap() {
        Resolved::Dir(srcs) => list_dir(&s.layers, &srcs),
        r => panic!("{r:?}"),
    };
    assert!(root_list.iter().all(|(_, r)| !r.is_dir()));
}

#[test]
fn directory_above_a_non_directory_replaces_it() {
    let bottom = Tar::new().file_m("d", b"file", F).finish();
    let top = Tar::new().file_m("d/x", b"x", F).finish();
    let s = Stack::new(vec![bottom, top]);
    // Implicit, and nothing below to take metadata from: the defaults.
    assert_eq!(s.meta(&s.resolve("d").unwrap()), (Kind::Dir, IMPLICIT));
    assert_eq!(s.list("d"), ["x"]);
}

#[test]
fn whiteout_then_recreate_in_one_layer() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 5))
        .file_m("d/old", b"o", F)
        .finish();
    let top = Tar::new()
        .file_m(".wh.d", b"", F)
        .file_m("d/new", b"n", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.list("d"), ["new"]);
    // The lower d was deleted: the recreated one has the implicit defaults.
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, IMPLICIT);
}

/// `.wh..wh..opq` without an entry for its directory hides the lower content
/// but not the lower directory itself, which keeps its metadata.
#[test]
fn opaque_marker_alone_keeps_lower_metadata() {
    let l0 = Tar::new()
        .dir_m("./", m(0o750, 9))
        .dir_m("d/", m(0o700, 5))
        .file_m("d/x", b"x", F)
        .file_m("top", b"t", F)
        .finish();
    let l1 = Tar::new().file_m("d/y", b"y", F).finish();
    let l2 = Tar::new()
        .file_m("d/.wh..wh..opq", b"", F)
        .file_m("d/z", b"z", F)
        .finish();
    let s = Stack::new(vec![l0.clone(), l1.clone(), l2.clone()]);
    assert_eq!(s.list(""), ["d", "top"]);
    assert_eq!(s.list("d"), ["z"]);
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, m(0o700, 5));
    assert_eq!(s.resolve("d/x"), None);
    assert_eq!(s.resolve("d/y"), None);

    // The same for the root; d is then gone with the rest of the root's
    // lower content, and recreated by the top layer with the defaults.
    let l3 = Tar::new()
        .file_m(".wh..wh..opq", b"", F)
        .file_m("d/w", b"w", F)
        .finish();
    let s = Stack::new(vec![l0, l1, l2, l3]);
    assert_eq!(s.list(""), ["d"]);
    assert_eq!(s.list("d"), ["w"]);
    assert_eq!(s.meta(&s.resolve("").unwrap()).1, m(0o750, 9));
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, IMPLICIT);
    assert_eq!(s.resolve("top"), None);
}

/// A whiteout hides the lower layers only, never an entry of its own layer.
#[test]
fn whiteout_keeps_the_same_layers_entry() {
    let bottom = Tar::new()
        .file_m("f", b"lower", F)
        .dir_m("d/", m(0o700, 5))
        .file_m("d/lower", b"l", F)
        .finish();
    let top = Tar::new()
        .file_m("f", b"upper", F)
        .file_m(".wh.f", b"", F)
        .file_m("d/upper", b"u", F)
        .file_m(".wh.d", b"", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.content(&s.resolve("f").unwrap()), b"upper");
    assert_eq!(s.list("d"), ["upper"]);
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, IMPLICIT);
}

/// A whiteout, then a file, then a directory of the same name, in one
/// layer: the lower directory stays deleted.
#[test]
fn whiteout_file_then_directory_in_one_layer() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 5))
        .file_m("d/lower", b"l", F)
        .finish();
    let top = Tar::new()
        .file_m(".wh.d", b"", F)
        .file_m("d", b"", F)
        .dir_m("d/", m(0o711, 6))
        .file_m("d/upper", b"u", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.list("d"), ["upper"]);
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, m(0o711, 6));
}

/// Extraction order within a layer: a file replacing the lower directory
/// deletes it, so a directory made later in the same layer starts empty.
#[test]
fn file_then_directory_in_one_layer_hides_lower_directory() {
    let bottom = Tar::new()
        .dir_m("d/", m(0o700, 5))
        .file_m("d/lower", b"l", F)
        .dir_m("e/", m(0o700, 5))
        .file_m("e/lower", b"l", F)
        .finish();
    let top = Tar::new()
        .file_m("d", b"", F)
        .dir_m("d/", m(0o711, 6))
        .symlink_m("e", "x", LINK)
        .file_m("e/upper", b"u", F)
        .finish();
    let s = Stack::new(vec![bottom, top]);
    assert_eq!(s.list("d"), Vec::<String>::new());
    assert_eq!(s.meta(&s.resolve("d").unwrap()).1, m(0o711, 6));
    assert_eq!(s.list("e"), ["upper"]);
    assert_eq!(s.meta(&s.resolve("e").unwrap()).1, IMPLICIT);
}
