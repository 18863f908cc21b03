//! The `layerfs` command line: argument parsing and output formatting only;
//! the work is done by the library modules.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use layerfs::daemon::{self, MountOptions};
use layerfs::image::{layer_created_by, normalize_ref, validate_tag};
use layerfs::import::{import, ImportOptions};
use layerfs::store::{default_root, Store};

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
        /// FUSE mount options (allow_other, allow_root, ...).
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Unmount a layerfs mount and wait for its daemon to exit.
    Umount { mountpoint: PathBuf },
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
    let cli = Cli::parse();
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
            notify_ready,
            rw,
        } => {
            let id = store.resolve(&image)?;
            let mp = daemon::canonical_mountpoint(&mountpoint)?;
            if let Some(m) = store.mount_at(&mp)? {
                bail!(
                    "{} is already a layerfs mount (daemon pid {})",
                    mp.display(),
                    m.pid
                );
            }
            let opts = MountOptions {
                options: options
                    .iter()
                    .flat_map(|o| o.split(','))
                    .map(str::to_string)
                    .collect(),
                rw: rw.as_deref().map(absolute),
            };
            if let Some(rw) = &opts.rw {
                // The branch must not live under the mount it serves (every
                // access to it would come back through the daemon).
                let real = rw.canonicalize().unwrap_or_else(|_| rw.clone());
                if real.starts_with(&mp) {
                    bail!(
                        "the rw branch {} is inside the mountpoint {}",
                        rw.display(),
                        mp.display()
                    );
                }
            }
            if foreground {
                daemon::run_foreground(&store, &id, &mp, &opts, notify_ready)?;
            } else {
                daemon::spawn_background(store.root(), &id, &mp, &opts)?;
            }
        }
        Cmd::Umount { mountpoint } => {
            // A mount whose daemon died cannot be canonicalized (ENOTCONN).
            let mp =
                daemon::canonical_mountpoint(&mountpoint).unwrap_or_else(|_| absolute(&mountpoint));
            daemon::umount(&store, &mp)?;
        }
    }
    Ok(())
}

fn print_json(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
