//! `pull`, `push`, `login` and `logout`: the registry commands. The work is in
//! [`crate::registry`]; here are the flags and the output (the image id as
//! text, or a JSON object with `--json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::render::print_json;
use crate::registry::auth::Credentials;
use crate::registry::pull::{find_resolved, pull as pull_image, PullOptions};
use crate::registry::push::{push as push_image, PushOptions};
use crate::registry::{login as login_to, logout as logout_from, RegistryOptions};
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
    /// The registries.conf to read (short names, aliases, mirrors,
    /// blocked and insecure registries; default: $CONTAINERS_REGISTRIES_CONF,
    /// ~/.config/containers/registries.conf, /etc/containers/registries.conf,
    /// with their .d drop-ins).
    #[arg(long, value_name = "FILE")]
    registries_conf: Option<PathBuf>,
}

impl ConnArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            creds: self.creds.clone(),
            authfile: self.authfile.clone(),
            registries_conf: self.registries_conf.clone(),
        }
    }
}

/// When `mount` and `bundle` pull their image.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PullPolicy {
    /// When it is not in the store (and names a registry image).
    Missing,
    /// Never: an image not in the store is an error.
    Never,
}

// `--pull` and the connection flags of `mount` and `bundle`.
#[derive(Args)]
pub(crate) struct PullFirst {
    /// Pull IMAGE from its registry first if the store does not have it.
    #[arg(long, value_enum, default_value = "missing")]
    pull: PullPolicy,
    #[command(flatten)]
    conn: ConnArgs,
}

/// The id of `image`: from the store, else (with `--pull missing`, for a
/// name that is a registry reference) pulled now, with a line on stderr.
pub(crate) fn resolve_or_pull(store: &Store, image: &str, how: &PullFirst) -> Result<String> {
    if let Some(id) = store.find(image)? {
        return Ok(id);
    }
    if crate::oci::Reference::parse(image).is_ok() {
        // A short name stored under its resolved name (an alias, a search
        // registry); a bad registries.conf is the pull's to report.
        if let Ok(Some(id)) = find_resolved(store, image, &how.conn.options()) {
            return Ok(id);
        }
    }
    if how.pull == PullPolicy::Never || crate::oci::Reference::parse(image).is_err() {
        // The store's own message (known tags).
        return store.resolve(image);
    }
    eprintln!("{image}: not in the store; pulling it");
    let opts = PullOptions {
        registry: how.conn.options(),
        platform: None,
        jobs: 3,
        quiet: true,
        limits: crate::image::import::Limits::default(),
    };
    Ok(pull_image(store, image, &opts)?.id)
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
    /// Refuse a layer whose uncompressed tar grows past SIZE (as import).
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = super::parse_size_arg)]
    max_layer_size: Option<u64>,
    /// Keep SIZE free on the store's filesystem (as import).
    #[arg(long, value_name = "SIZE", value_parser = super::parse_free_arg)]
    min_free: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
    #[arg(long)]
    json: bool,
}

// `layerfs push`.
#[derive(Args)]
pub(crate) struct PushArgs {
    /// The stored image (id, tag or id prefix).
    image: String,
    /// Where to: `host:port/repo:tag`.
    reference: String,
    /// Blobs larger than SIZE go up in chunks of SIZE (one PATCH each; a
    /// failed chunk is sent again); 0: one PUT per blob.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = super::parse_size_arg)]
    chunk_size: u64,
    #[command(flatten)]
    conn: ConnArgs,
    #[arg(long)]
    json: bool,
}

/// `pull`.
pub(crate) fn pull(store: &Store, out: &mut impl Write, a: PullArgs) -> Result<()> {
    let opts = PullOptions {
        registry: a.conn.options(),
        platform: a.platform,
        jobs: a.jobs,
        quiet: a.quiet,
        limits: crate::image::import::Limits {
            max_layer_size: a.max_layer_size,
            min_free: a.min_free,
        },
    };
    let p = pull_image(store, &a.reference, &opts)?;
    if a.json {
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
    let opts = PushOptions {
        registry: a.conn.options(),
        chunk_size: a.chunk_size,
    };
    let p = push_image(store, &a.image, &a.reference, &opts)?;
    if a.json {
        return print_json(out, &p);
    }
    eprintln!(
        "{}: {} blobs uploaded, {} mounted from other repositories, {} already there; manifest {}",
        p.reference, p.uploaded, p.mounted, p.present, p.manifest_digest
    );
    writeln!(out, "{}", p.id)?;
    Ok(())
}

// `layerfs login`.
#[derive(Args)]
pub(crate) struct LoginArgs {
    /// The registry: HOST[:PORT] (docker.io for Docker Hub).
    registry: String,
    #[arg(long, short)]
    username: String,
    /// The password (visible to other users in the process list; prefer
    /// --password-stdin).
    #[arg(long, short, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin (its first line).
    #[arg(long)]
    password_stdin: bool,
    /// Verify the registry's TLS certificate; false also allows plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// The auth file to write (default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, where podman keeps it); a
    /// credential helper it names for the registry (credHelpers, else
    /// credsStore) stores the login instead.
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

// `layerfs logout`.
#[derive(Args)]
pub(crate) struct LogoutArgs {
    /// The registry: HOST[:PORT].
    registry: String,
    /// The auth file (default as for `login`; its credential helper for
    /// the registry, if any, erases the login too).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

/// `login`.
pub(crate) fn login(out: &mut impl Write, a: LoginArgs) -> Result<()> {
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => anyhow::bail!("login: give --password-stdin (or --password)"),
    };
    let opts = RegistryOptions {
        tls_verify: a.tls_verify,
        creds: None,
        authfile: a.authfile,
        registries_conf: None,
    };
    let creds = Credentials {
        user: a.username,
        password,
    };
    let place = login_to(&a.registry, creds, &opts)?;
    writeln!(out, "Login Succeeded ({place})")?;
    Ok(())
}

/// `logout`.
pub(crate) fn logout(out: &mut impl Write, a: LogoutArgs) -> Result<()> {
    let opts = RegistryOptions {
        authfile: a.authfile,
        ..RegistryOptions::default()
    };
    let place = logout_from(&a.registry, &opts)?;
    writeln!(out, "Removed the login to {} from {place}", a.registry)?;
    Ok(())
}
