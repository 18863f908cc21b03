//! Pure: the manifests of the distribution API. Docker v2 schema 2 and OCI
//! image manifests, Docker manifest lists and OCI indexes (the platform
//! picked from them), and the layer descriptors a pull accepts.

use serde_json::Value;

use crate::oci::parse_digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The `Accept` header of a manifest request: every kind a pull reads.
pub fn accept_header() -> String {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ")
}

/// A content descriptor: media type, digest (bare hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type (may be empty in hand-written manifests).
    pub media_type: String,
    /// The sha256 digest, bare hex.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, String> {
    let digest = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what} has no digest"))?;
    let hex = parse_digest(digest)
        .filter(|_| digest.starts_with("sha256:"))
        .ok_or_else(|| format!("{what} has an unsupported digest {digest:?} (sha256 only)"))?;
    let size = v
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{what} has no size"))?;
    Ok(Descriptor {
        media_type: v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        digest: hex.to_string(),
        size,
    })
}

/// A manifest as fetched: an index to pick from, or one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// A manifest list / OCI index: (platform, manifest descriptor).
    Index(Vec<(Option<Platform>, Descriptor)>),
    /// An image manifest: its config and layers, bottom first.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, bottom first.
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest; `content_type` is the response's, used when the
/// document does not say its own `mediaType`.
pub fn parse_manifest(bytes: &[u8], content_type: &str) -> Result<Manifest, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let mt = v
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_else(|| content_type.split(';').next().unwrap_or("").trim());
    if v.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(
            "a Docker v2 schema 1 manifest: deprecated and not supported (push it again with a current tool)"
                .into(),
        );
    }
    let is_index = mt == OCI_INDEX
        || mt == DOCKER_LIST
        || (mt.is_empty() && v.get("manifests").is_some() && v.get("layers").is_none());
    if is_index {
        let list = v
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or("the index has no manifests")?;
        let mut out = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let d = descriptor(m, &format!("index entry {i}"))?;
            let p = m.get("platform").map(|p| Platform {
                os: p
                    .get("os")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                arch: p
                    .get("architecture")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                variant: p.get("variant").and_then(Value::as_str).map(str::to_string),
            });
            out.push((p, d));
        }
        return Ok(Manifest::Index(out));
    }
    if !(mt == OCI_MANIFEST || mt == DOCKER_MANIFEST || mt.is_empty()) {
        return Err(format!(
            "unsupported manifest type {mt:?} (not an image: an artifact?)"
        ));
    }
    let config = descriptor(
        v.get("config").ok_or("the manifest has no config")?,
        "the config descriptor",
    )?;
    let mut layers = Vec::new();
    for (i, l) in v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("the manifest has no layers")?
        .iter()
        .enumerate()
    {
        let d = descriptor(l, &format!("layer {i}"))?;
        check_layer_type(&d.media_type, l.get("urls").is_some())
            .map_err(|e| format!("layer {i}: {e}"))?;
        layers.push(d);
    }
    Ok(Manifest::Image { config, layers })
}

/// Refuses foreign / non-distributable layers (their bytes live outside
/// the registry, and are not ours to copy) and layer types that are not a
/// tar, compressed or not (encrypted layers, artifacts).
pub fn check_layer_type(media_type: &str, has_urls: bool) -> Result<(), String> {
    if media_type.contains("foreign") || media_type.contains("nondistributable") || has_urls {
        return Err(format!(
            "a foreign (non-distributable) layer ({media_type}): its content is not in the registry, and layerfs does not fetch it from elsewhere"
        ));
    }
    let ok = media_type.is_empty()
        || matches!(
            media_type,
            "application/vnd.oci.image.layer.v1.tar"
                | "application/vnd.oci.image.layer.v1.tar+gzip"
                | "application/vnd.oci.image.layer.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar"
        );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unsupported layer type {media_type:?} (a tar, uncompressed, gzip or zstd, is expected)"
        ))
    }
}

/// A platform: `OS/ARCH[/VARIANT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// The GOARCH name: `amd64`, `arm64`, `arm`...
    pub arch: String,
    /// `v7`, `v8`..., if any.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let p: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&p.len()) || p.iter().any(|x| x.is_empty()) {
            return Err(format!("invalid platform {s:?}: OS/ARCH[/VARIANT] wanted"));
        }
        Ok(Platform {
            os: p[0].to_string(),
            arch: p[1].to_string(),
            variant: p.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform this program runs on, as Go names it.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "arm" => "arm",
            a => a,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    fn matches(&self, p: &Platform) -> bool {
        if self.os != p.os || self.arch != p.arch {
            return false;
        }
        match &self.variant {
            None => true,
            // arm64 images often leave out the (only) variant v8.
            Some(v) => p.variant.as_ref() == Some(v) || (v == "v8" && p.variant.is_none()),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The manifest of an index for `want`: the first entry whose platform
/// matches. Entries without a platform (attestations, artifacts) are never
/// picked. The error lists what the index offers.
pub fn select_platform(
    entries: &[(Option<Platform>, Descriptor)],
    want: &Platform,
) -> Result<Descriptor, String> {
    if let Some((_, d)) = entries
        .iter()
        .find(|(p, _)| p.as_ref().is_some_and(|p| want.matches(p)))
    {
        return Ok(d.clone());
    }
    let offered: Vec<String> = entries
        .iter()
        .filter_map(|(p, _)| p.as_ref().map(|p| p.to_string()))
        .collect();
    Err(format!(
        "no image for platform {want} in the index (it has: {})",
        if offered.is_empty() {
            "no platforms".to_string()
        } else {
            offered.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn image_manifests_of_both_kinds_parse() {
        for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let m = serde_json::json!({"schemaVersion": 2, "mediaType": mt,
                "config": {"mediaType": "x", "digest": D1, "size": 10},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D2, "size": 5}]});
            let Manifest::Image { config, layers } =
                parse_manifest(m.to_string().as_bytes(), "").unwrap()
            else {
                panic!("not an image")
            };
            assert_eq!(config.digest, &D1[7..]);
            assert_eq!(config.size, 10);
            assert_eq!(layers.len(), 1);
            assert_eq!(layers[0].digest, &D2[7..]);
        }
        // No mediaType in the document: the Content-Type says it.
        let m = serde_json::json!({"schemaVersion": 2,
            "config": {"digest": D1, "size": 1}, "layers": []});
        assert!(matches!(
            parse_manifest(
                m.to_string().as_bytes(),
                "application/vnd.oci.image.manifest.v1+json; x=y"
            ),
            Ok(Manifest::Image { .. })
        ));
    }

    #[test]
    fn bad_manifests_are_refused_with_reasons() {
        let e = parse_manifest(br#"{"schemaVersion": 1, "fsLayers": []}"#, "").unwrap_err();
        assert!(e.contains("schema 1"), "{e}");
        let foreign = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"digest": D1, "size": 1},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                        "digest": D2, "size": 5, "urls": ["https://example.com/x"]}]});
        let e = parse_manifest(foreign.to_string().as_bytes(), "").unwrap_err();
        assert!(e.contains("layer 0") && e.contains("foreign"), "{e}");
        let odd = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": D1, "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted", "digest": D2, "size": 5}]});
        let e = parse_manifest(odd.to_string().as_bytes(), "").unwrap_err();
        assert!(e.contains("unsupported layer type"), "{e}");
        let md5 = serde_json::json!({"mediaType": OCI_MANIFEST,
            "config": {"digest": "md5:00", "size": 1}, "layers": []});
        let e = parse_manifest(md5.to_string().as_bytes(), "").unwrap_err();
        assert!(e.contains("sha256 only"), "{e}");
        let e = parse_manifest(
            br#"{"mediaType": "application/vnd.cncf.helm.config.v1+json"}"#,
            "",
        )
        .unwrap_err();
        assert!(e.contains("unsupported manifest type"), "{e}");
        assert!(parse_manifest(b"<html>", "").is_err());
    }

    #[test]
    fn the_platform_is_picked_from_an_index() {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"mediaType": OCI_MANIFEST, "digest": D2, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": D3, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": D1, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
        ]});
        let Manifest::Index(entries) = parse_manifest(idx.to_string().as_bytes(), "").unwrap()
        else {
            panic!("not an index")
        };
        let pick = |p: &str| select_platform(&entries, &Platform::parse(p).unwrap());
        assert_eq!(pick("linux/amd64").unwrap().digest, &D3[7..]);
        assert_eq!(pick("linux/arm64").unwrap().digest, &D2[7..]);
        assert_eq!(pick("linux/arm64/v8").unwrap().digest, &D2[7..]);
        assert_eq!(pick("linux/arm/v7").unwrap().digest, &D1[7..]);
        assert_eq!(pick("linux/arm").unwrap().digest, &D1[7..]);
        let e = pick("linux/arm/v6").unwrap_err();
        assert!(
            e.contains("linux/arm/v6") && e.contains("linux/amd64"),
            "{e}"
        );
        assert!(pick("windows/amd64").is_err());
        // A Docker manifest list is an index too.
        let list =
            serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []});
        assert_eq!(
            parse_manifest(list.to_string().as_bytes(), "").unwrap(),
            Manifest::Index(vec![])
        );
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
