//! The HTTP side of the distribution API, on ureq (sync, rustls): the
//! scheme and TLS choice, authentication (anonymous, Basic, Bearer tokens
//! from `WWW-Authenticate` challenges), retries with backoff on 5xx and
//! connection errors, and errors that name the reference. Redirects (to
//! blob storage) are followed by ureq, which drops `Authorization` on them;
//! proxies come from `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` (ureq's default).

use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::auth::{parse_challenges, token_of, Challenge, Credentials};
use super::manifest::Descriptor;
use crate::image::import::Growing;
use crate::oci::Reference;

/// Builds and sends one request, given the agent and the current
/// `Authorization` value.
pub type MakeRequest<'a> =
    dyn Fn(&Agent, Option<&str>) -> std::result::Result<Response<Body>, ureq::Error> + 'a;

/// How many times a request is sent before its error is reported.
const ATTEMPTS: u32 = 4;

/// A connection to one repository of one registry.
pub struct Client {
    agent: Agent,
    /// `https://host[:port]` or `http://...`.
    base: String,
    reference: Reference,
    creds: Option<Credentials>,
    /// The `Authorization` value in use, once a challenge asked for one.
    auth: Mutex<Option<String>>,
    /// The token scope's actions: `pull` or `pull,push`.
    actions: &'static str,
    /// Other repositories whose pull scope a token is asked for too (the
    /// sources of cross-repository mounts).
    pull_scopes: Vec<String>,
}

/// A request that failed because this endpoint cannot serve it (the
/// connection failed, or it answered 404, 429 or 5xx after the retries):
/// a pull may try its next source (a mirror, then the registry). An
/// authentication failure, a refused certificate or bytes that do not
/// match their digest are other errors, and stop the pull.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Did `e` come from an endpoint that cannot serve the request
/// ([`Unavailable`])?
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unavailable>().is_some()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Is this transport error worth another try (the connection, not the
/// request, failed)?
fn transient(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        // Not a refused certificate or a TLS handshake (InvalidData):
        // those fail the same way every time.
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionReset
                | K::ConnectionAborted
                | K::ConnectionRefused
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::TimedOut
                | K::Interrupted
        ),
        ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => true,
        _ => false,
    }
}

/// Did this transport error fail to reach the endpoint at all (refused,
/// reset, timed out, a name that does not resolve), rather than reach
/// something that failed TLS (InvalidData) or the protocol?
fn unreachable(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        ureq::Error::HostNotFound => true,
        e => transient(e),
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt));
}

impl Client {
    /// Connects to `reference`'s registry: HTTPS verified against the
    /// system's roots (rustls-platform-verifier; `SSL_CERT_FILE` is
    /// honoured), or with `tls_verify` false unverified HTTPS, falling back
    /// to plain HTTP when the registry speaks no TLS. Sends `GET /v2/`
    /// once, and authenticates if it is asked to.
    pub fn connect(
        reference: &Reference,
        tls_verify: bool,
        creds: Option<Credentials>,
        push: bool,
    ) -> Result<Client> {
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .disable_verification(!tls_verify)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("layerfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut client = Client {
            agent,
            base: format!("https://{}", reference.api_host()),
            reference: reference.clone(),
            creds,
            auth: Mutex::new(None),
            actions: if push { "pull,push" } else { "pull" },
            pull_scopes: Vec::new(),
        };
        if !tls_verify {
            // One plain try: a registry without TLS fails the handshake at
            // once, and retrying that would only wait.
            if let Err(e) = client.agent.get(format!("{}/v2/", client.base)).call() {
                tracing::info!("HTTPS failed ({e}); using plain HTTP");
                client.base = format!("http://{}", reference.api_host());
            }
        }
        let ping = format!("{}/v2/", client.base);
        let resp = client.send("contacting the registry", &|a, auth| {
            let mut r = a.get(&ping);
            if let Some(h) = auth {
                r = r.header("Authorization", h);
            }
            r.call()
        })?;
        client.expect(resp, "contacting the registry", &[200])?;
        Ok(client)
    }

    /// Asks the tokens from now on for pull access to `repos` as well (a
    /// token already held is dropped, so the next challenge gets one).
    pub fn with_pull_scopes(mut self, repos: Vec<String>) -> Client {
        if !repos.is_empty() {
            self.pull_scopes = repos;
            *self.auth.lock().expect("auth lock") = None;
        }
        self
    }

    /// The reference, for messages.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// `https://host/v2/REPO/` + `rest`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.reference.repository)
    }

    /// An absolute URL for a `Location` header (which may be relative).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Sends the request `mk` builds (given the agent and the current
    /// `Authorization`), retrying transient failures and 5xx answers with
    /// backoff, and answering one 401 challenge. Any other status is
    /// returned for the caller to judge.
    pub fn send(&self, what: &str, mk: &MakeRequest<'_>) -> Result<Response<Body>> {
        self.send_as(what, mk, true)
    }

    /// [`Client::send`], answering a 401's challenge only if `challenges`
    /// (a token server's 401 is its answer: the credentials are refused).
    fn send_as(
        &self,
        what: &str,
        mk: &MakeRequest<'_>,
        challenges: bool,
    ) -> Result<Response<Body>> {
        let mut authenticated = !challenges;
        let mut attempt = 0;
        loop {
            let auth = self.auth.lock().expect("auth lock").clone();
            match mk(&self.agent, auth.as_deref()) {
                Err(e) if transient(&e) && attempt + 1 < ATTEMPTS => {
                    tracing::info!("{}: {what}: {e}; retrying", self.reference);
                    backoff(attempt);
                    attempt += 1;
                }
                Err(e) => {
                    let hint = if e.to_string().contains("certificate") {
                        " (a registry with a private CA: SSL_CERT_FILE=CA.pem; a local test registry: --tls-verify=false)"
                    } else {
                        ""
                    };
                    let msg = format!("{}: {what}: {e}{hint}", self.reference);
                    if unreachable(&e) {
                        return Err(Unavailable(msg).into());
                    }
                    bail!(msg)
                }
                Ok(r) if r.status().as_u16() == 401 && !authenticated => {
                    let challenges: Vec<Challenge> = r
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect();
                    self.authenticate(&challenges)?;
                    authenticated = true;
                }
                Ok(r) if r.status().is_server_error() && attempt + 1 < ATTEMPTS => {
                    tracing::info!("{}: {what}: {}; retrying", self.reference, r.status());
                    backoff(attempt);
                    attempt += 1;
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    /// Answers a 401: a Bearer challenge is taken to its token server
    /// (with the credentials, if any, as Basic auth; an identity token as
    /// the OAuth2 `refresh_token` grant, POSTed), a Basic one is answered
    /// with the credentials.
    fn authenticate(&self, challenges: &[Challenge]) -> Result<()> {
        let r = &self.reference;
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = b
                .param("realm")
                .ok_or_else(|| anyhow!("{r}: the registry's Bearer challenge names no realm"))?;
            // A login names no repository, and asks for no scope.
            let mut scopes = Vec::new();
            if !r.repository.is_empty() {
                scopes.push(format!("repository:{}:{}", r.repository, self.actions));
                for repo in &self.pull_scopes {
                    scopes.push(format!("repository:{repo}:pull"));
                }
            }
            let resp = match self.creds.as_ref().filter(|c| c.is_identity_token()) {
                // An identity token is an OAuth2 refresh token: POSTed as
                // the distribution spec's oauth grant, never sent as Basic.
                Some(c) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", c.password.clone()),
                        ("client_id", "layerfs".to_string()),
                    ];
                    if let Some(s) = b.param("service") {
                        form.push(("service", s.to_string()));
                    }
                    if !scopes.is_empty() {
                        form.push(("scope", scopes.join(" ")));
                    }
                    let post = |a: &Agent, _: Option<&str>| {
                        a.post(realm)
                            .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
                    };
                    self.send_as("getting a token with the identity token", &post, false)
                }
                None => {
                    let mut url = format!("{realm}{}", if realm.contains('?') { '&' } else { '?' });
                    if let Some(s) = b.param("service") {
                        url.push_str(&format!("service={}&", query_escape(s)));
                    }
                    let scopes: Vec<String> = scopes
                        .iter()
                        .map(|s| format!("scope={}", query_escape(s)))
                        .collect();
                    url.push_str(&scopes.join("&"));
                    let basic = self.creds.as_ref().map(Credentials::basic_header);
                    let get = |a: &Agent, _: Option<&str>| {
                        let mut q = a.get(&url);
                        if let Some(h) = &basic {
                            q = q.header("Authorization", h);
                        }
                        q.call()
                    };
                    self.send_as("getting a token", &get, false)
                }
            };
            let resp = resp?;
            let mut resp = self.expect(resp, &format!("getting a token from {realm}"), &[200])?;
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .with_context(|| format!("{r}: reading the answer of the token server {realm}"))?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("{r}: the token server {realm} answered no JSON"))?;
            let token = token_of(&v)
                .ok_or_else(|| anyhow!("{r}: the token server {realm} answered no token"))?;
            *self.auth.lock().expect("auth lock") = Some(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(c) = &self.creds else {
                bail!("{r}: the registry wants a user name and password (401 Unauthorized): give --creds USER:PASSWORD or an auth file (--authfile)");
            };
            if c.is_identity_token() {
                bail!("{r}: the credentials are an identity token (user name {}), which only a Bearer token server takes, and the registry asks for Basic auth", c.user);
            }
            *self.auth.lock().expect("auth lock") = Some(c.basic_header());
            return Ok(());
        }
        bail!("{r}: 401 Unauthorized, with no challenge layerfs can answer (Basic or Bearer)")
    }

    /// `resp` if its status is one of `ok`, else an error naming the
    /// reference, what was being done, and the registry's own message.
    pub fn expect(
        &self,
        mut resp: Response<Body>,
        what: &str,
        ok: &[u16],
    ) -> Result<Response<Body>> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            return Ok(resp);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.pointer("/errors/0")?;
                Some(format!(
                    "{}: {}",
                    e.get("code")?.as_str()?,
                    e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ))
            })
            .map(|d| format!(" [{d}]"))
            .unwrap_or_default();
        let r = &self.reference;
        let why = match status {
            401 => "authentication failed (401 Unauthorized): the credentials were refused or are missing (--creds USER:PASSWORD, --authfile)".to_string(),
            403 => "access denied (403 Forbidden)".to_string(),
            404 => "not found (404): no such repository, tag or blob".to_string(),
            429 => "the registry is rate limiting this client (429 Too Many Requests); try again later".to_string(),
            s => format!("the registry answered {s}"),
        };
        let msg = format!("{r}: {what}: {why}{detail}");
        if status == 404 || status == 429 || (500..600).contains(&status) {
            return Err(Unavailable(msg).into());
        }
        bail!(msg)
    }

    /// A small document (a manifest or config), at most 64 MiB: its
    /// bytes and Content-Type.
    pub fn get_small(&self, url: &str, accept: &str, what: &str) -> Result<(Vec<u8>, String)> {
        let resp = self.send(what, &|a, auth| {
            let mut q = a.get(url).header("Accept", accept);
            if let Some(h) = auth {
                q = q.header("Authorization", h);
            }
            q.call()
        })?;
        let mut resp = self.expect(resp, what, &[200])?;
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .with_context(|| format!("{}: {what}: reading", self.reference))?;
        Ok((bytes, ct))
    }

    /// Downloads blob `d` to `dst`, checking its size and sha256 as it
    /// streams, with its progress bar if any. The bytes go to `partial`
    /// first, which is linked to `dst` once complete and verified (the
    /// caller removes `partial` when it no longer needs it): what an
    /// earlier, interrupted download left there is kept and resumed with
    /// a `Range` request, as is a connection lost midway (up to 4 times
    /// without progress). A registry that ignores the range (200) sends
    /// the blob again from the start. `watch`, if given, is told how many
    /// bytes `partial` holds as they land (and when it is emptied to start
    /// again), for an import reading it meanwhile; the caller tells it the
    /// end.
    pub fn download_blob(
        &self,
        d: &Descriptor,
        dst: &Path,
        partial: &Path,
        what: &str,
        progress: Option<&indicatif::ProgressBar>,
        watch: Option<&Growing>,
    ) -> Result<()> {
        let r = &self.reference;
        let url = self.url(&format!("blobs/sha256:{}", d.digest));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(partial)
            .with_context(|| format!("{r}: {what}: opening {}", partial.display()))?;
        // What an earlier download left: hashed again (the hash state is
        // not kept), or dropped if it cannot be a prefix of the blob.
        let mut h = Sha256::new();
        let mut got = file.metadata()?.len();
        if got > d.size {
            file.set_len(0)?;
            got = 0;
        } else if got > 0 {
            let n = std::io::copy(&mut (&file).take(got), &mut HashWriter(&mut h))?;
            if n != got {
                bail!("{r}: {what}: {} shrank while read", partial.display());
            }
            tracing::info!("{r}: {what}: resuming at byte {got} of {}", d.size);
        }
        if let Some(p) = progress {
            p.set_position(got);
        }
        if let Some(w) = watch {
            w.wrote(got);
        }
        // A resumed download whose result does not verify is fetched
        // again whole, once: the bytes kept could be what was damaged.
        let mut resumed = got > 0;
        let mut attempt = 0;
        loop {
            while got < d.size {
                let range = (got > 0).then(|| format!("bytes={got}-"));
                let resp = self.send(what, &|a, auth| {
                    let mut q = a.get(&url);
                    if let Some(h) = auth {
                        q = q.header("Authorization", h);
                    }
                    if let Some(v) = &range {
                        q = q.header("Range", v);
                    }
                    q.call()
                })?;
                let resp = self.expect(resp, what, &[200, 206])?;
                if resp.status().as_u16() == 206 {
                    let start = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range_start);
                    if start != Some(got) {
                        bail!("{r}: {what}: asked for the blob from byte {got}, the registry answered a range starting at {start:?}");
                    }
                } else if got > 0 {
                    tracing::info!(
                    "{r}: {what}: the registry ignored the range; downloading again from the start"
                );
                    if let Some(w) = watch {
                        w.rewind();
                    }
                    file.set_len(0)?;
                    got = 0;
                    h = Sha256::new();
                    if let Some(p) = progress {
                        p.set_position(0);
                    }
                }
                file.seek(std::io::SeekFrom::Start(got))?;
                let before = got;
                let res =
                    self.stream_into(resp, &mut file, &mut h, &mut got, d, what, progress, watch);
                match res {
                    Ok(()) => {}
                    Err(Stream::Fatal(e)) => return Err(e),
                    Err(Stream::Lost(e)) => {
                        if got > before {
                            attempt = 0;
                        }
                        if attempt + 1 >= ATTEMPTS {
                            bail!("{r}: {what}: {e} (the {got} bytes received are kept; pull again to resume)");
                        }
                        tracing::info!("{r}: {what}: {e}; resuming at byte {got}");
                        backoff(attempt);
                        attempt += 1;
                        continue;
                    }
                }
                if got < d.size {
                    // The body ended early without an error: ask for the rest.
                    if got == before {
                        bail!(
                            "{r}: {what}: blob sha256:{} is {got} bytes, the manifest says {}",
                            d.digest,
                            d.size
                        );
                    }
                    continue;
                }
            }
            let digest = hex::encode(h.clone().finalize());
            if digest != d.digest && resumed {
                tracing::info!("{r}: {what}: the resumed blob does not match its digest; downloading it again whole");
                resumed = false;
                if let Some(w) = watch {
                    w.rewind();
                }
                file.set_len(0)?;
                got = 0;
                h = Sha256::new();
                if let Some(p) = progress {
                    p.set_position(0);
                }
                continue;
            }
            if digest != d.digest {
                drop(file);
                let _ = std::fs::remove_file(partial);
                bail!("{r}: {what}: blob does not match its digest: the manifest says sha256:{}, the registry sent sha256:{digest}", d.digest);
            }
            file.sync_all()?;
            drop(file);
            // Linked, not moved: the blob stays complete in `partial` until
            // the pull that wanted it is done, so a pull killed before its
            // import finished downloads none of it again.
            let _ = std::fs::remove_file(dst);
            std::fs::hard_link(partial, dst).with_context(|| {
                format!("{r}: {what}: linking {} into place", partial.display())
            })?;
            return Ok(());
        }
    }

    /// Appends the body of `resp` to `file` at `got`, hashing it into `h`.
    #[allow(clippy::too_many_arguments)]
    fn stream_into(
        &self,
        resp: Response<Body>,
        file: &mut std::fs::File,
        h: &mut Sha256,
        got: &mut u64,
        d: &Descriptor,
        what: &str,
        progress: Option<&indicatif::ProgressBar>,
        watch: Option<&Growing>,
    ) -> std::result::Result<(), Stream> {
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match body.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if *got + n as u64 > d.size {
                        return Err(Stream::Fatal(anyhow!("{}: {what}: the registry sent more than the {} bytes the manifest gives blob sha256:{}", self.reference, d.size, d.digest)));
                    }
                    h.update(&buf[..n]);
                    file.write_all(&buf[..n]).map_err(|e| {
                        Stream::Fatal(anyhow!(
                            "{}: {what}: writing the download: {e}",
                            self.reference
                        ))
                    })?;
                    *got += n as u64;
                    if let Some(p) = progress {
                        p.inc(n as u64);
                    }
                    if let Some(w) = watch {
                        w.wrote(*got);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Stream::Lost(e)),
            }
        }
    }
}

/// How streaming a body ended when it did not end well.
enum Stream {
    /// The connection was lost: the bytes so far are good, ask for more.
    Lost(std::io::Error),
    /// The download cannot go on.
    Fatal(anyhow::Error),
}

/// Feeds what is written into a hash.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` value.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_range_start_is_read() {
        assert_eq!(super::content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(super::content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(super::content_range_start("bytes */200"), None);
        assert_eq!(super::content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            super::query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            super::query_escape("registry.docker.io"),
            "registry.docker.io"
        );
    }
}
