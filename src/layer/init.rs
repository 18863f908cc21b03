//! The Docker init layer (`graph_unix.go`'s `SetupInitLayer`) as a virtual
//! read-only layer built in memory: the mount points and placeholder files
//! an OCI runtime bind-mounts over, so that it never has to create them in
//! the image (which a read-only or rootless mount would refuse).
//!
//! It is an ordinary layer tar, indexed by [`crate::layer::index::build_index`],
//! so the union rules of store layers apply unchanged. `/`, `/etc` and
//! `/dev` have no entries of their own (they are implicit directories):
//! the image's metadata for them shows, not the init layer's.

use anyhow::{Context, Result};

use crate::layer::index::Index;
use crate::layer::Layer;

/// The name the mount gives the init layer (its provenance "chain id").
pub const CHAIN_ID: &str = "init-layer";

/// (path, what): a directory, an empty file, or a symlink to the target.
pub const ENTRIES: &[(&str, Entry)] = &[
    ("dev/pts", Entry::Dir),
    ("dev/shm", Entry::Dir),
    ("proc", Entry::Dir),
    ("sys", Entry::Dir),
    (".dockerenv", Entry::File),
    ("etc/resolv.conf", Entry::File),
    ("etc/hosts", Entry::File),
    ("etc/hostname", Entry::File),
    ("dev/console", Entry::File),
    ("etc/mtab", Entry::Symlink("/proc/mounts")),
];

/// What the init layer puts at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An empty directory (a mount point).
    Dir,
    /// An empty regular file (a bind-mount target).
    File,
    /// A symlink to this target.
    Symlink(&'static str),
}

/// The init layer as a tar (deterministic: root-owned, mtime 0).
pub fn tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in ENTRIES {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        match e {
            Entry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            }
            Entry::File => {
                // Docker's setupInitLayer: os.OpenFile(.., O_CREATE, 0755).
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
            }
            Entry::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(t).expect("short target");
            }
        }
        h.set_path(path).expect("short path");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("in-memory tar");
    }
    b.into_inner().expect("in-memory tar")
}

/// The init layer, ready to stack on top of an image's layers.
pub fn layer() -> Result<Layer> {
    let tar = tar();
    let (idx, _) = crate::layer::index::build_index(&tar).context("indexing the init layer")?;
    let index = Index::from_bytes(idx, CHAIN_ID).context("the init layer's index")?;
    Ok(Layer::in_memory(CHAIN_ID, index, tar))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::index::Kind;
    use crate::union::{resolve_child, root, Resolved};

    #[test]
    fn init_layer_entries() {
        let l = layer().unwrap();
        let layers = vec![l];
        let Resolved::Dir(rs) = root(&layers) else {
            panic!("root is a directory")
        };
        let look = |srcs: &[crate::union::Source], name: &[u8]| resolve_child(&layers, srcs, name);
        for (name, kind) in [
            (&b"proc"[..], Kind::Dir),
            (b"sys", Kind::Dir),
            (b".dockerenv", Kind::File),
        ] {
            let r = look(&rs, name).unwrap();
            let src = r.meta_source(&layers);
            assert_eq!(layers[0].index.entry(src.1).kind, kind);
        }
        let Some(Resolved::Dir(etc)) = look(&rs, b"etc") else {
            panic!("etc is a directory")
        };
        let mtab = look(&etc, b"mtab").unwrap();
        let src = mtab.meta_source(&layers);
        let e = layers[0].index.entry(src.1);
        assert_eq!(e.kind, Kind::Symlink);
        assert_eq!(layers[0].index.target(&e), b"/proc/mounts");
        // /etc and /dev are implicit: the image's metadata shows for them.
        assert!(layers[0].index.entry(etc[0].1).is_implicit());
    }
}
