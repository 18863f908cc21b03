//! A Debian 12 minbase root filesystem as a tar, built by debootstrap
//! from the machine's apt mirror once and kept in a cache directory
//! between runs (`debian_minbase_tar`), for tests that run a real
//! distribution on layerfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_ok;

/// Where the Debian minbase rootfs tar is kept between runs (a fresh
/// machine builds it once with debootstrap); `LAYERFS_TEST_CACHE` names
/// another directory.
pub fn test_cache() -> PathBuf {
    std::env::var_os("LAYERFS_TEST_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| "/var/tmp/layerfs-test-cache".into())
}

/// The Debian mirror apt uses on this machine: the first `deb` source of
/// the `bookworm` suite in /etc/apt/sources.list or sources.list.d
/// (one-line `.list` and deb822 `.sources` files), else deb.debian.org.
fn apt_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(d) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = d.map(|e| e.unwrap().path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".list") {
            for l in text.lines() {
                // deb [OPTIONS] URI SUITE COMPONENTS...
                let l = match (l.find('['), l.find(']')) {
                    (Some(a), Some(b)) if a < b => format!("{} {}", &l[..a], &l[b + 1..]),
                    _ => l.to_string(),
                };
                let words: Vec<&str> = l.split_whitespace().take(3).collect();
                if words.len() == 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return words[1].to_string();
                }
            }
        } else if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| -> Vec<&str> {
                    stanza
                        .lines()
                        .filter(|l| !l.starts_with('#'))
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.split_whitespace().collect())
                        .unwrap_or_default()
                };
                if field("Types:").contains(&"deb") && field("Suites:").contains(&"bookworm") {
                    if let Some(uri) = field("URIs:").first() {
                        return (*uri).to_string();
                    }
                }
            }
        }
    }
    eprintln!("no bookworm source in /etc/apt: debootstrap from deb.debian.org");
    "http://deb.debian.org/debian".to_string()
}

/// Unmounts (lazily, deepest first) whatever is still mounted under its
/// directory when dropped: debootstrap mounts /proc and /sys in its
/// target and leaves them there when it fails midway.
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.0))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A Debian 12 minbase rootfs (`debootstrap --variant=minbase bookworm`
/// from the machine's apt mirror) as a tar, built once into
/// [`test_cache`] (about 45 s and 40 MB of downloads) and reused after.
/// Left out: the downloaded .debs and apt lists (as in Debian's own
/// container images) and the device nodes of /dev (an image has none; a
/// rootless podman could not make them). `None` after a SKIP.
pub fn debian_minbase_tar() -> Option<PathBuf> {
    let cache = test_cache();
    let tar = cache.join("debian-minbase-bookworm.tar");
    if tar.exists() {
        return Some(tar);
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            panic!("debootstrap is missing and CI is set: .ci/run installs it");
        }
        eprintln!("SKIP: debootstrap is not installed");
        return None;
    }
    std::fs::create_dir_all(&cache).unwrap();
    // Readable by the rootless test user.
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&cache)
        .unwrap();
    let root = build.path().join("root");
    {
        let _unmount = UnmountUnder(root.clone());
        let mirror = apt_mirror();
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&root)
            .arg(&mirror)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "debootstrap from {mirror}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(root.join("debootstrap/debootstrap.log")).unwrap_or_default()
        );
    }
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists", "dev"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                if !p.ends_with("partial") {
                    std::fs::remove_dir_all(&p).unwrap();
                }
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let part = build.path().join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&part)
            .arg("."),
    );
    std::fs::set_permissions(&part, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::rename(&part, &tar).unwrap();
    Some(tar)
}
