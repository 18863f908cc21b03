//! layerfs: a userspace union filesystem for container image layers.
//!
//! See ARCHITECTURE.md for the codemap. Modules, from pure to I/O:
//! [`union`] and [`index`] hold the merge rules and the layer index format;
//! [`inspect`] names the layer each entry comes from and accounts layers;
//! [`image`] parses image formats; [`store`] keeps layers and images on disk;
//! [`import`] brings archives in, [`export`] takes them out; [`commit`]
//! turns a read-write branch into a layer; [`vfs`] is the filesystem without FUSE;
//! [`fuse`] adapts it to fuser; [`daemon`] runs mounts; [`bundle`] and
//! [`idmap`] are the pure parts of OCI bundles and owner mapping;
//! [`initlayer`] is the virtual Docker init layer.

pub mod branches;
pub mod bundle;
pub mod commit;
pub mod daemon;
pub mod dirlayer;
pub mod export;
pub mod fuse;
pub mod fusermount;
pub mod idmap;
pub mod image;
pub mod import;
pub mod index;
pub mod initlayer;
pub mod inspect;
pub mod store;
pub mod sys;
pub mod tarw;
pub mod union;
pub mod upper;
pub mod vfs;
