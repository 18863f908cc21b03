//! `push`: an image of the store to a registry. Each blob is checked with
//! `HEAD` first; one the registry lacks is mounted from another repository
//! of the same registry where the store knows one that has it (a tag of a
//! stored image with that layer: `POST ...?mount=&from=`), else uploaded:
//! one `POST` to open the upload, then one monolithic `PUT` with the
//! digest, or, for a blob larger than the chunk size, `PATCH`es of one
//! chunk each (a failed chunk is sent again from the offset the registry
//! reports) and an empty `PUT` with the digest. Then the OCI manifest is
//! put under the tag. The store keeps each layer as its
//! uncompressed tar, so layers go up uncompressed (their digest is the
//! diff id): the image id (the config digest) is the one pulled, the
//! manifest digest is new (ARCHITECTURE.md, "Push, and why a pulled
//! image's manifest digest changes").

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::client::Client;
use super::manifest::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use super::{credentials, RegistryOptions};
use crate::oci::{sha256_hex, Reference};
use crate::store::Store;

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// The image id (sha256 of its config).
    pub id: String,
    /// The reference pushed to.
    pub reference: String,
    /// The digest of the manifest put (`sha256:...`).
    pub manifest_digest: String,
    /// Blobs (layers and config) uploaded.
    pub uploaded: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Blobs the registry had already.
    pub present: usize,
}

/// The OCI image manifest of a stored image: its config and its layers
/// as uncompressed tars, `(digest hex, size)` each.
pub fn oci_manifest(config: (&str, u64), layers: &[(String, u64)]) -> Vec<u8> {
    let desc = |mt: &str, d: &str, size: u64| serde_json::json!({"mediaType": mt, "digest": format!("sha256:{d}"), "size": size});
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, config.0, config.1),
        "layers": layers.iter().map(|(d, s)| desc(OCI_LAYER_TAR, d, *s)).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&m).expect("json")
}

/// Does the registry have blob `hex`?
fn has_blob(c: &Client, hex: &str) -> Result<bool> {
    let url = c.url(&format!("blobs/sha256:{hex}"));
    let resp = c.send("checking a blob", &|a, auth| {
        let mut q = a.head(&url);
        if let Some(h) = auth {
            q = q.header("Authorization", h);
        }
        q.call()
    })?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        _ => c
            .expect(resp, &format!("checking blob sha256:{hex}"), &[200])
            .map(|_| false),
    }
}

/// Options of one `layerfs push`.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Connection and credentials.
    pub registry: RegistryOptions,
    /// Blobs larger than this go up in `PATCH` chunks of this size (0:
    /// always one monolithic `PUT`).
    pub chunk_size: u64,
}

/// What a blob's bytes come from.
#[derive(Clone, Copy)]
enum Blob<'a> {
    /// A stored layer tar.
    File(&'a Path),
    /// A config, in memory.
    Bytes(&'a [u8]),
}

/// `location` made absolute, with `?digest=` (or `&digest=`) added.
fn with_digest(c: &Client, location: &str, hex: &str) -> String {
    let mut url = c.absolute(location);
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest=sha256%3A{hex}"));
    url
}

/// The `Location` header of an upload answer.
fn location_of(c: &Client, resp: &ureq::http::Response<ureq::Body>, what: &str) -> Result<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{}: {what}: the registry gave no upload location",
                c.reference()
            )
        })
}

/// The next byte an upload expects, from its `Range: 0-LAST` header
/// (0 when there is none: nothing received).
fn upload_offset(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let Some(v) = resp.headers().get("range") else {
        return Some(0);
    };
    let v = v.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (_, last) = v.split_once('-')?;
    last.trim().parse::<u64>().ok().map(|l| l + 1)
}

/// Opens an upload of blob `hex`, or mounts it from one of `from` (other
/// repositories of the registry): `None` if a mount succeeded, else the
/// upload's location.
fn start_upload(c: &Client, hex: &str, from: &[String], what: &str) -> Result<Option<String>> {
    for repo in from {
        let url = c.url(&format!(
            "blobs/uploads/?mount=sha256%3A{hex}&from={}",
            super::client::query_escape(repo)
        ));
        let resp = c.send(what, &|a, auth| {
            let mut q = a.post(&url);
            if let Some(h) = auth {
                q = q.header("Authorization", h);
            }
            q.send_empty()
        })?;
        match resp.status().as_u16() {
            201 => {
                tracing::info!("{}: {what}: mounted from {repo}", c.reference());
                return Ok(None);
            }
            // The registry could not mount it: it opened an upload instead.
            202 => return location_of(c, &resp, what).map(Some),
            _ => {
                c.expect(resp, &format!("{what}: mounting from {repo}"), &[201, 202])?;
            }
        }
    }
    let start = c.url("blobs/uploads/");
    let resp = c.send(what, &|a, auth| {
        let mut q = a.post(&start);
        if let Some(h) = auth {
            q = q.header("Authorization", h);
        }
        q.send_empty()
    })?;
    let resp = c.expect(resp, &format!("{what}: starting the upload"), &[202])?;
    location_of(c, &resp, what).map(Some)
}

/// Uploads one blob of `size` bytes to the upload at `loc`: one
/// monolithic `PUT`, or `PATCH`es of `chunk` bytes and an empty `PUT`.
fn upload(
    c: &Client,
    hex: &str,
    blob: Blob<'_>,
    size: u64,
    chunk: u64,
    mut loc: String,
    what: &str,
) -> Result<()> {
    let r = c.reference();
    if chunk == 0 || size <= chunk {
        let url = with_digest(c, &loc, hex);
        let resp = c.send(what, &|a, auth| {
            let mut q = a
                .put(&url)
                .header("Content-Type", "application/octet-stream");
            if let Some(h) = auth {
                q = q.header("Authorization", h);
            }
            match blob {
                Blob::File(p) => q.send(File::open(p)?),
                Blob::Bytes(b) => q.send(b),
            }
        })?;
        c.expect(resp, what, &[201])?;
        return Ok(());
    }
    let read_chunk = |off: u64, len: u64| -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len as usize);
        match blob {
            Blob::File(p) => {
                let mut f = File::open(p)?;
                f.seek(SeekFrom::Start(off))?;
                f.take(len).read_to_end(&mut buf)?;
            }
            Blob::Bytes(b) => buf.extend_from_slice(&b[off as usize..(off + len) as usize]),
        }
        if buf.len() as u64 != len {
            bail!("{r}: {what}: the blob shrank while uploaded");
        }
        Ok(buf)
    };
    let mut off = 0u64;
    let mut resyncs = 0;
    while off < size {
        let len = chunk.min(size - off);
        let buf = read_chunk(off, len)?;
        let url = c.absolute(&loc);
        let range = format!("{off}-{}", off + len - 1);
        let resp = c.send(what, &|a, auth| {
            let mut q = a
                .patch(&url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", &range);
            if let Some(h) = auth {
                q = q.header("Authorization", h);
            }
            q.send(&buf[..])
        });
        let ok = match &resp {
            Ok(resp) => resp.status().as_u16() == 202,
            Err(_) => false,
        };
        if ok {
            let resp = resp?;
            loc = location_of(c, &resp, what)?;
            off = match upload_offset(&resp) {
                Some(n) if n == off + len => n,
                got => {
                    bail!("{r}: {what}: sent bytes {range}, the registry says it has up to {got:?}")
                }
            };
            continue;
        }
        // The chunk did not land (lost, or refused as out of order): ask
        // the registry where the upload stands and go on from there.
        resyncs += 1;
        if resyncs > 3 {
            let resp = resp?;
            c.expect(resp, &format!("{what}: sending bytes {range}"), &[202])?;
            unreachable!("expect fails on a status other than 202");
        }
        let status = c.send(what, &|a, auth| {
            let mut q = a.get(&url);
            if let Some(h) = auth {
                q = q.header("Authorization", h);
            }
            q.call()
        })?;
        let status = c.expect(
            status,
            &format!("{what}: asking where the upload stands"),
            &[204],
        )?;
        loc = location_of(c, &status, what).unwrap_or(loc);
        off = upload_offset(&status)
            .filter(|&n| n <= size)
            .ok_or_else(|| {
                anyhow!("{r}: {what}: the registry reports an upload range layerfs cannot read")
            })?;
        tracing::info!("{r}: {what}: chunk {range} did not land; going on from byte {off}");
    }
    let url = with_digest(c, &loc, hex);
    let resp = c.send(what, &|a, auth| {
        let mut q = a.put(&url);
        if let Some(h) = auth {
            q = q.header("Authorization", h);
        }
        q.send_empty()
    })?;
    c.expect(resp, &format!("{what}: closing the upload"), &[201])?;
    Ok(())
}

/// Other repositories of `r`'s registry that the store knows to hold
/// the layer of diff id `diff_id`: those of its tags naming an image with
/// that layer.
fn mount_sources(store: &Store, r: &Reference, diff_id: &str) -> Vec<String> {
    let Ok(tags) = store.tags() else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for (tag, id) in tags {
        let Ok(t) = Reference::parse(&tag) else {
            continue;
        };
        if t.registry != r.registry || t.repository == r.repository || out.contains(&t.repository) {
            continue;
        }
        let has = store.image(&id).is_ok_and(|rec| {
            rec.layers
                .iter()
                .any(|chain| store.layer(chain).is_ok_and(|l| l.diff_id == diff_id))
        });
        if has {
            out.push(t.repository);
        }
    }
    out
}

/// Pushes stored image `image` to `reference`; see the module doc.
pub fn push(store: &Store, image: &str, reference: &str, opts: &PushOptions) -> Result<Pushed> {
    let r = Reference::parse(reference).map_err(|e| anyhow!(e))?;
    let id = store.resolve(image)?;
    let rec = store.image(&id)?;
    let config = store.config(&id)?;
    let mut layers = Vec::new();
    for chain in &rec.layers {
        let l = store.layer(chain)?;
        layers.push((
            l.diff_id.clone(),
            l.size,
            store.layer_dir(chain).join("layer.tar"),
        ));
    }
    let sources: Vec<Vec<String>> = layers
        .iter()
        .map(|(d, ..)| mount_sources(store, &r, d))
        .collect();
    let mut scopes: Vec<String> = sources.iter().flatten().cloned().collect();
    scopes.sort();
    scopes.dedup();
    // registries.conf: a blocked registry is refused, an insecure one is
    // reached as with --tls-verify=false; no mirrors, no location.
    let conf = super::load_registries_conf(opts.registry.registries_conf.as_deref())?;
    let insecure = conf.push_insecure(&r).map_err(|e| anyhow!(e))?;
    let creds = credentials(&opts.registry, &r)?;
    let tls_verify = opts.registry.tls_verify && !insecure;
    let c = Client::connect(&r, tls_verify, creds, true)?.with_pull_scopes(scopes);
    let (mut uploaded, mut mounted, mut present) = (0, 0, 0);
    for (i, (diff_id, size, path)) in layers.iter().enumerate() {
        if has_blob(&c, diff_id)? {
            present += 1;
            continue;
        }
        let what = format!("uploading layer {i} (sha256:{})", &diff_id[..12]);
        match start_upload(&c, diff_id, &sources[i], &what)? {
            None => mounted += 1,
            Some(loc) => {
                upload(
                    &c,
                    diff_id,
                    Blob::File(path),
                    *size,
                    opts.chunk_size,
                    loc,
                    &what,
                )?;
                uploaded += 1;
            }
        }
    }
    let cid = sha256_hex(&config);
    if has_blob(&c, &cid)? {
        present += 1;
    } else {
        let what = "uploading the config";
        let loc = start_upload(&c, &cid, &[], what)?.expect("no mount asked");
        upload(
            &c,
            &cid,
            Blob::Bytes(&config),
            config.len() as u64,
            opts.chunk_size,
            loc,
            what,
        )?;
        uploaded += 1;
    }
    let ls: Vec<(String, u64)> = layers.iter().map(|(d, s, _)| (d.clone(), *s)).collect();
    let manifest = oci_manifest((&cid, config.len() as u64), &ls);
    let mdigest = sha256_hex(&manifest);
    if let Some(d) = &r.digest {
        if d.strip_prefix("sha256:") != Some(mdigest.as_str()) {
            bail!(
                "{r}: the manifest of image {} is sha256:{mdigest}, not the digest given",
                &id[..12]
            );
        }
    }
    let url = c.url(&format!("manifests/{}", r.manifest_ref()));
    let resp = c.send("putting the manifest", &|a, auth| {
        let mut q = a.put(&url).header("Content-Type", OCI_MANIFEST);
        if let Some(h) = auth {
            q = q.header("Authorization", h);
        }
        q.send(&manifest[..])
    })?;
    c.expect(resp, "putting the manifest", &[201])?;
    Ok(Pushed {
        id,
        reference: r.to_string(),
        manifest_digest: format!("sha256:{mdigest}"),
        uploaded,
        mounted,
        present,
    })
}
