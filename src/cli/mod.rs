//! The `layerfs` command line: the clap definitions ([`Cli`]) and [`run`],
//! which calls one function per command. The commands are grouped by
//! concern: `store` (import, images, history, inspect, rm, tag), `mount`
//! (mount, mount-branches, bundle, umount), `registry` (pull, push, login,
//! logout),
//! `inspect` (ls, layers, diff),
//! `pack` (commit, export, save); `branch` finds the branch of a `diff` or
//! `commit` target and what it lies on; `render` holds the output rows
//! (`--json` and text). The work itself is done by the modules below.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::image::export::SaveFormat;
use crate::store::{default_root, Store};

mod branch;
mod explore;
mod inspect;
mod mount;
mod pack;
mod registry;
mod render;
mod store;
mod waste;

// Doc comments on the clap types become help text: the argument and
// command structs below have plain comments instead (the help of a
// command is its `Cmd` variant's doc comment).

/// The parsed command line: global options and the command.
#[derive(Parser)]
#[command(
    name = "layerfs",
    version,
    about = "A userspace union filesystem for container image layers"
)]
pub struct Cli {
    /// Store directory (default: $LAYERFS_ROOT, else /var/lib/layerfs for
    /// root, else $XDG_DATA_HOME/layerfs).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import a docker-archive, OCI layout (PATH[:REF]), oci-archive or
    /// rootfs tar (`-` reads stdin); prints each image id.
    Import {
        path: String,
        /// Tag the imported image (repeatable).
        #[arg(long = "tag", value_name = "NAME")]
        tags: Vec<String>,
        /// Refuse a layer whose uncompressed tar grows past SIZE (512M,
        /// 64G, none), checked as it is written.
        #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size_arg)]
        max_layer_size: Option<u64>,
        /// Stop before the store's filesystem has less than SIZE free
        /// (default: 5% of it, at most 1G; 0 to write until it is full).
        #[arg(long, value_name = "SIZE", value_parser = parse_free_arg)]
        min_free: Option<u64>,
    },
    /// Pull an image from a registry (verified, all or nothing); prints
    /// its id and tags it with REFERENCE.
    Pull(registry::PullArgs),
    /// Push a stored image to a registry (layers uncompressed); prints its
    /// id.
    Push(registry::PushArgs),
    /// Check credentials with a registry and store them in podman's auth
    /// file.
    Login(registry::LoginArgs),
    /// Remove a registry's credentials from the auth file.
    Logout(registry::LogoutArgs),
    /// List images: ID, TAGS, LAYERS, SIZE, CREATED.
    Images {
        #[arg(long)]
        json: bool,
    },
    /// The layer chain of an image, top first.
    History {
        image: String,
        #[arg(long)]
        json: bool,
    },
    /// Print an image's config JSON.
    Inspect { image: String },
    /// Remove images (and layers no other image uses).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Add a tag to an image.
    Tag { image: String, name: String },
    /// Verify the store: re-hash every layer tar against its diff id,
    /// validate indexes, records, configs and tags, find orphans and
    /// leftovers (of IMAGEs only, if given). Fails if anything is wrong.
    Check {
        images: Vec<String>,
        /// Remove what is broken: a damaged layer with every image that
        /// needs it, damaged images, dangling tags, unused layers.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Mount an image at MOUNTPOINT: read-only, or with a read-write branch.
    Mount(MountArgs),
    /// Mount plain directories as a union, AUFS- or overlay-style:
    /// `-o br=RW=rw:RO1=ro+wh:RO2=ro+wh` (top first; the first branch, if
    /// rw, takes the writes as an AUFS-format diff) or
    /// `-o lowerdir=A:B:C[,upperdir=U,workdir=W]` (top first; as root,
    /// writes land in U in kernel overlayfs' format). Lower branches may use
    /// either whiteout format (`.wh.` files or overlay's 0:0 devices and
    /// `overlay.opaque` xattrs). `layerfs umount` unmounts.
    MountBranches(MountBranchesArgs),
    /// Make an OCI runtime bundle: mount IMAGE at BUNDLE/rootfs and write
    /// BUNDLE/config.json from the image config (`runc run -b BUNDLE ID`
    /// runs it). `bundle --umount BUNDLE` unmounts and removes config.json.
    Bundle(BundleArgs),
    /// Unmount a layerfs mount and wait for its daemon to exit.
    Umount { mountpoint: PathBuf },
    /// List the merged view of an image without mounting it, with the
    /// layer each entry comes from (INDEX:LAYER, index 0 = bottom).
    Ls(LsArgs),
    /// Per layer, top first: size, files added/modified/deleted, bytes
    /// wasted; and the image's efficiency (as dive computes it).
    Layers {
        image: String,
        #[arg(long)]
        json: bool,
        /// List the changes of layer N (0 = bottom): A/C/D lines.
        #[arg(long, value_name = "N", conflicts_with = "wasted")]
        diff: Option<usize>,
        /// List, per layer, the files that make up its wasted bytes,
        /// largest first, with the layer that replaced or deleted each.
        #[arg(long)]
        wasted: bool,
    },
    /// The merged tree as of a layer, with sizes (directories summed) and
    /// what that layer did to each entry (A added, C changed, D deleted).
    Tree(TreeArgs),
    /// A terminal UI as dive's: the layers on the left, the tree as of the
    /// selected layer on the right with its A/C/D marks. Keys: up/down or
    /// j/k move, Tab switches pane, Enter/Space collapses a directory, c
    /// shows only the layer's changes, / filters by name, q quits.
    Explore { image: String },
    /// The history of one path: every layer (0 = bottom) that created,
    /// changed, hid or re-created PATH or a parent of it, with the layer's
    /// `created_by`.
    Why {
        image: String,
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// What a container changed against its image: A/C/D lines, from a
    /// read-write branch or a live read-write mount.
    Diff(DiffArgs),
    /// Turn a read-write branch into a new layer and image on top of IMAGE;
    /// prints the new image id.
    Commit(CommitArgs),
    /// Write the flattened merged tree as one rootfs tar.
    Export(ExportArgs),
    /// Save images with their original layer tars.
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file (a directory for --format oci).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// docker-archive, oci or oci-archive.
        #[arg(long, default_value = "docker-archive")]
        format: SaveFormat,
    },
}

// `layerfs mount`.
#[derive(Args)]
pub(crate) struct MountArgs {
    image: String,
    mountpoint: PathBuf,
    /// Read-write branch (created if missing): every change lands here
    /// as a layer diff (`.wh.` whiteouts). Without it writes get EROFS.
    #[arg(long, value_name = "DIR")]
    rw: Option<PathBuf>,
    /// Stay attached instead of returning once mounted.
    #[arg(long)]
    foreground: bool,
    /// Mount options: allow_other, allow_root, uidmapping=C:H:N[:...],
    /// gidmapping=C:H:N[:...], squash_to_root, squash_to_uid=U,
    /// squash_to_gid=G, ...
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// Add the Docker init layer on top of the image (read-only): the
    /// mount points and empty files a runtime bind-mounts over.
    #[arg(long)]
    init_layer: bool,
    #[arg(long, hide = true)]
    notify_ready: bool,
    #[command(flatten)]
    pull: registry::PullFirst,
}

// `layerfs mount-branches`.
#[derive(Args)]
pub(crate) struct MountBranchesArgs {
    mountpoint: PathBuf,
    /// Branch options (br=... or lowerdir=...) and mount options as for
    /// `mount` (allow_other, uidmapping=..., ...).
    #[arg(short = 'o', value_name = "OPT[,OPT...]", required = true)]
    options: Vec<String>,
    /// Stay attached instead of returning once mounted.
    #[arg(long)]
    foreground: bool,
    /// Add the Docker init layer on top of the branches (read-only).
    #[arg(long)]
    init_layer: bool,
    #[arg(long, hide = true)]
    notify_ready: bool,
}

// `layerfs bundle`.
#[derive(Args)]
pub(crate) struct BundleArgs {
    /// The image (with --umount: the bundle directory).
    image: String,
    #[command(flatten)]
    pull: registry::PullFirst,
    /// The bundle directory (created if missing).
    bundle: Option<PathBuf>,
    /// Read-write branch for the rootfs (else the rootfs is read-only).
    #[arg(long, value_name = "DIR")]
    rw: Option<PathBuf>,
    /// A spec like `runc spec --rootless` (user namespace mapping
    /// container root to you); the mount then shows the image's root
    /// as you (-o uidmapping=0:UID:1,gidmapping=0:GID:1) unless -o
    /// gives owner options.
    #[arg(long)]
    rootless: bool,
    /// Add the Docker init layer (see `mount --init-layer`).
    #[arg(long)]
    init_layer: bool,
    /// Mount options, as for `mount`.
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    #[arg(long, default_value = "layerfs")]
    hostname: String,
    /// Unmount BUNDLE/rootfs and remove BUNDLE/config.json.
    #[arg(long)]
    umount: bool,
    /// The process arguments, instead of the image's Entrypoint + Cmd.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

// `layerfs ls`.
#[derive(Args)]
pub(crate) struct LsArgs {
    image: String,
    /// A directory (its entries) or any other entry (itself).
    #[arg(default_value = "/")]
    path: String,
    /// Long format: mode, owner, size, time.
    #[arg(short = 'l')]
    long: bool,
    /// Also what the merge hides: whiteouts, opaque markers and
    /// shadowed entries of lower layers, with the layer that hid them.
    #[arg(short = 'a')]
    all: bool,
    /// Recurse into directories.
    #[arg(short = 'R')]
    recursive: bool,
    #[arg(long)]
    json: bool,
}

// `layerfs tree`.
#[derive(Args)]
pub(crate) struct TreeArgs {
    image: String,
    /// The directory (or entry) to show.
    #[arg(default_value = "/")]
    path: String,
    /// As of layer N (0 = bottom; default: the top layer).
    #[arg(long, value_name = "N")]
    layer: Option<usize>,
    /// Show D levels below PATH (sizes still count everything).
    #[arg(long, value_name = "D")]
    depth: Option<usize>,
    /// Order of each directory's entries.
    #[arg(long, value_enum, default_value = "name")]
    sort: TreeSort,
    /// Only what the layer changed, and the directories leading to it.
    #[arg(long)]
    only_changed: bool,
    #[arg(long)]
    json: bool,
}

/// `tree --sort`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum TreeSort {
    /// By name.
    Name,
    /// Largest first.
    Size,
}

// `layerfs diff`.
#[derive(Args)]
pub(crate) struct DiffArgs {
    /// A read-write branch, or the mountpoint of a read-write mount
    /// (none with `--image A --image B`).
    #[arg(required_unless_present = "image")]
    target: Option<PathBuf>,
    /// The image under the branch (found from the live mount if omitted).
    /// Given twice without TARGET: what image B changes against image A
    /// (renamed files as `R /old -> /new`, hard links named).
    #[arg(long, conflicts_with = "lowerdir", value_name = "IMAGE")]
    image: Vec<String>,
    /// Instead of an image: the directories under the branch, top
    /// first, colon separated (as mount-branches' lowerdir=).
    #[arg(long, value_name = "DIR[:DIR...]")]
    lowerdir: Option<String>,
    /// TARGET is any directory holding a layer diff (an overlay
    /// upperdir, Docker's overlay2/<id>/diff or aufs/diff/<id>), not a
    /// branch layerfs made: both whiteout formats are read.
    #[arg(long)]
    plain: bool,
    #[arg(long)]
    json: bool,
}

// `layerfs commit`.
#[derive(Args)]
pub(crate) struct CommitArgs {
    /// A read-write branch, or the mountpoint of a read-write mount.
    rwdir: PathBuf,
    /// The image the branch was mounted on (found from the live mount
    /// if omitted).
    #[arg(long)]
    image: Option<String>,
    #[arg(long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// History comment.
    #[arg(long, short = 'm')]
    message: Option<String>,
    #[arg(long)]
    author: Option<String>,
    /// A Dockerfile instruction applied to the config: CMD, ENTRYPOINT,
    /// ENV, WORKDIR, USER, LABEL or EXPOSE (repeatable).
    #[arg(long = "change", short = 'c', value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// RWDIR is any directory holding a layer diff (an overlay
    /// upperdir, Docker's overlay2/<id>/diff), not a branch layerfs
    /// made: overlay whiteouts and opaque directories are written as
    /// the layer format's `.wh.` entries.
    #[arg(long)]
    plain: bool,
}

// `layerfs export`.
#[derive(Args)]
pub(crate) struct ExportArgs {
    image: String,
    /// Output file (default: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Leave out PATH and everything under it (repeatable).
    #[arg(long, value_name = "PATH")]
    exclude: Vec<String>,
    /// Put FILE's content at PATH (repeatable).
    #[arg(long, value_name = "PATH=FILE")]
    replace: Vec<String>,
}

/// Runs the command `cli` names and reports its error, if any, on stderr
/// (`layerfs: ...`, exit status 1).
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`layerfs ls IMAGE | head`): stop quietly,
        // with the status a program killed by SIGPIPE has, as ls does.
        Err(e) if broken_pipe(&e) => ExitCode::from(128 + libc::SIGPIPE as u8),
        Err(e) => {
            eprintln!("layerfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Is `e` (or what caused it) a write to a closed pipe?
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn dispatch(cli: Cli) -> Result<()> {
    let root = cli.root.unwrap_or_else(default_root);
    let store = &Store::open(&root)?;
    let out = &mut std::io::stdout().lock();
    match cli.cmd {
        Cmd::Import {
            path,
            tags,
            max_layer_size,
            min_free,
        } => store::import(
            store,
            out,
            &path,
            tags,
            crate::image::import::Limits {
                max_layer_size,
                min_free,
            },
        ),
        Cmd::Pull(a) => registry::pull(store, out, a),
        Cmd::Push(a) => registry::push(store, out, a),
        Cmd::Login(a) => registry::login(out, a),
        Cmd::Logout(a) => registry::logout(out, a),
        Cmd::Images { json } => store::images(store, out, json),
        Cmd::History { image, json } => store::history(store, out, &image, json),
        Cmd::Inspect { image } => store::inspect(store, out, &image),
        Cmd::Rm { images } => store::rm(store, out, &images),
        Cmd::Tag { image, name } => store::tag(store, &image, &name),
        Cmd::Check {
            images,
            repair,
            json,
        } => store::check(store, out, &images, repair, json),
        Cmd::Mount(a) => mount::mount(store, a),
        Cmd::MountBranches(a) => mount::mount_branches(store, a),
        Cmd::Bundle(a) => mount::bundle(store, a),
        Cmd::Umount { mountpoint } => mount::umount(store, &mountpoint),
        Cmd::Ls(a) => inspect::ls(store, out, a),
        Cmd::Layers {
            image,
            json,
            diff,
            wasted,
        } => inspect::layers(store, out, &image, json, diff, wasted),
        Cmd::Tree(a) => inspect::tree(store, out, a),
        Cmd::Explore { image } => explore::explore(store, &image),
        Cmd::Why { image, path, json } => inspect::why(store, out, &image, &path, json),
        Cmd::Diff(a) => inspect::diff(store, out, a),
        Cmd::Commit(a) => pack::commit(store, out, a),
        Cmd::Export(a) => pack::export(store, out, a),
        Cmd::Save {
            images,
            output,
            format,
        } => pack::save(store, &images, &output, format),
    }
}

/// `-o` options as given (each may be a comma-separated list), one per
/// element.
fn split_options(options: &[String]) -> Vec<String> {
    options
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::to_string)
        .collect()
}

/// `p` made absolute (against the current directory), else as given.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A SIZE argument: bytes with an optional K/M/G/T suffix, or `none`
/// (no limit).
fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::image::import::parse_size(s).map(|o| o.unwrap_or(u64::MAX))
}

/// The SIZE of `--min-free` (`none` keeps nothing free: 0).
fn parse_free_arg(s: &str) -> Result<u64, String> {
    crate::image::import::parse_size(s).map(|o| o.unwrap_or(0))
}
