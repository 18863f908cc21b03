//! Layers: one image layer as a mount reads it ([`Layer`]: its index and
//! its tar, mapped), and everything below it: the whiteout grammar
//! ([`whiteout`]), the index format ([`index`]), a plain directory as a
//! layer ([`dir`]) and the Docker init layer ([`init`]).

pub mod dir;
pub mod index;
pub mod init;
pub mod whiteout;

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memmap2::Mmap;

use crate::sys;
use index::{Entry, Index};

/// One layer as the mount sees it: its index and its tar blob, both mapped
/// (or, for a virtual layer such as the init layer, both in memory; or,
/// for a branch of `mount-branches`, an index of a directory walk).
pub struct Layer {
    /// The layer's chain id (for a directory layer, its name; for the init
    /// layer, a fixed name).
    pub chain_id: String,
    /// The layer's index, validated.
    pub index: Index,
    blob: Option<Mmap>,
    /// The tar of an in-memory layer.
    mem: Vec<u8>,
    /// The tar itself, for in-kernel copies (`copy_file_range`) at copy-up;
    /// `None` for an in-memory layer.
    pub(crate) file: Option<File>,
    /// A directory layer (`mount-branches`): file data is read from
    /// `dir/<entry path>`, not from a tar.
    pub(crate) dir: Option<PathBuf>,
}

impl AsRef<Index> for Layer {
    fn as_ref(&self) -> &Index {
        &self.index
    }
}

impl Layer {
    /// Opens a stored layer directory (`index` + `layer.tar`).
    pub fn open(dir: &Path, chain_id: &str) -> Result<Layer> {
        Layer::open_with(dir, chain_id, None)
    }

    /// Opens the index file of the layer in `dir` and asks the kernel to
    /// start reading it ([`Layer::open_with`] then finds it in memory or
    /// on its way): issued for every layer of a deep image first, the
    /// reads are in flight together instead of one after the other.
    pub fn prefetch(dir: &Path) -> Option<File> {
        let f = File::open(dir.join("index")).ok()?;
        sys::prefetch(&f, 0, 0);
        Some(f)
    }

    /// `open`, with the index file already open (`prefetch`) if given.
    pub fn open_with(dir: &Path, chain_id: &str, index_file: Option<File>) -> Result<Layer> {
        let ipath = dir.join("index");
        let index = match index_file {
            Some(f) => Index::open_file(&f, &ipath)?,
            None => Index::open(&ipath)?,
        };
        let tar = dir.join("layer.tar");
        let f = File::open(&tar).with_context(|| format!("opening {}", tar.display()))?;
        let len = f.metadata()?.len();
        if len != index.tar_size() {
            anyhow::bail!(
                "{}: is {len} bytes but its index was built for {} bytes (corrupt store)",
                tar.display(),
                index.tar_size()
            );
        }
        // SAFETY: layer blobs are immutable once published (see `store`);
        // the map is read-only.
        let blob = if len == 0 {
            None
        } else {
            Some(sys::map_readonly(&f)?)
        };
        Ok(Layer {
            chain_id: chain_id.to_string(),
            index,
            blob,
            mem: Vec::new(),
            file: Some(f),
            dir: None,
        })
    }

    /// A plain directory as a layer (see [`crate::layer::dir`]), each of
    /// its directories listed when first looked up or listed
    /// ([`dir::index_directory_lazy`]); file data read by path.
    /// `root` must be canonical (absolute, no symlink on the way: see
    /// `mount::Canonicalizer`): its files are opened by `root` + path.
    pub fn directory(name: &str, root: &Path) -> Result<Layer> {
        debug_assert!(root.is_absolute(), "{}", root.display());
        let root = root.to_path_buf();
        let index = dir::index_directory_lazy(&root, true)
            .with_context(|| format!("branch {}", root.display()))?;
        Ok(Layer {
            chain_id: name.to_string(),
            index,
            blob: None,
            mem: Vec::new(),
            file: None,
            dir: Some(root),
        })
    }

    /// The directory a directory layer reads (`None` for a layer tar).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The file of entry `i` of a directory layer (`None` for a layer
    /// tar); the caller names the entry in its error.
    pub(crate) fn open_entry(&self, i: u32) -> std::io::Result<Option<File>> {
        let Some(root) = &self.dir else {
            return Ok(None);
        };
        let p = root.join(std::ffi::OsStr::from_bytes(&self.index.path(i)));
        // Any length: a branch path can be longer than the mount's.
        let f = sys::open(&p, libc::O_RDONLY | libc::O_NOFOLLOW, 0);
        f.map(Some).map_err(std::io::Error::from_raw_os_error)
    }

    /// A layer held in memory: `index` built from `tar`.
    pub fn in_memory(chain_id: &str, index: Index, tar: Vec<u8>) -> Layer {
        Layer {
            chain_id: chain_id.to_string(),
            index,
            blob: None,
            mem: tar,
            file: None,
            dir: None,
        }
    }

    /// The layer tar's bytes (mapped, or in memory).
    pub(crate) fn data(&self) -> &[u8] {
        self.blob.as_deref().unwrap_or(&self.mem)
    }
}

/// Threads listing the directories of one merged directory at once (see
/// [`list_ahead`]).
const LISTERS: usize = 16;

/// Lists, in parallel, the directories among `srcs` that lazy directory
/// layers have not listed yet, before the union rules read them one after
/// the other. A cold listing waits on the disk, not on a CPU, so more
/// listings in flight pay even on 2 CPUs (README, benchmark section: the
/// merged root of 128 branches, cold).
pub fn list_ahead(layers: &[Layer], srcs: &[(u16, u32)]) {
    let todo: Vec<(&Index, Entry)> = srcs
        .iter()
        .map(|&(l, d)| (&layers[l as usize].index, d))
        .filter(|(idx, _)| idx.is_lazy())
        .map(|(idx, d)| (idx, idx.entry(d)))
        .filter(|(idx, e)| idx.unlisted(e))
        .collect();
    if todo.len() < 2 {
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..LISTERS.min(todo.len()) {
            s.spawn(|| {
                while let Some((idx, e)) =
                    todo.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    idx.children(e);
                }
            });
        }
    });
}

/// The layers of one image, opened, top first (union stack positions):
/// what a mount serves, export flattens and the debugging commands read.
/// Each tar is mapped once, by its [`Layer`].
pub struct LayerStack {
    /// Top layer first.
    pub layers: Vec<Layer>,
}

impl LayerStack {
    /// Opens every layer of image `id`.
    ///
    /// Opening a layer is mostly waiting for the disk (the index file,
    /// read in full by its validation), so every index file is opened and
    /// its reading started ([`Layer::prefetch`]) before the first is
    /// validated: the reads of a deep image are then in flight together.
    pub fn open(store: &crate::store::Store, id: &str) -> Result<LayerStack> {
        let rec = store.image(id)?;
        let dirs: Vec<(PathBuf, &String)> = rec
            .layers
            .iter()
            .rev()
            .map(|c| (store.layer_dir(c), c))
            .collect();
        let files: Vec<_> = dirs.iter().map(|(d, _)| Layer::prefetch(d)).collect();
        let layers = dirs
            .iter()
            .zip(files)
            .map(|((d, c), f)| Layer::open_with(d, c, f).with_context(|| format!("layer {c}")))
            .collect::<Result<_>>()?;
        Ok(LayerStack { layers })
    }

    /// Each layer's tar (`None` for an empty one), top first.
    pub fn tar_slices(&self) -> Vec<Option<&[u8]>> {
        self.layers
            .iter()
            .map(|l| Some(l.data()).filter(|d| !d.is_empty()))
            .collect()
    }

    /// `size` bytes at `off` of layer `l`'s tar (the index checked that
    /// every file's data lies inside its tar).
    pub fn data(&self, l: u16, off: u64, size: u64) -> &[u8] {
        &self.layers[l as usize].data()[off as usize..(off + size) as usize]
    }
}
