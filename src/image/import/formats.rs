//! The image formats an import understands, each turned into candidates
//! (config, layer blobs, tags) for [`super::Plan`]: docker-archive
//! (`manifest.json`), the legacy Docker v1 layout (`<id>/json` +
//! `repositories`), OCI image layouts (`index.json`, nested indexes) and
//! plain rootfs tars.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{decompressor, short, source, Candidate, Source};
use crate::oci::{is_hex64, normalize_ref, parse_digest, sha256_hex, synthesize_config};

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `sha256` hex digest a blob path names, if it names one
/// (`blobs/sha256/<hex>`, or `<hex>.json` for docker-archive configs).
fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let base = base.strip_suffix(".json").unwrap_or(base);
    if name.contains("blobs/sha256/") || name.ends_with(".json") {
        is_hex64(base).then(|| base.to_string())
    } else {
        None
    }
}

pub(super) fn docker_candidates(src: &Source) -> Result<Vec<Candidate>> {
    let m: Vec<DockerManifestEntry> = serde_json::from_slice(&src.read("manifest.json")?)
        .context("manifest.json is not a docker-archive manifest")?;
    let mut out = Vec::new();
    for e in m {
        let config = src
            .read(&e.config)
            .with_context(|| format!("manifest.json: config {:?}", e.config))?;
        let id = sha256_hex(&config);
        if let Some(want) = digest_in_name(&e.config) {
            if want != id {
                bail!(
                    "config {:?} does not match its digest (content is sha256:{id})",
                    e.config
                );
            }
        }
        for l in &e.layers {
            source::resolve_inside("", l)
                .with_context(|| "manifest.json: layer path".to_string())?;
        }
        out.push(Candidate {
            config,
            id,
            layers: e
                .layers
                .iter()
                .map(|l| (l.clone(), digest_in_name(l)))
                .collect(),
            tags: e.repo_tags.unwrap_or_default(),
            source: "docker-archive",
            diff_ids: None,
        });
    }
    Ok(out)
}

pub(super) fn legacy_ids(src: &Source) -> impl Iterator<Item = String> + '_ {
    src.member_names().filter_map(|n| {
        let id = n.strip_suffix("/json")?;
        is_hex64(id).then(|| id.to_string())
    })
}

/// The Docker v1 graph format: `<id>/json` (with `parent`), `<id>/layer.tar`,
/// and `repositories` naming the heads.
pub(super) fn legacy_candidates(src: &Source) -> Result<Vec<Candidate>> {
    let mut heads: Vec<(String, Vec<String>)> = Vec::new();
    if src.has("repositories") {
        let repos: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_slice(&src.read("repositories")?)
                .context("repositories is not valid")?;
        for (name, tags) in repos {
            for (tag, id) in tags {
                let tagname = format!("{name}:{tag}");
                match heads.iter_mut().find(|(h, _)| *h == id) {
                    Some((_, t)) => t.push(tagname),
                    None => heads.push((id, vec![tagname])),
                }
            }
        }
    } else {
        let ids: Vec<String> = legacy_ids(src).collect();
        let mut parents = BTreeSet::new();
        for id in &ids {
            let j: Value = serde_json::from_slice(&src.read(&format!("{id}/json"))?)?;
            if let Some(p) = j.get("parent").and_then(Value::as_str) {
                parents.insert(p.to_string());
            }
        }
        heads = ids
            .into_iter()
            .filter(|i| !parents.contains(i))
            .map(|i| (i, vec![]))
            .collect();
    }
    let mut out = Vec::new();
    for (head, tags) in heads {
        if !is_hex64(&head) {
            bail!("repositories names an invalid image id {head:?}");
        }
        let mut chain = Vec::new();
        let mut cur = Some(head.clone());
        let mut top_json = None;
        while let Some(id) = cur {
            if !is_hex64(&id) || chain.contains(&id) || chain.len() > 4096 {
                bail!("legacy image {}: bad parent chain at {id:?}", short(&head));
            }
            let j: Value = serde_json::from_slice(&src.read(&format!("{id}/json"))?)
                .with_context(|| format!("{id}/json is not valid JSON"))?;
            cur = j.get("parent").and_then(Value::as_str).map(str::to_string);
            top_json.get_or_insert(j.clone());
            chain.push(id);
        }
        chain.reverse();
        // Diff ids are only known from the content: hash the layers now.
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        for id in &chain {
            let (r, _) = src.open(&format!("{id}/layer.tar"))?;
            let (mut dec, _) = decompressor(BufReader::new(r))?;
            let mut h = Sha256::new();
            io::copy(&mut dec, &mut HashWriter(&mut h))
                .with_context(|| format!("reading {id}/layer.tar"))?;
            diff_ids.push(hex::encode(h.finalize()));
            let j: Value = serde_json::from_slice(&src.read(&format!("{id}/json"))?)?;
            let created_by = j
                .pointer("/container_config/Cmd")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            history
                .push(serde_json::json!({"created": j.get("created"), "created_by": created_by}));
        }
        let top = top_json.expect("non-empty chain");
        let config = serde_json::json!({
            "architecture": top.get("architecture").cloned().unwrap_or("amd64".into()),
            "os": top.get("os").cloned().unwrap_or("linux".into()),
            "created": top.get("created"),
            "config": top.get("config").cloned().unwrap_or(Value::Object(Default::default())),
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
            "history": history,
        });
        out.push(Candidate {
            config: serde_json::to_vec(&config)?,
            id: head,
            layers: chain
                .iter()
                .map(|id| (format!("{id}/layer.tar"), None))
                .collect(),
            tags,
            source: "docker-legacy",
            diff_ids: Some(diff_ids),
        });
    }
    Ok(out)
}

struct HashWriter<'a>(&'a mut Sha256);
impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads an OCI blob named by a descriptor and checks its digest and size.
fn oci_blob(src: &Source, desc: &Value, what: &str) -> Result<(Vec<u8>, String)> {
    let (path, hex) = oci_blob_path(desc, what)?;
    let data = src
        .read(&path)
        .with_context(|| format!("{what}: blob sha256:{hex}"))?;
    let got = sha256_hex(&data);
    if got != hex {
        bail!("{what}: blob {path} does not match its digest (content is sha256:{got})");
    }
    if let Some(size) = desc.get("size").and_then(Value::as_u64) {
        if size != data.len() as u64 {
            bail!(
                "{what}: blob {path} is {} bytes, the descriptor says {size}",
                data.len()
            );
        }
    }
    Ok((data, hex))
}

fn oci_blob_path(desc: &Value, what: &str) -> Result<(String, String)> {
    let digest = desc
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what}: descriptor without a digest"))?;
    let hex = parse_digest(digest)
        .ok_or_else(|| anyhow!("{what}: unsupported digest {digest:?} (sha256 only)"))?;
    Ok((format!("blobs/sha256/{hex}"), hex.to_string()))
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) fn oci_candidates(src: &Source, reference: Option<&str>) -> Result<Vec<Candidate>> {
    let index: Value =
        serde_json::from_slice(&src.read("index.json")?).context("index.json is not valid JSON")?;
    // (manifest descriptor, ref name)
    let mut manifests: Vec<(Value, Option<String>)> = Vec::new();
    collect_manifests(src, &index, None, &mut manifests, 0)?;
    if let Some(r) = reference {
        let available: Vec<String> = manifests.iter().filter_map(|(_, n)| n.clone()).collect();
        manifests.retain(|(_, n)| {
            n.as_deref()
                .is_some_and(|n| n == r || normalize_ref(n) == normalize_ref(r))
        });
        if manifests.is_empty() {
            bail!(
                "no manifest with ref name {r:?} in the OCI layout; it has: {}",
                available.join(", ")
            );
        }
    }
    let mut out = Vec::new();
    for (desc, name) in manifests {
        let (mbytes, mhex) = oci_blob(src, &desc, "manifest")?;
        let m: Value = serde_json::from_slice(&mbytes)
            .with_context(|| format!("manifest sha256:{mhex} is not valid JSON"))?;
        let cdesc = m
            .get("config")
            .ok_or_else(|| anyhow!("manifest sha256:{mhex} has no config"))?;
        let (config, id) = oci_blob(src, cdesc, "image config")?;
        let mut layers = Vec::new();
        for (i, l) in m
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (path, hex) = oci_blob_path(l, &format!("layer {i}"))?;
            if !src.has(&path) {
                bail!("layer {i}: blob sha256:{hex} is missing from the OCI layout");
            }
            layers.push((path, Some(hex)));
        }
        out.push(Candidate {
            config,
            id,
            layers,
            tags: name.into_iter().collect(),
            source: "oci",
            diff_ids: None,
        });
    }
    Ok(out)
}

fn collect_manifests(
    src: &Source,
    index: &Value,
    inherited: Option<String>,
    out: &mut Vec<(Value, Option<String>)>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        bail!("OCI image indexes nested too deep");
    }
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    for d in index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = d
            .pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| inherited.clone());
        if let Some(p) = d.get("platform") {
            let arch = p
                .get("architecture")
                .and_then(Value::as_str)
                .unwrap_or(host_arch);
            if depth > 0 && arch != host_arch {
                continue;
            }
        }
        let mt = d.get("mediaType").and_then(Value::as_str).unwrap_or("");
        if mt.ends_with("image.index.v1+json") || mt.ends_with("manifest.list.v2+json") {
            let (bytes, _) = oci_blob(src, d, "image index")?;
            let sub: Value = serde_json::from_slice(&bytes)?;
            collect_manifests(src, &sub, name, out, depth + 1)?;
        } else {
            out.push((d.clone(), name));
        }
    }
    Ok(())
}

/// A plain rootfs tar: one layer (the whole decompressed `file`), with a
/// synthesized config. The config depends only on the content, so the same
/// rootfs gives the same image id from a file, stdin, or another compression.
pub(super) fn rootfs_candidate(file: &Path) -> Result<Candidate> {
    let mut h = Sha256::new();
    io::copy(&mut File::open(file)?, &mut HashWriter(&mut h))?;
    let diff_id = hex::encode(h.finalize());
    let config = synthesize_config(&diff_id, "layerfs import (rootfs tar)");
    Ok(Candidate {
        id: sha256_hex(&config),
        config,
        layers: vec![("rootfs.tar".to_string(), None)],
        tags: Vec::new(),
        source: "rootfs",
        diff_ids: None,
    })
}

/// Parses a docker-archive `manifest.json` as import reads it and checks
/// each config and layer path as import would, without an archive. For
/// the fuzz target `fuzz/fuzz_targets/manifests.rs` only.
pub(super) fn check_docker_manifest(bytes: &[u8]) -> Result<usize> {
    let m: Vec<DockerManifestEntry> = serde_json::from_slice(bytes)?;
    for e in &m {
        let _ = digest_in_name(&e.config);
        source::resolve_inside("", &e.config)?;
        for l in &e.layers {
            let _ = digest_in_name(l);
            source::resolve_inside("", l)?;
        }
    }
    Ok(m.len())
}
