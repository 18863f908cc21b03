//! `pull` and `push`: the registry commands. The work is in
//! [`crate::registry`]; here are the flags and the output (the image id as
//! text, or a JSON object with `--json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::render::print_json;
use crate::registry::pull::{pull as pull_image, PullOptions};
use crate::registry::push::push as push_image;
use crate::registry::RegistryOptions;
use crate::store::Store;

// The connection flags `pull` and `push` share.
#[derive(Args)]
pub(crate) struct ConnArgs {
    /// Verify the registry's TLS certificate (against the system's roots,
    /// or SSL_CERT_FILE); `--tls-verify=false` also allows plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// USER:PASSWORD for the registry (over any auth file).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// The auth file to read (default: $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

impl ConnArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            creds: self.creds.clone(),
            authfile: self.authfile.clone(),
        }
    }
}

// `layerfs pull`.
#[derive(Args)]
pub(crate) struct PullArgs {
    /// The image: `alpine`, `host:port/repo:tag`, `repo@sha256:...`.
    reference: String,
    /// The platform to pick from a multi-platform image (default: this
    /// machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    jobs: usize,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

// `layerfs push`.
#[derive(Args)]
pub(crate) struct PushArgs {
    /// The stored image (id, tag or id prefix).
    image: String,
    /// Where to: `host:port/repo:tag`.
    reference: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `pull`.
pub(crate) fn pull(store: &Store, out: &mut impl Write, a: PullArgs) -> Result<()> {
    let opts = PullOptions {
        registry: a.conn.options(),
        platform: a.platform,
        jobs: a.jobs,
        quiet: a.quiet,
    };
    let p = pull_image(store, &a.reference, &opts)?;
    if a.conn.json {
        return print_json(out, &p);
    }
    if !a.quiet {
        eprintln!(
            "{}: {} layers, {} downloaded ({} bytes)",
            p.reference, p.layers, p.downloaded, p.bytes
        );
    }
    writeln!(out, "{}", p.id)?;
    Ok(())
}

/// `push`.
pub(crate) fn push(store: &Store, out: &mut impl Write, a: PushArgs) -> Result<()> {
    let p = push_image(store, &a.image, &a.reference, &a.conn.options())?;
    if a.conn.json {
        return print_json(out, &p);
    }
    eprintln!(
        "{}: {} blobs uploaded, {} already there; manifest {}",
        p.reference, p.uploaded, p.present, p.manifest_digest
    );
    writeln!(out, "{}", p.id)?;
    Ok(())
}
