#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, unreachable_pub)]
//! layerfs: a userspace union filesystem for container image layers.
//!
//! See ARCHITECTURE.md for the codemap. Modules, from the top (the command
//! line) down to the system calls; each depends only on the ones below it
//! (`tests/tidy.rs` checks it):
//! [`cli`] is the command line (the `layerfs` subcommands, their text and
//! `--json` output; `src/main.rs` only calls it);
//! [`mount`] runs mounts (daemon lifecycle, mount options, fusermount);
//! [`registry`] pulls images from and pushes them to OCI registries;
//! [`image`] brings images in and takes them out of the store;
//! [`fuse`] adapts [`fs`], the filesystem without FUSE, to fuser;
//! [`upper`] is the read-write branch on disk; [`union`] holds the merge
//! rules and inspection of layers; [`layer`] is one layer (its index, the
//! whiteout grammar, directory and init layers); [`store`] keeps layers
//! and images on disk; [`oci`], [`bundle`] and [`idmap`] are pure (image
//! format details, OCI runtime bundles, owner mapping); [`sys`] holds the
//! system calls std lacks.

pub mod bundle;
pub mod cli;
pub mod fs;
pub mod fuse;
pub mod idmap;
pub mod image;
pub mod layer;
pub mod mount;
pub mod oci;
pub mod registry;
pub mod store;
pub mod sys;
pub mod union;
pub mod upper;
