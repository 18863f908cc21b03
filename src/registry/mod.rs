//! Images from and to OCI registries (the distribution API): `pull` and
//! `push`. The protocol's pure parts are apart from its I/O: references
//! are in [`crate::oci::Reference`], challenges and auth files in
//! [`auth`], manifests and platform selection in [`manifest`]; [`client`]
//! is the HTTP side (ureq with rustls). A pull hands its verified
//! downloads to the import staging of [`crate::image::import`], so it is
//! all or nothing like any import.

pub mod auth;
pub mod client;
pub mod manifest;
pub mod pull;
pub mod push;

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use crate::oci::Reference;
use auth::{lookup_auth, Credentials};

/// How to reach a registry and whom to be there.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates (false: also allow plain HTTP).
    pub tls_verify: bool,
    /// `USER:PASSWORD`, over any auth file.
    pub creds: Option<String>,
    /// The auth file to read instead of podman's and docker's.
    pub authfile: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            creds: None,
            authfile: None,
        }
    }
}

/// The auth files read when `--authfile` is not given, in order: podman's
/// (`$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`),
/// then docker's (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`).
pub fn default_auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        out.push(PathBuf::from(d).join("config.json"));
    } else if let Some(h) = env("HOME") {
        out.push(PathBuf::from(h).join(".docker/config.json"));
    }
    out
}

/// The credentials for `r`: `--creds`, else the first auth file with an
/// entry for it (a given `--authfile` must exist), else none (anonymous).
pub fn credentials(opts: &RegistryOptions, r: &Reference) -> Result<Option<Credentials>> {
    if let Some(c) = &opts.creds {
        return Credentials::parse(c).map(Some).map_err(|e| anyhow!(e));
    }
    let files = match &opts.authfile {
        Some(f) => vec![f.clone()],
        None => default_auth_files(),
    };
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.authfile.is_none() => {
                continue
            }
            Err(e) => return Err(e).with_context(|| format!("reading auth file {}", f.display())),
        };
        if let Some(c) = lookup_auth(&text, &r.registry, &r.repository)
            .map_err(|e| anyhow!("auth file {}: {e}", f.display()))?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}
