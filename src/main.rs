//! The `layerfs` command line: argument parsing and output formatting only;
//! the work is done by the library modules.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use layerfs::bundle::{resolve_user, SpecOptions};
use layerfs::image::commit::{check_branch, commit, rw_diff, CommitOptions};
use layerfs::image::export::{export, save, ExportOptions, ImageLayers, SaveFormat};
use layerfs::image::import::{import, ImportOptions};
use layerfs::layer::index::Kind;
use layerfs::mount::{self, MountOptions, Source};
use layerfs::oci::{layer_created_by, normalize_ref, rfc3339, validate_tag};
use layerfs::store::{default_root, Store};
use layerfs::union::inspect::{self, Item, LsError, Status};

#[derive(Parser)]
#[command(
    name = "layerfs",
    version,
    about = "A userspace union filesystem for container image layers"
)]
struct Cli {
    /// Store directory (default: $LAYERFS_ROOT, else /var/lib/layerfs for
    /// root, else $XDG_DATA_HOME/layerfs).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
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
    },
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
    /// Mount an image at MOUNTPOINT: read-only, or with a read-write branch.
    Mount {
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
    },
    /// Mount plain directories as a union, AUFS- or overlay-style:
    /// `-o br=RW=rw:RO1=ro+wh:RO2=ro+wh` (top first; the first branch, if
    /// rw, takes the writes as an AUFS-format diff) or
    /// `-o lowerdir=A:B:C[,upperdir=U,workdir=W]` (top first; as root,
    /// writes land in U in kernel overlayfs' format). Lower branches may use
    /// either whiteout format (`.wh.` files or overlay's 0:0 devices and
    /// `overlay.opaque` xattrs). `layerfs umount` unmounts.
    MountBranches {
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
    },
    /// Make an OCI runtime bundle: mount IMAGE at BUNDLE/rootfs and write
    /// BUNDLE/config.json from the image config (`runc run -b BUNDLE ID`
    /// runs it). `bundle --umount BUNDLE` unmounts and removes config.json.
    Bundle {
        /// The image (with --umount: the bundle directory).
        image: String,
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
    },
    /// Unmount a layerfs mount and wait for its daemon to exit.
    Umount { mountpoint: PathBuf },
    /// List the merged view of an image without mounting it, with the
    /// layer each entry comes from (INDEX:LAYER, index 0 = bottom).
    Ls {
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
    },
    /// Per layer, top first: size, files added/modified/deleted, bytes
    /// wasted; and the image's efficiency (as dive computes it).
    Layers {
        image: String,
        #[arg(long)]
        json: bool,
        /// List the changes of layer N (0 = bottom): A/C/D lines.
        #[arg(long, value_name = "N")]
        diff: Option<usize>,
    },
    /// What a container changed against its image: A/C/D lines, from a
    /// read-write branch or a live read-write mount.
    Diff {
        /// A read-write branch, or the mountpoint of a read-write mount.
        target: PathBuf,
        /// The image under the branch (found from the live mount if omitted).
        #[arg(long, conflicts_with = "lowerdir")]
        image: Option<String>,
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
    },
    /// Turn a read-write branch into a new layer and image on top of IMAGE;
    /// prints the new image id.
    Commit {
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
    },
    /// Write the flattened merged tree as one rootfs tar.
    Export {
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
    },
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

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a mount daemon's log is a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn human_size(n: u64) -> String {
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

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn main() {
    // As a mount helper (`mount -t fuse.layerfs none MNT -o br=...` runs
    // `layerfs none MNT -o br=...` through fuse3's mount.fuse3).
    // Only when the first argument is no subcommand or flag of ours.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.into_string().unwrap_or_default())
        .collect();
    let helper = argv.get(1).is_some_and(|a| {
        !a.starts_with('-')
            && <Cli as clap::CommandFactory>::command()
                .find_subcommand(a)
                .is_none()
    });
    let cli = match argv
        .get(1..)
        .filter(|_| helper)
        .and_then(layerfs::mount::options::helper_args)
    {
        Some(args) => Cli::parse_from(std::iter::once(argv[0].clone()).chain(args)),
        None => Cli::parse(),
    };
    init_tracing(cli.verbose);
    if let Err(e) = run(cli) {
        eprintln!("layerfs: {e:#}");
        std::process::exit(1);
    }
}

fn image_size(store: &Store, layers: &[String]) -> u64 {
    layers
        .iter()
        .filter_map(|l| store.layer(l).ok())
        .map(|r| r.size)
        .sum()
}

fn run(cli: Cli) -> Result<()> {
    let root = cli.root.clone().unwrap_or_else(default_root);
    let store = Store::open(&root)?;
    let mut out = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Import { path, tags } => {
            for id in import(&store, &path, &ImportOptions { tags })? {
                writeln!(out, "{id}")?;
            }
        }
        Cmd::Images { json } => {
            let tags = store.tags()?;
            let mut rows = Vec::new();
            for img in store.images()? {
                let t: Vec<&String> = tags
                    .iter()
                    .filter(|(_, v)| **v == img.id)
                    .map(|(k, _)| k)
                    .collect();
                rows.push(json!({
                    "id": img.id,
                    "tags": t,
                    "layers": img.layers.len(),
                    "size": image_size(&store, &img.layers),
                    "created": img.created,
                }));
            }
            if json {
                print_json(&mut out, &rows)?;
            } else {
                writeln!(
                    out,
                    "{:<12}  {:<30}  {:>6}  {:>8}  CREATED",
                    "ID", "TAGS", "LAYERS", "SIZE"
                )?;
                for r in rows {
                    let tags: Vec<&str> = r["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    writeln!(
                        out,
                        "{:<12}  {:<30}  {:>6}  {:>8}  {}",
                        short(r["id"].as_str().unwrap()),
                        if tags.is_empty() {
                            "<none>".to_string()
                        } else {
                            tags.join(",")
                        },
                        r["layers"],
                        human_size(r["size"].as_u64().unwrap_or(0)),
                        r["created"].as_str().unwrap_or("-")
                    )?;
                }
            }
        }
        Cmd::History { image, json } => {
            let id = store.resolve(&image)?;
            let rec = store.image(&id)?;
            let config: Value =
                serde_json::from_slice(&store.config(&id)?).context("image config")?;
            let created_by = layer_created_by(&config, rec.layers.len());
            let mut rows = Vec::new();
            for (i, chain) in rec.layers.iter().enumerate().rev() {
                let l = store.layer(chain)?;
                rows.push(json!({
                    "index": i,
                    "layer": chain,
                    "diff_id": format!("sha256:{}", l.diff_id),
                    "size": l.size,
                    "created_by": created_by[i],
                }));
            }
            if json {
                print_json(&mut out, &rows)?;
            } else {
                writeln!(
                    out,
                    "{:<12}  {:<19}  {:>8}  CREATED BY",
                    "LAYER", "DIFF ID", "SIZE"
                )?;
                for r in rows {
                    let diff = r["diff_id"].as_str().unwrap();
                    writeln!(
                        out,
                        "{:<12}  {:<19}  {:>8}  {}",
                        short(r["layer"].as_str().unwrap()),
                        &diff[..19.min(diff.len())],
                        human_size(r["size"].as_u64().unwrap()),
                        r["created_by"].as_str().unwrap()
                    )?;
                }
            }
        }
        Cmd::Inspect { image } => {
            let id = store.resolve(&image)?;
            let config: Value =
                serde_json::from_slice(&store.config(&id)?).context("image config")?;
            serde_json::to_writer_pretty(&mut out, &config)?;
            writeln!(out)?;
        }
        Cmd::Rm { images } => {
            let _lock = store.lock()?;
            for image in images {
                let id = store.resolve(&image)?;
                let removed = store.remove_image(&id)?;
                writeln!(out, "removed image {id} ({} layers freed)", removed.len())?;
            }
        }
        Cmd::Tag { image, name } => {
            validate_tag(&name).map_err(anyhow::Error::msg)?;
            let _lock = store.lock()?;
            let id = store.resolve(&image)?;
            let mut tags = store.tags()?;
            tags.insert(normalize_ref(&name), id);
            store.set_tags(&tags)?;
        }
        Cmd::Mount {
            image,
            mountpoint,
            foreground,
            options,
            init_layer,
            notify_ready,
            rw,
        } => {
            let id = store.resolve(&image)?;
            let mp = free_mountpoint(&store, &mountpoint)?;
            let opts = MountOptions {
                options: options
                    .iter()
                    .flat_map(|o| o.split(','))
                    .map(str::to_string)
                    .collect(),
                rw: rw.as_deref().map(absolute),
                work: None,
                init_layer,
            };
            if let Some(rw) = &opts.rw {
                if mount::inside_mountpoint(rw, &mp) {
                    bail!(
                        "the rw branch {} is inside the mountpoint {}",
                        rw.display(),
                        mp.display()
                    );
                }
            }
            if foreground {
                mount::run_foreground(&store, &id, &mp, &opts, notify_ready)?;
            } else {
                mount::spawn_background(store.root(), &id, &mp, &opts)?;
            }
        }
        Cmd::MountBranches {
            mountpoint,
            options,
            foreground,
            init_layer,
            notify_ready,
        } => {
            let mp = free_mountpoint(&store, &mountpoint)?;
            let split: Vec<String> = options
                .iter()
                .flat_map(|o| o.split(','))
                .map(str::to_string)
                .collect();
            let br = layerfs::mount::options::parse(&split).map_err(anyhow::Error::msg)?;
            let lowers: Vec<PathBuf> = br.lowers.iter().map(|p| absolute(p)).collect();
            let rw = br.upper.as_deref().map(absolute);
            let work = br.work.as_deref().map(absolute);
            if work.is_some() && layerfs::sys::euid() != 0 {
                bail!(
                    "upperdir= needs root: overlay-format whiteouts are device nodes (mknod); \
                     as non-root use -o br=UPPER=rw:LOWER=ro+wh:... (an AUFS-format rw branch)"
                );
            }
            for d in lowers.iter().chain(rw.iter()).chain(work.iter()) {
                if mount::inside_mountpoint(d, &mp) {
                    bail!(
                        "branch {} is inside the mountpoint {}",
                        d.display(),
                        mp.display()
                    );
                }
            }
            let opts = MountOptions {
                options: br.rest.clone(),
                rw: rw.clone(),
                work: work.clone(),
                init_layer,
            };
            if foreground {
                mount::run_branches_foreground(&store, &lowers, &mp, &opts, notify_ready)?;
            } else {
                let resolved = layerfs::mount::options::Branches {
                    upper: rw,
                    work,
                    lowers,
                    rest: br.rest,
                };
                mount::spawn_branches_background(store.root(), &mp, &resolved, init_layer)?;
            }
        }
        Cmd::Bundle {
            image,
            bundle,
            rw,
            rootless,
            init_layer,
            options,
            hostname,
            umount,
            args,
        } => {
            if umount {
                if bundle.is_some() {
                    bail!("bundle --umount takes only the bundle directory");
                }
                bundle_umount(&store, Path::new(&image))?;
            } else {
                let dir = bundle.ok_or_else(|| {
                    anyhow::anyhow!("usage: layerfs bundle IMAGE BUNDLE (or --umount BUNDLE)")
                })?;
                let id = store.resolve(&image)?;
                let mut options: Vec<String> = options
                    .iter()
                    .flat_map(|o| o.split(','))
                    .map(str::to_string)
                    .collect();
                let (uid, gid) = (layerfs::sys::uid(), layerfs::sys::gid());
                if rootless {
                    layerfs::bundle::rootless_mount_options(&mut options, uid, gid);
                }
                let opts = MountOptions {
                    options,
                    rw: rw.as_deref().map(absolute),
                    work: None,
                    init_layer,
                };
                let config: Value =
                    serde_json::from_slice(&store.config(&id)?).context("image config")?;
                let spec_opts = SpecOptions {
                    rootless,
                    host_uid: uid,
                    host_gid: gid,
                    user: Default::default(),
                    args: (!args.is_empty()).then_some(args),
                    hostname,
                    readonly: opts.rw.is_none(),
                };
                make_bundle(&store, &id, &absolute(&dir), &opts, &config, spec_opts)?;
            }
        }
        Cmd::Umount { mountpoint } => {
            // A mount whose daemon died cannot be canonicalized (ENOTCONN).
            let mp =
                mount::canonical_mountpoint(&mountpoint).unwrap_or_else(|_| absolute(&mountpoint));
            mount::umount(&store, &mp)?;
        }
        Cmd::Ls {
            image,
            path,
            long,
            all,
            recursive,
            json,
        } => {
            let id = store.resolve(&image)?;
            let img = ImageLayers::open(&store, &id)?;
            let ls = if recursive {
                inspect::list_recursive(&img.layers, path.as_bytes(), all)
            } else {
                inspect::list(&img.layers, path.as_bytes(), all)
            };
            let items = ls.map_err(|e| match e {
                LsError::NotFound => anyhow::anyhow!("{path}: no such file or directory in image {}", short(&id)),
                LsError::Hidden(by) => anyhow::anyhow!(
                    "{path}: not in the merged view of image {} (hidden by layer {}; `ls -a` on its directory shows it)",
                    short(&id),
                    by.map(|l| layer_label(&img, l)).unwrap_or_else(|| "?".into())
                ),
            })?;
            if json {
                let rows: Vec<Value> = items.iter().map(|i| ls_json(&img, i)).collect();
                print_json(&mut out, &rows)?;
            } else {
                let norm = inspect::components(path.as_bytes()).join(&b"/"[..]);
                let single = !norm.is_empty() && items.iter().all(|i| i.path == norm);
                for i in &items {
                    writeln!(out, "{}", ls_line(&img, i, long, recursive || single))?;
                }
            }
        }
        Cmd::Layers { image, json, diff } => {
            let id = store.resolve(&image)?;
            let rec = store.image(&id)?;
            let img = ImageLayers::open(&store, &id)?;
            let n = img.layers.len();
            if let Some(want) = diff {
                if want >= n {
                    bail!(
                        "--diff {want}: image {} has layers 0 to {}",
                        short(&id),
                        n.saturating_sub(1)
                    );
                }
                let changes = inspect::layer_changes(&img.layers, (n - 1 - want) as u16);
                if json {
                    let rows: Vec<Value> = changes
                        .iter()
                        .map(|c| json!({"change": c.change.letter().to_string(), "path": slash_path(&c.path), "type": kind_name(c.kind)}))
                        .collect();
                    print_json(&mut out, &rows)?;
                } else {
                    for c in changes {
                        writeln!(out, "{} {}", c.change.letter(), slash_path(&c.path))?;
                    }
                }
                return Ok(());
            }
            let config: Value =
                serde_json::from_slice(&store.config(&id)?).context("image config")?;
            let created_by = layer_created_by(&config, n);
            let stats = inspect::image_stats(&img.layers, &img.tar_slices());
            let mut rows = Vec::new();
            for (pos, s) in stats.layers.iter().enumerate() {
                let i = n - 1 - pos;
                let l = store.layer(&rec.layers[i])?;
                rows.push(json!({
                    "index": i,
                    "layer": rec.layers[i],
                    "diff_id": format!("sha256:{}", l.diff_id),
                    "created_by": created_by[i],
                    "size": l.size,
                    "file_bytes": s.file_bytes,
                    "added": s.added,
                    "modified": s.modified,
                    "deleted": s.deleted,
                    "wasted": s.wasted,
                }));
            }
            let stored: u64 = stats.layers.iter().map(|s| s.file_bytes).sum();
            if json {
                print_json(
                    &mut out,
                    &json!({
                        "image": id,
                        "layers": rows,
                        "file_bytes": stored,
                        "view_bytes": stats.view_bytes,
                        "efficiency": stats.efficiency,
                        "wasted_bytes": stats.wasted_bytes,
                    }),
                )?;
            } else {
                writeln!(
                    out,
                    "{:>5}  {:<12}  {:>8}  {:>6}  {:>8}  {:>7}  {:>8}  CREATED BY",
                    "INDEX", "LAYER", "SIZE", "ADDED", "MODIFIED", "DELETED", "WASTED"
                )?;
                for r in &rows {
                    let n = |k: &str| r[k].as_u64().unwrap_or(0);
                    writeln!(
                        out,
                        "{:>5}  {:<12}  {:>8}  {:>6}  {:>8}  {:>7}  {:>8}  {}",
                        n("index"),
                        short(r["layer"].as_str().unwrap()),
                        human_size(n("size")),
                        n("added"),
                        n("modified"),
                        n("deleted"),
                        human_size(n("wasted")),
                        r["created_by"].as_str().unwrap()
                    )?;
                }
                writeln!(
                    out,
                    "file data stored: {}, shown by the merged view: {}\nefficiency (dive): {:.4}%  wasted (dive): {}",
                    human_size(stored),
                    human_size(stats.view_bytes),
                    stats.efficiency * 100.0,
                    human_size(stats.wasted_bytes)
                )?;
            }
        }
        Cmd::Diff {
            target,
            image,
            lowerdir,
            plain,
            json,
        } => {
            let changes = match lowerdir {
                Some(dirs) => {
                    let rw = branch_of(&store, &target, plain)?.0;
                    rw_diff(&index_dirs(split_dirs(&dirs))?, &rw)?
                }
                None => match branch_and_base(&store, &target, image.as_deref(), plain)? {
                    (rw, Source::Image(id)) => {
                        rw_diff(&ImageLayers::open(&store, &id)?.layers, &rw)?
                    }
                    (rw, Source::Dirs(dirs)) => rw_diff(&index_dirs(dirs)?, &rw)?,
                },
            };
            if json {
                let rows: Vec<Value> = changes
                    .iter()
                    .map(|(c, p)| json!({"change": c.letter().to_string(), "path": slash_path(p)}))
                    .collect();
                print_json(&mut out, &rows)?;
            } else {
                for (c, p) in changes {
                    writeln!(out, "{} {}", c.letter(), slash_path(&p))?;
                }
            }
        }
        Cmd::Commit {
            rwdir,
            image,
            tags,
            message,
            author,
            changes,
            plain,
        } => {
            let (rw, id) = match branch_and_base(&store, &rwdir, image.as_deref(), plain)? {
                (rw, Source::Image(id)) => (rw, id),
                (rw, Source::Dirs(_)) => bail!(
                    "{}: a branch of directory branches has no image to commit onto; give --image IMAGE",
                    rw.display()
                ),
            };
            let opts = CommitOptions {
                message,
                author,
                changes,
                tags,
                plain,
            };
            let new = commit(&store, &id, &rw, &opts)?;
            writeln!(out, "{new}")?;
        }
        Cmd::Export {
            image,
            output,
            exclude,
            replace,
        } => {
            let id = store.resolve(&image)?;
            let img = ImageLayers::open(&store, &id)?;
            let mut opts = ExportOptions {
                exclude,
                replace: Vec::new(),
            };
            for r in replace {
                let (p, f) = r
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--replace {r:?}: expected PATH=FILE"))?;
                opts.replace.push((p.to_string(), PathBuf::from(f)));
            }
            match output {
                Some(o) => {
                    let tmp = o.with_file_name(format!(
                        ".{}.tmp-{}",
                        o.file_name().unwrap_or_default().to_string_lossy(),
                        std::process::id()
                    ));
                    let r = std::fs::File::create(&tmp)
                        .with_context(|| format!("creating {}", tmp.display()))
                        .and_then(|f| export(&img, &opts, f))
                        .and_then(|()| Ok(std::fs::rename(&tmp, &o)?));
                    if r.is_err() {
                        let _ = std::fs::remove_file(&tmp);
                    }
                    r?;
                }
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        bail!("refusing to write a tar to a terminal; give -o FILE or redirect stdout");
                    }
                    export(&img, &opts, &mut out)?;
                }
            }
        }
        Cmd::Save {
            images,
            output,
            format,
        } => {
            let mut ids: Vec<String> = Vec::new();
            for i in &images {
                let id = store.resolve(i)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            save(&store, &ids, &absolute(&output), format)?;
        }
    }
    Ok(())
}

/// Mounts image `id` at `dir/rootfs` and writes `dir/config.json`; on any
/// failure after the mount, unmounts again.
fn make_bundle(
    store: &Store,
    id: &str,
    dir: &Path,
    opts: &MountOptions,
    config: &Value,
    mut spec_opts: SpecOptions,
) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let mp = mount::canonical_mountpoint(&rootfs)?;
    if let Some(m) = store.mount_at(&mp)? {
        bail!(
            "{} is already a layerfs mount (daemon pid {}): `layerfs bundle --umount {}` first",
            mp.display(),
            m.pid,
            dir.display()
        );
    }
    if let Some(rw) = &opts.rw {
        if mount::inside_mountpoint(rw, &mp) {
            bail!("the rw branch {} is inside the rootfs", rw.display());
        }
    }
    mount::spawn_background(store.root(), id, &mp, opts)?;
    let written = (|| -> Result<()> {
        let user = layerfs::bundle::image_user(config);
        let read = |p: &str| std::fs::read_to_string(mp.join(p)).unwrap_or_default();
        spec_opts.user = resolve_user(&user, &read("etc/passwd"), &read("etc/group"))
            .map_err(|e| anyhow::anyhow!("image User {user:?}: {e}"))?;
        let spec = layerfs::bundle::spec(config, &spec_opts);
        let mut text = serde_json::to_vec_pretty(&spec)?;
        text.push(b'\n');
        layerfs::store::write_atomic(&dir.join("config.json"), &text)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = mount::umount(store, &mp);
        return Err(e);
    }
    Ok(())
}

/// Unmounts `dir/rootfs` and removes `dir/config.json`.
fn bundle_umount(store: &Store, dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    let mp = mount::canonical_mountpoint(&rootfs).unwrap_or_else(|_| absolute(&rootfs));
    let mounted = store.mount_at(&mp)?.is_some() || mount::is_fuse_mount(&mp);
    if mounted {
        mount::umount(store, &mp)?;
    }
    match std::fs::remove_file(dir.join("config.json")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mounted => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} is not a layerfs bundle (no mount, no config.json)",
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("removing {}/config.json", dir.display())),
    }
}

/// The read-write branch and image of `target`: a live read-write mount's
/// mountpoint (both from its record), or a branch directory (the image from
/// `--image`, else from a live mount of that branch).
/// `mountpoint` made canonical, refused if a layerfs mount is there.
fn free_mountpoint(store: &Store, mountpoint: &Path) -> Result<PathBuf> {
    let mp = mount::canonical_mountpoint(mountpoint)?;
    if let Some(m) = store.mount_at(&mp)? {
        bail!(
            "{} is already a layerfs mount (daemon pid {})",
            mp.display(),
            m.pid
        );
    }
    Ok(mp)
}

/// The branch directory of `target` (a live read-write mount's, or
/// `target` itself), with the live mount's record if there is one.
fn branch_of(
    store: &Store,
    target: &Path,
    plain: bool,
) -> Result<(PathBuf, Option<layerfs::store::MountRecord>)> {
    let canon = target
        .canonicalize()
        .with_context(|| format!("{}", target.display()))?;
    let mounts = store.mounts()?;
    if let Some(m) = mounts.iter().find(|m| m.mountpoint == canon) {
        let rw = m.rw.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{} is a read-only mount: it has no changes",
                canon.display()
            )
        })?;
        return Ok((rw, Some(m.clone())));
    }
    let rw = check_branch(&canon, plain)?;
    let m = mounts.into_iter().find(|m| m.rw.as_deref() == Some(&rw));
    Ok((rw, m))
}

/// The branch of `target` and what it lies on: `--image`, else the live
/// mount's image or directories, else the image the branch records.
fn branch_and_base(
    store: &Store,
    target: &Path,
    image: Option<&str>,
    plain: bool,
) -> Result<(PathBuf, Source)> {
    let (rw, m) = branch_of(store, target, plain)?;
    if let Some(i) = image {
        return Ok((rw, Source::Image(store.resolve(i)?)));
    }
    if let Some(source) = m.as_ref().and_then(Source::of_record) {
        return Ok((rw, source));
    }
    match layerfs::upper::branch_image(&rw) {
        Some(id) => Ok((rw, Source::Image(id))),
        None => bail!(
            "{}: which image is it a branch of? Give --image IMAGE (the branch does not record it)",
            rw.display()
        ),
    }
}

fn split_dirs(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Directories as layer indexes (both whiteout formats), top first.
fn index_dirs(dirs: Vec<PathBuf>) -> Result<Vec<layerfs::layer::index::Index>> {
    if dirs.is_empty() {
        bail!("--lowerdir: no directory given");
    }
    dirs.iter()
        .map(|d| layerfs::layer::dir::index_directory(d))
        .collect()
}

fn slash_path(p: &[u8]) -> String {
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

/// `INDEX:SHORTID` of stack position `l` (index 0 = bottom).
fn layer_label(img: &ImageLayers, l: u16) -> String {
    let n = img.layers.len();
    let layer = &img.layers[l as usize];
    format!("{}:{}", n - 1 - l as usize, short(&layer.chain_id))
}

fn layer_json(img: &ImageLayers, l: u16) -> Value {
    json!({"index": img.layers.len() - 1 - l as usize, "id": img.layers[l as usize].chain_id})
}

fn ls_json(img: &ImageLayers, i: &Item) -> Value {
    let (l, e) = i.source;
    let idx = &img.layers[l as usize].index;
    let ent = idx.entry(e);
    let ty = match i.status {
        Status::Opaque => "opaque",
        _ => kind_name(ent.kind),
    };
    let name = i.path.rsplit(|&c| c == b'/').next().unwrap_or(&i.path);
    let mut v = json!({
        "path": slash_path(&i.path),
        "name": String::from_utf8_lossy(name),
        "type": ty,
        "status": i.status.as_str(),
        "layer": layer_json(img, l),
        "layers": i.layers.iter().map(|&x| img.layers.len() - 1 - x as usize).collect::<Vec<_>>(),
        "hidden_by": i.hidden_by.map(|h| layer_json(img, h)),
    });
    if !matches!(i.status, Status::Whiteout | Status::Opaque) {
        v["mode"] = json!(if ent.kind == Kind::Symlink {
            0o777
        } else {
            ent.mode
        });
        v["uid"] = json!(ent.uid);
        v["gid"] = json!(ent.gid);
        v["size"] = json!(if ent.kind == Kind::File { ent.size } else { 0 });
        v["mtime"] = json!(ent.mtime);
        v["mtime_nsec"] = json!(ent.mtime_nsec);
        if ent.kind == Kind::Symlink {
            v["target"] = json!(String::from_utf8_lossy(idx.target(&ent)));
        }
        if matches!(ent.kind, Kind::Char | Kind::Block) {
            v["rdev"] = json!([ent.rdev_major, ent.rdev_minor]);
        }
    }
    v
}

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

fn ls_line(img: &ImageLayers, i: &Item, long: bool, full_path: bool) -> String {
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

fn print_json(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
