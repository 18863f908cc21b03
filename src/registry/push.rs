//! `push`: an image of the store to a registry. Each blob is checked with
//! `HEAD` first and uploaded only if the registry lacks it (one `POST` to
//! open the upload, one monolithic `PUT` with the digest), then the OCI
//! manifest is put under the tag. The store keeps each layer as its
//! uncompressed tar, so layers go up uncompressed (their digest is the
//! diff id): the image id (the config digest) is the one pulled, the
//! manifest digest is new (ARCHITECTURE.md, "Push, and why a pulled
//! image's manifest digest changes").

use std::fs::File;
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
    /// Blobs (layers and config) uploaded; the others were there.
    pub uploaded: usize,
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

/// What a blob's bytes come from.
#[derive(Clone, Copy)]
enum Blob<'a> {
    /// A stored layer tar.
    File(&'a Path),
    /// A config, in memory.
    Bytes(&'a [u8]),
}

/// Uploads one blob: `POST` opens the upload, one `PUT` sends it all.
fn upload(c: &Client, hex: &str, blob: Blob<'_>, what: &str) -> Result<()> {
    let start = c.url("blobs/uploads/");
    let resp = c.send(what, &|a, auth| {
        let mut q = a.post(&start);
        if let Some(h) = auth {
            q = q.header("Authorization", h);
        }
        q.send_empty()
    })?;
    let resp = c.expect(resp, &format!("{what}: starting the upload"), &[202])?;
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "{}: {what}: the registry gave no upload location",
                c.reference()
            )
        })?;
    let mut url = c.absolute(loc);
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest=sha256%3A{hex}"));
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
    Ok(())
}

/// Pushes stored image `image` to `reference`; see the module doc.
pub fn push(store: &Store, image: &str, reference: &str, opts: &RegistryOptions) -> Result<Pushed> {
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
    let creds = credentials(opts, &r)?;
    let c = Client::connect(&r, opts.tls_verify, creds, true)?;
    let (mut uploaded, mut present) = (0, 0);
    for (i, (diff_id, _, path)) in layers.iter().enumerate() {
        if has_blob(&c, diff_id)? {
            present += 1;
            continue;
        }
        let what = format!("uploading layer {i} (sha256:{})", &diff_id[..12]);
        upload(&c, diff_id, Blob::File(path), &what)?;
        uploaded += 1;
    }
    let cid = sha256_hex(&config);
    if has_blob(&c, &cid)? {
        present += 1;
    } else {
        upload(&c, &cid, Blob::Bytes(&config), "uploading the config")?;
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
        present,
    })
}
