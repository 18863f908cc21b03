//! Image metadata that needs no I/O: digests and chain ids, image config
//! fields, and image reference (tag) normalization.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Is `s` 64 lowercase hex digits?
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Checks that a store-internal id is a bare hex digest before it is used
/// as a path component.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if is_hex64(id) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("invalid id {id:?}"))
    }
}

/// Strips an optional `sha256:` prefix and checks the rest is a hex digest.
pub fn parse_digest(s: &str) -> Option<&str> {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    is_hex64(h).then_some(h)
}

/// OCI chain ids, bottom layer first: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)). Ids are bare hex.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_hex(format!("sha256:{prev} sha256:{d}").as_bytes()),
        };
        out.push(id);
    }
    out
}

/// `rootfs.diff_ids` of an image config, as bare hex digests.
pub fn config_diff_ids(config: &Value) -> Result<Vec<String>, String> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or("image config has no rootfs.diff_ids")?;
    ids.iter()
        .map(|v| {
            v.as_str()
                .and_then(parse_digest)
                .map(str::to_string)
                .ok_or_else(|| format!("image config has a bad diff_id {v}"))
        })
        .collect()
}

/// The `created_by` of each non-empty layer, bottom first, aligned with
/// `rootfs.diff_ids` (history entries with `empty_layer` are skipped).
pub fn layer_created_by(config: &Value, layers: usize) -> Vec<String> {
    let mut out: Vec<String> = config
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| {
                    !e.get("empty_layer")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                })
                .map(|e| {
                    e.get("created_by")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    out.resize(layers, String::new());
    out
}

/// Normalizes an image reference the way the store keys tags: `name` means
/// `name:latest`; `docker.io/library/`, `docker.io/` and `localhost/`
/// prefixes (as skopeo and podman write them) are dropped.
pub fn normalize_ref(r: &str) -> String {
    let mut s = r.trim();
    for p in [
        "docker.io/library/",
        "docker.io/",
        "index.docker.io/library/",
        "localhost/",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            s = rest;
            break;
        }
    }
    if s.contains('@') {
        return s.to_string();
    }
    let last = s.rsplit('/').next().unwrap_or(s);
    if last.contains(':') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

/// Checks a tag, given by a user or read from an archive (`RepoTags`,
/// `org.opencontainers.image.ref.name`), against the reference grammar of
/// docker and podman (distribution/reference): `[DOMAIN[:PORT]/]PATH[:TAG]`,
/// where DOMAIN is dot-separated `[A-Za-z0-9-]` components, each PATH
/// component is lower-case alphanumerics joined by `.`, `_`, `__` or runs of
/// `-`, TAG is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, and the name is at most
/// 255 bytes. A digest (`@sha256:...`) names content, not a tag, and a name
/// that is a bare image id would be ambiguous with ids: both refused.
pub fn validate_tag(t: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid tag {t:?}: {why}"));
    if t.contains('@') || t.starts_with("sha256:") {
        return bad("a digest names content, not a tag");
    }
    // The tag is after the last ':' that follows the last '/' (a ':' before
    // it is the registry's port).
    let (name, tag) = match t.rfind(':') {
        Some(i) if !t[i..].contains('/') => (&t[..i], Some(&t[i + 1..])),
        _ => (t, None),
    };
    if let Some(tag) = tag {
        let mut c = tag.chars();
        let first_ok = c
            .next()
            .is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !first_ok
            || tag.len() > 128
            || !c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
        {
            return bad("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    if name.is_empty() || name.len() > 255 {
        return bad("a name is 1 to 255 bytes");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_domain = parts.len() > 1
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()));
    if has_domain {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && !c.starts_with('-')
                && !c.ends_with('-')
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        };
        if !host.split('.').all(component_ok) {
            return bad("the registry host is dot-separated [A-Za-z0-9-] components");
        }
        if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return bad("the registry port is a number");
        }
        parts.remove(0);
    }
    for comp in &parts {
        if !path_component_ok(comp) {
            return bad(
                "each path component is lower-case letters and digits, joined by '.', '_', '__' or '-'",
            );
        }
    }
    if !has_domain && parts.len() == 1 && is_hex64(parts[0]) {
        return bad("a tag needs a name that is not an image id");
    }
    Ok(())
}

/// An image reference as docker and podman read it: `alpine` is
/// `docker.io/library/alpine:latest`, `host:port/repo:tag`,
/// `repo@sha256:HEX` (a digest wins over a tag given with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry, `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path (`library/alpine`).
    pub repository: String,
    /// The tag, if the reference has one (`latest` when it has neither
    /// tag nor digest).
    pub tag: Option<String>,
    /// The manifest digest (`sha256:HEX`), if given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `r` by the distribution/reference grammar (see
    /// [`validate_tag`]), filling in podman's defaults.
    pub fn parse(r: &str) -> Result<Reference, String> {
        let (named, digest) = match r.split_once('@') {
            Some((n, d)) => {
                if parse_digest(d).is_none() || !d.starts_with("sha256:") {
                    return Err(format!(
                        "invalid reference {r:?}: the digest must be sha256:<64 hex digits>"
                    ));
                }
                (n, Some(d.to_string()))
            }
            None => (r, None),
        };
        validate_tag(named).map_err(|e| e.replacen("invalid tag", "invalid reference", 1))?;
        let (name, tag) = match named.rfind(':') {
            Some(i) if !named[i..].contains('/') => (&named[..i], Some(named[i + 1..].to_string())),
            _ => (named, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the manifest is asked for by: the digest if given, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the API is reached at (Docker Hub's API is not at
    /// `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The store tag of this reference (`name:tag`, normalized as
    /// [`normalize_ref`] keys tags), or `None` for a digest-only reference.
    pub fn store_tag(&self) -> Option<String> {
        let tag = self.tag.as_ref()?;
        Some(normalize_ref(&format!(
            "{}/{}:{tag}",
            self.registry, self.repository
        )))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut need_alnum = true;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            need_alnum = false;
            continue;
        }
        if need_alnum {
            return false;
        }
        // A separator: '.', '_', '__' or a run of '-', then alphanumerics.
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        need_alnum = true;
    }
    !need_alnum
}

/// A minimal OCI image config for a plain rootfs tar, which has none.
pub fn synthesize_config(diff_id: &str, created_by: &str) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let v = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": created_by}],
    });
    serde_json::to_vec(&v).expect("json")
}

/// A Unix time as RFC 3339 UTC (`2023-11-14T22:13:20Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_parse_like_podman() {
        let p = |r: &str| Reference::parse(r).unwrap();
        let a = p("alpine");
        assert_eq!(
            (a.registry.as_str(), a.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        assert_eq!(a.tag.as_deref(), Some("latest"));
        assert_eq!(a.api_host(), "registry-1.docker.io");
        assert_eq!(a.store_tag().as_deref(), Some("alpine:latest"));
        assert_eq!(a.to_string(), "docker.io/library/alpine:latest");
        let u = p("user/app:v2");
        assert_eq!(
            (u.registry.as_str(), u.repository.as_str()),
            ("docker.io", "user/app")
        );
        assert_eq!(u.store_tag().as_deref(), Some("user/app:v2"));
        let l = p("127.0.0.1:5000/test/deb:1");
        assert_eq!(
            (l.registry.as_str(), l.repository.as_str()),
            ("127.0.0.1:5000", "test/deb")
        );
        assert_eq!(l.manifest_ref(), "1");
        assert_eq!(l.api_host(), "127.0.0.1:5000");
        assert_eq!(l.store_tag().as_deref(), Some("127.0.0.1:5000/test/deb:1"));
        assert_eq!(p("localhost/x").registry, "localhost");
        assert_eq!(p("index.docker.io/library/busybox").registry, "docker.io");
        let h = "a".repeat(64);
        let d = p(&format!("quay.io/x/y@sha256:{h}"));
        assert_eq!(d.tag, None);
        assert_eq!(d.manifest_ref(), format!("sha256:{h}"));
        assert_eq!(d.store_tag(), None);
        let td = p(&format!("ghcr.io/o/r:1.0@sha256:{h}"));
        assert_eq!(td.tag.as_deref(), Some("1.0"));
        assert_eq!(td.manifest_ref(), format!("sha256:{h}"));
        for bad in [
            "",
            "UPPER",
            "a@sha256:12",
            "a@md5:00",
            "host:port/x",
            "a b",
            "a:",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Reference::parse("a@sha256:zz")
            .unwrap_err()
            .contains("sha256"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    use super::*;

    #[test]
    fn tags_follow_the_reference_grammar() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "library/busybox:latest",
            "docker.io/library/busybox:latest",
            "localhost/x",
            "localhost:5000/a/b:v1",
            "127.0.0.1:5000/test/deb:1",
            "quay.io/a_b/c__d/e--f.g:T_9.x-y",
            "Registry.Example.com/x",
            "a:_",
        ] {
            assert!(validate_tag(ok).is_ok(), "{ok}: {:?}", validate_tag(ok));
        }
        for bad in [
            "",
            "../../etc:passwd",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "UPPER",
            "a:b\nc",
            "a\nb",
            "a b",
            "a:",
            "a:-x",
            "a:.x",
            &format!("a:{}", "t".repeat(129)),
            &"n".repeat(256),
            "a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port/x",
            "-host.com/x",
            &"ab".repeat(32),
            &format!("{}:v1", "cd".repeat(32)),
        ] {
            assert!(validate_tag(bad).is_err(), "{bad:?} accepted");
        }
        let e = validate_tag("library/../etc:passwd").unwrap_err();
        assert!(e.contains("path component"), "{e}");
    }

    #[test]
    fn chain_id_follows_the_oci_definition() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(
            ids[1],
            sha256_hex(format!("sha256:{a} sha256:{b}").as_bytes())
        );
        assert_ne!(ids[1], b);
    }

    #[test]
    fn refs_normalize_like_skopeo_writes_them() {
        assert_eq!(normalize_ref("busybox"), "busybox:latest");
        assert_eq!(
            normalize_ref("docker.io/library/busybox:1.36"),
            "busybox:1.36"
        );
        assert_eq!(normalize_ref("localhost/multi"), "multi:latest");
        assert_eq!(normalize_ref("reg:5000/x/y"), "reg:5000/x/y:latest");
        assert_eq!(normalize_ref("reg:5000/x/y:v1"), "reg:5000/x/y:v1");
    }

    #[test]
    fn tags_that_look_like_ids_are_refused() {
        assert!(validate_tag(&"a".repeat(64)).is_err());
        assert!(validate_tag("sha256:abc").is_err());
        assert!(validate_tag("has space").is_err());
        assert!(validate_tag("ok:1").is_ok());
    }

    #[test]
    fn created_by_skips_empty_layers() {
        let c: Value = serde_json::json!({"history": [
            {"created_by": "ADD x"}, {"created_by": "ENV y", "empty_layer": true}, {"created_by": "RUN z"}]});
        assert_eq!(layer_created_by(&c, 2), vec!["ADD x", "RUN z"]);
        assert_eq!(layer_created_by(&c, 3)[2], "");
    }
}
