//! Images from and to OCI registries (the distribution API): `pull` and
//! `push`, `login` and `logout`. The protocol's pure parts are apart from its I/O: references
//! are in [`crate::oci::Reference`], challenges, auth files and the
//! credential helpers' messages in [`auth`], manifests and platform
//! selection in [`manifest`]; [`client`] is the HTTP side (ureq with
//! rustls), [`helper`] runs credential helpers. A pull hands its verified
//! downloads to the import staging of [`crate::image::import`], so it is
//! all or nothing like any import.

pub mod auth;
pub mod client;
pub mod config;
pub mod helper;
pub mod manifest;
pub mod pull;
pub mod push;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::oci::Reference;
use auth::{edit_auth, helper_for, source_for, Credentials, Helper, Source};

/// How to reach a registry and whom to be there.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates (false: also allow plain HTTP).
    pub tls_verify: bool,
    /// `USER:PASSWORD`, over any auth file.
    pub creds: Option<String>,
    /// The auth file to read instead of podman's and docker's.
    pub authfile: Option<PathBuf>,
    /// The registries.conf to read instead of the default ones
    /// ([`load_registries_conf`]).
    pub registries_conf: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            creds: None,
            authfile: None,
            registries_conf: None,
        }
    }
}

/// The registries configuration (containers-registries.conf(5)) as podman
/// finds it: `explicit` (`--registries-conf`), else
/// `$CONTAINERS_REGISTRIES_CONF` (either must exist), else
/// `$HOME/.config/containers/registries.conf` if it exists, else
/// `/etc/containers/registries.conf` (if it exists). Then the drop-ins,
/// `*.conf` sorted by name, each over the earlier: of the directory
/// `FILE.d` next to the file, then of
/// `$HOME/.config/containers/registries.conf.d` (only that one for the
/// user's own file, as podman); last the aliases podman records in
/// `short-name-aliases.conf` (`$XDG_CACHE_HOME/containers/`, or
/// `/var/cache/containers/` as root). No file at all: an empty
/// configuration (a short name is Docker Hub's, no mirrors).
pub fn load_registries_conf(explicit: Option<&Path>) -> Result<config::Config> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from);
    let user_dir = home
        .as_ref()
        .map(|h| h.join(".config/containers/registries.conf.d"));
    let user_file = home
        .as_ref()
        .map(|h| h.join(".config/containers/registries.conf"))
        .filter(|f| f.exists());
    let (file, must_exist, dirs) = match explicit
        .map(PathBuf::from)
        .or_else(|| env("CONTAINERS_REGISTRIES_CONF").map(PathBuf::from))
    {
        Some(f) => {
            let d = PathBuf::from(format!("{}.d", f.display()));
            (
                f,
                true,
                [Some(d), user_dir]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
            )
        }
        None => match user_file {
            Some(f) => (f, true, user_dir.into_iter().collect()),
            None => {
                let f = PathBuf::from("/etc/containers/registries.conf");
                let d = PathBuf::from("/etc/containers/registries.conf.d");
                (
                    f,
                    false,
                    [Some(d), user_dir].into_iter().flatten().collect(),
                )
            }
        },
    };
    let read = |f: &Path| -> Result<Option<String>> {
        match std::fs::read_to_string(f) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", f.display())),
        }
    };
    let mut conf = config::Config::default();
    match read(&file)? {
        Some(t) => {
            conf = config::Config::parse(&t, &file.display().to_string(), false)
                .map_err(|e| anyhow!(e))?
        }
        None if must_exist => {
            anyhow::bail!("registries configuration {}: no such file", file.display())
        }
        None => {}
    }
    let mut drop_ins = Vec::new();
    for d in dirs {
        let mut here: Vec<PathBuf> = match std::fs::read_dir(&d) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && !p.is_dir())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
        };
        here.sort();
        drop_ins.extend(here);
    }
    let cache = if crate::sys::process::uid() == 0 {
        Some(PathBuf::from("/var/cache"))
    } else {
        env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".cache")))
    };
    drop_ins.extend(cache.map(|c| c.join("containers/short-name-aliases.conf")));
    for f in drop_ins {
        if let Some(t) = read(&f)? {
            let c = config::Config::parse(&t, &f.display().to_string(), true)
                .map_err(|e| anyhow!(e))?;
            conf.merge(c);
        }
    }
    Ok(conf)
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
/// A file that names a credential helper for the registry (`credHelpers`,
/// else `credsStore`) is answered by the helper, not by its own entries
/// ([`source_for`]); a helper that has nothing for the registry passes to
/// the next file, one that is missing or fails is an error.
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
        match source_for(&text, &r.registry, &r.repository)
            .map_err(|e| anyhow!("auth file {}: {e}", f.display()))?
        {
            Source::File(c) => return Ok(Some(c)),
            Source::Helper(h) => {
                let got = helper::get(&h, &r.registry).with_context(|| {
                    format!(
                        "{}: the credentials of {} (auth file {})",
                        r,
                        r.registry,
                        f.display()
                    )
                })?;
                match got {
                    Some(c) => {
                        tracing::debug!("{}: credentials from {}", r.registry, h.program());
                        return Ok(Some(c));
                    }
                    None => tracing::debug!("{}: {} has none", r.registry, h.program()),
                }
            }
            Source::Nothing => {}
        }
    }
    Ok(None)
}

/// The credential helper the login file names for `registry`, if any.
fn login_helper(file: &Path, text: Option<&str>, registry: &str) -> Result<Option<Helper>> {
    match text {
        Some(t) if !t.trim().is_empty() => {
            helper_for(t, registry).map_err(|e| anyhow!("auth file {}: {e}", file.display()))
        }
        _ => Ok(None),
    }
}

fn read_login_file(file: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading auth file {}", file.display())),
    }
}

/// The auth file `login` and `logout` write: `--authfile`, else
/// `$REGISTRY_AUTH_FILE`, else podman's `$XDG_RUNTIME_DIR/containers/auth.json`
/// (`/run/containers/UID/auth.json` without `XDG_RUNTIME_DIR`).
pub fn login_auth_file(opts: &RegistryOptions) -> PathBuf {
    if let Some(f) = &opts.authfile {
        return f.clone();
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        return PathBuf::from(f);
    }
    match env("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("containers/auth.json"),
        None => PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            crate::sys::process::uid()
        )),
    }
}

/// A registry as `login` takes it: `host[:port]`, with any `https://`
/// and trailing `/` dropped; Docker Hub's names are `docker.io`.
fn registry_reference(registry: &str) -> Result<Reference> {
    let r = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let r = match r {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        r => r,
    };
    if r.is_empty() || r.contains('/') {
        anyhow::bail!("{registry:?}: a registry is HOST[:PORT]");
    }
    // Checked by the reference grammar, as a registry of some repository.
    Reference::parse(&format!("{r}/x")).map_err(|e| anyhow!("{registry:?}: {e}"))?;
    Ok(Reference {
        registry: r.to_string(),
        repository: String::new(),
        tag: None,
        digest: None,
    })
}

/// `login`: checks `creds` against `registry` (`GET /v2/`, answering its
/// challenge), then stores them: through the credential helper the auth
/// file names for the registry (`credHelpers`, else `credsStore`; the file
/// is left as it is), else in the auth file. Returns where they went.
pub fn login(registry: &str, creds: Credentials, opts: &RegistryOptions) -> Result<String> {
    let r = registry_reference(registry)?;
    let file = login_auth_file(opts);
    let old = read_login_file(&file)?;
    // Known before the registry is asked, so a bad file costs no round trip.
    let helper = login_helper(&file, old.as_deref(), &r.registry)?;
    client::Client::connect(&r, opts.tls_verify, Some(creds.clone()), false)
        .with_context(|| format!("logging in to {}", r.registry))?;
    if let Some(h) = helper {
        helper::store(&h, &r.registry, &creds)
            .with_context(|| format!("storing the login to {}", r.registry))?;
        return Ok(format!("credential helper {}", h.program()));
    }
    let text = edit_auth(old.as_deref(), &r.registry, Some(&creds))
        .map_err(|e| anyhow!("auth file {}: {e}", file.display()))?
        .expect("a login always writes");
    write_auth_file(&file, &text)?;
    Ok(file.display().to_string())
}

/// `logout`: erases `registry`'s credentials from the credential helper
/// the auth file names for it, if any, and removes its entry from the
/// auth file; returns where they were. An error when there were none.
pub fn logout(registry: &str, opts: &RegistryOptions) -> Result<String> {
    let r = registry_reference(registry)?;
    let file = login_auth_file(opts);
    let old = read_login_file(&file)?;
    let mut removed = Vec::new();
    let mut looked = vec![file.display().to_string()];
    if let Some(h) = login_helper(&file, old.as_deref(), &r.registry)? {
        if helper::erase(&h, &r.registry)
            .with_context(|| format!("removing the login to {}", r.registry))?
        {
            removed.push(format!("credential helper {}", h.program()));
        }
        looked.insert(0, h.program());
    }
    if let Some(text) = edit_auth(old.as_deref(), &r.registry, None)
        .map_err(|e| anyhow!("auth file {}: {e}", file.display()))?
    {
        write_auth_file(&file, &text)?;
        removed.push(file.display().to_string());
    }
    if removed.is_empty() {
        anyhow::bail!(
            "not logged in to {} (nothing in {})",
            r.registry,
            looked.join(" or ")
        );
    }
    Ok(removed.join(" and "))
}

fn write_auth_file(file: &std::path::Path, text: &str) -> Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::store::write_atomic(file, text.as_bytes())
        .with_context(|| format!("writing auth file {}", file.display()))
}
